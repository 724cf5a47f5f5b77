//! One attempt at a claimed system: open its run row, keep its lease renewed while the pipeline
//! runs (the system's own audience, then its definitions'), and always write an outcome, on a
//! fresh connection, releasing the lease. A panic inside the pipeline ends as `failed`, not as a
//! worker task that dies holding the lease.
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use anyhow::Context;
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use super::audience_runs;
use super::context::SyncContext;
use super::error::SyncError;
use super::lease::{Lease, LeaseLost};
use super::outcome::{Outcome, RunReport, Synced, Trigger};
use super::record;
use super::system::{OWN_AUDIENCE, SyncPlan};
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
    crate::alerts::after_run(ctx, &row, &report, why_partial.as_deref()).await;
    record::observe(&report);
    report
}

/// What a run that panicked records (the panic's own text may hold anything).
const PANICKED: &str =
    "the sync stopped on an internal error (a panic; the worker's log has where)";

/// Runs `plan`'s pipeline; a panic inside it ends the run as `failed` instead of unwinding into
/// the scheduler with the lease still held.
pub(super) async fn guarded(
    ctx: &SyncContext,
    plan: &SyncPlan,
    run_id: i64,
    lease: &Lease,
    cancel: &CancellationToken,
) -> Result<Synced, Outcome> {
    unless_it_panics(run_plan(ctx, plan, run_id, lease, cancel))
        .await
        .unwrap_or_else(|| {
            tracing::error!(system = %plan.label(), run_id, "the sync panicked");
            Err(Outcome::Failed(PANICKED.into()))
        })
}

/// `work`'s output, or `None` when it panicked.
async fn unless_it_panics<T>(work: impl std::future::Future<Output = T>) -> Option<T> {
    AssertUnwindSafe(work).catch_unwind().await.ok()
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

/// Runs a valid plan with the system's own Meta token (`token_ref`) or the worker's, on a
/// connection of its own (its session holds the staging and plan tables), which goes back to the
/// pool clean, or is closed when it cannot be cleaned.
async fn run_plan(
    ctx: &SyncContext,
    plan: &SyncPlan,
    run_id: i64,
    lease: &Lease,
    cancel: &CancellationToken,
) -> Result<Synced, Outcome> {
    let meta = crate::tokens::client_for(ctx, plan.token_ref.as_deref()).await?;
    let ctx = &SyncContext {
        meta,
        ..ctx.clone()
    };
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|e| Outcome::Failed(format!("database unavailable: {e}")))?;
    let result = super::run::execute(ctx, &client, plan, run_id, lease, cancel)
        .await
        .map_err(|e: SyncError| {
            crate::tokens::explain_refusal(e.into(), &ctx.meta, plan.token_ref.as_deref())
        });
    // A failed statement may have left a transaction open, which ROLLBACK ends (outside one it
    // only warns); whatever the run left in its session goes.
    if let Err(e) = client
        .batch_execute(
            "ROLLBACK; RESET enable_seqscan; RESET default_statistics_target; DISCARD TEMP",
        )
        .await
    {
        tracing::warn!(error = %db::error_text(&e), "Failed to reset the staging session; closing it");
        drop(deadpool_postgres::Object::take(client));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_that_panics_ends_as_none_instead_of_unwinding_into_the_scheduler() {
        let panicking = async {
            if std::hint::black_box(true) {
                panic!("poison");
            }
            1
        };
        assert_eq!(unless_it_panics(panicking).await, None);
        assert_eq!(unless_it_panics(async { 2 }).await, Some(2));
    }
}
