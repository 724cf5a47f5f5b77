//! Graph API errors as Meta shapes them: `{"error":{message,type,code,error_subcode?,…}}`.
//!
//! HTTP statuses follow what Meta answers: 500 for codes 1 and 2 (unknown / service error), 400 for
//! every other Graph error, throttling included (Meta never sends 429).
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

/// One Graph error, before it gets its `fbtrace_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphError {
    pub code: i64,
    pub subcode: Option<i64>,
    pub message: String,
    /// `OAuthException` for almost everything; `GraphMethodException` for unsupported requests.
    pub kind: &'static str,
    pub is_transient: bool,
    pub user_title: Option<String>,
    pub user_msg: Option<String>,
}

impl GraphError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        GraphError {
            code,
            subcode: None,
            message: message.into(),
            kind: "OAuthException",
            is_transient: default_transient(code, None),
            user_title: None,
            user_msg: None,
        }
    }

    pub fn with_subcode(mut self, subcode: i64) -> Self {
        self.subcode = Some(subcode);
        self.is_transient = default_transient(self.code, Some(subcode));
        self
    }

    pub fn with_user(mut self, title: impl Into<String>, msg: impl Into<String>) -> Self {
        self.user_title = Some(title.into());
        self.user_msg = Some(msg.into());
        self
    }

    pub fn with_transient(mut self, is_transient: bool) -> Self {
        self.is_transient = is_transient;
        self
    }

    /// HTTP status Meta pairs with this code.
    pub fn status(&self) -> StatusCode {
        match self.code {
            1 | 2 => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn body(&self, fbtrace_id: &str) -> Value {
        let mut e = Map::new();
        e.insert("message".into(), json!(self.message));
        e.insert("type".into(), json!(self.kind));
        e.insert("code".into(), json!(self.code));
        if let Some(s) = self.subcode {
            e.insert("error_subcode".into(), json!(s));
        }
        e.insert("is_transient".into(), json!(self.is_transient));
        if let Some(t) = &self.user_title {
            e.insert("error_user_title".into(), json!(t));
        }
        if let Some(m) = &self.user_msg {
            e.insert("error_user_msg".into(), json!(m));
        }
        e.insert("fbtrace_id".into(), json!(fbtrace_id));
        json!({ "error": e })
    }

    // ---- the catalogue ----

    /// `(#100) …`: an invalid parameter; permanent.
    pub fn invalid(detail: impl AsRef<str>) -> Self {
        GraphError::new(100, format!("(#100) {}", detail.as_ref()))
    }

    pub fn required(param: &str) -> Self {
        GraphError::invalid(format!("The parameter {param} is required"))
    }

    /// Meta answers a call without any token with 2500 (not 190).
    pub fn missing_token() -> Self {
        GraphError::new(
            2500,
            "An active access token must be used to query information about the current user.",
        )
    }

    pub fn token_expired() -> Self {
        GraphError::new(
            190,
            "Error validating access token: Session has expired on Tuesday, 01-Aug-23 10:12:14 PDT. \
             The current time is Sunday, 28-Jan-24 16:01:17 PST.",
        )
        .with_subcode(463)
    }

    /// Method override on a POST (`method=GET|DELETE`), which apps created since Graph API v27.0
    /// may not use.
    pub fn method_override_unsupported() -> Self {
        GraphError::new(
            100,
            "(#100) HTTP method override is not available to this app: send a real GET or DELETE",
        )
    }

    /// `2635`: the version asked for is past its end of life.
    pub fn expired_version(latest: &str) -> Self {
        GraphError::new(
            2635,
            format!(
                "(#2635) You are calling a deprecated version of the Ads API. Please update to the latest version: {latest}."
            ),
        )
    }

    /// `100/33`: object missing, not visible to the token, or the edge/method is not supported.
    pub fn unsupported(method: &str, object_id: &str) -> Self {
        let verb = method.to_ascii_lowercase();
        GraphError {
            kind: "GraphMethodException",
            ..GraphError::new(
                100,
                format!(
                    "Unsupported {verb} request. Object with ID '{object_id}' does not exist, cannot be \
                     loaded due to missing permissions, or does not support this operation. Please read \
                     the Graph API documentation at https://developers.facebook.com/docs/graph-api"
                ),
            )
            .with_subcode(33)
        }
    }

    pub fn unknown_path(components: &str) -> Self {
        GraphError::new(2500, format!("Unknown path components: {components}"))
    }

    /// `2650`: "Failed to update the custom audience", with a reason and optional subcode.
    pub fn update_failed(subcode: Option<i64>, detail: &str) -> Self {
        let e = GraphError::new(
            2650,
            format!("(#2650) Failed to update the custom audience: {detail}"),
        );
        match subcode {
            Some(s) => e.with_subcode(s),
            None => e,
        }
    }
}

/// Whether Meta marks a code (and subcode) as worth retrying.
pub fn default_transient(code: i64, subcode: Option<i64>) -> bool {
    matches!(code, 1 | 2 | 4 | 17 | 341 | 613 | 80000..=80014)
        || (code == 2650 && matches!(subcode, Some(1870145) | Some(1870148)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_one_and_two_are_http_500_and_throttles_are_http_400() {
        assert_eq!(
            GraphError::new(1, "x").status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            GraphError::new(2, "x").status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        for code in [4, 17, 613, 80003, 100, 190] {
            assert_eq!(GraphError::new(code, "x").status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn the_body_omits_absent_optional_fields() {
        let b = GraphError::invalid("x").body("Aabc");
        let e = b["error"].as_object().unwrap();
        assert!(!e.contains_key("error_subcode"));
        assert!(!e.contains_key("error_user_msg"));
        assert_eq!(e["type"], "OAuthException");
        assert_eq!(e["fbtrace_id"], "Aabc");
    }
}
