use std::collections::BTreeSet;

use cdp_meta_sync::scheduler::run_due;
use cdp_meta_sync::sync::{Outcome, Trigger};
use meta_sandbox::{FaultCode, Faults};
use tokio_util::sync::CancellationToken;

use crate::app::{TOKEN, TestApp};
use crate::members::SYSTEMS;

#[tokio::test]
async fn the_three_demo_systems_sync_and_each_audience_equals_the_expected_hashed_set() {
    let w = TestApp::builder().customers(3_000).build().await;
    let reports = w.sync_due().await;
    assert_eq!(reports.len(), 3);
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Success),
        "{reports:?}"
    );

    let client = w.client().await;
    for system in SYSTEMS {
        let expected = w.expected_members(system).await;
        assert!(expected.len() > 100, "{system}: {}", expected.len());
        let audience = w.audience_id(system).await;
        assert_eq!(w.sandbox_members(&audience), expected, "{system}");
        let row = client
            .query_one(
                "SELECT sync_status, total_customers, error_log,
                        abs(extract(epoch FROM next_sync - (now() + interval '48 hours'))) < 300 AS next_in_48h,
                        last_sync IS NOT NULL AS synced, lease_owner IS NULL AS released
                   FROM cdp.facebook_configurations WHERE system_name = $1",
                &[&system],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("success"));
        assert_eq!(row.get::<_, i32>(1) as usize, expected.len());
        assert_eq!(row.get::<_, Option<String>>(2), None);
        assert!(row.get::<_, bool>(3) && row.get::<_, bool>(4) && row.get::<_, bool>(5));
    }
    // One audience per system, and the run rows add up.
    assert_eq!(w.sandbox.audiences().len(), 3);
    let run = client
        .query_one(
            "SELECT extracted, eligible, added, num_invalid_entries, skipped_invalid ? 'PHONE', duplicates
               FROM cdp.facebook_sync_runs WHERE system_name = 'kangoo_system'",
            &[],
        )
        .await
        .unwrap();
    let (extracted, eligible, added, invalid): (i64, i64, i64, i64) =
        (run.get(0), run.get(1), run.get(2), run.get(3));
    assert!(
        extracted > eligible && eligible == added,
        "{extracted} {eligible} {added}"
    );
    assert_eq!(invalid, 0);
    assert!(run.get::<_, bool>(4), "invalid phones are counted per key");
    assert!(
        run.get::<_, i64>(5) > 0,
        "the same person in tenants 20 and 25 is one member"
    );
}

#[tokio::test]
async fn a_churn_round_leaves_the_audience_equal_to_the_new_set_with_removals_sent_by_real_methods_without_the_token_in_any_url()
 {
    let w = TestApp::builder().customers(3_000).build().await;
    w.sync_due().await;
    let client = w.client().await;
    // Churn in kangoo's tenants: some leave (Lost), some change email, some arrive.
    client
        .batch_execute(
            "UPDATE cdp_rfm_analysis SET rfm_segment = 'Lost'
              WHERE customer_id IN (SELECT id FROM customers_master WHERE tenant_id = 20 ORDER BY id LIMIT 40);
             UPDATE customers_master SET email = 'changed.' || id || '@example.org'
              WHERE id IN (SELECT id FROM customers_master WHERE tenant_id = 25 AND email LIKE '%@%' ORDER BY id DESC LIMIT 30);
             INSERT INTO customers_master (id, tenant_id, email, phone, firstname, lastname)
             SELECT 900000 + g, 20, 'newcomer' || g || '@example.com', NULL, 'Nuevo', 'Cliente' FROM generate_series(1, 25) g;
             INSERT INTO cdp_rfm_analysis (customer_id, rfm_segment) SELECT 900000 + g, 'Champions' FROM generate_series(1, 25) g;",
        )
        .await
        .unwrap();
    w.make_due().await;
    let reports = w.sync_due().await;
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Success),
        "{reports:?}"
    );

    let expected = w.expected_members("kangoo_system").await;
    let audience = w.audience_id("kangoo_system").await;
    assert_eq!(w.sandbox_members(&audience), expected);
    let run = client
        .query_one(
            "SELECT added, removed FROM cdp.facebook_sync_runs WHERE system_name = 'kangoo_system' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (added, removed): (i64, i64) = (run.get(0), run.get(1));
    assert!(removed >= 40, "removed {removed}");
    assert!(added >= 25, "added {added}");
    assert!(
        w.sandbox
            .requests()
            .iter()
            .any(|r| r.operation == "remove_users" && r.status == 200)
    );
    let ledger = w.ledger_size("kangoo_system").await;
    assert_eq!(
        ledger,
        expected.len(),
        "the ledger agrees with the audience"
    );
    // Reads (the first sync's search by name), adds, removals: real methods, no secret in a URL.
    let requests = w.sandbox.requests();
    for operation in [
        "list_audiences",
        "create_audience",
        "add_users",
        "remove_users",
    ] {
        assert!(
            requests
                .iter()
                .any(|r| r.operation == operation && r.status == 200),
            "{operation}"
        );
    }
    for r in &requests {
        assert_eq!(r.method, r.http_method, "no method override: {r:?}");
        let query = r.query.as_deref().unwrap_or("");
        assert!(
            !query.contains(crate::app::TOKEN) && !query.contains("access_token"),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn a_run_that_would_remove_too_much_holds_its_removals_until_an_operator_forces_them() {
    let w = TestApp::builder().customers(2_000).build().await;
    w.sync_due().await;
    let audience = w.audience_id("digitalfarma_system").await;
    let before = w.sandbox_members(&audience);
    let client = w.client().await;
    // A broken source: half of digitalfarma's customers vanish from the RFM table.
    client
        .batch_execute(
            "DELETE FROM cdp_rfm_analysis WHERE customer_id IN (SELECT id FROM customers_master WHERE tenant_id = 28 AND id % 2 = 0)",
        )
        .await
        .unwrap();
    w.make_due().await;
    w.sync_due().await;
    let row = client
        .query_one(
            "SELECT sync_status, error_log FROM cdp.facebook_configurations WHERE system_name = 'digitalfarma_system'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "partial");
    assert!(row.get::<_, String>(1).contains("removals held"));
    assert_eq!(w.sandbox_members(&audience), before, "nobody was removed");

    client
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET force_removals = true, next_sync = now() WHERE system_name = 'digitalfarma_system'",
        )
        .await
        .unwrap();
    w.sync_due().await;
    let expected = w.expected_members("digitalfarma_system").await;
    assert_eq!(w.sandbox_members(&audience), expected);
    let row = client
        .query_one(
            "SELECT sync_status, force_removals FROM cdp.facebook_configurations WHERE system_name = 'digitalfarma_system'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "success");
    assert!(
        !row.get::<_, bool>(1),
        "the operator's override is used once"
    );
}

#[tokio::test]
async fn append_mode_adds_newcomers_and_never_removes() {
    let w = TestApp::builder().customers(2_000).build().await;
    let client = w.client().await;
    client
        .batch_execute("UPDATE cdp.facebook_configurations SET sync_mode = 'append'")
        .await
        .unwrap();
    w.sync_due().await;
    let audience = w.audience_id("digitalfarma_system").await;
    let first = w.sandbox_members(&audience);
    client
        .batch_execute(
            "UPDATE cdp_rfm_analysis SET rfm_segment = 'Lost'
              WHERE customer_id IN (SELECT id FROM customers_master WHERE tenant_id = 28 ORDER BY id LIMIT 20)",
        )
        .await
        .unwrap();
    w.make_due().await;
    w.sync_due().await;
    assert_eq!(w.sandbox_members(&audience), first);
    assert!(
        !w.sandbox
            .requests()
            .iter()
            .any(|r| r.operation == "remove_users")
    );
}

#[tokio::test]
async fn twenty_percent_transient_faults_still_reach_the_same_final_set() {
    let w = TestApp::builder().customers(2_000).build().await;
    w.sandbox.set_faults(Faults {
        error_rate: 0.2,
        error_codes: vec![FaultCode::new(2), FaultCode::new(4), FaultCode::new(80003)],
        ..Faults::default()
    });
    let reports = w.sync_due().await;
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Success),
        "{reports:?}"
    );
    assert!(
        w.sandbox.requests().iter().any(|r| r.injected),
        "faults were injected"
    );
    w.assert_audiences_equal_expected().await;
}

#[tokio::test]
async fn a_permanent_token_error_fails_readably_without_the_token_anywhere_and_backs_off() {
    let w = TestApp::builder().customers(500).build().await;
    w.sandbox.set_faults(Faults {
        token_error: true,
        ..Faults::default()
    });
    let reports = w.sync_due().await;
    assert_eq!(reports.len(), 3, "every system was attempted");
    let client = w.client().await;
    let rows = client
        .query(
            "SELECT sync_status, error_log, consecutive_failures,
                    next_sync BETWEEN now() + interval '4 minutes' AND now() + interval '6 minutes'
               FROM cdp.facebook_configurations",
            &[],
        )
        .await
        .unwrap();
    for row in &rows {
        assert_eq!(row.get::<_, String>(0), "failed");
        let error: String = row.get(1);
        assert!(
            error.contains("190") && error.contains("OAuthException"),
            "{error}"
        );
        assert_eq!(row.get::<_, i32>(2), 1);
        assert!(row.get::<_, bool>(3), "retried in 5 minutes");
    }
    let leaked: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM cdp.facebook_configurations WHERE concat_ws(' ', error_log, sync_status) LIKE '%' || $1 || '%')
                  + (SELECT count(*) FROM cdp.facebook_sync_runs WHERE coalesce(error, '') LIKE '%' || $1 || '%')",
            &[&TOKEN],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);

    // The operator renews the token: the systems recover and the failure count resets.
    w.sandbox.set_faults(Faults::default());
    w.make_due().await;
    let reports = w.sync_due().await;
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Success),
        "{reports:?}"
    );
}

#[tokio::test]
async fn a_broken_configuration_row_is_marked_invalid_and_the_others_carry_on() {
    let w = TestApp::builder().customers(500).build().await;
    let client = w.client().await;
    client
        .batch_execute(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids, match_keys)
             VALUES ('broken_system', '123456789', ARRAY[]::integer[], ARRAY['EMAIL','SHOE_SIZE'])",
        )
        .await
        .unwrap();
    let reports = w.sync_due().await;
    assert_eq!(reports.len(), 4);
    let row = client
        .query_one(
            "SELECT sync_status, error_log, custom_audience_id FROM cdp.facebook_configurations WHERE system_name = 'broken_system'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "invalid_config");
    let error: String = row.get(1);
    assert!(
        error.contains("act_<digits>")
            && error.contains("tenant_ids")
            && error.contains("SHOE_SIZE"),
        "{error}"
    );
    assert_eq!(
        row.get::<_, Option<String>>(2),
        None,
        "no audience for a broken row"
    );
    let ok: i64 = client
        .query_one(
            "SELECT count(*) FROM cdp.facebook_configurations WHERE sync_status = 'success'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ok, 3);
}

#[tokio::test]
async fn two_workers_on_one_database_sync_each_system_once() {
    let w = TestApp::builder().customers(2_000).build().await;
    let other = w.context("worker-b");
    let cancel = CancellationToken::new();
    let (a, b) = tokio::join!(
        run_due(&w.ctx, Trigger::Once, &cancel),
        run_due(&other, Trigger::Once, &cancel)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 3, "each system once: {a:?} {b:?}");
    let runs: i64 = w
        .client()
        .await
        .query_one("SELECT count(*) FROM cdp.facebook_sync_runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 3);
    assert_eq!(w.sandbox.audiences().len(), 3);
    let added: usize = w
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.operation == "add_users" && r.status == 200)
        .filter_map(|r| r.rows)
        .sum();
    let mut total = 0;
    for system in SYSTEMS {
        total += w.expected_members(system).await.len();
    }
    assert_eq!(added, total, "no row was sent twice");
}

#[tokio::test]
async fn a_customer_without_email_but_with_a_phone_is_in_the_audience() {
    let w = TestApp::builder().customers(500).build().await;
    let client = w.client().await;
    client
        .batch_execute(
            "INSERT INTO customers_master (id, tenant_id, email, phone, firstname, lastname)
             VALUES (800001, 28, NULL, '+54 9 11 4444-5555', 'Sin', 'Correo');
             INSERT INTO cdp_rfm_analysis (customer_id, rfm_segment) VALUES (800001, 'Champions');",
        )
        .await
        .unwrap();
    w.sync_due().await;
    let audience = w.audience_id("digitalfarma_system").await;
    let members = w.sandbox_members(&audience);
    let phone = cdp_meta_sync::identity::Normalizer::new(Some("AR"))
        .unwrap()
        .cell(cdp_meta_sync::identity::MatchKey::Phone, "+5491144445555")
        .unwrap();
    let with_phone: BTreeSet<_> = members
        .iter()
        .filter(|m| m.get("PHONE") == Some(&phone))
        .collect();
    assert_eq!(with_phone.len(), 1);
    assert!(!with_phone.iter().next().unwrap().contains_key("EMAIL"));
}

#[tokio::test]
async fn after_a_first_sync_the_planner_counts_the_new_members_of_the_configuration() {
    let w = TestApp::builder().customers(3_000).build().await;
    let client = w.client().await;
    // Statistics that know septimo's members only.
    client
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET next_sync = now() + interval '1 day'
              WHERE system_name <> 'septimo_system'",
        )
        .await
        .unwrap();
    assert_eq!(w.sync_due().await.len(), 1);
    client
        .batch_execute(
            "ANALYZE cdp.facebook_audience_members;
             UPDATE cdp.facebook_configurations SET next_sync = now() WHERE system_name = 'kangoo_system'",
        )
        .await
        .unwrap();
    let reports = w.sync_due().await;
    assert!(
        reports.len() == 1 && reports[0].outcome == Outcome::Success,
        "{reports:?}"
    );

    let id: i32 = client
        .query_one(
            "SELECT id FROM cdp.facebook_configurations WHERE system_name = 'kangoo_system'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let members: i64 = client
        .query_one(
            "SELECT count(*) FROM cdp.facebook_audience_members WHERE configuration_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let plan: serde_json::Value = client
        .query_one(
            &format!(
                "EXPLAIN (FORMAT JSON) SELECT 1 FROM cdp.facebook_audience_members WHERE configuration_id = {id}"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let estimate = plan[0]["Plan"]["Plan Rows"].as_f64().unwrap();
    assert!(members > 1_000, "{members}");
    assert!(
        estimate > members as f64 / 2.0,
        "the planner expects {estimate} of {members} members"
    );
}
