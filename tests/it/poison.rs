//! Poison in configuration rows, source columns and events: the system (or event) it touches
//! gets a plain message, the worker keeps running and the others carry on.
use cdp_meta_sync::events::EventPump;
use cdp_meta_sync::sync::Outcome;
use tokio_util::sync::CancellationToken;

use crate::app::TestApp;

async fn row_status(w: &TestApp, system: &str) -> (String, String, Option<String>) {
    let row = w
        .client()
        .await
        .query_one(
            "SELECT sync_status, coalesce(error_log, ''), lease_owner
                   FROM cdp.facebook_configurations WHERE system_name = $1",
            &[&system],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn null_elements_and_two_dimensional_arrays_in_a_row_make_that_system_invalid_and_release_its_lease()
 {
    let w = TestApp::builder().customers(500).build().await;
    w.client()
        .await
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET tenant_ids = '{20,NULL}' WHERE system_name = 'kangoo_system';
             UPDATE cdp.facebook_configurations SET match_keys = '{EMAIL,NULL}' WHERE system_name = 'septimo_system';
             UPDATE cdp.facebook_configurations SET excluded_segments = '{{Lost},{Hibernating}}'
              WHERE system_name = 'digitalfarma_system';
             INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids, is_active, schedule_hours)
             VALUES ('clean_system', 'act_99', ARRAY[40, 41], true, 48);",
        )
        .await
        .unwrap();

    let reports = w.sync_due().await;

    assert_eq!(reports.len(), 4);
    for (system, says) in [
        (
            "kangoo_system",
            "tenant_ids must list at least one tenant and no NULLs",
        ),
        ("septimo_system", "match_keys must not contain NULL"),
        ("digitalfarma_system", "excluded_segments cannot be read"),
    ] {
        let (status, error, lease) = row_status(&w, system).await;
        assert_eq!(status, "invalid_config", "{system}: {error}");
        assert!(error.contains(says), "{system}: {error}");
        assert_eq!(lease, None, "{system} released its lease");
    }
    assert_eq!(row_status(&w, "clean_system").await.0, "success");
}

#[tokio::test]
async fn an_integer_zip_makes_only_the_system_that_asks_for_zip_invalid() {
    let w = TestApp::builder().customers(500).build().await;
    w.client()
        .await
        .batch_execute(
            "ALTER TABLE customers_master ALTER COLUMN zip TYPE integer
                 USING nullif(regexp_replace(zip, '[^0-9]', '', 'g'), '')::integer;
             UPDATE cdp.facebook_configurations SET match_keys = '{EMAIL,PHONE,ZIP}'
              WHERE system_name = 'kangoo_system';",
        )
        .await
        .unwrap();

    let reports = w.sync_due().await;

    let (status, error, lease) = row_status(&w, "kangoo_system").await;
    assert_eq!(status, "invalid_config");
    assert!(
        error.contains("match key ZIP reads column customers_master.zip, which is int4"),
        "{error}"
    );
    assert_eq!(lease, None);
    let others: Vec<_> = reports
        .iter()
        .filter(|r| r.system_name != "kangoo_system")
        .map(|r| r.outcome.clone())
        .collect();
    assert_eq!(others, vec![Outcome::Success, Outcome::Success]);
}

#[tokio::test]
async fn an_event_at_infinity_is_rejected_in_plain_words_and_a_poisoned_system_does_not_stop_the_others()
 {
    let w = TestApp::builder().customers(100).build().await;
    let client = w.client().await;
    client
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET pixel_id = '501' WHERE system_name = 'kangoo_system';
             UPDATE cdp.facebook_configurations SET pixel_id = '502', data_processing_options = '{LDU,NULL}'
              WHERE system_name = 'septimo_system';
             INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time, action_source, event_id, email)
             VALUES (20, 'Lead', 'infinity', 'system_generated', 'never', 'a@example.com'),
                    (20, 'Lead', now(), 'system_generated', 'now', 'b@example.com'),
                    (100, 'Lead', now(), 'system_generated', 'held', 'c@example.com');",
        )
        .await
        .unwrap();

    let pump = EventPump::new(w.ctx.pool.clone(), w.ctx.meta.clone(), "worker-a".into());
    let report = pump.run_once(&CancellationToken::new()).await.unwrap();

    assert_eq!((report.sent, report.rejected), (1, 1), "{report:?}");
    let rows = client
        .query(
            "SELECT event_id, status, coalesce(last_error, '') FROM cdp.conversion_events ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got[0].1, "rejected");
    assert!(
        got[0].2.contains("event_time is not a finite time"),
        "{got:?}"
    );
    assert_eq!(got[1].1, "sent");
    assert_eq!(
        got[2].1, "pending",
        "the system whose options cannot be read keeps its events"
    );
    assert_eq!(w.sandbox.events("501").len(), 1);
    assert!(w.sandbox.events("502").is_empty());
}
