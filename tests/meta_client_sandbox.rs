//! `MetaClient` against the local Meta sandbox: every operation's happy path end to end, plus
//! the sandbox's own checks of what the client sends (appsecret_proof, method override, sessions).
use std::time::Duration;

use cdp_meta_sync::configuration::MetaSettings;
use cdp_meta_sync::meta::{
    Direction, EventsRequest, MetaClient, MetaError, RetryClass, UploadSession, UsersUpload,
};
use cdp_meta_sync::secret::SecretString;
use meta_sandbox::{
    self as sandbox, FaultCode, Faults, Sandbox, SandboxOptions, UsageFault, WireFault,
    WireFaultKind, WireTarget,
};
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
        .upload_users(
            Direction::Add,
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
        .upload_users(
            Direction::Add,
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
    c.upload_users(
        Direction::Remove,
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
        .upload_users(
            Direction::Replace,
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
        c.upload_users(
            Direction::Add,
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
        .upload_users(
            Direction::Add,
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

// ---------------------------------------------------------------- answers lost on the wire

const KINDS: [WireFaultKind; 4] = [
    WireFaultKind::DropAfterSuccess,
    WireFaultKind::BadGatewayHtml,
    WireFaultKind::TruncatedJson,
    WireFaultKind::SlowBody,
];

/// Settings whose request timeout (1 s) a slow body (30 s by default) outlasts.
fn wire_settings(sb: &Sandbox) -> MetaSettings {
    MetaSettings {
        request_timeout_secs: 1,
        retry_max_attempts: 4,
        ..settings(sb)
    }
}

fn wire_fault(kind: WireFaultKind, on: WireTarget, times: u32) -> Faults {
    Faults {
        wire: vec![WireFault {
            times,
            ..WireFault::new(kind, on)
        }],
        ..Faults::default()
    }
}

fn calls(sb: &Sandbox, operation: &str) -> usize {
    sb.requests()
        .iter()
        .filter(|r| r.operation == operation)
        .count()
}

#[tokio::test]
async fn an_audience_create_whose_answer_is_lost_ends_with_exactly_one_audience_of_that_name() {
    for kind in KINDS {
        let sb = start().await;
        // Enough other audiences that the lookup by name pages (100 a page).
        for i in 0..150 {
            sb.state()
                .create_audience(
                    "1234567890",
                    &format!("other {i}"),
                    None,
                    "USER_PROVIDED_ONLY",
                    false,
                )
                .unwrap();
        }
        sb.set_faults(wire_fault(kind, WireTarget::AudienceCreate, 1));
        let id = client(&wire_settings(&sb))
            .create_custom_audience(ACCOUNT, "lost answer", "")
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let named: Vec<_> = sb
            .audiences()
            .into_iter()
            .filter(|a| a.name == "lost answer")
            .collect();
        assert_eq!(named.len(), 1, "{kind:?}: {named:?}");
        assert_eq!(named[0].id, id, "{kind:?}");
        assert!(
            calls(&sb, "list_audiences") >= 1,
            "{kind:?}: looked up by name"
        );
        let creates = calls(&sb, "create_audience");
        match kind {
            // The 502 never reached Meta: nothing found, created again.
            WireFaultKind::BadGatewayHtml => assert_eq!(creates, 2, "{kind:?}"),
            _ => assert_eq!(creates, 1, "{kind:?}: found, not created again"),
        }
    }
}

#[tokio::test]
async fn an_audience_create_answered_by_502_pages_every_time_gives_up_after_the_attempt_budget() {
    let sb = start().await;
    sb.set_faults(wire_fault(
        WireFaultKind::BadGatewayHtml,
        WireTarget::AudienceCreate,
        100,
    ));
    let e = client(&wire_settings(&sb))
        .create_custom_audience(ACCOUNT, "never", "")
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "Meta's answer was not JSON (502, text/html)");
    assert_eq!(e.retry_class(), RetryClass::Retry);
    assert!(e.outcome_unknown());
    assert_eq!(calls(&sb, "create_audience"), 4, "retry_max_attempts");
    assert!(sb.audiences().is_empty());
}

#[tokio::test]
async fn a_replace_upload_whose_first_batch_answer_is_lost_ends_with_the_uploaded_set() {
    for kind in KINDS {
        for batches in [1u32, 3] {
            let sb = start().await;
            let c = client(&wire_settings(&sb));
            let id = c
                .create_custom_audience(ACCOUNT, "replaced", "")
                .await
                .unwrap();
            let old = vec![row(100), row(101)];
            c.upload_users(
                Direction::Add,
                ACCOUNT,
                &id,
                &UsersUpload {
                    schema: SCHEMA,
                    rows: &old,
                    session: session(60, 1, true),
                },
            )
            .await
            .unwrap();
            sb.set_faults(wire_fault(kind, WireTarget::ReplaceFirstBatch, 1));
            let mut last = None;
            for seq in 1..=batches {
                let rows = vec![row(seq * 2), row(seq * 2 + 1)];
                let r = c
                    .upload_users(
                        Direction::Replace,
                        ACCOUNT,
                        &id,
                        &UsersUpload {
                            schema: SCHEMA,
                            rows: &rows,
                            session: session(61, seq, seq == batches),
                        },
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{kind:?}, {batches} batches, batch {seq}: {e}"));
                last = Some(r);
            }
            let mut members: Vec<String> =
                sb.members(&id).iter().map(|m| m["EMAIL"].clone()).collect();
            members.sort();
            let mut expected: Vec<String> = (2..2 + 2 * batches).map(hash).collect();
            expected.sort();
            assert_eq!(members, expected, "{kind:?}, {batches} batches");
            assert_eq!(
                last.unwrap().num_received,
                u64::from(2 * batches),
                "{kind:?}, {batches} batches: the session's total"
            );
            assert!(sb.faults().wire.is_empty(), "{kind:?}: the fault was hit");
        }
    }
}

#[tokio::test]
async fn users_batches_whose_answers_are_lost_are_resent_and_counted_once() {
    for kind in KINDS {
        let sb = start().await;
        let c = client(&wire_settings(&sb));
        let id = c
            .create_custom_audience(ACCOUNT, "added", "")
            .await
            .unwrap();
        sb.set_faults(wire_fault(kind, WireTarget::UsersWrite, 2));
        let mut totals = Vec::new();
        for seq in 1..=2u32 {
            let rows = vec![row(seq * 2), row(seq * 2 + 1)];
            let r = c
                .upload_users(
                    Direction::Add,
                    ACCOUNT,
                    &id,
                    &UsersUpload {
                        schema: SCHEMA,
                        rows: &rows,
                        session: session(70, seq, seq == 2),
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("{kind:?}, batch {seq}: {e}"));
            totals.push(r.num_received);
        }
        assert_eq!(totals, [2, 4], "{kind:?}");
        assert_eq!(sb.members(&id).len(), 4, "{kind:?}");
    }
}

fn capi_event(id: &str) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({
        "event_name": "Purchase",
        "event_time": now - 60,
        "event_id": id,
        "action_source": "system_generated",
        "user_data": {"em": [hash(9)]},
        "custom_data": {"value": 10.0, "currency": "EUR"},
    })
}

#[tokio::test]
async fn events_whose_answer_is_lost_are_resent_and_meta_keeps_one_copy_of_each() {
    for kind in [
        WireFaultKind::DropAfterSuccess,
        WireFaultKind::TruncatedJson,
    ] {
        let sb = start().await;
        sb.set_faults(wire_fault(kind, WireTarget::Events, 1));
        let data = vec![capi_event("e-1"), capi_event("e-2")];
        let r = client(&wire_settings(&sb))
            .send_events(
                "5550001",
                &EventsRequest {
                    data: &data,
                    test_event_code: None,
                    partner_agent: None,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(r.events_received, 2, "{kind:?}");
        let received = sb.events("5550001");
        assert_eq!(received.len(), 4, "{kind:?}: sent twice");
        let kept: Vec<&str> = received
            .iter()
            .filter(|e| !e.duplicate)
            .map(|e| e.event["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(kept, ["e-1", "e-2"], "{kind:?}");
    }
}

#[tokio::test]
async fn events_whose_answers_keep_being_cut_off_are_sent_a_bounded_number_of_times() {
    let sb = start().await;
    sb.set_faults(wire_fault(
        WireFaultKind::TruncatedJson,
        WireTarget::Events,
        100,
    ));
    let data = vec![capi_event("e-1")];
    let e = client(&wire_settings(&sb))
        .send_events(
            "5550002",
            &EventsRequest {
                data: &data,
                test_event_code: None,
                partner_agent: None,
            },
        )
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("Meta's answer was not JSON (200, application/json): EOF"),
        "{text}"
    );
    assert!(
        !text.contains("Meta error") && !text.contains("events_received"),
        "{text}"
    );
    assert_eq!(calls(&sb, "send_events"), 4, "retry_max_attempts");
}

#[tokio::test]
async fn a_502_html_page_on_an_upload_is_reported_as_not_json_without_echoing_the_page() {
    let sb = start().await;
    let c = client(&wire_settings(&sb));
    let id = c
        .create_custom_audience(ACCOUNT, "proxied", "")
        .await
        .unwrap();
    sb.set_faults(wire_fault(
        WireFaultKind::BadGatewayHtml,
        WireTarget::UsersWrite,
        100,
    ));
    let rows = vec![row(1)];
    let e = c
        .upload_users(
            Direction::Remove,
            ACCOUNT,
            &id,
            &UsersUpload {
                schema: SCHEMA,
                rows: &rows,
                session: session(80, 1, true),
            },
        )
        .await
        .unwrap_err();
    let text = e.to_string();
    assert_eq!(text, "Meta's answer was not JSON (502, text/html)");
    assert!(!text.contains("nginx"), "{text}");
    assert_eq!(calls(&sb, "remove_users"), 4, "bounded");
}
