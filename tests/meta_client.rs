//! `MetaClient` against wiremock: exact request shapes, retry and permanent codes, throttling
//! waits, and the token kept out of URLs, logs and errors.
//!
//! Timing tests run on a paused tokio clock and build the client with a timer-less reqwest
//! client (`MetaClient::with_http_client`): reqwest's own timeout timers would otherwise be
//! fired by the paused clock's auto-advance while the mock server (another thread) answers.
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use cdp_meta_sync::configuration::MetaSettings;
use cdp_meta_sync::meta::{
    Direction, EventsRequest, MetaClient, MetaError, RetryClass, UploadSession, UsersUpload,
    appsecret_proof,
};
use cdp_meta_sync::secret::SecretString;
use serde_json::{Value, json};
use tokio::time::Instant;
use wiremock::matchers::{any, body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "EAAtesttoken0123456789secret";
const APP_SECRET: &str = "app-secret-for-tests";

fn settings(uri: &str) -> MetaSettings {
    LazyLock::force(&LOGS);
    MetaSettings {
        graph_url: uri.to_string(),
        api_version: "v26.0".to_string(),
        access_token: None,
        app_secret: Some(SecretString::from(APP_SECRET.to_string())),
        request_timeout_secs: 10,
        connect_timeout_secs: 5,
        retry_max_attempts: 4,
        retry_min_delay_ms: 100,
        retry_max_delay_secs: 5,
        retry_max_elapsed_secs: 600,
        throttle_max_wait_secs: 900,
    }
}

fn token() -> SecretString {
    SecretString::from(TOKEN.to_string())
}

/// The production client (real clock).
fn client(s: &MetaSettings) -> MetaClient {
    MetaClient::new(s, token()).unwrap()
}

/// For paused-clock tests: no reqwest timers (see the module comment).
fn paused_client(s: &MetaSettings) -> MetaClient {
    let http = reqwest::Client::builder()
        .pool_idle_timeout(None)
        .build()
        .unwrap();
    MetaClient::with_http_client(s, token(), http).unwrap()
}

fn session(batch_seq: u32, last: bool) -> UploadSession {
    UploadSession {
        session_id: 9_001,
        batch_seq,
        last_batch_flag: last,
        estimated_num_total: Some(2),
    }
}

fn rows() -> Vec<Vec<String>> {
    vec![
        vec![
            "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79".to_string(),
            String::new(),
        ],
        vec![
            String::new(),
            "1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e".to_string(),
        ],
    ]
}

const SCHEMA: &[&str] = &["EMAIL", "PHONE"];

fn users_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"audience_id": "238", "session_id": "9001",
        "num_received": 2, "num_invalid_entries": 0, "invalid_entry_samples": {}}))
}

fn graph_error(code: i64, subcode: Option<i64>, transient: bool) -> ResponseTemplate {
    let status = if code == 1 || code == 2 { 500 } else { 400 };
    ResponseTemplate::new(status).set_body_json(json!({"error": {
        "message": format!("test error {code}"), "type": "OAuthException", "code": code,
        "error_subcode": subcode, "fbtrace_id": "AtraceXYZ", "is_transient": transient}}))
}

fn body(req: &Request) -> Value {
    serde_json::from_slice(&req.body).expect("a JSON body")
}

/// Every request carries the token (and proof) in its JSON body and nowhere in its URL.
/// The token travels in the Authorization header of every request and in the body of writes,
/// never in a URL; `appsecret_proof` goes with it (a read's query, a write's body); no request uses
/// a method override.
async fn assert_token_only_in_bodies(server: &MockServer) {
    let proof = appsecret_proof(APP_SECRET, TOKEN);
    let requests = server.received_requests().await.unwrap();
    assert!(!requests.is_empty());
    for req in requests {
        let url = req.url.as_str();
        assert!(!url.contains(TOKEN), "{url}");
        assert!(
            !url.contains("access_token") && !url.contains("method="),
            "{url}"
        );
        assert_eq!(
            req.headers.get("authorization").unwrap(),
            format!("Bearer {TOKEN}").as_str()
        );
        if req.method.as_str() == "GET" {
            assert!(req.body.is_empty(), "{url}");
            assert!(
                req.url
                    .query_pairs()
                    .any(|(k, v)| k == "appsecret_proof" && v == proof),
                "{url}"
            );
            continue;
        }
        assert!(!url.contains(&proof), "{url}");
        let b = body(&req);
        assert_eq!(b["access_token"], TOKEN);
        assert_eq!(b["appsecret_proof"], proof.as_str());
        assert_eq!(b.get("method"), None);
        assert_eq!(
            req.headers.get("content-type").unwrap(),
            "application/json",
            "{url}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Request shapes, one per operation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_custom_audience_posts_the_documented_fields_and_returns_the_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v26.0/act_123/customaudiences"))
        .and(body_partial_json(json!({"name": "cdp nuevo_sistema",
            "description": "managed by cdp-meta-sync", "subtype": "CUSTOM",
            "customer_file_source": "USER_PROVIDED_ONLY"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "23850001"})))
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&settings(&server.uri()));
    let id = c
        .create_custom_audience("act_123", "cdp nuevo_sistema", "managed by cdp-meta-sync")
        .await
        .unwrap();
    assert_eq!(id, "23850001");
    // A bare account number addresses the same account.
    c.create_custom_audience("123", "cdp nuevo_sistema", "managed by cdp-meta-sync")
        .await
        .unwrap();
    assert_token_only_in_bodies(&server).await;
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[1].url.path(), "/v26.0/act_123/customaudiences");
    assert!(requests[0].url.query().is_none());
    assert!(
        requests[0]
            .headers
            .get("user-agent")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("cdp-meta-sync/")
    );
}

#[tokio::test]
async fn get_audience_is_a_real_get_with_the_token_in_a_header_and_parses_statuses() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v26.0/238"))
        .and(query_param(
            "fields",
            "id,name,operation_status,delivery_status,approximate_count_lower_bound,approximate_count_upper_bound",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "238",
            "name": "cdp x", "operation_status": {"code": 200, "description": "Normal"},
            "delivery_status": {"code": 200, "description": "This audience is ready"},
            "approximate_count_lower_bound": 1000, "approximate_count_upper_bound": 1200})))
        .expect(1)
        .mount(&server)
        .await;
    let info = client(&settings(&server.uri()))
        .get_audience("act_123", "238")
        .await
        .unwrap();
    assert_eq!(info.id, "238");
    assert_eq!(info.name, "cdp x");
    assert_eq!(info.operation_status.unwrap().code, 200);
    assert_eq!(info.delivery_status.unwrap().code, 200);
    assert_eq!(info.approximate_count_lower_bound, Some(1000));
    assert_eq!(info.approximate_count_upper_bound, Some(1200));
    assert_token_only_in_bodies(&server).await;
}

#[tokio::test]
async fn find_audience_by_name_pages_with_cursors_and_never_follows_next_urls() {
    let server = MockServer::start().await;
    let leaky_next = format!(
        "{}/v26.0/act_123/customaudiences?access_token=LEAKED&after=c1",
        server.uri()
    );
    // Page 2 (cursor c1): the exact name, after a near miss.
    Mock::given(method("GET"))
        .and(path("/v26.0/act_123/customaudiences"))
        .and(query_param("after", "c1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"id": "7", "name": "cdp sistema "}, {"id": "8", "name": "cdp sistema"}],
            "paging": {"cursors": {"before": "c1b", "after": "c2"}}})))
        .expect(1)
        .mount(&server)
        .await;
    // Page 1: no match.
    Mock::given(method("GET"))
        .and(path("/v26.0/act_123/customaudiences"))
        .and(query_param("fields", "id,name"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"id": "5", "name": "other"}, {"id": "6", "name": "CDP SISTEMA"}],
            "paging": {"cursors": {"before": "c0", "after": "c1"}, "next": leaky_next}})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let c = client(&settings(&server.uri()));
    assert_eq!(
        c.find_audience_by_name("act_123", "cdp sistema")
            .await
            .unwrap(),
        Some("8".to_string())
    );
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].url.query_pairs().any(|(k, _)| k == "limit"));
    assert_token_only_in_bodies(&server).await;
}

#[tokio::test]
async fn find_audience_by_name_answers_none_after_the_last_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v26.0/act_123/customaudiences"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"id": "5", "name": "other"}],
            "paging": {"cursors": {"before": "a", "after": "b"}}})))
        .expect(1)
        .mount(&server)
        .await;
    let found = client(&settings(&server.uri()))
        .find_audience_by_name("act_123", "cdp sistema")
        .await
        .unwrap();
    assert_eq!(found, None);
}

#[tokio::test]
async fn add_users_posts_payload_and_session_and_parses_the_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v26.0/238/users"))
        .respond_with(users_ok())
        .expect(1)
        .mount(&server)
        .await;
    let rows = rows();
    let upload = UsersUpload {
        schema: SCHEMA,
        rows: &rows,
        session: session(1, false),
    };
    let r = client(&settings(&server.uri()))
        .upload_users(Direction::Add, "act_123", "238", &upload)
        .await
        .unwrap();
    assert_eq!(r.audience_id.as_deref(), Some("238"));
    assert_eq!(r.session_id.as_deref(), Some("9001"));
    assert_eq!((r.num_received, r.num_invalid_entries), (2, 0));
    let req = &server.received_requests().await.unwrap()[0];
    let b = body(req);
    assert_eq!(b["payload"]["schema"], json!(["EMAIL", "PHONE"]));
    assert_eq!(b["payload"]["data"], json!(rows));
    assert_eq!(
        b["session"],
        json!({"session_id": 9001, "batch_seq": 1, "last_batch_flag": false, "estimated_num_total": 2})
    );
    assert_token_only_in_bodies(&server).await;
}

#[tokio::test]
async fn remove_users_is_an_http_delete_with_the_same_json_body() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/v26.0/238/users"))
        .and(body_partial_json(
            json!({"payload": {"schema": ["EMAIL", "PHONE"]},
            "session": {"session_id": 9001, "batch_seq": 2, "last_batch_flag": true}}),
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"audience_id": "238",
            "session_id": 9001, "num_received": 4, "num_invalid_entries": 1,
            "invalid_entry_samples": ["bad"]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let rows = rows();
    let upload = UsersUpload {
        schema: SCHEMA,
        rows: &rows,
        session: session(2, true),
    };
    let r = client(&settings(&server.uri()))
        .upload_users(Direction::Remove, "act_123", "238", &upload)
        .await
        .unwrap();
    assert_eq!(r.session_id.as_deref(), Some("9001"));
    assert_eq!(r.invalid_entry_samples, vec!["bad"]);
    assert_token_only_in_bodies(&server).await;
}

#[tokio::test]
async fn replace_users_posts_to_usersreplace() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v26.0/238/usersreplace"))
        .and(body_partial_json(
            json!({"session": {"session_id": 9001, "batch_seq": 1}}),
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"account_id": "123",
            "session_id": "9001", "num_received": 2, "num_invalid_entries": 0,
            "invalid_entry_samples": {"x": "y"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let rows = rows();
    let upload = UsersUpload {
        schema: SCHEMA,
        rows: &rows,
        session: session(1, false),
    };
    let r = client(&settings(&server.uri()))
        .upload_users(Direction::Replace, "act_123", "238", &upload)
        .await
        .unwrap();
    assert_eq!(r.num_received, 2);
    assert_eq!(r.invalid_entry_samples, vec!["x: y"]);
    assert_token_only_in_bodies(&server).await;
}

#[tokio::test]
async fn send_events_posts_data_test_code_and_partner_agent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v26.0/555/events"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"events_received": 2,
            "messages": [], "fbtrace_id": "AevTrace"})),
        )
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&settings(&server.uri()));
    let events = vec![
        json!({"event_name": "Purchase", "event_time": 1_700_000_000, "action_source": "physical_store",
               "event_id": "o-1", "user_data": {"em": ["f1904cf1"]}, "custom_data": {"value": 10.5, "currency": "usd"}}),
        json!({"event_name": "Purchase", "event_time": 1_700_000_001, "action_source": "website",
               "event_id": "o-2", "user_data": {"ph": ["1ef97083"]}}),
    ];
    let r = c
        .send_events(
            "555",
            &EventsRequest {
                data: &events,
                test_event_code: Some("TEST123"),
                partner_agent: Some("cdp-meta-sync"),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.events_received, 2);
    assert_eq!(r.fbtrace_id.as_deref(), Some("AevTrace"));
    c.send_events(
        "555",
        &EventsRequest {
            data: &events,
            test_event_code: None,
            partner_agent: None,
        },
    )
    .await
    .unwrap();
    let requests = server.received_requests().await.unwrap();
    let first = body(&requests[0]);
    assert_eq!(first["data"], json!(events));
    assert_eq!(first["test_event_code"], "TEST123");
    assert_eq!(first["partner_agent"], "cdp-meta-sync");
    let second = body(&requests[1]);
    assert!(second.get("test_event_code").is_none() && second.get("partner_agent").is_none());
    assert_token_only_in_bodies(&server).await;
}

#[tokio::test]
async fn without_an_app_secret_no_proof_is_sent() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "1"})))
        .mount(&server)
        .await;
    let mut s = settings(&server.uri());
    s.app_secret = None;
    client(&s)
        .create_custom_audience("act_1", "n", "d")
        .await
        .unwrap();
    let b = body(&server.received_requests().await.unwrap()[0]);
    assert_eq!(b["access_token"], TOKEN);
    assert!(b.get("appsecret_proof").is_none());
}

#[tokio::test]
async fn too_many_rows_are_refused_without_any_request() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(users_ok())
        .expect(0)
        .mount(&server)
        .await;
    let rows = vec![vec![String::new(), String::new()]; 10_001];
    let upload = UsersUpload {
        schema: SCHEMA,
        rows: &rows,
        session: session(1, true),
    };
    let e = client(&settings(&server.uri()))
        .upload_users(Direction::Add, "act_1", "238", &upload)
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        MetaError::TooLarge {
            rows: 10_001,
            max: 10_000
        }
    ));
}

#[tokio::test]
async fn a_full_10000_row_batch_is_sent_in_one_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v26.0/238/users"))
        .respond_with(users_ok())
        .expect(1)
        .mount(&server)
        .await;
    let cell = "a".repeat(64);
    let rows = vec![vec![cell.clone(), cell.clone(), cell.clone(), cell]; 10_000];
    let upload = UsersUpload {
        schema: &["EMAIL", "PHONE", "FN", "LN"],
        rows: &rows,
        session: session(1, true),
    };
    client(&settings(&server.uri()))
        .upload_users(Direction::Add, "act_1", "238", &upload)
        .await
        .unwrap();
    let req = &server.received_requests().await.unwrap()[0];
    assert!(req.body.len() > 2_600_000, "{}", req.body.len());
    assert_eq!(
        body(req)["payload"]["data"].as_array().unwrap().len(),
        10_000
    );
}

// ---------------------------------------------------------------------------------------------
// Retries and permanent errors
// ---------------------------------------------------------------------------------------------

/// Fails once with `failure`, then answers `{"id":"42"}`; returns the call result and requests.
async fn fail_once_then_succeed(
    failure: ResponseTemplate,
) -> (Result<String, MetaError>, usize, Duration) {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(failure)
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "42"})))
        .mount(&server)
        .await;
    let c = paused_client(&settings(&server.uri()));
    let start = Instant::now();
    let result = c.create_custom_audience("act_1", "n", "d").await;
    let elapsed = start.elapsed();
    (
        result,
        server.received_requests().await.unwrap().len(),
        elapsed,
    )
}

#[tokio::test(start_paused = true)]
async fn each_retryable_code_is_retried_then_succeeds() {
    let mut cases: Vec<(i64, Option<i64>, bool)> = vec![
        (1, None, false),
        (2, None, false),
        (4, None, false),
        (17, None, false),
        (17, Some(2_446_079), false),
        (32, None, false),
        (341, None, false),
        (368, None, false),
        (613, None, false),
        (613, Some(1_487_742), false),
        (2650, Some(1_870_145), false),
        (2650, Some(1_870_148), false),
        (21_009, None, true), // an unknown code Meta calls transient
    ];
    cases.extend((80_000..=80_014).map(|c| (c, None, false)));
    for (code, sub, transient) in cases {
        let (result, requests, elapsed) =
            fail_once_then_succeed(graph_error(code, sub, transient)).await;
        assert_eq!(result.unwrap(), "42", "{code}/{sub:?}");
        assert_eq!(requests, 2, "{code}/{sub:?}");
        // One full-jitter backoff of at most `retry_min_delay` (100 ms), on the paused clock.
        assert!(elapsed <= Duration::from_millis(100), "{code}: {elapsed:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn http_5xx_without_meta_json_and_429_are_retried_a_5xx_create_after_a_lookup_by_name() {
    for status in [500, 502, 503, 504, 429] {
        let (result, requests, _) = fail_once_then_succeed(
            ResponseTemplate::new(status).set_body_string("<html>bad gateway</html>"),
        )
        .await;
        assert_eq!(result.unwrap(), "42", "{status}");
        // A 5xx without Meta's JSON may come from a proxy that forwarded the create: the retry
        // first lists the account's audiences (none named "n" here), then creates again.
        let expected = if status >= 500 { 3 } else { 2 };
        assert_eq!(requests, expected, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn each_permanent_code_fails_after_exactly_one_request_with_the_typed_error() {
    let mut cases: Vec<(i64, Option<i64>)> = vec![
        (100, None),
        (100, Some(33)),
        (100, Some(1_713_230)),
        (190, None),
        (190, Some(458)),
        (190, Some(460)),
        (190, Some(463)),
        (190, Some(467)),
        (10, None),
        (200, None),
        (200, Some(1_870_034)),
        (200, Some(1_870_047)),
        (200, Some(1_870_090)),
        (270, None),
        (294, None),
        (2635, None),
        (2654, None),
        (2656, None),
        (2663, None),
        (2664, None),
        (2650, None),
        (2650, Some(1_870_147)),
        (2650, Some(1_870_158)),
        (2650, Some(1_870_159)),
    ];
    cases.push((299, None));
    for (code, sub) in cases {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(graph_error(code, sub, false))
            .expect(1)
            .mount(&server)
            .await;
        let e = paused_client(&settings(&server.uri()))
            .create_custom_audience("act_1", "n", "d")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some((code, sub)), "{e}");
        assert_eq!(e.retry_class(), RetryClass::DontRetry, "{e}");
        let MetaError::Graph(g) = &e else {
            panic!("expected a Graph error, got {e:?}")
        };
        assert_eq!(g.fbtrace_id.as_deref(), Some("AtraceXYZ"));
        assert_eq!(g.error_type, "OAuthException");
        assert_eq!(g.http_status, 400);
        assert_eq!(e.is_auth(), code == 190, "{e}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "{e}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_persistent_failure_stops_after_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(graph_error(2, None, true))
        .mount(&server)
        .await;
    let e = paused_client(&settings(&server.uri()))
        .create_custom_audience("act_1", "n", "d")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some((2, None)));
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_past_the_max_elapsed_budget() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "40"))
        .mount(&server)
        .await;
    let mut s = settings(&server.uri());
    s.retry_max_attempts = 10;
    s.retry_max_elapsed_secs = 100;
    let start = Instant::now();
    let e = paused_client(&s)
        .create_custom_audience("act_1", "n", "d")
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::Http { status: 503 }), "{e:?}");
    // Waits of 40 s: attempts at 0, 40, 80; a fourth would start at 120 > 100.
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    assert_eq!(start.elapsed(), Duration::from_secs(80));
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout_and_is_retried() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "1"}))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let mut s = settings(&server.uri());
    s.request_timeout_secs = 1;
    s.retry_max_attempts = 2;
    s.retry_min_delay_ms = 10;
    let e = client(&s).get_audience("act_1", "1").await.unwrap_err();
    assert!(matches!(e, MetaError::Timeout), "{e:?}");
    assert_eq!(e.retry_class(), RetryClass::Retry);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error_without_the_url() {
    // Bind then drop a listener: the port is closed for the duration of the test.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = settings(&format!("http://127.0.0.1:{port}"));
    s.retry_max_attempts = 2;
    s.retry_min_delay_ms = 1;
    let e = client(&s).get_audience("act_1", "238").await.unwrap_err();
    let MetaError::Connect(text) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(e.retry_class(), RetryClass::Retry);
    assert!(!e.outcome_unknown(), "never sent");
    assert!(
        !text.contains("127.0.0.1") && !text.contains("fields"),
        "{text}"
    );
}

#[tokio::test]
async fn a_success_status_with_json_of_another_shape_is_a_decode_error_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"unexpected": true})))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&settings(&server.uri()))
        .create_custom_audience("act_1", "n", "d")
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::Decode(_)), "{e:?}");
}

#[tokio::test]
async fn a_success_status_with_a_body_that_is_not_json_is_retried_a_bounded_number_of_times() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(r#"{"id":"2385","name":"cut of"#, "application/json"),
        )
        .expect(4)
        .mount(&server)
        .await;
    let e = client(&settings(&server.uri()))
        .get_audience("act_1", "2385")
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::NotJson { status: 200, .. }), "{e:?}");
    assert!(e.outcome_unknown());
    let text = e.to_string();
    assert!(
        text.starts_with("Meta's answer was not JSON (200, application/json): EOF"),
        "{text}"
    );
    assert!(
        !text.contains("2385") && !text.contains("Meta error"),
        "{text}"
    );
}

#[tokio::test]
async fn a_proxy_html_page_is_not_json_named_by_status_and_content_type_without_the_page() {
    let server = MockServer::start().await;
    let page =
        "<html><head><title>502 Bad Gateway</title></head><body>upstream 10.0.0.7</body></html>";
    Mock::given(any())
        .respond_with(ResponseTemplate::new(502).set_body_raw(page, "text/html; charset=utf-8"))
        .mount(&server)
        .await;
    let mut s = settings(&server.uri());
    s.retry_max_attempts = 2;
    s.retry_min_delay_ms = 1;
    let e = client(&s).get_audience("act_1", "238").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "Meta's answer was not JSON (502, text/html; charset=utf-8)"
    );
    assert_eq!(e.retry_class(), RetryClass::Retry);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_create_whose_answer_timed_out_is_looked_up_by_name_over_pages_before_a_retry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v26.0/act_1/customaudiences"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "777"}))
                .set_delay(Duration::from_secs(3)),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v26.0/act_1/customaudiences"))
        .and(query_param("after", "C1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"id": "777", "name": "mine"}],
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v26.0/act_1/customaudiences"))
        .and(query_param("fields", "id,name"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"id": "1", "name": "other"}],
            "paging": {"cursors": {"after": "C1"}, "next": "https://graph.example/next"},
        })))
        .expect(1..)
        .mount(&server)
        .await;
    let mut s = settings(&server.uri());
    s.request_timeout_secs = 1;
    s.retry_min_delay_ms = 1;
    let id = client(&s)
        .create_custom_audience("act_1", "mine", "d")
        .await
        .unwrap();
    assert_eq!(id, "777");
}

#[tokio::test]
async fn an_error_envelope_under_http_200_is_still_an_error() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"error": {"message": "Invalid parameter", "type": "OAuthException", "code": 100}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&settings(&server.uri()))
        .create_custom_audience("act_1", "n", "d")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some((100, None)));
    assert_eq!(
        e.to_string(),
        "Meta error 100 (OAuthException): Invalid parameter"
    );
}

// ---------------------------------------------------------------------------------------------
// Throttling
// ---------------------------------------------------------------------------------------------

fn buc(account: &str, regain_minutes: u64, call_count: u64) -> String {
    json!({account: [{"type": "custom_audience", "call_count": call_count, "total_cputime": 1,
        "total_time": 1, "estimated_time_to_regain_access": regain_minutes}]})
    .to_string()
}

async fn answer_with_buc_then_ok(server: &MockServer, header_value: String) {
    Mock::given(any())
        .respond_with(users_ok().insert_header("x-business-use-case-usage", header_value))
        .up_to_n_times(1)
        .mount(server)
        .await;
    Mock::given(any())
        .respond_with(users_ok())
        .mount(server)
        .await;
}

async fn add_two_users(c: &MetaClient, account: &str) {
    let rows = rows();
    let upload = UsersUpload {
        schema: SCHEMA,
        rows: &rows,
        session: session(1, false),
    };
    c.upload_users(Direction::Add, account, "238", &upload)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn regain_access_in_two_minutes_makes_the_next_call_wait_120_seconds() {
    let server = MockServer::start().await;
    answer_with_buc_then_ok(&server, buc("123", 2, 100)).await;
    let c = paused_client(&settings(&server.uri()));
    add_two_users(&c, "act_123").await;
    let start = Instant::now();
    add_two_users(&c, "act_123").await;
    assert_eq!(start.elapsed(), Duration::from_secs(120));
    // The budget is per ad account: another account goes at once.
    let start = Instant::now();
    add_two_users(&c, "act_456").await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_told_wait_is_capped_by_throttle_max_wait() {
    let server = MockServer::start().await;
    answer_with_buc_then_ok(&server, buc("123", 60, 100)).await;
    let mut s = settings(&server.uri());
    s.throttle_max_wait_secs = 300;
    let c = paused_client(&s);
    add_two_users(&c, "123").await;
    let start = Instant::now();
    add_two_users(&c, "act_123").await;
    assert_eq!(start.elapsed(), Duration::from_secs(300));
}

#[tokio::test(start_paused = true)]
async fn usage_near_the_limit_pauses_the_next_call() {
    let server = MockServer::start().await;
    answer_with_buc_then_ok(&server, buc("123", 0, 97)).await;
    let c = paused_client(&settings(&server.uri()));
    add_two_users(&c, "act_123").await;
    let start = Instant::now();
    add_two_users(&c, "act_123").await;
    assert_eq!(
        start.elapsed(),
        cdp_meta_sync::meta::NEAR_LIMIT_PAUSE,
        "≥ 95 % without a told time pauses one block"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttling_error_is_retried_after_the_told_wait() {
    let server = MockServer::start().await;
    let throttled = graph_error(80_003, Some(2_446_079), false)
        .insert_header("x-business-use-case-usage", buc("123", 1, 100));
    Mock::given(any())
        .respond_with(throttled)
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(users_ok())
        .mount(&server)
        .await;
    let c = paused_client(&settings(&server.uri()));
    let start = Instant::now();
    add_two_users(&c, "act_123").await;
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let (result, requests, elapsed) =
        fail_once_then_succeed(ResponseTemplate::new(503).insert_header("retry-after", "30")).await;
    assert_eq!(result.unwrap(), "42");
    assert_eq!(
        requests, 3,
        "create, lookup by name (the 503's outcome is unknown), create"
    );
    assert_eq!(elapsed, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn app_usage_near_the_limit_holds_back_every_account() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(users_ok().insert_header(
            "x-app-usage",
            r#"{"call_count":99,"total_cputime":10,"total_time":10}"#,
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(users_ok())
        .mount(&server)
        .await;
    let c = paused_client(&settings(&server.uri()));
    add_two_users(&c, "act_123").await;
    let start = Instant::now();
    add_two_users(&c, "act_456").await;
    assert_eq!(start.elapsed(), cdp_meta_sync::meta::NEAR_LIMIT_PAUSE);
}

#[tokio::test(start_paused = true)]
async fn events_are_throttled_per_pixel() {
    let server = MockServer::start().await;
    let ok = || {
        ResponseTemplate::new(200)
            .set_body_json(json!({"events_received": 1, "messages": [], "fbtrace_id": "t"}))
    };
    Mock::given(any())
        .respond_with(ok().insert_header("retry-after", "15"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(any()).respond_with(ok()).mount(&server).await;
    let c = paused_client(&settings(&server.uri()));
    let data = vec![json!({"event_name": "Purchase"})];
    let req = EventsRequest {
        data: &data,
        test_event_code: None,
        partner_agent: None,
    };
    c.send_events("555", &req).await.unwrap();
    let start = Instant::now();
    c.send_events("777", &req).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    c.send_events("555", &req).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(15));
}

// ---------------------------------------------------------------------------------------------
// The token never leaks
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of every test in this binary, at TRACE. Installed globally (before any client
/// exists, via `settings()`): a thread-local `set_default` races with tracing's callsite cache
/// when tests run in parallel, and loses events.
static LOGS: LazyLock<Captured> = LazyLock::new(|| {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    logs
});

#[tokio::test(start_paused = true)]
async fn the_token_is_absent_from_urls_logs_and_error_strings() {
    let server = MockServer::start().await;
    // Meta echoes a malformed token in some messages; the client must scrub it.
    Mock::given(path("/v26.0/act_1/customaudiences"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": format!("Malformed access token {TOKEN}"), "type": "OAuthException",
            "code": 190, "error_subcode": 467, "fbtrace_id": "AtraceXYZ",
            "error_user_msg": format!("token {TOKEN} is invalid")}})))
        .mount(&server)
        .await;
    Mock::given(path("/v26.0/238/users"))
        .respond_with(graph_error(2, None, true))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/v26.0/238/users"))
        .respond_with(users_ok())
        .mount(&server)
        .await;

    let c = paused_client(&settings(&server.uri()));
    let mut errors = Vec::new();
    let e = c
        .create_custom_audience("act_1", "n", "d")
        .await
        .unwrap_err();
    errors.push(e.to_string());
    errors.push(format!("{e:?}"));
    errors.push(format!("{c:?}"));
    add_two_users(&c, "act_1").await;
    let e = c.find_audience_by_name("act_1", "x").await.unwrap_err();
    errors.push(e.to_string());
    let closed = paused_client(&settings("http://127.0.0.1:1"));
    let e = closed.get_audience("act_1", "238").await.unwrap_err();
    errors.push(e.to_string());

    let proof = appsecret_proof(APP_SECRET, TOKEN);
    let logs = String::from_utf8(LOGS.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("retrying"), "the retry was logged: {logs}");
    for secret in [TOKEN, proof.as_str(), APP_SECRET] {
        assert!(!logs.contains(secret), "{secret} in logs:\n{logs}");
        for text in &errors {
            assert!(!text.contains(secret), "{secret} in error: {text}");
        }
    }
    assert!(errors[0].contains("[redacted]"), "{}", errors[0]);
    for req in server.received_requests().await.unwrap() {
        assert!(!req.url.as_str().contains(TOKEN), "{}", req.url);
        // A GET has no body: Meta takes appsecret_proof (worthless without the token) as a
        // query parameter there; writes carry it in their body.
        if req.method.as_str() != "GET" {
            assert!(!req.url.as_str().contains(&proof), "{}", req.url);
        }
    }
    // Payload cells never reach the logs either.
    assert!(!logs.contains("f1904cf1a9d73a55"), "{logs}");
}
