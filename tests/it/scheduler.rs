use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cdp_meta_sync::db::notify::listen;
use cdp_meta_sync::health::Health;
use cdp_meta_sync::scheduler::{CONFIG_CHANNEL, Scheduler};
use cdp_meta_sync::sync::Outcome;
use meta_sandbox::Faults;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app::TestApp;
use crate::process::{
    eventually, finished, free_port, spawn, status_of, sync_killed_after_batches, worker,
};

#[tokio::test]
async fn an_insert_is_picked_up_by_a_running_scheduler_through_notify() {
    let w = TestApp::builder().customers(1_000).build().await;
    // Everything already synced, and a poll interval of an hour: only NOTIFY can wake the loop.
    w.sync_due().await;
    let mut ctx = w.ctx.clone();
    let mut settings = (*ctx.settings).clone();
    settings.worker.poll_interval_secs = 3600;
    ctx.settings = Arc::new(settings.clone());
    let shutdown = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let health = Arc::new(Health::default());
    let listener = tokio::spawn(listen(
        settings.database.clone(),
        vec![(CONFIG_CHANNEL, wake.clone())],
        health.clone(),
        shutdown.clone(),
    ));
    let scheduler = tokio::spawn(
        Scheduler {
            ctx,
            health: health.clone(),
            wake,
        }
        .run_until_stopped(shutdown.clone()),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(health.loop_alive(Duration::from_secs(3600)));

    w.client()
        .await
        .batch_execute(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids, is_active, schedule_hours)
             VALUES ('nuevo_sistema', 'act_123456789', ARRAY[40, 41], true, 48)",
        )
        .await
        .unwrap();
    let picked_up = eventually(Duration::from_secs(20), || async {
        status_of(&w, "nuevo_sistema").await.0.as_deref() == Some("success")
    })
    .await;
    shutdown.cancel();
    scheduler.await.unwrap().unwrap();
    listener.await.unwrap();
    assert!(picked_up, "the new system was not synced after its INSERT");
    let audience = w.audience_id("nuevo_sistema").await;
    assert_eq!(
        w.sandbox_members(&audience).len(),
        w.expected_members("nuevo_sistema").await.len()
    );
}

#[tokio::test]
async fn a_worker_killed_mid_upload_resumes_without_resending_accepted_batches_or_a_second_audience()
 {
    let w = TestApp::builder().customers(3_000).build().await;
    // After 2 accepted uploads the sandbox stops answering writes: the worker hangs on batch 3.
    let committed = sync_killed_after_batches(&w, "kangoo_system", 2).await;
    assert!(committed, "two batches were accepted and recorded");
    let stalled_audience = w.audience_id("kangoo_system").await;

    // The dead worker's lease has run out; the next run takes over.
    let report = w.sync_due().await;
    assert!(
        report.iter().all(|r| r.outcome == Outcome::Success),
        "{report:?}"
    );

    let expected = w.expected_members("kangoo_system").await;
    assert_eq!(w.audience_id("kangoo_system").await, stalled_audience);
    let kangoo_audiences = w
        .sandbox
        .audiences()
        .into_iter()
        .filter(|a| a.ad_account_id == "act_323379512251780")
        .count();
    assert_eq!(kangoo_audiences, 1, "one audience");
    assert_eq!(w.sandbox_members(&stalled_audience), expected);
    let sent: usize = w
        .sandbox
        .requests()
        .iter()
        .filter(|r| {
            r.operation == "add_users"
                && r.status == 200
                && r.object_id.as_deref() == Some(stalled_audience.as_str())
        })
        .filter_map(|r| r.rows)
        .sum();
    assert_eq!(
        sent,
        expected.len(),
        "every member was accepted exactly once"
    );
}

#[tokio::test]
async fn sigterm_finishes_the_batch_in_flight_records_interrupted_releases_the_lease_and_exits_0() {
    let w = TestApp::builder().customers(3_000).build().await;
    w.sandbox.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let port = free_port();
    let mut child = spawn(
        worker(&w, &["run"])
            .env("PORT", port.to_string())
            .env("SCHEDULER_MAX_CONCURRENT", "3"),
    );
    let healthy = eventually(Duration::from_secs(20), || async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let uploading = eventually(Duration::from_secs(30), || async {
        w.sandbox
            .requests()
            .iter()
            .any(|r| r.operation == "add_users")
    })
    .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let started = std::time::Instant::now();
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(healthy, "/healthz answered 200");
    assert!(uploading);
    let status = exited.expect("exited within 30 s");
    assert_eq!(status.code(), Some(0));
    let client = w.client().await;
    let leases: i64 = client
        .query_one(
            "SELECT count(*) FROM cdp.facebook_configurations WHERE lease_owner IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leases, 0, "every lease released");
    let interrupted: i64 = client
        .query_one(
            "SELECT count(*) FROM cdp.facebook_sync_runs WHERE outcome = 'interrupted'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        interrupted >= 1,
        "the run in progress was recorded as interrupted"
    );
    let running: i64 = client
        .query_one(
            "SELECT count(*) FROM cdp.facebook_sync_runs WHERE outcome = 'running'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 0);
    let output = child.output();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        !logs.contains(crate::app::TOKEN),
        "the token is not in the logs"
    );
}

#[tokio::test]
async fn status_prints_every_system_with_its_outcome() {
    let w = TestApp::builder().customers(500).build().await;
    w.sync_due().await;
    let output = worker(&w, &["status"]).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for system in ["kangoo_system", "septimo_system", "digitalfarma_system"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(system))
            .unwrap_or_else(|| panic!("{system} in {text}"));
        assert!(line.contains("success"), "{line}");
    }
}

#[tokio::test]
async fn status_json_gives_every_system_with_its_outcome_and_members_to_a_script() {
    let w = TestApp::builder().customers(500).build().await;
    let reports = w.sync_due().await;
    let output = worker(&w, &["status", "--json"]).output().unwrap();
    assert!(output.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let systems = doc["systems"].as_array().unwrap();
    assert_eq!(systems.len(), 3);
    for report in &reports {
        let system = systems
            .iter()
            .find(|s| s["system_name"] == report.system_name.as_str())
            .unwrap_or_else(|| panic!("{} in {doc}", report.system_name));
        assert_eq!(system["sync_status"], "success");
        assert_eq!(system["total_customers"], report.members);
        assert!(system["lease_owner"].is_null());
        assert!(system["last_sync"].as_str().is_some());
    }
}

#[tokio::test]
async fn the_status_page_on_the_health_port_shows_each_system_once_it_has_synced() {
    let w = TestApp::builder().customers(300).build().await;
    let port = free_port();
    let _child = spawn(worker(&w, &["run"]).env("PORT", port.to_string()));
    let page = || async {
        match reqwest::get(format!("http://127.0.0.1:{port}/")).await {
            Ok(r) if r.status() == 200 => {
                let html_type = r
                    .headers()
                    .get("content-type")
                    .is_some_and(|t| t.to_str().unwrap_or("").starts_with("text/html"));
                Some((html_type, r.text().await.unwrap_or_default()))
            }
            _ => None,
        }
    };
    let synced = eventually(Duration::from_secs(30), || async {
        page().await.is_some_and(|(_, html)| {
            ["kangoo_system", "septimo_system", "digitalfarma_system"]
                .iter()
                .all(|s| html.contains(&format!("<tr class=\"success\"><td>{s}</td>")))
        })
    })
    .await;
    let (html_type, html) = page().await.expect("the page answers");
    assert!(synced, "{html}");
    assert!(html_type, "served as text/html");
    assert!(html.contains("<th>MEMBERS</th>"));
    assert!(!html.contains("<script"), "no script on the page");
}

#[tokio::test]
async fn run_once_without_an_access_token_exits_2_naming_the_variable() {
    let w = TestApp::builder().customers(10).build().await;
    let output = worker(&w, &["run", "--once"])
        .env_remove("FACEBOOK_ACCESS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("FACEBOOK_ACCESS_TOKEN"), "{stderr}");
}

#[tokio::test]
async fn an_event_inserted_while_the_worker_runs_is_sent_within_seconds() {
    let w = TestApp::builder().customers(10).build().await;
    let client = w.client().await;
    client
        .batch_execute("UPDATE cdp.facebook_configurations SET pixel_id = '777000111' WHERE system_name = 'digitalfarma_system'")
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let pump = cdp_meta_sync::events::EventPump::new(
        w.ctx.pool.clone(),
        w.ctx.meta.clone(),
        "worker-a".into(),
    );
    let listener = tokio::spawn(listen(
        w.ctx.settings.database.clone(),
        vec![(cdp_meta_sync::events::NOTIFY_CHANNEL, wake.clone())],
        Arc::new(Health::default()),
        shutdown.clone(),
    ));
    // An interval of an hour: only the outbox's NOTIFY can wake the pump in time.
    let events = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            pump.run_until_stopped(Duration::from_secs(3600), wake, shutdown)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .batch_execute(
            "INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time, action_source, event_id, email, value, currency)
             VALUES (28, 'Purchase', now() - interval '1 minute', 'physical_store', 'order-1', 'Mary@Example.com', 10.50, 'ARS')",
        )
        .await
        .unwrap();
    let sent = eventually(Duration::from_secs(20), || async {
        !w.sandbox.events("777000111").is_empty()
    })
    .await;
    shutdown.cancel();
    events.await.unwrap();
    listener.await.unwrap();
    assert!(sent, "the event was not sent after its INSERT");
    let received = w.sandbox.events("777000111");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].event["event_id"], "order-1");
    assert_eq!(
        received[0].event["user_data"]["em"]
            .as_str()
            .or_else(|| received[0].event["user_data"]["em"][0].as_str()),
        Some("f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79")
    );
}

#[tokio::test]
async fn run_once_exits_1_naming_each_system_that_failed_and_0_when_all_synced() {
    let w = TestApp::builder().customers(300).build().await;
    w.client()
        .await
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET ad_account_id = 'not-an-account'
              WHERE system_name = 'septimo_system'",
        )
        .await
        .unwrap();
    let output = finished(worker(&w, &["run", "--once"])).await;
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("kangoo_system: success"), "{stdout}");
    assert_eq!(
        stderr.lines().last(),
        Some("error: 1 of 3 systems did not sync: septimo_system (invalid_config)"),
        "{stderr}"
    );

    w.client()
        .await
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET ad_account_id = 'act_881526052911252', next_sync = now()
              WHERE system_name = 'septimo_system'",
        )
        .await
        .unwrap();
    let output = finished(worker(&w, &["run", "--once"])).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_killed_listen_connection_is_restarted_and_healthz_is_503_until_it_is_back() {
    let w = TestApp::builder().customers(10).build().await;
    let port = free_port();
    let _child = spawn(worker(&w, &["run"]).env("PORT", port.to_string()));
    let health = || async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(20), || async { health().await == 200 }).await,
        "healthy at first"
    );
    let killed: i64 = w
        .client()
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "one LISTEN connection");
    assert!(
        eventually(Duration::from_secs(10), || async { health().await == 503 }).await,
        "503 while the listener is down"
    );
    assert!(
        eventually(Duration::from_secs(20), || async { health().await == 200 }).await,
        "200 again once it reconnected"
    );
    // And it listens again: an INSERT is picked up although the poll interval is long.
    w.client()
        .await
        .batch_execute(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids)
             VALUES ('after_reconnect', 'act_7', ARRAY[40])",
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            status_of(&w, "after_reconnect").await.0.as_deref() == Some("success")
        })
        .await
    );
}

#[tokio::test]
async fn a_worker_built_in_process_on_port_0_syncs_serves_its_pages_and_stops_on_shutdown() {
    let w = TestApp::builder().customers(300).build().await;
    let mut ctx = w.ctx.clone();
    let mut settings = (*ctx.settings).clone();
    settings.worker.port = 0;
    ctx.settings = Arc::new(settings);
    let worker = cdp_meta_sync::startup::Worker::build(ctx).await.unwrap();
    let port = worker.port();
    assert_ne!(port, 0, "a free port was bound");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run_until_stopped(shutdown.clone()));

    let http = reqwest::Client::new();
    let healthy = eventually(Duration::from_secs(20), || async {
        http.get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(healthy, "/healthz never answered 200");
    let synced = eventually(Duration::from_secs(30), || async {
        status_of(&w, "kangoo_system").await.0.as_deref() == Some("success")
    })
    .await;
    assert!(synced, "the worker did not sync the due systems");
    let page = http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("kangoo_system"), "{page}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("stopped within the grace period")
        .unwrap()
        .unwrap();
    assert!(
        http.get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err(),
        "the port is closed after shutdown"
    );
}
