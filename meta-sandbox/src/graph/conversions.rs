//! The Conversions API: `POST /{pixel_id}/events`.
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Call, is_numeric};
use crate::error::GraphError;
use crate::events;

pub(super) fn send_events(call: &mut Call<'_>, pixel: &str) -> Result<Value, GraphError> {
    if !is_numeric(pixel) || call.state.audience(pixel).is_some() {
        return Err(GraphError::unsupported("POST", pixel));
    }
    let data: Option<Value> = match call.params.get("data") {
        Some(raw) => Some(
            raw.parse()
                .map_err(|_| GraphError::invalid("Param data must be a JSON array of events"))?,
        ),
        None => None,
    };
    if let Some(Value::Array(a)) = &data {
        call.record.rows = Some(a.len());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let events = events::validate(data, now)?;
    let n = call.state.push_events(
        pixel,
        events,
        call.params.text("test_event_code"),
        call.params.text("partner_agent"),
    );
    Ok(json!({
        "events_received": n,
        "messages": [],
        "fbtrace_id": call.record.fbtrace_id,
    }))
}
