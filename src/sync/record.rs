//! The bookkeeping after a run: the run row closed and the outcome written to the configuration
//! row (releasing the lease), then metrics and the log line.
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;

use super::context::SyncContext;
use super::outcome::{Outcome, RunReport};
use super::system::{Schedule, failure_backoff};
use crate::db::configurations::{SystemFinish, SystemRow, finish};
use crate::db::{self, runs};

/// Closes the run row and writes the outcome to the configuration row (releasing the lease), on
/// a fresh connection, trying again for a few seconds while the database is out of reach.
pub(super) async fn outcome(
    ctx: &SyncContext,
    row: &SystemRow,
    schedule: Option<&Schedule>,
    report: &RunReport,
    why_partial: Option<String>,
) {
    let error = match &report.outcome {
        Outcome::Failed(e) | Outcome::InvalidConfig(e) => Some(e.clone()),
        _ => why_partial.clone(),
    };
    let write = || async {
        let client = ctx.pool.get().await.context("database unavailable")?;
        if let Some(run_id) = report.run_id {
            runs::close(&**client, run_id, report.outcome.as_str(), error.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("closing the run row: {}", db::error_text(&e)))?;
        }
        write_finish(
            &client,
            ctx,
            row,
            schedule,
            &report.outcome,
            report.members,
            why_partial.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("writing the sync status: {}", db::error_text(&e)))
    };
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(4))
        .with_max_times(6);
    if let Err(e) = write
        .retry(policy)
        .notify(|e, after| tracing::warn!(error = %db::describe(e), ?after, "Failed to record the outcome; retrying"))
        .await
    {
        tracing::error!(system = %row.system_name, error = %db::describe(&e), "Failed to record the outcome; the lease will run out");
    }
}

async fn write_finish(
    client: &tokio_postgres::Client,
    ctx: &SyncContext,
    row: &SystemRow,
    schedule: Option<&Schedule>,
    outcome: &Outcome,
    members: i64,
    why_partial: Option<String>,
) -> Result<(), tokio_postgres::Error> {
    let now = Utc::now();
    let schedule_hours = i64::from(row.schedule_hours.unwrap_or(48)).max(1);
    let finish_row = match outcome {
        Outcome::Success | Outcome::Partial => {
            let next_sync = match schedule {
                Some(schedule) => schedule.next_after(now, ctx.settings.worker.timezone),
                None => now + chrono::Duration::hours(schedule_hours),
            };
            SystemFinish::Synced {
                status: outcome.as_str(),
                next_sync,
                total_customers: members,
                error_log: why_partial,
                clear_force_removals: row.force_removals,
            }
        }
        Outcome::Failed(e) | Outcome::InvalidConfig(e) => SystemFinish::Failed {
            status: outcome.as_str(),
            error_log: e.clone(),
            next_sync: failure_backoff(now, row.consecutive_failures, schedule_hours),
        },
        Outcome::Interrupted => SystemFinish::Interrupted,
    };
    finish(client, row.id, &ctx.worker_id, &finish_row).await
}

/// Counts the run in the metrics and logs how it ended.
pub(super) fn observe(report: &RunReport) {
    let system = &report.system_name;
    let outcome = report.outcome.as_str();
    metrics::counter!("cdp_sync_runs_total", "outcome" => outcome).increment(1);
    metrics::counter!("cdp_sync_rows_added_total", "system" => system.clone())
        .increment(report.added.max(0) as u64);
    metrics::counter!("cdp_sync_rows_removed_total", "system" => system.clone())
        .increment(report.removed.max(0) as u64);
    if matches!(report.outcome, Outcome::Success | Outcome::Partial) {
        metrics::gauge!("cdp_sync_last_success_timestamp_seconds", "system" => system.clone())
            .set(Utc::now().timestamp() as f64);
    }
    match &report.outcome {
        Outcome::Failed(e) | Outcome::InvalidConfig(e) => {
            tracing::warn!(system = %system, outcome, error = %e, "sync ended")
        }
        _ => tracing::info!(
            system = %system,
            outcome,
            added = report.added,
            removed = report.removed,
            members = report.members,
            "sync ended"
        ),
    }
}
