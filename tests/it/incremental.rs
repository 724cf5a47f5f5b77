//! Incremental runs: customers whose ledger member was built from the same raw values are not
//! normalized again, and only what changed reaches Meta.
use cdp_meta_sync::identity::MatchKey;
use cdp_meta_sync::sync::Outcome;
use cdp_meta_sync::sync::source::Catalog;

use crate::app::TestApp;

/// `(extracted, eligible, unchanged, refreshed, added, removed, skipped_no_key, skipped_invalid)`
/// of a system's latest run.
async fn last_run(w: &TestApp, system: &str) -> (i64, i64, i64, i64, i64, i64, i64, String) {
    let row = w
        .client()
        .await
        .query_one(
            "SELECT extracted, eligible, unchanged, refreshed, added, removed, skipped_no_key,
                    skipped_invalid::text
               FROM cdp.facebook_sync_runs WHERE system_name = $1 ORDER BY id DESC LIMIT 1",
            &[&system],
        )
        .await
        .unwrap();
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
        row.get(7),
    )
}

fn users_calls(w: &TestApp) -> usize {
    w.sandbox
        .requests()
        .iter()
        .filter(|r| r.operation.ends_with("_users"))
        .count()
}

async fn sync_all_succeed(w: &TestApp) {
    let reports = w.sync_due().await;
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Success),
        "{reports:?}"
    );
}

/// Makes every system due, syncs them all, and returns `system`'s run.
async fn sync_again(w: &TestApp, system: &str) -> (i64, i64, i64, i64, i64, i64, i64, String) {
    w.make_due().await;
    sync_all_succeed(w).await;
    last_run(w, system).await
}

#[tokio::test]
async fn a_second_run_without_changes_settles_every_member_by_digest_and_calls_meta_for_nothing() {
    let w = TestApp::builder().customers(2_000).build().await;
    sync_all_succeed(&w).await;
    let first = last_run(&w, "kangoo_system").await;
    let calls = users_calls(&w);

    let second = sync_again(&w, "kangoo_system").await;
    assert_eq!(users_calls(&w), calls, "no users call without a change");
    assert_eq!(second.0, first.0, "extracted");
    assert_eq!(second.1, first.1, "eligible");
    assert_eq!(second.2, first.1, "every member was settled by its digest");
    assert_eq!((second.3, second.4, second.5), (0, 0, 0));
    assert_eq!(
        (second.6, &second.7),
        (first.6, &first.7),
        "skip counts stay whole for rows that were not normalized again"
    );
    w.assert_audiences_equal_expected().await;
}

/// After a first sync, `stale` (SQL) makes the ledger's sources out of date. The next run must
/// rebuild every member of `system` with no call to Meta (the cells did not change), and the run
/// after it settle them all by digest.
async fn every_member_is_rebuilt_once_without_a_call_to_meta(stale: &str, system: &str) {
    let w = TestApp::builder().customers(1_500).build().await;
    sync_all_succeed(&w).await;
    let calls = users_calls(&w);
    w.client().await.batch_execute(stale).await.unwrap();
    let run = sync_again(&w, system).await;
    assert_eq!(users_calls(&w), calls, "the cells did not change");
    assert_eq!(
        (run.2, run.3, run.4, run.5),
        (0, run.1, 0, 0),
        "every member refreshed"
    );

    let run = sync_again(&w, system).await;
    assert_eq!((run.2, run.3), (run.1, 0), "then settled by digest");
    w.assert_audiences_equal_expected().await;
}

#[tokio::test]
async fn ledger_rows_without_a_source_get_one_without_a_call_to_meta() {
    // Rows as written before the ledger had sources.
    every_member_is_rebuilt_once_without_a_call_to_meta(
        "UPDATE cdp.facebook_audience_members
            SET source_tenant_id = NULL, source_customer_id = NULL, source_digest = NULL, filled = NULL",
        "digitalfarma_system",
    )
    .await;
}

#[tokio::test]
async fn digests_of_an_earlier_version_rebuild_every_member_once_without_a_call_to_meta() {
    // Digests as another digest version (or other settings) computed them.
    every_member_is_rebuilt_once_without_a_call_to_meta(
        "UPDATE cdp.facebook_audience_members SET source_digest = source_digest # 1",
        "kangoo_system",
    )
    .await;
}

#[tokio::test]
async fn a_fuller_twin_in_another_tenant_takes_over_the_member_and_a_sparser_one_does_not() {
    let w = TestApp::builder().customers(1_500).build().await;
    let client = w.client().await;
    // Two kangoo customers with an email and no phone, so a twin can be fuller.
    let picks = client
        .query(
            "SELECT c.id, c.email FROM customers_master c JOIN cdp_rfm_analysis r ON r.customer_id = c.id
              WHERE c.tenant_id = 20 AND c.email LIKE '%_@_%.%' AND c.phone IS NULL
                AND c.firstname IS NOT NULL AND r.rfm_segment = 'Champions'
              ORDER BY c.id LIMIT 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(picks.len(), 2);
    sync_all_succeed(&w).await;
    let calls = users_calls(&w);

    let fuller: &str = picks[0].get(1);
    let sparser: &str = picks[1].get(1);
    client
        .execute(
            "INSERT INTO customers_master (id, tenant_id, email, phone, firstname, lastname)
             VALUES (990001, 25, $1, '+54 9 11 4444-0001', 'Twin', 'Fuller'),
                    (990002, 25, $2, NULL, NULL, NULL)",
            &[&fuller, &sparser],
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO cdp_rfm_analysis (customer_id, rfm_segment) VALUES (990001, 'Champions'), (990002, 'Champions')",
        )
        .await
        .unwrap();
    let run = sync_again(&w, "kangoo_system").await;
    assert_eq!(
        (run.4, run.5),
        (1, 1),
        "the fuller twin's row replaced the old one"
    );
    assert!(users_calls(&w) > calls);
    w.assert_audiences_equal_expected().await;
}

#[tokio::test]
async fn replace_mode_uploads_the_whole_set_each_run_and_the_ledger_matches_it() {
    let w = TestApp::builder().customers(1_500).build().await;
    let client = w.client().await;
    client
        .batch_execute("UPDATE cdp.facebook_configurations SET sync_mode = 'replace'")
        .await
        .unwrap();
    sync_all_succeed(&w).await;
    w.assert_audiences_equal_expected().await;

    client
        .batch_execute(
            "UPDATE cdp_rfm_analysis SET rfm_segment = 'Lost'
              WHERE customer_id IN (SELECT id FROM customers_master WHERE tenant_id = 28 ORDER BY id LIMIT 15);
             UPDATE customers_master SET email = 'moved.' || id || '@example.org'
              WHERE id IN (SELECT id FROM customers_master WHERE tenant_id = 28 ORDER BY id DESC LIMIT 10);",
        )
        .await
        .unwrap();
    w.make_due().await;
    sync_all_succeed(&w).await;
    w.assert_audiences_equal_expected().await;
    assert!(
        w.sandbox
            .requests()
            .iter()
            .all(|r| r.operation != "add_users" && r.operation != "remove_users"),
        "replace mode only replaces"
    );
    let expected = w.expected_members("digitalfarma_system").await;
    let run = last_run(&w, "digitalfarma_system").await;
    assert_eq!(run.4 as usize, expected.len(), "the whole set was sent");
    let (ledger, sourced): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT count(*), count(source_digest) FROM cdp.facebook_audience_members m
                   JOIN cdp.facebook_configurations c ON c.id = m.configuration_id
                  WHERE c.system_name = 'digitalfarma_system'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (ledger as usize, sourced as usize),
        (expected.len(), expected.len())
    );
}

#[tokio::test]
async fn a_new_audience_id_empties_the_ledger_and_the_whole_set_goes_to_the_new_audience() {
    let w = TestApp::builder().customers(1_500).build().await;
    sync_all_succeed(&w).await;
    let old = w.audience_id("septimo_system").await;
    let client = w.client().await;
    client
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET custom_audience_id = NULL, audience_name = 'Septimo (new)'
              WHERE system_name = 'septimo_system'",
        )
        .await
        .unwrap();
    w.make_due().await;
    sync_all_succeed(&w).await;
    let new = w.audience_id("septimo_system").await;
    assert_ne!(new, old);
    let expected = w.expected_members("septimo_system").await;
    assert_eq!(w.sandbox_members(&new), expected);
    let run = last_run(&w, "septimo_system").await;
    assert_eq!(run.4 as usize, expected.len());
}

/// A demo CDP with two pairs of kangoo twins, extracted in customer id order: twin A's sparse row
/// comes first (and goes out while extracting), its fuller row after; twin B the other way round.
async fn twins_in_extraction_order() -> TestApp {
    let mut w = TestApp::builder().customers(1_500).build().await;
    // Extraction in customer id order, so which twin comes first is known.
    let client = w.client().await;
    let default = Catalog::read(&client)
        .await
        .unwrap()
        .default_extraction(&[MatchKey::Email, MatchKey::Phone, MatchKey::Fn, MatchKey::Ln])
        .unwrap();
    w.ctx.extract_sql = Some(format!("{default}\nORDER BY c.id").into());
    client
        .batch_execute(
            "INSERT INTO customers_master (id, tenant_id, email, phone, firstname, lastname) VALUES
                 (-2, 20, 'twin.a@example.com', NULL, NULL, NULL),
                 (-1, 20, 'twin.b@example.com', '+54 9 11 4444-0002', 'Bea', 'Fuller'),
                 (990001, 25, 'twin.a@example.com', '+54 9 11 4444-0001', 'Ana', 'Fuller'),
                 (990002, 25, 'twin.b@example.com', NULL, NULL, NULL);
             INSERT INTO cdp_rfm_analysis (customer_id, rfm_segment)
             VALUES (-2, 'Champions'), (-1, 'Champions'), (990001, 'Champions'), (990002, 'Champions');",
        )
        .await
        .unwrap();
    w
}

#[tokio::test]
async fn on_a_first_sync_a_fuller_twin_extracted_after_its_sparser_twin_was_sent_replaces_it() {
    let w = twins_in_extraction_order().await;
    sync_all_succeed(&w).await;
    w.assert_audiences_equal_expected().await;
    let run = last_run(&w, "kangoo_system").await;
    assert_eq!(
        run.5, 1,
        "twin A's sparse row went out while extracting and was replaced; twin B's stayed"
    );
    let remove_calls = w
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.operation == "remove_users" && r.status == 200)
        .count();
    assert_eq!(remove_calls, 1);
}

#[tokio::test]
async fn a_first_sync_reports_the_members_its_ledger_holds_after_a_twin_replaced_a_member_it_sent()
{
    let w = twins_in_extraction_order().await;
    let reports = w.sync_due().await;
    assert_eq!(reports.len(), 3, "{reports:?}");
    for r in &reports {
        assert_eq!(r.outcome, Outcome::Success, "{r:?}");
        assert_eq!(
            r.members as usize,
            w.ledger_size(&r.system_name).await,
            "{}: the members reported are the ledger's rows",
            r.system_name
        );
    }
    // Kangoo's ledger lost a row in the run (twin A's sparse one) as well as gaining its members.
    let run = last_run(&w, "kangoo_system").await;
    assert_eq!(run.5, 1, "one member's old row was removed");
    let kangoo = reports
        .iter()
        .find(|r| r.system_name == "kangoo_system")
        .unwrap();
    assert_eq!(
        kangoo.members as usize,
        w.sandbox_members(&w.audience_id("kangoo_system").await)
            .len()
    );
}
