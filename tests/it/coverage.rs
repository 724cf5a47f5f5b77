//! Coverage: per run, the share of members with a usable value per match key, the same whether
//! the customers were normalized in the run or settled unchanged from the ledger.
use cdp_meta_sync::identity::{MatchKey, Normalizer};

use crate::app::TestApp;

const SYSTEM: &str = "kangoo_system";

/// The coverage of kangoo's customers computed here: rows of its tenants in active segments that
/// have a usable EMAIL or PHONE, and per key how many of them have a usable value.
async fn expected_coverage(w: &TestApp) -> serde_json::Value {
    let rows = w
        .client()
        .await
        .query(
            "SELECT c.email::text, c.phone::text, c.firstname::text, c.lastname::text,
                        c.country::text, f.default_country::text
                   FROM customers_master c
                   JOIN cdp_rfm_analysis r ON r.customer_id = c.id
                   JOIN cdp.facebook_configurations f ON c.tenant_id = ANY(f.tenant_ids)
                  WHERE f.system_name = $1 AND r.rfm_segment NOT IN ('Lost', 'Hibernating')",
            &[&SYSTEM],
        )
        .await
        .unwrap();
    let keys = [MatchKey::Email, MatchKey::Phone, MatchKey::Fn, MatchKey::Ln];
    let (mut members, mut filled) = (0u64, [0u64; 4]);
    for r in &rows {
        let normalizer = Normalizer::new(r.get(5)).unwrap();
        let usable: Vec<bool> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let mut cell = String::new();
                r.get::<_, Option<&str>>(i).is_some_and(|raw| {
                    normalizer
                        .row_cell_into(*key, raw, r.get(4), &mut cell)
                        .is_ok()
                        && !cell.is_empty()
                })
            })
            .collect();
        if usable[0] || usable[1] {
            members += 1;
            for (n, u) in filled.iter_mut().zip(&usable) {
                *n += u64::from(*u);
            }
        }
    }
    let share = |n: u64| (n as f64 / members as f64 * 10_000.0).round() / 10_000.0;
    serde_json::json!({
        "EMAIL": share(filled[0]), "PHONE": share(filled[1]),
        "FN": share(filled[2]), "LN": share(filled[3]),
    })
}

/// `(coverage, unchanged)` of each of kangoo's runs, oldest first.
async fn runs(w: &TestApp) -> Vec<(serde_json::Value, i64)> {
    w.client()
        .await
        .query(
            "SELECT coverage, unchanged FROM cdp.facebook_sync_runs
              WHERE system_name = $1 ORDER BY id",
            &[&SYSTEM],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn each_run_records_per_key_coverage_and_an_unchanged_run_records_the_same_from_the_ledger() {
    let w = TestApp::builder().customers(2_000).build().await;
    w.only_kangoo().await;
    w.sync_due().await;
    w.make_due().await;
    w.sync_due().await;

    let runs = runs(&w).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let expected = expected_coverage(&w).await;
    assert_eq!(runs[0].0, expected);
    // The second run normalized nobody again, and still knows each member's filled cells.
    assert!(runs[1].1 > 0, "{runs:?}");
    assert_eq!(runs[1].0, expected);
    // The demo's data has gaps: coverage is not trivially full.
    let email = expected["EMAIL"].as_f64().unwrap();
    assert!(email > 0.5 && email < 1.0, "{expected}");
}
