//! Personal data and tokens stay out of logs and `error_log`, however the worker is told to log
//! and whatever Postgres puts in its errors.
use std::path::Path;

use cdp_meta_sync::sync::Outcome;

use crate::app::{TOKEN, TestApp};
use crate::faults::SYSTEM;
use crate::process::{finished, worker};

/// Every email and phone of the demo CDP, as stored.
async fn personal_values(w: &TestApp) -> Vec<String> {
    let rows = w
        .client()
        .await
        .query("SELECT email::text, phone::text FROM customers_master", &[])
        .await
        .unwrap();
    rows.iter()
        .flat_map(|r| [r.get::<_, Option<String>>(0), r.get(1)])
        .flatten()
        // Short phones could match digits that are not theirs (counts, ids).
        .filter(|v| v.len() >= 8)
        .collect()
}

const SALES_CSV: &str = "\
Relatorio de vendas;;;;;;;;;;;;;;;;;;
Loja;Centro;;;;;;;;;;;;;;;;;
Gerado em;2024-07-02;;;;;;;;;;;;;;;;;
EVENT_NAME;EVENT_TIME;ACTION_SOURCE;STORE;EXTERNAL_ID;EMAIL;PHONE;FIRST_NAME;LAST_NAME;DOB;CITY;ZIP;COUNTRY;CASHIER;ORDER_ID;CURRENCY;VALUE;CONTENT_ID;CONTENT_QUANTITY
Purchase;01/07/2024 13:47:27;physical_store;S1;c-1;Marta.Debug@Example.com;+55 11 91234-5678;Marta;Silva;1997-02-16;Sao Paulo;01310-100;BR;K9;ATN20001;BRL;220,00;product123;1
Purchase;01/07/2024 14:02:00;physical_store;S1;c-2;joao.debug@example.com;11 98765-4321;Joao;Souza;;Sao Paulo;01310-200;BR;K9;ATN20002;BRL;99,90;product456;2
";

#[tokio::test]
async fn debug_logs_of_a_sync_and_an_events_import_hold_no_email_phone_or_token() {
    let w = TestApp::builder().customers(400).build().await;
    w.only_kangoo().await;
    let mut run = worker(&w, &["run", "--once"]);
    run.env("RUST_LOG", "debug");
    let sync = finished(run).await;
    assert!(
        sync.status.success(),
        "{}",
        String::from_utf8_lossy(&sync.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("sales.csv");
    std::fs::write(&csv, SALES_CSV).unwrap();
    let map = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/maps/physical_store.toml");
    let mut import = worker(&w, &["events", "import", "--tenant", "2", "--map"]);
    import.arg(&map).arg(&csv).env("RUST_LOG", "debug");
    let imported = finished(import).await;
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );

    assert!(
        String::from_utf8_lossy(&imported.stdout).contains("2 inserted"),
        "{}",
        String::from_utf8_lossy(&imported.stdout)
    );
    let mut printed = String::new();
    for out in [&sync, &imported] {
        printed.push_str(&String::from_utf8_lossy(&out.stdout));
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        printed.contains(r#""level":"DEBUG""#),
        "debug logging was on"
    );
    let mut secrets = personal_values(&w).await;
    secrets.extend(
        [
            "Marta.Debug@Example.com",
            "marta.debug@example.com",
            "joao.debug@example.com",
            "+55 11 91234-5678",
            "11 98765-4321",
            TOKEN,
        ]
        .map(String::from),
    );
    assert!(secrets.len() > 100);
    let leaked: Vec<&String> = secrets
        .iter()
        .filter(|s| printed.contains(s.as_str()))
        .collect();
    assert!(leaked.is_empty(), "printed: {leaked:?}");
}

/// A function of the CDP that refuses emails, saying which in its message, DETAIL and HINT, as an
/// operator's validation function might.
const REFUSING_FUNCTION: &str = "
CREATE FUNCTION refuse_email(e text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF e LIKE '%@%' THEN
        RAISE EXCEPTION 'refused %', e USING DETAIL = 'the value was ' || e, HINT = e;
    END IF;
    RETURN e;
END $$;";

#[tokio::test]
async fn database_errors_quoting_customer_values_leave_error_log_without_them() {
    let w = TestApp::builder().customers(300).build().await;
    w.only_kangoo().await;
    w.client()
        .await
        .batch_execute(REFUSING_FUNCTION)
        .await
        .unwrap();
    let extraction = |email: &str| {
        format!(
            "SELECT c.id::bigint AS customer_id, c.tenant_id, {email}, c.phone::text AS phone,
                    c.firstname::text AS first_name, c.lastname::text AS last_name
               FROM customers_master c JOIN cdp_rfm_analysis r ON r.customer_id = c.id
              WHERE c.tenant_id = ANY($1) AND r.rfm_segment <> ALL($2)"
        )
    };
    let emails = personal_values(&w).await;
    // A function's RAISE with DETAIL (class P0), and a failed cast quoting the value (class 22).
    for (column, sqlstate) in [
        ("refuse_email(c.email::text) AS email", "P0001"),
        ("(c.email::integer)::text AS email", "22P02"),
    ] {
        let mut ctx = w.ctx.clone();
        ctx.extract_sql = Some(extraction(column).into());
        w.make_due().await;
        let reports = crate::app::sync_due_with(&ctx).await;
        assert!(matches!(reports[0].outcome, Outcome::Failed(_)));
        let error_log = w.error_log(SYSTEM).await.unwrap();
        assert!(
            error_log.contains(&format!("SQLSTATE {sqlstate}")),
            "{error_log}"
        );
        assert!(!error_log.contains("DETAIL") && !error_log.contains("HINT"));
        assert!(!error_log.contains('@'), "{error_log}");
        assert!(!emails.iter().any(|e| error_log.contains(e.as_str())));
        let run_error: String =
            w.client()
                .await
                .query_one(
                    "SELECT error FROM cdp.facebook_sync_runs WHERE system_name = $1 ORDER BY id DESC LIMIT 1",
                    &[&SYSTEM],
                )
                .await
                .unwrap()
                .get(0);
        assert_eq!(run_error, error_log);
    }
}
