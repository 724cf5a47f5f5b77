//! Wire faults: a call that took effect, then answered badly (dropped, cut, slowed, or a proxy's
//! 502 page in place of Meta's answer).
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::Value;

use super::Op;
use crate::faults::{WireFault, WireFaultKind, WireTarget};
use crate::params::Params;

/// The wire target a call is, if any: the stateful calls a dropped or mangled answer hurts.
pub(super) fn wire_target(op: Op, params: &Params<'_>) -> Option<WireTarget> {
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
pub(super) fn bad_gateway() -> Response {
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
pub(super) fn wire_response(status: StatusCode, body: &Value, fault: &WireFault) -> Response {
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
