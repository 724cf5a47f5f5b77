//! Extract → normalize + hash → COPY into a session-local staging table, as one pipeline:
//! Postgres streams rows (with backpressure), blocking workers hash chunks off the async threads,
//! and a binary COPY writes members as they come. Memory stays a few chunks deep whatever N is.
use std::pin::pin;
use std::sync::Arc;

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::types::{ToSql, Type};

use super::extract::{ColumnMap, map_columns};
use super::member::{Member, Tally, build_member};
use super::system::SyncPlan;

/// Rows per chunk handed to a hashing worker.
const CHUNK_ROWS: usize = 4096;

/// Counts from staging.
#[derive(Debug, Clone, Default)]
pub struct StageReport {
    pub tally: Tally,
    pub staged: u64,
}

/// Why staging stopped.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The extraction query does not fit the system's match keys: a configuration problem.
    #[error("{}", .0.join("; "))]
    Columns(Vec<String>),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Creates `pg_temp.sync_stage` on `stage` and fills it with the system's members.
pub async fn stage_members(
    extract: &tokio_postgres::Client,
    stage: &tokio_postgres::Client,
    sql: &str,
    plan: &SyncPlan,
) -> Result<StageReport, StageError> {
    let statement = extract
        .prepare(sql)
        .await
        .context("The extraction query does not prepare")?;
    let columns: Vec<(String, Type)> = statement
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect();
    let map = Arc::new(map_columns(&columns, &plan.match_keys).map_err(StageError::Columns)?);

    stage
        .batch_execute(
            "DROP TABLE IF EXISTS pg_temp.sync_stage;
             CREATE TEMP TABLE sync_stage (member_key BYTEA NOT NULL, cells BYTEA NOT NULL,
                 filled SMALLINT NOT NULL, tenant_id INTEGER NOT NULL, customer_id BIGINT NOT NULL);",
        )
        .await
        .context("Failed to create the staging table")?;
    let sink = stage
        .copy_in("COPY sync_stage (member_key, cells, filled, tenant_id, customer_id) FROM STDIN (FORMAT binary)")
        .await
        .context("Failed to start COPY into the staging table")?;
    let mut sink = pin!(sink);
    sink.send(Bytes::from_static(COPY_HEADER))
        .await
        .context("COPY into the staging table failed")?;

    let params: [&(dyn ToSql + Sync); 2] = [&plan.tenant_ids, &plan.excluded_segments];
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
                let map = map.clone();
                async move {
                    tokio::task::spawn_blocking(move || hash_chunk(&plan, &map, &chunk))
                        .await
                        .context("A hashing worker panicked")?
                }
            })
            .try_buffered(workers)
    );

    let mut report = StageReport {
        tally: Tally::new(plan.match_keys.len()),
        staged: 0,
    };
    while let Some(done) = hashed.next().await {
        let (encoded, staged, tally) = done?;
        report.tally.add(&tally);
        report.staged += staged;
        sink.send(encoded.freeze())
            .await
            .context("COPY into the staging table failed")?;
    }
    sink.send(Bytes::from_static(&COPY_TRAILER))
        .await
        .context("COPY into the staging table failed")?;
    sink.as_mut()
        .finish()
        .await
        .context("COPY into the staging table failed")?;
    Ok(report)
}

/// CPU work for one chunk, on a blocking thread: members are built and encoded as binary COPY
/// tuples here, so the async side only forwards bytes.
fn hash_chunk(
    plan: &SyncPlan,
    map: &ColumnMap,
    rows: &[tokio_postgres::Row],
) -> anyhow::Result<(BytesMut, u64, Tally)> {
    let mut tally = Tally::new(plan.match_keys.len());
    let mut encoded = BytesMut::with_capacity(rows.len() * (40 + 33 * plan.match_keys.len()));
    let mut staged = 0u64;
    let mut raw: Vec<Option<&str>> = Vec::with_capacity(map.keys.len());
    for row in rows {
        raw.clear();
        for &i in &map.keys {
            raw.push(
                row.try_get::<_, Option<&str>>(i)
                    .context("Reading a customer value failed")?,
            );
        }
        let tenant_id: i32 = row.try_get(map.tenant_id).context("tenant_id is NULL")?;
        let customer_id: i64 = row
            .try_get(map.customer_id)
            .context("customer_id is NULL")?;
        if let Some(m) = build_member(
            &plan.normalizer,
            &plan.match_keys,
            &raw,
            tenant_id,
            customer_id,
            &mut tally,
        ) {
            encode_tuple(&mut encoded, &m);
            staged += 1;
        }
    }
    Ok((encoded, staged, tally))
}

/// Binary COPY: signature, flags, header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Binary COPY: end of data.
const COPY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// One `sync_stage` row in binary COPY format: the field count, then each field's length and bytes.
fn encode_tuple(buf: &mut BytesMut, m: &Member) {
    buf.put_i16(5);
    buf.put_i32(32);
    buf.put_slice(&m.member_key);
    buf.put_i32(m.cells.len() as i32);
    buf.put_slice(&m.cells);
    buf.put_i32(2);
    buf.put_i16(m.filled);
    buf.put_i32(4);
    buf.put_i32(m.tenant_id);
    buf.put_i32(8);
    buf.put_i64(m.customer_id);
}
