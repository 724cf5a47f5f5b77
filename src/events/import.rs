//! `events import`: CSV exports → the `cdp.conversion_events` outbox, through a column map.
//!
//! Files are streamed (`csv_rows.rs`): memory stays constant whatever their size. Every data row
//! is validated; a bad row is reported as `file:line N: reason` (never its values) and written
//! with its reason to the rejects CSV, and the rest of the file is imported. Good rows are
//! inserted 1,000 per statement with `ON CONFLICT (tenant_id, event_name, event_id) DO NOTHING`,
//! so importing the same file again inserts nothing; should the database refuse a statement for
//! one row's data, the batch is inserted row by row and only the refused rows are rejected.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use super::csv_rows::{RejectedRow, read_all};
use super::csv_rows::{Row, RowReader};
use super::map::{CsvMap, NewEvent};

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

/// The `events import` command: loads the map, imports, prints the summary. Rejected rows do not
/// fail the command (they are reported); an unreadable map or file, or the database, does.
pub async fn run(
    settings: &crate::configuration::Settings,
    map: &Path,
    tenant: i32,
    rejects: Option<PathBuf>,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let column_map = CsvMap::from_file(map)?;
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
    map: &CsvMap,
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
        let name = file.display().to_string();
        let input = std::fs::File::open(file)
            .with_context(|| format!("Failed to read {}", file.display()))?;
        let mut rows = RowReader::new(map, &name, std::io::BufReader::new(input));
        let mut batch: Vec<(u64, NewEvent)> = Vec::with_capacity(IMPORT_BATCH);
        let before = report.clone();
        loop {
            let row = rows.next_row()?;
            let done = row.is_none();
            match row {
                Some(Row::Good { line, event }) => {
                    report.rows += 1;
                    batch.push((line, *event));
                }
                Some(Row::Bad(rejection)) => {
                    report.rows += 1;
                    reject(&mut report, &mut rejects_out, &rejection)?;
                }
                None => {}
            }
            if batch.len() == IMPORT_BATCH || (done && !batch.is_empty()) {
                for rejection in insert_rows(client, tenant, &name, &batch, &mut report).await? {
                    reject(&mut report, &mut rejects_out, &rejection)?;
                }
                batch.clear();
            }
            if done {
                break;
            }
        }
        tracing::info!(
            rows = report.rows - before.rows,
            inserted = report.inserted - before.inserted,
            rejected = report.rejected - before.rejected,
            "events import: file done"
        );
    }
    rejects_out.flush()?;
    Ok(report)
}

/// Counts and reports one bad row: on stderr by line (no values), in the rejects file in full.
fn reject(
    report: &mut ImportReport,
    out: &mut csv::Writer<std::fs::File>,
    r: &RejectedRow,
) -> anyhow::Result<()> {
    report.rejected += 1;
    eprintln!("{}:line {}: {}", r.file, r.line, r.reason);
    let mut record = vec![r.file.clone(), r.line.to_string(), r.reason.clone()];
    record.extend(r.fields.iter().cloned());
    out.write_record(&record)
        .context("Failed to write the rejects file")?;
    Ok(())
}

/// Inserts a batch; when the database refuses it for a row's data, row by row, returning the
/// refused rows as rejections (any other database error fails the import).
async fn insert_rows(
    client: &tokio_postgres::Client,
    tenant: i32,
    file: &str,
    batch: &[(u64, NewEvent)],
    report: &mut ImportReport,
) -> anyhow::Result<Vec<RejectedRow>> {
    let events: Vec<&NewEvent> = batch.iter().map(|(_, e)| e).collect();
    let error = match insert_batch(client, tenant, &events).await {
        Ok(inserted) => {
            report.inserted += inserted;
            report.duplicates += events.len() as u64 - inserted;
            return Ok(Vec::new());
        }
        Err(e) => e,
    };
    if refused_row(&error).is_none() {
        return Err(error).context("Failed to insert imported events");
    }
    let mut refused = Vec::new();
    for (line, event) in batch {
        match insert_batch(client, tenant, &[event]).await {
            Ok(inserted) => {
                report.inserted += inserted;
                report.duplicates += 1 - inserted;
            }
            Err(e) => match refused_row(&e) {
                Some(reason) => refused.push(RejectedRow {
                    file: file.to_string(),
                    line: *line,
                    reason,
                    fields: Vec::new(),
                }),
                None => return Err(e).context("Failed to insert imported events"),
            },
        }
    }
    Ok(refused)
}

/// The reason for a row the database refused for its data (SQLSTATE class 22, data exception,
/// or 23, integrity constraint), naming the constraint or column but never quoting the value
/// (PostgreSQL's own message may); `None` for any other error.
fn refused_row(e: &tokio_postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    let code = db.code().code();
    if !(code.starts_with("22") || code.starts_with("23")) {
        return None;
    }
    let mut reason = format!("the database refused the row (SQLSTATE {code}");
    if let Some(constraint) = db.constraint() {
        reason.push_str(&format!(", constraint {constraint}"));
    } else if let Some(column) = db.column() {
        reason.push_str(&format!(", column {column}"));
    }
    reason.push(')');
    Some(reason)
}

/// Inserts one batch; returns how many rows were new.
async fn insert_batch(
    client: &tokio_postgres::Client,
    tenant: i32,
    batch: &[&NewEvent],
) -> Result<u64, tokio_postgres::Error> {
    fn col<T: Clone>(batch: &[&NewEvent], f: impl Fn(&NewEvent) -> T) -> Vec<T> {
        batch.iter().map(|e| f(e)).collect()
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
        .await?;
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

    #[test]
    fn the_default_rejects_file_sits_beside_the_first_input() {
        let path = default_rejects_path(&["in/store.csv".into(), "other.csv".into()]);
        assert_eq!(path, PathBuf::from("in/store.csv.rejects.csv"));
    }
}
