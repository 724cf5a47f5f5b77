//! `events import` streams: a 2,000,000-row CSV (~200 MB) with a NUL byte and other bad rows is
//! imported by the CLI binary in constant memory, every bad row reported by its line.
//!
//! A separate test binary because it takes minutes: `cargo test --test events_import_large`.
use std::io::Write;
use std::path::Path;

#[path = "it/app.rs"]
#[allow(dead_code)]
mod app;

use app::TestApp;

const ROWS: u64 = 2_000_000;
/// Header rows of `config/maps/website.toml`'s layout.
const HEADER: &str = "\
# web export;;;;;;;;;;;;;;;;;;
# source: shop;;;;;;;;;;;;;;;;;;
# rows: many;;;;;;;;;;;;;;;;;;
EVENT_ID;EVENT_NAME;EVENT_TIME;EVENT_SOURCE_URL;ACTION_SOURCE;EMAIL;PHONE;EXTERNAL_ID;CLIENT_IP_ADDRESS;CLIENT_USER_AGENT;FBC;FBP;ORDER_ID;CURRENCY;VALUE;CONTENT_ID;CONTENT_QUANTITY;CONTENT_DELIVERY;NOTES
";
const HEADER_LINES: u64 = 4;
/// Peak resident memory allowed to the import, far below the file's size.
const MAX_RSS_KB: u64 = 100 * 1024;

/// What is wrong with data row `n` (1-based), if anything.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    Nul,
    BlankEventId,
    UnreadableDate,
    ColumnMissing,
    /// Valid to the map, refused by the database (order_id longer than its column).
    LongOrderId,
}

fn bad_rows() -> Vec<(u64, Fault)> {
    vec![
        (1_000, Fault::Nul),
        (777_777, Fault::BlankEventId),
        (1_234_567, Fault::ColumnMissing),
        (1_500_000, Fault::LongOrderId),
        (1_999_999, Fault::UnreadableDate),
    ]
}

fn write_csv(path: &Path) -> u64 {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    out.write_all(HEADER.as_bytes()).unwrap();
    let bad = bad_rows();
    for n in 1..=ROWS {
        let fault = bad.iter().find(|(row, _)| *row == n).map(|(_, b)| *b);
        let id = if fault == Some(Fault::BlankEventId) {
            " ".to_string()
        } else {
            format!("w-{n}")
        };
        let time = if fault == Some(Fault::UnreadableDate) {
            "2024-13-45T10:00:00-03:00"
        } else {
            "1719852447"
        };
        let email = if fault == Some(Fault::Nul) {
            format!("s\0{n}@ex.com")
        } else {
            format!("p{n}@ex.com")
        };
        let order = if fault == Some(Fault::LongOrderId) {
            "8".repeat(250)
        } else {
            format!("W{n}")
        };
        let tail = if fault == Some(Fault::ColumnMissing) {
            ";"
        } else {
            ";;"
        };
        writeln!(
            out,
            "{id};Purchase;{time};;website;{email};;u-{n};203.0.113.7;;;;{order};USD;19.99;;{tail}"
        )
        .unwrap();
    }
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// `Maximum resident set size (kbytes): N` from GNU time's report.
fn max_rss_kb(time_report: &str) -> u64 {
    time_report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .expect("GNU time reports the peak resident set size")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_million_row_csv_with_a_nul_byte_imports_in_constant_memory_and_reports_bad_lines() {
    let test_db = TestApp::builder().build().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("web.csv");
    let size = {
        let input = input.clone();
        tokio::task::spawn_blocking(move || write_csv(&input))
            .await
            .unwrap()
    };
    assert!(size > 150 * 1024 * 1024, "the file is {size} bytes");
    let rejects = dir.path().join("rejects.csv");
    let time_report = dir.path().join("time.txt");
    let map = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/maps/website.toml");
    assert!(
        Path::new("/usr/bin/time").exists(),
        "this test measures peak memory with GNU time (/usr/bin/time)"
    );

    // GNU time reads the child's peak RSS from the kernel (getrusage) once it has exited.
    let output = tokio::process::Command::new("/usr/bin/time")
        .arg("-v")
        .arg("-o")
        .arg(&time_report)
        .arg(env!("CARGO_BIN_EXE_cdp-meta-sync"))
        .args(["events", "import", "--map"])
        .arg(&map)
        .args(["--tenant", "1", "--rejects"])
        .arg(&rejects)
        .arg(&input)
        .env("DATABASE_URL", test_db.url())
        .env("LOG_FORMAT", "pretty")
        .output()
        .await
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let bad = bad_rows();
    let good = ROWS - bad.len() as u64;
    let summary = format!(
        "{ROWS} rows, {good} inserted, 0 already present, {} rejected",
        bad.len()
    );
    assert!(stdout.contains(&summary), "{stdout}");
    for (row, fault) in &bad {
        let line = HEADER_LINES + row;
        assert!(
            stderr.contains(&format!("web.csv:line {line}: ")),
            "{fault:?} at line {line} is not reported: {stderr}"
        );
    }
    let reported = stderr.matches(":line ").count();
    assert_eq!(reported, bad.len(), "{stderr}");
    assert!(!stderr.contains("@ex.com"), "{stderr}");
    let count: i64 = test_db
        .client()
        .await
        .query_one("SELECT count(*) FROM cdp.conversion_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count as u64, good);
    let rss = max_rss_kb(&std::fs::read_to_string(&time_report).unwrap());
    assert!(
        rss < MAX_RSS_KB,
        "peak RSS {rss} kB for a {} MB file",
        size / (1024 * 1024)
    );
    eprintln!(
        "peak RSS {rss} kB importing {} MB ({ROWS} rows)",
        size / (1024 * 1024)
    );
}
