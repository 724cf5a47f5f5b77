//! The request log: every Graph call as recorded, the newest 100,000 kept.
use serde::Serialize;

use super::SandboxState;

/// Oldest request records are dropped beyond this many, so long demos keep flat memory.
const MAX_LOG: usize = 100_000;

/// One Graph call as logged: never a token, never a cell.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestRecord {
    pub seq: u64,
    /// Effective method (after a `method=GET|DELETE` override).
    pub method: String,
    pub http_method: String,
    /// Path without the query string.
    pub path: String,
    /// The query string as sent (to check that no secret travels in a URL).
    pub query: Option<String>,
    pub status: u16,
    /// `create_audience`, `list_audiences`, `read_audience`, `delete_audience`, `add_users`,
    /// `remove_users`, `replace_users`, `send_events` or `unknown`.
    pub operation: String,
    /// The ad account, audience or pixel id the call was about.
    pub object_id: Option<String>,
    /// Rows (users calls) or events (events calls) in the request.
    pub rows: Option<usize>,
    pub session_id: Option<String>,
    pub batch_seq: Option<i64>,
    pub last_batch_flag: Option<bool>,
    pub error_code: Option<i64>,
    pub error_subcode: Option<i64>,
    /// True when the error was injected by a fault, not by validation.
    pub injected: bool,
    /// The wire fault this call got (its answer was dropped, cut, slowed or replaced by a 502).
    pub wire_fault: Option<crate::faults::WireFaultKind>,
    pub fbtrace_id: String,
    pub duration_ms: u64,
    /// The first 8 hex digits of the SHA-256 of the call's token (never the token).
    pub token_fingerprint: Option<String>,
    /// A batch request's requests, as `METHOD path` (no query string).
    pub batch: Vec<String>,
}

impl SandboxState {
    pub fn record(&self, mut record: RequestRecord) {
        let mut inner = self.lock();
        inner.log_seq += 1;
        record.seq = inner.log_seq;
        if inner.log.len() >= MAX_LOG {
            inner.log.pop_front();
        }
        inner.log.push_back(record);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.iter().cloned().collect()
    }
}
