//! The source digest as Postgres computes it inside the extraction: what it must tell apart.
use cdp_meta_sync::db;
use cdp_meta_sync::sync::digest;
use tokio_postgres::types::ToSql;

use crate::app::{database_settings, server_url};

/// The digests of `rows` (one value per match key each) with `seed`, as the extraction computes them.
async fn digests(rows: &[&[Option<&str>]], seed: i64) -> Vec<i64> {
    let client = db::connect_single(&database_settings(&server_url()))
        .await
        .expect("connect to the test server");
    let mut out = Vec::new();
    for values in rows {
        let columns: Vec<String> = (0..values.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!("SELECT {}", digest::sql(&columns, "$1"));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&seed];
        params.extend(values.iter().map(|v| v as &(dyn ToSql + Sync)));
        out.push(client.query_one(&sql, &params).await.unwrap().get(0));
    }
    out
}

#[tokio::test]
async fn the_same_raw_row_gets_the_same_digest_and_any_changed_value_another() {
    let d = digests(
        &[
            &[Some("a@example.com"), Some("11 5555-1234")],
            &[Some("a@example.com"), Some("11 5555-1234")],
            &[Some("A@example.com"), Some("11 5555-1234")],
            &[Some("a@example.com"), Some("11 5555-1235")],
            &[Some("a@example.com"), None],
        ],
        7,
    )
    .await;
    assert_eq!(d[0], d[1]);
    for changed in &d[2..] {
        assert_ne!(d[0], *changed, "{d:?}");
    }
}

#[tokio::test]
async fn an_absent_value_and_an_empty_value_get_different_digests() {
    let d = digests(&[&[None, Some("x")], &[Some(""), Some("x")]], 7).await;
    assert_ne!(d[0], d[1]);
}

#[tokio::test]
async fn values_cannot_run_into_each_other() {
    let d = digests(&[&[Some("ab"), Some("c")], &[Some("a"), Some("bc")]], 7).await;
    assert_ne!(d[0], d[1]);
}

#[tokio::test]
async fn another_seed_gives_every_row_another_digest() {
    let row: &[Option<&str>] = &[Some("a@example.com"), Some("11 5555-1234")];
    let a = digests(&[row], 7).await;
    let b = digests(&[row], 8).await;
    assert_ne!(a, b);
}

#[tokio::test]
async fn values_that_swap_keys_get_another_digest() {
    let d = digests(&[&[Some("ab"), Some("cd")], &[Some("cd"), Some("ab")]], 7).await;
    assert_ne!(d[0], d[1]);
}

#[tokio::test]
async fn a_case_insensitive_column_collation_cannot_hide_a_changed_value() {
    let client = db::connect_single(&database_settings(&server_url()))
        .await
        .expect("connect to the test server");
    client
        .batch_execute(
            "CREATE COLLATION IF NOT EXISTS pg_temp.case_insensitive
                 (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
             CREATE TEMP TABLE customers (email text COLLATE pg_temp.case_insensitive);
             INSERT INTO customers VALUES ('Ana@Example.com'), ('ana@example.com');",
        )
        .await
        .unwrap();
    let rows = client
        .query(
            &format!(
                "SELECT email = 'ANA@EXAMPLE.COM', {} FROM customers",
                digest::sql(&["email".to_string()], "$1")
            ),
            &[&7i64],
        )
        .await
        .unwrap();
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(0)),
        "the column compares without case"
    );
    assert_ne!(rows[0].get::<_, i64>(1), rows[1].get::<_, i64>(1));
}
