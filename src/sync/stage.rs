//! Extract → normalize + hash → COPY into a session-local staging table, as one pipeline:
//! Postgres streams rows (with backpressure), blocking workers hash chunks off the async threads,
//! and a binary COPY writes members as they come. Memory stays a few chunks deep whatever N is.
use std::pin::pin;
use std::sync::Arc;

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
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
    let writer = BinaryCopyInWriter::new(
        sink,
        &[Type::BYTEA, Type::BYTEA, Type::INT2, Type::INT4, Type::INT8],
    );
    let mut writer = pin!(writer);

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
        let (members, tally) = done?;
        report.tally.add(&tally);
        for m in &members {
            writer
                .as_mut()
                .write(&[
                    &&m.member_key[..],
                    &m.cells,
                    &m.filled,
                    &m.tenant_id,
                    &m.customer_id,
                ])
                .await
                .context("COPY into the staging table failed")?;
        }
        report.staged += members.len() as u64;
    }
    writer
        .finish()
        .await
        .context("COPY into the staging table failed")?;
    Ok(report)
}

/// CPU work for one chunk, on a blocking thread.
fn hash_chunk(
    plan: &SyncPlan,
    map: &ColumnMap,
    rows: &[tokio_postgres::Row],
) -> anyhow::Result<(Vec<Member>, Tally)> {
    let mut tally = Tally::new(plan.match_keys.len());
    let mut members = Vec::with_capacity(rows.len());
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
            members.push(m);
        }
    }
    Ok((members, tally))
}
