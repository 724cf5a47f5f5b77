//! Each audience's upload sessions as `GET /{audience_id}/sessions` lists them.
use serde::Serialize;

use super::SandboxState;
use super::audiences::Audience;
use super::now_secs;

/// One upload session as `GET /{audience_id}/sessions` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionLog {
    pub session_id: u64,
    /// `add`, `remove` or `replace`.
    pub kind: &'static str,
    pub start_time: i64,
    /// Set when the session ended (its last batch, or the replace window closed).
    pub end_time: Option<i64>,
    pub num_received: usize,
    pub num_invalid_entries: usize,
    /// `in_progress`, `completed` or `timed_out`.
    pub stage: &'static str,
}

impl Audience {
    /// Records a batch of a session: a new one, or more of a known one.
    pub(super) fn log_session(
        &mut self,
        session_id: u64,
        kind: &'static str,
        received: usize,
        invalid: usize,
        finished: bool,
    ) {
        let now = now_secs();
        let log = match self
            .history
            .iter_mut()
            .rev()
            .find(|l| l.session_id == session_id && l.kind == kind)
        {
            Some(log) => log,
            None => {
                self.history.push(SessionLog {
                    session_id,
                    kind,
                    start_time: now,
                    end_time: None,
                    num_received: 0,
                    num_invalid_entries: 0,
                    stage: "in_progress",
                });
                self.history.last_mut().expect("just pushed")
            }
        };
        log.num_received = received;
        log.num_invalid_entries = invalid;
        if finished && log.end_time.is_none() {
            log.end_time = Some(now);
            log.stage = "completed";
        }
    }
}

impl SandboxState {
    /// The audience's upload sessions, newest first (`GET /{audience_id}/sessions`); an open
    /// replace session past its window is timed out first.
    pub fn sessions(&self, audience_id: &str) -> Option<Vec<SessionLog>> {
        let window = self.replace_window();
        let mut inner = self.lock();
        let audience = inner.audience_mut(audience_id)?;
        if audience
            .replace
            .as_ref()
            .is_some_and(|r| r.started.elapsed() > window)
        {
            audience.time_out_replace();
        }
        Some(audience.history.iter().rev().cloned().collect())
    }
}
