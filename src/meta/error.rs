//! Meta's error JSON as a typed error, and the one error type every client call returns.
//!
//! `Display` is written for operators (it ends up in `error_log`): code, subcode, type, Meta's
//! message and the `fbtrace_id` Meta support asks for. It never carries a URL, the token or
//! payload cells: transport errors drop the URL, and the client scrubs its secrets from Meta's
//! message before building a [`GraphError`] (Meta echoes a malformed token in some messages).
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::retry::{RetryClass, classify_graph, classify_http_status};

/// An error answer in Meta's format: `{"error":{"message","type","code","error_subcode",…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    pub http_status: u16,
    pub code: i64,
    pub subcode: Option<i64>,
    /// Meta's `type`, e.g. `OAuthException`; empty when absent.
    pub error_type: String,
    pub message: String,
    pub fbtrace_id: Option<String>,
    pub is_transient: bool,
    pub error_user_title: Option<String>,
    pub error_user_msg: Option<String>,
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Meta error {}", self.code)?;
        if let Some(sub) = self.subcode {
            write!(f, "/{sub}")?;
        }
        if !self.error_type.is_empty() {
            write!(f, " ({})", self.error_type)?;
        }
        write!(f, ": {}", self.message)?;
        // Meta's user-facing title and text name the problem plainly ("Audience Upload Blocked",
        // which event of a batch is invalid); add what the message does not already say.
        let extra: Vec<&str> = [&self.error_user_title, &self.error_user_msg]
            .into_iter()
            .filter_map(|t| t.as_deref())
            .filter(|t| !t.is_empty() && !self.message.contains(t))
            .collect();
        if !extra.is_empty() {
            write!(f, " [{}]", extra.join(": "))?;
        }
        if let Some(id) = &self.fbtrace_id {
            write!(f, " (fbtrace_id {id})")?;
        }
        Ok(())
    }
}

impl GraphError {
    /// Reads Meta's error envelope from a response body; `None` when the body is not one.
    ///
    /// Tolerant on purpose: `code`/`error_subcode` as number or numeric string, `error_subcode`
    /// absent or null, `error_data` as a JSON string or an object (ignored), unknown fields.
    pub fn from_body(http_status: u16, body: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(body).ok()?;
        Self::from_value(http_status, &value)
    }

    pub(crate) fn from_value(http_status: u16, value: &Value) -> Option<Self> {
        let raw = RawError::deserialize(value.get("error")?).ok()?;
        Some(GraphError {
            http_status,
            code: as_i64(raw.code.as_ref())?,
            subcode: as_i64(raw.error_subcode.as_ref()),
            error_type: raw.r#type.unwrap_or_default(),
            message: raw.message.unwrap_or_default(),
            fbtrace_id: raw.fbtrace_id,
            is_transient: raw.is_transient.unwrap_or(false),
            error_user_title: raw.error_user_title,
            error_user_msg: raw.error_user_msg,
        })
    }

    /// Replaces every occurrence of the given secrets in Meta's texts by `[redacted]`.
    pub(crate) fn scrub(mut self, secrets: &[&str]) -> Self {
        for text in [
            Some(&mut self.message),
            self.error_user_title.as_mut(),
            self.error_user_msg.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            for secret in secrets.iter().filter(|s| !s.is_empty()) {
                if text.contains(secret) {
                    *text = text.replace(secret, "[redacted]");
                }
            }
        }
        self
    }
}

#[derive(Deserialize)]
struct RawError {
    message: Option<String>,
    r#type: Option<String>,
    code: Option<Value>,
    error_subcode: Option<Value>,
    fbtrace_id: Option<String>,
    is_transient: Option<bool>,
    error_user_title: Option<String>,
    error_user_msg: Option<String>,
}

fn as_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Everything a Meta call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Meta answered with its error JSON. Boxed: it is the largest variant by far, and every
    /// `Result` of the client would otherwise carry its size.
    #[error("{0}")]
    Graph(Box<GraphError>),
    /// An error status without Meta's error JSON (e.g. a 502 from a proxy).
    #[error("Meta answered HTTP {status} without an error body")]
    Http { status: u16 },
    /// No whole answer within the request timeout (the call may or may not have taken effect).
    #[error("Meta did not answer in time")]
    Timeout,
    /// The connection broke after the request may have been sent (the call may or may not have
    /// taken effect); the text never holds the URL.
    #[error("could not talk to Meta: {0}")]
    Connection(String),
    /// No connection could be made: the request was never sent. The text never holds the URL.
    #[error("could not connect to Meta: {0}")]
    Connect(String),
    /// An answer whose body is not JSON: a proxy's error page, or Meta's JSON cut off. Not Meta's
    /// word; whether the call took effect is unknown for a 2xx or 5xx. The body is not echoed.
    #[error("Meta's answer was not JSON ({status}, {content_type}){}", detail_suffix(.detail))]
    NotJson {
        status: u16,
        /// The `Content-Type` as sent (shortened), or `no content type`.
        content_type: String,
        /// Where parsing stopped (serde's position text), never the body itself.
        detail: String,
    },
    /// Refused locally, before any request: Meta takes at most `max` rows per call.
    #[error("refused to send {rows} rows in one call to Meta (at most {max})")]
    TooLarge { rows: usize, max: usize },
    /// A success status whose body is not what the endpoint documents.
    #[error("unexpected answer from Meta: {0}")]
    Decode(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// Longest `Content-Type` kept in an error text.
const MAX_CONTENT_TYPE: usize = 64;

impl From<GraphError> for MetaError {
    fn from(e: GraphError) -> Self {
        MetaError::Graph(Box::new(e))
    }
}

impl MetaError {
    /// Retry or not, decided on code/subcode (never on the message), HTTP status and transport.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            MetaError::Graph(g) => classify_graph(g.code, g.subcode, g.is_transient, g.http_status),
            MetaError::Http { status } => classify_http_status(*status),
            MetaError::Timeout | MetaError::Connection(_) | MetaError::Connect(_) => {
                RetryClass::Retry
            }
            // A cut-off success answer, or a proxy's page: the status decides.
            MetaError::NotJson { status, .. } if (200..300).contains(status) => RetryClass::Retry,
            MetaError::NotJson { status, .. } => classify_http_status(*status),
            MetaError::TooLarge { .. } | MetaError::Decode(_) => RetryClass::DontRetry,
        }
    }

    /// The request may have reached Meta and taken effect without us learning of it: a timeout,
    /// a connection broken after sending, a 5xx without Meta's error JSON (a proxy may have
    /// forwarded the call), or a success status whose body could not be read. Re-sending a
    /// non-idempotent call (audience create) after one of these may do it twice.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            MetaError::Timeout | MetaError::Connection(_) => true,
            MetaError::Http { status } => *status >= 500,
            MetaError::NotJson { status, .. } => *status >= 500 || (200..300).contains(status),
            MetaError::Graph(_)
            | MetaError::Connect(_)
            | MetaError::TooLarge { .. }
            | MetaError::Decode(_) => false,
        }
    }

    /// An answer with a body that is not JSON; `content_type` is shortened and never the body.
    pub(crate) fn not_json(status: u16, content_type: Option<&str>, detail: String) -> Self {
        let content_type = match content_type.map(str::trim).filter(|c| !c.is_empty()) {
            Some(c) => c
                .chars()
                .filter(|ch| !ch.is_control())
                .take(MAX_CONTENT_TYPE)
                .collect(),
            None => "no content type".to_string(),
        };
        MetaError::NotJson {
            status,
            content_type,
            detail,
        }
    }

    /// `(code, subcode)` when Meta answered with its error JSON.
    pub fn code(&self) -> Option<(i64, Option<i64>)> {
        match self {
            MetaError::Graph(g) => Some((g.code, g.subcode)),
            _ => None,
        }
    }

    /// The token is invalid, expired or lacks a session: an operator must issue a new one.
    pub fn is_auth(&self) -> bool {
        matches!(self, MetaError::Graph(g) if g.code == 190 || g.code == 102)
    }

    /// Meta will not run `usersreplace` on this audience (error 2650 other than the session's own
    /// busy, sequence, time-out and retry answers): the caller falls back to adding.
    pub fn refuses_replace(&self) -> bool {
        const SESSION_SUBCODES: [i64; 5] = [1870145, 1870147, 1870148, 1870158, 1870159];
        matches!(self, MetaError::Graph(g)
            if g.code == 2650 && !g.subcode.is_some_and(|s| SESSION_SUBCODES.contains(&s)))
    }

    /// Meta said the caller is over a rate limit (the call may succeed later).
    pub fn is_throttle(&self) -> bool {
        matches!(self, MetaError::Graph(g) if super::retry::is_throttle_code(g.code, g.subcode))
    }

    /// From a transport error, without the URL (so never a query string) in the text.
    pub(crate) fn from_transport(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return MetaError::Timeout;
        }
        let connect = e.is_connect();
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        if connect {
            MetaError::Connect(text)
        } else {
            MetaError::Connection(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> GraphError {
        GraphError::from_body(400, v.to_string().as_bytes()).expect("an error envelope")
    }

    #[test]
    fn a_full_error_envelope_is_read_field_by_field() {
        let g = parse(json!({"error": {
            "message": "Error validating access token: Session has expired",
            "type": "OAuthException", "code": 190, "error_subcode": 463,
            "fbtrace_id": "AbC123", "is_transient": false,
            "error_user_title": "Token expired", "error_user_msg": "Log in again"
        }}));
        assert_eq!(g.code, 190);
        assert_eq!(g.subcode, Some(463));
        assert_eq!(g.error_type, "OAuthException");
        assert_eq!(g.fbtrace_id.as_deref(), Some("AbC123"));
        assert!(!g.is_transient);
        assert_eq!(g.error_user_title.as_deref(), Some("Token expired"));
        assert_eq!(g.error_user_msg.as_deref(), Some("Log in again"));
        assert_eq!(g.http_status, 400);
    }

    #[test]
    fn a_missing_or_null_subcode_is_none() {
        let g = parse(json!({"error": {"message": "x", "type": "OAuthException", "code": 100}}));
        assert_eq!(g.subcode, None);
        let g = parse(json!({"error": {"message": "x", "code": 100, "error_subcode": null}}));
        assert_eq!(g.subcode, None);
        assert_eq!(g.error_type, "");
    }

    #[test]
    fn error_data_as_a_string_or_an_object_does_not_break_parsing() {
        let g = parse(json!({"error": {"message": "x", "code": 100,
            "error_data": "{\"blame_field_specs\":[[\"payload\"]]}"}}));
        assert_eq!(g.code, 100);
        let g = parse(
            json!({"error": {"message": "x", "code": 2650, "error_subcode": 1870145,
            "error_data": {"blame_field_specs": [["session"]]}}}),
        );
        assert_eq!((g.code, g.subcode), (2650, Some(1870145)));
    }

    #[test]
    fn is_transient_and_numeric_strings_are_read() {
        let g = parse(json!({"error": {"message": "x", "code": "2", "is_transient": true}}));
        assert_eq!(g.code, 2);
        assert!(g.is_transient);
    }

    #[test]
    fn a_body_without_an_error_envelope_is_not_a_graph_error() {
        assert!(GraphError::from_body(502, b"<html>Bad Gateway</html>").is_none());
        assert!(GraphError::from_body(400, br#"{"id":"1"}"#).is_none());
        assert!(GraphError::from_body(400, br#"{"error":{"message":"no code"}}"#).is_none());
    }

    #[test]
    fn display_reads_like_an_operator_message() {
        let g = parse(json!({"error": {"message": "access token expired",
            "type": "OAuthException", "code": 190, "error_subcode": 463, "fbtrace_id": "AXyz"}}));
        assert_eq!(
            MetaError::from(g).to_string(),
            "Meta error 190/463 (OAuthException): access token expired (fbtrace_id AXyz)"
        );
        let g = parse(json!({"error": {"message": "(#100) Invalid parameter",
            "type": "OAuthException", "code": 100}}));
        assert_eq!(
            g.to_string(),
            "Meta error 100 (OAuthException): (#100) Invalid parameter"
        );
        let g = parse(
            json!({"error": {"message": "Invalid parameter", "type": "OAuthException",
            "code": 100, "error_subcode": 1713230, "error_user_title": "Audience Upload Blocked"}}),
        );
        assert_eq!(
            g.to_string(),
            "Meta error 100/1713230 (OAuthException): Invalid parameter [Audience Upload Blocked]"
        );
    }

    #[test]
    fn scrub_removes_secrets_echoed_by_meta() {
        let g = parse(
            json!({"error": {"message": "Malformed access token EAAsecret",
            "code": 190, "error_user_msg": "token EAAsecret"}}),
        )
        .scrub(&["EAAsecret", ""]);
        assert_eq!(g.message, "Malformed access token [redacted]");
        assert_eq!(g.error_user_msg.as_deref(), Some("token [redacted]"));
    }

    #[test]
    fn an_answer_that_is_not_json_names_status_and_content_type_but_not_the_body() {
        let page = "<html><body>secret-looking proxy page</body></html>";
        let e = MetaError::not_json(502, Some("text/html"), String::new());
        assert_eq!(e.to_string(), "Meta's answer was not JSON (502, text/html)");
        assert!(!e.to_string().contains(page));
        let cut = serde_json::from_slice::<Value>(br#"{"id":"12"#).unwrap_err();
        let e = MetaError::not_json(200, Some("application/json"), cut.to_string());
        assert!(
            e.to_string()
                .starts_with("Meta's answer was not JSON (200, application/json): EOF"),
            "{e}"
        );
        let long = format!("text/html;{}\u{7}", "x".repeat(500));
        let MetaError::NotJson { content_type, .. } =
            MetaError::not_json(502, Some(&long), String::new())
        else {
            unreachable!()
        };
        assert_eq!(content_type.len(), MAX_CONTENT_TYPE);
        let e = MetaError::not_json(503, None, String::new());
        assert_eq!(
            e.to_string(),
            "Meta's answer was not JSON (503, no content type)"
        );
    }

    #[test]
    fn an_unknown_outcome_is_a_timeout_a_broken_connection_a_5xx_or_an_unreadable_success() {
        let unknown = [
            MetaError::Timeout,
            MetaError::Connection("connection closed before message completed".into()),
            MetaError::Http { status: 502 },
            MetaError::not_json(502, Some("text/html"), String::new()),
            MetaError::not_json(200, Some("application/json"), "EOF".into()),
        ];
        for e in &unknown {
            assert!(e.outcome_unknown(), "{e:?}");
            assert_eq!(e.retry_class(), RetryClass::Retry, "{e:?}");
        }
        let known = [
            MetaError::Connect("connection refused".into()),
            MetaError::Http { status: 400 },
            MetaError::not_json(404, Some("text/html"), String::new()),
            MetaError::Decode("missing field id".into()),
            MetaError::from(parse(json!({"error": {"message": "x", "code": 2}}))),
        ];
        for e in &known {
            assert!(!e.outcome_unknown(), "{e:?}");
        }
        assert_eq!(
            MetaError::Connect("refused".into()).retry_class(),
            RetryClass::Retry
        );
        assert_eq!(
            MetaError::not_json(404, None, String::new()).retry_class(),
            RetryClass::DontRetry
        );
    }

    #[test]
    fn code_and_is_auth_expose_the_decision_inputs() {
        let e = MetaError::from(parse(
            json!({"error": {"message": "x", "code": 190, "error_subcode": 460}}),
        ));
        assert_eq!(e.code(), Some((190, Some(460))));
        assert!(e.is_auth());
        assert!(!MetaError::Timeout.is_auth());
        assert_eq!(MetaError::Timeout.code(), None);
    }
}
