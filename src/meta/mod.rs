//! Meta Graph API client: Custom Audiences (create, read, find, add/remove/replace users) and the
//! Conversions API (events).
//!
//! * `client.rs` — [`MetaClient`]: requests (token in the body, never in a URL), one call's
//!   attempts and retries.
//! * `model.rs` — request and response types, tolerant parsing of Meta's variants.
//! * `error.rs` — [`MetaError`] and Meta's error JSON ([`GraphError`]), operator-readable.
//! * `fence.rs` — a write's body that goes out to its last byte only while the run's lease holds.
//! * `retry.rs` — retry / don't-retry on code and subcode ([`RetryClass`]), backoff with full jitter.
//! * `throttle.rs` — usage headers → "not before" per ad account (or pixel) and for the app.
//! * `audience_health.rs` — an audience's status as Meta reports it, and which codes are problems.
//! * `auth.rs` — `appsecret_proof`.
//! * `token.rs` — `debug_token`'s answer ([`TokenInfo`]), sent as a batch request.
pub mod audience_health;
mod auth;
mod client;
mod endpoints;
mod error;
mod fence;
mod model;
mod retry;
mod throttle;
mod token;

pub use auth::appsecret_proof;
pub use client::{MetaClient, http_client};
pub use error::{GraphError, MetaError};
pub use fence::{Fenced, FencedBody, WriteFence};
pub use model::{
    AudienceInfo, Direction, EventsRequest, EventsResponse, MAX_EVENTS_PER_CALL,
    MAX_USERS_PER_CALL, SessionInfo, StatusInfo, UploadSession, UserRows, UsersResponse,
    UsersUpload,
};
pub use retry::{RetryClass, classify_graph, classify_http_status, is_throttle_code};
pub use throttle::{NEAR_LIMIT_PAUSE, NEAR_LIMIT_PCT};
pub use token::{EXPIRED_SUBCODE, TokenError, TokenInfo};
