//! The event pump against a real Postgres and the Meta sandbox.
use std::collections::HashMap;

use cdp_meta_sync::demo::Schema;
use cdp_meta_sync::events::{NOTIFY_CHANNEL, pending_by_system};
use cdp_meta_sync::meta::MAX_EVENTS_PER_CALL;
use meta_sandbox::Faults;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::app::TestApp;

/// Fixtures of the event tests; shared with `events_faults.rs`.
impl TestApp {
    /// A system with a pixel for `tenants`; `extra` is a SET list applied after the insert.
    pub(crate) async fn system(
        &self,
        name: &str,
        pixel: &str,
        tenants: &[i32],
        extra: &str,
    ) -> i32 {
        let client = self.client().await;
        let id: i32 = client
            .query_one(
                "INSERT INTO cdp.facebook_configurations
                     (system_name, ad_account_id, tenant_ids, pixel_id, default_country)
                 VALUES ($1, 'act_1', $2, $3, 'BR') RETURNING id",
                &[&name, &tenants, &pixel],
            )
            .await
            .unwrap()
            .get(0);
        if !extra.is_empty() {
            client
                .execute(
                    &format!("UPDATE cdp.facebook_configurations SET {extra} WHERE id = $1"),
                    &[&id],
                )
                .await
                .unwrap();
        }
        id
    }

    /// `count` website Lead events for `tenant`, `event_id`s `{prefix}-{n}`, one statement.
    pub(crate) async fn leads(&self, tenant: i32, prefix: &str, count: i32, age: &str) {
        self.client()
            .await
            .execute(
                "INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time,
                     action_source, event_id, email, client_user_agent, event_source_url)
                 SELECT $1, 'Lead', now() - $4::text::interval, 'website', $2 || '-' || n,
                        'lead' || n || '@example.com', 'Mozilla/5.0', 'https://shop.example/f'
                 FROM generate_series(1, $3) AS n",
                &[&tenant, &prefix, &count, &age],
            )
            .await
            .unwrap();
    }

    pub(crate) async fn statuses(&self, configuration_id: i32) -> HashMap<String, String> {
        self.client()
            .await
            .query(
                "SELECT e.event_id, d.status FROM cdp.conversion_events e
                 JOIN cdp.conversion_event_deliveries d
                   ON d.event_row_id = e.id AND d.configuration_id = $1",
                &[&configuration_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    pub(crate) fn received(&self, pixel: &str) -> HashMap<String, Value> {
        self.sandbox
            .events(pixel)
            .into_iter()
            .map(|e| (e.event["event_id"].as_str().unwrap().to_string(), e.event))
            .collect()
    }
}

pub(crate) fn sha(s: &str) -> String {
    const_hex::encode(Sha256::digest(s.as_bytes()))
}

#[tokio::test]
async fn flat_and_structured_events_arrive_normalized_and_hashed_with_their_custom_data() {
    let t = TestApp::builder().build().await;
    t.system("store", "101", &[1], "").await;
    let client = t.client().await;
    client
        .batch_execute(
            "INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time, action_source,
                 event_id, email, phone, first_name, last_name, city, state, zip, country,
                 birth_date, gender, external_id, client_ip_address, value, currency, order_id,
                 contents, custom_data)
             VALUES (1, 'Purchase', now() - interval '1 hour', 'physical_store', 'flat-1',
                 ' Mary@Example.COM ', '(11) 91234-5678', 'Mary', 'Silva', 'Sao Paulo', 'SP',
                 '01310-100', 'BR', '1997-02-16', 'F', 'cust-9', '203.0.113.7', 220.00, 'BRL',
                 'ATN10001', '[{\"id\": \"product123\", \"quantity\": 1}]',
                 '{\"loyalty\": \"gold\"}');
             INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time, action_source,
                 event_id, value, currency, user_data, custom_data)
             VALUES (1, 'Purchase', now() - interval '2 hours', 'physical_store', 'structured-1',
                 10.5, 'usd',
                 '{\"em\": [\"Joao@Example.com\"], \"ph\": \"254aa248acb47dd654ca3ea53f48c2c26d641d23d7e2e93a1ec56258df7674c4\",
                   \"fn\": \"Joao\", \"zip\": \"20000 000\", \"fbp\": \"fb.1.1719852447.123\"}',
                 '{\"order_id\": \"S-1\", \"num_items\": 2}');",
        )
        .await
        .unwrap();

    let report = t.pump_once().await;

    assert_eq!(
        (report.sent, report.accepted, report.rejected),
        (2, 2, 0),
        "{report:?}"
    );
    let got = t.received("101");
    let flat = &got["flat-1"];
    assert_eq!(flat["event_name"], "Purchase");
    assert_eq!(flat["action_source"], "physical_store");
    assert_eq!(
        flat["user_data"],
        json!({
            "em": sha("mary@example.com"),
            "ph": sha("5511912345678"),
            "fn": sha("mary"),
            "ln": sha("silva"),
            "ct": sha("saopaulo"),
            "st": sha("sp"),
            "zp": sha("01310100"),
            "country": sha("br"),
            "db": sha("19970216"),
            "ge": sha("f"),
            "external_id": "cust-9",
            "client_ip_address": "203.0.113.7",
        })
    );
    assert_eq!(
        flat["custom_data"],
        json!({"value": 220.0, "currency": "brl", "order_id": "ATN10001",
               "contents": [{"id": "product123", "quantity": 1}], "loyalty": "gold"})
    );
    let structured = &got["structured-1"];
    assert_eq!(
        structured["user_data"],
        json!({
            "em": [sha("joao@example.com")],
            "ph": "254aa248acb47dd654ca3ea53f48c2c26d641d23d7e2e93a1ec56258df7674c4",
            "fn": sha("joao"),
            "zp": sha("20000000"),
            "fbp": "fb.1.1719852447.123",
        })
    );
    assert_eq!(
        structured["custom_data"],
        json!({"value": 10.5, "currency": "usd", "order_id": "S-1", "num_items": 2})
    );
    let event_time = structured["event_time"].as_i64().unwrap();
    assert!(event_time < chrono::Utc::now().timestamp() - 3600);
}

#[tokio::test]
async fn an_event_without_identity_columns_takes_its_customers_identity() {
    let t = TestApp::builder().build().await;
    let client = t.client().await;
    cdp_meta_sync::demo::load(&client, 50, 7, Schema::Rich)
        .await
        .unwrap();
    let customer = client
        .query_one(
            "SELECT id, tenant_id, email FROM customers_master
             WHERE email LIKE '%@%' AND email NOT LIKE '% %' ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (id, tenant, email): (i64, i32, String) =
        (customer.get(0), customer.get(1), customer.get(2));
    t.system("crm", "102", &[tenant], "").await;
    client
        .execute(
            "INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time, action_source,
                 event_id, customer_id) VALUES ($1, 'Subscribe', now(), 'system_generated', 'c-1', $2)",
            &[&tenant, &id],
        )
        .await
        .unwrap();

    t.pump_once().await;

    let got = t.received("102");
    assert_eq!(
        got["c-1"]["user_data"]["em"],
        json!(sha(&email.trim().to_lowercase()))
    );
}

#[tokio::test]
async fn two_thousand_five_hundred_events_go_in_batches_of_at_most_one_thousand() {
    let t = TestApp::builder().build().await;
    let system = t.system("web", "103", &[2], "").await;
    t.leads(2, "lead", 2_500, "1 minute").await;

    let report = t.pump_once().await;

    assert_eq!((report.sent, report.accepted), (2_500, 2_500));
    let sizes: Vec<usize> = t
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.operation == "send_events")
        .map(|r| r.rows.unwrap_or(0))
        .collect();
    assert_eq!(sizes, vec![1_000, 1_000, 500]);
    assert!(sizes.iter().all(|s| *s <= MAX_EVENTS_PER_CALL));
    assert_eq!(t.received("103").len(), 2_500);
    let statuses = t.statuses(system).await;
    assert!(statuses.values().all(|s| s == "sent"));
    let row = t
        .client()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'sent' AND fbtrace_id IS NOT NULL
                                      AND sent_at IS NOT NULL)
             FROM cdp.conversion_events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2_500);
    let run = t
        .client()
        .await
        .query_one(
            "SELECT batches, sent, accepted, rejected, expired, finished_at IS NOT NULL, error
             FROM cdp.conversion_delivery_runs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            run.get::<_, i64>(0),
            run.get::<_, i64>(1),
            run.get::<_, i64>(2),
            run.get::<_, i64>(3),
            run.get::<_, i64>(4),
            run.get::<_, bool>(5),
            run.get::<_, Option<String>>(6)
        ),
        (3, 2_500, 2_500, 0, 0, true, None)
    );
}

#[tokio::test]
async fn stale_events_are_expired_and_never_sent() {
    let t = TestApp::builder().build().await;
    let system = t.system("mixed", "104", &[3], "").await;
    t.leads(3, "fresh", 2, "6 days").await;
    t.leads(3, "stale", 2, "8 days").await;
    t
        .client()
        .await
        .batch_execute(
            "INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time, action_source,
                 event_id, email, value, currency)
             VALUES (3, 'Purchase', now() - interval '30 days', 'physical_store', 'store-30', 'a@b.co', 1, 'BRL'),
                    (3, 'Purchase', now() - interval '63 days', 'physical_store', 'store-63', 'a@b.co', 1, 'BRL');",
        )
        .await
        .unwrap();

    let report = t.pump_once().await;

    assert_eq!((report.sent, report.expired), (3, 3));
    let mut sent: Vec<String> = t.received("104").into_keys().collect();
    sent.sort();
    assert_eq!(sent, vec!["fresh-1", "fresh-2", "store-30"]);
    let statuses = t.statuses(system).await;
    for id in ["stale-1", "stale-2", "store-63"] {
        assert_eq!(statuses[id], "expired", "{id}");
    }
    // Expired is final: a second run sends nothing.
    let again = t.pump_once().await;
    assert_eq!((again.sent, again.expired), (0, 0));
}

#[tokio::test]
async fn one_poison_event_is_rejected_alone_and_the_rest_are_sent() {
    let t = TestApp::builder().build().await;
    let system = t.system("web", "105", &[4], "").await;
    t.leads(4, "ok", 300, "1 minute").await;
    // A Purchase without value and currency: Meta rejects the whole request for it.
    t.client()
        .await
        .batch_execute(
            "INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time, action_source,
                 event_id, email) VALUES (4, 'Purchase', now(), 'email', 'poison', 'p@x.co');",
        )
        .await
        .unwrap();
    t.leads(4, "after", 300, "1 minute").await;

    let report = t.pump_once().await;

    assert_eq!((report.sent, report.rejected), (600, 1));
    let got = t.received("105");
    assert_eq!(got.len(), 600);
    assert!(!got.contains_key("poison"));
    let statuses = t.statuses(system).await;
    assert_eq!(statuses["poison"], "rejected");
    assert_eq!(statuses.values().filter(|s| *s == "sent").count(), 600);
    let error: String = t
        .client()
        .await
        .query_one(
            "SELECT d.last_error FROM cdp.conversion_event_deliveries d
             JOIN cdp.conversion_events e ON e.id = d.event_row_id WHERE e.event_id = 'poison'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("Meta error 100"), "{error}");
}

#[tokio::test]
async fn a_crash_mid_run_resends_at_most_the_in_flight_batch() {
    let t = TestApp::builder().build().await;
    let system = t.system("web", "106", &[5], "").await;
    t.leads(5, "e", 2_500, "1 minute").await;
    t.sandbox.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    // The first worker runs on its own pool, "crashes" once Meta has the first batch, and its
    // connections die with it. Its claims are leased for two seconds.
    let crashing_pool = cdp_meta_sync::db::connect_pool(t.database_settings()).unwrap();
    let pump = t
        .pump_with_pool(crashing_pool.clone())
        .with_claim_lease(std::time::Duration::from_secs(2));
    let worker = tokio::spawn(async move { pump.run_once(&CancellationToken::new()).await });
    while t.sandbox.events("106").len() < 1_000 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    worker.abort();
    let _ = worker.await;
    crashing_pool.close();
    // Until its lease runs out, the dead worker's batch is rightly left alone by the next one.
    loop {
        let leased: i64 = t
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM cdp.conversion_event_claims WHERE lease_until > now()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if leased == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    t.sandbox.set_faults(Faults::default());

    let report = t.pump_once().await;

    let mut times_received: HashMap<String, usize> = HashMap::new();
    for e in t.sandbox.events("106") {
        *times_received
            .entry(e.event["event_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(times_received.len(), 2_500, "every event arrives");
    let resent = times_received.values().filter(|n| **n > 1).count();
    assert!(times_received.values().all(|n| *n <= 2));
    assert!(resent <= MAX_EVENTS_PER_CALL, "{resent} events resent");
    assert!(report.sent >= 1_500, "{report:?}");
    let statuses = t.statuses(system).await;
    assert_eq!(statuses.len(), 2_500);
    assert!(statuses.values().all(|s| s == "sent"));
}

#[tokio::test]
async fn an_event_inserted_while_the_pump_listens_is_sent_within_seconds() {
    let t = TestApp::builder().build().await;
    t.system("web", "107", &[6], "").await;
    // A LISTEN loop like the scheduler's: run the pump whenever the outbox trigger notifies.
    let (listener, mut connection) = cdp_meta_sync::db::pool::pg_config(t.database_settings())
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut woken) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.channel().to_string());
            }
        }
    });
    listener
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await
        .unwrap();
    let pump = t.pump();
    let cancel = CancellationToken::new();
    let loop_cancel = cancel.clone();
    let pump_loop = tokio::spawn(async move {
        let mut sent = 0;
        while let Some(channel) = tokio::select! {
            c = woken.recv() => c,
            _ = loop_cancel.cancelled() => None,
        } {
            assert_eq!(channel, NOTIFY_CHANNEL);
            sent += pump.run_once(&loop_cancel).await.unwrap().sent;
            if sent > 0 {
                break;
            }
        }
        sent
    });

    t.leads(6, "live", 1, "0 seconds").await;

    let sent = tokio::time::timeout(std::time::Duration::from_secs(10), pump_loop)
        .await
        .expect("the insert woke the pump")
        .unwrap();
    cancel.cancel();
    assert_eq!(sent, 1);
    assert!(t.received("107").contains_key("live-1"));
}

#[tokio::test]
async fn test_event_code_partner_agent_and_ldu_are_sent_only_when_set() {
    let t = TestApp::builder().build().await;
    t.system(
        "tested",
        "108",
        &[7],
        "test_event_code = 'TEST123', partner_agent = 'cdp-meta-sync',
         data_processing_options = ARRAY['LDU'], data_processing_options_country = 1,
         data_processing_options_state = 1000",
    )
    .await;
    t.system("plain", "109", &[8], "").await;
    t.leads(7, "t", 1, "1 minute").await;
    t.leads(8, "p", 1, "1 minute").await;

    t.pump_once().await;

    let tested = &t.sandbox.events("108")[0];
    assert_eq!(tested.test_event_code.as_deref(), Some("TEST123"));
    assert_eq!(tested.partner_agent.as_deref(), Some("cdp-meta-sync"));
    assert_eq!(tested.event["data_processing_options"], json!(["LDU"]));
    assert_eq!(tested.event["data_processing_options_country"], json!(1));
    assert_eq!(tested.event["data_processing_options_state"], json!(1000));
    let plain = &t.sandbox.events("109")[0];
    assert_eq!(plain.test_event_code, None);
    assert_eq!(plain.partner_agent, None);
    assert!(plain.event.get("data_processing_options").is_none());
}

#[tokio::test]
async fn a_tenant_in_two_systems_with_pixels_is_sent_to_both_and_tracked_per_system() {
    let t = TestApp::builder().build().await;
    let a = t.system("brand_a", "110", &[9], "").await;
    let b = t.system("brand_b", "111", &[9, 10], "").await;
    t.leads(9, "shared", 3, "1 minute").await;

    let first = t.pump_once().await;
    let second = t.pump_once().await;

    assert_eq!((first.sent, first.systems), (6, 2));
    assert_eq!(second.sent, 0);
    assert_eq!(t.received("110").len(), 3);
    assert_eq!(t.received("111").len(), 3);
    assert_eq!(t.statuses(a).await.len(), 3);
    assert_eq!(t.statuses(b).await.len(), 3);
}

#[tokio::test]
async fn an_expired_token_stops_the_system_and_leaves_its_events_pending() {
    let t = TestApp::builder().build().await;
    let system = t.system("web", "112", &[11], "").await;
    t.leads(11, "w", 5, "1 minute").await;
    t.sandbox.set_faults(Faults {
        token_error: true,
        ..Faults::default()
    });

    let report = t.pump_once().await;

    assert_eq!(
        (report.sent, report.rejected, report.failed_systems),
        (0, 0, 1)
    );
    assert!(t.statuses(system).await.is_empty());
    let client = t.client().await;
    let pending = pending_by_system(&client).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].system_name.as_str(), pending[0].pending),
        ("web", 5)
    );
    assert!(pending[0].oldest_pending.is_some());
    let error: String = client
        .query_one("SELECT error FROM cdp.conversion_delivery_runs", &[])
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("190"), "{error}");

    t.sandbox.set_faults(Faults::default());
    assert_eq!(t.pump_once().await.sent, 5);
    let pending = pending_by_system(&client).await.unwrap();
    assert_eq!((pending[0].pending, pending[0].oldest_pending), (0, None));
}

/// Benchmark, not a test: `cargo test --release --test it events_pump::bench -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_one_hundred_thousand_events_end_to_end() {
    let t = TestApp::builder().build().await;
    t.system("bench", "113", &[12], "").await;
    let client = t.client().await;
    client
        .execute(
            "INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time, action_source,
                 event_id, email, phone, first_name, last_name, city, zip, country,
                 client_user_agent, event_source_url, value, currency, order_id)
             SELECT 12, 'Purchase', now() - interval '1 hour', 'website', 'b-' || n,
                    'buyer' || n || '@example.com', '+54 9 11 ' || (40000000 + n), 'Ana', 'Paz',
                    'Buenos Aires', 'C1000', 'AR', 'Mozilla/5.0', 'https://shop.example/c',
                    n % 500, 'ARS', 'o-' || n
             FROM generate_series(1, 100000) AS n",
            &[],
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let report = t.pump_once().await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.sent, 100_000);
    println!(
        "events pump: {} events in {secs:.2} s = {:.0} events/s",
        report.sent,
        report.sent as f64 / secs
    );
}
