//! Upload sessions: `/users` add and remove batches and `/usersreplace`, with Meta's session
//! rules (batch order, retries, one replace at a time, the 90-minute window).
use std::time::{Duration, Instant};

use super::audiences::Audience;
use super::{Inner, SandboxState, mix, now_secs};
use crate::error::GraphError;
use crate::members::{MemberSet, Upload};

/// A replace session not finished within this window times out (Meta: 90 minutes).
const REPLACE_WINDOW: Duration = Duration::from_secs(90 * 60);
/// Largest member-set growth reserved from an `estimated_num_total` hint.
const MAX_PRESIZE: usize = 20_000_000;

impl Audience {
    /// Ends an open replace session whose window has closed: the audience becomes what was
    /// uploaded before then (Meta's rule).
    pub(super) fn time_out_replace(&mut self) {
        if let Some(mut replace) = self.replace.take() {
            self.members = std::mem::take(&mut replace.pending);
            self.finished_replaces.insert(replace.session_id);
            if let Some(log) = self
                .history
                .iter_mut()
                .rev()
                .find(|l| l.session_id == replace.session_id && l.kind == "replace")
            {
                log.end_time = Some(now_secs());
                log.stage = "timed_out";
            }
            self.time_updated = now_secs();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Add,
    Remove,
}

pub(super) struct UserSession {
    pub(super) last_seq: i64,
    pub(super) last_rows: usize,
    pub(super) last_invalid: usize,
    pub(super) num_received: usize,
    pub(super) num_invalid: usize,
    pub(super) finished: bool,
}

pub(super) struct ReplaceSession {
    pub(super) session_id: u64,
    pub(super) started: Instant,
    pub(super) pending: MemberSet,
    pub(super) num_received: usize,
    pub(super) num_invalid: usize,
}

/// A `session` parameter, validated.
#[derive(Debug, Clone, Copy)]
pub struct SessionParams {
    pub session_id: u64,
    pub batch_seq: i64,
    pub last_batch_flag: bool,
    /// Meta's size hint; the first batch of an add session pre-sizes the member set with it.
    pub estimated_num_total: Option<usize>,
}

/// What a `/users` or `/usersreplace` call answers.
#[derive(Debug)]
pub struct UsersReply {
    pub session_id: u64,
    pub num_received: usize,
    pub num_invalid: usize,
}

impl SandboxState {
    fn next_session_id(&self, inner: &mut Inner) -> u64 {
        inner.session_seq += 1;
        (mix(self.shared.options.seed ^ 0x5E55_1011) % 1_000_000_000_000) * 1_000_000
            + inner.session_seq
    }

    /// Applies an add or remove batch under the `/users` session rules.
    pub fn apply_users(
        &self,
        audience_id: &str,
        direction: Direction,
        session: Option<SessionParams>,
        upload: Upload,
    ) -> Result<UsersReply, GraphError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let method = if direction == Direction::Add {
            "POST"
        } else {
            "DELETE"
        };
        let generated = match session {
            Some(_) => None,
            None => Some(self.next_session_id(inner)),
        };
        let window = self.replace_window();
        let audience = inner
            .audience_mut(audience_id)
            .ok_or_else(|| GraphError::unsupported(method, audience_id))?;
        if audience
            .replace
            .as_ref()
            .is_some_and(|r| r.started.elapsed() > window)
        {
            audience.time_out_replace();
        }
        if audience.replace.is_some() {
            return Err(GraphError::update_failed(
                Some(1870145),
                "A replace operation is in progress for this audience; wait until it finishes and retry",
            ));
        }
        if direction == Direction::Add {
            audience.check_upload(&upload)?;
        }
        let rows = upload.received;
        let reply = match session {
            None => UsersReply {
                session_id: generated.unwrap_or_default(),
                num_received: rows,
                num_invalid: upload.invalid,
            },
            Some(s) => {
                let key = (s.session_id, direction);
                let state = audience.sessions.get(&key);
                let (received, invalid) = match state {
                    None if s.batch_seq != 1 => {
                        return Err(GraphError::invalid(format!(
                            "Invalid batch_seq {} for session {}: a new session must start with batch_seq 1",
                            s.batch_seq, s.session_id
                        )));
                    }
                    None => (rows, upload.invalid),
                    // A retry of the last accepted batch (its answer was lost): accepted again.
                    Some(st) if s.batch_seq == st.last_seq => (
                        st.num_received - st.last_rows + rows,
                        st.num_invalid - st.last_invalid + upload.invalid,
                    ),
                    Some(st) if st.finished => {
                        return Err(GraphError::invalid(format!(
                            "Session {} has already finished (last_batch_flag was sent with batch_seq {}); batch_seq {} is not accepted",
                            s.session_id, st.last_seq, s.batch_seq
                        )));
                    }
                    Some(st) if s.batch_seq == st.last_seq + 1 => {
                        (st.num_received + rows, st.num_invalid + upload.invalid)
                    }
                    Some(st) => {
                        return Err(GraphError::invalid(format!(
                            "Invalid batch_seq {} for session {}: expected {} (or {} again as a retry)",
                            s.batch_seq,
                            s.session_id,
                            st.last_seq + 1,
                            st.last_seq
                        )));
                    }
                };
                let finished = state.is_some_and(|st| st.finished) || s.last_batch_flag;
                let kind = if direction == Direction::Add {
                    "add"
                } else {
                    "remove"
                };
                audience.log_session(s.session_id, kind, received, invalid, finished);
                audience.sessions.insert(
                    key,
                    UserSession {
                        last_seq: s.batch_seq,
                        last_rows: rows,
                        last_invalid: upload.invalid,
                        num_received: received,
                        num_invalid: invalid,
                        finished,
                    },
                );
                UsersReply {
                    session_id: s.session_id,
                    num_received: received,
                    num_invalid: invalid,
                }
            }
        };
        match direction {
            Direction::Add => {
                if let Some(total) = session
                    .filter(|s| s.batch_seq == 1)
                    .and_then(|s| s.estimated_num_total)
                {
                    // Capped so a silly hint cannot allocate gigabytes up front.
                    audience.members.reserve(
                        total
                            .min(MAX_PRESIZE)
                            .saturating_sub(audience.members.len()),
                    );
                }
                audience.shape.get_or_insert(upload.shape);
                audience.members.extend(upload.members);
            }
            Direction::Remove => {
                for m in &upload.members {
                    audience.members.remove(m);
                }
            }
        }
        audience.time_updated = now_secs();
        inner.writes_since_faults += 1;
        Ok(reply)
    }

    /// Applies one `/usersreplace` batch; the audience becomes the uploaded set on the last one.
    pub fn apply_replace(
        &self,
        audience_id: &str,
        s: SessionParams,
        upload: Upload,
    ) -> Result<UsersReply, GraphError> {
        self.apply_replace_at(audience_id, s, upload, Instant::now())
    }

    fn apply_replace_at(
        &self,
        audience_id: &str,
        s: SessionParams,
        upload: Upload,
        now: Instant,
    ) -> Result<UsersReply, GraphError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let audience = inner
            .audience_mut(audience_id)
            .ok_or_else(|| GraphError::unsupported("POST", audience_id))?;
        audience.check_upload(&upload)?;
        if audience.finished_replaces.contains(&s.session_id) {
            return Err(GraphError::update_failed(
                Some(1870159),
                &format!(
                    "Replace session {} has already finished (last_batch_flag was sent); start a new session",
                    s.session_id
                ),
            ));
        }
        let window = self.replace_window();
        // Another session's window closing frees the audience (its own late batch is answered
        // with the time-out below).
        if audience.replace.as_ref().is_some_and(|r| {
            now.duration_since(r.started) > window
                && (s.batch_seq == 1 || r.session_id != s.session_id)
        }) {
            audience.time_out_replace();
        }
        if s.batch_seq == 1 {
            // One replace at a time: a new session waits until the open one ends or times out.
            if let Some(open) = audience.replace.as_ref()
                && open.session_id != s.session_id
            {
                return Err(GraphError::update_failed(
                    Some(1870145),
                    &format!(
                        "Audience update in progress: replace session {} is still open; retry when it has finished or timed out",
                        open.session_id
                    ),
                ));
            }
            audience.replace = Some(ReplaceSession {
                session_id: s.session_id,
                started: now,
                pending: MemberSet::default(),
                num_received: 0,
                num_invalid: 0,
            });
        }
        let replace = match audience.replace.as_mut() {
            Some(r) if r.session_id == s.session_id => r,
            _ => {
                return Err(GraphError::update_failed(
                    Some(1870147),
                    &format!(
                        "Invalid Upload Batch for Replace: session {} has no first batch (batch_seq 1); got batch_seq {}",
                        s.session_id, s.batch_seq
                    ),
                ));
            }
        };
        if now.duration_since(replace.started) > window {
            audience.time_out_replace();
            return Err(GraphError::update_failed(
                Some(1870158),
                &format!(
                    "Replace session {} timed out after 90 minutes; the audience holds the batches received before then",
                    s.session_id
                ),
            ));
        }
        replace.pending.extend(upload.members);
        replace.num_received += upload.received;
        replace.num_invalid += upload.invalid;
        let reply = UsersReply {
            session_id: s.session_id,
            num_received: replace.num_received,
            num_invalid: replace.num_invalid,
        };
        let (received, invalid) = (replace.num_received, replace.num_invalid);
        if s.last_batch_flag {
            let pending = std::mem::take(&mut replace.pending);
            audience.members = pending;
            audience.replace = None;
            audience.finished_replaces.insert(s.session_id);
        }
        audience.log_session(
            s.session_id,
            "replace",
            received,
            invalid,
            s.last_batch_flag,
        );
        audience.shape.get_or_insert(upload.shape);
        audience.time_updated = now_secs();
        inner.writes_since_faults += 1;
        Ok(reply)
    }

    /// How long a replace session stays open (Meta: 90 minutes; settable for tests).
    pub(super) fn replace_window(&self) -> Duration {
        self.shared
            .options
            .replace_window_secs
            .map_or(REPLACE_WINDOW, Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SandboxOptions;
    use crate::members::parse_payload;
    use crate::params::Param;
    use std::borrow::Cow;

    const A: &str = "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79";

    fn upload() -> Upload {
        let json = format!(r#"{{"schema":["EMAIL"],"data":[["{A}"]]}}"#);
        parse_payload(Some(Param::Text(Cow::Owned(json))), &[]).unwrap()
    }

    #[test]
    fn a_replace_batch_after_ninety_minutes_times_out_and_keeps_what_arrived() {
        let state = SandboxState::new(SandboxOptions::default());
        let id = state
            .create_audience("1", "a", None, "USER_PROVIDED_ONLY", false)
            .unwrap();
        let t0 = Instant::now();
        let s = |seq, last| SessionParams {
            session_id: 9,
            batch_seq: seq,
            last_batch_flag: last,
            estimated_num_total: None,
        };
        state
            .apply_replace_at(&id, s(1, false), upload(), t0)
            .unwrap();
        let late = t0 + REPLACE_WINDOW + Duration::from_secs(1);
        let e = state
            .apply_replace_at(&id, s(2, true), upload(), late)
            .unwrap_err();
        assert_eq!((e.code, e.subcode), (2650, Some(1870158)));
        assert_eq!(state.audience(&id).unwrap().member_count, 1);
        assert!(!state.audience(&id).unwrap().replace_in_progress);
    }
}
