//! `debug_token`: what Meta says about an access token (valid, when it expires, its scopes).
//!
//! Meta documents the call as `GET /debug_token?input_token=…`, which would put a token in a URL.
//! The client sends it inside a Graph API batch request instead (`POST /{version}/` with
//! `batch=[{"method":"GET","relative_url":"debug_token?input_token=…"}]` and
//! `include_headers=false`): the token under inspection then travels only in the POST body, like
//! the access token. This is the batch API, not HTTP method override: what Graph API v27.0
//! (2026-11-04) bars for new apps is the override (`?method=GET` on a POST) and *asynchronous*
//! batch requests; a synchronous batch whose item names its own method stays documented.
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::error::{GraphError, MetaError};

/// `error_subcode` of code 190 meaning "the session has expired".
pub const EXPIRED_SUBCODE: i64 = 463;

/// What `debug_token` told about a token. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub is_valid: bool,
    /// `None`: the token never expires (Meta's `expires_at` 0, as for system-user tokens).
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
    /// Why it is not valid, when Meta said: `(code, subcode, message)`.
    pub error: Option<TokenError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub code: i64,
    pub subcode: Option<i64>,
    pub message: String,
}

impl TokenInfo {
    /// The token is expired, by Meta's subcode or by its expiry time.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.error
            .as_ref()
            .is_some_and(|e| e.code == 190 && e.subcode == Some(EXPIRED_SUBCODE))
            || self.expires_at.is_some_and(|t| t <= now)
    }

    /// What a refused call says about its token: a 190 answer is an invalid token (the check
    /// itself is made with the token under inspection, so Meta refuses the call when it is
    /// expired or revoked); any other error is not an answer about the token.
    pub fn from_refusal(e: &MetaError) -> Option<Self> {
        match e {
            MetaError::Graph(g) if g.code == 190 => Some(Self::refused(g)),
            _ => None,
        }
    }

    fn refused(g: &GraphError) -> Self {
        TokenInfo {
            is_valid: false,
            expires_at: None,
            scopes: Vec::new(),
            error: Some(TokenError {
                code: g.code,
                subcode: g.subcode,
                message: g.message.clone(),
            }),
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    is_valid: bool,
    #[serde(default)]
    expires_at: Option<Value>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    error: Option<RawError>,
}

#[derive(Deserialize)]
struct RawError {
    code: Option<Value>,
    subcode: Option<Value>,
    #[serde(default)]
    message: String,
}

fn number(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads `debug_token`'s answer `{"data":{is_valid, expires_at, scopes, error?}}`.
pub fn parse_debug_token(body: &Value) -> Result<TokenInfo, MetaError> {
    let envelope =
        Envelope::deserialize(body).map_err(|e| MetaError::Decode(format!("debug_token: {e}")))?;
    let data = envelope.data;
    let expires_at = number(data.expires_at.as_ref())
        .filter(|&t| t > 0)
        .and_then(|t| DateTime::from_timestamp(t, 0));
    Ok(TokenInfo {
        is_valid: data.is_valid,
        expires_at,
        scopes: data.scopes,
        error: data.error.map(|e| TokenError {
            code: number(e.code.as_ref()).unwrap_or(0),
            subcode: number(e.subcode.as_ref()),
            message: e.message,
        }),
    })
}

/// The one answer of a one-request batch: `[{"code":200,"body":"{…}"}]`, `body` a JSON string.
/// An error answer inside the batch is returned as Meta's error.
pub fn batch_answer(answer: &Value) -> Result<Value, MetaError> {
    let first = answer
        .as_array()
        .and_then(|a| a.first())
        .ok_or_else(|| MetaError::Decode("batch: expected an array of one answer".into()))?;
    let status = number(first.get("code")).unwrap_or(0);
    let body: Value = match first.get("body") {
        Some(Value::String(s)) => serde_json::from_str(s)
            .map_err(|_| MetaError::Decode("batch: the answer's body is not JSON".into()))?,
        Some(other) => other.clone(),
        None => Value::Null,
    };
    let status = u16::try_from(status).unwrap_or(0);
    if let Some(g) = GraphError::from_value(status, &body) {
        return Err(g.into());
    }
    if !(200..300).contains(&status) {
        return Err(MetaError::Http { status });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_never_expiring_token_has_no_expiry_and_its_scopes() {
        let info = parse_debug_token(&json!({"data": {"is_valid": true, "expires_at": 0,
            "scopes": ["ads_management", "ads_read"], "app_id": "1", "type": "SYSTEM_USER"}}))
        .unwrap();
        assert!(info.is_valid);
        assert_eq!(info.expires_at, None);
        assert_eq!(info.scopes, ["ads_management", "ads_read"]);
        assert!(!info.is_expired(Utc::now()));
    }

    #[test]
    fn an_invalid_token_carries_metas_error_and_counts_as_expired_on_subcode_463() {
        let info = parse_debug_token(&json!({"data": {"is_valid": false, "expires_at": 1700000000,
            "scopes": [], "error": {"code": 190, "subcode": 463, "message": "Session has expired"}}}))
        .unwrap();
        assert!(!info.is_valid);
        assert_eq!(info.expires_at.unwrap().timestamp(), 1_700_000_000);
        assert_eq!(info.error.as_ref().unwrap().subcode, Some(463));
        assert!(info.is_expired(Utc::now()));
    }

    #[test]
    fn a_batch_answer_is_unwrapped_and_an_error_inside_it_is_metas_error() {
        let ok = batch_answer(&json!([{"code": 200, "body": "{\"data\":{\"is_valid\":true}}"}]));
        assert_eq!(ok.unwrap()["data"]["is_valid"], true);
        let refused = batch_answer(&json!([{"code": 400, "body":
            "{\"error\":{\"message\":\"expired\",\"type\":\"OAuthException\",\"code\":190,\"error_subcode\":463}}"}]))
        .unwrap_err();
        assert_eq!(refused.code(), Some((190, Some(463))));
        let info = TokenInfo::from_refusal(&refused).unwrap();
        assert!(info.is_expired(Utc::now()) && !info.is_valid);
        assert!(batch_answer(&json!({"data": 1})).is_err());
        assert!(TokenInfo::from_refusal(&MetaError::Timeout).is_none());
    }
}
