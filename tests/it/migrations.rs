use cdp_meta_sync::db;

use crate::app::{TestApp, database_settings};

#[tokio::test]
async fn migrating_twice_applies_nothing_the_second_time() {
    let test_db = TestApp::builder().empty().build().await;
    let mut client = db::connect_single(test_db.database_settings())
        .await
        .unwrap();
    let first = db::migrate::run(&mut client).await.unwrap();
    let second = db::migrate::run(&mut client).await.unwrap();
    let every_version: Vec<i32> = db::migrate::MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(first.applied, every_version);
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, db::migrate::MIGRATIONS.len());
}

#[tokio::test]
async fn two_migrations_started_together_both_succeed_and_apply_the_schema_once() {
    let test_db = TestApp::builder().empty().build().await;
    let mut a = db::connect_single(test_db.database_settings())
        .await
        .unwrap();
    let mut b = db::connect_single(test_db.database_settings())
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(db::migrate::run(&mut a), db::migrate::run(&mut b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.applied.len() + rb.applied.len(),
        db::migrate::MIGRATIONS.len()
    );
    let recorded: i64 = a
        .query_one("SELECT count(*) FROM cdp.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded as usize, db::migrate::MIGRATIONS.len());
}

#[tokio::test]
async fn a_migration_changed_after_it_was_applied_is_refused() {
    let test_db = TestApp::builder().build().await;
    let mut client = db::connect_single(test_db.database_settings())
        .await
        .unwrap();
    client
        .execute(
            "UPDATE cdp.schema_migrations SET checksum = 'edited' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    let error = db::migrate::run(&mut client).await.unwrap_err();
    assert!(
        error.to_string().contains("add a new migration"),
        "{error:#}"
    );
}

#[tokio::test]
async fn the_original_designs_insert_works_unchanged_and_gets_our_defaults() {
    let test_db = TestApp::builder().build().await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids, is_active, schedule_hours) VALUES ('nuevo_sistema', 'act_123456789', ARRAY[30, 31, 32], true, 48);",
        )
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT tenant_ids, sync_mode, match_keys, excluded_segments, total_customers, consecutive_failures,
                    next_sync IS NULL AS due_now, created_at IS NOT NULL AS created
             FROM cdp.facebook_configurations WHERE system_name = 'nuevo_sistema'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<i32>>("tenant_ids"), vec![30, 31, 32]);
    assert_eq!(row.get::<_, String>("sync_mode"), "mirror");
    assert_eq!(
        row.get::<_, Vec<String>>("match_keys"),
        vec!["EMAIL", "PHONE", "FN", "LN"]
    );
    assert_eq!(
        row.get::<_, Vec<String>>("excluded_segments"),
        vec!["Lost", "Hibernating"]
    );
    assert_eq!(row.get::<_, i32>("total_customers"), 0);
    assert_eq!(row.get::<_, i32>("consecutive_failures"), 0);
    assert!(row.get::<_, bool>("due_now"));
    assert!(row.get::<_, bool>("created"));
}

#[tokio::test]
async fn a_row_with_an_unknown_sync_mode_is_refused_by_a_named_constraint() {
    let test_db = TestApp::builder().build().await;
    let client = test_db.client().await;
    let error = client
        .execute(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids, sync_mode)
             VALUES ('bad', 'act_1', ARRAY[1], 'sometimes')",
            &[],
        )
        .await
        .unwrap_err();
    let db_error = error.as_db_error().expect("a database error");
    assert_eq!(
        db_error.constraint(),
        Some("facebook_configurations_sync_mode_check")
    );
}

#[tokio::test]
async fn updating_a_configuration_moves_updated_at() {
    let test_db = TestApp::builder().build().await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids, updated_at)
             VALUES ('s', 'act_1', ARRAY[1], now() - interval '1 day')",
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET is_active = false WHERE system_name = 's'",
        )
        .await
        .unwrap();
    let recent: bool = client
        .query_one(
            "SELECT updated_at > now() - interval '1 minute' FROM cdp.facebook_configurations WHERE system_name = 's'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(recent);
}

#[tokio::test]
async fn deleting_a_configuration_deletes_its_ledger_and_keeps_the_others() {
    let test_db = TestApp::builder().build().await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids)
             VALUES ('gone', 'act_1', ARRAY[1]), ('kept', 'act_2', ARRAY[2]);
             INSERT INTO cdp.facebook_audience_members (configuration_id, audience_id, member_key, match_keys, cells)
             SELECT c.id, '1', decode(md5(c.system_name || g), 'hex'), 'EMAIL', '\\x00'
               FROM cdp.facebook_configurations c, generate_series(1, 3) g;
             DELETE FROM cdp.facebook_configurations WHERE system_name = 'gone';",
        )
        .await
        .unwrap();
    let left: Vec<(String, i64)> = client
        .query(
            "SELECT c.system_name, count(m.member_key) FROM cdp.facebook_audience_members m
               LEFT JOIN cdp.facebook_configurations c ON c.id = m.configuration_id GROUP BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, Option<String>>(0).unwrap_or_default(), r.get(1)))
        .collect();
    assert_eq!(left, vec![("kept".to_string(), 3)]);
}

#[tokio::test]
async fn a_connection_with_sslmode_require_is_encrypted() {
    let test_db = TestApp::builder().build().await;
    let separator = if test_db.url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{separator}sslmode=require", test_db.url());
    let client = db::connect_single(&database_settings(&url)).await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        ssl,
        "the server must offer TLS for this test (Debian's cluster does)"
    );
}
