//! Conversions API events: Meta's per-event rules. One invalid event rejects the whole request,
//! and the error names the event's index so a client can split the batch around it.
use serde_json::{Map, Value};

use super::error::GraphError;

/// Most events one `/events` call may carry.
pub const MAX_EVENTS: usize = 1_000;
const DAY: i64 = 86_400;
/// How far in the future an `event_time` may be (clock skew); Meta's limit is not documented.
const FUTURE_TOLERANCE_SECS: i64 = 600;
const ACTION_SOURCES: [&str; 9] = [
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
];
/// `user_data` fields Meta requires hashed (SHA-256, lowercase hex), as a string or an array.
const HASHED_USER_DATA: [&str; 10] = [
    "em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "ge",
];

/// Parses `data` and checks every event; `now` is Unix seconds.
pub fn validate(data: Option<Value>, now: i64) -> Result<Vec<Value>, GraphError> {
    let data = data.ok_or_else(|| GraphError::required("data"))?;
    let Value::Array(events) = data else {
        return Err(GraphError::invalid("Param data must be an array"));
    };
    // Meta's reference types `data` as a list of JSON-encoded strings (its SDKs send that);
    // objects are accepted too.
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| match e {
            Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            other => other,
        })
        .collect();
    if events.is_empty() {
        return Err(GraphError::invalid("Param data must be a non-empty array"));
    }
    if events.len() > MAX_EVENTS {
        return Err(GraphError::invalid(format!(
            "Too many events in one request: {} (the maximum is {MAX_EVENTS})",
            events.len()
        )));
    }
    for (i, event) in events.iter().enumerate() {
        check_event(event, now).map_err(|(title, msg, subcode)| {
            let e = GraphError::new(100, "Invalid parameter")
                .with_user(title, format!("event {i}: {msg}"));
            match subcode {
                Some(s) => e.with_subcode(s),
                None => e,
            }
        })?;
    }
    Ok(events)
}

type Rejection = (&'static str, String, Option<i64>);

fn reject(title: &'static str, msg: impl Into<String>) -> Rejection {
    (title, msg.into(), None)
}

fn check_event(event: &Value, now: i64) -> Result<(), Rejection> {
    let e = event
        .as_object()
        .ok_or_else(|| reject("Invalid Event", "each event must be a JSON object"))?;
    match e.get("event_name") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => {
            return Err(reject(
                "Missing Event Name",
                "event_name is required and must be a string",
            ));
        }
    }
    let action_source = match e.get("action_source") {
        Some(Value::String(s)) if ACTION_SOURCES.contains(&s.as_str()) => s.as_str(),
        Some(Value::String(s)) => {
            return Err(reject(
                "Invalid Action Source",
                format!(
                    "action_source {s:?} is not one of {}",
                    ACTION_SOURCES.join(", ")
                ),
            ));
        }
        _ => return Err(reject("Missing Action Source", "action_source is required")),
    };
    let event_time = e.get("event_time").and_then(Value::as_i64).ok_or_else(|| {
        reject(
            "Missing Event Time",
            "event_time is required and must be an integer (Unix seconds)",
        )
    })?;
    let window_days = if action_source == "physical_store" {
        62
    } else {
        7
    };
    if event_time < now - window_days * DAY {
        return Err((
            "Event Timestamp Too Old",
            format!("event_time is more than {window_days} days in the past"),
            Some(2804003),
        ));
    }
    if event_time > now + FUTURE_TOLERANCE_SECS {
        return Err(reject(
            "Event Timestamp In Future",
            "event_time is in the future",
        ));
    }
    let user_data = match e.get("user_data") {
        Some(Value::Object(u)) if !u.is_empty() => u,
        _ => {
            return Err(reject(
                "Missing User Data",
                "user_data is required and must be an object with at least one customer information parameter",
            ));
        }
    };
    if action_source == "website" {
        if !non_empty_string(e.get("event_source_url")) {
            return Err(reject(
                "Missing Event Source URL",
                "event_source_url is required for website events",
            ));
        }
        if !non_empty_string(user_data.get("client_user_agent")) {
            return Err(reject(
                "Missing Client User Agent",
                "user_data.client_user_agent is required for website events",
            ));
        }
    }
    check_hashed(user_data)?;
    if e.get("event_name").and_then(Value::as_str) == Some("Purchase") {
        let custom = e.get("custom_data").and_then(Value::as_object);
        let value_ok = custom.and_then(|c| c.get("value")).is_some_and(|v| {
            v.as_f64().is_some() || v.as_str().is_some_and(|s| s.parse::<f64>().is_ok())
        });
        let currency_ok = custom
            .and_then(|c| c.get("currency"))
            .and_then(Value::as_str)
            .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()));
        if !value_ok || !currency_ok {
            return Err(reject(
                "Missing Value or Currency",
                "custom_data.value and custom_data.currency (ISO 4217) are required for Purchase events",
            ));
        }
    }
    Ok(())
}

fn non_empty_string(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

fn check_hashed(user_data: &Map<String, Value>) -> Result<(), Rejection> {
    for field in HASHED_USER_DATA {
        let Some(v) = user_data.get(field) else {
            continue;
        };
        let ok = match v {
            Value::String(s) => is_sha256_hex(s),
            Value::Array(items) => items.iter().all(|i| i.as_str().is_some_and(is_sha256_hex)),
            _ => false,
        };
        if !ok {
            return Err(reject(
                "Invalid User Data",
                format!(
                    "user_data.{field} must be a SHA-256 hash (64 lowercase hex characters) or an array of them"
                ),
            ));
        }
    }
    Ok(())
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const H: &str = "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79";

    fn ev(source: &str, age_days: i64) -> Value {
        json!({"event_name":"Lead","event_time":NOW - age_days * DAY + 60,"action_source":source,"user_data":{"em":H}})
    }

    #[test]
    fn the_window_is_seven_days_except_for_physical_store() {
        assert!(validate(Some(json!([ev("system_generated", 7)])), NOW).is_ok());
        let e = validate(
            Some(json!([
                ev("system_generated", 0),
                ev("system_generated", 8)
            ])),
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            e.user_msg.as_deref(),
            Some("event 1: event_time is more than 7 days in the past")
        );
        assert!(validate(Some(json!([ev("physical_store", 62)])), NOW).is_ok());
        assert!(validate(Some(json!([ev("physical_store", 63)])), NOW).is_err());
    }
}
