//! The long-running worker, in zero2prod's shape: [`Worker::build`] makes everything from the
//! settings (the pool, the Meta client, the HTTP listener on `PORT`, 0 for any free port) and
//! [`Worker::run_until_stopped`] runs its parts until shutdown. `cdp-meta-sync run` is these two
//! calls; tests start a worker in-process the same way.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::configuration::Settings;
use crate::events::EventPump;
use crate::health::Health;
use crate::sync::SyncContext;

/// The worker's parts, built and not yet running: the scheduler (which claims and syncs due
/// systems), the NOTIFY listener that wakes it and the event pump, the event pump itself, and the
/// HTTP server (`/`, `/healthz`, `/metrics`). Each part other than the scheduler is restarted if
/// it stops (see [`supervise`]); `/healthz` says whether all of them run.
pub struct Worker {
    ctx: SyncContext,
    listener: tokio::net::TcpListener,
    port: u16,
}

/// How long the event pump, the listener and the HTTP server get to stop once the syncs have
/// (within `SHUTDOWN_GRACE_SECS`): a send in flight is bounded by Meta's timeout, not by this.
const SHUTDOWN_REST: Duration = Duration::from_secs(3);

impl Worker {
    /// Connects nothing yet (the pool connects on first use) but binds `[::]:PORT`, so a port
    /// taken is an error here, before any sync starts.
    pub async fn build(ctx: SyncContext) -> anyhow::Result<Self> {
        let port = ctx.settings.worker.port;
        let listener = tokio::net::TcpListener::bind(("::", port))
            .await
            .with_context(|| format!("PORT {port}: cannot listen"))?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            ctx,
            listener,
            port,
        })
    }

    /// The port the HTTP server listens on (the one bound when `PORT` is 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until `shutdown`, then lets in-flight syncs finish their batch (within
    /// `SHUTDOWN_GRACE_SECS`) and the other parts stop.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Worker { ctx, listener, .. } = self;
        let settings: &Settings = &ctx.settings;
        let interval = Duration::from_secs(settings.worker.poll_interval_secs);
        let events_interval = Duration::from_secs(settings.worker.events_interval_secs);
        let database = settings.database.clone();
        let health = Arc::new(Health::default());
        let wake = Arc::new(Notify::new());
        let events_wake = Arc::new(Notify::new());

        let app = crate::http::router(ctx.pool.clone(), health.clone(), interval);
        let http = tokio::spawn(crate::http::serve(listener, app, shutdown.clone()));
        let listen = {
            let (health, shutdown, wake, events_wake) = (
                health.clone(),
                shutdown.clone(),
                wake.clone(),
                events_wake.clone(),
            );
            tokio::spawn(supervise(
                "listener",
                |_| {},
                shutdown.clone(),
                move || {
                    crate::db::notify::listen(
                        database.clone(),
                        vec![
                            (crate::scheduler::CONFIG_CHANNEL, wake.clone()),
                            (crate::events::NOTIFY_CHANNEL, events_wake.clone()),
                        ],
                        health.clone(),
                        shutdown.clone(),
                    )
                },
            ))
        };
        let events = {
            let pump = Arc::new(EventPump::new(
                ctx.pool.clone(),
                ctx.meta.clone(),
                ctx.worker_id.clone(),
            ));
            let shutdown = shutdown.clone();
            let up = {
                let health = health.clone();
                move |running: bool| {
                    health
                        .pump
                        .store(running, std::sync::atomic::Ordering::Relaxed)
                }
            };
            tokio::spawn(supervise("event pump", up, shutdown.clone(), move || {
                let (pump, wake, shutdown) = (pump.clone(), events_wake.clone(), shutdown.clone());
                async move {
                    pump.run_until_stopped(events_interval, wake, shutdown)
                        .await
                }
            }))
        };
        crate::scheduler::Scheduler { ctx, health, wake }
            .run_until_stopped(shutdown.clone())
            .await?;
        shutdown.cancel();
        // The syncs had the grace period; the rest stopped with them, or is given a moment more.
        let (events_abort, listen_abort, http_abort) = (
            events.abort_handle(),
            listen.abort_handle(),
            http.abort_handle(),
        );
        let stopped = tokio::time::timeout(SHUTDOWN_REST, async {
            let _ = tokio::join!(events, listen, http);
        })
        .await;
        if stopped.is_err() {
            tracing::warn!(
                "the event pump or the HTTP server did not stop in time; abandoning them"
            );
            for task in [events_abort, listen_abort, http_abort] {
                task.abort();
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs the task `start` makes until `shutdown`, starting it again when it ends or panics, after
/// a backoff (1 s, doubling to 60 s; back to 1 s after a run of a minute). `up` says whether it is
/// running, for `/healthz`.
pub async fn supervise<F, Fut>(
    name: &'static str,
    up: impl Fn(bool),
    shutdown: CancellationToken,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    const FIRST: Duration = Duration::from_secs(1);
    let mut delay = FIRST;
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        up(true);
        let ended = tokio::spawn(start()).await;
        up(false);
        if shutdown.is_cancelled() {
            break;
        }
        match ended {
            Err(e) if e.is_panic() => tracing::error!(task = name, "task panicked; restarting"),
            _ => tracing::error!(task = name, "task stopped; restarting"),
        }
        if started.elapsed() >= Duration::from_secs(60) {
            delay = FIRST;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_started_again_after_a_backoff_and_is_down_meanwhile() {
        let starts = Arc::new(AtomicU32::new(0));
        let states = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let supervisor = {
            let (starts, states, shutdown) = (starts.clone(), states.clone(), shutdown.clone());
            tokio::spawn(supervise(
                "test",
                move |up| states.lock().unwrap().push(up),
                shutdown.clone(),
                move || {
                    let n = starts.fetch_add(1, Ordering::SeqCst);
                    let shutdown = shutdown.clone();
                    async move {
                        if n < 2 {
                            panic!("poison");
                        }
                        shutdown.cancelled().await;
                    }
                },
            ))
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 1, "waits before restarting");
        assert_eq!(*states.lock().unwrap(), vec![true, false]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "restarted after 1 s");
        tokio::time::sleep(Duration::from_millis(1400)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "the second wait is 2 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert_eq!(
            *states.lock().unwrap(),
            vec![true, false, true, false, true]
        );
        shutdown.cancel();
        supervisor.await.unwrap();
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "no restart after shutdown"
        );
    }
}
