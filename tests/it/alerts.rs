//! Alerts to a Slack-compatible webhook, received by a local HTTP server: one when a system
//! breaks, one when it recovers, nothing in between, and never a token or personal data.
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::post;
use cdp_meta_sync::sync::Outcome;
use meta_sandbox::Faults;

use crate::app::{TOKEN, TestApp};
use crate::process::free_port;

type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// A webhook receiver on a free port: `(base URL, what it received as (path, body))`.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{hook}",
            post(
                |State(r): State<Received>,
                 Path(hook): Path<String>,
                 axum::Json(body): axum::Json<serde_json::Value>| async move {
                    r.lock().unwrap().push((hook, body));
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://127.0.0.1:{port}"), received)
}

async fn sync(w: &TestApp) -> Vec<(String, Outcome)> {
    w.make_due().await;
    w.sync_due()
        .await
        .into_iter()
        .map(|r| (r.system_name, r.outcome))
        .collect()
}

fn texts(received: &Received, hook: &str) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(h, _)| h == hook)
        .map(|(_, body)| body["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_system_that_breaks_alerts_once_and_once_more_when_it_recovers() {
    let mut w = TestApp::builder().customers(300).build().await;
    let (base, received) = receiver().await;
    // kangoo has its own webhook; the others use the worker's. A replace talks to Meta on every
    // run, so a token error shows on every run.
    w.client()
        .await
        .execute(
            "UPDATE cdp.facebook_configurations
                SET sync_mode = 'replace',
                    alert_webhook_url = CASE WHEN system_name = 'kangoo_system' THEN $1 END",
            &[&format!("{base}/kangoo")],
        )
        .await
        .unwrap();
    w.ctx = w.context_with(
        "worker-a",
        &[("ALERT_WEBHOOK_URL", &format!("{base}/global"))],
    );

    assert!(sync(&w).await.iter().all(|(_, o)| *o == Outcome::Success));
    assert!(received.lock().unwrap().is_empty(), "healthy: no alert");

    w.sandbox.set_faults(Faults {
        token_error: true,
        ..Faults::default()
    });
    assert!(
        sync(&w)
            .await
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Failed(_)))
    );
    let kangoo = texts(&received, "kangoo");
    assert_eq!(kangoo.len(), 1, "{kangoo:?}");
    assert!(
        kangoo[0].starts_with("cdp-meta-sync: kangoo_system is failed: "),
        "{}",
        kangoo[0]
    );
    assert_eq!(
        texts(&received, "global").len(),
        2,
        "septimo and digitalfarma"
    );
    sync(&w).await;
    assert_eq!(
        texts(&received, "kangoo").len(),
        1,
        "still failing: no second alert"
    );

    w.sandbox.set_faults(Faults::default());
    assert!(sync(&w).await.iter().all(|(_, o)| *o == Outcome::Success));
    let kangoo = texts(&received, "kangoo");
    assert_eq!(kangoo.len(), 2);
    assert_eq!(
        kangoo[1],
        "cdp-meta-sync: kangoo_system recovered (was failed)"
    );
    sync(&w).await;
    assert_eq!(texts(&received, "kangoo").len(), 2, "healthy again: quiet");

    let everything = format!("{:?}", received.lock().unwrap());
    assert!(!everything.contains(TOKEN), "no token in alerts");
    assert!(!everything.contains('@'), "no email in alerts");
}

#[tokio::test]
async fn an_alert_the_webhook_refuses_at_first_is_retried_and_a_broken_audience_definition_alerts_its_system()
 {
    let mut w = TestApp::builder().customers(300).build().await;
    // Refuses the first attempt (503), takes the next ones.
    let attempts: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State(a): State<Arc<Mutex<Vec<serde_json::Value>>>>,
                 axum::Json(body): axum::Json<serde_json::Value>| async move {
                    let mut a = a.lock().unwrap();
                    a.push(body);
                    if a.len() == 1 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                },
            ),
        )
        .with_state(attempts.clone());
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    w.ctx = w.context_with(
        "worker-a",
        &[(
            "ALERT_WEBHOOK_URL",
            &format!("http://127.0.0.1:{port}/hook"),
        )],
    );
    w.client()
        .await
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET is_active = (system_name = 'kangoo_system');
             INSERT INTO cdp.facebook_audiences (configuration_id, name, included_segments)
             SELECT id, 'Nobody', '{}'::text[] FROM cdp.facebook_configurations
              WHERE system_name = 'kangoo_system';",
        )
        .await
        .unwrap();

    assert_eq!(sync(&w).await[0].1, Outcome::Partial);

    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(
        attempts.len(),
        2,
        "refused once, then delivered: {attempts:?}"
    );
    assert_eq!(attempts[0], attempts[1], "the same message again");
    let text = attempts[1]["text"].as_str().unwrap();
    assert!(
        text.starts_with("cdp-meta-sync: kangoo_system is partial: ")
            && text.contains("audience 'Nobody' invalid_config"),
        "{text}"
    );
}
