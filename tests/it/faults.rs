//! Crashes between Meta's "accepted" and the ledger's commit: for a streamed first sync, an add, a
//! remove and the last batch of a replace, the run's database connection is killed
//! (`pg_terminate_backend`) or the worker process is (SIGKILL) while the commit of a batch Meta
//! has accepted waits. The next run must leave the ledger equal to the audience, with no system
//! stuck `running` and no duplicate-key failure.
//!
//! The crash lands exactly there: the sandbox holds the chosen write (`stall_after_writes`), the
//! test takes a SHARE lock on the ledger table, then lets the write through; Meta accepts it and
//! the ledger write queues behind the lock, where the test finds it in `pg_locks`.
use std::time::Duration;

use crate::app::TestApp;
use crate::process::{eventually, expire_lease, spawn, status_of, worker};
use cdp_meta_sync::sync::Outcome;
use meta_sandbox::Faults;

pub const SYSTEM: &str = "kangoo_system";

/// The ledger, the sandbox's audience and the source agree.
pub async fn assert_ledger_is_the_audience(w: &TestApp, what: &str) {
    let audience = w.sandbox_members(&w.audience_id(SYSTEM).await);
    assert_eq!(
        w.ledger_rows(SYSTEM).await,
        audience,
        "{what}: ledger vs audience"
    );
    assert_eq!(
        audience,
        w.expected_members(SYSTEM).await,
        "{what}: audience vs source"
    );
}

/// User-write calls the sandbox accepted so far.
fn accepted_writes(w: &TestApp) -> usize {
    w.sandbox
        .requests()
        .iter()
        .filter(|r| {
            r.status == 200
                && matches!(
                    r.operation.as_str(),
                    "add_users" | "remove_users" | "replace_users"
                )
        })
        .count()
}

/// The backend waiting for a lock on the ledger table, if any.
async fn blocked_ledger_writer(w: &TestApp) -> Option<i32> {
    w.client()
        .await
        .query_opt(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE NOT l.granted
                AND l.relation IN (SELECT oid FROM pg_class WHERE relname LIKE 'facebook\\_audience\\_members%')
                AND a.datname = current_database()
              LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A batch sent while extracting, on a first sync.
    Streamed,
    /// A batch of additions after the diff.
    Add,
    /// A batch of removals.
    Remove,
    /// The last batch of a replace, whose commit rewrites the whole ledger.
    LastReplace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// `pg_terminate_backend` on the connection writing the ledger.
    Connection,
    /// SIGKILL to the worker process.
    Process,
}

/// Sets the world up so the next run's first writes are of `phase`; returns how many writes of
/// that run go through before the one to crash at.
async fn prepare(w: &TestApp, phase: Phase) -> u64 {
    w.only_kangoo().await;
    let client = w.client().await;
    match phase {
        Phase::Streamed => 0,
        Phase::LastReplace => {
            client
                .batch_execute(
                    "UPDATE cdp.facebook_configurations SET sync_mode = 'replace' WHERE system_name = 'kangoo_system'",
                )
                .await
                .unwrap();
            let members = w.expected_members(SYSTEM).await.len() as u64;
            members.div_ceil(250) - 1
        }
        Phase::Add | Phase::Remove => {
            assert!(
                w.sync_due()
                    .await
                    .iter()
                    .all(|r| r.outcome == Outcome::Success)
            );
            let change = if phase == Phase::Add {
                "UPDATE cdp_rfm_analysis SET rfm_segment = 'Champions'
                  WHERE rfm_segment IN ('Lost', 'Hibernating')"
            } else {
                "UPDATE cdp.facebook_configurations SET max_removal_share = 1;
                 UPDATE cdp_rfm_analysis SET rfm_segment = 'Lost'
                  WHERE customer_id IN (SELECT id FROM customers_master ORDER BY id LIMIT 1500)"
            };
            client.batch_execute(change).await.unwrap();
            w.make_due().await;
            0
        }
    }
}

async fn crash_after_accepted(phase: Phase, crash: Crash) {
    let w = TestApp::builder().customers(3_000).build().await;
    let pass = prepare(&w, phase).await;
    w.sandbox.set_faults(Faults {
        stall_after_writes: Some(pass),
        ..Faults::default()
    });
    let mut locker = cdp_meta_sync::db::connect_single(w.database_settings())
        .await
        .unwrap();
    let (run, mut process) = match crash {
        Crash::Connection => {
            let ctx = w.ctx.clone();
            let run = tokio::spawn(async move {
                cdp_meta_sync::scheduler::run_due(
                    &ctx,
                    cdp_meta_sync::sync::Trigger::Once,
                    &tokio_util::sync::CancellationToken::new(),
                )
                .await
                .unwrap()
            });
            (Some(run), None)
        }
        Crash::Process => (
            None,
            Some(spawn(&mut worker(&w, &["sync", "--system", SYSTEM]))),
        ),
    };
    // The chosen write is held by the sandbox: queue the ledger behind a lock, then let it go.
    let held = eventually(Duration::from_secs(60), || async {
        w.sandbox.stalled_calls() > 0
    })
    .await;
    assert!(held, "{phase:?}: the sandbox never held a write");
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE cdp.facebook_audience_members IN SHARE MODE")
        .await
        .unwrap();
    // A first sync's batches go to the audience's load, outside the ledger until it is attached.
    lock.batch_execute(
        "DO $$DECLARE t regclass; BEGIN
           FOR t IN SELECT cdp.ledger_loading(id, 0) FROM cdp.facebook_configurations LOOP
             IF t IS NOT NULL THEN EXECUTE format('LOCK TABLE %s IN SHARE MODE', t); END IF;
           END LOOP;
         END$$",
    )
    .await
    .unwrap();
    let accepted_before = accepted_writes(&w);
    w.sandbox.set_faults(Faults::default());
    let queued = eventually(Duration::from_secs(30), || async {
        blocked_ledger_writer(&w).await.is_some()
    })
    .await;
    assert!(queued, "{phase:?}: no ledger write queued behind the lock");
    let writer = blocked_ledger_writer(&w).await;
    assert!(
        accepted_writes(&w) > accepted_before,
        "{phase:?}: Meta accepted the batch before its ledger write"
    );
    match crash {
        Crash::Connection => {
            lock.execute("SELECT pg_terminate_backend($1)", &[&writer.unwrap()])
                .await
                .unwrap();
        }
        Crash::Process => {
            let child = process.as_mut().unwrap();
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
    lock.rollback().await.unwrap();

    match run {
        Some(run) => {
            let reports = tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .expect("the run ends after its connection is killed")
                .unwrap();
            assert!(
                matches!(reports[0].outcome, Outcome::Failed(_)),
                "{phase:?}: {:?}",
                reports[0].outcome
            );
            // Written on a fresh connection: failed, counted, the lease released.
            assert_eq!(
                status_of(&w, SYSTEM).await,
                (Some("failed".to_string()), None),
                "{phase:?}: the system is not left running"
            );
        }
        None => expire_lease(&w, SYSTEM).await,
    }
    w.make_due().await;
    let next = w.sync_due().await;
    assert_eq!(next.len(), 1, "{phase:?}: the system is claimed again");
    assert_eq!(
        next[0].outcome,
        Outcome::Success,
        "{phase:?}/{crash:?}: the next run succeeds (no duplicate key)"
    );
    assert_eq!(
        status_of(&w, SYSTEM).await,
        (Some("success".to_string()), None)
    );
    assert_ledger_is_the_audience(&w, &format!("{phase:?}/{crash:?}")).await;
}

#[tokio::test]
async fn a_connection_killed_after_meta_accepted_a_streamed_batch_leaves_the_ledger_true() {
    crash_after_accepted(Phase::Streamed, Crash::Connection).await;
}

#[tokio::test]
async fn a_process_killed_after_meta_accepted_a_streamed_batch_leaves_the_ledger_true() {
    crash_after_accepted(Phase::Streamed, Crash::Process).await;
}

#[tokio::test]
async fn a_connection_killed_after_meta_accepted_an_add_batch_leaves_the_ledger_true() {
    crash_after_accepted(Phase::Add, Crash::Connection).await;
}

#[tokio::test]
async fn a_process_killed_after_meta_accepted_an_add_batch_leaves_the_ledger_true() {
    crash_after_accepted(Phase::Add, Crash::Process).await;
}

#[tokio::test]
async fn a_connection_killed_after_meta_accepted_a_remove_batch_leaves_the_ledger_true() {
    crash_after_accepted(Phase::Remove, Crash::Connection).await;
}

#[tokio::test]
async fn a_process_killed_after_meta_accepted_a_remove_batch_leaves_the_ledger_true() {
    crash_after_accepted(Phase::Remove, Crash::Process).await;
}

#[tokio::test]
async fn a_connection_killed_after_meta_accepted_the_last_replace_batch_leaves_the_ledger_true() {
    crash_after_accepted(Phase::LastReplace, Crash::Connection).await;
}

#[tokio::test]
async fn a_process_killed_after_meta_accepted_the_last_replace_batch_leaves_the_ledger_true() {
    crash_after_accepted(Phase::LastReplace, Crash::Process).await;
}

#[tokio::test]
async fn a_70_kb_multibyte_external_id_is_a_counted_skip_and_the_rest_of_its_batch_syncs() {
    let w = TestApp::builder().customers(1_500).build().await;
    w.only_kangoo().await;
    let client = w.client().await;
    client
        .batch_execute(
            "UPDATE cdp.facebook_configurations
                SET match_keys = ARRAY['EMAIL', 'PHONE', 'FN', 'LN', 'EXTERN_ID']
              WHERE system_name = 'kangoo_system';
             UPDATE customers_master SET external_id = 'crm-' || id;
             UPDATE customers_master SET external_id = repeat('é', 35000)
              WHERE id IN (SELECT c.id FROM customers_master c
                             JOIN cdp_rfm_analysis r ON r.customer_id = c.id
                            WHERE r.rfm_segment NOT IN ('Lost', 'Hibernating')
                              AND c.tenant_id IN (SELECT unnest(tenant_ids) FROM cdp.facebook_configurations
                                                   WHERE system_name = 'kangoo_system')
                              AND c.email IS NOT NULL
                            ORDER BY c.id LIMIT 1)",
        )
        .await
        .unwrap();
    let reports = w.sync_due().await;
    assert_eq!(reports[0].outcome, Outcome::Success);
    let skipped: serde_json::Value = client
        .query_one(
            "SELECT skipped_invalid FROM cdp.facebook_sync_runs WHERE system_name = $1",
            &[&SYSTEM],
        )
        .await
        .unwrap()
        .get(0);
    assert!(skipped["EXTERN_ID"].as_i64() >= Some(1), "{skipped}");
    let audience = w.sandbox_members(&w.audience_id(SYSTEM).await);
    assert_eq!(w.ledger_rows(SYSTEM).await, audience);
    assert!(audience.len() > 100);
    assert!(
        audience
            .iter()
            .all(|m| m.get("EXTERN_ID").is_none_or(|id| id.starts_with("crm-")))
    );
    // The poisoned customer is there on its other keys.
    assert_eq!(
        audience
            .iter()
            .filter(|m| !m.contains_key("EXTERN_ID"))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_second_configuration_on_an_audience_already_synced_is_invalid_and_the_first_keeps_its_members()
 {
    let w = TestApp::builder().customers(1_500).build().await;
    w.only_kangoo().await;
    assert_eq!(w.sync_due().await[0].outcome, Outcome::Success);
    let audience = w.audience_id(SYSTEM).await;
    let members = w.sandbox_members(&audience);
    w.client()
        .await
        .execute(
            "INSERT INTO cdp.facebook_configurations
                    (system_name, ad_account_id, tenant_ids, is_active, custom_audience_id)
             SELECT 'kangoo_copy', ad_account_id, ARRAY[999], true, custom_audience_id
               FROM cdp.facebook_configurations WHERE system_name = 'kangoo_system'",
            &[],
        )
        .await
        .unwrap();
    w.make_due().await;
    let reports = w.sync_due().await;
    let outcome = |name: &str| {
        reports
            .iter()
            .find(|r| r.system_name == name)
            .map(|r| r.outcome.clone())
            .unwrap()
    };
    match outcome("kangoo_copy") {
        Outcome::InvalidConfig(why) => assert!(why.contains("'kangoo_system'"), "{why}"),
        other => panic!("kangoo_copy: {other:?}"),
    }
    assert_eq!(outcome(SYSTEM), Outcome::Success);
    assert_eq!(w.sandbox_members(&audience), members);
}

/// Every wire fault on a stateful call of a sync: the audience create, and the first batch of a
/// replace. The call's answer is lost (dropped, cut off, too slow) or a proxy answers 502.
#[tokio::test]
async fn a_lost_or_garbled_answer_to_audience_create_or_replace_batch_1_leaves_one_audience_equal_to_the_source()
 {
    use meta_sandbox::{WireFault, WireFaultKind, WireTarget};
    for on in [WireTarget::AudienceCreate, WireTarget::ReplaceFirstBatch] {
        for kind in [
            WireFaultKind::DropAfterSuccess,
            WireFaultKind::BadGatewayHtml,
            WireFaultKind::TruncatedJson,
            WireFaultKind::SlowBody,
        ] {
            let what = format!("{kind:?} on {on:?}");
            let mut w = TestApp::builder().customers(1_500).build().await;
            w.only_kangoo().await;
            if on == WireTarget::ReplaceFirstBatch {
                w.client()
                    .await
                    .batch_execute("UPDATE cdp.facebook_configurations SET sync_mode = 'replace'")
                    .await
                    .unwrap();
            }
            // A slow body outlasts the request timeout.
            w.ctx = w.context_with("worker-a", &[("META_REQUEST_TIMEOUT_SECS", "2")]);
            w.sandbox.set_faults(Faults {
                wire: vec![WireFault {
                    slow_ms: 6_000,
                    ..WireFault::new(kind, on)
                }],
                ..Faults::default()
            });
            let reports = w.sync_due().await;
            assert_eq!(reports[0].outcome, Outcome::Success, "{what}");
            let named: Vec<_> = w
                .sandbox
                .audiences()
                .into_iter()
                .filter(|a| a.name.to_lowercase().contains("kangoo"))
                .collect();
            assert_eq!(named.len(), 1, "{what}: one audience, not {named:?}");
            assert_eq!(named[0].id, w.audience_id(SYSTEM).await, "{what}");
            assert_ledger_is_the_audience(&w, &what).await;
            // Bounded: each batch at most twice (the faulted one is sent again once).
            let writes = w
                .sandbox
                .requests()
                .iter()
                .filter(|r| r.operation.ends_with("_users"))
                .count();
            let batches = w.expected_members(SYSTEM).await.len().div_ceil(250);
            assert!(
                writes <= batches + 2,
                "{what}: {writes} writes for {batches} batches"
            );
        }
    }
}

#[tokio::test]
async fn the_ledger_fence_refuses_a_worker_that_no_longer_owns_the_lease() {
    let db = TestApp::builder().build().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO cdp.facebook_configurations (id, system_name, ad_account_id, tenant_ids, lease_owner, lease_expires_at)
             VALUES (7, 'fenced', 'act_1', '{1}', 'worker-b', now() + interval '5 minutes')",
        )
        .await
        .unwrap();
    let held: bool = client
        .query_one("SELECT cdp.hold_lease(7, 'worker-b')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(held, "the owner may write");
    let refused = client
        .query_one("SELECT cdp.hold_lease(7, 'worker-a')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        refused.code().map(|c| c.code()),
        Some(cdp_meta_sync::sync::lease::LEASE_LOST_SQLSTATE)
    );
    // An owner whose lease ran out but was never taken over is still the only writer.
    client
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET lease_expires_at = now() - interval '1 minute'",
        )
        .await
        .unwrap();
    assert!(
        client
            .query_one("SELECT cdp.hold_lease(7, 'worker-b')", &[])
            .await
            .is_ok()
    );
}
