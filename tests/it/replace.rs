//! Replace mode under faults: a replace killed mid-session goes on in Meta's open session, and the
//! removal guard weighs what a replace would drop.
use cdp_meta_sync::sync::Outcome;

use crate::app::TestApp;
use crate::process::sync_killed_after_batches;

const SYSTEM: &str = "kangoo_system";

async fn only_kangoo_in_replace_mode(w: &TestApp) {
    w.client()
        .await
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET sync_mode = 'replace' WHERE system_name = 'kangoo_system';
             UPDATE cdp.facebook_configurations SET is_active = false WHERE system_name <> 'kangoo_system';",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_replace_killed_mid_session_goes_on_in_metas_open_session_and_ends_with_the_whole_set() {
    let w = TestApp::builder().customers(3_000).build().await;
    only_kangoo_in_replace_mode(&w).await;
    // Batch 1 of the replace is accepted, then the sandbox stops answering: the worker is killed.
    let reached = sync_killed_after_batches(&w, SYSTEM, 1).await;
    assert!(reached, "one replace batch was accepted before the kill");
    let first_session = w
        .sandbox
        .requests()
        .iter()
        .find(|r| r.operation == "replace_users" && r.status == 200)
        .and_then(|r| r.session_id.clone())
        .expect("a replace session was started");

    let before = w.sandbox.requests().len();
    let reports = w.sync_due().await;
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Success),
        "{reports:?}"
    );

    let expected = w.expected_members(SYSTEM).await;
    assert_eq!(w.sandbox_members(&w.audience_id(SYSTEM).await), expected);
    assert_eq!(w.ledger_size(SYSTEM).await, expected.len());
    // (The stalled call of the killed worker is answered, and logged, once faults change: it
    // never reached the session.)
    let resumed: Vec<_> = w.sandbox.requests()[before..]
        .iter()
        .filter(|r| r.operation == "replace_users" && r.session_id.is_some())
        .cloned()
        .collect();
    assert!(!resumed.is_empty());
    assert!(
        resumed
            .iter()
            .all(|r| r.status == 200 && r.session_id.as_deref() == Some(first_session.as_str())),
        "the same session, never refused as busy: {resumed:?}"
    );
    assert!(
        resumed.iter().all(|r| r.batch_seq != Some(1)),
        "{resumed:?}"
    );
    assert_eq!(resumed.last().and_then(|r| r.last_batch_flag), Some(true));
}

#[tokio::test]
async fn the_removal_guard_holds_a_replace_that_would_drop_too_much_of_the_audience() {
    let w = TestApp::builder().customers(3_000).build().await;
    only_kangoo_in_replace_mode(&w).await;
    assert!(
        w.sync_due()
            .await
            .iter()
            .all(|r| r.outcome == Outcome::Success)
    );
    let audience = w.audience_id(SYSTEM).await;
    let before = w.sandbox_members(&audience);
    // A broken source: most of kangoo's customers fall into an excluded segment.
    w.client()
        .await
        .batch_execute(
            "UPDATE cdp_rfm_analysis SET rfm_segment = 'Lost'
              WHERE customer_id IN (SELECT id FROM customers_master WHERE tenant_id IN (20, 25) AND id % 10 < 6);
             INSERT INTO customers_master (id, tenant_id, email) VALUES (990001, 20, 'newcomer@example.com');
             INSERT INTO cdp_rfm_analysis (customer_id, rfm_segment) VALUES (990001, 'Champions');",
        )
        .await
        .unwrap();
    w.make_due().await;
    let requests_before = w.sandbox.requests().len();

    let reports = w.sync_due().await;

    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Partial),
        "{reports:?}"
    );
    let error = w.error_log(SYSTEM).await.unwrap();
    assert!(error.starts_with("removals held"), "{error}");
    assert!(
        w.sandbox.requests()[requests_before..]
            .iter()
            .all(|r| r.operation != "replace_users"),
        "no replace was sent"
    );
    let after = w.sandbox_members(&audience);
    assert!(after.is_superset(&before), "nobody was dropped");
    assert_eq!(after.len(), before.len() + 1, "the newcomer was added");
    assert_eq!(w.ledger_size(SYSTEM).await, after.len());
}
