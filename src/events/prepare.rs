//! Pure: a claimed batch split into what is settled without Meta (sent too often unrecorded,
//! expired, unsendable) and the server events to send, hashed with the system's normalizer.
use std::collections::HashMap;

use chrono::Utc;
use serde_json::Value;

use super::outbox::{EventOutcome, PixelSystem};
use super::payload::{self, OutboxEvent, UserDataHasher};
use super::verdict::MAX_UNRECORDED_SENDS;
use crate::identity::{Normalizer, UserDataKey};

/// A batch split into what is settled without Meta (expired, unsendable, sent too often
/// unrecorded) and what is sent.
pub(super) struct Prepared {
    pub(super) settled: Vec<EventOutcome>,
    pub(super) ids: Vec<i64>,
    pub(super) data: Vec<Value>,
    /// Undocumented `user_data` keys left out, one entry per event and key.
    pub(super) dropped_keys: Vec<String>,
}

/// `sends`: per event, the claims whose outcome went unrecorded, this one included.
pub(super) fn prepare(
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
pub(super) fn normalizer_for(system: &PixelSystem) -> Normalizer {
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
pub(super) struct CapiHasher(pub(super) Normalizer);

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
