//! Liveness of the worker's long-running parts, read by `/healthz`.
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// Liveness of the worker's long-running parts, read by `/healthz`: the scheduler loop, the
/// NOTIFY listener and the event pump. A part that died is restarted (see [`supervise`]);
/// `/healthz` is 503 until it is back.
#[derive(Debug, Default)]
pub struct Health {
    /// Unix seconds of the loop's last turn.
    last_beat: AtomicI64,
    /// Set once the loop has started; `/healthz` is 503 before.
    started: AtomicBool,
    /// The LISTEN connection is up.
    pub listener: AtomicBool,
    /// The event pump's loop is running.
    pub pump: AtomicBool,
}

impl Health {
    /// Whether the listener and the event pump are both running.
    pub fn parts_alive(&self) -> bool {
        self.listener.load(Ordering::Relaxed) && self.pump.load(Ordering::Relaxed)
    }

    pub fn beat(&self) {
        self.started.store(true, Ordering::Relaxed);
        self.last_beat
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    }

    /// True when the loop turned within three intervals.
    pub fn loop_alive(&self, interval: Duration) -> bool {
        let age = chrono::Utc::now().timestamp() - self.last_beat.load(Ordering::Relaxed);
        self.started.load(Ordering::Relaxed) && age <= 3 * interval.as_secs() as i64 + 5
    }
}
