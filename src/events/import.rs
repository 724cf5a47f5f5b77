//! `events import`: CSV exports → the `cdp.conversion_events` outbox, through a column map.
//!
//! Every data row is validated ([`Layout::parse_row`]); a bad row is reported as `file:line N:
//! reason` (never its values) and written with its reason to the rejects CSV; good rows are
//! inserted 1,000 per statement with `ON CONFLICT (tenant_id, event_name, event_id) DO NOTHING`,
//! so importing the same file again inserts nothing.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::map::{ColumnMap, Layout, NewEvent};

/// Rows per INSERT.
pub const IMPORT_BATCH: usize = 1_000;

/// What an import did, over all files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Data rows read (blank rows are not counted).
    pub rows: u64,
    /// Rows newly inserted.
    pub inserted: u64,
    /// Valid rows already in the outbox (same tenant, event_name and event_id).
    pub duplicates: u64,
    pub rejected: u64,
}

/// One rejected row: where, why, and the raw fields (for the rejects file only).
#[derive(Debug, Clone)]
pub struct Rejection {
    pub file: String,
    pub line: u64,
    pub reason: String,
    pub fields: Vec<String>,
}

/// The `events import` command: loads the map, imports, prints the summary. Rejected rows do not
/// fail the command (they are reported); an unreadable map or file, or the database, does.
pub async fn run(
    settings: &crate::configuration::Settings,
    map: &Path,
    tenant: i32,
    rejects: Option<PathBuf>,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let column_map = ColumnMap::from_file(map)?;
    let rejects = rejects.unwrap_or_else(|| default_rejects_path(files));
    let client = crate::db::connect_single(&settings.database).await?;
    let report = import_files(&client, &column_map, tenant, files, &rejects).await?;
    print_summary(&report, &rejects, &mut std::io::stdout());
    Ok(())
}

/// Imports `files` for `tenant`; rejected rows go to `rejects` (created even when empty, so a
/// stale file from an earlier import is never mistaken for this one's).
pub async fn import_files(
    client: &tokio_postgres::Client,
    map: &ColumnMap,
    tenant: i32,
    files: &[PathBuf],
    rejects: &Path,
) -> anyhow::Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut rejects_out = csv::WriterBuilder::new()
        .flexible(true)
        .delimiter(map.delimiter as u8)
        .from_path(rejects)
        .with_context(|| format!("Failed to create the rejects file {}", rejects.display()))?;
    rejects_out.write_record(["file", "line", "reason"])?;
    for file in files {
        let (rows, rejected) = read_file(map, file)?;
        report.rows += (rows.len() + rejected.len()) as u64;
        report.rejected += rejected.len() as u64;
        for r in &rejected {
            eprintln!("{}:line {}: {}", r.file, r.line, r.reason);
            let mut record = vec![r.file.clone(), r.line.to_string(), r.reason.clone()];
            record.extend(r.fields.iter().cloned());
            rejects_out.write_record(&record)?;
        }
        for batch in rows.chunks(IMPORT_BATCH) {
            let inserted = insert_batch(client, tenant, batch).await?;
            report.inserted += inserted;
            report.duplicates += batch.len() as u64 - inserted;
        }
        tracing::info!(
            rows = rows.len(),
            rejected = rejected.len(),
            "events import: file done"
        );
    }
    rejects_out.flush()?;
    Ok(report)
}

/// Reads and validates one file: good rows and rejections, in file order.
pub fn read_file(map: &ColumnMap, path: &Path) -> anyhow::Result<(Vec<NewEvent>, Vec<Rejection>)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("Failed to read {}", path.display()))?;
    read_csv(map, &path.display().to_string(), &bytes)
}

/// [`read_file`] over bytes (`name` is used in rejections). The whole input is held so that a
/// row's line number is exact: the csv crate counts skipped blank lines into the next record.
pub fn read_csv(
    map: &ColumnMap,
    name: &str,
    input: &[u8],
) -> anyhow::Result<(Vec<NewEvent>, Vec<Rejection>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(map.delimiter as u8)
        .from_reader(input);
    let mut lines = LineCounter::default();
    let mut headers = Vec::with_capacity(map.header_rows);
    let mut layout: Option<Layout> = None;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let start = reader.position().byte();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // Bad UTF-8 or the like: the row is rejected, the file goes on.
                let at = e.position().map_or(start, |p| p.byte());
                let line = lines.line_at(input, at);
                bad.push(Rejection {
                    file: name.to_string(),
                    line,
                    reason: "not a readable CSV row (encoding must be UTF-8)".into(),
                    fields: Vec::new(),
                });
                continue;
            }
        }
        let line = lines.line_at(input, record.position().map_or(start, |p| p.byte()));
        if headers.len() < map.header_rows {
            headers.push(record.iter().map(str::to_string).collect());
            continue;
        }
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let layout = match &layout {
            Some(l) => l,
            None => layout.insert(
                map.resolve(&headers)
                    .with_context(|| format!("{name}: the map does not fit the file's headers"))?,
            ),
        };
        let fields: Vec<&str> = record.iter().collect();
        match layout.parse_row(&fields) {
            Ok(event) => good.push(event),
            Err(reason) => bad.push(Rejection {
                file: name.to_string(),
                line,
                reason,
                fields: fields.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }
    Ok((good, bad))
}

/// 1-based line numbers of byte offsets given in increasing order, in one pass over the input.
#[derive(Default)]
struct LineCounter {
    byte: usize,
    newlines: u64,
}

impl LineCounter {
    /// The line of the first non-blank byte at or after `at` (where the record really starts).
    fn line_at(&mut self, input: &[u8], at: u64) -> u64 {
        let mut at = (at as usize).min(input.len());
        while at < input.len() && matches!(input[at], b'\n' | b'\r') {
            at += 1;
        }
        if at >= self.byte {
            self.newlines += input[self.byte..at].iter().filter(|b| **b == b'\n').count() as u64;
            self.byte = at;
        }
        self.newlines + 1
    }
}

/// Inserts one batch; returns how many rows were new.
async fn insert_batch(
    client: &tokio_postgres::Client,
    tenant: i32,
    batch: &[NewEvent],
) -> anyhow::Result<u64> {
    fn col<T: Clone>(batch: &[NewEvent], f: impl Fn(&NewEvent) -> T) -> Vec<T> {
        batch.iter().map(f).collect()
    }
    let names = col(batch, |e| e.event_name.clone());
    let times = col(batch, |e| e.event_time);
    let sources = col(batch, |e| e.action_source.clone());
    let ids = col(batch, |e| e.event_id.clone());
    let customers = col(batch, |e| e.customer_id);
    let texts: Vec<Vec<Option<String>>> = vec![
        col(batch, |e| e.event_source_url.clone()),
        col(batch, |e| e.email.clone()),
        col(batch, |e| e.phone.clone()),
        col(batch, |e| e.first_name.clone()),
        col(batch, |e| e.last_name.clone()),
        col(batch, |e| e.city.clone()),
        col(batch, |e| e.state.clone()),
        col(batch, |e| e.zip.clone()),
        col(batch, |e| e.country.clone()),
        col(batch, |e| e.birth_date.clone()),
        col(batch, |e| e.gender.clone()),
        col(batch, |e| e.external_id.clone()),
        col(batch, |e| e.client_ip_address.clone()),
        col(batch, |e| e.client_user_agent.clone()),
        col(batch, |e| e.fbc.clone()),
        col(batch, |e| e.fbp.clone()),
        col(batch, |e| e.order_id.clone()),
        col(batch, |e| e.currency.clone()),
        col(batch, |e| e.value.clone()),
    ];
    let contents = col(batch, |e| e.contents.clone());
    let tenants = vec![tenant; batch.len()];
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&tenants, &names, &times, &sources, &ids, &customers];
    for t in &texts {
        params.push(t);
    }
    params.push(&contents);
    let inserted = client
        .execute(
            "INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time, action_source,
                 event_id, customer_id, event_source_url, email, phone, first_name, last_name, city,
                 state, zip, country, birth_date, gender, external_id, client_ip_address,
                 client_user_agent, fbc, fbp, order_id, currency, value, contents)
             SELECT t, n, tm, s, i, c, u, em, ph, fna, lna, ct, st, zp, co, db, ge, x, ip, ua,
                    fbc, fbp, o, cur, v::numeric, con
             FROM UNNEST($1::int[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                         $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[],
                         $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                         $16::text[], $17::text[], $18::text[], $19::text[], $20::text[],
                         $21::text[], $22::text[], $23::text[], $24::text[], $25::text[],
                         $26::jsonb[])
                  AS r(t, n, tm, s, i, c, u, em, ph, fna, lna, ct, st, zp, co, db, ge, x, ip, ua,
                       fbc, fbp, o, cur, v, con)
             ON CONFLICT (tenant_id, event_name, event_id) DO NOTHING",
            &params,
        )
        .await
        .context("Failed to insert imported events")?;
    Ok(inserted)
}

/// `<first file>.rejects.csv` when `--rejects` is not given.
pub fn default_rejects_path(files: &[PathBuf]) -> PathBuf {
    let first = files.first().cloned().unwrap_or_else(|| "events".into());
    let mut name = first.into_os_string();
    name.push(".rejects.csv");
    PathBuf::from(name)
}

/// Prints the summary line of an import.
pub fn print_summary(report: &ImportReport, rejects: &Path, out: &mut impl Write) {
    let _ = writeln!(
        out,
        "events import: {} rows, {} inserted, {} already present, {} rejected (see {})",
        report.rows,
        report.inserted,
        report.duplicates,
        report.rejected,
        rejects.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"
        delimiter = ";"
        header_rows = 2
        [constants]
        action_source = "website"
        [columns]
        event_name = "name"
        event_time = "time"
        event_id = "id"
    "#;

    #[test]
    fn header_rows_are_skipped_and_bad_rows_carry_their_file_line() {
        let csv = "export of 2024-07-01;;\nname;time;id\nLead;1719852447;a\n\nLead;yesterday;b\nLead;1719852447\n";
        let map = ColumnMap::parse(MAP).unwrap();
        let (good, bad) = read_csv(&map, "f.csv", csv.as_bytes()).unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].event_id, "a");
        let lines: Vec<(u64, &str)> = bad.iter().map(|r| (r.line, r.reason.as_str())).collect();
        assert_eq!(
            lines,
            vec![
                (
                    5,
                    "event_time is not a date in any of the map's time_formats"
                ),
                (6, "expected 3 columns, found 2")
            ]
        );
    }

    #[test]
    fn the_default_rejects_file_sits_beside_the_first_input() {
        let path = default_rejects_path(&["in/store.csv".into(), "other.csv".into()]);
        assert_eq!(path, PathBuf::from("in/store.csv.rejects.csv"));
    }
}
