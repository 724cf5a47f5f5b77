//! `events import` with the example maps in `config/maps/`, against a real Postgres.
use std::path::{Path, PathBuf};

use cdp_meta_sync::events::import::{ImportReport, import_files};
use cdp_meta_sync::events::map::CsvMap;

use crate::app::TestApp;

fn example_map(name: &str) -> CsvMap {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/maps/{name}.toml"));
    CsvMap::from_file(&path).unwrap()
}

/// A store export as the POS writes it: four header rows, `;`, decimal commas, local times.
/// Line 7 has a column too few, line 8 an impossible date, line 9 a value that is not a number.
const STORE_CSV: &str = "\
Relatorio de vendas;;;;;;;;;;;;;;;;;;
Loja;Centro;;;;;;;;;;;;;;;;;
Gerado em;2024-07-02;;;;;;;;;;;;;;;;;
EVENT_NAME;EVENT_TIME;ACTION_SOURCE;STORE;EXTERNAL_ID;EMAIL;PHONE;FIRST_NAME;LAST_NAME;DOB;CITY;ZIP;COUNTRY;CASHIER;ORDER_ID;CURRENCY;VALUE;CONTENT_ID;CONTENT_QUANTITY
Purchase;01/07/2024 13:47:27;physical_store;S1;c-1;Mary@Example.com;+55 11 91234-5678;Mary;Silva;1997-02-16;Sao Paulo;01310-100;BR;K9;ATN10001;BRL;220,00;product123;1
Purchase;01/07/2024 14:02:00;;S1;c-2;joao@example.com;11 98765-4321;Joao;Souza;;Sao Paulo;01310-200;BR;K9;ATN10002;BRL;99,90;product456;2
Purchase;01/07/2024 14:05:00;physical_store;S1;c-3;ana@example.com;;Ana;Lima;;Rio;20000-000;BR;K9;ATN10003;BRL;10,00;product789
Purchase;31/02/2024 10:00:00;physical_store;S1;c-4;rui@example.com;;Rui;Reis;;Rio;20000-000;BR;K9;ATN10004;BRL;10,00;product789;1
Purchase;01/07/2024 15:00:00;physical_store;S1;c-5;lia@example.com;;Lia;Luz;;Rio;20000-000;BR;K9;ATN10005;BRL;dez;product789;1
Purchase;01/07/2024 16:00:00;physical_store;S1;c-6;bia@example.com;;Bia;Paz;;Rio;20000-000;BR;K9;ATN10006;BRL;5,50;product789;3
";

/// A website export whose columns are in another order than the reference's; the map picks
/// them by header name. Line 7 has an extra column, line 8 a bad date, line 9 a bad value.
const WEB_CSV: &str = "\
# web export;;;;;;;;;;;;;;;;;;
# source: shop;;;;;;;;;;;;;;;;;;
# rows: 6;;;;;;;;;;;;;;;;;;
EVENT_ID;EVENT_NAME;EVENT_TIME;EVENT_SOURCE_URL;ACTION_SOURCE;EMAIL;PHONE;EXTERNAL_ID;CLIENT_IP_ADDRESS;CLIENT_USER_AGENT;FBC;FBP;ORDER_ID;CURRENCY;VALUE;CONTENT_ID;CONTENT_QUANTITY;CONTENT_DELIVERY;NOTES
w-1;Purchase;2024-07-01T13:47:27-03:00;https://shop.example/checkout;website;a@example.com;5511912345678;u-1;203.0.113.7;Mozilla/5.0;fb.1.1719852447.abc;fb.1.1719852447.123;W1;USD;19.99;sku-1;1;home_delivery;
w-2;AddToCart;2024-07-01 16:50:00;https://shop.example/p/2;;b@example.com;;u-2;203.0.113.8;Mozilla/5.0;;;;;;sku-2;1;;
w-3;Purchase;2024-07-01T13:50:00-03:00;https://shop.example/checkout;website;c@example.com;;u-3;203.0.113.9;Mozilla/5.0;;;W3;USD;5.00;sku-3;1;home_delivery;;extra
w-4;Purchase;2024-13-01T10:00:00-03:00;https://shop.example/checkout;website;d@example.com;;u-4;203.0.113.9;Mozilla/5.0;;;W4;USD;5.00;sku-3;1;home_delivery;
w-5;Purchase;2024-07-01T10:00:00-03:00;https://shop.example/checkout;website;e@example.com;;u-5;203.0.113.9;Mozilla/5.0;;;W5;USD;5.0.0;sku-3;1;home_delivery;
w-6;Lead;1719852447;https://shop.example/form;website;f@example.com;;u-6;203.0.113.9;Mozilla/5.0;;;;;;;;;
";

fn write_input(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn reject_lines(rejects: &Path) -> Vec<(String, String)> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .flexible(true)
        .from_path(rejects)
        .unwrap();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[1].to_string(), r[2].to_string())
        })
        .collect()
}

#[tokio::test]
async fn a_store_export_imports_good_rows_and_reports_bad_ones_by_line() {
    let test_db = TestApp::builder().build().await;
    let client = test_db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), "store.csv", STORE_CSV);
    let rejects = dir.path().join("rejects.csv");
    let map = example_map("physical_store");

    let report = import_files(&client, &map, 7, std::slice::from_ref(&input), &rejects)
        .await
        .unwrap();

    assert_eq!(
        report,
        ImportReport {
            rows: 6,
            inserted: 3,
            duplicates: 0,
            rejected: 3
        }
    );
    let lines = reject_lines(&rejects);
    let numbers: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(numbers, vec!["7", "8", "9"]);
    assert!(lines[0].1.contains("columns"), "{lines:?}");
    assert!(lines[1].1.contains("event_time"), "{lines:?}");
    assert!(lines[2].1.contains("value"), "{lines:?}");

    let row = client
        .query_one(
            "SELECT event_id, action_source, extract(epoch FROM event_time)::bigint, value::text,
                    currency, contents, email, tenant_id
             FROM cdp.conversion_events WHERE order_id = 'ATN10002'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ATN10002");
    // The empty ACTION_SOURCE cell takes the map's constant.
    assert_eq!(row.get::<_, String>(1), "physical_store");
    // 14:02 in São Paulo (UTC-3) is 17:02 UTC.
    assert_eq!(row.get::<_, i64>(2), 1_719_853_320);
    assert_eq!(row.get::<_, String>(3), "99.90");
    assert_eq!(row.get::<_, String>(4), "BRL");
    assert_eq!(
        row.get::<_, serde_json::Value>(5),
        serde_json::json!([{"id": "product456", "quantity": 2}])
    );
    assert_eq!(row.get::<_, String>(6), "joao@example.com");
    assert_eq!(row.get::<_, i32>(7), 7);
}

#[tokio::test]
async fn a_website_export_in_another_column_order_imports_through_header_names() {
    let test_db = TestApp::builder().build().await;
    let client = test_db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), "web.csv", WEB_CSV);
    let rejects = dir.path().join("rejects.csv");

    let report = import_files(
        &client,
        &example_map("website"),
        3,
        std::slice::from_ref(&input),
        &rejects,
    )
    .await
    .unwrap();

    assert_eq!((report.inserted, report.rejected), (3, 3));
    let numbers: Vec<String> = reject_lines(&rejects).into_iter().map(|(l, _)| l).collect();
    assert_eq!(numbers, vec!["7", "8", "9"]);
    let rows = client
        .query(
            "SELECT event_id, event_name, action_source, client_ip_address, fbc, contents
             FROM cdp.conversion_events ORDER BY event_id",
            &[],
        )
        .await
        .unwrap();
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec!["w-1", "w-2", "w-6"]);
    assert_eq!(rows[0].get::<_, String>(3), "203.0.113.7");
    assert_eq!(rows[0].get::<_, String>(4), "fb.1.1719852447.abc");
    assert_eq!(
        rows[0].get::<_, serde_json::Value>(5),
        serde_json::json!([{"id": "sku-1", "quantity": 1, "delivery_category": "home_delivery"}])
    );
    assert_eq!(rows[1].get::<_, String>(2), "website");
}

#[tokio::test]
async fn importing_the_same_files_again_inserts_nothing() {
    let test_db = TestApp::builder().build().await;
    let client = test_db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let store = write_input(dir.path(), "store.csv", STORE_CSV);
    let rejects = dir.path().join("rejects.csv");
    let map = example_map("physical_store");
    let first = import_files(&client, &map, 1, std::slice::from_ref(&store), &rejects)
        .await
        .unwrap();

    let again = import_files(&client, &map, 1, std::slice::from_ref(&store), &rejects)
        .await
        .unwrap();

    assert_eq!(first.inserted, 3);
    assert_eq!((again.inserted, again.duplicates), (0, 3));
    let count: i64 = client
        .query_one("SELECT count(*) FROM cdp.conversion_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
}

#[tokio::test]
async fn the_import_command_prints_a_summary_and_names_bad_lines_without_their_values() {
    let test_db = TestApp::builder().build().await;
    let dir = tempfile::tempdir().unwrap();
    let store = write_input(dir.path(), "store.csv", STORE_CSV);
    let map = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/maps/physical_store.toml");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cdp-meta-sync"))
        .args(["events", "import", "--map"])
        .arg(&map)
        .args(["--tenant", "2"])
        .arg(&store)
        .env("DATABASE_URL", test_db.url())
        .env("LOG_FORMAT", "pretty")
        .output()
        .await
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("3 inserted"), "{stdout}");
    assert!(stderr.contains("line 8: event_time"), "{stderr}");
    assert!(!stderr.contains("rui@example.com"), "{stderr}");
    assert!(dir.path().join("store.csv.rejects.csv").exists());
}

#[tokio::test]
async fn a_nul_byte_a_blank_event_id_or_a_row_the_database_refuses_is_reported_by_line_and_the_rest_is_imported()
 {
    let test_db = TestApp::builder().build().await;
    let client = test_db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let header: String = WEB_CSV.lines().take(4).map(|l| format!("{l}\n")).collect();
    let mut text = header;
    // Line 5 onwards: 1,203 rows, three of them bad, the database-refused one amid good rows of
    // the same 1,000-row batch.
    let (nul, blank_id, long_order) = (5 + 10, 5 + 400, 5 + 600);
    for line in 5..5 + 1_203 {
        let n = line - 4;
        let (id, email, order) = match line {
            l if l == nul => (
                format!("w-{n}"),
                format!("nul\0{n}@example.com"),
                format!("W{n}"),
            ),
            l if l == blank_id => (
                "  ".to_string(),
                format!("p{n}@example.com"),
                format!("W{n}"),
            ),
            l if l == long_order => (
                format!("w-{n}"),
                format!("p{n}@example.com"),
                "9".repeat(250),
            ),
            _ => (
                format!("w-{n}"),
                format!("p{n}@example.com"),
                format!("W{n}"),
            ),
        };
        text.push_str(&format!(
            "{id};Purchase;2024-07-01T13:47:27-03:00;https://shop.example/c;website;{email};;u-{n};\
             203.0.113.7;Mozilla/5.0;;;{order};USD;19.99;sku-1;1;home_delivery;\n"
        ));
    }
    let input = write_input(dir.path(), "web.csv", &text);
    let rejects = dir.path().join("rejects.csv");

    let report = import_files(
        &client,
        &example_map("website"),
        3,
        std::slice::from_ref(&input),
        &rejects,
    )
    .await
    .unwrap();

    assert_eq!(
        report,
        ImportReport {
            rows: 1_203,
            inserted: 1_200,
            duplicates: 0,
            rejected: 3
        }
    );
    let mut lines = reject_lines(&rejects);
    lines.sort_by_key(|(l, _)| l.parse::<u64>().unwrap());
    let numbers: Vec<String> = lines.iter().map(|(l, _)| l.clone()).collect();
    assert_eq!(
        numbers,
        vec![
            nul.to_string(),
            blank_id.to_string(),
            long_order.to_string()
        ]
    );
    assert!(lines[0].1.contains("NUL byte"), "{lines:?}");
    assert!(lines[1].1.contains("event_id is empty"), "{lines:?}");
    assert!(lines[2].1.contains("SQLSTATE 22001"), "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|(_, reason)| !reason.contains("example.com") && !reason.contains("999"))
    );
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM cdp.conversion_events WHERE tenant_id = 3",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1_200);
}
