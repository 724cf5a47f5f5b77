//! Access tokens as the sandbox knows them, `debug_token`, and the batch requests that carry it.
//!
//! Any non-empty token is valid, never expires and has [`DEFAULT_SCOPES`], unless
//! [`super::Faults::tokens`] says otherwise for that token. A token that is expired (or marked
//! invalid) is refused on every call, as Meta refuses it (190/463, or 190/460). `debug_token`
//! answers in a batch request (`POST /{version}/` with `batch` and `include_headers`), the only
//! way our client sends it, so that the token under inspection is never in a URL; a batch
//! request may hold other requests, which answer Meta's unknown-path error in their slot.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::GraphError;
use super::params::Params;

/// Scopes a token has when [`super::Faults::tokens`] does not name it.
pub const DEFAULT_SCOPES: [&str; 3] = ["ads_management", "ads_read", "business_management"];
/// Meta's limit on requests in one batch.
const MAX_BATCH: usize = 50;

/// What the sandbox holds true of one token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxToken {
    /// `false`: revoked (Meta's 190/460, "the session has been invalidated").
    pub is_valid: bool,
    /// Unix seconds; 0 = never (as for system-user tokens). In the past = expired (190/463).
    pub expires_at: i64,
    /// `None`: [`DEFAULT_SCOPES`].
    pub scopes: Option<Vec<String>>,
}

impl Default for SandboxToken {
    fn default() -> Self {
        SandboxToken {
            is_valid: true,
            expires_at: 0,
            scopes: None,
        }
    }
}

impl SandboxToken {
    fn expired(&self, now: i64) -> bool {
        self.expires_at > 0 && self.expires_at <= now
    }

    /// The error every call with this token answers, if it is refused.
    pub fn refusal(&self, now: i64) -> Option<GraphError> {
        if self.expired(now) {
            Some(GraphError::token_expired())
        } else if !self.is_valid {
            Some(revoked())
        } else {
            None
        }
    }
}

fn revoked() -> GraphError {
    GraphError::new(
        190,
        "Error validating access token: The session has been invalidated because the user changed \
         their password or Facebook has changed the session for security reasons.",
    )
    .with_subcode(460)
}

/// The token table's word on `token` (the default when it is not listed).
pub fn lookup(table: &BTreeMap<String, SandboxToken>, token: &str) -> SandboxToken {
    table.get(token).cloned().unwrap_or_default()
}

/// A short fingerprint of a token for the request log: the first 8 hex digits of its SHA-256.
/// Tests tell which token made a call by it; the token itself is never logged.
pub fn fingerprint(token: &str) -> String {
    const_hex::encode(&Sha256::digest(token.as_bytes())[..4])
}

/// `debug_token`'s answer for `input`, as Meta shapes it.
fn debug_token(table: &BTreeMap<String, SandboxToken>, input: &str, now: i64) -> Value {
    let t = lookup(table, input);
    let scopes: Vec<String> = t
        .scopes
        .clone()
        .unwrap_or_else(|| DEFAULT_SCOPES.map(String::from).to_vec());
    let mut data = json!({
        "app_id": "1000000000000001",
        "type": "SYSTEM_USER",
        "application": "cdp-meta-sync sandbox",
        "data_access_expires_at": 0,
        "expires_at": t.expires_at,
        "is_valid": t.refusal(now).is_none(),
        "scopes": scopes,
        "user_id": "2000000000000002",
    });
    if let Some(e) = t.refusal(now) {
        data["error"] = json!({ "code": e.code, "subcode": e.subcode, "message": e.message });
    }
    json!({ "data": data })
}

/// One request of a batch, answered: `{"code", "body"}` (`body` a JSON-encoded string, as Meta).
fn answer(code: u16, body: &Value, include_headers: bool) -> Value {
    let mut a = json!({ "code": code, "body": body.to_string() });
    if include_headers {
        a["headers"] =
            json!([{ "name": "Content-Type", "value": "application/json; charset=UTF-8" }]);
    }
    a
}

/// What a batch request did: its answer, and the path of each request in it (for the log).
pub struct Batch {
    pub answer: Value,
    pub paths: Vec<String>,
}

/// `POST /{version}/` with `batch`: each request answered in its slot. Only `GET debug_token`
/// is served; every other request answers Meta's unknown-path error (code 2500).
pub fn batch(
    params: &Params<'_>,
    table: &BTreeMap<String, SandboxToken>,
    fbtrace_id: &str,
    now: i64,
) -> Result<Batch, GraphError> {
    let requests: Vec<Value> = params
        .get("batch")
        .ok_or_else(|| GraphError::required("batch"))?
        .parse()
        .map_err(|_| GraphError::invalid("The parameter batch must be a JSON array of requests"))?;
    if requests.is_empty() || requests.len() > MAX_BATCH {
        return Err(GraphError::invalid(format!(
            "A batch holds 1 to {MAX_BATCH} requests"
        )));
    }
    let include_headers = params.text("include_headers").is_none_or(|v| v != "false");
    let mut answers = Vec::with_capacity(requests.len());
    let mut paths = Vec::with_capacity(requests.len());
    for request in &requests {
        let method = request.get("method").and_then(Value::as_str).unwrap_or("");
        let relative = request
            .get("relative_url")
            .and_then(Value::as_str)
            .unwrap_or("");
        let (path, query) = relative.split_once('?').unwrap_or((relative, ""));
        let path = path.trim_matches('/');
        // A relative URL may name the version itself (`v27.0/debug_token`).
        let path = match path.split_once('/') {
            Some((v, rest))
                if v.starts_with('v') && v[1..].starts_with(|c: char| c.is_ascii_digit()) =>
            {
                rest
            }
            _ => path,
        };
        paths.push(format!("{} {path}", method.to_ascii_uppercase()));
        let error =
            |e: GraphError| answer(e.status().as_u16(), &e.body(fbtrace_id), include_headers);
        answers.push(match (method.to_ascii_uppercase().as_str(), path) {
            ("GET", "debug_token") => {
                let input = form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k == "input_token")
                    .map(|(_, v)| v.into_owned())
                    .filter(|v| !v.is_empty());
                match input {
                    Some(input) => answer(200, &debug_token(table, &input, now), include_headers),
                    None => error(GraphError::required("input_token")),
                }
            }
            _ => error(GraphError::unknown_path(&format!("/{path}"))),
        });
    }
    Ok(Batch {
        answer: Value::Array(answers),
        paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> BTreeMap<String, SandboxToken> {
        BTreeMap::from([
            (
                "old".to_string(),
                SandboxToken {
                    expires_at: 1_000,
                    ..SandboxToken::default()
                },
            ),
            (
                "narrow".to_string(),
                SandboxToken {
                    scopes: Some(vec!["ads_read".into()]),
                    ..SandboxToken::default()
                },
            ),
        ])
    }

    fn run(body: Value) -> Value {
        let bytes = body.to_string();
        let params = Params::parse(None, Some("application/json"), bytes.as_bytes()).unwrap();
        batch(&params, &table(), "T", 2_000).unwrap().answer
    }

    fn inner(answer: &Value, i: usize) -> Value {
        serde_json::from_str(answer[i]["body"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn debug_token_in_a_batch_answers_validity_expiry_and_scopes_per_token() {
        let batch = json!([
            {"method": "GET", "relative_url": "debug_token?input_token=any"},
            {"method": "GET", "relative_url": "v27.0/debug_token?input_token=old"},
            {"method": "GET", "relative_url": "debug_token?input_token=narrow"},
            {"method": "GET", "relative_url": "me/adaccounts"},
        ]);
        let a = run(json!({"batch": batch.to_string(), "include_headers": false}));
        let any = inner(&a, 0);
        assert_eq!(a[0]["code"], 200);
        assert!(a[0].get("headers").is_none());
        assert_eq!(any["data"]["is_valid"], true);
        assert_eq!(any["data"]["expires_at"], 0);
        assert_eq!(any["data"]["scopes"], json!(DEFAULT_SCOPES));
        let old = inner(&a, 1);
        assert_eq!(old["data"]["is_valid"], false);
        assert_eq!(old["data"]["error"]["subcode"], 463);
        assert_eq!(inner(&a, 2)["data"]["scopes"], json!(["ads_read"]));
        assert_eq!(a[3]["code"], 400);
        assert_eq!(inner(&a, 3)["error"]["code"], 2500);
    }

    #[test]
    fn a_batch_array_sent_as_json_works_and_headers_come_by_default() {
        let a =
            run(json!({"batch": [{"method": "GET", "relative_url": "debug_token?input_token=x"}]}));
        assert_eq!(a[0]["code"], 200);
        assert!(a[0]["headers"].is_array());
    }

    #[test]
    fn an_expired_or_revoked_token_is_refused_and_the_fingerprint_is_not_the_token() {
        let t = table();
        assert_eq!(lookup(&t, "old").refusal(2_000).unwrap().subcode, Some(463));
        assert!(lookup(&t, "old").refusal(999).is_none());
        let revoked = SandboxToken {
            is_valid: false,
            ..SandboxToken::default()
        };
        assert_eq!(revoked.refusal(0).unwrap().subcode, Some(460));
        assert!(lookup(&t, "unknown").refusal(2_000).is_none());
        let f = fingerprint("EAAsecret");
        assert_eq!(f.len(), 8);
        assert!(!f.contains("EAA"));
    }
}
