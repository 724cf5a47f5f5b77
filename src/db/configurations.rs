//! Queries on `cdp.facebook_configurations`: claiming due systems under a lease, renewing and
//! releasing it, and writing each run's outcome back to the columns operators watch.
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use crate::meta::audience_health::{AudienceHealth, problem};

/// The columns of `cdp.facebook_configurations` that drive one sync, as stored.
#[derive(Debug, Clone)]
pub struct SystemRow {
    pub id: i32,
    pub system_name: String,
    pub ad_account_id: String,
    pub tenant_ids: Vec<Option<i32>>,
    pub custom_audience_id: Option<String>,
    pub schedule_hours: Option<i32>,
    pub sync_mode: String,
    pub match_keys: Vec<Option<String>>,
    pub excluded_segments: Vec<Option<String>>,
    pub default_country: Option<String>,
    pub schedule_cron: Option<String>,
    pub audience_name: Option<String>,
    pub max_removal_share: Option<f64>,
    pub force_removals: bool,
    pub consecutive_failures: i32,
    pub adopt_mode: String,
    /// `alert_webhook_url`: where this system's alerts go (else `ALERT_WEBHOOK_URL`). It holds
    /// the webhook's secret, hence never printed.
    pub alert_webhook_url: Option<crate::secret::SecretString>,
    /// Consent: `opt_out_column` and `suppression_table` (see [`crate::sync::consent`]).
    pub opt_out_column: Option<String>,
    pub suppression_table: Option<String>,
    /// `token_ref`: the environment variable holding this system's Meta token (`None`: the
    /// worker's `FACEBOOK_ACCESS_TOKEN`). A name, never the token.
    pub token_ref: Option<String>,
    /// Columns that could not be read as their type (a 2-D array…), each a sentence: the row
    /// is then `invalid_config`, not a crash.
    pub unreadable: Vec<String>,
}

const COLUMNS: &str = "id, system_name, ad_account_id, tenant_ids, custom_audience_id, is_active, schedule_hours,
    sync_mode, match_keys, excluded_segments, default_country, schedule_cron, audience_name,
    max_removal_share::float8 AS max_removal_share, force_removals, consecutive_failures, adopt_mode,
    next_sync, alert_webhook_url, opt_out_column, suppression_table, token_ref";

/// Reads a claimed row. A column that does not decode (a 2-D array, a NULL element where none
/// is allowed) never panics: it takes its default and is named in `unreadable`, which makes the
/// row `invalid_config` (the lease is already taken; a panic here would keep it until expiry).
fn system_row(row: &Row) -> SystemRow {
    let mut unreadable = Vec::new();
    let mut read = ColumnReader {
        row,
        unreadable: &mut unreadable,
    };
    let system = SystemRow {
        id: read.get("id"),
        system_name: read.get("system_name"),
        ad_account_id: read.get("ad_account_id"),
        tenant_ids: read.get("tenant_ids"),
        custom_audience_id: read.get("custom_audience_id"),
        schedule_hours: read.get("schedule_hours"),
        sync_mode: read.get("sync_mode"),
        match_keys: read.get("match_keys"),
        excluded_segments: read.get("excluded_segments"),
        default_country: read.get("default_country"),
        schedule_cron: read.get("schedule_cron"),
        audience_name: read.get("audience_name"),
        max_removal_share: read.get("max_removal_share"),
        force_removals: read.get("force_removals"),
        consecutive_failures: read.get("consecutive_failures"),
        adopt_mode: read.get("adopt_mode"),
        alert_webhook_url: read
            .get::<Option<String>>("alert_webhook_url")
            .filter(|url| !url.trim().is_empty())
            .map(crate::secret::SecretString::from),
        opt_out_column: read.get("opt_out_column"),
        suppression_table: read.get("suppression_table"),
        token_ref: read.get("token_ref"),
        unreadable: Vec::new(),
    };
    SystemRow {
        unreadable,
        ..system
    }
}

/// Reads columns by name, collecting what does not decode instead of panicking.
pub struct ColumnReader<'a> {
    pub row: &'a Row,
    pub unreadable: &'a mut Vec<String>,
}

impl<'a> ColumnReader<'a> {
    pub fn get<T: tokio_postgres::types::FromSql<'a> + Default>(&mut self, name: &str) -> T {
        match self.row.try_get(name) {
            Ok(value) => value,
            Err(e) => {
                let why =
                    std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                self.unreadable
                    .push(format!("{name} cannot be read: {why}"));
                T::default()
            }
        }
    }
}

/// Takes a lease on up to `limit` due systems that no live lease holds, skipping rows another
/// worker is claiming at this instant.
pub async fn claim_due(
    client: &impl tokio_postgres::GenericClient,
    worker_id: &str,
    lease_secs: i64,
    limit: i64,
) -> Result<Vec<SystemRow>, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE cdp.facebook_configurations c
            SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2), sync_status = 'running'
          WHERE c.id IN (
                SELECT id FROM cdp.facebook_configurations
                 WHERE is_active IS TRUE
                   AND (next_sync IS NULL OR next_sync <= now())
                   AND (lease_expires_at IS NULL OR lease_expires_at < now())
                 ORDER BY next_sync NULLS FIRST, id
                 LIMIT $3
                   FOR UPDATE SKIP LOCKED)
        RETURNING {COLUMNS}"
    );
    let rows = client
        .query(&sql, &[&worker_id, &(lease_secs as f64), &limit])
        .await?;
    Ok(rows.iter().map(system_row).collect())
}

/// Why a named system could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("no system named '{0}'")]
    NotFound(String),
    #[error("system '{name}' is being synced by {owner} (lease until {until})")]
    Leased {
        name: String,
        owner: String,
        until: DateTime<Utc>,
    },
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

/// Takes the lease on one system by name, whatever its `next_sync` (a manual sync).
pub async fn claim_by_name(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
    worker_id: &str,
    lease_secs: i64,
) -> Result<SystemRow, ClaimError> {
    let sql = format!(
        "UPDATE cdp.facebook_configurations
            SET lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3), sync_status = 'running'
          WHERE system_name = $1 AND (lease_expires_at IS NULL OR lease_expires_at < now())
        RETURNING {COLUMNS}"
    );
    if let Some(row) = client
        .query_opt(&sql, &[&name, &worker_id, &(lease_secs as f64)])
        .await?
    {
        return Ok(system_row(&row));
    }
    let holder = client
        .query_opt(
            "SELECT lease_owner, lease_expires_at FROM cdp.facebook_configurations WHERE system_name = $1",
            &[&name],
        )
        .await?;
    match holder {
        None => Err(ClaimError::NotFound(name.to_string())),
        Some(row) => Err(ClaimError::Leased {
            name: name.to_string(),
            owner: row.get::<_, Option<String>>(0).unwrap_or_default(),
            until: row
                .get::<_, Option<DateTime<Utc>>>(1)
                .unwrap_or_else(Utc::now),
        }),
    }
}

/// Reads one system by name without claiming it (a dry run changes nothing, the lease included).
pub async fn read_by_name(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
) -> Result<Option<SystemRow>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM cdp.facebook_configurations WHERE system_name = $1");
    Ok(client
        .query_opt(&sql, &[&name])
        .await?
        .as_ref()
        .map(system_row))
}

/// Extends our lease; false when it is no longer ours (expired and taken over).
pub async fn renew_lease(
    client: &impl tokio_postgres::GenericClient,
    id: i32,
    worker_id: &str,
    lease_secs: i64,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "UPDATE cdp.facebook_configurations SET lease_expires_at = now() + make_interval(secs => $3)
              WHERE id = $1 AND lease_owner = $2",
            &[&id, &worker_id, &(lease_secs as f64)],
        )
        .await?;
    Ok(n == 1)
}

/// Stores the audience id as soon as it is known, before any upload, so that a crash never
/// leads to a second audience.
pub async fn store_audience_id(
    client: &impl tokio_postgres::GenericClient,
    id: i32,
    audience_id: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE cdp.facebook_configurations SET custom_audience_id = $2 WHERE id = $1",
            &[&id, &audience_id],
        )
        .await?;
    Ok(())
}

/// How a run ended, as written to the configuration row.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// `success` or `partial` (removals held): the original columns as the original design set them.
    Synced {
        status: &'static str,
        next_sync: DateTime<Utc>,
        total_customers: i64,
        error_log: Option<String>,
        clear_force_removals: bool,
    },
    /// `failed` or `invalid_config`: a readable error, one more failure, and a backed-off retry.
    Failed {
        status: &'static str,
        error_log: String,
        next_sync: DateTime<Utc>,
    },
    /// `interrupted` (shutdown): stays due, so the next worker resumes it.
    Interrupted,
}

/// Writes the outcome and releases the lease, if it is still ours.
pub async fn finish(
    client: &impl tokio_postgres::GenericClient,
    id: i32,
    worker_id: &str,
    finish: &Finish,
) -> Result<(), tokio_postgres::Error> {
    match finish {
        Finish::Synced {
            status,
            next_sync,
            total_customers,
            error_log,
            clear_force_removals,
        } => {
            client
                .execute(
                    "UPDATE cdp.facebook_configurations
                        SET last_sync = now(), next_sync = $3, total_customers = $4, sync_status = $5,
                            error_log = cdp.with_token_warning($6, token_ref), consecutive_failures = 0,
                            force_removals = force_removals AND NOT $7,
                            lease_owner = NULL, lease_expires_at = NULL
                      WHERE id = $1 AND lease_owner = $2",
                    &[
                        &id,
                        &worker_id,
                        next_sync,
                        &i32::try_from(*total_customers).unwrap_or(i32::MAX),
                        status,
                        error_log,
                        clear_force_removals,
                    ],
                )
                .await?;
        }
        Finish::Failed {
            status,
            error_log,
            next_sync,
        } => {
            client
                .execute(
                    "UPDATE cdp.facebook_configurations
                        SET sync_status = $3, error_log = cdp.with_token_warning($4, token_ref), next_sync = $5,
                            consecutive_failures = consecutive_failures + 1,
                            lease_owner = NULL, lease_expires_at = NULL
                      WHERE id = $1 AND lease_owner = $2",
                    &[&id, &worker_id, status, error_log, next_sync],
                )
                .await?;
        }
        Finish::Interrupted => {
            client
                .execute(
                    "UPDATE cdp.facebook_configurations
                        SET sync_status = 'interrupted', lease_owner = NULL, lease_expires_at = NULL
                      WHERE id = $1 AND lease_owner = $2",
                    &[&id, &worker_id],
                )
                .await?;
        }
    }
    Ok(())
}

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
