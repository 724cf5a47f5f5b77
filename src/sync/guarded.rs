//! One plan's pipeline (see [`super::run`]) as a run of it needs it: with the system's own Meta
//! token, on a connection of its own that goes back to the pool clean, and with a panic ending the
//! run as `failed` instead of unwinding into the scheduler with the lease still held.
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use super::context::SyncContext;
use super::error::SyncError;
use super::lease::Lease;
use super::outcome::{Outcome, Synced};
use super::system::SyncPlan;
use crate::db;

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

/// Runs a valid plan with the system's own Meta token (`token_ref`) or the worker's, its writes
/// fenced by the lease (a body goes out whole only while the lease holds), on a
/// connection of its own (its session holds the staging and plan tables), which goes back to the
/// pool clean, or is closed when it cannot be cleaned.
async fn run_plan(
    ctx: &SyncContext,
    plan: &SyncPlan,
    run_id: i64,
    lease: &Lease,
    cancel: &CancellationToken,
) -> Result<Synced, Outcome> {
    let meta = super::tokens::client_for(ctx, plan.token_ref.as_deref()).await?;
    let ctx = &SyncContext {
        meta: meta.fenced(lease.fence()),
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
            super::tokens::explain_refusal(e.into(), &ctx.meta, plan.token_ref.as_deref())
        });
    // Whatever the run left in its session goes: a transaction a failed or cancelled step left
    // open, and its settings and tables.
    if let Err(e) = db::pool::reset_session(&client).await {
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
