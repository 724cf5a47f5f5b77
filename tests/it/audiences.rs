//! Audience definitions (`cdp.facebook_audiences`): more audiences per system, each a selection
//! of its customers by RFM segment, optionally value-based, each with its own Meta audience,
//! ledger rows, removal guard and status columns, synced in the system's run.
use cdp_meta_sync::demo::Schema;
use cdp_meta_sync::sync::Outcome;

use crate::app::TestApp;

const SYSTEM: &str = "kangoo_system";
const WIN_BACK: &str = "r.rfm_segment IN ('At Risk', 'Can''t Lose Them')";
const BEST: &str = "r.rfm_segment IN ('Champions', 'Loyal Customers')";

/// Adds a definition to kangoo (one SQL INSERT, as an operator writes it); returns its id.
async fn define(w: &TestApp, columns: &str, values: &str) -> i32 {
    w.client()
        .await
        .query_one(
            &format!(
                "INSERT INTO cdp.facebook_audiences (configuration_id, {columns})
                 SELECT id, {values} FROM cdp.facebook_configurations WHERE system_name = '{SYSTEM}'
                 RETURNING id"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn win_back(w: &TestApp) -> i32 {
    define(
        w,
        "name, included_segments",
        "'Win-back', ARRAY['At Risk', 'Can''t Lose Them']",
    )
    .await
}

async fn best_by_value(w: &TestApp) -> i32 {
    define(
        w,
        "name, included_segments, value_based",
        "'Best customers by value', ARRAY['Champions', 'Loyal Customers'], true",
    )
    .await
}

async fn sync_kangoo(w: &TestApp) -> Outcome {
    w.make_due().await;
    let reports = w.sync_due().await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports[0].outcome.clone()
}

/// `(sync_status, total_customers, custom_audience_id, error_log)` of a definition.
async fn definition_row(
    w: &TestApp,
    id: i32,
) -> (Option<String>, i32, Option<String>, Option<String>) {
    let r = w
        .client()
        .await
        .query_one(
            "SELECT sync_status, total_customers, custom_audience_id, error_log
                   FROM cdp.facebook_audiences WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

async fn system_status(w: &TestApp) -> Option<String> {
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

#[tokio::test]
async fn a_system_syncs_its_own_audience_and_each_definition_into_an_audience_of_its_own() {
    let w = TestApp::builder().customers(3_000).build().await;
    w.only_kangoo().await;
    let win_back = win_back(&w).await;
    let best = best_by_value(&w).await;

    assert_eq!(sync_kangoo(&w).await, Outcome::Success);

    let own = w.audience_id(SYSTEM).await;
    let (status, members, win_back_audience, error) = definition_row(&w, win_back).await;
    let win_back_audience = win_back_audience.expect("the win-back audience id is stored");
    assert_eq!((status.as_deref(), error), (Some("success"), None));
    let expected = w.expected_selection(SYSTEM, WIN_BACK, false).await;
    assert!(expected.len() > 50, "{}", expected.len());
    assert_eq!(members as usize, expected.len());
    assert_eq!(w.sandbox_members(&win_back_audience), expected);
    assert_eq!(w.ledger_rows_of(SYSTEM, win_back).await, expected);

    let (status, _, best_audience, _) = definition_row(&w, best).await;
    let best_audience = best_audience.expect("the value-based audience id is stored");
    assert_eq!(status.as_deref(), Some("success"));
    let expected = w.expected_selection(SYSTEM, BEST, true).await;
    assert!(
        expected.iter().all(|m| m.contains_key("LOOKALIKE_VALUE")),
        "every member carries its value"
    );
    assert_eq!(w.sandbox_members(&best_audience), expected);
    assert_eq!(w.ledger_rows_of(SYSTEM, best).await, expected);
    let view = w.sandbox.state().audience(&best_audience).unwrap();
    assert!(view.value_based, "created with is_value_based");
    assert!(
        !w.sandbox
            .state()
            .audience(&win_back_audience)
            .unwrap()
            .value_based
    );

    // The system's own audience is what it always was.
    assert_eq!(w.sandbox_members(&own), w.expected_members(SYSTEM).await);
    assert_eq!(
        w.ledger_rows(SYSTEM).await,
        w.expected_members(SYSTEM).await
    );
    let mut audiences = vec![own, win_back_audience.clone(), best_audience];
    audiences.sort();
    audiences.dedup();
    assert_eq!(audiences.len(), 3, "three audiences at Meta");
    let runs: Vec<(i32, Option<String>, String)> = w
        .client()
        .await
        .query(
            "SELECT definition_id, audience_name, outcome FROM cdp.facebook_sync_runs ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        runs,
        vec![
            (0, None, "success".to_string()),
            (
                win_back,
                Some("Win-back".to_string()),
                "success".to_string()
            ),
            (
                best,
                Some("Best customers by value".to_string()),
                "success".to_string()
            ),
        ]
    );

    // The status page and `status --json` have a line per audience.
    let lines: Vec<(String, Option<String>, i32)> =
        cdp_meta_sync::db::status::status_rows(&**w.client().await)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.system_name == SYSTEM)
            .map(|r| {
                (
                    cdp_meta_sync::status::label(r),
                    r.sync_status.clone(),
                    r.total_customers,
                )
            })
            .collect();
    assert_eq!(
        lines.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
        [
            "kangoo_system",
            "kangoo_system / Best customers by value (value-based)",
            "kangoo_system / Win-back",
        ]
    );
    assert!(
        lines
            .iter()
            .all(|l| l.1.as_deref() == Some("success") && l.2 > 0),
        "{lines:?}"
    );

    // A second run finds everything in place: no audience is created again, nothing is sent.
    let created = w.sandbox.state().audiences().len();
    assert_eq!(sync_kangoo(&w).await, Outcome::Success);
    assert_eq!(w.sandbox.state().audiences().len(), created);
    assert_eq!(
        w.sandbox_members(&win_back_audience),
        w.expected_selection(SYSTEM, WIN_BACK, false).await
    );

    // Deleting a definition deletes its ledger rows, and only its.
    w.client()
        .await
        .execute(
            "DELETE FROM cdp.facebook_audiences WHERE id = $1",
            &[&win_back],
        )
        .await
        .unwrap();
    assert!(w.ledger_rows_of(SYSTEM, win_back).await.is_empty());
    assert!(!w.ledger_rows_of(SYSTEM, best).await.is_empty());
    assert!(!w.ledger_rows(SYSTEM).await.is_empty());
}

#[tokio::test]
async fn each_definition_has_its_own_removal_guard_and_force_removals() {
    let w = TestApp::builder().customers(3_000).build().await;
    w.only_kangoo().await;
    let win_back = win_back(&w).await;
    w.client()
        .await
        .execute(
            "UPDATE cdp.facebook_audiences SET max_removal_share = 0.05 WHERE id = $1",
            &[&win_back],
        )
        .await
        .unwrap();
    assert_eq!(sync_kangoo(&w).await, Outcome::Success);
    let (_, before, audience, _) = definition_row(&w, win_back).await;
    let audience = audience.unwrap();

    // Half the win-back customers come back as Champions: they leave the win-back audience
    // (more than its guard lets through) and stay in the system's own.
    w.client()
        .await
        .batch_execute(
            "UPDATE cdp_rfm_analysis SET rfm_segment = 'Champions'
              WHERE rfm_segment IN ('At Risk', 'Can''t Lose Them') AND customer_id % 2 = 0",
        )
        .await
        .unwrap();
    assert_eq!(sync_kangoo(&w).await, Outcome::Partial);
    let (status, held_members, _, error) = definition_row(&w, win_back).await;
    assert_eq!(status.as_deref(), Some("partial"));
    assert_eq!(held_members, before, "no member removed while held");
    let error = error.expect("the definition says why");
    assert!(error.contains("held"), "{error}");
    let system_error = w.error_log(SYSTEM).await.expect("the system names it");
    assert!(
        system_error.contains("audience 'Win-back' partial"),
        "{system_error}"
    );
    assert_eq!(system_status(&w).await.as_deref(), Some("partial"));
    assert_eq!(
        w.sandbox_members(&w.audience_id(SYSTEM).await),
        w.expected_members(SYSTEM).await,
        "the system's own audience synced past the definition's guard"
    );

    w.client()
        .await
        .execute(
            "UPDATE cdp.facebook_audiences SET force_removals = true WHERE id = $1",
            &[&win_back],
        )
        .await
        .unwrap();
    assert_eq!(sync_kangoo(&w).await, Outcome::Success);
    let expected = w.expected_selection(SYSTEM, WIN_BACK, false).await;
    assert_eq!(w.sandbox_members(&audience), expected);
    let (status, members, _, error) = definition_row(&w, win_back).await;
    assert_eq!((status.as_deref(), error), (Some("success"), None));
    assert_eq!(members as usize, expected.len());
    let force: bool = w
        .client()
        .await
        .query_one(
            "SELECT force_removals FROM cdp.facebook_audiences WHERE id = $1",
            &[&win_back],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!force, "reset by the run that used it");
    assert_eq!(system_status(&w).await.as_deref(), Some("success"));
}

#[tokio::test]
async fn on_the_original_schema_a_broken_definition_is_invalid_config_alone_and_the_others_sync() {
    let w = TestApp::builder()
        .customers(2_000)
        .schema(Schema::Original)
        .build()
        .await;
    w.only_kangoo().await;
    let nobody = define(&w, "name, included_segments", "'Nobody', '{}'::text[]").await;
    let win_back = win_back(&w).await;
    let value = best_by_value(&w).await;
    // A CDP without CLV cannot fill a value-based audience.
    w.client()
        .await
        .batch_execute("DROP TABLE cdp_clv_analysis")
        .await
        .unwrap();

    assert_eq!(sync_kangoo(&w).await, Outcome::Partial);

    let (status, _, audience, error) = definition_row(&w, nobody).await;
    assert_eq!(status.as_deref(), Some("invalid_config"));
    assert_eq!(audience, None, "no audience made for a broken definition");
    assert!(error.unwrap().contains("selects nobody"));
    let (status, _, _, error) = definition_row(&w, value).await;
    assert_eq!(status.as_deref(), Some("invalid_config"));
    let error = error.unwrap();
    assert!(error.contains("cdp_clv_analysis.clv"), "{error}");

    let (status, _, audience, _) = definition_row(&w, win_back).await;
    assert_eq!(status.as_deref(), Some("success"));
    assert_eq!(
        w.sandbox_members(&audience.unwrap()),
        w.expected_selection(SYSTEM, WIN_BACK, false).await
    );
    assert_eq!(
        w.sandbox_members(&w.audience_id(SYSTEM).await),
        w.expected_members(SYSTEM).await
    );
    let system_error = w.error_log(SYSTEM).await.unwrap();
    assert!(
        system_error.contains("audience 'Nobody' invalid_config"),
        "{system_error}"
    );
    assert!(
        system_error.contains("audience 'Best customers by value' invalid_config"),
        "{system_error}"
    );
}

#[tokio::test]
async fn a_definition_may_not_take_an_audience_another_one_already_holds() {
    let w = TestApp::builder().customers(1_000).build().await;
    w.only_kangoo().await;
    assert_eq!(sync_kangoo(&w).await, Outcome::Success);
    let own = w.audience_id(SYSTEM).await;
    let thief = define(&w, "name, custom_audience_id", &format!("'Thief', '{own}'")).await;

    assert_eq!(sync_kangoo(&w).await, Outcome::Partial);
    let (status, _, _, error) = definition_row(&w, thief).await;
    assert_eq!(status.as_deref(), Some("invalid_config"));
    assert!(error.unwrap().contains("kangoo_system"));
    assert!(w.ledger_rows_of(SYSTEM, thief).await.is_empty());
    assert_eq!(
        w.sandbox_members(&own),
        w.expected_members(SYSTEM).await,
        "the system's audience is left as it is"
    );
}
