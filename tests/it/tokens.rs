//! Per-system tokens by reference (`token_ref`) and the token lifecycle (`debug_token` at start
//! and daily): against the real Postgres and the sandbox, which logs a fingerprint of each call's
//! token, never the token.
use std::collections::BTreeMap;

use cdp_meta_sync::sync::Outcome;
use cdp_meta_sync::sync::tokens::check_all;
use meta_sandbox::{Faults, RequestRecord, SandboxToken, fingerprint};

use crate::app::{TOKEN, TestApp};

const AGENCY2: &str = "EAAagency2-token-do-not-leak-67890";
const VAR: &str = "FACEBOOK_ACCESS_TOKEN_AGENCY2";
const KANGOO_ACCOUNT: &str = "act_323379512251780";

/// A world whose worker also has `FACEBOOK_ACCESS_TOKEN_AGENCY2`, and kangoo naming it.
async fn agency_world(customers: u64) -> TestApp {
    let mut w = TestApp::builder().customers(customers).build().await;
    w.ctx = w.context_with("worker-a", &[(VAR, AGENCY2)]);
    w.client()
        .await
        .execute(
            "UPDATE cdp.facebook_configurations SET token_ref = $1 WHERE system_name = 'kangoo_system'",
            &[&VAR],
        )
        .await
        .unwrap();
    w
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn set_tokens(w: &TestApp, tokens: &[(&str, SandboxToken)]) {
    w.sandbox.set_faults(Faults {
        tokens: tokens
            .iter()
            .map(|(t, s)| (t.to_string(), s.clone()))
            .collect::<BTreeMap<_, _>>(),
        ..Faults::default()
    });
}

fn made_with(w: &TestApp, token: &str) -> Vec<RequestRecord> {
    let f = fingerprint(token);
    w.sandbox
        .requests()
        .into_iter()
        .filter(|r| r.token_fingerprint.as_deref() == Some(f.as_str()))
        .collect()
}

async fn status(w: &TestApp, system: &str) -> String {
    w.client()
        .await
        .query_one(
            "SELECT sync_status FROM cdp.facebook_configurations WHERE system_name = $1",
            &[&system],
        )
        .await
        .unwrap()
        .get(0)
}

/// Neither token appears in any table the worker writes.
async fn assert_no_token_stored(w: &TestApp) {
    let leaked: i64 = w
        .client()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM cdp.facebook_configurations c
                      WHERE c::text LIKE '%' || $1 || '%' OR c::text LIKE '%' || $2 || '%')
                  + (SELECT count(*) FROM cdp.facebook_sync_runs r
                      WHERE r::text LIKE '%' || $1 || '%' OR r::text LIKE '%' || $2 || '%')
                  + (SELECT count(*) FROM cdp.facebook_token_checks t
                      WHERE t::text LIKE '%' || $1 || '%' OR t::text LIKE '%' || $2 || '%')",
            &[&TOKEN, &AGENCY2],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "a token was stored");
}

#[tokio::test]
async fn a_system_naming_a_token_syncs_with_that_token_and_the_others_with_the_workers() {
    let w = agency_world(300).await;
    let reports = w.sync_due().await;
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Success),
        "{reports:?}"
    );
    let kangoo_audience = w.audience_id("kangoo_system").await;
    let is_kangoo = |r: &RequestRecord| matches!(r.object_id.as_deref(), Some(id) if id == KANGOO_ACCOUNT || id == kangoo_audience);
    let agency = made_with(&w, AGENCY2);
    assert!(
        agency.iter().any(|r| r.operation == "add_users"),
        "kangoo's members went with its token"
    );
    assert!(agency.iter().all(is_kangoo), "{agency:?}");
    let global = made_with(&w, TOKEN);
    assert!(global.iter().any(|r| r.operation == "add_users"));
    assert!(global.iter().all(|r| !is_kangoo(r)), "{global:?}");
    assert_eq!(
        agency.len() + global.len(),
        w.sandbox.requests().len(),
        "every call was made with one of the two tokens"
    );
    w.assert_audiences_equal_expected().await;
    assert_no_token_stored(&w).await;
}

#[tokio::test]
async fn a_token_ref_whose_variable_is_not_set_is_invalid_config_naming_it_while_the_others_sync() {
    let w = agency_world(300).await;
    let client = w.client().await;
    client
        .execute(
            "UPDATE cdp.facebook_configurations SET token_ref = 'FACEBOOK_ACCESS_TOKEN_NOWHERE'
              WHERE system_name = 'septimo_system'",
            &[],
        )
        .await
        .unwrap();
    // No row can make the worker read another variable as a token.
    for bad in [
        "DATABASE_URL",
        "FACEBOOK_APP_SECRET",
        "facebook_access_token_x",
    ] {
        let refused = client
            .execute(
                "UPDATE cdp.facebook_configurations SET token_ref = $1 WHERE system_name = 'septimo_system'",
                &[&bad],
            )
            .await;
        assert!(refused.is_err(), "{bad} was accepted");
    }
    let reports = w.sync_due().await;
    let outcome = |name: &str| {
        reports
            .iter()
            .find(|r| r.system_name == name)
            .map(|r| r.outcome.clone())
            .unwrap()
    };
    assert!(
        matches!(outcome("septimo_system"), Outcome::InvalidConfig(e)
            if e.contains("FACEBOOK_ACCESS_TOKEN_NOWHERE, which is not set")),
        "{reports:?}"
    );
    assert_eq!(status(&w, "septimo_system").await, "invalid_config");
    assert!(
        w.error_log("septimo_system")
            .await
            .unwrap()
            .contains("token_ref names FACEBOOK_ACCESS_TOKEN_NOWHERE")
    );
    assert_eq!(outcome("kangoo_system"), Outcome::Success);
    assert_eq!(outcome("digitalfarma_system"), Outcome::Success);
    assert!(
        w.sandbox
            .requests()
            .iter()
            .all(|r| r.object_id.as_deref() != Some("act_881526052911252")),
        "septimo never reached Meta"
    );
}

#[tokio::test]
async fn a_token_expiring_within_seven_days_is_a_warning_kept_in_error_log_and_the_sync_succeeds() {
    let w = agency_world(300).await;
    let expires_at = now() + 3 * 86_400 + 600;
    set_tokens(
        &w,
        &[(
            AGENCY2,
            SandboxToken {
                expires_at,
                ..SandboxToken::default()
            },
        )],
    );
    let reports = check_all(&w.ctx).await.unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.variable.as_str()).collect();
    assert_eq!(
        names,
        ["FACEBOOK_ACCESS_TOKEN", VAR],
        "each token in use, once"
    );
    let client = w.client().await;
    let row = client
        .query_one(
            "SELECT is_valid, extract(epoch FROM expires_at)::bigint, scopes, warning, fingerprint
               FROM cdp.facebook_token_checks WHERE token_ref = $1",
            &[&VAR],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, i64>(1), expires_at);
    assert!(
        row.get::<_, Vec<String>>(2)
            .contains(&"ads_management".to_string())
    );
    let warning: String = row.get(3);
    assert!(
        warning.starts_with("the access token in FACEBOOK_ACCESS_TOKEN_AGENCY2 expires on ")
            && warning.contains("(in 3 days)"),
        "{warning}"
    );
    assert_eq!(row.get::<_, String>(4), fingerprint(AGENCY2));
    let global_warning: Option<String> = client
        .query_one(
            "SELECT warning FROM cdp.facebook_token_checks WHERE token_ref = 'FACEBOOK_ACCESS_TOKEN'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(global_warning, None);

    let line = format!("token warning: {warning}");
    assert_eq!(w.error_log("kangoo_system").await, Some(line.clone()));
    assert_eq!(w.error_log("septimo_system").await, None);

    let reports = w.sync_due().await;
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Success),
        "{reports:?}"
    );
    assert_eq!(
        w.error_log("kangoo_system").await,
        Some(line),
        "a successful run keeps the warning"
    );
    assert_eq!(w.error_log("digitalfarma_system").await, None);
    // `status` shows the error_log column.
    let rows = cdp_meta_sync::db::status::status_rows(&**client)
        .await
        .unwrap();
    let kangoo = rows
        .iter()
        .find(|r| r.system_name == "kangoo_system")
        .unwrap();
    assert!(
        kangoo
            .error_log
            .as_deref()
            .unwrap()
            .starts_with("token warning: ")
    );

    // A new token without the problem: the next check clears the line.
    set_tokens(&w, &[]);
    check_all(&w.ctx).await.unwrap();
    assert_eq!(w.error_log("kangoo_system").await, None);
    assert_no_token_stored(&w).await;
}

#[tokio::test]
async fn a_token_without_ads_management_is_a_warning_for_every_system_using_it() {
    let w = agency_world(100).await;
    set_tokens(
        &w,
        &[(
            TOKEN,
            SandboxToken {
                scopes: Some(vec!["ads_read".into(), "business_management".into()]),
                ..SandboxToken::default()
            },
        )],
    );
    check_all(&w.ctx).await.unwrap();
    for system in ["septimo_system", "digitalfarma_system"] {
        let log = w.error_log(system).await.unwrap_or_default();
        assert!(
            log.starts_with(
                "token warning: the access token in FACEBOOK_ACCESS_TOKEN lacks the ads_management permission"
            ),
            "{system}: {log}"
        );
    }
    assert_eq!(
        w.error_log("kangoo_system").await,
        None,
        "kangoo has its own token"
    );
    let reports = w.sync_due().await;
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Success),
        "{reports:?}"
    );
    assert!(
        w.error_log("septimo_system")
            .await
            .unwrap()
            .contains("lacks the ads_management")
    );
}

#[tokio::test]
async fn an_expired_token_fails_its_systems_at_once_in_plain_words_without_calling_meta_again() {
    let w = agency_world(300).await;
    set_tokens(
        &w,
        &[(
            AGENCY2,
            SandboxToken {
                expires_at: now() - 3_600,
                ..SandboxToken::default()
            },
        )],
    );
    let reports = check_all(&w.ctx).await.unwrap();
    let agency = reports.iter().find(|r| r.variable == VAR).unwrap();
    assert!(
        agency.outcome.as_ref().unwrap().refused.is_some(),
        "{reports:?}"
    );
    let checks = made_with(&w, AGENCY2);
    assert_eq!(checks.len(), 1, "one check");
    assert_eq!(
        (
            checks[0].operation.as_str(),
            checks[0].error_code,
            checks[0].error_subcode
        ),
        ("batch", Some(190), Some(463)),
        "the expired token is refused by Meta"
    );

    let reports = w.sync_due().await;
    let kangoo = reports
        .iter()
        .find(|r| r.system_name == "kangoo_system")
        .unwrap();
    let Outcome::Failed(message) = &kangoo.outcome else {
        panic!("{reports:?}")
    };
    // Meta refused the check itself (the token under inspection authenticates it), so the date
    // is not known.
    assert_eq!(
        message,
        "the access token in FACEBOOK_ACCESS_TOKEN_AGENCY2 has expired; create a new system-user \
         token and set the variable"
    );
    assert_eq!(
        made_with(&w, AGENCY2).len(),
        1,
        "the sync made no call with it"
    );
    assert_eq!(status(&w, "kangoo_system").await, "failed");
    let log = w.error_log("kangoo_system").await.unwrap();
    assert_eq!(&log, message, "said once, not repeated by the warning line");
    let (failures, in_five_minutes): (i32, bool) = {
        let row = w
            .client()
            .await
            .query_one(
                "SELECT consecutive_failures,
                        next_sync BETWEEN now() + interval '4 minutes' AND now() + interval '6 minutes'
                   FROM cdp.facebook_configurations WHERE system_name = 'kangoo_system'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((failures, in_five_minutes), (1, true));
    for other in ["septimo_system", "digitalfarma_system"] {
        assert_eq!(status(&w, other).await, "success", "{other}");
    }
    assert_no_token_stored(&w).await;
}

#[tokio::test]
async fn a_token_that_expires_after_its_check_fails_the_run_at_the_first_call_without_retries() {
    let w = agency_world(300).await;
    check_all(&w.ctx).await.unwrap();
    let checked = made_with(&w, AGENCY2).len();
    assert_eq!(checked, 1);
    set_tokens(
        &w,
        &[(
            AGENCY2,
            SandboxToken {
                expires_at: now() - 10,
                ..SandboxToken::default()
            },
        )],
    );
    let reports = w.sync_due().await;
    let kangoo = reports
        .iter()
        .find(|r| r.system_name == "kangoo_system")
        .unwrap();
    let Outcome::Failed(message) = &kangoo.outcome else {
        panic!("{reports:?}")
    };
    assert!(
        message.starts_with(
            "the access token in FACEBOOK_ACCESS_TOKEN_AGENCY2 was refused by Meta (expired or \
             revoked); create a new system-user token and set the variable (Meta error 190/463"
        ),
        "{message}"
    );
    let calls = made_with(&w, AGENCY2);
    assert_eq!(calls.len(), checked + 1, "one call, not retried: {calls:?}");
    assert_eq!(calls.last().unwrap().error_code, Some(190));
    assert_no_token_stored(&w).await;
}

#[tokio::test]
async fn debug_token_travels_in_a_batch_post_body_and_never_in_a_url() {
    let w = agency_world(50).await;
    check_all(&w.ctx).await.unwrap();
    let batches: Vec<RequestRecord> = w
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.operation == "batch")
        .collect();
    assert_eq!(batches.len(), 2, "one per token");
    for r in &batches {
        assert_eq!(
            (r.http_method.as_str(), r.method.as_str()),
            ("POST", "POST")
        );
        assert_eq!(r.path, "/v27.0");
        assert_eq!(r.batch, ["GET debug_token"]);
        assert_eq!(r.status, 200);
        // Not even a redacted input_token or access_token: no query string at all.
        assert_eq!(r.query, None, "{r:?}");
    }
    for r in w.sandbox.requests() {
        let target = format!("{}?{}", r.path, r.query.unwrap_or_default());
        assert!(
            !target.contains(TOKEN) && !target.contains(AGENCY2),
            "{target}"
        );
    }
}
