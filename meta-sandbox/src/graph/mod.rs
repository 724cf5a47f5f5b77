//! The emulated Graph API: one handler that routes `/{version}/…`, applies faults, checks the
//! token, runs the operation, and answers with Meta's body, status and usage headers.
mod audiences;
mod conversions;
mod usage;
mod users;
mod version;
mod wire;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::error::GraphError;
use super::faults::WireFaultKind;
use super::params::Params;
use super::state::{Direction, RequestRecord, SandboxState};
use super::tokens;
use audiences::{create_audience, list_audiences, read_audience, read_sessions};
use conversions::send_events;
use usage::{UsageKey, usage_headers};
use users::{replace, users};
use version::{LATEST_VERSION, Version, served_version};
use wire::{bad_gateway, wire_response, wire_target};

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
