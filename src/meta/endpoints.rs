//! The Graph API endpoints the worker calls, each one request (or a short sequence: a paged
//! search, a finished-session check) on [`MetaClient`]'s transport (see `client.rs`).
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::Method;
use serde_json::Value;

use super::MetaClient;
use super::error::MetaError;
use super::model::{
    AUDIENCE_FIELDS, AudienceInfo, AudiencePage, CreateAudience, Created, Direction, EventsRequest,
    EventsResponse, MAX_EVENTS_PER_CALL, MAX_USERS_PER_CALL, SessionInfo, SessionPage, UserRows,
    UsersResponse, UsersUpload,
};
use super::throttle::{self};
use super::token::{self, TokenInfo};
use crate::secret::{ExposeSecret, SecretString};

/// Audiences per page when searching by name; only `id,name` are asked for, so pages stay light.
const LIST_PAGE_SIZE: &str = "100";
/// A search that pages this far is broken (Meta allows ~10,000 audiences of all kinds).
const MAX_LIST_PAGES: usize = 1_000;
/// `usersreplace`: "the session has already finished" (its last batch was received).
const REPLACE_SESSION_FINISHED: i64 = 1_870_159;

impl MetaClient {
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
        // A SHA-256 cell is 64 hex characters plus quotes and a comma.
        let size_hint = 512 + rows * (2 + upload.schema.len() * 67);
        let body = self.users_body(upload, size_hint)?;
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
}

/// `act_{number}` whether the caller passed `act_123` or `123`.
fn ad_account_path(ad_account_id: &str) -> String {
    format!("act_{}", throttle::key(ad_account_id))
}
