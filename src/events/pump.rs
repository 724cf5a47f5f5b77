//! The event pump: sends every pending event of every active system with a `pixel_id` to
//! `POST /{pixel_id}/events`, 1,000 per request, until nothing is pending.
//!
//! No transaction is open while Meta is called: a batch is claimed under a lease in one short
//! transaction (`lease.rs`), read, prepared (`prepare.rs`), sent (`batch.rs`; a request Meta
//! refuses for its content is split until the bad events stand alone, see `verdict.rs` and
//! `split.rs`), and its outcomes are recorded in another short transaction. A crash or a failed
//! recording leaves the batch claimed until the lease runs out; it is then resent with the same
//! `event_id`s (Meta deduplicates), at most [`MAX_UNRECORDED_SENDS`] times in all, and then
//! recorded `failed`. A transient failure releases the events for a later run, after a backoff,
//! and never marks them rejected.
//!
//! [`MAX_UNRECORDED_SENDS`]: super::verdict::MAX_UNRECORDED_SENDS
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::lease;
use super::outbox::{self, BatchCounts, EventOutcome, PixelSystem};
use super::prepare::{CapiHasher, normalizer_for};
use super::split;
use crate::db::Pool;
use crate::meta::{MAX_EVENTS_PER_CALL, MetaClient};

/// How long a claimed batch is this worker's: longer than a batch can take with Meta (the
/// client's retries and throttle waits, 15 minutes by default, for each request of a split).
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(45 * 60);

/// The first backoff after a transient failure; it doubles per further failure.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Channel the outbox's insert trigger notifies; the scheduler LISTENs on it.
pub const NOTIFY_CHANNEL: &str = "cdp_conversion_events";

/// Sends pending conversion events; one [`EventPump::run_once`] drains everything pending.
pub struct EventPump {
    /// Connections for batch transactions and delivery-run rows.
    pool: Pool,
    /// Retries transient errors itself; what reaches the pump is final for that request.
    pub(super) meta: MetaClient,
    /// Recorded on each delivery run and claim, to tell replicas apart.
    worker_id: String,
    lease: Duration,
    retry_delay: Duration,
}

/// Totals of one [`EventPump::run_once`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PumpReport {
    /// Events in requests Meta accepted.
    pub sent: u64,
    /// Sum of Meta's `events_received`.
    pub accepted: u64,
    pub rejected: u64,
    pub expired: u64,
    /// Events handed to Meta [`MAX_UNRECORDED_SENDS`](super::verdict::MAX_UNRECORDED_SENDS)
    /// times without their outcome being recorded.
    pub failed: u64,
    /// Undocumented `user_data` keys left out of the events sent (never sent raw).
    pub dropped_user_data_keys: u64,
    /// Active systems with a pixel that were visited.
    pub systems: u64,
    /// Systems whose delivery stopped on an error (expired token, Meta unreachable, database);
    /// their remaining events stay pending for the next run.
    pub failed_systems: u64,
}

impl EventPump {
    pub fn new(pool: Pool, meta: MetaClient, worker_id: String) -> Self {
        Self {
            pool,
            meta,
            worker_id,
            lease: DEFAULT_CLAIM_LEASE,
            retry_delay: DEFAULT_RETRY_DELAY,
        }
    }

    /// How long a claimed batch stays this worker's (default [`DEFAULT_CLAIM_LEASE`]).
    pub fn with_claim_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The first backoff after a transient failure (default [`DEFAULT_RETRY_DELAY`]).
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// The pump's loop in scheduler mode: conversion events flow continuously, not on the
    /// audience schedule. Wakes on the outbox's NOTIFY ([`NOTIFY_CHANNEL`]) and on `interval`;
    /// each turn sends everything pending.
    pub async fn run_until_stopped(
        &self,
        interval: Duration,
        wake: Arc<tokio::sync::Notify>,
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
            match self.run_once(&shutdown).await {
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

    /// Sends every pending event of every active system with a pixel_id, until none is left or
    /// `cancel` fires (the in-flight batch is finished first).
    #[tracing::instrument(name = "events.run_once", skip_all)]
    pub async fn run_once(&self, cancel: &CancellationToken) -> anyhow::Result<PumpReport> {
        let (systems, customers) = {
            let client = self
                .pool
                .get()
                .await
                .context("Failed to get a connection")?;
            (
                outbox::pixel_systems(&client).await?,
                outbox::customer_lookup(&client).await?,
            )
        };
        let mut report = PumpReport::default();
        for system in &systems {
            if cancel.is_cancelled() {
                break;
            }
            report.systems += 1;
            let (counts, error) = self
                .drain_system(system, customers.as_deref(), cancel)
                .await;
            report.sent += counts.sent as u64;
            report.accepted += counts.accepted as u64;
            report.rejected += counts.rejected as u64;
            report.expired += counts.expired as u64;
            report.failed += counts.failed as u64;
            report.dropped_user_data_keys += counts.dropped_keys as u64;
            if let Some(error) = error {
                report.failed_systems += 1;
                tracing::warn!(
                    configuration_id = system.configuration_id,
                    error = %error,
                    "event delivery stopped for this system; its events stay pending"
                );
            }
        }
        if report.sent + report.rejected + report.expired + report.failed > 0 {
            tracing::info!(
                sent = report.sent,
                accepted = report.accepted,
                rejected = report.rejected,
                expired = report.expired,
                failed = report.failed,
                dropped_user_data_keys = report.dropped_user_data_keys,
                systems = report.systems,
                failed_systems = report.failed_systems,
                "events pumped"
            );
        }
        Ok(report)
    }

    /// Sends one system's pending events; a delivery run is recorded when there was work.
    #[tracing::instrument(name = "events.system", skip_all,
        fields(configuration_id = system.configuration_id))]
    async fn drain_system(
        &self,
        system: &PixelSystem,
        customers: Option<&str>,
        cancel: &CancellationToken,
    ) -> (BatchCounts, Option<String>) {
        let mut run_id = None;
        let mut totals = BatchCounts::default();
        let result = self
            .drain_batches(system, customers, cancel, &mut run_id, &mut totals)
            .await;
        let error = match result {
            Ok(stopped) => stopped,
            Err(e) => Some(crate::db::describe(&e)),
        };
        if let Some(run_id) = run_id {
            let finished = match self.pool.get().await {
                Ok(client) => outbox::finish_run(&client, run_id, error.as_deref()).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = finished {
                tracing::warn!(run_id, error = %crate::db::describe(&e), "could not close the delivery run");
            }
        }
        (totals, error)
    }

    /// Batch after batch until nothing is pending; `Ok(Some(reason))` when Meta made it stop.
    async fn drain_batches(
        &self,
        system: &PixelSystem,
        customers: Option<&str>,
        cancel: &CancellationToken,
        run_id: &mut Option<i64>,
        totals: &mut BatchCounts,
    ) -> anyhow::Result<Option<String>> {
        let hasher = Arc::new(CapiHasher(normalizer_for(system)));
        // Ids only grow within a run, so each batch starts after the previous one.
        let mut after_id = 0;
        while !cancel.is_cancelled() {
            let claimed = {
                let mut client = self
                    .pool
                    .get()
                    .await
                    .context("Failed to get a connection")?;
                lease::claim_batch(
                    &mut client,
                    system,
                    after_id,
                    MAX_EVENTS_PER_CALL as i64,
                    &self.worker_id,
                    self.lease,
                )
                .await?
            };
            let claims = claimed.claims;
            let Some(last) = claims.last() else {
                if claimed.contended {
                    // Another pump's claim won these rows; the next look sees it and goes on.
                    continue;
                }
                return Ok(None);
            };
            after_id = last.row_id;
            let batch = {
                let client = self
                    .pool
                    .get()
                    .await
                    .context("Failed to get a connection")?;
                let ids: Vec<i64> = claims.iter().map(|c| c.row_id).collect();
                outbox::claimed_events(&client, &ids, customers).await?
            };
            let run = match *run_id {
                Some(id) => id,
                None => {
                    let client = self
                        .pool
                        .get()
                        .await
                        .context("Failed to get a connection")?;
                    let id = outbox::start_run(&client, system, &self.worker_id).await?;
                    *run_id = Some(id);
                    id
                }
            };
            // No transaction and no connection is held from here until the outcomes are recorded.
            let delivered = self.deliver(system, batch, &claims, hasher.clone()).await?;
            let counts = delivered.counts;
            self.record(system, run, &delivered).await?;
            tracing::debug!(
                run_id = run,
                sent = counts.sent,
                rejected = counts.rejected,
                expired = counts.expired,
                failed = counts.failed,
                retried = delivered.retry.len(),
                "batch recorded"
            );
            totals.sent += counts.sent;
            totals.accepted += counts.accepted;
            totals.rejected += counts.rejected;
            totals.expired += counts.expired;
            totals.failed += counts.failed;
            totals.dropped_keys += counts.dropped_keys;
            if let Some(stopped) = delivered.stopped {
                return Ok(Some(stopped.reason));
            }
        }
        Ok(None)
    }

    /// One short transaction: the outcomes, the claims they settle, and the events to retry.
    async fn record(
        &self,
        system: &PixelSystem,
        run: i64,
        delivered: &Delivered,
    ) -> anyhow::Result<()> {
        let mut client = self
            .pool
            .get()
            .await
            .context("Failed to get a connection")?;
        let tx = client
            .transaction()
            .await
            .context("Failed to start recording a batch")?;
        let id = system.configuration_id;
        outbox::record_outcomes(&tx, id, run, &delivered.outcomes, delivered.counts).await?;
        let settled: Vec<i64> = delivered.outcomes.iter().map(|o| o.row_id).collect();
        lease::drop_claims(&tx, id, &settled).await?;
        if let Some(stopped) = &delivered.stopped {
            let backoff = stopped.backoff.then_some(self.retry_delay);
            lease::release_for_retry(&tx, id, &delivered.retry, &stopped.reason, backoff).await?;
        }
        tx.commit()
            .await
            .context("Failed to commit a delivered batch")?;
        Ok(())
    }
}

/// What one claimed batch came to.
pub(super) struct Delivered {
    pub(super) outcomes: Vec<EventOutcome>,
    pub(super) counts: BatchCounts,
    /// Why delivery stopped (the events in `retry` are released for later), if it did.
    pub(super) stopped: Option<split::Stopped>,
    pub(super) retry: Vec<i64>,
}
