//! `MetaClient` against the local Meta sandbox: every operation's happy path end to end, plus
//! the sandbox's own checks of what the client sends (appsecret_proof, method override, sessions).
use std::time::Duration;

use cdp_meta_sync::configuration::MetaSettings;
use cdp_meta_sync::meta::{
    EventsRequest, MetaClient, MetaError, RetryClass, UploadSession, UsersUpload,
};
use cdp_meta_sync::sandbox::{self, FaultCode, Faults, Sandbox, SandboxOptions, UsageFault};
use cdp_meta_sync::secret::SecretString;
use serde_json::json;

const TOKEN: &str = "EAAsandboxtoken0123456789";
const APP_SECRET: &str = "sandbox-app-secret";
const ACCOUNT: &str = "act_1234567890";

async fn start() -> Sandbox {
    sandbox::spawn(SandboxOptions {
        seed: 7,
        app_secret: Some(APP_SECRET.to_string()),
        ..SandboxOptions::default()
    })
    .await
    .unwrap()
}

fn settings(sb: &Sandbox) -> MetaSettings {
    MetaSettings {
        graph_url: sb.base_url(),
        api_version: "v27.0".to_string(),
        access_token: None,
        app_secret: Some(SecretString::from(APP_SECRET.to_string())),
        request_timeout_secs: 10,
        connect_timeout_secs: 5,
        retry_max_attempts: 6,
        retry_min_delay_ms: 5,
        retry_max_delay_secs: 1,
        retry_max_elapsed_secs: 30,
        throttle_max_wait_secs: 900,
    }
}

fn client(s: &MetaSettings) -> MetaClient {
    MetaClient::new(s, SecretString::from(TOKEN.to_string())).unwrap()
}

fn hash(n: u32) -> String {
    format!("{n:064x}")
}

fn row(n: u32) -> Vec<String> {
    vec![hash(n), String::new()]
}

const SCHEMA: &[&str] = &["EMAIL", "PHONE"];

fn session(session_id: i64, batch_seq: u32, last: bool) -> UploadSession {
    UploadSession {
        session_id,
        batch_seq,
        last_batch_flag: last,
        estimated_num_total: Some(3),
    }
}

#[tokio::test]
async fn an_audience_is_created_found_read_filled_trimmed_and_replaced() {
    let sb = start().await;
    let c = client(&settings(&sb));

    assert_eq!(
        c.find_audience_by_name(ACCOUNT, "cdp demo").await.unwrap(),
        None
    );
    let id = c
        .create_custom_audience(ACCOUNT, "cdp demo", "managed by cdp-meta-sync")
        .await
        .unwrap();
    assert_eq!(
        c.find_audience_by_name(ACCOUNT, "cdp demo").await.unwrap(),
        Some(id.clone())
    );
    let info = c.get_audience(ACCOUNT, &id).await.unwrap();
    assert_eq!(
        (info.id.as_str(), info.name.as_str()),
        (id.as_str(), "cdp demo")
    );
    assert_eq!(info.operation_status.unwrap().code, 200);
    assert!(info.delivery_status.is_some());
    assert_eq!(info.approximate_count_lower_bound, Some(0));

    // Two batches of one add session.
    let first = vec![row(1), row(2)];
    let r = c
        .add_users(
            ACCOUNT,
            &id,
            &UsersUpload {
                schema: SCHEMA,
                rows: &first,
                session: session(11, 1, false),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.num_received, 2);
    assert_eq!(r.session_id.as_deref(), Some("11"));
    let second = vec![row(3)];
    let r = c
        .add_users(
            ACCOUNT,
            &id,
            &UsersUpload {
                schema: SCHEMA,
                rows: &second,
                session: session(11, 2, true),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.num_received, 3, "session total");
    assert_eq!(r.num_invalid_entries, 0);
    assert_eq!(sb.members(&id).len(), 3);

    // Remove one (with the row it was added with).
    let gone = vec![row(2)];
    c.remove_users(
        ACCOUNT,
        &id,
        &UsersUpload {
            schema: SCHEMA,
            rows: &gone,
            session: session(12, 1, true),
        },
    )
    .await
    .unwrap();
    let members = sb.members(&id);
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m["EMAIL"] != hash(2)));

    // Replace everything with one member.
    let only = vec![row(9)];
    let r = c
        .replace_users(
            ACCOUNT,
            &id,
            &UsersUpload {
                schema: SCHEMA,
                rows: &only,
                session: session(13, 1, true),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.num_received, 1);
    let members = sb.members(&id);
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["EMAIL"], hash(9));

    // Reads went as real GETs (no method override, refused since v27.0); nothing failed.
    let requests = sb.requests();
    let ops: Vec<&str> = requests.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(
        ops,
        [
            "list_audiences",
            "create_audience",
            "list_audiences",
            "read_audience",
            "add_users",
            "add_users",
            "remove_users",
            "replace_users"
        ]
    );
    for r in &requests {
        assert_eq!(r.status, 200, "{r:?}");
        if r.operation.starts_with("list") || r.operation.starts_with("read") {
            assert_eq!((r.http_method.as_str(), r.method.as_str()), ("GET", "GET"));
        }
    }
    assert_eq!(requests[6].http_method, "DELETE");
}

#[tokio::test]
async fn find_audience_by_name_follows_cursors_across_pages() {
    let sb = start().await;
    let c = client(&settings(&sb));
    let mut last = String::new();
    for i in 0..105 {
        last = c
            .create_custom_audience(ACCOUNT, &format!("aud {i:03}"), "")
            .await
            .unwrap();
    }
    assert_eq!(
        c.find_audience_by_name(ACCOUNT, "aud 104").await.unwrap(),
        Some(last)
    );
    assert_eq!(
        c.find_audience_by_name(ACCOUNT, "aud 105").await.unwrap(),
        None
    );
    let lists = sb
        .requests()
        .iter()
        .filter(|r| r.operation == "list_audiences")
        .count();
    assert_eq!(lists, 4, "two pages per search");
}

#[tokio::test]
async fn events_reach_the_pixel_with_test_code_and_partner_agent() {
    let sb = start().await;
    let c = client(&settings(&sb));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let events = vec![
        json!({"event_name": "Purchase", "event_time": now - 3600, "action_source": "physical_store",
               "event_id": "order-1", "user_data": {"em": [hash(1)]},
               "custom_data": {"value": 12.5, "currency": "usd"}}),
        json!({"event_name": "Purchase", "event_time": now - 60, "action_source": "system_generated",
               "event_id": "order-2", "user_data": {"ph": hash(2)},
               "custom_data": {"value": 3, "currency": "usd"}}),
    ];
    let r = c
        .send_events(
            "555000",
            &EventsRequest {
                data: &events,
                test_event_code: Some("TEST42"),
                partner_agent: Some("cdp-meta-sync"),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.events_received, 2);
    assert!(r.fbtrace_id.is_some());
    let got = sb.events("555000");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].test_event_code.as_deref(), Some("TEST42"));
    assert_eq!(got[0].partner_agent.as_deref(), Some("cdp-meta-sync"));
    assert_eq!(got[1].event["event_id"], "order-2");
}

#[tokio::test]
async fn an_invalid_event_is_a_permanent_error_naming_the_event() {
    let sb = start().await;
    let c = client(&settings(&sb));
    let events = vec![
        json!({"event_name": "Purchase", "action_source": "physical_store",
        "user_data": {"em": hash(1)}}),
    ];
    let e = c
        .send_events(
            "555000",
            &EventsRequest {
                data: &events,
                test_event_code: None,
                partner_agent: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.0), Some(100));
    assert_eq!(e.retry_class(), RetryClass::DontRetry);
    assert!(e.to_string().contains("event 0"), "{e}");
    assert_eq!(sb.requests().len(), 1);
}

#[tokio::test]
async fn the_sandbox_accepts_our_appsecret_proof_and_refuses_a_wrong_one() {
    let sb = start().await;
    let mut s = settings(&sb);
    client(&s)
        .create_custom_audience(ACCOUNT, "ok", "")
        .await
        .unwrap();
    s.app_secret = Some(SecretString::from("another-secret".to_string()));
    let e = client(&s)
        .create_custom_audience(ACCOUNT, "refused", "")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.0), Some(100), "{e}");
    assert_eq!(sb.requests().len(), 2, "no retry of a permanent error");
}

#[tokio::test]
async fn an_expired_token_fails_at_once_with_an_operator_readable_error() {
    let sb = start().await;
    sb.set_faults(Faults {
        token_error: true,
        ..Faults::default()
    });
    let e = client(&settings(&sb))
        .get_audience(ACCOUNT, "123")
        .await
        .unwrap_err();
    assert!(e.is_auth(), "{e}");
    assert_eq!(e.code(), Some((190, Some(463))));
    let text = e.to_string();
    assert!(
        text.starts_with("Meta error 190/463 (OAuthException): "),
        "{text}"
    );
    assert!(text.contains("(fbtrace_id "), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    assert_eq!(sb.requests().len(), 1);
}

#[tokio::test]
async fn injected_transient_errors_are_retried_until_the_batches_land() {
    let sb = start().await;
    let c = client(&settings(&sb));
    let id = c
        .create_custom_audience(ACCOUNT, "flaky", "")
        .await
        .unwrap();
    sb.set_faults(Faults {
        error_rate: 0.5,
        error_codes: vec![
            FaultCode::new(2),
            FaultCode::new(80_003),
            FaultCode {
                code: 2650,
                subcode: Some(1_870_145),
                is_transient: None,
            },
        ],
        ..Faults::default()
    });
    for batch in 1..=5u32 {
        let rows = vec![row(batch)];
        c.add_users(
            ACCOUNT,
            &id,
            &UsersUpload {
                schema: SCHEMA,
                rows: &rows,
                session: session(21, batch, batch == 5),
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(sb.members(&id).len(), 5);
    assert!(
        sb.requests().iter().any(|r| r.injected),
        "some calls failed"
    );
}

#[tokio::test]
async fn usage_near_the_limit_makes_the_next_call_wait_capped_by_settings() {
    let sb = start().await;
    let mut s = settings(&sb);
    s.throttle_max_wait_secs = 1;
    let c = client(&s);
    sb.set_faults(Faults {
        usage: Some(UsageFault {
            call_count_pct: 100,
            estimated_time_to_regain_access: 5,
        }),
        ..Faults::default()
    });
    c.create_custom_audience(ACCOUNT, "busy", "").await.unwrap();
    sb.set_faults(Faults::default());
    let start = std::time::Instant::now();
    c.find_audience_by_name(ACCOUNT, "busy").await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(990) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn too_large_batches_never_reach_the_sandbox() {
    let sb = start().await;
    let rows = vec![row(1); 10_001];
    let e = client(&settings(&sb))
        .add_users(
            ACCOUNT,
            "1",
            &UsersUpload {
                schema: SCHEMA,
                rows: &rows,
                session: session(1, 1, true),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::TooLarge { .. }));
    assert!(sb.requests().is_empty());
}
