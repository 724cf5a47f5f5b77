//! In-memory state: audiences with their members and sessions, received events, the request
//! log, and the fault RNG. Everything sits behind one mutex; callers parse and validate outside
//! it and only apply here, so the lock is held for microseconds per call (a HashSet insert per row).
mod audiences;
mod events;
mod history;
mod log;
mod sessions;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::SandboxOptions;
use super::error::GraphError;
use super::faults::{FaultCode, Faults, UsageFault, WireFault, WireTarget};
use audiences::Audience;
pub use audiences::{AudienceSummary, AudienceView, MAX_AUDIENCES_PER_ACCOUNT};
pub use events::ReceivedEvent;
pub use history::SessionLog;
pub use log::RequestRecord;
pub use sessions::{Direction, SessionParams, UsersReply};

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
