//! The scheduler: claims due systems and syncs them, up to a configured number at once.
//!
//! Due state lives in the table (`next_sync`), so restarts lose nothing and any number of replicas
//! can run: a system is claimed under a lease with `FOR UPDATE SKIP LOCKED`, so each is synced by
//! one worker at a time. The loop wakes on an interval and on `NOTIFY` from the configuration
//! table's trigger, so an `INSERT` or `UPDATE … SET next_sync = now()` starts within seconds.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::db::configurations::claim_due;
use crate::sync::{RunReport, SyncContext, Trigger, sync_system};

/// The configuration table's NOTIFY channel (see `sql/0001_initial.sql`).
pub const CONFIG_CHANNEL: &str = "cdp_facebook_configurations";

/// Liveness of the worker's long-running parts, read by `/healthz`: the scheduler loop, the
/// NOTIFY listener and the event pump. A part that died is restarted (see [`supervise`]);
/// `/healthz` is 503 until it is back.
#[derive(Debug, Default)]
pub struct Health {
    /// Unix seconds of the loop's last turn.
    last_beat: AtomicI64,
    /// Set once the loop has started; `/healthz` is 503 before.
    started: AtomicBool,
    /// The LISTEN connection is up.
    pub listener: AtomicBool,
    /// The event pump's loop is running.
    pub pump: AtomicBool,
}

impl Health {
    /// Whether the listener and the event pump are both running.
    pub fn parts_alive(&self) -> bool {
        self.listener.load(Ordering::Relaxed) && self.pump.load(Ordering::Relaxed)
    }

    pub fn beat(&self) {
        self.started.store(true, Ordering::Relaxed);
        self.last_beat
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    }

    /// True when the loop turned within three intervals.
    pub fn loop_alive(&self, interval: Duration) -> bool {
        let age = chrono::Utc::now().timestamp() - self.last_beat.load(Ordering::Relaxed);
        self.started.load(Ordering::Relaxed) && age <= 3 * interval.as_secs() as i64 + 5
    }
}

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

/// The long-running loop. Returns when `shutdown` fires and in-flight syncs have finished their
/// current batch and released their leases (or the grace period ran out).
pub async fn run_scheduler(
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
    let tokens = tokio::spawn(crate::tokens::run_daily(ctx.clone(), shutdown.clone()));
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
) -> anyhow::Result<Vec<crate::sync::system::SystemRow>> {
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

/// Runs the task `start` makes until `shutdown`, starting it again when it ends or panics, after
/// a backoff (1 s, doubling to 60 s; back to 1 s after a run of a minute). `up` says whether it is
/// running, for `/healthz`.
pub async fn supervise<F, Fut>(
    name: &'static str,
    up: impl Fn(bool),
    shutdown: CancellationToken,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    const FIRST: Duration = Duration::from_secs(1);
    let mut delay = FIRST;
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        up(true);
        let ended = tokio::spawn(start()).await;
        up(false);
        if shutdown.is_cancelled() {
            break;
        }
        match ended {
            Err(e) if e.is_panic() => tracing::error!(task = name, "task panicked; restarting"),
            _ => tracing::error!(task = name, "task stopped; restarting"),
        }
        if started.elapsed() >= Duration::from_secs(60) {
            delay = FIRST;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// Listens on `channels` with a dedicated connection (pooled connections never see NOTIFY) and
/// wakes `wake` on each notification. Reconnects after errors until `shutdown`; `health.listener`
/// says whether the connection is up.
pub async fn listen(
    settings: crate::configuration::DatabaseSettings,
    channels: Vec<(&'static str, Arc<Notify>)>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        if let Err(e) = listen_once(&settings, &channels, &health, &shutdown).await {
            tracing::warn!(error = %crate::db::describe(&e), "LISTEN connection lost; reconnecting");
        }
        health.listener.store(false, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

async fn listen_once(
    settings: &crate::configuration::DatabaseSettings,
    channels: &[(&'static str, Arc<Notify>)],
    health: &Health,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let config = crate::db::pool::pg_config(settings)?;
    let (client, mut connection) = config
        .connect(crate::db::tls_connector()?)
        .await
        .context("Failed to connect for LISTEN")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n.channel().to_string());
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let listen: String = channels
        .iter()
        .map(|(c, _)| format!("LISTEN {c};"))
        .collect();
    client
        .batch_execute(&listen)
        .await
        .context("LISTEN failed")?;
    health.listener.store(true, Ordering::Relaxed);
    // A notification may have been missed while disconnected: wake everyone once.
    for (_, notify) in channels {
        notify.notify_one();
    }
    loop {
        tokio::select! {
            channel = rx.recv() => match channel {
                Some(channel) => {
                    for (name, notify) in channels {
                        if *name == channel {
                            notify.notify_one();
                        }
                    }
                }
                None => break,
            },
            _ = shutdown.cancelled() => break,
        }
    }
    driver.abort();
    if shutdown.is_cancelled() {
        Ok(())
    } else {
        anyhow::bail!("the LISTEN connection closed")
    }
}

/// The event pump's loop: conversion events flow continuously, not on the audience schedule.
/// Wakes on the outbox's NOTIFY and on `interval`; each turn sends everything pending.
pub async fn run_event_pump(
    pump: crate::events::EventPump,
    interval: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = wake.notified() => {}
            _ = shutdown.cancelled() => break,
        }
        match pump.run_once(&shutdown).await {
            Ok(report) if report.sent + report.rejected + report.expired > 0 => tracing::info!(
                sent = report.sent,
                accepted = report.accepted,
                rejected = report.rejected,
                expired = report.expired,
                "events delivered"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %crate::db::describe(&e), "event pump failed; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_started_again_after_a_backoff_and_is_down_meanwhile() {
        let starts = Arc::new(AtomicU32::new(0));
        let states = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let supervisor = {
            let (starts, states, shutdown) = (starts.clone(), states.clone(), shutdown.clone());
            tokio::spawn(supervise(
                "test",
                move |up| states.lock().unwrap().push(up),
                shutdown.clone(),
                move || {
                    let n = starts.fetch_add(1, Ordering::SeqCst);
                    let shutdown = shutdown.clone();
                    async move {
                        if n < 2 {
                            panic!("poison");
                        }
                        shutdown.cancelled().await;
                    }
                },
            ))
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 1, "waits before restarting");
        assert_eq!(*states.lock().unwrap(), vec![true, false]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "restarted after 1 s");
        tokio::time::sleep(Duration::from_millis(1400)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "the second wait is 2 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert_eq!(
            *states.lock().unwrap(),
            vec![true, false, true, false, true]
        );
        shutdown.cancel();
        supervisor.await.unwrap();
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "no restart after shutdown"
        );
    }
}
