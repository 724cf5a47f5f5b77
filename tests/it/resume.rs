//! Same source, same audience, whatever the history: a first sync killed after any batch and then
//! resumed ends with the ledger and the audience of an uninterrupted run on the same data.
use std::collections::BTreeSet;

use cdp_meta_sync::demo::Schema;
use cdp_meta_sync::sync::Outcome;

use crate::app::TestApp;
use crate::members::Row;
use crate::process::sync_killed_after_batches;

const SYSTEM: &str = "kangoo_system";

/// The ledger as `(member key, cells)`, and the sandbox audience's members.
async fn outcome(w: &TestApp) -> (BTreeSet<(Vec<u8>, Vec<u8>)>, BTreeSet<Row>) {
    let ledger = w
        .client()
        .await
        .query(
            "SELECT m.member_key, m.cells FROM cdp.facebook_audience_members m
               JOIN cdp.facebook_configurations f ON f.id = m.configuration_id
              WHERE f.system_name = $1",
            &[&SYSTEM],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let audience = w.sandbox_members(&w.audience_id(SYSTEM).await);
    (ledger, audience)
}

#[tokio::test]
async fn a_first_sync_killed_after_any_batch_and_resumed_ends_as_an_uninterrupted_one() {
    killed_and_resumed_equals_uninterrupted(Schema::Rich).await;
}

#[tokio::test]
async fn on_the_original_schema_a_killed_and_resumed_first_sync_ends_as_an_uninterrupted_one() {
    killed_and_resumed_equals_uninterrupted(Schema::Original).await;
}

async fn killed_and_resumed_equals_uninterrupted(schema: Schema) {
    // 6,000 customers: kangoo's ~2,000 members with cross-tenant twins, in batches of 250.
    let reference = TestApp::builder()
        .customers(6_000)
        .schema(schema)
        .build()
        .await;
    reference
        .client()
        .await
        .batch_execute("UPDATE cdp.facebook_configurations SET is_active = false WHERE system_name <> 'kangoo_system'")
        .await
        .unwrap();
    assert!(
        reference
            .sync_due()
            .await
            .iter()
            .all(|r| r.outcome == Outcome::Success)
    );
    let expected = outcome(&reference).await;
    assert!(expected.0.len() > 1_500, "{} members", expected.0.len());
    assert_eq!(expected.0.len(), expected.1.len());

    for killed_after in [1u64, 3, 6] {
        let w = TestApp::builder()
            .customers(6_000)
            .schema(schema)
            .build()
            .await;
        let reached = sync_killed_after_batches(&w, SYSTEM, killed_after).await;
        assert!(
            reached,
            "{killed_after} batches were accepted before the kill"
        );
        // The kill left the accepted members in the audience's load, outside the ledger.
        let unattached: bool = w
            .client()
            .await
            .query_one(
                "SELECT cdp.ledger_loading(id, 0) IS NOT NULL FROM cdp.facebook_configurations
                  WHERE system_name = $1",
                &[&SYSTEM],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            unattached,
            "killed after batch {killed_after}: no load left"
        );
        w.client()
            .await
            .batch_execute(
                "UPDATE cdp.facebook_configurations SET is_active = false WHERE system_name <> 'kangoo_system'",
            )
            .await
            .unwrap();
        let reports = w.sync_due().await;
        assert!(
            reports.iter().all(|r| r.outcome == Outcome::Success),
            "{reports:?}"
        );
        let (ledger, audience) = outcome(&w).await;
        assert_eq!(
            ledger.len(),
            expected.0.len(),
            "killed after batch {killed_after}: ledger size"
        );
        assert!(
            ledger == expected.0,
            "killed after batch {killed_after}: ledger rows differ"
        );
        assert!(
            audience == expected.1,
            "killed after batch {killed_after}: audience differs"
        );
    }
}
