//! One claimed batch with Meta: stale events expired, unsendable ones refused, the rest sent
//! (split down to the bad events when Meta refuses a request for its content); its outcomes.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::Context;

use super::lease::Claim;
use super::outbox::{self, BatchCounts, EventOutcome, PixelSystem};
use super::prepare::{CapiHasher, prepare};
use super::pump::{Delivered, EventPump};
use super::split::{self, Fate};
use super::verdict;
use crate::meta::EventsRequest;

impl EventPump {
    /// Expires stale events, refuses unsendable ones (and those sent too often without a
    /// recorded outcome), sends the rest; the outcomes to record.
    pub(super) async fn deliver(
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
