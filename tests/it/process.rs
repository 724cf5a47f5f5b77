//! Worker processes for tests: spawned with the test world's settings, killed when the test
//! ends, and waited for off the test's runtime.
use std::process::{Command, Stdio};
use std::time::Duration;

use meta_sandbox::Faults;

use crate::app::TestApp;

/// Polls `check` every 100 ms until it holds or `limit` passes (a bound, not a speed test).
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A spawned worker that is killed when the test ends, even when an assertion fails first.
pub struct Worker(Option<std::process::Child>);

impl Worker {
    /// Waits for the exit and collects what it printed.
    pub fn output(mut self) -> std::process::Output {
        let child = self.0.take().expect("a running worker");
        child.wait_with_output().unwrap()
    }
}

impl std::ops::Deref for Worker {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("a running worker")
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.as_mut().expect("a running worker")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Crashes a `sync --system` run after `batches` accepted batches: the sandbox stops answering
/// writes after them, the worker process is killed (SIGKILL) once they are recorded, then faults
/// are cleared and the dead worker's lease is let run out, so the next run can take over.
/// Returns whether the batches were recorded before the kill.
pub async fn sync_killed_after_batches(w: &TestApp, system: &str, batches: u64) -> bool {
    w.sandbox.set_faults(Faults {
        stall_after_writes: Some(batches),
        ..Faults::default()
    });
    let mut child = spawn(&mut worker(w, &["sync", "--system", system]));
    let reached = eventually(Duration::from_secs(60), || async {
        finished_batches(w, system).await == batches as i64
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    w.sandbox.set_faults(Faults::default());
    expire_lease(w, system).await;
    reached
}

/// A killed worker writes nothing: its lease runs out (here, at once).
pub async fn expire_lease(w: &TestApp, system: &str) {
    w.client()
        .await
        .execute(
            "UPDATE cdp.facebook_configurations SET lease_expires_at = now() - interval '1 second'
              WHERE system_name = $1",
            &[&system],
        )
        .await
        .unwrap();
}

/// A TCP port free right now, for a worker's HTTP server.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Batches the system's latest run has recorded as accepted.
pub async fn finished_batches(w: &TestApp, system: &str) -> i64 {
    w.client()
        .await
        .query_one(
            "SELECT coalesce(max(batches), 0) FROM cdp.facebook_sync_runs WHERE system_name = $1",
            &[&system],
        )
        .await
        .unwrap()
        .get(0)
}

/// Runs the worker to its end off the test's runtime, which serves the sandbox meanwhile.
pub async fn finished(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

pub fn spawn(command: &mut Command) -> Worker {
    Worker(Some(command.spawn().unwrap()))
}

pub fn worker(w: &TestApp, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cdp-meta-sync"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", w.url())
        .env("LOG_FORMAT", "json")
        .envs(w.worker_env())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

pub async fn status_of(w: &TestApp, system: &str) -> (Option<String>, Option<String>) {
    let row = w
        .client()
        .await
        .query_one(
            "SELECT sync_status, lease_owner FROM cdp.facebook_configurations WHERE system_name = $1",
            &[&system],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}
