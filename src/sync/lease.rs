//! The lease a run holds on its system, as the run sees it.
//!
//! The scheduler claims a system under a lease (see [`crate::db::configurations`]); while the run
//! works, a task renews it every third of its length. Two guards keep a worker that lost the lease
//! from touching the audience or the ledger of the worker that took the system over:
//!
//! * before each call that changes the audience, [`Lease::ensure`] asks whether the last renewal is
//!   recent enough; when it is not (the worker was paused, or the database was out of reach), it
//!   renews on the spot and refuses when the lease is someone else's. During the call (and its
//!   retries), [`Lease::guard`] drops it once the last renewal grows too old, and the run's
//!   [`Lease::fence`] holds back the last byte of a body still on its way (a worker paused in
//!   the middle of an upload would otherwise finish sending it when it wakes);
//! * every ledger write calls `cdp.hold_lease` (`sql/0006_lease_fence.sql`) in its own statement
//!   or transaction: the database refuses the write once another worker owns the row.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::Pool;
use crate::db::configurations::renew_lease;
use crate::meta::WriteFence;

/// SQLSTATE `cdp.hold_lease` raises when the lease is someone else's.
pub const LEASE_LOST_SQLSTATE: &str = "CDPL1";

/// The run's lease on one configuration row: what lets several workers share one database
/// without two of them syncing one system at once. It exists for the length of one run (the
/// system's own audience and its definitions'), renewed by [`Lease::keep`] beside the work, and
/// asked by every step that changes something at Meta or in the ledger whether it still holds.
/// Once lost it stays lost: the run stops at its next step and ends `failed`.
pub struct Lease {
    pool: Pool,
    configuration_id: i32,
    worker_id: String,
    length: Duration,
    /// When the last renewal that succeeded was sent (a conservative start of its term); shared
    /// with the run's [`WriteFence`].
    renewed_at: Arc<Mutex<Instant>>,
    /// Cancelled once the lease is known to be lost.
    lost: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lease lost: another worker holds it, or it could not be renewed in time")]
pub struct LeaseLost;

impl Lease {
    /// A lease claimed just now (the claim itself was its first term).
    pub fn claimed(pool: Pool, configuration_id: i32, worker_id: String, length: Duration) -> Self {
        Lease {
            pool,
            configuration_id,
            worker_id,
            length,
            renewed_at: Arc::new(Mutex::new(Instant::now())),
            lost: CancellationToken::new(),
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    pub fn configuration_id(&self) -> i32 {
        self.configuration_id
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Cancelled when the lease is found lost.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Ok when the lease is certainly still ours: renewed within two thirds of its length, or
    /// renewed now. Called before every call that changes the audience.
    pub async fn ensure(&self) -> Result<(), LeaseLost> {
        if self.is_lost() {
            return Err(LeaseLost);
        }
        if fresh(self.renewed_at(), Instant::now(), self.length) {
            return Ok(());
        }
        match self.renew().await {
            Renewal::Renewed => Ok(()),
            Renewal::Lost => Err(LeaseLost),
            // Unknown: the database is out of reach. Sending anyway could race a new owner.
            Renewal::Failed(e) => {
                tracing::warn!(error = %e, "the lease could not be renewed; not sending");
                Err(LeaseLost)
            }
        }
    }

    /// Runs `call` (a call to Meta that changes the audience, retries included) unless the lease
    /// goes stale or is lost first: then the call is dropped where it stands, so a worker that
    /// wakes from a pause does not send the retry it was waiting to send.
    pub async fn guard<T>(
        &self,
        call: impl std::future::Future<Output = T>,
    ) -> Result<T, LeaseLost> {
        tokio::select! {
            // First: on waking from a pause every timer is due at once, the retry's too.
            biased;
            _ = self.lost.cancelled() => Err(LeaseLost),
            _ = self.stale() => Err(LeaseLost),
            out = call => Ok(out),
        }
    }

    /// The fence of the run's writes to Meta: open while the lease is certainly ours (not lost,
    /// renewed within two thirds of its length). A body already on its way when the worker was
    /// paused does not go out whole after it wakes with the lease gone (see [`crate::meta::Fenced`]).
    pub fn fence(&self) -> WriteFence {
        let renewed_at = self.renewed_at.clone();
        let lost = self.lost.clone();
        let length = self.length;
        WriteFence::new(move || {
            let renewed_at = *renewed_at.lock().expect("lease clock");
            !lost.is_cancelled() && fresh(renewed_at, Instant::now(), length)
        })
    }

    /// Resolves once the last renewal is older than two thirds of the lease.
    async fn stale(&self) {
        loop {
            let renewed_at = self.renewed_at();
            tokio::time::sleep_until(renewed_at + self.length * 2 / 3).await;
            if !fresh(self.renewed_at(), Instant::now(), self.length) {
                return;
            }
        }
    }

    /// Renews the lease once.
    pub async fn renew(&self) -> Renewal {
        let sent = Instant::now();
        let client = match tokio::time::timeout(self.length / 6, self.pool.get()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Renewal::Failed(format!("no database connection: {e}")),
            Err(_) => return Renewal::Failed("no database connection free".into()),
        };
        let secs = self.length.as_secs() as i64;
        match renew_lease(&**client, self.configuration_id, &self.worker_id, secs).await {
            Ok(true) => {
                *self.renewed_at.lock().expect("lease clock") = sent;
                Renewal::Renewed
            }
            Ok(false) => {
                self.lost.cancel();
                Renewal::Lost
            }
            Err(e) => Renewal::Failed(crate::db::error_text(&e)),
        }
    }

    /// Renews every third of the lease until `stop` fires, or the lease is lost (then cancels
    /// `run`). A renewal that fails is logged and tried again at the next turn; [`Lease::ensure`]
    /// stops the run from sending once the last renewal is too old.
    pub async fn keep(&self, stop: &CancellationToken, run: &CancellationToken) {
        let mut tick = tokio::time::interval((self.length / 3).max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            match self.renew().await {
                Renewal::Renewed => {}
                Renewal::Lost => {
                    run.cancel();
                    return;
                }
                Renewal::Failed(e) => tracing::warn!(error = %e, "lease renewal failed; retrying"),
            }
        }
    }

    fn renewed_at(&self) -> Instant {
        *self.renewed_at.lock().expect("lease clock")
    }
}

/// What one renewal found.
#[derive(Debug)]
pub enum Renewal {
    Renewed,
    /// Another worker holds the row (or nobody: it was released).
    Lost,
    /// The database did not answer; the lease may or may not still be ours.
    Failed(String),
}

/// Whether a lease renewed at `renewed_at` is certainly still live at `now`: within two thirds of
/// its length, leaving a third for the call about to be made.
fn fresh(renewed_at: Instant, now: Instant, length: Duration) -> bool {
    now.saturating_duration_since(renewed_at) < length * 2 / 3
}

/// Whether a database error is `cdp.hold_lease` refusing a write.
pub fn is_lease_lost(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code())
            .is_some_and(|code| code.code() == LEASE_LOST_SQLSTATE)
            || cause.downcast_ref::<LeaseLost>().is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_renewed_within_two_thirds_of_its_length_is_fresh_and_one_older_is_not() {
        let start = Instant::now();
        let length = Duration::from_secs(300);
        assert!(fresh(start, start, length));
        assert!(fresh(start, start + Duration::from_secs(199), length));
        assert!(!fresh(start, start + Duration::from_secs(200), length));
        // A worker paused for ten minutes wakes up with a stale lease.
        assert!(!fresh(start, start + Duration::from_secs(600), length));
    }

    fn lease(length: Duration) -> Lease {
        // Never connects: these tests renew nothing.
        let config: tokio_postgres::Config = "postgres://nobody@127.0.0.1:1/none".parse().unwrap();
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        let pool = deadpool_postgres::Pool::builder(manager).build().unwrap();
        Lease::claimed(pool, 1, "worker-a".into(), length)
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_still_running_when_the_lease_grows_stale_is_dropped() {
        let lease = lease(Duration::from_secs(30));
        let slow = async {
            tokio::time::sleep(Duration::from_secs(25)).await;
            "sent"
        };
        assert_eq!(lease.guard(slow).await, Err(LeaseLost));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_due_the_moment_the_lease_goes_stale_is_not_sent() {
        // As after SIGSTOP/SIGCONT: the retry's timer and the lease's come due together.
        let lease = lease(Duration::from_secs(30));
        let retry = async {
            tokio::time::sleep(Duration::from_secs(20)).await;
            "retry sent"
        };
        assert_eq!(lease.guard(retry).await, Err(LeaseLost));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_ends_while_the_lease_is_fresh_goes_through() {
        let lease = lease(Duration::from_secs(30));
        let quick = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "sent"
        };
        assert_eq!(lease.guard(quick).await, Ok("sent"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_write_fence_closes_when_the_lease_grows_stale_or_is_lost() {
        let lease = lease(Duration::from_secs(30));
        let fence = lease.fence();
        assert!(fence_is_open(&fence));
        tokio::time::advance(Duration::from_secs(21)).await;
        assert!(!fence_is_open(&fence), "stale: renewed 21 s ago of 30");
        let lease = self::lease(Duration::from_secs(30));
        let fence = lease.fence();
        lease.lost.cancel();
        assert!(!fence_is_open(&fence), "lost");
    }

    /// Whether a body fenced by `fence` would send its piece now.
    fn fence_is_open(fence: &WriteFence) -> bool {
        use http_body::Body;
        let mut body =
            crate::meta::FencedBody::new(bytes::Bytes::from_static(b"{}"), fence.clone());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        matches!(
            std::pin::Pin::new(&mut body).poll_frame(&mut cx),
            std::task::Poll::Ready(Some(Ok(_)))
        )
    }

    #[test]
    fn a_lease_lost_error_is_recognised_through_its_context() {
        let e = anyhow::Error::new(LeaseLost).context("Failed to record an accepted batch");
        assert!(is_lease_lost(&e));
        assert!(!is_lease_lost(&anyhow::anyhow!("something else")));
    }
}
