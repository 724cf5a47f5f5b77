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
