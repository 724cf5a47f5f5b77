//! Consent: customers a system's rule suppresses (an opt-out column, a suppression table) are
//! never uploaded and leave the audiences they are in, in every mode, counted per run.
use std::collections::BTreeSet;

use cdp_meta_sync::sync::Outcome;

use crate::app::TestApp;
use crate::members::Row;

const SYSTEM: &str = "kangoo_system";

/// The expected audience without the members of `suppressed`.
async fn expected_without(w: &TestApp, suppressed: &[(i64, String)]) -> BTreeSet<Row> {
    let emails: BTreeSet<&String> = suppressed.iter().map(|(_, e)| e).collect();
    w.expected_members(SYSTEM)
        .await
        .into_iter()
        .filter(|m| !m.get("EMAIL").is_some_and(|e| emails.contains(e)))
        .collect()
}

/// A suppression table and an opt-out column in the CDP, named by kangoo's row.
async fn add_consent_rule(w: &TestApp) {
    w.client()
        .await
        .batch_execute(
            "CREATE TABLE cdp.suppressed_customers (customer_id BIGINT PRIMARY KEY);
             ALTER TABLE customers_master ADD COLUMN marketing_opt_out BOOLEAN;
             UPDATE cdp.facebook_configurations
                SET opt_out_column = 'marketing_opt_out',
                    suppression_table = 'cdp.suppressed_customers'
              WHERE system_name = 'kangoo_system';",
        )
        .await
        .unwrap();
}

/// Half of `who` by the table, half by the column.
async fn suppress(w: &TestApp, who: &[(i64, String)]) {
    let ids: Vec<i64> = who.iter().map(|(id, _)| *id).collect();
    let (by_table, by_column) = ids.split_at(ids.len() / 2);
    let client = w.client().await;
    client
        .execute(
            "INSERT INTO cdp.suppressed_customers SELECT unnest($1::bigint[])",
            &[&by_table],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE customers_master SET marketing_opt_out = true WHERE id = ANY($1)",
            &[&by_column],
        )
        .await
        .unwrap();
}

/// `(suppressed, consent_removals, removed, removals_held)` of the system's latest run.
async fn last_run(w: &TestApp) -> (i64, i64, i64, i64) {
    let row = w
        .client()
        .await
        .query_one(
            "SELECT suppressed, consent_removals, removed, removals_held
                   FROM cdp.facebook_sync_runs WHERE system_name = $1 ORDER BY id DESC LIMIT 1",
            &[&SYSTEM],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

async fn sync_kangoo(w: &TestApp) -> Outcome {
    w.make_due().await;
    let reports = w.sync_due().await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports[0].outcome.clone()
}

#[tokio::test]
async fn customers_who_opt_out_leave_a_mirrored_audience_even_past_the_removal_guard() {
    let w = TestApp::builder().customers(2_000).build().await;
    w.only_kangoo().await;
    add_consent_rule(&w).await;
    assert_eq!(sync_kangoo(&w).await, Outcome::Success);
    let audience = w.audience_id(SYSTEM).await;
    assert_eq!(
        w.sandbox_members(&audience),
        w.expected_members(SYSTEM).await
    );
    let who = w.lone_members(SYSTEM, 10).await;
    // Ten removals of about a thousand members are more than this guard lets through.
    w.client()
        .await
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET max_removal_share = 0.001
              WHERE system_name = 'kangoo_system'",
        )
        .await
        .unwrap();
    suppress(&w, &who).await;

    assert_eq!(sync_kangoo(&w).await, Outcome::Success);

    let expected = expected_without(&w, &who).await;
    assert_eq!(w.sandbox_members(&audience), expected);
    assert_eq!(w.ledger_rows(SYSTEM).await, expected);
    assert_eq!(last_run(&w).await, (10, 10, 10, 0));
    assert_eq!(w.error_log(SYSTEM).await, None);
}

#[tokio::test]
async fn in_append_mode_suppressed_customers_are_never_uploaded_and_later_opt_outs_are_removed() {
    let w = TestApp::builder().customers(2_000).build().await;
    w.only_kangoo().await;
    add_consent_rule(&w).await;
    w.client()
        .await
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET sync_mode = 'append'
              WHERE system_name = 'kangoo_system'",
        )
        .await
        .unwrap();
    let who = w.lone_members(SYSTEM, 8).await;
    let (before, later) = who.split_at(4);
    suppress(&w, before).await;

    assert_eq!(sync_kangoo(&w).await, Outcome::Success);
    let audience = w.audience_id(SYSTEM).await;
    assert_eq!(
        w.sandbox_members(&audience),
        expected_without(&w, before).await
    );
    // Nothing was removed, and an append audience only grows: the four were never sent.
    assert_eq!(last_run(&w).await, (4, 0, 0, 0));

    suppress(&w, later).await;
    assert_eq!(sync_kangoo(&w).await, Outcome::Success);

    let expected = expected_without(&w, &who).await;
    assert_eq!(w.sandbox_members(&audience), expected);
    assert_eq!(w.ledger_rows(SYSTEM).await, expected);
    assert_eq!(last_run(&w).await, (8, 4, 4, 0));
}

#[tokio::test]
async fn a_consent_rule_naming_what_the_cdp_lacks_makes_only_that_system_invalid() {
    let w = TestApp::builder().customers(600).build().await;
    w.client()
        .await
        .batch_execute(
            "UPDATE cdp.facebook_configurations
                SET opt_out_column = 'no_such_column', suppression_table = 'cdp.no_such_table'
              WHERE system_name = 'kangoo_system'",
        )
        .await
        .unwrap();

    let reports = w.sync_due().await;

    let kangoo = reports.iter().find(|r| r.system_name == SYSTEM).unwrap();
    let Outcome::InvalidConfig(why) = &kangoo.outcome else {
        panic!("{reports:?}")
    };
    assert!(why.contains("opt_out_column no_such_column"), "{why}");
    assert!(why.contains("suppression_table cdp.no_such_table"), "{why}");
    let others: Vec<_> = reports.iter().filter(|r| r.system_name != SYSTEM).collect();
    assert_eq!(others.len(), 2);
    assert!(
        others.iter().all(|r| r.outcome == Outcome::Success),
        "{others:?}"
    );
    // A name that is not an identifier never reaches SQL: the table refuses it.
    let refused = w
        .client()
        .await
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET suppression_table = 'x; DROP TABLE y'
              WHERE system_name = 'kangoo_system'",
        )
        .await;
    assert!(refused.is_err());
}
