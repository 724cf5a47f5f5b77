//! The status of every system and audience, for `cdp-meta-sync status` and the status page: the
//! configuration and definition rows' status columns with each one's last finished run and Meta's
//! last word on its audience.
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use crate::meta::audience_health::{AudienceHealth, problem};

/// One line of `cdp-meta-sync status` (one object of `status --json`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatusRow {
    pub system_name: String,
    /// The audience definition this line is of (`None`: the system's own audience; a
    /// definition's line takes the system's schedule, lease and failures).
    pub audience_name: Option<String>,
    pub value_based: bool,
    pub is_active: bool,
    pub sync_status: Option<String>,
    pub last_sync: Option<DateTime<Utc>>,
    pub next_sync: Option<DateTime<Utc>>,
    pub total_customers: i32,
    pub custom_audience_id: Option<String>,
    pub consecutive_failures: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub error_log: Option<String>,
    /// The system's last finished run: its counts and coverage (`None` before any).
    pub last_run: Option<LastRun>,
    /// The audience as Meta reported it at the latest run that read it back (`None` before any).
    pub audience_health: Option<HealthReport>,
}

/// A finished run's counts, as `cdp.facebook_sync_runs` holds them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LastRun {
    pub run_id: i64,
    pub outcome: String,
    pub finished_at: Option<DateTime<Utc>>,
    pub extracted: i64,
    pub eligible: i64,
    pub added: i64,
    pub removed: i64,
    pub removals_held: i64,
    pub skipped_no_key: i64,
    pub suppressed: i64,
    pub num_invalid_entries: i64,
    /// Per match key, the share of members with a usable value (`{"EMAIL": 0.93, ...}`).
    pub coverage: serde_json::Value,
}

/// What Meta reported about the audience after a run, and whether it is a problem.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HealthReport {
    pub run_id: i64,
    pub checked_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub health: AudienceHealth,
    /// Meta's problem in one sentence (see [`crate::sync::readback::problem`]), `None` if none.
    pub problem: Option<String>,
}

pub async fn status_rows(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<StatusRow>, tokio_postgres::Error> {
    // Each audience's latest finished run, and its latest run with a read-back: both walk the
    // (configuration_id, started_at) index backwards. A system's own audience first, then its
    // definitions.
    let rows = client
        .query(
            "WITH audiences AS (
                 SELECT c.id AS cid, 0 AS did, NULL::text AS audience_name, false AS value_based,
                        coalesce(c.is_active, false) AS active, c.sync_status, c.last_sync,
                        coalesce(c.total_customers, 0) AS total, c.custom_audience_id, c.error_log
                   FROM cdp.facebook_configurations c
                 UNION ALL
                 SELECT a.configuration_id, a.id, a.name::text, a.value_based,
                        coalesce(c.is_active, false) AND a.is_active, a.sync_status, a.last_sync,
                        a.total_customers, a.custom_audience_id, a.error_log
                   FROM cdp.facebook_audiences a
                   JOIN cdp.facebook_configurations c ON c.id = a.configuration_id)
             SELECT c.system_name, t.active, t.sync_status, t.last_sync, c.next_sync,
                    t.total, t.custom_audience_id, c.consecutive_failures,
                    CASE WHEN c.lease_expires_at > now() THEN c.lease_owner END,
                    CASE WHEN c.lease_expires_at > now() THEN c.lease_expires_at END, t.error_log,
                    l.id, l.outcome::text, l.finished_at, l.extracted, l.eligible, l.added, l.removed,
                    l.removals_held, l.skipped_no_key, l.suppressed, l.num_invalid_entries, l.coverage,
                    h.id, h.audience_checked_at, h.audience_operation_status,
                    h.audience_operation_message, h.audience_delivery_status,
                    h.audience_delivery_message, h.approximate_count_lower, h.approximate_count_upper,
                    h.audience_id::text, t.audience_name, t.value_based
               FROM audiences t
               JOIN cdp.facebook_configurations c ON c.id = t.cid
               LEFT JOIN LATERAL (
                    SELECT * FROM cdp.facebook_sync_runs r
                     WHERE r.configuration_id = t.cid AND r.definition_id = t.did
                       AND r.outcome <> 'running'
                     ORDER BY r.started_at DESC LIMIT 1) l ON true
               LEFT JOIN LATERAL (
                    SELECT * FROM cdp.facebook_sync_runs r
                     WHERE r.configuration_id = t.cid AND r.definition_id = t.did
                       AND r.audience_checked_at IS NOT NULL
                     ORDER BY r.started_at DESC LIMIT 1) h ON true
              ORDER BY c.system_name, t.did <> 0, t.audience_name",
            &[],
        )
        .await?;
    Ok(rows.iter().map(status_row).collect())
}

fn status_row(r: &Row) -> StatusRow {
    let last_run = r.get::<_, Option<i64>>(11).map(|run_id| LastRun {
        run_id,
        outcome: r.get(12),
        finished_at: r.get(13),
        extracted: r.get(14),
        eligible: r.get(15),
        added: r.get(16),
        removed: r.get(17),
        removals_held: r.get(18),
        skipped_no_key: r.get(19),
        suppressed: r.get(20),
        num_invalid_entries: r.get(21),
        coverage: r.get(22),
    });
    let audience_health = r.get::<_, Option<i64>>(23).map(|run_id| {
        let health = AudienceHealth {
            operation_status: r.get(25),
            operation_message: r.get(26),
            delivery_status: r.get(27),
            delivery_message: r.get(28),
            approximate_count_lower: r.get(29),
            approximate_count_upper: r.get(30),
        };
        let audience_id: Option<String> = r.get(31);
        HealthReport {
            run_id,
            checked_at: r.get(24),
            problem: problem(audience_id.as_deref().unwrap_or("-"), &health),
            health,
        }
    });
    StatusRow {
        system_name: r.get(0),
        audience_name: r.get(32),
        value_based: r.get(33),
        is_active: r.get(1),
        sync_status: r.get(2),
        last_sync: r.get(3),
        next_sync: r.get(4),
        total_customers: r.get(5),
        custom_audience_id: r.get(6),
        consecutive_failures: r.get(7),
        lease_owner: r.get(8),
        lease_expires_at: r.get(9),
        error_log: r.get(10),
        last_run,
        audience_health,
    }
}
