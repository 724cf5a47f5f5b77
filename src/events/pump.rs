//! The event pump: sends every pending event of every active system with a `pixel_id` to
//! `POST /{pixel_id}/events`, 1,000 per request, until nothing is pending.
//!
//! One batch is one transaction (see `outbox.rs`): lock the system, read the batch, expire stale
//! events, send the rest (splitting a rejected request until the bad event stands alone), record
//! the outcomes, commit. The side effect comes before the commit, as in zero2prod's delivery
//! worker: a crash resends only the in-flight batch, with the same `event_id`s.
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::outbox::{self, BatchCounts, Outcome, PixelSystem};
use super::payload::{self, OutboxEvent, UserDataHasher};
use super::split::{self, Attempt, Fate};
use crate::db::Pool;
use crate::identity::{Normalizer, UserDataKey};
use crate::meta::{EventsRequest, MAX_EVENTS_PER_CALL, MetaClient, MetaError};

/// Channel the outbox's insert trigger notifies; the scheduler LISTENs on it.
pub const NOTIFY_CHANNEL: &str = "cdp_conversion_events";

/// Sends pending conversion events; one [`EventPump::run_once`] drains everything pending.
pub struct EventPump {
    /// Connections for batch transactions and delivery-run rows.
    pool: Pool,
    /// Retries transient errors itself; what reaches the pump is final for that request.
    meta: MetaClient,
    /// Recorded on each delivery run, to tell replicas apart.
    worker_id: String,
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
            if let Some(error) = error {
                report.failed_systems += 1;
                tracing::warn!(
                    configuration_id = system.configuration_id,
                    error = %error,
                    "event delivery stopped for this system; its events stay pending"
                );
            }
        }
        if report.sent + report.rejected + report.expired > 0 {
            tracing::info!(
                sent = report.sent,
                accepted = report.accepted,
                rejected = report.rejected,
                expired = report.expired,
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
            Err(e) => Some(format!("{e:#}")),
        };
        if let Some(run_id) = run_id {
            let finished = match self.pool.get().await {
                Ok(client) => outbox::finish_run(&client, run_id, error.as_deref()).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = finished {
                tracing::warn!(run_id, error = %format!("{e:#}"), "could not close the delivery run");
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
            let mut client = self
                .pool
                .get()
                .await
                .context("Failed to get a connection")?;
            let tx = client.transaction().await?;
            if !outbox::try_lock_system(&tx, system.configuration_id).await? {
                tracing::debug!("another worker is sending this system's events");
                return Ok(None);
            }
            let batch =
                outbox::pending_batch(&tx, system, after_id, MAX_EVENTS_PER_CALL as i64, customers)
                    .await?;
            let Some(last_id) = batch.last_id else {
                return Ok(None);
            };
            after_id = last_id;
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
            let (outcomes, counts, stopped) = self.deliver(system, batch, hasher.clone()).await?;
            outbox::record_outcomes(&tx, system.configuration_id, run, &outcomes, counts).await?;
            tx.commit()
                .await
                .context("Failed to commit a delivered batch")?;
            tracing::debug!(
                run_id = run,
                sent = counts.sent,
                rejected = counts.rejected,
                expired = counts.expired,
                "batch recorded"
            );
            totals.sent += counts.sent;
            totals.accepted += counts.accepted;
            totals.rejected += counts.rejected;
            totals.expired += counts.expired;
            if stopped.is_some() {
                return Ok(stopped);
            }
        }
        Ok(None)
    }

    /// Expires stale events, refuses unsendable ones, sends the rest; the outcomes to record.
    async fn deliver(
        &self,
        system: &PixelSystem,
        batch: outbox::PendingBatch,
        hasher: Arc<CapiHasher>,
    ) -> anyhow::Result<(Vec<Outcome>, BatchCounts, Option<String>)> {
        let processing = system.processing.clone();
        let events = batch.events;
        // Normalizing and hashing 1,000 events is CPU work: keep it off the async runtime.
        let prepared = tokio::task::spawn_blocking(move || prepare(&events, &processing, &*hasher))
            .await
            .context("Event preparation panicked")?;
        let mut counts = BatchCounts::default();
        let mut outcomes = prepared.settled;
        outcomes.extend(
            batch
                .unreadable
                .into_iter()
                .map(|(row_id, reason)| Outcome {
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
            async move { classify(meta.send_events(pixel_id, &request).await) }
        })
        .await;
        counts.accepted = delivery.accepted as i64;
        for (index, fate, attempts) in delivery.fates {
            let row_id = ids[index];
            let attempts = attempts as i32;
            outcomes.push(match fate {
                Fate::Sent { fbtrace_id } => {
                    counts.sent += 1;
                    Outcome {
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
                    Outcome {
                        row_id,
                        status: "rejected",
                        attempts,
                        error: Some(message),
                        fbtrace_id,
                    }
                }
            });
        }
        Ok((outcomes, counts, delivery.stopped))
    }
}

/// A batch split into what is settled without Meta (expired, unsendable) and what is sent.
struct Prepared {
    settled: Vec<Outcome>,
    ids: Vec<i64>,
    data: Vec<Value>,
}

fn prepare(
    batch: &[OutboxEvent],
    processing: &payload::ProcessingOptions,
    hasher: &impl UserDataHasher,
) -> Prepared {
    let now = Utc::now();
    let mut prepared = Prepared {
        settled: Vec::new(),
        ids: Vec::with_capacity(batch.len()),
        data: Vec::with_capacity(batch.len()),
    };
    let settle = |row_id, status, error: String| Outcome {
        row_id,
        status,
        attempts: 0,
        error: Some(error),
        fbtrace_id: None,
    };
    for event in batch {
        if payload::is_expired(&event.action_source, event.event_time, now) {
            let days = payload::delivery_window(&event.action_source).num_days();
            let why = format!("older than Meta's {days}-day window; not sent");
            prepared.settled.push(settle(event.row_id, "expired", why));
            continue;
        }
        match payload::event_json(event, processing, hasher) {
            Ok(json) => {
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

/// Meta's answer as the splitter needs it. Code 100 means "something in this request is
/// invalid" — except subcode 33 (the pixel does not exist or is not ours), which no event is to
/// blame for; that, an expired token (190) and everything else stop the system's delivery.
fn classify(result: Result<crate::meta::EventsResponse, MetaError>) -> Attempt {
    match result {
        Ok(response) => Attempt::Accepted {
            events_received: response.events_received,
            fbtrace_id: response.fbtrace_id,
        },
        Err(MetaError::Graph(g)) if g.code == 100 && g.subcode != Some(33) => {
            let mut message = g.to_string();
            if let Some(detail) = g.error_user_msg.as_deref().filter(|m| !m.is_empty()) {
                message.push_str(": ");
                message.push_str(detail);
            }
            Attempt::Rejected {
                message,
                fbtrace_id: g.fbtrace_id.clone(),
            }
        }
        Err(e) => Attempt::Stop(e.to_string()),
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
    use crate::meta::GraphError;

    fn graph(code: i64, subcode: Option<i64>) -> MetaError {
        MetaError::from(GraphError {
            http_status: 400,
            code,
            subcode,
            error_type: "OAuthException".into(),
            message: "Invalid parameter".into(),
            fbtrace_id: Some("T1".into()),
            is_transient: false,
            error_user_title: None,
            error_user_msg: Some("event 3: value is required".into()),
        })
    }

    #[test]
    fn an_invalid_parameter_answer_blames_the_events_and_keeps_metas_message() {
        let Attempt::Rejected {
            message,
            fbtrace_id,
        } = classify(Err(graph(100, None)))
        else {
            panic!("expected a rejection");
        };
        assert!(message.contains("Meta error 100"), "{message}");
        assert!(message.ends_with("event 3: value is required"), "{message}");
        assert_eq!(fbtrace_id.as_deref(), Some("T1"));
    }

    #[test]
    fn a_missing_pixel_or_an_expired_token_stops_instead_of_rejecting_events() {
        assert!(matches!(
            classify(Err(graph(100, Some(33)))),
            Attempt::Stop(_)
        ));
        assert!(matches!(
            classify(Err(graph(190, Some(463)))),
            Attempt::Stop(_)
        ));
        assert!(matches!(
            classify(Err(MetaError::Timeout)),
            Attempt::Stop(_)
        ));
    }
}
