//! Audience health: after each run that reached Meta, the audience is read back and kept on the
//! run row; a status Meta reports as a problem makes the system `partial` with Meta's words.
use cdp_meta_sync::sync::Outcome;
use meta_sandbox::{AudienceStatus, FaultCode, Faults};

use crate::app::TestApp;

const SYSTEM: &str = "kangoo_system";

/// What a run row holds of the read-back.
#[derive(Debug, PartialEq)]
struct Health {
    operation: Option<i32>,
    operation_message: Option<String>,
    delivery: Option<i32>,
    lower: Option<i64>,
    upper: Option<i64>,
    checked: bool,
}

/// Kangoo's runs' read-backs, oldest first.
async fn run_health(w: &TestApp) -> Vec<Health> {
    w.client()
        .await
        .query(
            "SELECT audience_operation_status, audience_operation_message, audience_delivery_status,
                    approximate_count_lower, approximate_count_upper, audience_checked_at IS NOT NULL
               FROM cdp.facebook_sync_runs WHERE system_name = $1 ORDER BY id",
            &[&SYSTEM],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Health {
            operation: r.get(0),
            operation_message: r.get(1),
            delivery: r.get(2),
            lower: r.get(3),
            upper: r.get(4),
            checked: r.get(5),
        })
        .collect()
}

async fn sync_status(w: &TestApp) -> String {
    w.client()
        .await
        .query_one(
            "SELECT sync_status FROM cdp.facebook_configurations WHERE system_name = $1",
            &[&SYSTEM],
        )
        .await
        .unwrap()
        .get(0)
}

async fn assert_audience_equals_expected(w: &TestApp) {
    let audience = w.audience_id(SYSTEM).await;
    assert_eq!(
        w.sandbox_members(&audience),
        w.expected_members(SYSTEM).await
    );
}

fn read_calls(w: &TestApp) -> Vec<meta_sandbox::RequestRecord> {
    w.sandbox
        .requests()
        .into_iter()
        .filter(|r| r.operation == "read_audience")
        .collect()
}

#[tokio::test]
async fn after_a_sync_the_run_holds_the_audience_as_meta_reports_it() {
    let w = TestApp::builder().customers(2_000).build().await;
    w.only_kangoo().await;
    let reports = w.sync_due().await;
    assert_eq!(reports[0].outcome, Outcome::Success, "{reports:?}");
    assert_eq!(read_calls(&w).len(), 1, "one read-back per run");

    let audience = w.audience_id(SYSTEM).await;
    let account: String = w
        .client()
        .await
        .query_one(
            "SELECT ad_account_id::text FROM cdp.facebook_configurations WHERE system_name = $1",
            &[&SYSTEM],
        )
        .await
        .unwrap()
        .get(0);
    let meta = w.ctx.meta.get_audience(&account, &audience).await.unwrap();
    let health = run_health(&w).await;
    assert_eq!(health.len(), 1);
    let h = &health[0];
    assert!(h.checked, "{h:?}");
    assert_eq!(h.operation, Some(200));
    assert_eq!(h.operation_message.as_deref(), Some("Normal"));
    assert_eq!(
        h.delivery,
        meta.delivery_status.as_ref().map(|s| s.code as i32)
    );
    assert_eq!(h.lower, meta.approximate_count_lower_bound);
    assert_eq!(h.upper, meta.approximate_count_upper_bound);
    // Meta's range brackets what the worker put there.
    let members = w.ledger_size(SYSTEM).await as i64;
    assert!(
        h.lower.unwrap() <= members && members <= h.upper.unwrap(),
        "{h:?} {members}"
    );
}

#[tokio::test]
async fn a_small_audience_that_meta_calls_too_small_to_deliver_is_still_a_success() {
    let w = TestApp::builder().customers(300).build().await;
    w.only_kangoo().await;
    let reports = w.sync_due().await;
    assert_eq!(reports[0].outcome, Outcome::Success, "{reports:?}");
    let h = &run_health(&w).await[0];
    assert_eq!((h.operation, h.delivery), (Some(200), Some(300)), "{h:?}");
    assert_eq!(sync_status(&w).await, "success");
    assert_eq!(w.error_log(SYSTEM).await, None);
}

#[tokio::test]
async fn a_flagged_audience_makes_the_system_partial_with_metas_message_and_a_clean_run_recovers() {
    let w = TestApp::builder().customers(2_000).build().await;
    w.only_kangoo().await;
    w.sandbox.set_faults(Faults {
        audience_operation_status: Some(AudienceStatus::new(471)),
        ..Faults::default()
    });
    let reports = w.sync_due().await;
    assert_eq!(reports[0].outcome, Outcome::Partial, "{reports:?}");
    // The sync itself went through: Meta holds every member.
    assert_audience_equals_expected(&w).await;

    let audience = w.audience_id(SYSTEM).await;
    assert_eq!(sync_status(&w).await, "partial");
    let error = w.error_log(SYSTEM).await.expect("an error_log");
    assert!(
        error.starts_with(&format!(
            "Meta reports audience {audience}: 471 The custom audience or lookalike is blocked"
        )),
        "{error}"
    );
    let run_error: Option<String> = w
        .client()
        .await
        .query_one(
            "SELECT error FROM cdp.facebook_sync_runs WHERE system_name = $1 ORDER BY id DESC LIMIT 1",
            &[&SYSTEM],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(run_error.as_deref(), Some(error.as_str()));
    assert_eq!(run_health(&w).await[0].operation, Some(471));

    // Meta lifts the flag: the next run is clean again.
    w.sandbox.set_faults(Faults::default());
    w.make_due().await;
    let reports = w.sync_due().await;
    assert_eq!(reports[0].outcome, Outcome::Success, "{reports:?}");
    assert_eq!(sync_status(&w).await, "success");
    assert_eq!(w.error_log(SYSTEM).await, None);
    let health = run_health(&w).await;
    assert_eq!(
        health.iter().map(|h| h.operation).collect::<Vec<_>>(),
        vec![Some(471), Some(200)],
        "each run keeps its own read-back"
    );
}

#[tokio::test]
async fn an_undeliverable_audience_is_partial_too() {
    let w = TestApp::builder().customers(2_000).build().await;
    w.only_kangoo().await;
    w.sandbox.set_faults(Faults {
        audience_delivery_status: Some(AudienceStatus {
            code: 400,
            description: "This audience is unavailable.".into(),
        }),
        ..Faults::default()
    });
    let reports = w.sync_due().await;
    assert_eq!(reports[0].outcome, Outcome::Partial, "{reports:?}");
    let error = w.error_log(SYSTEM).await.unwrap();
    assert!(
        error.ends_with(": delivery 400 This audience is unavailable."),
        "{error}"
    );
}

#[tokio::test]
async fn a_read_back_that_fails_leaves_the_run_a_success_with_no_health() {
    let w = TestApp::builder().customers(2_000).build().await;
    w.only_kangoo().await;
    w.sandbox.set_faults(Faults {
        audience_read_error: Some(FaultCode::new(100)),
        ..Faults::default()
    });
    let reports = w.sync_due().await;
    assert_eq!(reports[0].outcome, Outcome::Success, "{reports:?}");
    assert_eq!(sync_status(&w).await, "success");
    assert_eq!(w.error_log(SYSTEM).await, None);
    assert_eq!(
        run_health(&w).await,
        vec![Health {
            operation: None,
            operation_message: None,
            delivery: None,
            lower: None,
            upper: None,
            checked: false,
        }]
    );
    // The read was tried, and Meta refused it.
    let reads = read_calls(&w);
    assert!(!reads.is_empty());
    assert!(reads.iter().all(|r| r.error_code == Some(100)), "{reads:?}");
    assert_audience_equals_expected(&w).await;
}
