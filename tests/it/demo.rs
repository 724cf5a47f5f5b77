use cdp_meta_sync::demo::{self, Schema};

use crate::app::TestApp;

async fn table_digest(client: &tokio_postgres::Client) -> String {
    client
        .query_one(
            "SELECT md5(string_agg(concat_ws(',', c.id, c.tenant_id, c.email, c.phone, c.firstname, c.lastname, c.city,
                    c.state, c.zip, c.country, c.birth_date, c.gender, c.external_id, r.rfm_segment, v.clv), '|' ORDER BY c.id))
             FROM customers_master c JOIN cdp_rfm_analysis r ON r.customer_id = c.id
             JOIN cdp_clv_analysis v ON v.customer_id = c.id",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_generator_writes_the_same_rows_for_the_same_count_and_seed() {
    let (a, b, c) = tokio::join!(
        TestApp::builder().build(),
        TestApp::builder().build(),
        TestApp::builder().build()
    );
    let (ca, cb, cc) = (a.client().await, b.client().await, c.client().await);
    demo::load(&ca, 3_000, 7, Schema::Rich).await.unwrap();
    demo::load(&cb, 3_000, 7, Schema::Rich).await.unwrap();
    demo::load(&cc, 3_000, 8, Schema::Rich).await.unwrap();
    let (da, db, dc) = (
        table_digest(&ca).await,
        table_digest(&cb).await,
        table_digest(&cc).await,
    );
    assert_eq!(da, db);
    assert_ne!(da, dc);
    let count: i64 = ca
        .query_one("SELECT count(*) FROM customers_master", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3_000);
}

#[tokio::test]
async fn the_demo_systems_are_inserted_once_and_loading_again_keeps_them() {
    let test_db = TestApp::builder().build().await;
    let client = test_db.client().await;
    let first = demo::load(&client, 100, 1, Schema::Rich).await.unwrap();
    let second = demo::load(&client, 100, 1, Schema::Rich).await.unwrap();
    assert_eq!(first.systems_added, 3);
    assert_eq!(second.systems_added, 0);
    let rows = client
        .query(
            "SELECT system_name, ad_account_id, tenant_ids FROM cdp.facebook_configurations ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let systems: Vec<(String, String, Vec<i32>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        systems,
        vec![
            (
                "kangoo_system".into(),
                "act_323379512251780".into(),
                vec![20, 25]
            ),
            (
                "septimo_system".into(),
                "act_881526052911252".into(),
                vec![100, 107, 112, 118]
            ),
            (
                "digitalfarma_system".into(),
                "act_2850528471874859".into(),
                vec![28]
            ),
        ]
    );
}

#[tokio::test]
async fn the_generator_refuses_to_replace_a_table_it_did_not_create() {
    let test_db = TestApp::builder().build().await;
    let client = test_db.client().await;
    client
        .batch_execute("CREATE TABLE customers_master (id BIGINT)")
        .await
        .unwrap();
    let error = demo::load(&client, 10, 1, Schema::Rich).await.unwrap_err();
    assert!(error.to_string().contains("refusing"), "{error:#}");
}
