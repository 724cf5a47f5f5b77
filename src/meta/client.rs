//! The Graph API client: one reqwest client, one retry policy, one rate budget per ad account.
//!
//! # Where the token goes
//! No URL ever holds the token: URLs end up in proxy logs, traces and error messages. Every
//! request carries it in an `Authorization: Bearer …` header (marked sensitive, so it is never
//! printed); writes (`POST`, and `DELETE /{audience}/users`) also carry it, with `appsecret_proof`
//! when `FACEBOOK_APP_SECRET` is set, in their JSON body, as Meta's SDKs send parameters. Reads are
//! real `GET`s: since Graph API v27.0 new apps may not use HTTP method override (a `POST` whose
//! `method` parameter names the verb), so their parameters (`fields`, `limit`, `after`, and
//! `appsecret_proof`, which Meta takes only as a parameter and which is worthless without the
//! token) go in the query
//! string. A removal is an HTTP `DELETE` whose payload (up to 10,000 rows, far too long for a URL)
//! is the JSON body, the token in both header and body. Meta's paging `next` URLs carry the
//! token, so they are never followed; the next page is requested from `cursors.after`.
//!
//! # One call
//! wait for the rate budget of the ad account (or pixel) → send → read usage headers into the
//! budget → classify the answer → on a retryable error, wait (backoff, or longer when Meta said
//! so) and send again, within `retry_max_attempts` and `retry_max_elapsed`.
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use backon::{Retryable, TokioSleeper};
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use super::auth::appsecret_proof;
use super::error::{GraphError, MetaError};
use super::fence::{FencedBody, WriteFence};
use super::model::{UserRows, UsersParams, UsersUpload};
use super::retry::{RetryClass, RetryPolicy};
use super::throttle::{self, Throttle};
use crate::configuration::MetaSettings;
use crate::secret::{ExposeSecret, SecretString};

const USER_AGENT: &str = concat!("cdp-meta-sync/", env!("CARGO_PKG_VERSION"));
/// Idle keep-alive connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The Graph API client. Cheap to clone; clones share connections and the rate budget.
#[derive(Clone)]
pub struct MetaClient {
    inner: Arc<Inner>,
    /// When set, every write's body goes out only while it is open ([`MetaClient::fenced`]).
    fence: Option<WriteFence>,
}

struct Inner {
    http: reqwest::Client,
    /// `META_GRAPH_URL`; the version and object ids are appended as path segments.
    graph_url: Url,
    api_version: String,
    access_token: SecretString,
    /// `FACEBOOK_APP_SECRET`, kept to derive the proof of another token ([`MetaClient::with_token`]).
    app_secret: Option<SecretString>,
    /// Derived from the token and `FACEBOOK_APP_SECRET` once, at construction.
    appsecret_proof: Option<SecretString>,
    retry: RetryPolicy,
    /// Shared by the clients of every token: Meta's budgets are the app's and the ad account's.
    throttle: Arc<Throttle>,
    /// Set once Meta refused this client's token (code 190: expired, revoked).
    token_refused: AtomicBool,
}

impl fmt::Debug for MetaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaClient")
            .field("graph_url", &self.inner.graph_url.as_str())
            .field("api_version", &self.inner.api_version)
            .field("access_token", &"[redacted]")
            .field("appsecret_proof", &self.inner.appsecret_proof.is_some())
            .finish_non_exhaustive()
    }
}

/// The reqwest client `MetaClient::new` uses: rustls, timeouts from settings (0 = none),
/// keep-alive pool, `TCP_NODELAY`, no redirects (a redirected POST would lose its body).
pub fn http_client(settings: &MetaSettings) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none());
    if settings.request_timeout_secs > 0 {
        builder = builder.timeout(settings.request_timeout());
    }
    if settings.connect_timeout_secs > 0 {
        builder = builder.connect_timeout(settings.connect_timeout());
    }
    builder.build()
}

impl MetaClient {
    /// A client for `settings.graph_url`/`api_version`; `appsecret_proof` when `app_secret` is set.
    pub fn new(settings: &MetaSettings, access_token: SecretString) -> anyhow::Result<Self> {
        let http = http_client(settings).context("Failed to build the HTTP client for Meta")?;
        Self::with_http_client(settings, access_token, http)
    }

    /// Same as [`MetaClient::new`] with a given reqwest client (to share one, or to run under a
    /// paused tokio clock, where the client's own timers would fire at once).
    pub fn with_http_client(
        settings: &MetaSettings,
        access_token: SecretString,
        http: reqwest::Client,
    ) -> anyhow::Result<Self> {
        let graph_url = Url::parse(&settings.graph_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .context("META_GRAPH_URL: expected an http:// or https:// URL")?;
        if access_token.expose_secret().trim().is_empty() {
            bail!("FACEBOOK_ACCESS_TOKEN: empty; set it to a Meta system-user access token");
        }
        let app_secret = settings.app_secret.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                graph_url,
                api_version: settings.api_version.clone(),
                appsecret_proof: proof_of(app_secret.as_ref(), &access_token),
                access_token,
                app_secret,
                retry: RetryPolicy::from_settings(settings),
                throttle: Arc::new(Throttle::new(settings.throttle_max_wait())),
                token_refused: AtomicBool::new(false),
            }),
            fence: None,
        })
    }

    /// The same client, its writes' bodies fenced by `fence`: a body goes out to its last byte
    /// only while the fence is open (a run's lease, see [`super::fence`]).
    pub fn fenced(&self, fence: WriteFence) -> Self {
        Self {
            inner: self.inner.clone(),
            fence: Some(fence),
        }
    }

    /// The same client with another access token (a system's `token_ref`): connections, retry
    /// policy and rate budgets are shared; the token and its `appsecret_proof` are its own.
    pub fn with_token(&self, access_token: SecretString) -> anyhow::Result<Self> {
        if access_token.expose_secret().trim().is_empty() {
            bail!("the access token is empty");
        }
        let inner = &*self.inner;
        Ok(Self {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                graph_url: inner.graph_url.clone(),
                api_version: inner.api_version.clone(),
                appsecret_proof: proof_of(inner.app_secret.as_ref(), &access_token),
                access_token,
                app_secret: inner.app_secret.clone(),
                retry: inner.retry,
                throttle: inner.throttle.clone(),
                token_refused: AtomicBool::new(false),
            }),
            fence: self.fence.clone(),
        })
    }

    /// Whether Meta refused this client's token (code 190) on some call since it was made.
    pub fn token_refused(&self) -> bool {
        self.inner.token_refused.load(Ordering::Relaxed)
    }

    /// `{graph_url}/{version}/{segments…}?{query}`; segments are percent-encoded.
    pub(super) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.graph_url.clone();
        url.path_segments_mut()
            .expect("checked in new(): an http(s) URL has path segments")
            .pop_if_empty()
            .push(&self.inner.api_version)
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// A read's URL: the parameters, and `appsecret_proof` when there is an app secret (Meta takes
    /// it only as a parameter; a GET has no body). Never the token.
    pub(super) fn read_url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.url(segments, query);
        if let Some(proof) = &self.inner.appsecret_proof {
            url.query_pairs_mut()
                .append_pair("appsecret_proof", proof.expose_secret());
        }
        url
    }

    /// A write's JSON body: the token (and proof), then the parameters. Serialized once per call;
    /// every attempt sends the same bytes.
    pub(super) fn body<P: Serialize>(
        &self,
        params: &P,
        size_hint: usize,
    ) -> Result<Bytes, MetaError> {
        let envelope = Envelope {
            access_token: self.inner.access_token.expose_secret(),
            appsecret_proof: self
                .inner
                .appsecret_proof
                .as_ref()
                .map(|p| p.expose_secret()),
            params,
        };
        let mut buf = Vec::with_capacity(size_hint);
        serde_json::to_writer(&mut buf, &envelope)
            .map_err(|e| MetaError::Decode(format!("could not encode the request: {e}")))?;
        Ok(Bytes::from(buf))
    }

    /// A `/users` or `/usersreplace` body: what [`Self::body`] makes of [`UsersUpload::params`]
    /// (a test holds the two to the same bytes), with the rows written by
    /// [`UserRows::write_json`] instead of through serde.
    pub(super) fn users_body<R: UserRows + ?Sized>(
        &self,
        upload: &UsersUpload<'_, R>,
        size_hint: usize,
    ) -> Result<Bytes, MetaError> {
        let encode =
            |e: serde_json::Error| MetaError::Decode(format!("could not encode the request: {e}"));
        let mut buf = Vec::with_capacity(size_hint);
        buf.extend_from_slice(b"{\"access_token\":");
        serde_json::to_writer(&mut buf, self.inner.access_token.expose_secret()).map_err(encode)?;
        if let Some(proof) = &self.inner.appsecret_proof {
            buf.extend_from_slice(b",\"appsecret_proof\":");
            serde_json::to_writer(&mut buf, proof.expose_secret()).map_err(encode)?;
        }
        let UsersParams { payload, session } = upload.params();
        buf.extend_from_slice(b",\"payload\":{\"schema\":");
        serde_json::to_writer(&mut buf, payload.schema).map_err(encode)?;
        buf.extend_from_slice(b",\"data\":");
        payload.data.write_json(&mut buf).map_err(encode)?;
        buf.extend_from_slice(b",\"is_raw\":");
        serde_json::to_writer(&mut buf, &payload.is_raw).map_err(encode)?;
        buf.extend_from_slice(b"},\"session\":");
        serde_json::to_writer(&mut buf, &session).map_err(encode)?;
        buf.push(b'}');
        Ok(Bytes::from(buf))
    }

    /// One logical call: rate budget, attempts, retries. `body`: a write's JSON body.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        throttle_id: &str,
        method: Method,
        url: Url,
        body: Option<Bytes>,
    ) -> Result<T, MetaError> {
        let key = throttle::key(throttle_id);
        self.retrying(key, || self.attempt::<T>(key, &method, &url, body.as_ref()))
            .await
    }

    /// Runs `attempt` after the rate budget of `key`, again on a retryable error, within
    /// `retry_max_attempts` and `retry_max_elapsed`.
    pub(super) async fn retrying<T, F, Fut>(&self, key: &str, attempt: F) -> Result<T, MetaError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, MetaError>>,
    {
        let inner = &*self.inner;
        inner.throttle.wait_turn(key).await;
        // The elapsed budget starts after the budget wait: that wait is Meta's, not a retry.
        let started = Instant::now();
        let failures = AtomicU32::new(0);
        attempt
            .retry(inner.retry.backoff())
            .sleep(TokioSleeper)
            .when(|e: &MetaError| e.retry_class() == RetryClass::Retry)
            .adjust(|e, backoff| {
                let failed = failures.fetch_add(1, Ordering::Relaxed) + 1;
                let told = inner.throttle.remaining(key);
                let delay = inner.retry.next_delay(backoff, told, started.elapsed());
                if delay.is_none() {
                    tracing::warn!(
                        attempts = failed,
                        elapsed_secs = started.elapsed().as_secs(),
                        kind = kind(e),
                        code = e.code().map(|c| c.0),
                        subcode = e.code().and_then(|c| c.1),
                        "Meta call still failing; giving up"
                    );
                }
                delay
            })
            .notify(|e: &MetaError, delay: Duration| {
                tracing::warn!(
                    attempt = failures.load(Ordering::Relaxed),
                    delay_ms = delay.as_millis() as u64,
                    kind = kind(e),
                    code = e.code().map(|c| c.0),
                    subcode = e.code().and_then(|c| c.1),
                    http_status = http_status(e),
                    "Meta call failed; retrying"
                );
            })
            .await
    }

    pub(super) async fn attempt<T: DeserializeOwned>(
        &self,
        key: &str,
        method: &Method,
        url: &Url,
        body: Option<&Bytes>,
    ) -> Result<T, MetaError> {
        let inner = &*self.inner;
        // Another call for the same key may have been told to wait since this call began.
        inner.throttle.wait_turn(key).await;
        let mut request = inner
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, self.authorization()?);
        if let Some(body) = body {
            let body = match &self.fence {
                Some(fence) => reqwest::Body::wrap(FencedBody::new(body.clone(), fence.clone())),
                None => reqwest::Body::from(body.clone()),
            };
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(MetaError::from_transport)?;
        let status = response.status();
        inner
            .throttle
            .note(key, throttle::advice(response.headers()));
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let bytes = response.bytes().await.map_err(MetaError::from_transport)?;
        tracing::debug!(
            http_status = status.as_u16(),
            bytes = bytes.len(),
            "Meta answered"
        );
        self.interpret(status, content_type.as_deref(), &bytes)
    }

    /// Meta's error JSON wins whatever the status (Graph can answer errors with 200); then a
    /// body that is not JSON (a proxy's page, a cut-off answer); then non-success statuses; then
    /// the endpoint's documented success body.
    pub(super) fn interpret<T: DeserializeOwned>(
        &self,
        status: StatusCode,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<T, MetaError> {
        let value = match serde_json::from_slice::<Value>(body) {
            Ok(v) => Some(v),
            Err(_) if body.iter().all(u8::is_ascii_whitespace) && !status.is_success() => None,
            Err(e) => {
                // A cut-off body says where it ends (serde's text names the position only,
                // never the content); a page that is not JSON at all needs no detail.
                let detail = if e.is_eof() {
                    e.to_string()
                } else {
                    String::new()
                };
                return Err(MetaError::not_json(status.as_u16(), content_type, detail));
            }
        };
        if let Some(graph) = value
            .as_ref()
            .and_then(|v| GraphError::from_value(status.as_u16(), v))
        {
            if graph.code == 190 {
                self.inner.token_refused.store(true, Ordering::Relaxed);
            }
            return Err(graph.scrub(&self.secrets()).into());
        }
        if !status.is_success() {
            return Err(MetaError::Http {
                status: status.as_u16(),
            });
        }
        let value = value.unwrap_or(Value::Null);
        T::deserialize(value).map_err(|e| MetaError::Decode(e.to_string()))
    }

    /// `Bearer {token}`, marked sensitive so that no debug output shows it.
    pub(super) fn authorization(&self) -> Result<HeaderValue, MetaError> {
        let mut value = HeaderValue::from_str(&format!(
            "Bearer {}",
            self.inner.access_token.expose_secret()
        ))
        .map_err(|_| MetaError::Decode("the access token is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    pub(super) fn secrets(&self) -> [&str; 2] {
        [
            self.inner.access_token.expose_secret(),
            self.inner
                .appsecret_proof
                .as_ref()
                .map_or("", |p| p.expose_secret()),
        ]
    }
}

#[derive(Serialize)]
struct Envelope<'a, P> {
    access_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    appsecret_proof: Option<&'a str>,
    #[serde(flatten)]
    params: &'a P,
}

/// `appsecret_proof` of `token`, when there is an app secret.
fn proof_of(app_secret: Option<&SecretString>, token: &SecretString) -> Option<SecretString> {
    app_secret.map(|secret| {
        SecretString::from(appsecret_proof(
            secret.expose_secret(),
            token.expose_secret(),
        ))
    })
}

fn kind(e: &MetaError) -> &'static str {
    match e {
        MetaError::Graph(_) => "graph",
        MetaError::Http { .. } => "http",
        MetaError::Timeout => "timeout",
        MetaError::Connection(_) => "connection",
        MetaError::Connect(_) => "connect",
        MetaError::NotJson { .. } => "not_json",
        MetaError::TooLarge { .. } => "too_large",
        MetaError::Decode(_) => "decode",
    }
}

fn http_status(e: &MetaError) -> Option<u16> {
    match e {
        MetaError::Graph(g) => Some(g.http_status),
        MetaError::Http { status } => Some(*status),
        MetaError::NotJson { status, .. } => Some(*status),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{
        Direction, EventsRequest, MAX_EVENTS_PER_CALL, MAX_USERS_PER_CALL, UploadSession,
        UsersUpload,
    };

    pub(crate) fn settings(graph_url: &str) -> MetaSettings {
        MetaSettings {
            graph_url: graph_url.to_string(),
            api_version: "v27.0".to_string(),
            access_token: None,
            app_secret: Some(SecretString::from("app-secret-xyz".to_string())),
            request_timeout_secs: 5,
            connect_timeout_secs: 1,
            retry_max_attempts: 3,
            retry_min_delay_ms: 10,
            retry_max_delay_secs: 1,
            retry_max_elapsed_secs: 10,
            throttle_max_wait_secs: 900,
        }
    }

    pub(super) fn client() -> MetaClient {
        MetaClient::new(
            &settings("http://127.0.0.1:9"),
            SecretString::from("EAAtoken-unit-test".to_string()),
        )
        .unwrap()
    }

    #[test]
    pub(super) fn debug_output_redacts_the_token_and_the_proof() {
        let c = client();
        let shown = format!("{c:?}");
        assert!(!shown.contains("EAAtoken-unit-test"), "{shown}");
        let proof = appsecret_proof("app-secret-xyz", "EAAtoken-unit-test");
        assert!(!shown.contains(&proof), "{shown}");
        assert!(!shown.contains("app-secret-xyz"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    pub(super) fn urls_hold_version_and_ids_but_never_the_token() {
        let c = client();
        let url = c.url(&["act_1", "customaudiences"], &[("fields", "id,name")]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v27.0/act_1/customaudiences?fields=id%2Cname"
        );
        let odd = c.url(&["1/../2?x"], &[]);
        assert_eq!(odd.path(), "/v27.0/1%2F..%2F2%3Fx");
    }

    #[test]
    pub(super) fn a_write_body_carries_token_and_proof_and_never_a_method_override() {
        let c = client();
        let body = c.body(&serde_json::json!({"name": "x"}), 0).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.get("method"), None);
        assert_eq!(v["access_token"], "EAAtoken-unit-test");
        assert_eq!(v["name"], "x");
        assert_eq!(
            v["appsecret_proof"],
            appsecret_proof("app-secret-xyz", "EAAtoken-unit-test")
        );
    }

    #[test]
    pub(super) fn a_users_body_is_the_bytes_the_generic_body_makes_of_its_parameters() {
        let mut without_secret = settings("http://127.0.0.1:9");
        without_secret.app_secret = None;
        let plain = MetaClient::new(
            &without_secret,
            SecretString::from("EAA\"tok\\en".to_string()),
        )
        .unwrap();
        let rows = vec![
            vec!["a".repeat(64), String::new()],
            vec!["CRM-\"1\"\u{1}".to_string(), "é".to_string()],
        ];
        for c in [client(), plain] {
            for estimated_num_total in [None, Some(2)] {
                let upload = UsersUpload {
                    schema: &["EMAIL", "EXTERN_ID"],
                    rows: &rows,
                    session: UploadSession {
                        session_id: 7,
                        batch_seq: 2,
                        last_batch_flag: false,
                        estimated_num_total,
                    },
                };
                assert_eq!(
                    c.users_body(&upload, 0).unwrap(),
                    c.body(&upload.params(), 0).unwrap()
                );
            }
        }
    }

    #[test]
    pub(super) fn a_read_url_has_the_proof_but_not_the_token_and_the_header_is_sensitive() {
        let c = client();
        let url = c.read_url(&["238"], &[("fields", "id")]);
        assert!(!url.as_str().contains("EAAtoken-unit-test"), "{url}");
        assert!(url.as_str().contains(&format!(
            "appsecret_proof={}",
            appsecret_proof("app-secret-xyz", "EAAtoken-unit-test")
        )));
        let header = c.authorization().unwrap();
        assert!(header.is_sensitive());
        assert_eq!(header.to_str().unwrap(), "Bearer EAAtoken-unit-test");
        assert!(!format!("{header:?}").contains("EAAtoken"));
    }

    #[test]
    pub(super) fn an_empty_token_or_a_bad_url_is_refused() {
        let s = settings("http://127.0.0.1:9");
        assert!(MetaClient::new(&s, SecretString::from(" ".to_string())).is_err());
        let s = settings("graph.facebook.com");
        assert!(MetaClient::new(&s, SecretString::from("t".to_string())).is_err());
    }

    #[tokio::test]
    pub(super) async fn too_many_rows_or_events_are_refused_before_any_request() {
        let c = client();
        let rows = vec![vec![String::new()]; MAX_USERS_PER_CALL + 1];
        let upload = UsersUpload {
            schema: &["EMAIL"],
            rows: &rows,
            session: UploadSession {
                session_id: 1,
                batch_seq: 1,
                last_batch_flag: true,
                estimated_num_total: None,
            },
        };
        // The URL points at a closed port: any request would end as a connection error.
        for result in [
            c.upload_users(Direction::Add, "act_1", "2", &upload).await,
            c.upload_users(Direction::Remove, "act_1", "2", &upload)
                .await,
            c.upload_users(Direction::Replace, "act_1", "2", &upload)
                .await,
        ] {
            assert!(
                matches!(
                    result,
                    Err(MetaError::TooLarge {
                        rows: 10_001,
                        max: 10_000
                    })
                ),
                "{result:?}"
            );
        }
        let events = vec![Value::Null; MAX_EVENTS_PER_CALL + 1];
        let request = EventsRequest {
            data: &events,
            test_event_code: None,
            partner_agent: None,
        };
        let result = c.send_events("999", &request).await;
        assert!(
            matches!(
                result,
                Err(MetaError::TooLarge {
                    rows: 1001,
                    max: 1000
                })
            ),
            "{result:?}"
        );
    }
}
