//! One attempt at a claimed system: open its run row, keep its lease renewed while the pipeline
//! runs (the system's own audience, then its definitions'), and always write an outcome, on a
//! fresh connection, releasing the lease. The pipeline runs guarded (see [`super::guarded`]).
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::audience_runs;
use super::context::SyncContext;
use super::guarded::guarded;
use super::lease::{Lease, LeaseLost};
use super::outcome::{Outcome, RunReport, Trigger};
use super::record;
use super::system::OWN_AUDIENCE;
use crate::db::configurations::SystemRow;
use crate::db::{self, runs};

/// Syncs one claimed system. Never returns an error: every failure ends as an outcome written
/// to the configuration row and the run row (unless the database stays out of reach; then the
/// lease runs out and the system is claimed again).
pub async fn sync_system(
    ctx: &SyncContext,
    row: SystemRow,
    trigger: Trigger,
    cancel: CancellationToken,
) -> RunReport {
    let lease = Lease::claimed(
        ctx.pool.clone(),
        row.id,
        ctx.worker_id.clone(),
        Duration::from_secs(ctx.settings.worker.lease_secs),
    );
    let run_cancel = cancel.child_token();
    let plan = row.validate();
    let mut report = RunReport {
        system_name: row.system_name.clone(),
        run_id: None,
        outcome: Outcome::Success,
        added: 0,
        removed: 0,
        members: 0,
    };
    let mut why_partial = None;
    match open_run(ctx, &row, trigger).await {
        Err(e) => report.outcome = Outcome::Failed(format!("Failed to open the run: {e}")),
        Ok(run_id) => {
            report.run_id = Some(run_id);
            let renewing = CancellationToken::new();
            let work = async {
                let synced = match &plan {
                    Err(problems) => Err(Outcome::InvalidConfig(problems.join("; "))),
                    Ok(plan) => guarded(ctx, plan, run_id, &lease, &run_cancel).await,
                };
                // Then the system's other audiences, unless the run is stopping.
                let interrupted = matches!(&synced, Ok(s) if s.outcome == Outcome::Interrupted);
                let audiences = match &plan {
                    Ok(plan) if !interrupted && !lease.is_lost() => {
                        audience_runs::sync_all(ctx, plan, trigger, &lease, &run_cancel).await
                    }
                    _ => Vec::new(),
                };
                renewing.cancel();
                (synced, audiences)
            };
            let ((synced, audiences), ()) = tokio::join!(work, lease.keep(&renewing, &run_cancel));
            match synced {
                Ok(synced) => {
                    report.added = synced.added;
                    report.removed = synced.removed;
                    report.members = synced.members;
                    report.outcome = synced.outcome;
                    why_partial = synced.why_partial;
                }
                Err(outcome) => report.outcome = outcome,
            }
            (report.outcome, why_partial) =
                audience_runs::combine(report.outcome, why_partial, &audiences);
        }
    }
    if lease.is_lost() {
        report.outcome = Outcome::Failed(LeaseLost.to_string());
    }
    let schedule = plan.as_ref().ok().map(|p| &p.schedule);
    record::outcome(ctx, &row, schedule, &report, why_partial.clone()).await;
    super::alerts::after_run(ctx, &row, &report, why_partial.as_deref()).await;
    record::observe(&report);
    report
}

async fn open_run(ctx: &SyncContext, row: &SystemRow, trigger: Trigger) -> anyhow::Result<i64> {
    let client = ctx.pool.get().await.context("database unavailable")?;
    let of = runs::RunOf {
        configuration_id: row.id,
        system_name: &row.system_name,
        definition_id: OWN_AUDIENCE,
        audience_name: None,
    };
    runs::open(
        &**client,
        &of,
        trigger.as_str(),
        &ctx.worker_id,
        &row.sync_mode,
    )
    .await
    .map_err(|e| anyhow::anyhow!(db::error_text(&e)))
}
