//! Extract → normalize + hash → COPY into a session-local staging table, as one pipeline:
//! Postgres streams rows (with backpressure), blocking workers hash chunks off the async threads,
//! and a binary COPY writes what the diff needs as it comes. Memory stays a few chunks deep
//! whatever N is.
//!
//! The extraction runs next to the ledger's sources (see [`Extraction`]), so most rows of an
//! incremental run are settled in Postgres: a customer whose ledger member carries its digest is
//! unchanged, never sent, and counted from the ledger afterwards. Staged are the rest: a candidate
//! row for each other customer with a usable key, and a "gone" row (no cells) for each ledger
//! member whose source customer changed or left. A full run stages every customer.
//!
//! Rows are numbered (`seq`) in stream order, so the diff and the upload read the table in its
//! physical order without sorting it. A Bloom filter over member keys marks every candidate whose
//! member may have been staged before (`maybe_dup`): the diff only has to rank those members'
//! rows to dedupe the whole table.
use std::pin::pin;
use std::sync::Arc;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_postgres::types::{ToSql, Type};
use tokio_util::sync::CancellationToken;

use super::cells;
use super::copy::{self, Tuple};
use super::diff;
use super::digest;
use super::extract::{Extraction, is_text, map_columns};
use super::member::{Member, MemberBuilder, Tally};
use super::new_members::{MemberSource, NewMembers};
use super::plan_tables;
use super::seen_keys::SeenKeys;
use super::system::SyncPlan;
use crate::db::ledger;
use crate::identity::MatchKey;

/// Rows per chunk handed to a hashing worker.
const CHUNK_ROWS: usize = 2048;

/// The extraction's memory for each hash join: the pool's `work_mem` (64MB, for the staging
/// table's sorts and the diff) made the join of customers to their segment, and to the ledger's
/// sources, one hash table of about 50 MB per system at 1M customers, probed at random; in
/// batches that fit the CPU's cache the same query took about 40 % less (see the README's performance
/// section). The pool sets its own value again when the connection goes back
/// ([`crate::db::pool::connect_pool`]). No parallel workers: up to three systems extract at once,
/// and a worker's rows cross a shared-memory queue to the leader (the smallest demo system's
/// extraction took about half again the CPU with two of them, for the same rows).
const EXTRACTION_SETTINGS: &str = "SET work_mem = '1MB'; SET max_parallel_workers_per_gather = 0";

/// Counts from staging.
#[derive(Debug, Clone, Default)]
pub struct StageReport {
    pub tally: Tally,
    /// Candidate rows staged (customers normalized and hashed in this run, with a usable key).
    pub staged: u64,
    /// Customers whose ledger member was built from these very values: not normalized again.
    pub unchanged: u64,
    /// Ledger members whose source customer changed or is no longer extracted.
    pub gone: u64,
    /// Candidates marked as possibly repeating an earlier candidate's member.
    pub maybe_dup: u64,
    /// Rows written to `sync_stage` (candidates sent while extracting are not).
    pub in_table: u64,
    /// Members in the ledger before the run changes it (0 on a first sync, whose ledger fills
    /// while it stages).
    pub ledger_members: i64,
}

impl StageReport {
    fn add(&mut self, other: &StageReport) {
        self.tally.add(&other.tally);
        self.staged += other.staged;
        self.unchanged += other.unchanged;
        self.gone += other.gone;
        self.maybe_dup += other.maybe_dup;
        self.in_table += other.in_table;
    }
}

/// Why staging stopped.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The extraction query does not fit the system's match keys: a configuration problem.
    #[error("{}", .0.join("; "))]
    Columns(Vec<String>),
    /// The run was cancelled (shutdown, or the lease was lost) while extracting.
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Creates `pg_temp.sync_stage` on `stage`, fills it (see the module docs) and dedupes it into the
/// plan tables ([`diff::dedupe`]). `expected` is about how many candidates to expect (it sizes the
/// Bloom filter, which grows past it).
pub async fn stage_members(
    extract: &tokio_postgres::Client,
    stage: &tokio_postgres::Client,
    sql: &str,
    plan: &SyncPlan,
    expected: usize,
    stream: Option<NewMemberFeed>,
    cancel: &CancellationToken,
) -> Result<StageReport, StageError> {
    extract
        .batch_execute(EXTRACTION_SETTINGS)
        .await
        .context("Failed to set up the extraction's session")?;
    // The operator's query on its own first, so a column problem is reported in its own terms.
    let statement = extract
        .prepare(sql)
        .await
        .context("The extraction query does not prepare")?;
    let columns: Vec<(String, Type)> = statement
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect();
    map_columns(&columns, &plan.match_keys).map_err(StageError::Columns)?;
    // National phone numbers take the row's own country when the query has one.
    let row_country = plan.match_keys.contains(&MatchKey::Phone)
        && columns
            .iter()
            .any(|(name, ty)| name == "country" && is_text(ty));
    let first_sync = stream.is_some();
    let extraction = Arc::new(Extraction::new(
        sql,
        &plan.match_keys,
        row_country,
        !first_sync,
    ));
    let statement = extract
        .prepare(&extraction.sql)
        .await
        .context("The extraction query does not prepare next to the ledger")?;

    plan_tables::create_stage(stage).await?;
    let sink = stage
        .copy_in(plan_tables::STAGE_COPY)
        .await
        .context("Failed to start COPY into the staging table")?;
    let mut sink = pin!(sink);
    sink.send(Bytes::from_static(copy::HEADER))
        .await
        .context("COPY into the staging table failed")?;

    let seed = digest::seed(&plan.match_keys, &plan.normalizer);
    let params: Vec<&(dyn ToSql + Sync)> = match first_sync {
        true => vec![&plan.tenant_ids, &plan.excluded_segments, &seed],
        false => vec![
            &plan.tenant_ids,
            &plan.excluded_segments,
            &plan.id,
            &seed,
            &plan.definition_id,
        ],
    };
    // Without a previous run, the planner's estimate sizes the Bloom filter.
    let expected = match expected {
        0 => planned_rows(extract, &extraction.sql, &params).await,
        n => n,
    };
    let rows = extract
        .query_raw(&statement, params)
        .await
        .context("The extraction query failed")?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut hashed = pin!(
        rows.try_chunks(CHUNK_ROWS)
            .map_err(|e| anyhow::Error::new(e.1).context("Reading customers failed"))
            .map_ok(|chunk| {
                let plan = plan.clone();
                let extraction = extraction.clone();
                async move {
                    tokio::task::spawn_blocking(move || hash_chunk(&plan, &extraction, &chunk))
                        .await
                        .context("A hashing worker panicked")?
                }
            })
            .try_buffered(workers)
    );

    let mut report = StageReport {
        tally: Tally::new(plan.match_keys.len()),
        ..StageReport::default()
    };
    // Settled in stream order, on this task: the first row of a member is never marked and every
    // later one is, whatever thread hashed it; seq follows the stream.
    let mut seen = SeenKeys::new(expected);
    let mut seq = 0i64;
    let mut stream = stream.map(|s| {
        let batch_rows = s.batch_rows.clamp(1, crate::meta::MAX_USERS_PER_CALL);
        let batch_cell_bytes = batch_rows * cells::hashed_row_bytes(plan.match_keys.len());
        FeedBuffer {
            tx: s.tx,
            batch_rows,
            batch_cell_bytes,
            filling: NewMembers::with_capacity(batch_rows, batch_cell_bytes),
        }
    });
    loop {
        let done = tokio::select! {
            done = hashed.next() => done,
            _ = cancel.cancelled() => {
                // The caller cancels the query on the server (see first_sync::stage_and_send_new).
                return Err(StageError::Interrupted);
            }
        };
        let Some(done) = done else { break };
        let chunk = done?;
        report.add(&chunk.report);
        let mut encoded =
            BytesMut::with_capacity(chunk.cells.len() + chunk.rows.len() * STAGE_ROW_FIXED);
        for row in &chunk.rows {
            seq += 1;
            match row {
                Staged::Gone(key) => {
                    encode_gone(&mut encoded, seq, key);
                    report.in_table += 1;
                }
                Staged::Candidate(source, range) => {
                    let cells = &chunk.cells[range.clone()];
                    let maybe_dup = seen.insert(u64::from_le_bytes(
                        source.member_key[..8].try_into().expect("32-byte key"),
                    ));
                    report.maybe_dup += u64::from(maybe_dup);
                    match &mut stream {
                        Some(s) if !maybe_dup => s.push(*source, cells).await?,
                        _ => {
                            encode_candidate(&mut encoded, seq, source, cells, maybe_dup);
                            report.in_table += 1;
                        }
                    }
                }
            }
        }
        sink.send(encoded.freeze())
            .await
            .context("COPY into the staging table failed")?;
    }
    // The last streamed rows are staged: the add phase sends them after the diff.
    if let Some(s) = stream {
        let mut encoded = BytesMut::new();
        for (source, cells) in s.filling.sources.iter().zip(s.filling.cells.rows()) {
            seq += 1;
            encode_candidate(&mut encoded, seq, source, cells, false);
            report.in_table += 1;
        }
        sink.send(encoded.freeze())
            .await
            .context("COPY into the staging table failed")?;
    }
    sink.send(Bytes::from_static(&copy::TRAILER))
        .await
        .context("COPY into the staging table failed")?;
    sink.as_mut()
        .finish()
        .await
        .context("COPY into the staging table failed")?;
    // Unchanged customers stayed in Postgres: they are the ledger's members not staged as gone.
    // (A first sync's ledger was empty when the extraction began; it fills as members are sent.)
    if !first_sync {
        let settled = ledger::settled(stage, plan.scope()).await?;
        for &(invalid, filled, rows) in &settled.unchanged {
            report.tally.add_unchanged(invalid, filled, rows as u64);
            report.unchanged += rows as u64;
        }
        report.ledger_members = settled.members;
    }
    // The staged set is whole: its plan tables and dedupe need nothing else, so on a first sync
    // they run while the uploader's last batches go to Meta, before the load joins the ledger.
    diff::dedupe(stage, &report).await?;
    Ok(report)
}

/// The planner's row estimate for the extraction (0 if it cannot tell).
async fn planned_rows(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> usize {
    let explained = client
        .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), params)
        .await;
    explained
        .ok()
        .and_then(|row| row.try_get::<_, serde_json::Value>(0).ok())
        .and_then(|plan| plan[0]["Plan"]["Plan Rows"].as_f64())
        .map_or(0, |rows| rows as usize)
}

/// A staged row, in stream order.
enum Staged {
    /// A ledger member whose source customer changed or left.
    Gone([u8; 32]),
    /// A customer's member; its packed cells are this range of the chunk's `cells`.
    Candidate(MemberSource, std::ops::Range<usize>),
}

/// One hashed chunk: its counts and its staged rows.
struct HashedChunk {
    report: StageReport,
    rows: Vec<Staged>,
    cells: Vec<u8>,
}

/// Where new members go while extracting, on a first sync (see [`super::first_sync`]).
pub struct NewMemberFeed {
    pub tx: mpsc::Sender<NewMembers>,
    /// Rows per batch (at most Meta's 10,000).
    pub batch_rows: usize,
}

struct FeedBuffer {
    tx: mpsc::Sender<NewMembers>,
    batch_rows: usize,
    /// Room for a batch's packed cells (see [`cells::hashed_row_bytes`]): a batch filled into buffers
    /// of its final size is not copied as they grow.
    batch_cell_bytes: usize,
    /// Sent when it is full and another row comes: the stream's last rows are staged instead, so
    /// the add phase after the diff always has a batch to close the session with.
    filling: NewMembers,
}

impl FeedBuffer {
    async fn push(&mut self, source: MemberSource, cells: &[u8]) -> anyhow::Result<()> {
        if self.filling.len() >= self.batch_rows {
            let next = NewMembers::with_capacity(self.batch_rows, self.batch_cell_bytes);
            let full = std::mem::replace(&mut self.filling, next);
            self.tx
                .send(full)
                .await
                .map_err(|_| anyhow::anyhow!("the uploader stopped"))?;
        }
        self.filling.push(source, cells);
        Ok(())
    }
}

/// CPU work for one chunk, on a blocking thread: rows are settled, members built and hashed.
fn hash_chunk(
    plan: &SyncPlan,
    extraction: &Extraction,
    rows: &[tokio_postgres::Row],
) -> anyhow::Result<HashedChunk> {
    let map = &extraction.map;
    let mut report = StageReport {
        tally: Tally::new(plan.match_keys.len()),
        ..StageReport::default()
    };
    let mut staged = Vec::with_capacity(rows.len());
    let mut cells = Vec::with_capacity(rows.len() * cells::hashed_row_bytes(plan.match_keys.len()));
    let mut builder = MemberBuilder::new(&plan.normalizer, &plan.match_keys);
    let mut member = Member::empty();
    let mut raw: Vec<Option<&str>> = Vec::with_capacity(map.keys.len());
    let ledger_key = |row: &tokio_postgres::Row| -> anyhow::Result<Option<[u8; 32]>> {
        let key: Option<&[u8]> = row.try_get(extraction.ledger_key)?;
        key.map(|k| k.try_into().context("a ledger member key is not 32 bytes"))
            .transpose()
    };
    for row in rows {
        let ledger_key = ledger_key(row)?;
        let customer_id: Option<i64> = row.try_get(map.customer_id)?;
        let Some(customer_id) = customer_id else {
            staged.push(Staged::Gone(ledger_key.context("customer_id is NULL")?));
            report.gone += 1;
            continue;
        };
        let tenant_id: i32 = row
            .try_get::<_, Option<i32>>(map.tenant_id)?
            .context("tenant_id is NULL")?;
        raw.clear();
        for &i in &map.keys {
            raw.push(
                row.try_get::<_, Option<&str>>(i)
                    .context("Reading a customer value failed")?,
            );
        }
        let country: Option<&str> = match extraction.country {
            Some(i) => row
                .try_get(i)
                .context("Reading a customer's country failed")?,
            None => None,
        };
        let digest: i64 = row.try_get(extraction.digest)?;
        // The customer changed: its ledger member goes, and its new one is built below.
        if let Some(key) = ledger_key {
            staged.push(Staged::Gone(key));
            report.gone += 1;
        }
        if builder.build_into(
            &raw,
            country,
            tenant_id,
            customer_id,
            &mut report.tally,
            &mut member,
        ) {
            let start = cells.len();
            cells.extend_from_slice(&member.cells);
            staged.push(Staged::Candidate(
                MemberSource::of(&member, digest),
                start..cells.len(),
            ));
            report.staged += 1;
        }
    }
    Ok(HashedChunk {
        report,
        rows: staged,
        cells,
    })
}

/// Fields per `sync_stage` row.
const STAGE_FIELDS: i16 = 10;

/// Bytes of a `sync_stage` row besides its cells: field count and lengths, the key, the ids.
const STAGE_ROW_FIXED: usize = 2 + STAGE_FIELDS as usize * 4 + 32 + 8 + 2 + 4 + 8 + 8 + 4 + 4 + 1;

/// A candidate `sync_stage` row.
fn encode_candidate(
    buf: &mut BytesMut,
    seq: i64,
    source: &MemberSource,
    cells: &[u8],
    maybe_dup: bool,
) {
    Tuple::start(buf, STAGE_FIELDS)
        .i64(seq)
        .bytes(&source.member_key)
        .bytes(cells)
        .i16(source.filled)
        .i32(source.tenant_id)
        .i64(source.customer_id)
        .i64(source.digest)
        .i32(source.invalid_keys)
        .i32(source.filled_keys)
        .bool(maybe_dup);
}

/// A "gone" row: the ledger member's key, no cells, never a duplicate.
fn encode_gone(buf: &mut BytesMut, seq: i64, member_key: &[u8]) {
    let mut tuple = Tuple::start(buf, STAGE_FIELDS).i64(seq).bytes(member_key);
    for _ in 3..STAGE_FIELDS {
        tuple = tuple.null();
    }
    tuple.bool(false);
}
