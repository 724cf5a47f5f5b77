//! The scheduler: claims due systems and syncs them, up to a configured number at once.
//!
//! Due state lives in the table (`next_sync`), so restarts lose nothing and any number of replicas
//! can run: a system is claimed under a lease with `FOR UPDATE SKIP LOCKED`, so each is synced by
//! one worker at a time. The loop wakes on an interval and on `NOTIFY` from the configuration
//! table's trigger, so an `INSERT` or `UPDATE … SET next_sync = now()` starts within seconds.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::db::configurations::claim_due;
use crate::health::Health;
use crate::sync::{RunReport, SyncContext, Trigger, sync_system};

/// The configuration table's NOTIFY channel (see `sql/0001_initial.sql`).
pub const CONFIG_CHANNEL: &str = "cdp_facebook_configurations";

/// Syncs every due system, then returns (RUN_MODE=once, `run --once`, and tests). Stops claiming
/// when `cancel` fires.
pub async fn run_due(
    ctx: &SyncContext,
    trigger: Trigger,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<RunReport>> {
    let mut reports = Vec::new();
    let limit = ctx.settings.worker.max_concurrent_systems;
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut exhausted = false;
    loop {
        // Refill free slots as runs finish, so one long system does not hold the others back.
        if !exhausted && !cancel.is_cancelled() && running.len() < limit {
            let claimed = claim(ctx, (limit - running.len()) as i64).await?;
            exhausted = claimed.is_empty();
            for row in claimed {
                running.push(sync_system(ctx, row, trigger, cancel.clone()));
            }
        }
        match running.next().await {
            Some(report) => reports.push(report),
            None if exhausted || cancel.is_cancelled() => return Ok(reports),
            None => {}
        }
    }
}

/// The worker's long-running loop (`RUN_MODE=scheduler`): it owns the runs in flight, up to
/// `SCHEDULER_MAX_CONCURRENT`, and refills free slots with due systems each time it wakes — on its
/// interval, on the configuration table's NOTIFY (`wake`), or when a run ends. It beats `health`
/// on every turn, so `/healthz` can tell a stuck loop from a busy one, and runs the daily token
/// check beside it.
pub struct Scheduler {
    pub ctx: SyncContext,
    pub health: Arc<Health>,
    pub wake: Arc<Notify>,
}

impl Scheduler {
    /// Returns when `shutdown` fires and in-flight syncs have finished their current batch and
    /// released their leases (or the grace period ran out).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Scheduler { ctx, health, wake } = self;
        run(ctx, health, wake, shutdown).await
    }
}

async fn run(
    ctx: SyncContext,
    health: Arc<Health>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let interval = Duration::from_secs(ctx.settings.worker.poll_interval_secs);
    let max = ctx.settings.worker.max_concurrent_systems;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: JoinSet<RunReport> = JoinSet::new();
    // Every token in use is checked now and then daily (see `crate::tokens`).
    let tokens = tokio::spawn(crate::sync::tokens::run_daily(
        ctx.clone(),
        shutdown.clone(),
    ));
    tracing::info!(worker = %ctx.worker_id, interval_secs = interval.as_secs(), max_concurrent = max, "scheduler started");
    loop {
        health.beat();
        let free = max.saturating_sub(running.len());
        if free > 0 {
            match claim(&ctx, free as i64).await {
                Ok(rows) => {
                    for row in rows {
                        let ctx = ctx.clone();
                        let cancel = shutdown.child_token();
                        running.spawn(async move {
                            sync_system(&ctx, row, Trigger::Schedule, cancel).await
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::db::describe(&e), "claiming due systems failed; will retry")
                }
            }
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = wake.notified() => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    let grace = Duration::from_secs(ctx.settings.worker.shutdown_grace_secs);
    tracing::info!(
        in_flight = running.len(),
        "shutting down: finishing in-flight batches"
    );
    let drained = tokio::time::timeout(grace, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over; abandoning in-flight syncs (their leases will expire)");
        running.abort_all();
    }
    tokens.abort();
    Ok(())
}

async fn claim(
    ctx: &SyncContext,
    limit: i64,
) -> anyhow::Result<Vec<crate::db::configurations::SystemRow>> {
    let client = ctx
        .pool
        .get()
        .await
        .context("Failed to get a database connection")?;
    Ok(claim_due(
        &**client,
        &ctx.worker_id,
        ctx.settings.worker.lease_secs as i64,
        limit,
    )
    .await?)
}
