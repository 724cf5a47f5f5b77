//! Queries on `cdp.facebook_sync_runs`: one row per run, opened at the start, filled in as the run
//! goes, closed with its outcome.
use tokio_postgres::GenericClient;

use super::LedgerScope;
use crate::meta::audience_health::AudienceHealth;

/// Who a run is of: the system, and which of its audiences (`definition_id` 0 and no name: its
/// own; the run of the system's own audience is the system's run, see [`crate::sync::run`]).
pub struct RunOf<'a> {
    pub configuration_id: i32,
    pub system_name: &'a str,
    pub definition_id: i32,
    pub audience_name: Option<&'a str>,
}

pub async fn open(
    client: &impl GenericClient,
    of: &RunOf<'_>,
    trigger: &str,
    worker_id: &str,
    sync_mode: &str,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "INSERT INTO cdp.facebook_sync_runs
                    (configuration_id, system_name, trigger, worker_id, sync_mode, definition_id, audience_name)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &of.configuration_id,
                &of.system_name,
                &trigger,
                &worker_id,
                &sync_mode,
                &of.definition_id,
                &of.audience_name,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Customers extracted by the audience's latest run that got that far (0 if none).
pub async fn last_extracted(
    client: &impl GenericClient,
    scope: LedgerScope,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT coalesce((SELECT extracted FROM cdp.facebook_sync_runs
                               WHERE configuration_id = $1 AND definition_id = $2 AND extracted > 0
                               ORDER BY id DESC LIMIT 1), 0)",
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await?;
    Ok(row.get(0))
}

/// Counts known once the members are staged and diffed.
#[derive(Debug, Clone, Default)]
pub struct PlanCounts {
    pub audience_id: String,
    pub extracted: i64,
    pub eligible: i64,
    pub duplicates: i64,
    pub skipped_no_key: i64,
    pub skipped_invalid: serde_json::Value,
    pub to_add: i64,
    pub to_remove: i64,
    pub removals_held: i64,
    pub unchanged: i64,
    pub refreshed: i64,
    /// Customers held back by the system's consent rule, and members removed because of it.
    pub suppressed: i64,
    pub consent_removals: i64,
    /// Per match key, the share of members with a usable value.
    pub coverage: serde_json::Value,
}

pub async fn record_plan(
    client: &impl GenericClient,
    run_id: i64,
    c: &PlanCounts,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE cdp.facebook_sync_runs
                SET audience_id = $2, extracted = $3, eligible = $4, duplicates = $5, skipped_no_key = $6,
                    skipped_invalid = $7, to_add = $8, to_remove = $9, removals_held = $10,
                    unchanged = $11, refreshed = $12, suppressed = $13, consent_removals = $14,
                    coverage = $15
              WHERE id = $1",
            &[
                &run_id,
                &c.audience_id,
                &c.extracted,
                &c.eligible,
                &c.duplicates,
                &c.skipped_no_key,
                &c.skipped_invalid,
                &c.to_add,
                &c.to_remove,
                &c.removals_held,
                &c.unchanged,
                &c.refreshed,
                &c.suppressed,
                &c.consent_removals,
                &c.coverage,
            ],
        )
        .await?;
    Ok(())
}

/// Records the run's upload sessions and the mode it really runs in (an adopted audience's first
/// run replaces whatever the row's mode).
pub async fn record_sessions(
    client: &impl GenericClient,
    run_id: i64,
    sync_mode: &str,
    add_session: i64,
    remove_session: i64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE cdp.facebook_sync_runs
                SET sync_mode = $2, add_session_id = $3, remove_session_id = $4 WHERE id = $1",
            &[&run_id, &sync_mode, &add_session, &remove_session],
        )
        .await?;
    Ok(())
}

/// The replace session of the audience's previous run when that run stopped part way (it
/// had batches accepted, and neither succeeded nor was refused): `(session id, batches)`. Meta
/// may still hold the session open for its 90 minutes.
pub async fn unfinished_replace(
    client: &impl GenericClient,
    scope: LedgerScope,
    before_run: i64,
) -> Result<Option<(i64, i64)>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT add_session_id, batches FROM cdp.facebook_sync_runs
              WHERE id = (SELECT max(id) FROM cdp.facebook_sync_runs
                           WHERE configuration_id = $1 AND definition_id = $3 AND id < $2)
                AND sync_mode = 'replace' AND outcome IN ('running', 'interrupted', 'failed')
                AND batches > 0 AND add_session_id IS NOT NULL
                AND started_at > now() - interval '90 minutes'",
            &[&scope.configuration_id, &before_run, &scope.definition_id],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Closes the run with its outcome and (for failures) a readable error.
pub async fn close(
    client: &impl GenericClient,
    run_id: i64,
    outcome: &str,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE cdp.facebook_sync_runs
                SET outcome = $2, error = $3, finished_at = now(),
                    duration_ms = (extract(epoch FROM now() - started_at) * 1000)::bigint
              WHERE id = $1",
            &[&run_id, &outcome, &error],
        )
        .await?;
    Ok(())
}

/// The outcome of the system's last finished run before `run_id` (`None` if none): interrupted
/// runs do not count, nor its definitions' runs (the system's run carries the system's outcome).
pub async fn previous_outcome(
    client: &impl GenericClient,
    configuration_id: i32,
    run_id: i64,
) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT outcome FROM cdp.facebook_sync_runs
              WHERE configuration_id = $1 AND definition_id = 0 AND id < $2
                AND outcome NOT IN ('running', 'interrupted')
              ORDER BY id DESC LIMIT 1",
            &[&configuration_id, &run_id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// How much an accepted batch moved the session's running totals at Meta (see
/// [`crate::sync::upload::SessionProgress`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchProgress {
    pub received: i64,
    pub invalid: i64,
}

/// The start of the run-row update that counts one accepted batch (`$1` = run id, `$4`, `$5` =
/// the batch's [`BatchProgress`]); the ledger's batch statements add their own column.
pub const COUNT_BATCH: &str = "UPDATE cdp.facebook_sync_runs
                   SET batches = batches + 1, num_received = num_received + $4,
                       num_invalid_entries = num_invalid_entries + $5";

/// Counts an accepted batch whose rows reach the ledger otherwise (`added` of them now; a
/// replace's batches count 0 until the last one replaces the ledger).
pub async fn count_batch(
    client: &impl GenericClient,
    run_id: i64,
    added: i64,
    progress: BatchProgress,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE cdp.facebook_sync_runs
                SET added = added + $2, batches = batches + 1, num_received = num_received + $3,
                    num_invalid_entries = num_invalid_entries + $4
              WHERE id = $1",
            &[&run_id, &added, &progress.received, &progress.invalid],
        )
        .await?;
    Ok(())
}

/// The ledger rows the run's own statements inserted less those they deleted, as they counted
/// them on the run row in the same transactions (the streamed batches' `COPY`s, the add and the
/// remove batches). Of an audience whose ledger was empty when the run began, with no upsert
/// (an upsert counts the rows it updates too) and no replace, that is the members it holds now.
pub async fn ledger_rows_added(
    client: &impl GenericClient,
    run_id: i64,
) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT added - removed FROM cdp.facebook_sync_runs WHERE id = $1",
            &[&run_id],
        )
        .await?
        .get(0))
}

/// Sets the run's additions (after a replace, the members the ledger now holds).
pub async fn set_added(
    client: &impl GenericClient,
    run_id: i64,
    added: i64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE cdp.facebook_sync_runs SET added = $2 WHERE id = $1",
            &[&run_id, &added],
        )
        .await?;
    Ok(())
}

/// Keeps Meta's read-back of the audience on the run row.
pub async fn record_audience_health(
    client: &impl GenericClient,
    run_id: i64,
    h: &AudienceHealth,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE cdp.facebook_sync_runs
                SET audience_operation_status = $2, audience_operation_message = $3,
                    audience_delivery_status = $4, audience_delivery_message = $5,
                    approximate_count_lower = $6, approximate_count_upper = $7,
                    audience_checked_at = now()
              WHERE id = $1",
            &[
                &run_id,
                &h.operation_status,
                &h.operation_message,
                &h.delivery_status,
                &h.delivery_message,
                &h.approximate_count_lower,
                &h.approximate_count_upper,
            ],
        )
        .await?;
    Ok(())
}
