//! The Meta sandbox against Meta's documented behaviour: one test per validation rule (error
//! code, type, message shape, HTTP status), session and replace semantics, events, faults and
//! inspection. Everything goes over HTTP with reqwest, as the worker's client would.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use meta_sandbox::{
    AudienceStatus, FaultCode, Faults, Sandbox, SandboxOptions, UsageFault, WireFault,
    WireFaultKind, WireTarget, spawn,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const V: &str = "v27.0";
const TOKEN: &str = "EAAB-test-token-never-logged";

fn sha(s: &str) -> String {
    const_hex::encode(Sha256::digest(s.as_bytes()))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct App {
    sb: Sandbox,
    http: reqwest::Client,
}

struct Reply {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Reply {
    fn code(&self) -> Option<i64> {
        self.body["error"]["code"].as_i64()
    }
    fn subcode(&self) -> Option<i64> {
        self.body["error"]["error_subcode"].as_i64()
    }
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
    /// Asserts a Graph error: HTTP status, code, type, and a message and fbtrace_id present.
    fn assert_error(&self, status: u16, code: i64) {
        assert_eq!(self.status, status, "status; body {}", self.body);
        assert_eq!(self.code(), Some(code), "code; body {}", self.body);
        let e = &self.body["error"];
        assert!(e["type"].is_string(), "type; body {}", self.body);
        assert!(!self.message().is_empty(), "message; body {}", self.body);
        assert!(e["fbtrace_id"].as_str().is_some_and(|t| t.len() == 11));
    }
}

async fn app() -> App {
    app_with(SandboxOptions::default()).await
}

async fn app_with(options: SandboxOptions) -> App {
    App {
        sb: spawn(options).await.expect("sandbox starts"),
        http: reqwest::Client::new(),
    }
}

impl App {
    fn url(&self, path: &str) -> String {
        format!("{}/{V}/{path}", self.sb.base_url())
    }

    /// A URL with a query string (how Meta's SDKs send reads).
    fn url_with(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Url {
        reqwest::Url::parse_with_params(&self.url(path), query).unwrap()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.json().await.unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
        }
    }

    /// POST a JSON body, with the token unless the body already says otherwise. A body with
    /// `"method": "GET"` or `"DELETE"` is sent as that real method (method override is refused
    /// since Graph API v27.0): a GET with its parameters in the query string, a DELETE with the
    /// JSON body.
    async fn post(&self, path: &str, mut body: Value) -> Reply {
        if body.get("access_token").is_none() {
            body["access_token"] = json!(TOKEN);
        }
        if body["access_token"].is_null() {
            body.as_object_mut().unwrap().remove("access_token");
        }
        let method = body
            .as_object_mut()
            .unwrap()
            .remove("method")
            .and_then(|m| m.as_str().map(str::to_string));
        match method.as_deref() {
            Some("GET") => {
                let query: Vec<(String, String)> = body
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => (k.clone(), s.clone()),
                        other => (k.clone(), other.to_string()),
                    })
                    .collect();
                let url = reqwest::Url::parse_with_params(&self.url(path), &query).unwrap();
                self.send(self.http.get(url)).await
            }
            Some("DELETE") => {
                self.send(self.http.delete(self.url(path)).json(&body))
                    .await
            }
            _ => self.send(self.http.post(self.url(path)).json(&body)).await,
        }
    }

    /// POST exactly this body (a method override included).
    async fn post_raw(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    async fn create(&self, act: &str) -> String {
        let r = self
            .post(
                &format!("{act}/customaudiences"),
                json!({"name":"CDP","subtype":"CUSTOM","customer_file_source":"USER_PROVIDED_ONLY"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    async fn users(&self, id: &str, payload: Value, session: Option<Value>) -> Reply {
        let mut body = json!({ "payload": payload });
        if let Some(s) = session {
            body["session"] = s;
        }
        self.post(&format!("{id}/users"), body).await
    }

    async fn remove(&self, id: &str, payload: Value, session: Option<Value>) -> Reply {
        let mut body = json!({ "payload": payload, "access_token": TOKEN });
        if let Some(s) = session {
            body["session"] = s;
        }
        self.send(
            self.http
                .delete(self.url(&format!("{id}/users")))
                .json(&body),
        )
        .await
    }

    async fn replace(
        &self,
        id: &str,
        rows: &[[&str; 2]],
        seq: i64,
        session: u64,
        last: bool,
    ) -> Reply {
        self.post(
            &format!("{id}/usersreplace"),
            json!({
                "payload": email_fn(rows),
                "session": {"session_id": session, "batch_seq": seq, "last_batch_flag": last},
            }),
        )
        .await
    }

    async fn events(&self, pixel: &str, data: Value) -> Reply {
        self.post(&format!("{pixel}/events"), json!({ "data": data }))
            .await
    }

    fn member_set(&self, id: &str) -> BTreeSet<BTreeMap<String, String>> {
        self.sb.members(id).into_iter().collect()
    }
}

fn email_fn(rows: &[[&str; 2]]) -> Value {
    json!({"schema": ["EMAIL", "FN"], "data": rows})
}

fn session(id: u64, seq: i64, last: bool) -> Option<Value> {
    Some(json!({"session_id": id, "batch_seq": seq, "last_batch_flag": last}))
}

fn member(email: &str, first: Option<&str>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::from([("EMAIL".to_string(), email.to_string())]);
    if let Some(f) = first {
        m.insert("FN".into(), f.into());
    }
    m
}

fn event(i: i64) -> Value {
    json!({
        "event_name": "Purchase",
        "event_time": now() - 3600,
        "event_id": format!("order-{i}"),
        "action_source": "physical_store",
        "user_data": {"em": [sha("mary@example.com")], "ph": sha("15559876543")},
        "custom_data": {"value": 12.5, "currency": "EUR"},
    })
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn a_call_without_an_access_token_answers_2500_oauth_exception_with_http_400() {
    let app = app().await;
    let r = app
        .post(
            "act_1/customaudiences",
            json!({"access_token": null, "name": "x"}),
        )
        .await;
    r.assert_error(400, 2500);
    assert_eq!(r.body["error"]["type"], "OAuthException");
    assert!(
        r.message()
            .starts_with("An active access token must be used")
    );
    assert!(app.sb.audiences().is_empty());
}

#[tokio::test]
async fn a_malformed_appsecret_proof_is_refused_with_code_100() {
    let app = app().await;
    let r = app
        .post(
            "act_1/customaudiences",
            json!({"appsecret_proof": "xyz", "name": "x", "customer_file_source": "USER_PROVIDED_ONLY"}),
        )
        .await;
    r.assert_error(400, 100);
    assert!(r.message().contains("Invalid appsecret_proof"));
}

#[tokio::test]
async fn with_an_app_secret_only_the_right_appsecret_proof_is_accepted() {
    let app = app_with(SandboxOptions {
        app_secret: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(TOKEN.as_bytes());
    let good = const_hex::encode(mac.finalize().into_bytes());
    let body = |proof: &str| json!({"appsecret_proof": proof, "name": "x", "customer_file_source": "USER_PROVIDED_ONLY"});
    app.post("act_1/customaudiences", body(&sha("wrong")))
        .await
        .assert_error(400, 100);
    let ok = app.post("act_1/customaudiences", body(&good)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn the_token_error_fault_answers_190_463_on_every_call() {
    let app = app_with(SandboxOptions {
        faults: Faults {
            token_error: true,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    for path in ["act_1/customaudiences", "123/events"] {
        let r = app.post(path, json!({"name": "x"})).await;
        r.assert_error(400, 190);
        assert_eq!(r.subcode(), Some(463));
        assert!(
            r.message()
                .starts_with("Error validating access token: Session has expired")
        );
    }
    app.sb.set_faults(Faults::default());
    app.create("act_1").await;
}

#[tokio::test]
async fn an_unknown_api_version_or_path_answers_2500_unknown_path_components() {
    let app = app().await;
    let r = app
        .send(
            app.http
                .post(format!(
                    "{}/latest/act_1/customaudiences",
                    app.sb.base_url()
                ))
                .json(&json!({"access_token": TOKEN})),
        )
        .await;
    r.assert_error(400, 2500);
    assert!(r.message().starts_with("Unknown path components"));
    let id = app.create("act_1").await;
    let r = app.post(&format!("{id}/nonsense"), json!({})).await;
    r.assert_error(400, 2500);
}

// ---------------------------------------------------------------- audiences

#[tokio::test]
async fn creating_an_audience_without_customer_file_source_answers_missing_parameter() {
    let app = app().await;
    let r = app
        .post(
            "act_1/customaudiences",
            json!({"name": "x", "subtype": "CUSTOM"}),
        )
        .await;
    r.assert_error(400, 100);
    assert_eq!(
        r.message(),
        "(#100) Missing parameter(s): customer_file_source"
    );
}

#[tokio::test]
async fn creating_an_audience_with_a_subtype_other_than_custom_answers_code_100() {
    let app = app().await;
    let r = app
        .post(
            "act_1/customaudiences",
            json!({"name": "x", "subtype": "LOOKALIKE", "customer_file_source": "USER_PROVIDED_ONLY"}),
        )
        .await;
    r.assert_error(400, 100);
    assert!(r.message().starts_with("(#100)"));
    assert!(app.sb.audiences().is_empty());
}

#[tokio::test]
async fn the_501st_audience_of_an_ad_account_is_refused_with_code_2654() {
    let app = app().await;
    for _ in 0..500 {
        app.create("act_7").await;
    }
    let r = app
        .post(
            "act_7/customaudiences",
            json!({"name": "x", "customer_file_source": "USER_PROVIDED_ONLY"}),
        )
        .await;
    r.assert_error(400, 2654);
    // Another account is not affected.
    app.create("act_8").await;
    assert_eq!(app.sb.audiences().len(), 501);
}

#[tokio::test]
async fn audiences_are_listed_page_by_page_with_cursors_and_no_next_on_the_last_page() {
    let app = app().await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(app.create("act_3").await);
    }
    app.create("act_4").await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut body = json!({"method": "GET", "fields": "id,name", "limit": 2});
        if let Some(a) = &after {
            body["after"] = json!(a);
        }
        let r = app.post("act_3/customaudiences", body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        pages += 1;
        for a in r.body["data"].as_array().unwrap() {
            assert_eq!(a["name"], "CDP");
            seen.push(a["id"].as_str().unwrap().to_string());
        }
        let paging = &r.body["paging"];
        assert!(paging["cursors"]["before"].is_string());
        if paging.get("next").is_none() {
            break;
        }
        assert!(!paging["next"].as_str().unwrap().contains("access_token"));
        after = Some(paging["cursors"]["after"].as_str().unwrap().to_string());
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);
}

#[tokio::test]
async fn an_audience_reads_back_with_statuses_and_count_bounds_by_get_or_post_method_get() {
    let app = app().await;
    let id = app.create("act_1").await;
    let fields = "id,name,subtype,customer_file_source,operation_status,delivery_status,approximate_count_lower_bound,approximate_count_upper_bound";
    let r = app
        .post(&id, json!({"method": "GET", "fields": fields}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["subtype"], "CUSTOM");
    assert_eq!(r.body["customer_file_source"], "USER_PROVIDED_ONLY");
    assert_eq!(r.body["operation_status"]["code"], 200);
    assert_eq!(r.body["delivery_status"]["code"], 300);

    let rows: Vec<[String; 2]> = (0..1_234)
        .map(|i| [sha(&format!("u{i}@x.com")), String::new()])
        .collect();
    let r = app
        .users(&id, json!({"schema": ["EMAIL", "FN"], "data": rows}), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A real GET with the token in the query string, as Meta's SDKs send it.
    let r = app
        .send(
            app.http
                .get(app.url_with(&id, &[("fields", fields), ("access_token", TOKEN)])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["delivery_status"]["code"], 200);
    assert_eq!(r.body["approximate_count_lower_bound"], 1_200);
    assert_eq!(r.body["approximate_count_upper_bound"], 1_300);

    let r = app
        .post(&id, json!({"method": "GET", "fields": "id,bogus"}))
        .await;
    r.assert_error(400, 100);
    assert!(r.message().contains("nonexisting field (bogus)"));
}

#[tokio::test]
async fn an_unknown_audience_answers_100_33_graph_method_exception() {
    let app = app().await;
    let r = app
        .users("999", email_fn(&[[&sha("a@x.com"), ""]]), None)
        .await;
    r.assert_error(400, 100);
    assert_eq!(r.subcode(), Some(33));
    assert_eq!(r.body["error"]["type"], "GraphMethodException");
    assert!(
        r.message()
            .starts_with("Unsupported post request. Object with ID '999'")
    );
}

// ---------------------------------------------------------------- payload validation

#[tokio::test]
async fn an_unknown_schema_key_is_refused_with_code_100() {
    let app = app().await;
    let id = app.create("act_1").await;
    let r = app
        .users(
            &id,
            json!({"schema": ["EMAIL", "SHOE_SIZE"], "data": [[sha("a@x.com"), "42"]]}),
            None,
        )
        .await;
    r.assert_error(400, 100);
    assert!(r.message().contains("SHOE_SIZE"));
    assert!(app.sb.members(&id).is_empty());
}

#[tokio::test]
async fn a_row_whose_length_differs_from_the_schema_is_refused_with_code_100() {
    let app = app().await;
    let id = app.create("act_1").await;
    let a = sha("a@x.com");
    let r = app
        .users(
            &id,
            json!({"schema": ["EMAIL", "FN"], "data": [[a, ""], [a]]}),
            None,
        )
        .await;
    r.assert_error(400, 100);
    assert!(r.message().contains("Row 1"));
    assert!(
        app.sb.members(&id).is_empty(),
        "the whole request is rejected"
    );
}

#[tokio::test]
async fn more_than_10000_rows_are_refused_with_code_100() {
    let app = app().await;
    let id = app.create("act_1").await;
    let cell = sha("a@x.com");
    let rows = |n: usize| vec![[cell.as_str(), ""]; n];
    let r = app.users(&id, email_fn(&rows(10_001)), None).await;
    r.assert_error(400, 100);
    assert!(r.message().contains("10000"));
    let r = app.users(&id, email_fn(&rows(10_000)), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["num_received"], 10_000);
}

#[tokio::test]
async fn empty_data_or_a_missing_payload_is_refused_with_code_100() {
    let app = app().await;
    let id = app.create("act_1").await;
    app.users(&id, json!({"schema": ["EMAIL"], "data": []}), None)
        .await
        .assert_error(400, 100);
    let r = app.post(&format!("{id}/users"), json!({})).await;
    r.assert_error(400, 100);
    assert!(r.message().contains("payload"));
}

#[tokio::test]
async fn malformed_cells_and_empty_rows_are_counted_as_invalid_entries_and_not_added() {
    let app = app().await;
    let id = app.create("act_1").await;
    let good = sha("mary@example.com");
    let upper = good.to_uppercase();
    let empty_hash = sha("");
    let r = app
        .users(
            &id,
            email_fn(&[
                [&good, &sha("mary")],
                ["john@x.com", ""],
                [&upper, ""],
                [&empty_hash, ""],
                ["", ""],
            ]),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["audience_id"], id.as_str());
    assert_eq!(r.body["num_received"], 5);
    assert_eq!(r.body["num_invalid_entries"], 4);
    let samples = r.body["invalid_entry_samples"]
        .as_object()
        .expect("a map of samples");
    assert_eq!(samples["john@x.com"], "EMAIL");
    assert_eq!(samples[&upper], "EMAIL");
    assert_eq!(samples[&empty_hash], "EMAIL");
    assert_eq!(app.sb.members(&id), vec![member(&good, Some(&sha("mary")))]);

    let r = app
        .users(&id, email_fn(&[[&sha("b@x.com"), ""]]), None)
        .await;
    assert_eq!(r.body["num_invalid_entries"], 0);
    assert_eq!(r.body["invalid_entry_samples"], json!([]));
}

#[tokio::test]
async fn a_single_key_upload_to_a_multi_key_audience_answers_2650_data_source_mismatch() {
    let app = app().await;
    let id = app.create("act_1").await;
    let r = app
        .users(&id, email_fn(&[[&sha("a@x.com"), ""]]), None)
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .users(
            &id,
            json!({"schema": "EMAIL_SHA256", "data": [sha("b@x.com")]}),
            None,
        )
        .await;
    r.assert_error(400, 2650);
    assert_eq!(
        r.message(),
        "(#2650) Failed to update the custom audience: This audience was created from data source \
         FILE_IMPORTED.MULTI_HASHES, which does not support data source FILE_IMPORTED.HASHES_OR_USER_IDS."
    );
    assert_eq!(app.sb.members(&id).len(), 1);
}

#[tokio::test]
async fn form_encoded_bodies_as_meta_sdks_send_them_are_accepted() {
    let app = app().await;
    let id = app.create("act_1").await;
    let payload = json!({"schema": "EMAIL_SHA256", "data": [sha("a@x.com"), sha("b@x.com")]});
    let session = json!({"session_id": 77, "batch_seq": 1, "last_batch_flag": true});
    let r = app
        .send(app.http.post(app.url(&format!("{id}/users"))).form(&[
            ("access_token", TOKEN.to_string()),
            ("payload", payload.to_string()),
            ("session", session.to_string()),
        ]))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["num_received"], 2);
    assert_eq!(r.body["session_id"], "77");
    assert_eq!(app.sb.members(&id).len(), 2);
}

#[tokio::test]
async fn add_then_remove_leaves_exactly_the_expected_members() {
    let app = app().await;
    let id = app.create("act_1").await;
    let (a, b, c) = (sha("a@x.com"), sha("b@x.com"), sha("c@x.com"));
    let fa = sha("ann");
    let r = app
        .users(
            &id,
            email_fn(&[[&a, &fa], [&b, ""], [&c, ""]]),
            session(1, 1, true),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Column order does not matter; an exact row is removed, a partial match is not.
    let r = app
        .remove(
            &id,
            json!({"schema": ["FN", "EMAIL"], "data": [[fa, a], ["", c]]}),
            session(2, 1, false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["num_received"], 2);
    let r = app
        .post(
            &format!("{id}/users"),
            json!({"method": "DELETE", "payload": email_fn(&[[&b, &fa]]), "session": {"session_id": 2, "batch_seq": 2, "last_batch_flag": true}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["num_received"], 3, "cumulative for the session");
    assert_eq!(app.member_set(&id), BTreeSet::from([member(&b, None)]));
    let log = app.sb.requests();
    assert_eq!(log.last().unwrap().operation, "remove_users");
}

// ---------------------------------------------------------------- /users sessions

#[tokio::test]
async fn a_users_session_must_start_at_batch_seq_1() {
    let app = app().await;
    let id = app.create("act_1").await;
    let r = app
        .users(
            &id,
            email_fn(&[[&sha("a@x.com"), ""]]),
            session(5, 2, false),
        )
        .await;
    r.assert_error(400, 100);
    assert!(r.message().contains("batch_seq 1"));
    assert!(app.sb.members(&id).is_empty());
}

#[tokio::test]
async fn a_skipped_batch_seq_is_refused_and_a_repeated_one_is_accepted_as_a_retry() {
    let app = app().await;
    let id = app.create("act_1").await;
    let batch = |n: usize| {
        email_fn(&[
            [&sha(&format!("{n}a@x.com")), ""],
            [&sha(&format!("{n}b@x.com")), ""],
        ])
    };
    assert_eq!(
        app.users(&id, batch(1), session(9, 1, false)).await.body["num_received"],
        2
    );
    assert_eq!(
        app.users(&id, batch(2), session(9, 2, false)).await.body["num_received"],
        4
    );
    // The answer to batch 2 was lost; the client resends it: accepted, not double counted.
    let retry = app.users(&id, batch(2), session(9, 2, false)).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body["num_received"], 4);
    let skipped = app.users(&id, batch(4), session(9, 4, false)).await;
    skipped.assert_error(400, 100);
    assert!(skipped.message().contains("expected 3"));
    assert_eq!(
        app.users(&id, batch(3), session(9, 3, true)).await.body["num_received"],
        6
    );
    assert_eq!(app.sb.members(&id).len(), 6);
}

#[tokio::test]
async fn a_batch_after_last_batch_flag_is_refused() {
    let app = app().await;
    let id = app.create("act_1").await;
    let rows = email_fn(&[[&sha("a@x.com"), ""]]);
    assert_eq!(
        app.users(&id, rows.clone(), session(3, 1, true))
            .await
            .status,
        200
    );
    let r = app
        .users(
            &id,
            email_fn(&[[&sha("z@x.com"), ""]]),
            session(3, 2, false),
        )
        .await;
    r.assert_error(400, 100);
    assert!(r.message().contains("already finished"));
    assert_eq!(app.sb.members(&id).len(), 1);
}

// ---------------------------------------------------------------- replace

#[tokio::test]
async fn usersreplace_makes_the_audience_exactly_the_uploaded_set_on_the_last_batch() {
    let app = app().await;
    let id = app.create("act_55").await;
    let (old, keep, new) = (sha("old@x.com"), sha("keep@x.com"), sha("new@x.com"));
    app.users(&id, email_fn(&[[&old, ""], [&keep, ""]]), None)
        .await;

    let r = app.replace(&id, &[[&keep, ""]], 1, 400, false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["account_id"], "55");
    assert!(r.body.get("audience_id").is_none());
    assert_eq!(
        app.sb.members(&id).len(),
        2,
        "unchanged until the last batch"
    );
    let status = app
        .post(&id, json!({"method": "GET", "fields": "operation_status"}))
        .await;
    assert_eq!(status.body["operation_status"]["code"], 414);

    let r = app
        .replace(&id, &[[&new, ""], [&keep, ""]], 2, 400, true)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["num_received"], 3);
    assert_eq!(
        app.member_set(&id),
        BTreeSet::from([member(&keep, None), member(&new, None)])
    );
}

#[tokio::test]
async fn a_replace_session_not_started_with_batch_seq_1_answers_2650_1870147() {
    let app = app().await;
    let id = app.create("act_1").await;
    let r = app
        .replace(&id, &[[&sha("a@x.com"), ""]], 2, 8, false)
        .await;
    r.assert_error(400, 2650);
    assert_eq!(r.subcode(), Some(1870147));
}

#[tokio::test]
async fn a_batch_for_a_finished_replace_session_answers_2650_1870159() {
    let app = app().await;
    let id = app.create("act_1").await;
    assert_eq!(
        app.replace(&id, &[[&sha("a@x.com"), ""]], 1, 8, true)
            .await
            .status,
        200
    );
    let r = app
        .replace(&id, &[[&sha("b@x.com"), ""]], 2, 8, false)
        .await;
    r.assert_error(400, 2650);
    assert_eq!(r.subcode(), Some(1870159));
    assert_eq!(app.sb.members(&id).len(), 1);
}

#[tokio::test]
async fn users_calls_during_a_replace_answer_2650_1870145_and_are_transient() {
    let app = app().await;
    let id = app.create("act_1").await;
    app.replace(&id, &[[&sha("a@x.com"), ""]], 1, 8, false)
        .await;
    for r in [
        app.users(&id, email_fn(&[[&sha("b@x.com"), ""]]), None)
            .await,
        app.remove(&id, email_fn(&[[&sha("a@x.com"), ""]]), None)
            .await,
    ] {
        r.assert_error(400, 2650);
        assert_eq!(r.subcode(), Some(1870145));
        assert_eq!(r.body["error"]["is_transient"], true);
    }
    app.replace(&id, &[[&sha("c@x.com"), ""]], 2, 8, true).await;
    assert_eq!(
        app.users(&id, email_fn(&[[&sha("b@x.com"), ""]]), None)
            .await
            .status,
        200
    );
}

// ---------------------------------------------------------------- events

#[tokio::test]
async fn events_are_accepted_and_stored_with_test_event_code_and_partner_agent() {
    let app = app().await;
    let data: Vec<Value> = (0..3).map(event).collect();
    let r = app
        .post(
            "1234/events",
            json!({"data": data, "test_event_code": "TEST42", "partner_agent": "cdp-meta-sync"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["events_received"], 3);
    assert_eq!(r.body["messages"], json!([]));
    assert!(r.body["fbtrace_id"].is_string());
    let stored = app.sb.events("1234");
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[2].event["event_id"], "order-2");
    assert_eq!(stored[0].test_event_code.as_deref(), Some("TEST42"));
    assert_eq!(stored[0].partner_agent.as_deref(), Some("cdp-meta-sync"));
    assert!(app.sb.events("999").is_empty());
}

#[tokio::test]
async fn more_than_1000_events_are_refused_with_code_100() {
    let app = app().await;
    let data: Vec<Value> = (0..1_001).map(event).collect();
    let r = app.events("1234", json!(data)).await;
    r.assert_error(400, 100);
    assert!(r.message().contains("1000"));
    let data: Vec<Value> = (0..1_000).map(event).collect();
    assert_eq!(
        app.events("1234", json!(data)).await.body["events_received"],
        1_000
    );
}

#[tokio::test]
async fn each_event_rule_rejects_the_whole_batch_and_names_the_event_index() {
    let app = app().await;
    let web = |e: &mut Value| {
        e["action_source"] = json!("website");
        e["event_source_url"] = json!("https://shop.example/checkout");
        e["user_data"]["client_user_agent"] = json!("Mozilla/5.0");
    };
    type Breaker = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "event_name",
            Box::new(|e| {
                e.as_object_mut().unwrap().remove("event_name");
            }),
        ),
        (
            "event_time",
            Box::new(|e| e["event_time"] = json!("yesterday")),
        ),
        (
            "action_source",
            Box::new(|e| e["action_source"] = json!("carrier_pigeon")),
        ),
        (
            "action_source",
            Box::new(|e| {
                e.as_object_mut().unwrap().remove("action_source");
            }),
        ),
        ("user_data", Box::new(|e| e["user_data"] = json!({}))),
        (
            "event_source_url",
            Box::new(move |e| {
                web(e);
                e.as_object_mut().unwrap().remove("event_source_url");
            }),
        ),
        (
            "client_user_agent",
            Box::new(move |e| {
                web(e);
                e["user_data"]
                    .as_object_mut()
                    .unwrap()
                    .remove("client_user_agent");
            }),
        ),
        (
            "user_data.em",
            Box::new(|e| e["user_data"]["em"] = json!("mary@example.com")),
        ),
        (
            "user_data.ph",
            Box::new(|e| e["user_data"]["ph"] = json!([sha("1").to_uppercase()])),
        ),
        (
            "currency",
            Box::new(|e| {
                e["custom_data"].as_object_mut().unwrap().remove("currency");
            }),
        ),
    ];
    for (needle, breaker) in cases {
        let mut data: Vec<Value> = (0..5).map(event).collect();
        breaker(&mut data[3]);
        let r = app.events("1234", json!(data)).await;
        r.assert_error(400, 100);
        let msg = r.body["error"]["error_user_msg"].as_str().unwrap_or("");
        assert!(msg.starts_with("event 3: "), "{needle}: {msg}");
        assert!(msg.contains(needle), "{needle}: {msg}");
        assert!(r.body["error"]["error_user_title"].is_string());
    }
    assert!(
        app.sb.events("1234").is_empty(),
        "no event of a rejected batch is stored"
    );
    // A valid website event passes.
    let mut e = event(0);
    web(&mut e);
    assert_eq!(app.events("1234", json!([e])).await.status, 200);
}

#[tokio::test]
async fn event_time_older_than_7_days_is_refused_but_up_to_62_days_is_allowed_for_physical_store() {
    let app = app().await;
    let aged = |source: &str, days: i64| {
        let mut e = event(0);
        e["action_source"] = json!(source);
        e["event_time"] = json!(now() - days * 86_400);
        e
    };
    assert_eq!(
        app.events("1", json!([aged("system_generated", 6)]))
            .await
            .status,
        200
    );
    let r = app
        .events("1", json!([event(1), aged("system_generated", 8)]))
        .await;
    r.assert_error(400, 100);
    assert_eq!(
        r.body["error"]["error_user_msg"],
        "event 1: event_time is more than 7 days in the past"
    );
    assert_eq!(r.subcode(), Some(2804003));
    assert_eq!(
        app.events("1", json!([aged("physical_store", 30)]))
            .await
            .status,
        200
    );
    let r = app.events("1", json!([aged("physical_store", 63)])).await;
    r.assert_error(400, 100);
    assert!(
        r.body["error"]["error_user_msg"]
            .as_str()
            .unwrap()
            .contains("62 days")
    );
}

#[tokio::test]
async fn event_time_in_the_future_is_refused() {
    let app = app().await;
    let mut e = event(0);
    e["event_time"] = json!(now() + 3_600);
    let r = app.events("1", json!([e])).await;
    r.assert_error(400, 100);
    assert_eq!(
        r.body["error"]["error_user_msg"],
        "event 0: event_time is in the future"
    );
}

// ---------------------------------------------------------------- faults

/// Fifty list calls against a fresh sandbox: which failed, with which code, and trace ids.
async fn fault_pattern(seed: u64) -> Vec<(u16, Option<i64>, String)> {
    let app = app_with(SandboxOptions {
        seed,
        faults: Faults {
            error_rate: 0.3,
            error_codes: vec![
                FaultCode::new(2),
                FaultCode {
                    code: 80003,
                    subcode: Some(2446079),
                    is_transient: None,
                },
            ],
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut out = Vec::new();
    for _ in 0..50 {
        let r = app
            .post("act_1/customaudiences", json!({"method": "GET"}))
            .await;
        let trace = r.headers["x-fb-trace-id"].to_str().unwrap().to_string();
        out.push((r.status, r.code(), trace));
    }
    out
}

#[tokio::test]
async fn fault_injection_is_reproducible_for_a_seed_and_differs_between_seeds() {
    let a = fault_pattern(42).await;
    let b = fault_pattern(42).await;
    let c = fault_pattern(43).await;
    assert_eq!(a, b, "same seed, same calls → same failures and trace ids");
    let failures =
        |p: &[(u16, Option<i64>, String)]| p.iter().map(|(s, c, _)| (*s, *c)).collect::<Vec<_>>();
    assert_ne!(failures(&a), failures(&c), "another seed fails other calls");
    let failed = a.iter().filter(|(s, _, _)| *s != 200).count();
    assert!(
        (5..=30).contains(&failed),
        "about 30% of 50 fail, got {failed}"
    );
    // Code 2 is HTTP 500; throttling 80003 is HTTP 400.
    assert!(a.iter().any(|(s, c, _)| *s == 500 && *c == Some(2)));
    assert!(a.iter().any(|(s, c, _)| *s == 400 && *c == Some(80003)));
}

#[tokio::test]
async fn an_injected_failure_changes_no_state_and_is_marked_in_the_request_log() {
    let app = app().await;
    let id = app.create("act_1").await;
    app.sb.set_faults(Faults {
        error_rate: 1.0,
        error_codes: vec![FaultCode {
            code: 613,
            subcode: Some(1487742),
            is_transient: None,
        }],
        ..Default::default()
    });
    let r = app
        .users(
            &id,
            email_fn(&[[&sha("a@x.com"), ""]]),
            session(1, 1, false),
        )
        .await;
    r.assert_error(400, 613);
    assert_eq!(r.subcode(), Some(1487742));
    assert_eq!(r.body["error"]["is_transient"], true);
    assert!(app.sb.members(&id).is_empty());
    assert!(app.sb.requests().last().unwrap().injected);
    app.sb.set_faults(Faults::default());
    // The failed batch did not open the session: batch 1 is still the one expected.
    assert_eq!(
        app.users(
            &id,
            email_fn(&[[&sha("a@x.com"), ""]]),
            session(1, 1, false)
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn usage_headers_are_low_normally_and_near_the_limit_under_the_usage_fault() {
    let app = app().await;
    let id = app.create("act_777").await;
    let usage = |r: &Reply, name: &str| -> Value {
        serde_json::from_str(r.headers[name].to_str().unwrap()).unwrap()
    };
    let r = app.post(&id, json!({"method": "GET"})).await;
    let buc = usage(&r, "x-business-use-case-usage");
    assert!(buc["777"][0]["call_count"].as_u64().unwrap() < 50);
    assert_eq!(buc["777"][0]["estimated_time_to_regain_access"], 0);
    assert!(usage(&r, "x-app-usage")["call_count"].as_u64().unwrap() < 50);

    app.sb.set_faults(Faults {
        usage: Some(UsageFault {
            call_count_pct: 95,
            estimated_time_to_regain_access: 7,
        }),
        ..Default::default()
    });
    let r = app
        .users(&id, email_fn(&[[&sha("a@x.com"), ""]]), None)
        .await;
    assert_eq!(r.status, 200);
    let buc = usage(&r, "x-business-use-case-usage");
    assert_eq!(buc["777"][0]["call_count"], 95);
    assert_eq!(buc["777"][0]["estimated_time_to_regain_access"], 7);
    assert_eq!(usage(&r, "x-app-usage")["call_count"], 95);
    let r = app.events("4242", json!([event(0)])).await;
    assert_eq!(
        usage(&r, "x-business-use-case-usage")["4242"][0]["call_count"],
        95
    );
}

#[tokio::test]
async fn audience_status_faults_change_what_a_read_reports_and_a_read_error_fails_only_reads() {
    let app = app().await;
    let id = app.create("act_1").await;
    let fields = "operation_status,delivery_status,approximate_count_upper_bound";
    let read = || app.post(&id, json!({"method": "GET", "fields": fields}));
    app.sb.set_faults(Faults {
        audience_operation_status: Some(AudienceStatus::new(471)),
        audience_delivery_status: Some(AudienceStatus {
            code: 400,
            description: "Unusable".into(),
        }),
        ..Default::default()
    });
    let r = read().await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["operation_status"]["code"], 471);
    assert!(
        r.body["operation_status"]["description"]
            .as_str()
            .unwrap()
            .starts_with("The custom audience or lookalike is blocked"),
        "Meta's wording: {}",
        r.body
    );
    assert_eq!(
        r.body["delivery_status"],
        json!({"code": 400, "description": "Unusable"})
    );
    assert_eq!(r.body["approximate_count_upper_bound"], 0);
    // Only requested fields are reported.
    let r = app
        .post(&id, json!({"method": "GET", "fields": "id,name"}))
        .await;
    assert!(r.body.get("operation_status").is_none(), "{}", r.body);

    app.sb.set_faults(Faults {
        audience_read_error: Some(FaultCode::new(100)),
        ..Default::default()
    });
    read().await.assert_error(400, 100);
    // Writes are not affected.
    let r = app
        .users(&id, email_fn(&[[&sha("a@x.com"), ""]]), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    app.sb.set_faults(Faults::default());
    let r = read().await;
    assert_eq!(r.body["operation_status"]["code"], 200);
    assert_eq!(r.body["delivery_status"]["code"], 300);
}

#[tokio::test]
async fn the_stall_fault_hangs_user_writes_after_n_accepted_ones_until_faults_change() {
    let app = app().await;
    let id = app.create("act_1").await;
    app.sb.set_faults(Faults {
        stall_after_writes: Some(2),
        ..Default::default()
    });
    for n in 1..=2 {
        let r = app
            .users(
                &id,
                email_fn(&[[&sha(&format!("{n}@x.com")), ""]]),
                session(1, n, false),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Reads still answer.
    assert_eq!(app.post(&id, json!({"method": "GET"})).await.status, 200);
    let stalled = app
        .http
        .post(app.url(&format!("{id}/users")))
        .timeout(Duration::from_millis(300))
        .json(&json!({"access_token": TOKEN, "payload": email_fn(&[[&sha("3@x.com"), ""]]), "session": {"session_id": 1, "batch_seq": 3, "last_batch_flag": false}}))
        .send()
        .await;
    assert!(
        stalled.is_err_and(|e| e.is_timeout()),
        "the third write must hang"
    );
    app.sb.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        app.sb.members(&id).len(),
        2,
        "the stalled call changed nothing"
    );
    let r = app
        .users(&id, email_fn(&[[&sha("3@x.com"), ""]]), session(1, 3, true))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.sb.members(&id).len(), 3);
}

#[tokio::test]
async fn the_latency_fault_delays_every_graph_call_but_not_inspection() {
    let app = app_with(SandboxOptions {
        faults: Faults {
            latency_ms: 200,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let t = Instant::now();
    app.create("act_1").await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    let t = Instant::now();
    app.http
        .get(format!("{}/_sandbox/audiences", app.sb.base_url()))
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_millis(200));
}

// ---------------------------------------------------------------- inspection and control

#[tokio::test]
async fn faults_and_reset_work_over_http_and_inspection_shows_audiences_and_members() {
    let app = app().await;
    let base = app.sb.base_url();
    let id = app.create("act_1").await;
    let a = sha("a@x.com");
    app.users(&id, email_fn(&[[&a, ""]]), None).await;

    let list: Value = app
        .http
        .get(format!("{base}/_sandbox/audiences"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["ad_account_id"], "act_1");
    assert_eq!(list[0]["member_count"], 1);
    let one: Value = app
        .http
        .get(format!("{base}/_sandbox/audiences/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["member_count"], 1);
    let members: Value = app
        .http
        .get(format!("{base}/_sandbox/audiences/{id}/members?limit=10"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(members, json!([{"EMAIL": a}]));
    let missing = app
        .http
        .get(format!("{base}/_sandbox/audiences/1/members"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let set = app
        .http
        .post(format!("{base}/_sandbox/faults"))
        .json(&json!({"token_error": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    app.post(&id, json!({"method": "GET"}))
        .await
        .assert_error(400, 190);

    let reset = app
        .http
        .post(format!("{base}/_sandbox/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert!(app.sb.audiences().is_empty());
    assert!(app.sb.requests().is_empty());
    app.create("act_1").await; // faults are back to the start options
    assert_eq!(
        app.http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn the_request_log_records_calls_without_tokens_or_cells() {
    let app = app().await;
    let id = app.create("act_1").await;
    let cell = sha("secret@x.com");
    app.users(
        &id,
        email_fn(&[[&cell, ""], ["raw@x.com", ""]]),
        session(12, 1, true),
    )
    .await;
    app.send(app.http.get(app.url_with(&id, &[("access_token", TOKEN)])))
        .await;
    let log = app.sb.requests();
    assert_eq!(log.len(), 3);
    let write = &log[1];
    assert_eq!(write.operation, "add_users");
    assert_eq!(write.rows, Some(2));
    assert_eq!(write.session_id.as_deref(), Some("12"));
    assert_eq!(write.batch_seq, Some(1));
    assert_eq!(write.status, 200);
    assert!(!log[2].path.contains('?'));
    assert_eq!(log[2].query.as_deref(), Some("access_token=%5Bredacted%5D"));
    let http_log = app
        .http
        .get(format!("{}/_sandbox/requests", app.sb.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for text in [serde_json::to_string(&log).unwrap(), http_log] {
        assert!(!text.contains(TOKEN) && !text.contains(&cell) && !text.contains("raw@x.com"));
    }
}

#[tokio::test]
async fn a_method_override_is_refused_as_meta_refuses_it_for_apps_new_since_v27() {
    let app = app().await;
    let id = app.create("act_1").await;
    let r = app
        .post_raw(
            &id,
            json!({"method": "GET", "fields": "id", "access_token": TOKEN}),
        )
        .await;
    r.assert_error(400, 100);
    assert!(r.message().contains("method override"), "{}", r.body);
    let record = app.sb.requests().pop().unwrap();
    assert_eq!(
        (record.http_method.as_str(), record.method.as_str()),
        ("POST", "GET")
    );

    let old_app = app_with(SandboxOptions {
        allow_method_override: true,
        ..SandboxOptions::default()
    })
    .await;
    let id = old_app.create("act_1").await;
    let r = old_app
        .post_raw(
            &id,
            json!({"method": "GET", "fields": "id", "access_token": TOKEN}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn a_read_takes_the_token_from_a_bearer_header() {
    let app = app().await;
    let id = app.create("act_1").await;
    let url = app.url_with(&id, &[("fields", "id,name")]);
    let r = app.send(app.http.get(url.clone()).bearer_auth(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], json!(id));
    let r = app.send(app.http.get(url)).await;
    assert_eq!(r.code(), Some(2500), "no token: {}", r.body);
}

#[tokio::test]
async fn versions_v25_to_v27_are_served_an_expired_one_gets_metas_error() {
    let app = app().await;
    for version in ["v25.0", "v26.0", "v27.0"] {
        let url = format!("{}/{version}/act_1/customaudiences", app.sb.base_url());
        let r = app
            .send(
                app.http
                    .post(url)
                    .json(&json!({"access_token": TOKEN, "name": "x",
                "subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY"})),
            )
            .await;
        assert_eq!(r.status, 200, "{version}: {}", r.body);
    }
    let url = format!("{}/v24.0/act_1/customaudiences", app.sb.base_url());
    let r = app.send(app.http.get(url).bearer_auth(TOKEN)).await;
    r.assert_error(400, 2635);
    assert!(r.message().contains("v27.0"), "{}", r.body);
}

#[tokio::test]
async fn events_sent_as_json_encoded_strings_are_accepted_like_objects() {
    let app = app().await;
    let as_strings: Vec<Value> = (0..3).map(|i| json!(event(i).to_string())).collect();
    let r = app.events("1234", json!(as_strings)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["events_received"], 3);
    let mixed = json!([event(7), event(8).to_string()]);
    assert_eq!(app.events("1234", mixed).await.body["events_received"], 2);
    let r = app.events("1234", json!(["not json"])).await;
    r.assert_error(400, 100);
    assert_eq!(app.sb.events("1234").len(), 5);
}

#[tokio::test]
async fn a_post_with_fields_answers_the_created_audiences_fields_read_after_write() {
    let app = app().await;
    let r = app
        .post(
            "act_1/customaudiences",
            json!({"name": "CDP", "subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY",
                   "fields": "id,name,subtype,operation_status"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["id"].is_string());
    assert_eq!(r.body["name"], "CDP");
    assert_eq!(r.body["subtype"], "CUSTOM");
    assert_eq!(r.body["operation_status"]["code"], 200);
}

#[tokio::test]
async fn documented_audience_fields_answer_null_or_a_default_and_unknown_ones_are_refused() {
    let app = app().await;
    let id = app.create("act_1").await;
    let r = app
        .post(
            &id,
            json!({"method": "GET", "fields": "time_content_updated,sharing_status,is_value_based,lookalike_spec"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["time_content_updated"].is_i64());
    assert!(r.body["sharing_status"].is_null());
    assert_eq!(r.body["is_value_based"], false);
    assert!(r.body.as_object().unwrap().contains_key("lookalike_spec"));
    let r = app
        .post(&id, json!({"method": "GET", "fields": "id,shoe_size"}))
        .await;
    r.assert_error(400, 100);
    assert!(r.message().contains("nonexisting field (shoe_size)"));
}

#[tokio::test]
async fn sessions_list_each_upload_session_with_its_counts_and_stage() {
    let app = app().await;
    let id = app.create("act_1").await;
    app.users(
        &id,
        email_fn(&[[&sha("a@x.com"), ""]]),
        session(5, 1, false),
    )
    .await;
    app.users(&id, email_fn(&[[&sha("b@x.com"), ""]]), session(5, 2, true))
        .await;
    app.replace(&id, &[[&sha("c@x.com"), ""]], 1, 6, false)
        .await;
    let r = app
        .send(
            app.http
                .get(app.url_with(&format!("{id}/sessions"), &[]))
                .bearer_auth(TOKEN),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["session_id"], "6");
    assert_eq!(data[0]["stage"], "in_progress");
    assert_eq!(data[0]["end_time"], "0");
    assert_eq!(data[1]["session_id"], "5");
    assert_eq!(data[1]["num_received"], "2");
    assert_eq!(data[1]["num_invalid_entries"], "0");
    assert_eq!(data[1]["stage"], "completed");
    for key in ["start_time", "end_time"] {
        assert!(data[1][key].as_str().unwrap().parse::<i64>().unwrap() > 0);
    }
}

#[tokio::test]
async fn a_second_replace_session_is_busy_until_the_first_ends_or_times_out() {
    let app = app_with(SandboxOptions {
        replace_window_secs: Some(1),
        ..SandboxOptions::default()
    })
    .await;
    let id = app.create("act_1").await;
    let first = app
        .replace(&id, &[[&sha("a@x.com"), ""]], 1, 10, false)
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let busy = app
        .replace(&id, &[[&sha("b@x.com"), ""]], 1, 11, false)
        .await;
    busy.assert_error(400, 2650);
    assert_eq!(busy.subcode(), Some(1870145));
    assert!(app.member_set(&id).is_empty(), "nothing replaced yet");

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // The first session timed out: the audience holds what it received; the second may start.
    let second = app
        .replace(&id, &[[&sha("b@x.com"), ""]], 1, 11, true)
        .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(
        app.member_set(&id),
        BTreeSet::from([member(&sha("b@x.com"), None)])
    );
    let sessions = app
        .send(
            app.http
                .get(app.url_with(&format!("{id}/sessions"), &[]))
                .bearer_auth(TOKEN),
        )
        .await;
    let stages: Vec<&str> = sessions.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["completed", "timed_out"]);
}

// ---------------------------------------------------------------- wire faults

/// What a raw HTTP client saw of one call.
#[derive(Debug)]
enum Wire {
    /// Status, content type and the whole body as it arrived.
    Answered {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    /// No answer (connection closed before a status line), or the body broke off.
    Broken,
    /// The client's timeout ran out (headers may have arrived).
    TimedOut,
}

impl Wire {
    fn json(&self) -> Value {
        match self {
            Wire::Answered { body, .. } => serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body))),
            other => panic!("no answer: {other:?}"),
        }
    }
}

const ACT: &str = "act_77";
const PIXEL: &str = "7070";

/// The sandbox's four stateful call shapes, sent raw with reqwest.
struct WireCall<'a> {
    app: &'a App,
    http: reqwest::Client,
    audience: String,
}

impl<'a> WireCall<'a> {
    /// An audience holding `old@x.com`, and a client that gives up after `timeout`.
    async fn new(app: &'a App, timeout: Duration) -> WireCall<'a> {
        let audience = app.create(ACT).await;
        let old = sha("old@x.com");
        let r = app.users(&audience, email_fn(&[[&old, ""]]), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        WireCall {
            app,
            http: reqwest::Client::builder().timeout(timeout).build().unwrap(),
            audience,
        }
    }

    fn body(&self, target: WireTarget) -> (String, Value) {
        let new = sha("new@x.com");
        match target {
            WireTarget::AudienceCreate => (
                format!("{ACT}/customaudiences"),
                json!({"name": "wire", "subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY"}),
            ),
            WireTarget::ReplaceFirstBatch => (
                format!("{}/usersreplace", self.audience),
                json!({"payload": email_fn(&[[&new, ""]]),
                       "session": {"session_id": 31, "batch_seq": 1, "last_batch_flag": true}}),
            ),
            WireTarget::UsersWrite => (
                format!("{}/users", self.audience),
                json!({"payload": email_fn(&[[&new, ""]]),
                       "session": {"session_id": 32, "batch_seq": 1, "last_batch_flag": false}}),
            ),
            WireTarget::Events => (format!("{PIXEL}/events"), json!({"data": [event(1)]})),
        }
    }

    async fn send(&self, target: WireTarget) -> Wire {
        let (path, mut body) = self.body(target);
        body["access_token"] = json!(TOKEN);
        let sent = self.http.post(self.app.url(&path)).json(&body).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Wire::TimedOut,
            Err(_) => return Wire::Broken,
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        match response.bytes().await {
            Ok(b) => Wire::Answered {
                status,
                content_type,
                body: b.to_vec(),
            },
            Err(e) if e.is_timeout() => Wire::TimedOut,
            Err(_) => Wire::Broken,
        }
    }

    /// Whether the call of `target` took effect, read from the sandbox's state.
    fn took_effect(&self, target: WireTarget) -> bool {
        let new = member(&sha("new@x.com"), None);
        let old = member(&sha("old@x.com"), None);
        let members = self.app.member_set(&self.audience);
        match target {
            WireTarget::AudienceCreate => {
                let named = self
                    .app
                    .sb
                    .audiences()
                    .iter()
                    .filter(|a| a.name == "wire")
                    .count();
                assert!(named <= 1, "{named} audiences named wire");
                named == 1
            }
            WireTarget::ReplaceFirstBatch => {
                let replaced = members == BTreeSet::from([new]);
                assert!(replaced || members == BTreeSet::from([old]), "{members:?}");
                replaced
            }
            WireTarget::UsersWrite => members.contains(&new),
            WireTarget::Events => {
                let n = self.app.sb.events(PIXEL).len();
                assert!(n <= 1, "{n} events");
                n == 1
            }
        }
    }
}

const TARGETS: [WireTarget; 4] = [
    WireTarget::AudienceCreate,
    WireTarget::ReplaceFirstBatch,
    WireTarget::UsersWrite,
    WireTarget::Events,
];

fn wire(kind: WireFaultKind, on: WireTarget) -> Faults {
    Faults {
        wire: vec![WireFault::new(kind, on)],
        ..Faults::default()
    }
}

fn last_record(app: &App) -> meta_sandbox::RequestRecord {
    app.sb.requests().pop().expect("a logged call")
}

#[tokio::test]
async fn drop_after_success_closes_the_connection_without_an_answer_after_each_call_took_effect() {
    for target in TARGETS {
        let app = app().await;
        let call = WireCall::new(&app, Duration::from_secs(10)).await;
        app.sb
            .set_faults(wire(WireFaultKind::DropAfterSuccess, target));
        let seen = call.send(target).await;
        assert!(matches!(seen, Wire::Broken), "{target:?}: {seen:?}");
        assert!(call.took_effect(target), "{target:?}");
        let record = last_record(&app);
        assert_eq!(record.wire_fault, Some(WireFaultKind::DropAfterSuccess));
        assert_eq!(record.status, 200, "{target:?}");
        assert!(app.sb.faults().wire.is_empty(), "spent");
    }
}

#[tokio::test]
async fn bad_gateway_html_answers_502_with_an_html_page_and_no_call_takes_effect() {
    for target in TARGETS {
        let app = app().await;
        let call = WireCall::new(&app, Duration::from_secs(10)).await;
        app.sb
            .set_faults(wire(WireFaultKind::BadGatewayHtml, target));
        let seen = call.send(target).await;
        let Wire::Answered {
            status,
            content_type,
            body,
        } = &seen
        else {
            panic!("{target:?}: {seen:?}")
        };
        assert_eq!(*status, 502, "{target:?}");
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(String::from_utf8_lossy(body).contains("502 Bad Gateway"));
        assert!(serde_json::from_slice::<Value>(body).is_err());
        assert!(!call.took_effect(target), "{target:?}");
        assert_eq!(
            last_record(&app).wire_fault,
            Some(WireFaultKind::BadGatewayHtml)
        );
        // Spent: the same call goes through now.
        assert!(matches!(
            call.send(target).await,
            Wire::Answered { status: 200, .. }
        ));
        assert!(call.took_effect(target), "{target:?}");
    }
}

#[tokio::test]
async fn truncated_json_answers_200_with_half_a_json_body_after_each_call_took_effect() {
    for target in TARGETS {
        let app = app().await;
        let call = WireCall::new(&app, Duration::from_secs(10)).await;
        app.sb
            .set_faults(wire(WireFaultKind::TruncatedJson, target));
        let seen = call.send(target).await;
        let Wire::Answered { status, body, .. } = &seen else {
            panic!("{target:?}: {seen:?}")
        };
        assert_eq!(*status, 200, "{target:?}");
        assert!(!body.is_empty() && body[0] == b'{', "{target:?}");
        assert!(serde_json::from_slice::<Value>(body).is_err(), "cut off");
        assert!(call.took_effect(target), "{target:?}");
        assert_eq!(
            last_record(&app).wire_fault,
            Some(WireFaultKind::TruncatedJson)
        );
    }
}

#[tokio::test]
async fn slow_body_trickles_the_whole_answer_out_after_each_call_took_effect() {
    for target in TARGETS {
        let app = app().await;
        let call = WireCall::new(&app, Duration::from_secs(10)).await;
        app.sb.set_faults(Faults {
            wire: vec![WireFault {
                slow_ms: 200,
                ..WireFault::new(WireFaultKind::SlowBody, target)
            }],
            ..Faults::default()
        });
        let seen = call.send(target).await;
        let answer = seen.json();
        assert!(answer.get("error").is_none(), "{target:?}: {answer}");
        assert!(call.took_effect(target), "{target:?}");
        assert_eq!(last_record(&app).wire_fault, Some(WireFaultKind::SlowBody));
    }
}

#[tokio::test]
async fn slow_body_outlasts_a_client_timeout_though_each_call_took_effect() {
    for target in TARGETS {
        let app = app().await;
        // The fault's default slow_ms is 30 s; the client gives up after 300 ms.
        let call = WireCall::new(&app, Duration::from_millis(300)).await;
        app.sb.set_faults(wire(WireFaultKind::SlowBody, target));
        let seen = call.send(target).await;
        assert!(matches!(seen, Wire::TimedOut), "{target:?}: {seen:?}");
        assert!(call.took_effect(target), "{target:?}");
    }
}

#[tokio::test]
async fn a_wire_fault_hits_only_its_target_and_is_spent_after_times_matching_calls() {
    let app = app().await;
    let call = WireCall::new(&app, Duration::from_secs(10)).await;
    app.sb.set_faults(Faults {
        wire: vec![WireFault {
            times: 2,
            ..WireFault::new(WireFaultKind::BadGatewayHtml, WireTarget::Events)
        }],
        ..Faults::default()
    });
    // Other targets, and reads, are untouched.
    assert!(matches!(
        call.send(WireTarget::UsersWrite).await,
        Wire::Answered { status: 200, .. }
    ));
    let read = app
        .send(
            app.http
                .get(app.url_with(&call.audience, &[]))
                .bearer_auth(TOKEN),
        )
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(app.sb.faults().wire[0].times, 2);
    for _ in 0..2 {
        assert!(matches!(
            call.send(WireTarget::Events).await,
            Wire::Answered { status: 502, .. }
        ));
    }
    assert!(app.sb.faults().wire.is_empty());
    assert!(matches!(
        call.send(WireTarget::Events).await,
        Wire::Answered { status: 200, .. }
    ));
    assert_eq!(app.sb.events(PIXEL).len(), 1);
}

#[tokio::test]
async fn replace_first_batch_spares_later_batches_of_a_replace() {
    let app = app().await;
    let id = app.create("act_1").await;
    app.sb.set_faults(wire(
        WireFaultKind::BadGatewayHtml,
        WireTarget::ReplaceFirstBatch,
    ));
    let r = app
        .replace(&id, &[[&sha("a@x.com"), ""]], 2, 40, false)
        .await;
    // Batch 2 reaches Meta (and is refused there: the session has no first batch).
    assert_eq!(r.subcode(), Some(1870147), "{}", r.body);
    assert_eq!(app.sb.faults().wire.len(), 1, "not spent on batch 2");
    let r = app
        .replace(&id, &[[&sha("a@x.com"), ""]], 1, 40, false)
        .await;
    assert_eq!(r.status, 502);
    assert!(app.sb.faults().wire.is_empty());
}

#[tokio::test]
async fn a_users_batch_resent_after_a_dropped_answer_is_accepted_and_counted_once() {
    let app = app().await;
    let id = app.create("act_1").await;
    app.sb.set_faults(wire(
        WireFaultKind::DropAfterSuccess,
        WireTarget::UsersWrite,
    ));
    let (a, b) = (sha("a@x.com"), sha("b@x.com"));
    let rows = email_fn(&[[&a, ""], [&b, ""]]);
    let client = reqwest::Client::new();
    let body = json!({"access_token": TOKEN, "payload": rows, "session": session(9, 1, false)});
    let dropped = client
        .post(app.url(&format!("{id}/users")))
        .json(&body)
        .send()
        .await;
    assert!(dropped.is_err(), "{dropped:?}");
    let again = app.users(&id, rows.clone(), session(9, 1, false)).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again.body["num_received"], 2,
        "the resent batch is not counted twice"
    );
    let last = app
        .users(&id, email_fn(&[[&sha("c@x.com"), ""]]), session(9, 2, true))
        .await;
    assert_eq!(last.body["num_received"], 3, "{}", last.body);
    assert_eq!(app.sb.members(&id).len(), 3);
}

#[tokio::test]
async fn a_replace_first_batch_resent_after_a_dropped_answer_restarts_the_same_session_without_busy()
 {
    let app = app().await;
    let id = app.create("act_1").await;
    let (old, keep, new) = (sha("old@x.com"), sha("keep@x.com"), sha("new@x.com"));
    app.users(&id, email_fn(&[[&old, ""]]), None).await;
    app.sb.set_faults(wire(
        WireFaultKind::DropAfterSuccess,
        WireTarget::ReplaceFirstBatch,
    ));
    let client = reqwest::Client::new();
    let body = json!({"access_token": TOKEN, "payload": email_fn(&[[&keep, ""]]),
                      "session": session(50, 1, false)});
    let dropped = client
        .post(app.url(&format!("{id}/usersreplace")))
        .json(&body)
        .send()
        .await;
    assert!(dropped.is_err(), "{dropped:?}");
    // Meta: batch_seq 1 starts the replace session; the same session id again restarts it.
    let again = app.replace(&id, &[[&keep, ""]], 1, 50, false).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again.body["num_received"], 1,
        "restarted, not counted twice"
    );
    let last = app.replace(&id, &[[&new, ""]], 2, 50, true).await;
    assert_eq!(last.status, 200, "{}", last.body);
    assert_eq!(
        app.member_set(&id),
        BTreeSet::from([member(&keep, None), member(&new, None)])
    );
}

#[tokio::test]
async fn events_resent_after_a_dropped_answer_are_received_again_and_marked_duplicates() {
    let app = app().await;
    app.sb
        .set_faults(wire(WireFaultKind::DropAfterSuccess, WireTarget::Events));
    let client = reqwest::Client::new();
    let body = json!({"access_token": TOKEN, "data": [event(1), event(2)]});
    let dropped = client
        .post(app.url(&format!("{PIXEL}/events")))
        .json(&body)
        .send()
        .await;
    assert!(dropped.is_err(), "{dropped:?}");
    let again = app
        .events(PIXEL, json!([event(1), event(2), event(3)]))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["events_received"], 3);
    let seen: Vec<(String, bool)> = app
        .sb
        .events(PIXEL)
        .iter()
        .map(|e| {
            (
                e.event["event_id"].as_str().unwrap().to_string(),
                e.duplicate,
            )
        })
        .collect();
    let s = |id: &str, dup| (id.to_string(), dup);
    assert_eq!(
        seen,
        [
            s("order-1", false),
            s("order-2", false),
            s("order-1", true),
            s("order-2", true),
            s("order-3", false)
        ]
    );
}

#[tokio::test]
async fn wire_faults_are_set_and_read_over_http() {
    let app = app().await;
    let base = app.sb.base_url();
    let set: Value = app
        .http
        .post(format!("{base}/_sandbox/faults"))
        .json(&json!({"wire": [{"kind": "slow_body", "on": "users_write", "times": 3, "slow_ms": 10}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        set["wire"],
        json!([{"kind": "slow_body", "on": "users_write", "times": 3, "slow_ms": 10}])
    );
    assert_eq!(app.sb.faults().wire[0].kind, WireFaultKind::SlowBody);
}

#[tokio::test]
async fn debug_token_answers_inside_a_batch_with_each_tokens_expiry_and_scopes_and_an_expired_token_is_refused_everywhere()
 {
    use meta_sandbox::{SandboxToken, fingerprint};
    let app = app().await;
    let soon = now() + 3 * 86_400;
    app.sb.set_faults(Faults {
        tokens: BTreeMap::from([
            (
                "EAA-soon".to_string(),
                SandboxToken {
                    expires_at: soon,
                    scopes: Some(vec!["ads_read".into()]),
                    ..SandboxToken::default()
                },
            ),
            (
                "EAA-old".to_string(),
                SandboxToken {
                    expires_at: now() - 60,
                    ..SandboxToken::default()
                },
            ),
        ]),
        ..Faults::default()
    });
    let batch = |input: &str| {
        json!([{"method": "GET", "relative_url": format!("debug_token?input_token={input}")}])
            .to_string()
    };
    let inner = |r: &Reply| -> Value {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body[0]["code"], 200, "{}", r.body);
        assert!(r.body[0].get("headers").is_none(), "include_headers=false");
        serde_json::from_str(r.body[0]["body"].as_str().unwrap()).unwrap()
    };
    let r = app
        .post(
            "",
            json!({"batch": batch("EAA-soon"), "include_headers": false}),
        )
        .await;
    let data = &inner(&r)["data"];
    assert_eq!(data["is_valid"], true);
    assert_eq!(data["expires_at"], soon);
    assert_eq!(data["scopes"], json!(["ads_read"]));
    let r = app
        .post("", json!({"batch": batch(TOKEN), "include_headers": false}))
        .await;
    let data = &inner(&r)["data"];
    assert_eq!(data["expires_at"], 0, "never expires");
    assert_eq!(
        data["scopes"],
        json!(["ads_management", "ads_read", "business_management"])
    );
    let r = app
        .post(
            "",
            json!({"batch": batch("EAA-old"), "include_headers": false}),
        )
        .await;
    let data = &inner(&r)["data"];
    assert_eq!(data["is_valid"], false);
    assert_eq!(data["error"]["code"], 190);
    assert_eq!(data["error"]["subcode"], 463);
    // Made with the expired token, any call is refused.
    for path in ["", "act_1/customaudiences"] {
        let r = app
            .post(
                path,
                json!({"access_token": "EAA-old", "batch": batch(TOKEN), "name": "x"}),
            )
            .await;
        r.assert_error(400, 190);
        assert_eq!(r.subcode(), Some(463));
    }
    let log = app.sb.requests();
    assert_eq!(log[0].operation, "batch");
    assert_eq!(log[0].batch, ["GET debug_token"]);
    assert_eq!(log[0].query, None);
    assert_eq!(
        log[0].token_fingerprint.as_deref(),
        Some(fingerprint(TOKEN).as_str())
    );
    assert_eq!(
        log[3].token_fingerprint.as_deref(),
        Some(fingerprint("EAA-old").as_str())
    );
    let shown = serde_json::to_string(&log).unwrap();
    assert!(
        !shown.contains(TOKEN) && !shown.contains("EAA-old"),
        "{shown}"
    );
    // Another request inside a batch answers Meta's unknown-path error in its slot.
    let other = json!([{"method": "GET", "relative_url": "me/adaccounts"}]).to_string();
    let r = app.post("", json!({"batch": other})).await;
    assert_eq!(r.body[0]["code"], 400);
}

#[tokio::test]
async fn a_value_based_audience_takes_rows_with_lookalike_value_and_refuses_rows_without() {
    let app = app().await;
    let r = app
        .post(
            "act_1/customaudiences",
            json!({"name": "Value", "subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY",
                   "is_value_based": 1, "fields": "id,is_value_based"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["is_value_based"], json!(true));
    let valued = r.body["id"].as_str().unwrap().to_string();
    let plain = app.create("act_1").await;
    let read = app
        .post(&plain, json!({"method": "GET", "fields": "is_value_based"}))
        .await;
    assert_eq!(read.body["is_value_based"], json!(false), "{}", read.body);

    let with_value = json!({"schema": ["EMAIL", "LOOKALIKE_VALUE"], "data": [[sha("a@x.com"), "44.5"], [sha("b@x.com"), 140]]});
    let without = json!({"schema": ["EMAIL"], "data": [[sha("c@x.com")]]});
    let r = app.users(&valued, without.clone(), None).await;
    r.assert_error(400, 100);
    assert!(
        r.message().contains("must include LOOKALIKE_VALUE"),
        "{}",
        r.body
    );
    let r = app.users(&plain, with_value.clone(), None).await;
    r.assert_error(400, 100);
    assert!(r.message().contains("value-based"), "{}", r.body);

    let r = app.users(&valued, with_value, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let values: Vec<String> = app
        .sb
        .members(&valued)
        .iter()
        .map(|m| m["LOOKALIKE_VALUE"].clone())
        .collect();
    assert_eq!(values.len(), 2);
    assert!(
        values.contains(&"44.5".to_string()) && values.contains(&"140".to_string()),
        "{values:?}"
    );
    assert_eq!(app.users(&plain, without, None).await.status, 200);
}

#[tokio::test]
async fn is_value_based_must_be_a_boolean() {
    let app = app().await;
    let r = app
        .post(
            "act_1/customaudiences",
            json!({"name": "x", "subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY",
                   "is_value_based": "sometimes"}),
        )
        .await;
    r.assert_error(400, 100);
    assert!(app.sb.audiences().is_empty());
}
