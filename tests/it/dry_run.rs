//! `sync --system NAME --dry-run`: the plan a sync would carry out, with nothing written at Meta
//! or in the database.
use cdp_meta_sync::db::configurations::read_by_name;
use cdp_meta_sync::sync::dry_run::dry_run;

use crate::app::{TOKEN, TestApp};

/// Every row of the worker's tables a dry run could touch, as one text.
async fn snapshot(w: &TestApp) -> String {
    w.client()
        .await
        .query_one(
            "SELECT (SELECT md5(coalesce(string_agg(m::text, '|' ORDER BY configuration_id, member_key), ''))
                       FROM cdp.facebook_audience_members m)
                 || (SELECT md5(string_agg(c::text, '|' ORDER BY id)) FROM cdp.facebook_configurations c)
                 || (SELECT count(*)::text FROM cdp.facebook_sync_runs)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Changes the CDP after a first sync: leavers (segment Lost), changed emails (a removal and an
/// addition each), and names in upper case (same cells, new sources: a ledger refresh).
async fn churn(w: &TestApp) {
    w.client()
        .await
        .batch_execute(
            "UPDATE cdp_rfm_analysis SET rfm_segment = 'Lost'
              WHERE customer_id IN (SELECT id FROM customers_master ORDER BY id LIMIT 60);
             UPDATE customers_master SET email = 'changed' || id || '@example.com'
              WHERE id IN (SELECT id FROM customers_master ORDER BY id DESC LIMIT 40);
             UPDATE customers_master SET firstname = upper(firstname)
              WHERE id IN (SELECT id FROM customers_master ORDER BY id LIMIT 300 OFFSET 100);",
        )
        .await
        .unwrap();
}

fn is_write(operation: &str) -> bool {
    matches!(
        operation,
        "create_audience" | "delete_audience" | "add_users" | "remove_users" | "replace_users"
    )
}

#[tokio::test]
async fn a_dry_run_reports_what_the_next_sync_does_and_changes_nothing_at_meta_or_in_the_database()
{
    let w = TestApp::builder().customers(2_000).build().await;
    w.sync_due().await;
    churn(&w).await;
    w.make_due().await;
    let before = snapshot(&w).await;
    let calls = w.sandbox.requests().len();

    let row = read_by_name(&**w.client().await, "kangoo_system")
        .await
        .unwrap()
        .unwrap();
    let report = dry_run(&w.ctx, row, None).await.unwrap();

    assert_eq!(
        snapshot(&w).await,
        before,
        "ledger, configuration and runs unchanged"
    );
    let writes: Vec<String> = w.sandbox.requests()[calls..]
        .iter()
        .filter(|r| is_write(&r.operation))
        .map(|r| r.operation.clone())
        .collect();
    assert!(writes.is_empty(), "no write at Meta: {writes:?}");
    assert!(report.to_add > 0 && report.to_remove > 0, "{report:?}");
    assert!(report.removals_held.is_none(), "{report:?}");

    // The first body of each direction is a real Meta body: the schema and rows of hashes.
    let methods: Vec<&str> = report.first_requests.iter().map(|r| r.method).collect();
    assert_eq!(methods, ["DELETE", "POST"]);
    for request in &report.first_requests {
        let schema = request.body["payload"]["schema"].as_array().unwrap();
        let data = request.body["payload"]["data"].as_array().unwrap();
        assert!(!data.is_empty() && data.len() <= 3, "{request:?}");
        for row in data {
            let cells = row.as_array().unwrap();
            assert_eq!(cells.len(), schema.len());
            for cell in cells {
                let cell = cell.as_str().unwrap();
                assert!(
                    cell.is_empty()
                        || (cell.len() == 64 && cell.bytes().all(|b| b.is_ascii_hexdigit())),
                    "a cell is a SHA-256 or empty: {cell}"
                );
            }
        }
    }
    let text = report.render();
    assert!(!text.contains('@') && !text.contains(TOKEN), "{text}");
    assert!(
        text.contains(&format!("would add:    {}", report.to_add)),
        "{text}"
    );

    // The sync that follows does what the dry run said.
    w.sync_due().await;
    let done = w
        .client()
        .await
        .query_one(
            "SELECT to_add, to_remove FROM cdp.facebook_sync_runs
              WHERE system_name = 'kangoo_system' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (done.get::<_, i64>(0), done.get::<_, i64>(1)),
        (report.to_add, report.to_remove)
    );
}

#[tokio::test]
async fn a_dry_run_of_a_new_system_says_it_would_create_the_audience_and_creates_nothing() {
    let w = TestApp::builder().customers(500).build().await;
    let before = snapshot(&w).await;
    let row = read_by_name(&**w.client().await, "septimo_system")
        .await
        .unwrap()
        .unwrap();
    let report = dry_run(&w.ctx, row, None).await.unwrap();
    assert!(report.audience_id.is_none(), "{report:?}");
    assert!(report.to_add > 0 && report.to_remove == 0, "{report:?}");
    assert!(
        report.render().contains("(would be created)"),
        "{}",
        report.render()
    );
    assert_eq!(snapshot(&w).await, before);
    assert!(
        w.sandbox.requests().iter().all(|r| !is_write(&r.operation)),
        "no audience created"
    );
}

#[tokio::test]
async fn sync_dry_run_through_the_binary_prints_the_plan_and_an_unknown_system_exits_1() {
    let w = TestApp::builder().customers(300).build().await;
    let run = |system: &'static str| cli(&w, &["sync", "--system", system, "--dry-run"]);
    let output = run("kangoo_system").await.unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("dry run of kangoo_system") && stdout.contains("would add:"),
        "{stdout}"
    );
    assert!(!stdout.contains('@') && !stdout.contains(TOKEN), "{stdout}");
    assert!(w.sandbox.requests().iter().all(|r| !is_write(&r.operation)));

    let output = run("no_such_system").await.unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no system named 'no_such_system'"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_dry_run_of_an_audience_definition_plans_its_own_selection_and_writes_nothing() {
    let w = TestApp::builder().customers(1_000).build().await;
    w.client()
        .await
        .batch_execute(
            "INSERT INTO cdp.facebook_audiences (configuration_id, name, included_segments, value_based)
             SELECT id, 'Best by value', ARRAY['Champions'], true
               FROM cdp.facebook_configurations WHERE system_name = 'kangoo_system'",
        )
        .await
        .unwrap();
    let champions = w
        .expected_selection("kangoo_system", "r.rfm_segment = 'Champions'", true)
        .await;
    let run = |audience: &'static str| {
        let args = [
            "sync",
            "--system",
            "kangoo_system",
            "--dry-run",
            "--audience",
            audience,
        ];
        cli(&w, &args)
    };
    let output = run("Best by value").await.unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("dry run of kangoo_system / Best by value"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("would add:    {}\n", champions.len())),
        "{} champions: {stdout}",
        champions.len()
    );
    assert!(stdout.contains("LOOKALIKE_VALUE"), "{stdout}");
    assert!(w.sandbox.requests().iter().all(|r| !is_write(&r.operation)));
    let status: Option<String> = w
        .client()
        .await
        .query_one("SELECT sync_status FROM cdp.facebook_audiences", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, None, "the definition's row is left as it was");

    let output = run("Nope").await.unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has no audience definition named 'Nope'"),
        "{stderr}"
    );
}

/// The binary with `args`, pointed at the world's database and sandbox (and nothing else from
/// this environment).
fn cli(
    w: &TestApp,
    args: &[&str],
) -> impl std::future::Future<Output = std::io::Result<std::process::Output>> + use<> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cdp-meta-sync"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", w.url())
        .envs(w.worker_env())
        .args(args);
    async move { command.output().await }
}
