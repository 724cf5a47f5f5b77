//! Custom audiences: create, read (fields, statuses, count bounds), list (cursor pages) and
//! their upload sessions.
use axum::http::header;
use serde_json::{Map, Value, json};

use super::{Call, is_numeric};
use crate::error::GraphError;
use crate::members::Shape;
use crate::state::AudienceView;

/// Fields a custom audience answers on `GET /{audience_id}` and in lists: the CustomAudience
/// reference's list (as in Meta's SDK, `customaudience.py`). Those the sandbox has no value for are
/// answered as `null`; any other name is Meta's "nonexisting field" error.
const AUDIENCE_FIELDS: [&str; 41] = [
    "id",
    "account_id",
    "approximate_count_lower_bound",
    "approximate_count_upper_bound",
    "customer_file_source",
    "data_source",
    "data_source_types",
    "datafile_custom_audience_uploading_status",
    "delete_time",
    "delivery_status",
    "description",
    "excluded_custom_audiences",
    "external_event_source",
    "fields_violating_integrity_policy",
    "household_audience",
    "included_custom_audiences",
    "is_household",
    "is_snapshot",
    "is_value_based",
    "lookalike_audience_ids",
    "lookalike_spec",
    "name",
    "operation_status",
    "opt_out_link",
    "original_audience_name",
    "owner_business",
    "page_deletion_marked_delete_time",
    "permission_for_actions",
    "pixel_id",
    "regulated_audience_spec",
    "retention_days",
    "rev_share_policy_id",
    "rule",
    "rule_aggregation",
    "rule_v2",
    "seed_audience",
    "sharing_status",
    "subtype",
    "time_content_updated",
    "time_created",
    "time_updated",
];
/// Fields answered on `GET /{audience_id}` when the call names none.
const DEFAULT_READ_FIELDS: [&str; 8] = [
    "id",
    "name",
    "subtype",
    "customer_file_source",
    "operation_status",
    "delivery_status",
    "approximate_count_lower_bound",
    "approximate_count_upper_bound",
];
const CUSTOMER_FILE_SOURCES: [&str; 3] = [
    "USER_PROVIDED_ONLY",
    "PARTNER_PROVIDED_ONLY",
    "BOTH_USER_AND_PARTNER_PROVIDED",
];
const DEFAULT_PAGE: usize = 25;
const MAX_PAGE: usize = 500;
/// Below this many members an audience is "too small" to deliver (delivery_status 300).
const MIN_DELIVERABLE: usize = 1_000;

fn account_id<'s>(act: &'s str, method: &str) -> Result<&'s str, GraphError> {
    act.strip_prefix("act_")
        .filter(|id| is_numeric(id))
        .ok_or_else(|| GraphError::unsupported(method, act))
}

pub(super) fn create_audience(call: &mut Call<'_>, act: &str) -> Result<Value, GraphError> {
    let account = account_id(act, "POST")?;
    let p = call.params;
    let subtype = p.text("subtype").unwrap_or_else(|| "CUSTOM".into());
    if subtype != "CUSTOM" {
        return Err(GraphError::invalid(format!(
            "Invalid subtype {subtype}: the sandbox emulates customer-file audiences only (subtype CUSTOM)"
        )));
    }
    let name = p
        .text("name")
        .ok_or_else(|| GraphError::invalid("Missing parameter(s): name"))?;
    let source = p
        .text("customer_file_source")
        .ok_or_else(|| GraphError::invalid("Missing parameter(s): customer_file_source"))?;
    if !CUSTOMER_FILE_SOURCES.contains(&source.as_str()) {
        return Err(GraphError::invalid(format!(
            "Param customer_file_source must be one of {{{}}}",
            CUSTOMER_FILE_SOURCES.join(", ")
        )));
    }
    let value_based = match p.text("is_value_based").as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => {
            return Err(GraphError::invalid(format!(
                "Param is_value_based must be a boolean (is {})",
                other.chars().take(20).collect::<String>()
            )));
        }
    };
    // Read-after-write: `fields` on a POST asks for the created object's fields back.
    let fields = match p.text("fields") {
        Some(_) => Some(requested_fields(call, &["id"])?),
        None => None,
    };
    let id =
        call.state
            .create_audience(account, &name, p.text("description"), &source, value_based)?;
    call.record.object_id = Some(id.clone());
    match (fields, call.state.audience(&id)) {
        (Some(fields), Some(view)) => Ok(audience_json(&view, &fields)),
        _ => Ok(json!({ "id": id })),
    }
}

fn requested_fields(call: &Call<'_>, default: &[&str]) -> Result<Vec<String>, GraphError> {
    let fields: Vec<String> = match call.params.text("fields") {
        Some(f) => f
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => default.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(bad) = fields
        .iter()
        .find(|f| !AUDIENCE_FIELDS.contains(&f.as_str()))
    {
        return Err(GraphError::invalid(format!(
            "Tried accessing nonexisting field ({bad}) on node type (CustomAudience)"
        )));
    }
    Ok(fields)
}

/// Meta reports sizes as ranges. Here: the count rounded down and up to a step of 100 below
/// 10,000 members, else to two significant digits (12,345 → 12,000 … 13,000).
pub fn count_bounds(count: usize) -> (usize, usize) {
    let step = if count < 10_000 {
        100
    } else {
        10usize.pow(count.ilog10() - 1)
    };
    let lower = count / step * step;
    (lower, count.div_ceil(step) * step)
}

fn audience_json(a: &AudienceView, fields: &[String]) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(a.id));
    let (lower, upper) = count_bounds(a.member_count);
    for f in fields {
        let v = match f.as_str() {
            "id" => continue,
            "account_id" => json!(a.account),
            "name" => json!(a.name),
            "description" => match &a.description {
                Some(d) => json!(d),
                None => continue,
            },
            "subtype" => json!("CUSTOM"),
            "customer_file_source" => json!(a.customer_file_source),
            "operation_status" => {
                if a.replace_in_progress {
                    json!({"code": 414, "description": "Replace in progress"})
                } else {
                    json!({"code": 200, "description": "Normal"})
                }
            }
            "delivery_status" => {
                if a.member_count >= MIN_DELIVERABLE {
                    json!({"code": 200, "description": "This audience is ready for use."})
                } else {
                    json!({"code": 300, "description": "This audience is too small to use for advertising."})
                }
            }
            "approximate_count_lower_bound" => json!(lower),
            "approximate_count_upper_bound" => json!(upper),
            "data_source" => json!({
                "type": "FILE_IMPORTED",
                "sub_type": match a.shape {
                    Some(Shape::SingleKey) => "HASHES_OR_USER_IDS",
                    _ => "MULTI_HASHES",
                },
            }),
            "time_created" => json!(a.time_created),
            "time_updated" | "time_content_updated" => json!(a.time_updated),
            "is_value_based" => json!(a.value_based),
            "is_household" | "is_snapshot" => json!(false),
            "retention_days" => json!(0),
            "fields_violating_integrity_policy" | "lookalike_audience_ids" => json!([]),
            _ => Value::Null,
        };
        out.insert(f.clone(), v);
    }
    Value::Object(out)
}

pub(super) fn read_audience(call: &mut Call<'_>, id: &str) -> Result<Value, GraphError> {
    let audience = call
        .state
        .audience(id)
        .ok_or_else(|| GraphError::unsupported("GET", id))?;
    let fields = requested_fields(call, &DEFAULT_READ_FIELDS)?;
    let faults = call.state.faults();
    if let Some(code) = &faults.audience_read_error {
        return Err(code.to_error());
    }
    let mut out = audience_json(&audience, &fields);
    let overrides = [
        ("operation_status", &faults.audience_operation_status),
        ("delivery_status", &faults.audience_delivery_status),
    ];
    for (field, status) in overrides {
        if let (Some(status), Some(v)) = (status, out.get_mut(field)) {
            *v = status.to_json();
        }
    }
    Ok(out)
}

/// `GET /{audience_id}/sessions`: the audience's upload sessions, newest first, numbers as
/// numeric strings as Meta sends them.
pub(super) fn read_sessions(call: &mut Call<'_>, id: &str) -> Result<Value, GraphError> {
    let sessions = call
        .state
        .sessions(id)
        .ok_or_else(|| GraphError::unsupported("GET", id))?;
    let data: Vec<Value> = sessions
        .iter()
        .map(|s| {
            json!({
                "session_id": s.session_id.to_string(),
                "start_time": s.start_time.to_string(),
                "end_time": s.end_time.map_or_else(|| "0".to_string(), |t| t.to_string()),
                "num_received": s.num_received.to_string(),
                "num_invalid_entries": s.num_invalid_entries.to_string(),
                "stage": s.stage,
            })
        })
        .collect();
    Ok(json!({ "data": data }))
}

pub(super) fn list_audiences(call: &mut Call<'_>, act: &str) -> Result<Value, GraphError> {
    let account = account_id(act, "GET")?;
    let fields = requested_fields(call, &["id"])?;
    let limit = match call.params.text("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| GraphError::invalid("Param limit must be a positive integer"))?
            .min(MAX_PAGE),
        None => DEFAULT_PAGE,
    };
    let all = call.state.list_audiences(account);
    let start = match call.params.text("after") {
        Some(cursor) => {
            let after = decode_cursor(&cursor)
                .ok_or_else(|| GraphError::invalid("Invalid cursor after"))?;
            all.iter()
                .position(|a| a.id == after)
                .map(|i| i + 1)
                .unwrap_or(all.len())
        }
        None => 0,
    };
    let page = &all[start.min(all.len())..(start + limit).min(all.len())];
    let data: Vec<Value> = page.iter().map(|a| audience_json(a, &fields)).collect();
    let (Some(first), Some(last)) = (page.first(), page.last()) else {
        return Ok(json!({ "data": [] }));
    };
    let mut paging = json!({
        "cursors": { "before": encode_cursor(&first.id), "after": encode_cursor(&last.id) }
    });
    if start + limit < all.len() {
        // Meta's `next` repeats the access token; ours leaves it out (URLs end up in logs).
        let host = call
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        paging["next"] = json!(format!(
            "http://{host}/{}/{act}/customaudiences?fields={}&limit={limit}&after={}",
            call.version,
            fields.join("%2C"),
            encode_cursor(&last.id)
        ));
    }
    Ok(json!({ "data": data, "paging": paging }))
}

/// Opaque cursors, like Meta's: the audience id, hex-encoded behind a fixed prefix.
fn encode_cursor(id: &str) -> String {
    format!("QVFI{}", const_hex::encode(id))
}

fn decode_cursor(c: &str) -> Option<String> {
    let bytes = const_hex::decode(c.strip_prefix("QVFI")?).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_bounds_bracket_the_count() {
        assert_eq!(count_bounds(0), (0, 0));
        assert_eq!(count_bounds(250), (200, 300));
        assert_eq!(count_bounds(12_345), (12_000, 13_000));
        assert_eq!(count_bounds(1_000_000), (1_000_000, 1_000_000));
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(
            decode_cursor(&encode_cursor("2385")).as_deref(),
            Some("2385")
        );
        assert_eq!(decode_cursor("garbage"), None);
    }
}
