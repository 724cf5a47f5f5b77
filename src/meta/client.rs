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
use super::model::{
    AUDIENCE_FIELDS, AudienceInfo, AudiencePage, CreateAudience, Created, Direction, EventsRequest,
    EventsResponse, MAX_EVENTS_PER_CALL, MAX_USERS_PER_CALL, SessionInfo, SessionPage, UserRows,
    UsersResponse, UsersUpload,
};
use super::retry::{RetryClass, RetryPolicy};
use super::throttle::{self, Throttle};
use super::token::{self, TokenInfo};
use crate::configuration::MetaSettings;
use crate::secret::{ExposeSecret, SecretString};

const USER_AGENT: &str = concat!("cdp-meta-sync/", env!("CARGO_PKG_VERSION"));
/// Idle keep-alive connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Audiences per page when searching by name; only `id,name` are asked for, so pages stay light.
const LIST_PAGE_SIZE: &str = "100";
/// A search that pages this far is broken (Meta allows ~10,000 audiences of all kinds).
const MAX_LIST_PAGES: usize = 1_000;
/// `usersreplace`: "the session has already finished" (its last batch was received).
const REPLACE_SESSION_FINISHED: i64 = 1_870_159;

/// The Graph API client. Cheap to clone; clones share connections and the rate budget.
#[derive(Clone)]
pub struct MetaClient {
    inner: Arc<Inner>,
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
        })
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
        })
    }

    /// Whether Meta refused this client's token (code 190) on some call since it was made.
    pub fn token_refused(&self) -> bool {
        self.inner.token_refused.load(Ordering::Relaxed)
    }

    /// `debug_token` for `input_token`, made with this client's token, as a one-request batch
    /// (`POST /{version}/`, see [`super::token`]) so that no token is ever in a URL. A token Meta
    /// refuses outright (190: expired, revoked) is an answer too: not valid, with Meta's error.
    #[tracing::instrument(name = "meta.debug_token", skip_all)]
    pub async fn debug_token(&self, input_token: &SecretString) -> Result<TokenInfo, MetaError> {
        let relative_url = format!(
            "debug_token?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("input_token", input_token.expose_secret())
                .finish()
        );
        let batch = serde_json::json!([{ "method": "GET", "relative_url": relative_url }]);
        let params = serde_json::json!({ "batch": batch.to_string(), "include_headers": false });
        let url = self.url(&[], &[]);
        let body = self.body(&params, 512)?;
        let secrets = [input_token.expose_secret()];
        let answer = self
            .call::<Value>("", Method::POST, url, Some(body))
            .await
            .and_then(|answer| token::batch_answer(&answer))
            .and_then(|inner| token::parse_debug_token(&inner))
            .map_err(|e| match e {
                MetaError::Graph(g) => MetaError::from(g.scrub(&secrets)),
                other => other,
            });
        match answer {
            Err(e) => TokenInfo::from_refusal(&e).ok_or(e),
            ok => ok,
        }
    }

    /// `POST /act_{id}/customaudiences` (`subtype=CUSTOM`, `customer_file_source=USER_PROVIDED_ONLY`);
    /// returns the new audience id.
    ///
    /// A create is not idempotent: after an attempt whose outcome is unknown (timeout, connection
    /// broken after sending, 5xx without Meta's error JSON, unreadable success body) Meta may hold
    /// the audience already. So before the next attempt the audience is looked up by name (one
    /// try per page, within this call's retry budget); when found, its id is the answer.
    pub async fn create_custom_audience(
        &self,
        ad_account_id: &str,
        name: &str,
        description: &str,
    ) -> Result<String, MetaError> {
        self.create_audience(ad_account_id, name, description, false)
            .await
    }

    /// [`Self::create_custom_audience`], optionally value-based (`is_value_based=1`: its members
    /// carry `LOOKALIKE_VALUE`, for value-based lookalikes).
    #[tracing::instrument(name = "meta.create_custom_audience", skip_all, fields(ad_account_id = %ad_account_id, value_based))]
    pub async fn create_audience(
        &self,
        ad_account_id: &str,
        name: &str,
        description: &str,
        value_based: bool,
    ) -> Result<String, MetaError> {
        let url = self.url(&[&ad_account_path(ad_account_id), "customaudiences"], &[]);
        let params = CreateAudience {
            name,
            description,
            subtype: "CUSTOM",
            customer_file_source: "USER_PROVIDED_ONLY",
            is_value_based: value_based.then_some(1),
        };
        let body = self.body(&params, 512)?;
        let key = throttle::key(ad_account_id);
        let unknown = AtomicBool::new(false);
        let id = self
            .retrying(key, || async {
                if unknown.load(Ordering::Relaxed) {
                    if let Some(found) = self.search_by_name(ad_account_id, name, false).await? {
                        tracing::warn!(audience_id = %found,
                            "the answer to an audience create was lost; found the audience by name");
                        return Ok(found);
                    }
                    tracing::info!("the answer to an audience create was lost and no audience has the name; creating again");
                }
                let result = self
                    .attempt::<Created>(key, &Method::POST, &url, Some(&body))
                    .await;
                if let Err(e) = &result
                    && e.outcome_unknown()
                {
                    unknown.store(true, Ordering::Relaxed);
                }
                result.map(|c| c.id)
            })
            .await?;
        tracing::info!(audience_id = %id, "created custom audience");
        Ok(id)
    }

    /// `GET /{audience_id}?fields=…`.
    #[tracing::instrument(name = "meta.get_audience", skip_all, fields(ad_account_id = %ad_account_id, audience_id = %audience_id))]
    pub async fn get_audience(
        &self,
        ad_account_id: &str,
        audience_id: &str,
    ) -> Result<AudienceInfo, MetaError> {
        let url = self.read_url(&[audience_id], &[("fields", AUDIENCE_FIELDS)]);
        self.call(ad_account_id, Method::GET, url, None).await
    }

    /// `GET /{audience_id}/sessions`: the audience's upload sessions, newest first (one page:
    /// the sessions a resume needs are the latest).
    #[tracing::instrument(name = "meta.get_sessions", skip_all, fields(ad_account_id = %ad_account_id, audience_id = %audience_id))]
    pub async fn get_sessions(
        &self,
        ad_account_id: &str,
        audience_id: &str,
    ) -> Result<Vec<SessionInfo>, MetaError> {
        let url = self.read_url(&[audience_id, "sessions"], &[("limit", "50")]);
        let page: SessionPage = self.call(ad_account_id, Method::GET, url, None).await?;
        Ok(page.data)
    }

    /// The id of the audience named exactly `name` in the ad account, searching every page of
    /// `GET /act_{id}/customaudiences?fields=id,name`.
    #[tracing::instrument(name = "meta.find_audience_by_name", skip_all, fields(ad_account_id = %ad_account_id))]
    pub async fn find_audience_by_name(
        &self,
        ad_account_id: &str,
        name: &str,
    ) -> Result<Option<String>, MetaError> {
        self.search_by_name(ad_account_id, name, true).await
    }

    /// Pages through the ad account's audiences; each page with the retry policy (`retry`) or
    /// as one attempt (inside another call's retries, so that the attempts stay bounded).
    async fn search_by_name(
        &self,
        ad_account_id: &str,
        name: &str,
        retry: bool,
    ) -> Result<Option<String>, MetaError> {
        let act = ad_account_path(ad_account_id);
        let key = throttle::key(ad_account_id);
        let mut after: Option<String> = None;
        for page_no in 1..=MAX_LIST_PAGES {
            let mut query = vec![("fields", "id,name"), ("limit", LIST_PAGE_SIZE)];
            if let Some(cursor) = &after {
                query.push(("after", cursor));
            }
            let url = self.read_url(&[&act, "customaudiences"], &query);
            let page: AudiencePage = if retry {
                self.call(ad_account_id, Method::GET, url, None).await?
            } else {
                self.attempt(key, &Method::GET, &url, None).await?
            };
            if let Some(hit) = page.data.iter().find(|a| a.name == name) {
                tracing::debug!(audience_id = %hit.id, pages = page_no, "found audience by name");
                return Ok(Some(hit.id.clone()));
            }
            let next = page
                .paging
                .filter(|p| p.next.is_some() && !page.data.is_empty())
                .and_then(|p| p.cursors)
                .and_then(|c| c.after)
                .filter(|c| Some(c) != after.as_ref());
            match next {
                Some(cursor) => after = Some(cursor),
                None => return Ok(None),
            }
        }
        // Answering "not found" here would make the caller create a duplicate audience.
        Err(MetaError::Decode(format!(
            "audience list of ad account {key} did not end after {MAX_LIST_PAGES} pages"
        )))
    }

    /// One batch of an upload session: `POST /{audience_id}/users` (add), `DELETE
    /// /{audience_id}/users` (remove, JSON body) or `POST /{audience_id}/usersreplace` (replace;
    /// `batch_seq = 1` starts it).
    #[tracing::instrument(name = "meta.upload_users", skip_all,
        fields(direction = direction.as_str(), ad_account_id = %ad_account_id, audience_id = %audience_id, rows = upload.rows.row_count(), batch_seq = upload.session.batch_seq))]
    pub async fn upload_users<R: UserRows + ?Sized>(
        &self,
        direction: Direction,
        ad_account_id: &str,
        audience_id: &str,
        upload: &UsersUpload<'_, R>,
    ) -> Result<UsersResponse, MetaError> {
        let (method, edge) = match direction {
            Direction::Add => (Method::POST, "users"),
            Direction::Remove => (Method::DELETE, "users"),
            Direction::Replace => (Method::POST, "usersreplace"),
        };
        self.upload(ad_account_id, audience_id, method, edge, upload)
            .await
    }

    /// `POST /{pixel_id}/events`: at most [`MAX_EVENTS_PER_CALL`] events; Meta rejects the whole
    /// batch if one is invalid.
    #[tracing::instrument(name = "meta.send_events", skip_all,
        fields(pixel_id = %pixel_id, events = request.data.len(), test = request.test_event_code.is_some()))]
    pub async fn send_events(
        &self,
        pixel_id: &str,
        request: &EventsRequest<'_>,
    ) -> Result<EventsResponse, MetaError> {
        let events = request.data.len();
        if events > MAX_EVENTS_PER_CALL {
            return Err(MetaError::TooLarge {
                rows: events,
                max: MAX_EVENTS_PER_CALL,
            });
        }
        let url = self.url(&[pixel_id, "events"], &[]);
        let body = self.body(request, 512 + events * 1024)?;
        let response: EventsResponse = self.call(pixel_id, Method::POST, url, Some(body)).await?;
        tracing::info!(
            events_received = response.events_received,
            fbtrace_id = response.fbtrace_id.as_deref(),
            "events sent"
        );
        Ok(response)
    }

    async fn upload<R: UserRows + ?Sized>(
        &self,
        ad_account_id: &str,
        audience_id: &str,
        method: Method,
        edge: &str,
        upload: &UsersUpload<'_, R>,
    ) -> Result<UsersResponse, MetaError> {
        let rows = upload.rows.row_count();
        if rows > MAX_USERS_PER_CALL {
            return Err(MetaError::TooLarge {
                rows,
                max: MAX_USERS_PER_CALL,
            });
        }
        let url = self.url(&[audience_id, edge], &[]);
        let params = upload.params();
        // A SHA-256 cell is 64 hex characters plus quotes and a comma.
        let size_hint = 512 + rows * (2 + upload.schema.len() * 67);
        let body = self.body(&params, size_hint)?;
        let key = throttle::key(ad_account_id);
        // Set when an attempt's outcome is unknown: the batch may have been applied.
        let unknown = AtomicBool::new(false);
        let response = self
            .retrying(key, || async {
                let result = self
                    .attempt::<UsersResponse>(key, &method, &url, Some(&body))
                    .await;
                if let Err(e) = &result
                    && e.outcome_unknown()
                {
                    unknown.store(true, Ordering::Relaxed);
                }
                result
            })
            .await;
        let response = match response {
            // A replace session's last batch re-sent after a lost answer: "session already
            // finished" means the lost attempt finished it. The totals are read back.
            Err(e)
                if edge == "usersreplace"
                    && upload.session.last_batch_flag
                    && unknown.load(Ordering::Relaxed)
                    && e.code() == Some((2650, Some(REPLACE_SESSION_FINISHED))) =>
            {
                self.finished_replace(ad_account_id, audience_id, upload.session.session_id)
                    .await?
                    .ok_or(e)?
            }
            other => other?,
        };
        tracing::info!(
            num_received = response.num_received,
            num_invalid_entries = response.num_invalid_entries,
            "upload batch accepted"
        );
        Ok(response)
    }

    /// The answer a replace session's last batch would have had, from `GET /{audience}/sessions`;
    /// `None` unless that session is listed as ended.
    async fn finished_replace(
        &self,
        ad_account_id: &str,
        audience_id: &str,
        session_id: i64,
    ) -> Result<Option<UsersResponse>, MetaError> {
        let sessions = self.get_sessions(ad_account_id, audience_id).await?;
        let wanted = session_id.to_string();
        let Some(done) = sessions
            .into_iter()
            .find(|s| s.session_id == wanted && !s.is_open())
        else {
            return Ok(None);
        };
        tracing::warn!(
            session_id,
            "the answer to a replace session's last batch was lost; Meta reports the session ended"
        );
        Ok(Some(UsersResponse {
            audience_id: Some(audience_id.to_string()),
            session_id: Some(session_id.to_string()),
            num_received: done.num_received.map_or(0, |n| n.max(0) as u64),
            num_invalid_entries: done.num_invalid_entries.map_or(0, |n| n.max(0) as u64),
            invalid_entry_samples: Vec::new(),
        }))
    }

    /// `{graph_url}/{version}/{segments…}?{query}`; segments are percent-encoded.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
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
    fn read_url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.url(segments, query);
        if let Some(proof) = &self.inner.appsecret_proof {
            url.query_pairs_mut()
                .append_pair("appsecret_proof", proof.expose_secret());
        }
        url
    }

    /// A write's JSON body: the token (and proof), then the parameters. Serialized once per call;
    /// every attempt sends the same bytes.
    fn body<P: Serialize>(&self, params: &P, size_hint: usize) -> Result<Bytes, MetaError> {
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

    /// One logical call: rate budget, attempts, retries. `body`: a write's JSON body.
    async fn call<T: DeserializeOwned>(
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
    async fn retrying<T, F, Fut>(&self, key: &str, attempt: F) -> Result<T, MetaError>
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

    async fn attempt<T: DeserializeOwned>(
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
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
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
    fn interpret<T: DeserializeOwned>(
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
    fn authorization(&self) -> Result<HeaderValue, MetaError> {
        let mut value = HeaderValue::from_str(&format!(
            "Bearer {}",
            self.inner.access_token.expose_secret()
        ))
        .map_err(|_| MetaError::Decode("the access token is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    fn secrets(&self) -> [&str; 2] {
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

/// `act_{number}` whether the caller passed `act_123` or `123`.
fn ad_account_path(ad_account_id: &str) -> String {
    format!("act_{}", throttle::key(ad_account_id))
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
    use crate::meta::UploadSession;

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

    fn client() -> MetaClient {
        MetaClient::new(
            &settings("http://127.0.0.1:9"),
            SecretString::from("EAAtoken-unit-test".to_string()),
        )
        .unwrap()
    }

    #[test]
    fn debug_output_redacts_the_token_and_the_proof() {
        let c = client();
        let shown = format!("{c:?}");
        assert!(!shown.contains("EAAtoken-unit-test"), "{shown}");
        let proof = appsecret_proof("app-secret-xyz", "EAAtoken-unit-test");
        assert!(!shown.contains(&proof), "{shown}");
        assert!(!shown.contains("app-secret-xyz"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn urls_hold_version_and_ids_but_never_the_token() {
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
    fn a_write_body_carries_token_and_proof_and_never_a_method_override() {
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
    fn a_read_url_has_the_proof_but_not_the_token_and_the_header_is_sensitive() {
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
    fn an_empty_token_or_a_bad_url_is_refused() {
        let s = settings("http://127.0.0.1:9");
        assert!(MetaClient::new(&s, SecretString::from(" ".to_string())).is_err());
        let s = settings("graph.facebook.com");
        assert!(MetaClient::new(&s, SecretString::from("t".to_string())).is_err());
    }

    #[tokio::test]
    async fn too_many_rows_or_events_are_refused_before_any_request() {
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
