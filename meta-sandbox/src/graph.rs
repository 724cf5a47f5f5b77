//! The emulated Graph API: one handler that routes `/{version}/…`, applies faults, checks the
//! token, runs the operation, and answers with Meta's body, status and usage headers.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::error::GraphError;
use super::events;
use super::faults::{WireFault, WireFaultKind, WireTarget};
use super::members::{self, Shape};
use super::params::Params;
use super::state::{
    AudienceView, Direction, RequestRecord, SandboxState, SessionParams, UsersReply,
};
use super::tokens;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateAudience,
    ListAudiences,
    ReadAudience,
    ReadSessions,
    DeleteAudience,
    AddUsers,
    RemoveUsers,
    ReplaceUsers,
    SendEvents,
    /// `POST /{version}/` with `batch` (only `debug_token` is served inside it).
    Batch,
    Unknown,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::CreateAudience => "create_audience",
            Op::ListAudiences => "list_audiences",
            Op::ReadAudience => "read_audience",
            Op::DeleteAudience => "delete_audience",
            Op::AddUsers => "add_users",
            Op::RemoveUsers => "remove_users",
            Op::ReplaceUsers => "replace_users",
            Op::ReadSessions => "read_sessions",
            Op::SendEvents => "send_events",
            Op::Batch => "batch",
            Op::Unknown => "unknown",
        }
    }

    fn user_write(self) -> bool {
        matches!(self, Op::AddUsers | Op::RemoveUsers | Op::ReplaceUsers)
    }
}

/// Where the usage headers point: an ad account (audience calls) or a pixel (events).
enum UsageKey {
    Account(String),
    Pixel(String),
    None,
}

struct Call<'a> {
    state: &'a SandboxState,
    params: &'a Params<'a>,
    headers: &'a HeaderMap,
    version: &'a str,
    record: RequestRecord,
    usage_key: UsageKey,
}

/// The query string with the values of `access_token` and `appsecret_proof` replaced, so the log
/// shows that a client put them in a URL without keeping them.
fn redact_query(query: &str) -> String {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            let v = if k == "access_token" || k == "appsecret_proof" || k == "input_token" {
                "[redacted]".into()
            } else {
                v
            };
            form_urlencoded::Serializer::new(String::new())
                .append_pair(&k, &v)
                .finish()
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The versions the sandbox serves, as Meta's Marketing API did in late 2026: v25.0 to v27.0.
const OLDEST_VERSION: u32 = 25;
const LATEST_VERSION: &str = "v27.0";
const LATEST_MAJOR: u32 = 27;

enum Version {
    Served,
    /// Older than the oldest served: Meta's "deprecated version" error.
    Expired,
    /// Not a version, or one not released yet.
    Unknown,
}

fn served_version(s: &str) -> Version {
    if !is_version(s) {
        return Version::Unknown;
    }
    let major: u32 = s[1..]
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < OLDEST_VERSION {
        Version::Expired
    } else if major > LATEST_MAJOR {
        Version::Unknown
    } else {
        Version::Served
    }
}

fn is_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let (major, minor) = match rest.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    digits(major) && minor.is_none_or(digits)
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

fn route(method: &Method, segments: &[&str]) -> Op {
    match (method.as_str(), segments) {
        ("POST", [_, act, "customaudiences"]) if act.starts_with("act_") => Op::CreateAudience,
        ("GET", [_, act, "customaudiences"]) if act.starts_with("act_") => Op::ListAudiences,
        ("GET", [_, _]) => Op::ReadAudience,
        ("GET", [_, _, "sessions"]) => Op::ReadSessions,
        ("DELETE", [_, _]) => Op::DeleteAudience,
        ("POST", [_, _, "users"]) => Op::AddUsers,
        ("DELETE", [_, _, "users"]) => Op::RemoveUsers,
        ("POST", [_, _, "usersreplace"]) => Op::ReplaceUsers,
        ("POST", [_, _, "events"]) => Op::SendEvents,
        ("POST", [_]) => Op::Batch,
        _ => Op::Unknown,
    }
}

/// Axum fallback handler for every Graph path.
pub async fn handle(
    State(state): State<SandboxState>,
    http_method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let path = uri.path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let parsed = Params::parse(uri.query(), content_type, &body);
    let empty = Params::default();
    let params = parsed.as_ref().unwrap_or(&empty);

    // Graph's method override (POST with method=GET|DELETE): gone for apps new since v27.0.
    let override_to = match (
        &http_method,
        params.text("method").map(|m| m.to_ascii_uppercase()),
    ) {
        (&Method::POST, Some(m)) if m == "GET" => Some(Method::GET),
        (&Method::POST, Some(m)) if m == "DELETE" => Some(Method::DELETE),
        _ => None,
    };
    let method = override_to.clone().unwrap_or_else(|| http_method.clone());
    let op = route(&method, &segments);
    let object_id = segments.get(1).map(|s| s.to_string());

    let wire = wire_target(op, params).and_then(|t| state.take_wire_fault(t));
    if let Some(fault) = wire
        .as_ref()
        .filter(|f| f.kind == WireFaultKind::BadGatewayHtml)
    {
        // A proxy in front of Meta answers; the call never reaches Meta (no RNG draw, no effect).
        state.record(RequestRecord {
            method: method.to_string(),
            http_method: http_method.to_string(),
            path: path.clone(),
            query: uri.query().map(redact_query),
            operation: op.name().to_string(),
            object_id,
            status: StatusCode::BAD_GATEWAY.as_u16(),
            wire_fault: Some(fault.kind),
            duration_ms: started.elapsed().as_millis() as u64,
            ..RequestRecord::default()
        });
        return bad_gateway();
    }

    let latency = state.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let ticket = state.begin_call(op.user_write());

    let mut call = Call {
        state: &state,
        params,
        headers: &headers,
        version: segments.first().copied().unwrap_or(""),
        record: RequestRecord {
            method: method.to_string(),
            http_method: http_method.to_string(),
            path: path.clone(),
            query: uri.query().map(redact_query),
            operation: op.name().to_string(),
            object_id: object_id.clone(),
            fbtrace_id: ticket.fbtrace_id.clone(),
            token_fingerprint: call_token(params, &headers).map(|t| tokens::fingerprint(&t)),
            ..RequestRecord::default()
        },
        usage_key: match (op, object_id.as_deref()) {
            (Op::SendEvents, Some(id)) => UsageKey::Pixel(id.to_string()),
            (Op::CreateAudience | Op::ListAudiences, Some(act)) => {
                UsageKey::Account(act.trim_start_matches("act_").to_string())
            }
            _ => UsageKey::None,
        },
    };
    // Audience calls report usage against the audience's ad account.
    if let (UsageKey::None, Some(id)) = (&call.usage_key, object_id.as_deref())
        && let Some(a) = state.audience(id)
    {
        call.usage_key = UsageKey::Account(a.account);
    }

    let refused_override = (override_to.is_some() && !state.options().allow_method_override)
        .then(GraphError::method_override_unsupported);
    let outcome = match parsed.as_ref().err().or(refused_override.as_ref()) {
        Some(e) => Err(e.clone()),
        None => match preflight(&call, &ticket) {
            Err(e) => Err(e),
            Ok(()) => match ticket.stall {
                Some(mut rx) => {
                    // Hang until faults change; then answer without touching state.
                    let _ = rx.changed().await;
                    Err(GraphError::new(
                        2,
                        "An unexpected error has occurred. Please retry your request later.",
                    ))
                }
                None => run(&mut call, op, &segments),
            },
        },
    };
    if let Err(e) = &outcome
        && ticket.injected.as_ref() == Some(e)
    {
        call.record.injected = true;
    }

    let (status, body) = match outcome {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => {
            call.record.error_code = Some(e.code);
            call.record.error_subcode = e.subcode;
            (e.status(), e.body(&ticket.fbtrace_id))
        }
    };
    let mut response = match &wire {
        Some(fault) => wire_response(status, &body, fault),
        None => (status, axum::Json(body)).into_response(),
    };
    usage_headers(response.headers_mut(), &call.usage_key, ticket.usage);
    if let Ok(v) = HeaderValue::from_str(&ticket.fbtrace_id) {
        response.headers_mut().insert("x-fb-trace-id", v);
    }

    call.record.status = status.as_u16();
    call.record.wire_fault = wire.map(|f| f.kind);
    call.record.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        method = %call.record.method,
        path = %call.record.path,
        status = call.record.status,
        rows = call.record.rows,
        error_code = call.record.error_code,
        "graph call"
    );
    state.record(call.record);
    response
}

/// The wire target a call is, if any: the stateful calls a dropped or mangled answer hurts.
fn wire_target(op: Op, params: &Params<'_>) -> Option<WireTarget> {
    match op {
        Op::CreateAudience => Some(WireTarget::AudienceCreate),
        Op::AddUsers | Op::RemoveUsers => Some(WireTarget::UsersWrite),
        Op::SendEvents => Some(WireTarget::Events),
        Op::ReplaceUsers => {
            (session_batch_seq(params) == Some(1)).then_some(WireTarget::ReplaceFirstBatch)
        }
        _ => None,
    }
}

/// `session.batch_seq` as a number or numeric string, without validating the rest.
fn session_batch_seq(params: &Params<'_>) -> Option<i64> {
    let session: Value = params.get("session")?.parse().ok()?;
    match session.get("batch_seq")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What nginx in front of an upstream answers when the upstream fails.
fn bad_gateway() -> Response {
    const PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
        <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "text/html")],
        PAGE,
    )
        .into_response()
}

/// The answer of a call that took effect, spoiled on the wire by `fault`.
fn wire_response(status: StatusCode, body: &Value, fault: &WireFault) -> Response {
    let bytes = Bytes::from(body.to_string());
    let json = [(header::CONTENT_TYPE, "application/json")];
    match fault.kind {
        WireFaultKind::DropAfterSuccess => {
            // A body that fails before its first byte: hyper closes the connection without
            // sending the buffered head, so the client gets no answer at all.
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other(
                    "sandbox wire fault: connection dropped after the call took effect",
                ))
            });
            (status, json, axum::body::Body::from_stream(broken)).into_response()
        }
        WireFaultKind::TruncatedJson => {
            let half = bytes.slice(..bytes.len() / 2);
            (status, json, half).into_response()
        }
        WireFaultKind::SlowBody => {
            const PIECES: usize = 10;
            let size = bytes.len().div_ceil(PIECES).max(1);
            let pieces: Vec<Bytes> = (0..bytes.len())
                .step_by(size)
                .map(|i| bytes.slice(i..(i + size).min(bytes.len())))
                .collect();
            let pause = Duration::from_millis(fault.slow_ms / pieces.len().max(1) as u64);
            let trickle = futures_util::stream::iter(pieces).then(move |piece| async move {
                tokio::time::sleep(pause).await;
                Ok::<Bytes, std::io::Error>(piece)
            });
            (status, json, axum::body::Body::from_stream(trickle)).into_response()
        }
        WireFaultKind::BadGatewayHtml => bad_gateway(),
    }
}

/// Token, appsecret_proof, version and injected failures, in the order Meta would hit them.
fn preflight(call: &Call<'_>, ticket: &super::state::CallTicket) -> Result<(), GraphError> {
    if ticket.token_error {
        return Err(GraphError::token_expired());
    }
    let token = call_token(call.params, call.headers).ok_or_else(GraphError::missing_token)?;
    // An expired or revoked token (by the token table) is refused on every call.
    if let Some(e) = tokens::lookup(&call.state.token_table(), &token).refusal(now_unix()) {
        return Err(e);
    }
    if let Some(proof) = call.params.text("appsecret_proof") {
        let well_formed = proof.len() == 64 && proof.bytes().all(|b| b.is_ascii_hexdigit());
        let matches = match &call.state.options().app_secret {
            Some(secret) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .expect("HMAC takes keys of any length");
                mac.update(token.as_bytes());
                const_hex::encode(mac.finalize().into_bytes()) == proof.to_ascii_lowercase()
            }
            None => true,
        };
        if !well_formed || !matches {
            return Err(GraphError::invalid(
                "Invalid appsecret_proof provided in the API argument",
            ));
        }
    }
    match served_version(call.version) {
        Version::Served => {}
        Version::Expired => return Err(GraphError::expired_version(LATEST_VERSION)),
        Version::Unknown => {
            return Err(GraphError::unknown_path(&format!("/{}", call.version)));
        }
    }
    match &ticket.injected {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

/// The call's token: as a parameter, or in the Authorization header (`Bearer` or `OAuth`), as
/// Graph accepts it.
fn call_token(params: &Params<'_>, headers: &HeaderMap) -> Option<String> {
    params
        .text("access_token")
        .or_else(|| {
            let header = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
            let (scheme, token) = header.split_once(' ')?;
            (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
                .then(|| token.trim().to_string())
        })
        .filter(|t| !t.is_empty())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn run(call: &mut Call<'_>, op: Op, segments: &[&str]) -> Result<Value, GraphError> {
    let object = segments.get(1).copied().unwrap_or("");
    match op {
        Op::CreateAudience => create_audience(call, object),
        Op::ListAudiences => list_audiences(call, object),
        Op::ReadAudience => read_audience(call, object),
        Op::ReadSessions => read_sessions(call, object),
        Op::DeleteAudience => {
            if call.state.delete_audience(object) {
                Ok(json!({ "success": true }))
            } else {
                Err(GraphError::unsupported("DELETE", object))
            }
        }
        Op::AddUsers => users(call, object, Direction::Add),
        Op::RemoveUsers => users(call, object, Direction::Remove),
        Op::ReplaceUsers => replace(call, object),
        Op::SendEvents => send_events(call, object),
        Op::Batch => {
            let table = call.state.token_table();
            let done = tokens::batch(call.params, &table, &call.record.fbtrace_id, now_unix())?;
            call.record.batch = done.paths;
            Ok(done.answer)
        }
        Op::Unknown => Err(unknown(call, segments)),
    }
}

fn unknown(call: &Call<'_>, segments: &[&str]) -> GraphError {
    match segments {
        [_, object, ..] if !is_numeric(object) && !object.starts_with("act_") => {
            GraphError::unsupported(call.record.method.as_str(), object)
        }
        [_, object] => GraphError::unsupported(call.record.method.as_str(), object),
        [_, _, rest @ ..] => GraphError::unknown_path(&format!("/{}", rest.join("/"))),
        _ => GraphError::unknown_path(&format!("/{}", segments.join("/"))),
    }
}

fn account_id<'s>(act: &'s str, method: &str) -> Result<&'s str, GraphError> {
    act.strip_prefix("act_")
        .filter(|id| is_numeric(id))
        .ok_or_else(|| GraphError::unsupported(method, act))
}

fn create_audience(call: &mut Call<'_>, act: &str) -> Result<Value, GraphError> {
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

fn read_audience(call: &mut Call<'_>, id: &str) -> Result<Value, GraphError> {
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
fn read_sessions(call: &mut Call<'_>, id: &str) -> Result<Value, GraphError> {
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

fn list_audiences(call: &mut Call<'_>, act: &str) -> Result<Value, GraphError> {
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

fn users(call: &mut Call<'_>, id: &str, direction: Direction) -> Result<Value, GraphError> {
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

fn replace(call: &mut Call<'_>, id: &str) -> Result<Value, GraphError> {
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

fn send_events(call: &mut Call<'_>, pixel: &str) -> Result<Value, GraphError> {
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

/// `X-Business-Use-Case-Usage`, `X-App-Usage` and (for audience calls) `X-Ad-Account-Usage`.
fn usage_headers(
    headers: &mut HeaderMap,
    key: &UsageKey,
    usage: Option<super::faults::UsageFault>,
) {
    let (pct, regain) = match usage {
        Some(u) => (u.call_count_pct, u.estimated_time_to_regain_access),
        None => (1, 0),
    };
    let entry = |kind: &str| {
        json!([{
            "type": kind,
            "call_count": pct,
            "total_cputime": pct,
            "total_time": pct,
            "estimated_time_to_regain_access": regain,
            "ads_api_access_tier": "standard_access",
        }])
    };
    let buc = match key {
        UsageKey::Account(id) => Some(json!({ id.as_str(): entry("custom_audience") })),
        UsageKey::Pixel(id) => Some(json!({ id.as_str(): entry("ads_management") })),
        UsageKey::None => None,
    };
    let mut put = |name: &'static str, v: Value| {
        if let Ok(h) = HeaderValue::from_str(&v.to_string()) {
            headers.insert(name, h);
        }
    };
    if let Some(b) = buc {
        put("x-business-use-case-usage", b);
    }
    put(
        "x-app-usage",
        json!({ "call_count": pct, "total_cputime": pct, "total_time": pct }),
    );
    if let UsageKey::Account(_) = key {
        put(
            "x-ad-account-usage",
            json!({ "acc_id_util_pct": pct, "reset_time_duration": regain * 60, "ads_api_access_tier": "standard_access" }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_look_like_v_digits_with_an_optional_minor() {
        assert!(is_version("v26.0") && is_version("v19") && is_version("v2.11"));
        assert!(
            !is_version("26.0") && !is_version("v26.") && !is_version("vx") && !is_version("act_1")
        );
    }

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
