//! `/{audience_id}/users` (add, remove) and `/usersreplace`: the session parameters, the payload
//! and the answer.
use serde_json::{Value, json};

use super::Call;
use crate::error::GraphError;
use crate::members;
use crate::state::{Direction, SessionParams, UsersReply};

/// Parses `session` (object, or JSON-encoded string); ids may be numbers or numeric strings.
fn parse_session(call: &mut Call<'_>) -> Result<Option<SessionParams>, GraphError> {
    let Some(raw) = call.params.get("session") else {
        return Ok(None);
    };
    let v: Value = raw
        .parse()
        .map_err(|_| GraphError::invalid("Param session must be a JSON object"))?;
    if v.is_null() {
        return Ok(None);
    }
    let int = |name: &str| -> Option<i64> {
        match v.get(name)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    };
    let session_id = int("session_id").filter(|&n| n > 0).ok_or_else(|| {
        GraphError::invalid("Param session.session_id must be a positive 64-bit integer")
    })?;
    let batch_seq = int("batch_seq")
        .ok_or_else(|| GraphError::invalid("Param session.batch_seq must be an integer"))?;
    let last_batch_flag = match v.get("last_batch_flag") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "1" => true,
        Some(Value::String(s)) if s == "false" || s == "0" => false,
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(_) => {
            return Err(GraphError::invalid(
                "Param session.last_batch_flag must be a boolean",
            ));
        }
    };
    call.record.session_id = Some(session_id.to_string());
    call.record.batch_seq = Some(batch_seq);
    call.record.last_batch_flag = Some(last_batch_flag);
    Ok(Some(SessionParams {
        session_id: session_id as u64,
        batch_seq,
        last_batch_flag,
        estimated_num_total: int("estimated_num_total").and_then(|n| usize::try_from(n).ok()),
    }))
}

fn users_body(id_field: &str, id: &str, reply: UsersReply, samples: Value) -> Value {
    json!({
        id_field: id,
        "session_id": reply.session_id.to_string(),
        "num_received": reply.num_received,
        "num_invalid_entries": reply.num_invalid,
        "invalid_entry_samples": samples,
    })
}

fn samples_json(samples: &std::collections::BTreeMap<String, String>) -> Value {
    if samples.is_empty() {
        json!([])
    } else {
        json!(samples)
    }
}

pub(super) fn users(
    call: &mut Call<'_>,
    id: &str,
    direction: Direction,
) -> Result<Value, GraphError> {
    let method = if direction == Direction::Add {
        "POST"
    } else {
        "DELETE"
    };
    if call.state.audience(id).is_none() {
        return Err(GraphError::unsupported(method, id));
    }
    let session = parse_session(call)?;
    let upload = members::parse_payload(
        call.params.get("payload"),
        &call.state.faults().invalid_cells,
    )?;
    call.record.rows = Some(upload.received);
    let samples = samples_json(&upload.samples);
    let reply = call.state.apply_users(id, direction, session, upload)?;
    Ok(users_body("audience_id", id, reply, samples))
}

pub(super) fn replace(call: &mut Call<'_>, id: &str) -> Result<Value, GraphError> {
    let Some(audience) = call.state.audience(id) else {
        return Err(GraphError::unsupported("POST", id));
    };
    let session = parse_session(call)?.ok_or_else(|| GraphError::required("session"))?;
    let upload = members::parse_payload(
        call.params.get("payload"),
        &call.state.faults().invalid_cells,
    )?;
    call.record.rows = Some(upload.received);
    if call.state.faults().refuse_replace {
        return Err(GraphError::new(
            2650,
            "(#2650) Failed to update the custom audience: this audience does not support replacing its users",
        )
        .with_subcode(1870144));
    }
    let samples = samples_json(&upload.samples);
    let reply = call.state.apply_replace(id, session, upload)?;
    Ok(users_body("account_id", &audience.account, reply, samples))
}
