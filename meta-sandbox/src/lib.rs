//! Meta sandbox: a local emulator of the Graph API endpoints cdp-meta-sync uses — custom
//! audiences (create, list, read, add/remove/replace users with sessions) and the Conversions API
//! (`/{pixel_id}/events`) — with Meta's validation, error bodies, HTTP statuses and usage headers,
//! plus deterministic fault injection and inspection endpoints.
//!
//! Used by tests through [`spawn`], and by demos, benchmarks and operators through the
//! `meta-sandbox` binary. Where Meta's docs are silent, the choices are:
//! * Auth: a call without `access_token` answers 2500 (what Meta sends), not 190. Any non-empty
//!   token is valid. `appsecret_proof` must be 64 hex; with `--app-secret` it must also match.
//! * Create: `name` is required; a missing `subtype` means CUSTOM; the 501st audience of an ad
//!   account answers code 2654 ("Failed to create custom audience", in Meta's list of create errors).
//! * Lists: `limit` defaults to 25, capped at 500; cursors are opaque; `next` carries no token
//!   (Meta's does; URLs end up in logs); an empty page is `{"data":[]}` with no `paging`, as Meta.
//! * Read: without `fields`, the fields of the wire contract; an unknown field is code 100.
//!   Count bounds: the count rounded down/up to 100 below 10,000 members, else to two
//!   significant digits. `delivery_status` 300 below 1,000 members; `operation_status` 414
//!   while a replace is in progress.
//! * `/users` sessions are optional (Meta's guide marks them required, but the API accepts calls
//!   without one). Within a session `batch_seq` starts at 1 and each batch is the last one + 1,
//!   or the last one again (a retry, accepted idempotently, not counted twice); a new batch after
//!   `last_batch_flag` is code 100. `num_received` and `num_invalid_entries` are session totals;
//!   `invalid_entry_samples` covers this call only. `estimated_num_total` on batch 1 pre-sizes.
//! * Members are canonical rows (non-empty cells by key). Removal is strict: a member goes when
//!   the removed row's non-empty cells equal the added row's (Meta matches any key; our worker
//!   always removes with the row it added). The data-source check (2650) applies to add/replace.
//! * `invalid_entry_samples` maps each invalid value to its schema key (`[]` when none); an
//!   all-empty row shows as `"row N": "EMPTY_ROW"`. `sha256("")` counts as invalid.
//! * Replace: `batch_seq` 1 (re)starts the session and drops any pending upload; later batches
//!   may come in any order or repeat; the 90-minute window ends with 2650/1870158.
//! * Events: `event_time` may be at most 10 minutes in the future; too-old events carry subcode
//!   2804003; `Purchase` needs `custom_data.value` and a 3-letter `currency` (Meta documents both
//!   as required for purchases). Every received event is kept in the inspection list; one whose
//!   `event_name` and `event_id` match an earlier event of the pixel received less than 48 hours
//!   before is marked `duplicate` (Meta "only considers the first one"); `events_received`
//!   counts duplicates too (Meta deduplicates after receiving).
//! * Faults: one RNG draw per Graph call, whatever the call, so failures depend only on the seed
//!   and the call sequence. Wire faults ([`WireFault`]) are spent per matching call, whatever
//!   its outcome: `bad_gateway_html` answers before the call reaches "Meta" (no RNG draw, no
//!   effect, logged with status 502); the others run the call and then drop, cut or slow its
//!   answer (the log shows the call's own status). A stalled call, when faults change, answers code 2 without touching
//!   state. `reset` restores the start: no audiences, events or log; start faults; RNG re-seeded.
//! * Tokens: [`Faults::tokens`] gives particular tokens an expiry, scopes or a revocation; an
//!   expired or revoked one is refused on every call (190/463, 190/460). `debug_token` is served
//!   inside a batch request only (`POST /{version}/`, see [`tokens`]). The request log keeps a
//!   fingerprint of each call's token (8 hex digits of its SHA-256), never the token.
//! * Bodies: JSON or form-urlencoded (multipart is refused with code 100), up to 64 MB. The
//!   request log keeps the last 100,000 calls.
pub mod error;
pub mod events;
pub mod faults;
mod graph;
mod inspect;
pub mod members;
mod params;
pub mod state;
pub mod tokens;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use faults::{
    AudienceStatus, FaultCode, Faults, UsageFault, WireFault, WireFaultKind, WireTarget,
    parse_error_codes, parse_wire_fault,
};
pub use state::{AudienceSummary, ReceivedEvent, RequestRecord, SandboxState};
pub use tokens::{SandboxToken, fingerprint};

/// Largest request body accepted: a 10,000-row, 4-key call is about 3 MB.
pub const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// How a sandbox starts: its seed (fault draws, ids and trace ids derive from it), its initial
/// faults, and optionally the app secret that `appsecret_proof` is checked against.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    pub seed: u64,
    pub faults: Faults,
    pub app_secret: Option<String>,
    /// Accept HTTP method override (`POST` with `method=GET|DELETE`), as Meta still does for apps
    /// that used it before Graph API v27.0; off, as for every new app since 2026-11-04.
    pub allow_method_override: bool,
    /// How long a replace session stays open before it times out (default: Meta's 90 minutes).
    pub replace_window_secs: Option<u64>,
}

/// The Graph routes, the `/_sandbox` inspection and control routes, and `/healthz`.
pub fn router(state: SandboxState) -> Router {
    Router::new()
        .merge(inspect::routes())
        .fallback(graph::handle)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serves until `shutdown` resolves; stalled calls are released so the exit is not held up.
pub async fn serve(
    listener: TcpListener,
    state: SandboxState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let release = state.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            release.release_stalls();
        })
        .await
}

/// A sandbox serving on `127.0.0.1:<ephemeral port>` in a background task; stops when dropped.
pub struct Sandbox {
    addr: SocketAddr,
    state: SandboxState,
    stop: CancellationToken,
}

/// Starts a sandbox for a test (binds 127.0.0.1:0).
pub async fn spawn(options: SandboxOptions) -> anyhow::Result<Sandbox> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = SandboxState::new(options);
    let stop = CancellationToken::new();
    let token = stop.clone();
    let serving = state.clone();
    tokio::spawn(async move {
        let _ = serve(listener, serving, async move { token.cancelled().await }).await;
    });
    Ok(Sandbox { addr, state, stop })
}

impl Sandbox {
    /// `http://127.0.0.1:PORT`; clients append `/{version}/…`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> &SandboxState {
        &self.state
    }

    pub fn audiences(&self) -> Vec<AudienceSummary> {
        self.state.audiences()
    }

    /// Members as their non-empty cells by schema key (sorted); empty for an unknown audience.
    pub fn members(&self, audience_id: &str) -> Vec<BTreeMap<String, String>> {
        self.state.members(audience_id, None).unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.requests()
    }

    pub fn events(&self, pixel_id: &str) -> Vec<ReceivedEvent> {
        self.state.events(Some(pixel_id))
    }

    /// User-write calls held by `Faults::stall_after_writes` right now.
    pub fn stalled_calls(&self) -> usize {
        self.state.stalled_calls()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    /// The faults in force (wire faults that are spent are gone from `wire`).
    pub fn faults(&self) -> Faults {
        self.state.faults()
    }

    pub fn reset(&self) {
        self.state.reset();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
        self.state.release_stalls();
    }
}
