//! The event pump: sends every pending event of every active system with a `pixel_id` to
//! `POST /{pixel_id}/events`, 1,000 per request, until nothing is pending.
//!
//! No transaction is open while Meta is called: a batch is claimed under a lease in one short
//! transaction (`lease.rs`), read, sent (a request Meta refuses for its content is split until the
//! bad events stand alone, see `verdict.rs` and `split.rs`), and its outcomes are recorded in
//! another short transaction. A crash or a failed recording leaves the batch claimed until the
//! lease runs out; it is then resent with the same `event_id`s (Meta deduplicates), at most
//! [`MAX_UNRECORDED_SENDS`] times in all, and then recorded `failed`. A transient failure releases
//! the events for a later run, after a backoff, and never marks them rejected.
use std::sync::Arc;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::lease::{self, Claim};
use super::outbox::{self, BatchCounts, EventOutcome, PixelSystem};
use super::payload::{self, OutboxEvent, UserDataHasher};
use super::split::{self, Fate};
use super::verdict::{self, MAX_UNRECORDED_SENDS};
use crate::db::Pool;
use crate::identity::{Normalizer, UserDataKey};
use crate::meta::{EventsRequest, MAX_EVENTS_PER_CALL, MetaClient};

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
    meta: MetaClient,
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
    /// Events handed to Meta [`MAX_UNRECORDED_SENDS`] times without their outcome being recorded.
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

    /// Expires stale events, refuses unsendable ones (and those sent too often without a
    /// recorded outcome), sends the rest; the outcomes to record.
    async fn deliver(
        &self,
        system: &PixelSystem,
        batch: outbox::PendingBatch,
        claims: &[Claim],
        hasher: Arc<CapiHasher>,
    ) -> anyhow::Result<Delivered> {
        let processing = system.processing.clone();
        let events = batch.events;
        let sends: HashMap<i64, i32> = claims.iter().map(|c| (c.row_id, c.sends)).collect();
        // Normalizing and hashing 1,000 events is CPU work: keep it off the async runtime.
        let prepared =
            tokio::task::spawn_blocking(move || prepare(&events, &sends, &processing, &*hasher))
                .await
                .context("Event preparation panicked")?;
        let mut counts = BatchCounts {
            dropped_keys: prepared.dropped_keys.len() as i64,
            ..BatchCounts::default()
        };
        if !prepared.dropped_keys.is_empty() {
            tracing::warn!(
                count = prepared.dropped_keys.len(),
                keys = %prepared.dropped_keys.iter().take(10).map(String::as_str)
                    .collect::<Vec<_>>().join(", "),
                "user_data keys Meta does not document were left out of the events sent"
            );
        }
        let mut outcomes = prepared.settled;
        outcomes.extend(
            batch
                .unreadable
                .into_iter()
                .map(|(row_id, reason)| EventOutcome {
                    row_id,
                    status: "rejected",
                    attempts: 0,
                    error: Some(format!("not sent: {reason}")),
                    fbtrace_id: None,
                }),
        );
        for o in &outcomes {
            match o.status {
                "expired" => counts.expired += 1,
                "failed" => counts.failed += 1,
                _ => counts.rejected += 1,
            }
        }
        let (ids, data) = (&prepared.ids, &prepared.data);
        let delivery = split::deliver(data.len(), |range| {
            let request = EventsRequest {
                data: &data[range],
                test_event_code: system.test_event_code.as_deref(),
                partner_agent: system.partner_agent.as_deref(),
            };
            let meta = &self.meta;
            let pixel_id = system.pixel_id.as_str();
            async move { verdict::classify(meta.send_events(pixel_id, &request).await) }
        })
        .await;
        counts.accepted = delivery.accepted as i64;
        let mut decided = HashSet::with_capacity(delivery.fates.len());
        for (index, fate, attempts) in delivery.fates {
            let row_id = ids[index];
            decided.insert(index);
            let attempts = attempts as i32;
            outcomes.push(match fate {
                Fate::Sent { fbtrace_id } => {
                    counts.sent += 1;
                    EventOutcome {
                        row_id,
                        status: "sent",
                        attempts,
                        error: None,
                        fbtrace_id,
                    }
                }
                Fate::Rejected {
                    message,
                    fbtrace_id,
                } => {
                    counts.rejected += 1;
                    tracing::warn!(event_row_id = row_id, "Meta rejected an event");
                    EventOutcome {
                        row_id,
                        status: "rejected",
                        attempts,
                        error: Some(message),
                        fbtrace_id,
                    }
                }
            });
        }
        let retry = (0..ids.len())
            .filter(|i| !decided.contains(i))
            .map(|i| ids[i])
            .collect();
        Ok(Delivered {
            outcomes,
            counts,
            stopped: delivery.stopped,
            retry,
        })
    }
}

/// What one claimed batch came to.
struct Delivered {
    outcomes: Vec<EventOutcome>,
    counts: BatchCounts,
    /// Why delivery stopped (the events in `retry` are released for later), if it did.
    stopped: Option<split::Stopped>,
    retry: Vec<i64>,
}

/// A batch split into what is settled without Meta (expired, unsendable, sent too often
/// unrecorded) and what is sent.
struct Prepared {
    settled: Vec<EventOutcome>,
    ids: Vec<i64>,
    data: Vec<Value>,
    /// Undocumented `user_data` keys left out, one entry per event and key.
    dropped_keys: Vec<String>,
}

/// `sends`: per event, the claims whose outcome went unrecorded, this one included.
fn prepare(
    batch: &[OutboxEvent],
    sends: &HashMap<i64, i32>,
    processing: &payload::ProcessingOptions,
    hasher: &impl UserDataHasher,
) -> Prepared {
    let now = Utc::now();
    let mut prepared = Prepared {
        settled: Vec::new(),
        ids: Vec::with_capacity(batch.len()),
        data: Vec::with_capacity(batch.len()),
        dropped_keys: Vec::new(),
    };
    let settle = |row_id, status, error: String| EventOutcome {
        row_id,
        status,
        attempts: 0,
        error: Some(error),
        fbtrace_id: None,
    };
    for event in batch {
        let unrecorded = sends.get(&event.row_id).copied().unwrap_or(1) - 1;
        if unrecorded >= MAX_UNRECORDED_SENDS {
            let why = format!(
                "not resent: handed to Meta {unrecorded} times without its outcome being \
                 recorded (Meta deduplicates on event_id, so it may well have it)"
            );
            prepared.settled.push(settle(event.row_id, "failed", why));
            continue;
        }
        if payload::is_expired(&event.action_source, event.event_time, now) {
            let days = payload::delivery_window(&event.action_source).num_days();
            let why = format!("older than Meta's {days}-day window; not sent");
            prepared.settled.push(settle(event.row_id, "expired", why));
            continue;
        }
        match payload::event_json(event, processing, hasher) {
            Ok(json) => {
                let dropped = payload::undocumented_keys(event);
                prepared
                    .dropped_keys
                    .extend(dropped.into_iter().map(sanitized_key));
                prepared.ids.push(event.row_id);
                prepared.data.push(json);
            }
            Err(reason) => {
                prepared.settled.push(settle(
                    event.row_id,
                    "rejected",
                    format!("not sent: {reason}"),
                ));
            }
        }
    }
    prepared
}

/// A key name fit for a log line: identifier characters only, at most 40 of them (a key is
/// expected to be a name, but it comes from the CDP's JSON and could hold anything).
fn sanitized_key(key: &str) -> String {
    let clean = key.len() <= 40
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if clean {
        key.to_string()
    } else {
        "(unprintable key)".to_string()
    }
}

/// The system's normalizer; an unusable `default_country` is logged and ignored (phones written
/// without a country code are then left out of `user_data`), rather than holding events back.
fn normalizer_for(system: &PixelSystem) -> Normalizer {
    Normalizer::new(system.default_country.as_deref()).unwrap_or_else(|e| {
        tracing::warn!(
            configuration_id = system.configuration_id,
            error = %e,
            "default_country is not usable; phones need a country code"
        );
        Normalizer::new(None).expect("no default country is always valid")
    })
}

/// The identity normalizer under the CAPI key names the payload builder uses.
struct CapiHasher(Normalizer);

impl UserDataHasher for CapiHasher {
    fn cell(&self, key: &str, raw: &str, country: Option<&str>) -> Option<String> {
        let key = match key {
            "em" => UserDataKey::Em,
            "ph" => UserDataKey::Ph,
            "fn" => UserDataKey::Fn,
            "ln" => UserDataKey::Ln,
            "ct" => UserDataKey::Ct,
            "st" => UserDataKey::St,
            "zp" => UserDataKey::Zp,
            "country" => UserDataKey::Country,
            "db" => UserDataKey::Db,
            "ge" => UserDataKey::Ge,
            "external_id" => UserDataKey::ExternalId,
            _ => return None,
        };
        self.0.event_user_data_cell(key, raw, country).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain;
    impl UserDataHasher for Plain {
        fn cell(&self, _key: &str, raw: &str, _country: Option<&str>) -> Option<String> {
            Some(raw.to_string())
        }
    }

    fn event(row_id: i64) -> OutboxEvent {
        OutboxEvent {
            row_id,
            event_name: "Lead".into(),
            event_time: Utc::now(),
            action_source: "system_generated".into(),
            event_id: format!("e-{row_id}"),
            fbp: Some("fb.1.1.2".into()),
            ..Default::default()
        }
    }

    #[test]
    fn an_event_sent_too_often_without_a_recorded_outcome_is_failed_not_resent() {
        let batch = [event(1), event(2)];
        let sends = HashMap::from([(1, MAX_UNRECORDED_SENDS + 1), (2, MAX_UNRECORDED_SENDS)]);
        let p = prepare(&batch, &sends, &Default::default(), &Plain);
        assert_eq!(p.ids, vec![2]);
        assert_eq!(p.settled.len(), 1);
        assert_eq!((p.settled[0].row_id, p.settled[0].status), (1, "failed"));
    }

    #[test]
    fn dropped_keys_are_counted_per_event_and_odd_names_are_not_logged() {
        let mut one = event(1);
        one.user_data = Some(serde_json::json!({"fbp": "x", "emial": "a@b.c", "a@b.c": 1}));
        let p = prepare(&[one], &HashMap::new(), &Default::default(), &Plain);
        let mut keys = p.dropped_keys.clone();
        keys.sort();
        assert_eq!(keys, vec!["(unprintable key)", "emial"]);
    }
}
