//! Received Conversions API events, with Meta's 48-hour deduplication by event name and id.
use serde::Serialize;
use serde_json::Value;

use super::{SandboxState, now_secs};

/// Meta keeps the first of the events with the same `event_name` and `event_id` received within
/// 48 hours of each other and discards the later ones (server event parameters, `event_name`).
const DEDUP_WINDOW_SECS: i64 = 48 * 3600;

/// One accepted Conversions API event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedEvent {
    pub pixel_id: String,
    pub event: Value,
    pub test_event_code: Option<String>,
    pub partner_agent: Option<String>,
    /// Meta discards it: an event with the same `event_name` and `event_id` arrived for this
    /// pixel less than 48 hours before (events without an `event_id` are never duplicates).
    pub duplicate: bool,
}

impl SandboxState {
    /// Stores a request's events; returns how many were received (duplicates included, as
    /// Meta's `events_received` counts them: it deduplicates after receiving).
    pub fn push_events(
        &self,
        pixel_id: &str,
        events: Vec<Value>,
        test_event_code: Option<String>,
        partner_agent: Option<String>,
    ) -> usize {
        self.push_events_at(pixel_id, events, test_event_code, partner_agent, now_secs())
    }

    fn push_events_at(
        &self,
        pixel_id: &str,
        events: Vec<Value>,
        test_event_code: Option<String>,
        partner_agent: Option<String>,
        now: i64,
    ) -> usize {
        let n = events.len();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let list = inner.events.entry(pixel_id.to_string()).or_default();
        for event in events {
            let key = dedup_key(pixel_id, &event);
            let duplicate = match key {
                Some(key) => match inner.kept_events.get(&key) {
                    Some(&at) if now - at < DEDUP_WINDOW_SECS => true,
                    _ => {
                        inner.kept_events.insert(key, now);
                        false
                    }
                },
                None => false,
            };
            list.push(ReceivedEvent {
                pixel_id: pixel_id.to_string(),
                event,
                test_event_code: test_event_code.clone(),
                partner_agent: partner_agent.clone(),
                duplicate,
            });
        }
        n
    }

    pub fn events(&self, pixel_id: Option<&str>) -> Vec<ReceivedEvent> {
        let inner = self.lock();
        match pixel_id {
            Some(p) => inner.events.get(p).cloned().unwrap_or_default(),
            None => inner.events.values().flatten().cloned().collect(),
        }
    }
}

/// `(pixel, event_name, event_id)` of an event that has both as non-empty strings.
fn dedup_key(pixel_id: &str, event: &Value) -> Option<(String, String, String)> {
    let text = |k: &str| {
        event
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Some((pixel_id.to_string(), text("event_name")?, text("event_id")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SandboxOptions;

    #[test]
    fn an_event_resent_with_the_same_name_and_id_within_48_hours_is_a_duplicate() {
        let state = SandboxState::new(SandboxOptions::default());
        let e = |name: &str, id: Option<&str>| match id {
            Some(id) => serde_json::json!({"event_name": name, "event_id": id}),
            None => serde_json::json!({"event_name": name}),
        };
        let t0 = 1_000_000;
        let batch = vec![
            e("Purchase", Some("1")),
            e("Purchase", None),
            e("Lead", Some("1")),
        ];
        assert_eq!(state.push_events_at("7", batch.clone(), None, None, t0), 3);
        assert_eq!(
            state.push_events_at("7", batch.clone(), None, None, t0 + 3600),
            3
        );
        assert_eq!(state.push_events_at("8", batch, None, None, t0 + 3600), 3);
        let flags = |p| {
            state
                .events(Some(p))
                .iter()
                .map(|r| r.duplicate)
                .collect::<Vec<_>>()
        };
        assert_eq!(flags("7"), [false, false, false, true, false, true]);
        assert_eq!(
            flags("8"),
            [false, false, false],
            "another pixel is not a duplicate"
        );
        let late = t0 + DEDUP_WINDOW_SECS;
        state.push_events_at("7", vec![e("Purchase", Some("1"))], None, None, late);
        assert!(
            !state.events(Some("7"))[6].duplicate,
            "after 48 hours it is kept again"
        );
    }
}
