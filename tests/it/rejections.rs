//! The run's details: entries Meta samples as invalid are traced back to their customers and the
//! key at fault, for streamed first syncs and planned uploads alike, and never keep the value.
use cdp_meta_sync::sync::Outcome;
use meta_sandbox::Faults;

use crate::app::TestApp;

const SYSTEM: &str = "kangoo_system";

/// `(run_id, tenant_id, customer_id, match_key, reason)` of every recorded rejection.
async fn rejections(w: &TestApp) -> Vec<(i64, i32, i64, String, String)> {
    w.client()
        .await
        .query(
            "SELECT run_id, tenant_id, customer_id, match_key, reason
               FROM cdp.facebook_sync_rejections ORDER BY run_id, customer_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

async fn tenant_of(w: &TestApp, customer_id: i64) -> i32 {
    w.client()
        .await
        .query_one(
            "SELECT tenant_id FROM customers_master WHERE id = $1",
            &[&customer_id],
        )
        .await
        .unwrap()
        .get(0)
}

async fn run_ids(w: &TestApp) -> Vec<i64> {
    w.client()
        .await
        .query(
            "SELECT id FROM cdp.facebook_sync_runs WHERE system_name = $1 ORDER BY id",
            &[&SYSTEM],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn flag(w: &TestApp, cells: &[&(i64, String)]) {
    w.sandbox.set_faults(Faults {
        invalid_cells: cells.iter().map(|(_, cell)| cell.clone()).collect(),
        ..Faults::default()
    });
}

#[tokio::test]
async fn entries_meta_refuses_are_recorded_by_customer_and_key_in_a_first_sync_and_a_replace() {
    let w = TestApp::builder().customers(2_000).build().await;
    w.only_kangoo().await;
    let lone = w.lone_members(SYSTEM, 5).await;
    let (first, later) = lone.split_at(3);
    flag(&w, &first.iter().collect::<Vec<_>>());

    // A first sync streams its batches while it extracts.
    let reports = w.sync_due().await;
    assert_eq!(reports[0].outcome, Outcome::Success, "{reports:?}");

    // A replace sends its planned batches.
    w.client()
        .await
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET sync_mode = 'replace'
              WHERE system_name = 'kangoo_system'",
        )
        .await
        .unwrap();
    flag(&w, &later.iter().collect::<Vec<_>>());
    w.make_due().await;
    let reports = w.sync_due().await;
    assert_eq!(reports[0].outcome, Outcome::Success, "{reports:?}");

    let runs = run_ids(&w).await;
    let mut expected = Vec::new();
    for (run, who) in [(runs[0], first), (runs[1], later)] {
        let mut rows = Vec::new();
        for (customer, _) in who {
            let tenant = tenant_of(&w, *customer).await;
            rows.push((
                run,
                tenant,
                *customer,
                "EMAIL".to_string(),
                "EMAIL".to_string(),
            ));
        }
        rows.sort_by_key(|r| r.2);
        expected.extend(rows);
    }
    assert_eq!(rejections(&w).await, expected);
    // Meta's counts agree, and no value is kept.
    let invalid: Vec<i64> = w
        .client()
        .await
        .query(
            "SELECT num_invalid_entries FROM cdp.facebook_sync_runs WHERE system_name = $1 ORDER BY id",
            &[&SYSTEM],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(invalid, vec![3, 2]);
    let table: String = w
        .client()
        .await
        .query_one(
            "SELECT coalesce(string_agg(r::text, ' '), '') FROM cdp.facebook_sync_rejections r",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for (_, cell) in &lone {
        assert!(!table.contains(cell.as_str()), "a value was kept: {table}");
    }
}
