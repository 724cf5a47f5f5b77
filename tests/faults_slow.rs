//! Faults that take over a minute to stage, in a binary of their own (CI runs it with the rest):
//! a worker paused past its lease while another takes the system over, and a shutdown in the
//! middle of staging a million customers.
#[allow(dead_code)]
#[path = "it/app.rs"]
mod app;
#[allow(dead_code)]
#[path = "it/members.rs"]
mod members;
#[allow(dead_code)]
#[path = "it/process.rs"]
mod process;

use std::time::Duration;

use cdp_meta_sync::demo::Schema;
use cdp_meta_sync::sync::Outcome;
use meta_sandbox::Faults;

use app::TestApp;
use process::{eventually, free_port, spawn, status_of, worker};

const SYSTEM: &str = "kangoo_system";

/// User-write calls the sandbox has answered, and the ledger.
async fn writes_and_ledger(w: &TestApp) -> (usize, std::collections::BTreeSet<members::Row>) {
    let writes = w
        .sandbox
        .requests()
        .iter()
        .filter(|r| {
            matches!(
                r.operation.as_str(),
                "add_users" | "remove_users" | "replace_users"
            )
        })
        .count();
    (writes, w.ledger_rows(SYSTEM).await)
}

fn signal(pid: u32, name: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}

// Two threads: the sandbox runs in this test's runtime and must go on reading while the test
// blocks in `kill`, as Meta would; a frozen sandbox leaves A's upload half-written in A's buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_sends_and_writes_nothing_once_another_took_the_system_over()
{
    let w = TestApp::builder().customers(3_000).build().await;
    w.only_kangoo().await;
    // Worker A uploads a batch, then every call fails as transient: A is waiting to retry when
    // it is paused, with the retry due by the time it wakes.
    let mut a = worker(&w, &["sync", "--system", SYSTEM]);
    a.env("LEASE_SECS", "30")
        .env("WORKER_ID", "worker-a")
        .env("META_RETRY_MAX_ATTEMPTS", "1000")
        .env("META_RETRY_MAX_DELAY_SECS", "2");
    w.sandbox.set_faults(Faults {
        stall_after_writes: Some(1),
        ..Faults::default()
    });
    let mut a = spawn(&mut a);
    let started = eventually(Duration::from_secs(60), || async {
        w.sandbox.stalled_calls() == 1
    })
    .await;
    assert!(started, "worker A uploaded a batch and sent the next");
    w.sandbox.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let retrying = eventually(Duration::from_secs(30), || async {
        w.sandbox.requests().iter().filter(|r| r.injected).count() >= 2
    })
    .await;
    assert!(retrying, "worker A is retrying");
    signal(a.id(), "STOP");
    w.sandbox.set_faults(Faults::default());

    // A's lease runs out; B claims the system and syncs it to the end.
    let b = w.context("worker-b");
    let expired = eventually(Duration::from_secs(45), || async {
        status_of(&w, SYSTEM).await.1.is_none()
            || w
                .client()
                .await
                .query_one(
                    "SELECT lease_expires_at < now() FROM cdp.facebook_configurations WHERE system_name = $1",
                    &[&SYSTEM],
                )
                .await
                .unwrap()
                .get::<_, Option<bool>>(0)
                .unwrap_or(true)
    })
    .await;
    assert!(expired, "A's lease ran out");
    let reports = cdp_meta_sync::scheduler::run_due(
        &b,
        cdp_meta_sync::sync::Trigger::Once,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(reports.len(), 1, "B claimed the system");
    assert_eq!(reports[0].outcome, Outcome::Success);
    let after_b = writes_and_ledger(&w).await;

    // A wakes up: it must notice, and touch neither Meta nor the ledger.
    signal(a.id(), "CONT");
    let exited = eventually(Duration::from_secs(30), || {
        let exited = a.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    assert!(exited, "A stops after waking");
    let out = a.output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lease lost"), "{stderr}");
    assert_eq!(
        writes_and_ledger(&w).await,
        after_b,
        "A made no upload and no ledger write after waking"
    );
    let audience = w.sandbox_members(&w.audience_id(SYSTEM).await);
    assert_eq!(audience, w.expected_members(SYSTEM).await);
    assert_eq!(w.ledger_rows(SYSTEM).await, audience);
}

#[tokio::test]
async fn sigterm_while_staging_a_million_customers_exits_0_within_30_s_and_releases_the_lease() {
    sigterm_while_staging("mirror").await;
}

/// A replace streams nothing while it extracts: only cancelling the staging itself stops it.
#[tokio::test]
async fn sigterm_while_staging_a_million_customer_replace_exits_0_within_30_s_and_releases_the_lease()
 {
    sigterm_while_staging("replace").await;
}

async fn sigterm_while_staging(sync_mode: &str) {
    let w = TestApp::builder()
        .customers(0)
        .schema(Schema::Original)
        .build()
        .await;
    w.only_kangoo().await;
    w.client()
        .await
        .execute(
            "UPDATE cdp.facebook_configurations SET sync_mode = $1",
            &[&sync_mode],
        )
        .await
        .unwrap();
    w.client()
        .await
        .batch_execute(
            "INSERT INTO customers_master (id, tenant_id, email, phone, firstname, lastname)
             SELECT i, (SELECT tenant_ids[1] FROM cdp.facebook_configurations WHERE system_name = 'kangoo_system'),
                    'person' || i || '@example.com', '+3461' || lpad(i::text, 7, '0'), 'Ana', 'Ruiz'
               FROM generate_series(1, 1000000) i;
             INSERT INTO cdp_rfm_analysis (customer_id, rfm_segment)
             SELECT i, 'Champions' FROM generate_series(1, 1000000) i;
             ANALYZE customers_master; ANALYZE cdp_rfm_analysis;",
        )
        .await
        .unwrap();
    let port = free_port();
    // The log goes to a file: a pipe nobody reads while the worker runs fills up and blocks it.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = worker(&w, &["run"]);
    child
        .env("PORT", port.to_string())
        .env("UPLOAD_BATCH_ROWS", "10000")
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap());
    let mut child = spawn(&mut child);
    let staging = eventually(Duration::from_secs(120), || async {
        w.client()
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND state = 'active' AND query LIKE 'COPY sync_stage%'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    assert!(staging, "the first sync is staging");
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(child.id(), "TERM");
    let sent = tokio::time::Instant::now();
    let exited = eventually(Duration::from_secs(30), || {
        let exited = child.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    let waited = sent.elapsed();
    eprintln!("{sync_mode}: the worker exited {waited:?} after SIGTERM");
    if !exited {
        child.kill().unwrap();
    }
    let out = child.output();
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(exited, "the worker exits within 30 s of SIGTERM: {logged}");
    assert!(
        out.status.success(),
        "exit status {:?} after {waited:?}: {logged}",
        out.status
    );
    assert!(logged.contains("shutdown signal received"), "{logged}");
    assert_eq!(
        status_of(&w, SYSTEM).await,
        (Some("interrupted".to_string()), None),
        "interrupted, lease released"
    );
    let run: (String, Option<chrono::DateTime<chrono::Utc>>) = {
        let row = w
            .client()
            .await
            .query_one(
                "SELECT outcome, finished_at FROM cdp.facebook_sync_runs WHERE system_name = $1",
                &[&SYSTEM],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(run.0, "interrupted");
    assert!(run.1.is_some(), "the run row is closed");
    let busy: i64 = w
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM cdp.facebook_configurations WHERE lease_owner IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(busy, 0, "no lease is left held");
}
