//! A connection goes back to the pool as a run found it.
use futures_util::StreamExt;

use crate::app::TestApp;

/// A connection of its own, with the notices (warnings) the server sends it.
async fn connection_with_notices(
    t: &TestApp,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (client, mut connection) = cdp_meta_sync::db::pool::pg_config(t.database_settings())
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notice(n) = message {
                let _ = tx.send(n.message().to_string());
            }
        }
    });
    (client, notices)
}

async fn in_a_transaction(client: &tokio_postgres::Client) -> bool {
    !cdp_meta_sync::db::pool::outside_a_transaction(client)
        .await
        .unwrap()
}

#[tokio::test]
async fn resetting_a_session_ends_an_open_or_failed_transaction_and_warns_of_nothing() {
    let t = TestApp::builder().build().await;
    let (client, mut notices) = connection_with_notices(&t).await;
    let reset = cdp_meta_sync::db::pool::reset_session;

    // A clean session: nothing to end, and no "there is no transaction in progress".
    client
        .batch_execute("CREATE TEMP TABLE left_behind (x int); SET enable_seqscan = off")
        .await
        .unwrap();
    reset(&client).await.unwrap();
    let temp: Option<String> = client
        .query_one("SELECT to_regclass('pg_temp.left_behind')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(temp, None, "the run's temporary tables go");
    let seqscan: String = client
        .query_one("SHOW enable_seqscan", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seqscan, "on", "the run's settings go");

    // A transaction left open: rolled back.
    client
        .batch_execute("BEGIN; CREATE TABLE never_committed (x int)")
        .await
        .unwrap();
    assert!(in_a_transaction(&client).await);
    reset(&client).await.unwrap();
    assert!(!in_a_transaction(&client).await);
    let table: Option<String> = client
        .query_one("SELECT to_regclass('never_committed')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(table, None);

    // A transaction a failed statement aborted: rolled back too.
    client.batch_execute("BEGIN").await.unwrap();
    assert!(client.batch_execute("SELECT 1 / 0").await.is_err());
    reset(&client).await.unwrap();
    assert!(!in_a_transaction(&client).await);

    client.batch_execute("SELECT 1").await.unwrap();
    let mut warned = Vec::new();
    while let Ok(notice) = notices.try_recv() {
        warned.push(notice);
    }
    assert!(warned.is_empty(), "no warning: {warned:?}");
}

#[tokio::test]
async fn a_pooled_connection_comes_back_with_the_pools_settings_whatever_its_last_user_set() {
    let t = TestApp::builder().build().await;
    let mut settings = t.database_settings().clone();
    settings.pool_size = 1;
    let pool = cdp_meta_sync::db::connect_pool(&settings).unwrap();
    let first = pool.get().await.unwrap();
    let pid: i32 = first
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let own: String = first.query_one("SHOW work_mem", &[]).await.unwrap().get(0);
    first
        .batch_execute("SET work_mem = '1MB'; SET enable_hashjoin = off")
        .await
        .unwrap();
    drop(first);

    let again = pool.get().await.unwrap();
    let row = again
        .query_one(
            "SELECT pg_backend_pid(), current_setting('work_mem'), current_setting('enable_hashjoin')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), pid, "the same connection");
    assert_eq!(row.get::<_, String>(1), own);
    assert_eq!(own, "64MB", "the pool's own work_mem");
    assert_eq!(row.get::<_, String>(2), "on");
}

/// The values of `settings` in the session that runs the extraction, as an operator query that
/// records them sees them (each distinct row once).
async fn settings_seen_by_the_extraction(settings: &[&str]) -> Vec<Vec<String>> {
    let w = TestApp::builder().customers(200).build().await;
    w.only_kangoo().await;
    let values: Vec<String> = settings
        .iter()
        .map(|s| format!("current_setting('{s}')"))
        .collect();
    w.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE seen_settings (value text[]);
             CREATE FUNCTION note_settings() RETURNS boolean LANGUAGE sql VOLATILE AS
               $$ INSERT INTO seen_settings VALUES (ARRAY[{}]) RETURNING true $$;",
            values.join(", ")
        ))
        .await
        .unwrap();
    let mut ctx = w.ctx.clone();
    ctx.extract_sql = Some(
        "SELECT c.id::bigint AS customer_id, c.tenant_id, c.email::text AS email,
                c.phone::text AS phone, c.firstname::text AS first_name, c.lastname::text AS last_name
           FROM customers_master c JOIN cdp_rfm_analysis r ON r.customer_id = c.id
          WHERE c.tenant_id = ANY($1) AND r.rfm_segment <> ALL($2) AND note_settings()"
            .into(),
    );
    w.make_due().await;
    let reports = crate::app::sync_due_with(&ctx).await;
    assert!(
        reports[0].outcome == cdp_meta_sync::sync::Outcome::Success,
        "{:?}",
        reports[0].outcome
    );
    w.client()
        .await
        .query("SELECT DISTINCT value FROM seen_settings", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn the_extraction_runs_with_hash_tables_small_enough_for_the_cpus_cache() {
    let seen = settings_seen_by_the_extraction(&["work_mem"]).await;
    assert_eq!(seen, [["1MB"]]);
}

#[tokio::test]
async fn the_extraction_runs_without_parallel_workers_that_would_compete_with_the_other_systems() {
    let seen = settings_seen_by_the_extraction(&["max_parallel_workers_per_gather"]).await;
    assert_eq!(seen, [["0"]]);
}
