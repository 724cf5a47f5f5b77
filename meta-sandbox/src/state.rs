//! In-memory state: audiences with their members and sessions, received events, the request
//! log, and the fault RNG. Everything sits behind one mutex; callers parse and validate outside
//! it and only apply here, so the lock is held for microseconds per call (a HashSet insert per row).
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use super::SandboxOptions;
use super::error::GraphError;
use super::faults::{FaultCode, Faults, UsageFault, WireFault, WireTarget};
use super::members::{Member, MemberSet, Shape, Upload, decode_member};

/// Meta's limit on CUSTOM audiences per ad account.
pub const MAX_AUDIENCES_PER_ACCOUNT: usize = 500;
/// A replace session not finished within this window times out (Meta: 90 minutes).
const REPLACE_WINDOW: Duration = Duration::from_secs(90 * 60);
/// Largest member-set growth reserved from an `estimated_num_total` hint.
const MAX_PRESIZE: usize = 20_000_000;
/// Oldest request records are dropped beyond this many, so long demos keep flat memory.
const MAX_LOG: usize = 100_000;
/// Meta keeps the first of the events with the same `event_name` and `event_id` received within
/// 48 hours of each other and discards the later ones (server event parameters, `event_name`).
const DEDUP_WINDOW_SECS: i64 = 48 * 3600;

/// Cheap to clone: a handle on the shared state, used by the router and by [`super::Sandbox`].
#[derive(Clone)]
pub struct SandboxState {
    shared: Arc<Shared>,
}

struct Shared {
    options: SandboxOptions,
    inner: Mutex<Inner>,
    /// Bumped whenever faults change; stalled calls wait on it.
    faults_changed: watch::Sender<u64>,
}

struct Inner {
    faults: Faults,
    /// Draws injected failures; seeded, and advanced once per Graph call, so the same seed and
    /// call sequence gives the same failures.
    rng: SmallRng,
    graph_calls: u64,
    /// Accepted user-write calls since faults were last set (for `stall_after_writes`).
    writes_since_faults: u64,
    audience_seq: u64,
    session_seq: u64,
    audiences: BTreeMap<u64, Audience>,
    events: BTreeMap<String, Vec<ReceivedEvent>>,
    /// When the kept event of each (pixel, event_name, event_id) arrived (Unix seconds).
    kept_events: HashMap<(String, String, String), i64>,
    log: VecDeque<RequestRecord>,
    log_seq: u64,
}

struct Audience {
    id: u64,
    /// Bare numeric ad account id (no `act_`).
    account: String,
    name: String,
    description: Option<String>,
    customer_file_source: String,
    /// Created with `is_value_based=1`.
    value_based: bool,
    shape: Option<Shape>,
    members: MemberSet,
    /// `/users` sessions by (session id, direction).
    sessions: HashMap<(u64, Direction), UserSession>,
    replace: Option<ReplaceSession>,
    finished_replaces: HashSet<u64>,
    /// Every upload session, oldest first, as `GET /{audience_id}/sessions` lists them.
    history: Vec<SessionLog>,
    time_created: i64,
    time_updated: i64,
}

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
    fn log_session(
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

    /// Ends an open replace session whose window has closed: the audience becomes what was
    /// uploaded before then (Meta's rule).
    fn time_out_replace(&mut self) {
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

struct UserSession {
    last_seq: i64,
    last_rows: usize,
    last_invalid: usize,
    num_received: usize,
    num_invalid: usize,
    finished: bool,
}

struct ReplaceSession {
    session_id: u64,
    started: Instant,
    pending: MemberSet,
    num_received: usize,
    num_invalid: usize,
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

/// One audience as the inspection API and the tests see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudienceSummary {
    pub id: String,
    /// `act_<digits>`, as in `cdp.facebook_configurations.ad_account_id`.
    pub ad_account_id: String,
    pub name: String,
    pub member_count: usize,
}

/// A copy of one audience's fields, taken under the lock, for Graph reads.
#[derive(Debug, Clone)]
pub struct AudienceView {
    pub id: String,
    pub account: String,
    pub name: String,
    pub description: Option<String>,
    pub customer_file_source: String,
    pub value_based: bool,
    pub member_count: usize,
    pub shape: Option<Shape>,
    pub replace_in_progress: bool,
    pub time_created: i64,
    pub time_updated: i64,
}

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
    pub wire_fault: Option<super::faults::WireFaultKind>,
    pub fbtrace_id: String,
    pub duration_ms: u64,
    /// The first 8 hex digits of the SHA-256 of the call's token (never the token).
    pub token_fingerprint: Option<String>,
    /// A batch request's requests, as `METHOD path` (no query string).
    pub batch: Vec<String>,
}

/// One accepted Conversions API event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedEvent {
    pub pixel_id: String,
    pub event: Value,
    pub test_event_code: Option<String>,
    pub partner_agent: Option<String>,
    /// Meta discards it: an event with the same `event_name` and `event_id` arrived for this
    /// pixel less than 48 hours before (events without an `event_id` are never duplicates).
    pub duplicate: bool,
}

/// What the fault machinery decided for one Graph call, drawn under the lock.
pub struct CallTicket {
    pub fbtrace_id: String,
    pub token_error: bool,
    pub injected: Option<GraphError>,
    /// Set when this user-write call must hang until faults change.
    pub stall: Option<watch::Receiver<u64>>,
    pub usage: Option<UsageFault>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// SplitMix64: a stable mixer for ids and trace ids derived from the seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Inner {
    fn new(options: &SandboxOptions) -> Self {
        Inner {
            faults: options.faults.clone(),
            rng: SmallRng::seed_from_u64(options.seed),
            graph_calls: 0,
            writes_since_faults: 0,
            audience_seq: 0,
            session_seq: 0,
            audiences: BTreeMap::new(),
            events: BTreeMap::new(),
            kept_events: HashMap::new(),
            log: VecDeque::new(),
            log_seq: 0,
        }
    }

    fn audience_mut(&mut self, id: &str) -> Option<&mut Audience> {
        self.audiences.get_mut(&id.parse::<u64>().ok()?)
    }
}

impl Audience {
    fn view(&self) -> AudienceView {
        AudienceView {
            id: self.id.to_string(),
            account: self.account.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            customer_file_source: self.customer_file_source.clone(),
            value_based: self.value_based,
            member_count: self.members.len(),
            shape: self.shape,
            replace_in_progress: self.replace.is_some(),
            time_created: self.time_created,
            time_updated: self.time_updated,
        }
    }

    fn summary(&self) -> AudienceSummary {
        AudienceSummary {
            id: self.id.to_string(),
            ad_account_id: format!("act_{}", self.account),
            name: self.name.clone(),
            member_count: self.members.len(),
        }
    }

    /// An added or replacing batch fits the audience: its data source, and LOOKALIKE_VALUE in the
    /// schema exactly when the audience is value-based (Meta's value-based audience guide).
    fn check_upload(&self, upload: &Upload) -> Result<(), GraphError> {
        match (self.value_based, upload.valued) {
            (true, false) => {
                return Err(GraphError::invalid(
                    "The schema of a value-based custom audience must include LOOKALIKE_VALUE",
                ));
            }
            (false, true) => {
                return Err(GraphError::invalid(
                    "LOOKALIKE_VALUE can only be uploaded to a value-based custom audience (created with is_value_based)",
                ));
            }
            _ => {}
        }
        let shape = upload.shape;
        match self.shape {
            Some(s) if s != shape => Err(GraphError::update_failed(
                None,
                &format!(
                    "This audience was created from data source {}, which does not support data source {}.",
                    s.data_source(),
                    shape.data_source()
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl SandboxState {
    pub fn new(options: SandboxOptions) -> Self {
        let inner = Mutex::new(Inner::new(&options));
        SandboxState {
            shared: Arc::new(Shared {
                options,
                inner,
                faults_changed: watch::Sender::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough test state; keep serving.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn options(&self) -> &SandboxOptions {
        &self.shared.options
    }

    // ---- faults ----

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        {
            let mut inner = self.lock();
            inner.faults = faults;
            inner.writes_since_faults = 0;
        }
        self.shared.faults_changed.send_modify(|g| *g += 1);
    }

    /// User-write calls held by `stall_after_writes` right now (each holds a receiver).
    pub fn stalled_calls(&self) -> usize {
        self.shared.faults_changed.receiver_count()
    }

    /// Releases every stalled call (used on shutdown so graceful exit does not wait forever).
    pub fn release_stalls(&self) {
        self.shared.faults_changed.send_modify(|g| *g += 1);
    }

    /// Back to the state `spawn` left: no audiences, events or log; faults and RNG as at start.
    pub fn reset(&self) {
        {
            let mut inner = self.lock();
            *inner = Inner::new(&self.shared.options);
        }
        self.release_stalls();
    }

    /// What the faults say of particular tokens (see [`super::tokens`]).
    pub fn token_table(&self) -> BTreeMap<String, super::tokens::SandboxToken> {
        self.lock().faults.tokens.clone()
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.lock().faults.latency_ms)
    }

    /// Counts one Graph call and draws its fate from the seeded RNG (one draw per call whatever
    /// happens next, so the failure pattern depends only on the seed and the call sequence).
    pub fn begin_call(&self, user_write: bool) -> CallTicket {
        let mut inner = self.lock();
        inner.graph_calls += 1;
        let fbtrace_id = trace_id(mix(self.shared.options.seed ^ mix(inner.graph_calls)));
        let draw: f64 = inner.rng.random();
        let pick: u64 = inner.rng.random();
        let faults = &inner.faults;
        let injected = (draw < faults.error_rate).then(|| {
            let codes = &faults.error_codes;
            if codes.is_empty() {
                FaultCode::new(2).to_error()
            } else {
                codes[(pick % codes.len() as u64) as usize].to_error()
            }
        });
        let stall = (user_write
            && faults
                .stall_after_writes
                .is_some_and(|n| inner.writes_since_faults >= n))
        .then(|| self.shared.faults_changed.subscribe());
        CallTicket {
            fbtrace_id,
            token_error: faults.token_error,
            injected,
            stall,
            usage: faults.usage,
        }
    }

    /// Spends one use of the first wire fault aimed at `target`; a spent fault leaves the list.
    pub fn take_wire_fault(&self, target: WireTarget) -> Option<WireFault> {
        let mut inner = self.lock();
        let wire = &mut inner.faults.wire;
        let i = wire.iter().position(|f| f.on == target && f.times > 0)?;
        wire[i].times -= 1;
        let taken = wire[i].clone();
        if wire[i].times == 0 {
            wire.remove(i);
        }
        Some(taken)
    }

    pub fn record(&self, mut record: RequestRecord) {
        let mut inner = self.lock();
        inner.log_seq += 1;
        record.seq = inner.log_seq;
        if inner.log.len() >= MAX_LOG {
            inner.log.pop_front();
        }
        inner.log.push_back(record);
    }

    // ---- audiences ----

    pub fn create_audience(
        &self,
        account: &str,
        name: &str,
        description: Option<String>,
        customer_file_source: &str,
        value_based: bool,
    ) -> Result<String, GraphError> {
        let mut inner = self.lock();
        let existing = inner
            .audiences
            .values()
            .filter(|a| a.account == account)
            .count();
        if existing >= MAX_AUDIENCES_PER_ACCOUNT {
            return Err(GraphError::new(
                2654,
                format!(
                    "(#2654) Failed to create custom audience: this ad account already has the maximum of {MAX_AUDIENCES_PER_ACCOUNT} custom audiences"
                ),
            )
            .with_user(
                "Custom Audience Limit Reached",
                format!("You can create a maximum of {MAX_AUDIENCES_PER_ACCOUNT} custom audiences."),
            ));
        }
        inner.audience_seq += 1;
        // 17-digit ids like Meta's, distinct per seed, increasing in creation order.
        let id = 23_850_000_000_000_000
            + (mix(self.shared.options.seed) % 100_000_000) * 1_000_000
            + inner.audience_seq;
        let now = now_secs();
        inner.audiences.insert(
            id,
            Audience {
                id,
                account: account.to_string(),
                name: name.to_string(),
                description,
                customer_file_source: customer_file_source.to_string(),
                value_based,
                shape: None,
                members: MemberSet::default(),
                sessions: HashMap::new(),
                replace: None,
                finished_replaces: HashSet::new(),
                history: Vec::new(),
                time_created: now,
                time_updated: now,
            },
        );
        Ok(id.to_string())
    }

    /// The account's audiences in creation order, starting after `after` (an audience id).
    pub fn list_audiences(&self, account: &str) -> Vec<AudienceView> {
        let inner = self.lock();
        inner
            .audiences
            .values()
            .filter(|a| a.account == account)
            .map(Audience::view)
            .collect()
    }

    pub fn audience(&self, id: &str) -> Option<AudienceView> {
        let mut inner = self.lock();
        inner.audience_mut(id).map(|a| a.view())
    }

    pub fn delete_audience(&self, id: &str) -> bool {
        let mut inner = self.lock();
        match id.parse::<u64>() {
            Ok(n) => inner.audiences.remove(&n).is_some(),
            Err(_) => false,
        }
    }

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
    fn replace_window(&self) -> Duration {
        self.shared
            .options
            .replace_window_secs
            .map_or(REPLACE_WINDOW, Duration::from_secs)
    }

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

    // ---- events ----

    /// Stores a request's events; returns how many were received (duplicates included, as
    /// Meta's `events_received` counts them: it deduplicates after receiving).
    pub fn push_events(
        &self,
        pixel_id: &str,
        events: Vec<Value>,
        test_event_code: Option<String>,
        partner_agent: Option<String>,
    ) -> usize {
        self.push_events_at(pixel_id, events, test_event_code, partner_agent, now_secs())
    }

    fn push_events_at(
        &self,
        pixel_id: &str,
        events: Vec<Value>,
        test_event_code: Option<String>,
        partner_agent: Option<String>,
        now: i64,
    ) -> usize {
        let n = events.len();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let list = inner.events.entry(pixel_id.to_string()).or_default();
        for event in events {
            let key = dedup_key(pixel_id, &event);
            let duplicate = match key {
                Some(key) => match inner.kept_events.get(&key) {
                    Some(&at) if now - at < DEDUP_WINDOW_SECS => true,
                    _ => {
                        inner.kept_events.insert(key, now);
                        false
                    }
                },
                None => false,
            };
            list.push(ReceivedEvent {
                pixel_id: pixel_id.to_string(),
                event,
                test_event_code: test_event_code.clone(),
                partner_agent: partner_agent.clone(),
                duplicate,
            });
        }
        n
    }

    // ---- inspection ----

    pub fn audiences(&self) -> Vec<AudienceSummary> {
        self.lock()
            .audiences
            .values()
            .map(Audience::summary)
            .collect()
    }

    pub fn audience_summary(&self, id: &str) -> Option<AudienceSummary> {
        self.lock().audience_mut(id).map(|a| a.summary())
    }

    /// Members as `schema key → cell`, sorted for stable output; `None` for an unknown audience.
    pub fn members(
        &self,
        audience_id: &str,
        limit: Option<usize>,
    ) -> Option<Vec<BTreeMap<String, String>>> {
        let raw: Vec<Member> = {
            let mut inner = self.lock();
            let a = inner.audience_mut(audience_id)?;
            a.members.iter().cloned().collect()
        };
        let mut out: Vec<_> = raw.iter().map(|m| decode_member(m)).collect();
        out.sort();
        if let Some(l) = limit {
            out.truncate(l);
        }
        Some(out)
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.iter().cloned().collect()
    }

    pub fn events(&self, pixel_id: Option<&str>) -> Vec<ReceivedEvent> {
        let inner = self.lock();
        match pixel_id {
            Some(p) => inner.events.get(p).cloned().unwrap_or_default(),
            None => inner.events.values().flatten().cloned().collect(),
        }
    }
}

/// `(pixel, event_name, event_id)` of an event that has both as non-empty strings.
fn dedup_key(pixel_id: &str, event: &Value) -> Option<(String, String, String)> {
    let text = |k: &str| {
        event
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Some((pixel_id.to_string(), text("event_name")?, text("event_id")?))
}

/// An 11-character trace id in Meta's alphabet, derived from a 64-bit value.
fn trace_id(mut v: u64) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..11)
        .map(|_| {
            let c = ALPHABET[(v & 63) as usize] as char;
            v = v.rotate_right(6);
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn an_event_resent_with_the_same_name_and_id_within_48_hours_is_a_duplicate() {
        let state = SandboxState::new(SandboxOptions::default());
        let e = |name: &str, id: Option<&str>| match id {
            Some(id) => serde_json::json!({"event_name": name, "event_id": id}),
            None => serde_json::json!({"event_name": name}),
        };
        let t0 = 1_000_000;
        let batch = vec![
            e("Purchase", Some("1")),
            e("Purchase", None),
            e("Lead", Some("1")),
        ];
        assert_eq!(state.push_events_at("7", batch.clone(), None, None, t0), 3);
        assert_eq!(
            state.push_events_at("7", batch.clone(), None, None, t0 + 3600),
            3
        );
        assert_eq!(state.push_events_at("8", batch, None, None, t0 + 3600), 3);
        let flags = |p| {
            state
                .events(Some(p))
                .iter()
                .map(|r| r.duplicate)
                .collect::<Vec<_>>()
        };
        assert_eq!(flags("7"), [false, false, false, true, false, true]);
        assert_eq!(
            flags("8"),
            [false, false, false],
            "another pixel is not a duplicate"
        );
        let late = t0 + DEDUP_WINDOW_SECS;
        state.push_events_at("7", vec![e("Purchase", Some("1"))], None, None, late);
        assert!(
            !state.events(Some("7"))[6].duplicate,
            "after 48 hours it is kept again"
        );
    }

    #[test]
    fn a_wire_fault_is_spent_after_its_times_and_only_on_its_target() {
        use crate::faults::WireFaultKind;
        let mut faults = Faults::default();
        faults.wire.push(WireFault {
            times: 2,
            ..WireFault::new(WireFaultKind::TruncatedJson, WireTarget::Events)
        });
        let state = SandboxState::new(SandboxOptions {
            faults,
            ..SandboxOptions::default()
        });
        assert_eq!(state.take_wire_fault(WireTarget::UsersWrite), None);
        assert_eq!(state.faults().wire[0].times, 2);
        assert!(state.take_wire_fault(WireTarget::Events).is_some());
        assert_eq!(state.faults().wire[0].times, 1);
        assert!(state.take_wire_fault(WireTarget::Events).is_some());
        assert!(state.faults().wire.is_empty());
        assert_eq!(state.take_wire_fault(WireTarget::Events), None);
    }

    #[test]
    fn trace_ids_are_eleven_characters_and_vary() {
        let a = trace_id(mix(1));
        assert_eq!(a.len(), 11);
        assert_ne!(a, trace_id(mix(2)));
    }
}
