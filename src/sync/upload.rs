//! Upload planned changes in batches of at most 10,000 rows, one session per direction, as a
//! three-stage pipeline so the network never waits on the database:
//!
//! fetch (keyset pages of the plan table) → send (one batch at a time, in `batch_seq` order)
//! → commit (ledger + run progress in one statement, only for batches Meta accepted).
//!
//! The ledger is written on the staging session straight from the plan table (`seq` range of the
//! accepted batch), so rows cross the wire once, to Meta. A crash loses at most the batch in
//! flight: accepted batches are in the ledger, so the next run's diff does not plan them again.
use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::mpsc;

use super::cells::PackedRows;
use super::rejections::{self, Rejected};
use super::session_sender::{SessionProgress, SessionSender, Target, UploadError};
use crate::db::ledger;
use crate::db::runs::{self, BatchProgress};
use crate::meta::{Direction, MAX_USERS_PER_CALL, UserRows};

/// Everything one direction's upload needs.
pub struct Upload<'a> {
    /// The session holding the plan tables; the ledger is written on it too.
    pub stage: &'a tokio_postgres::Client,
    pub target: Target<'a>,
    pub session_id: i64,
    /// Rows this phase sends.
    pub total: i64,
    /// The session's first batch number in this phase (after batches streamed on a first sync).
    pub first_batch_seq: u32,
    /// The session's estimated total, for Meta.
    pub session_total: i64,
    /// The session's totals so far (from batches streamed on a first sync).
    pub progress: SessionProgress,
    /// Rows per call (at most Meta's 10,000).
    pub batch_rows: usize,
    /// Append mode: an added row replaces the ledger row of the same member (a changed member).
    pub upsert: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadTotals {
    pub batches: i64,
    pub rows: i64,
    pub interrupted: bool,
}

/// A page of the plan, kept packed until it is sent (a decoded 10,000-row batch takes about
/// three times the memory).
struct Batch {
    schema: String,
    rows: PackedRows,
    /// The batch is the plan rows (of its schema) with `first <= seq <= last`.
    first: i64,
    last: i64,
    /// Each row's `seq`, to trace Meta's invalid entries back to their customers.
    seqs: Vec<i64>,
}

/// A batch Meta accepted, on its way to the ledger.
struct Accepted {
    schema: String,
    first: i64,
    last: i64,
    final_batch: bool,
    progress: BatchProgress,
    /// Entries Meta sampled as invalid, by the `seq` of their plan row.
    rejected: Vec<(i64, Rejected)>,
}

impl Upload<'_> {
    pub async fn run(&self, direction: Direction) -> Result<UploadTotals, UploadError> {
        if self.total == 0 {
            return Ok(UploadTotals::default());
        }
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
        let (accepted_tx, accepted_rx) = mpsc::channel::<Accepted>(1);
        let (fetched, sent, committed) = tokio::join!(
            self.fetch(direction, batch_tx),
            self.send(direction, batch_rx, accepted_tx),
            self.commit(direction, accepted_rx),
        );
        let (totals, send_error) = sent;
        committed?;
        if let Some(e) = send_error {
            return Err(e);
        }
        fetched?;
        Ok(totals)
    }

    /// Reads the plan in `seq` order, one page per batch. Removals are paged per schema (the
    /// match keys their rows were added with), so no batch mixes two.
    async fn fetch(&self, direction: Direction, tx: mpsc::Sender<Batch>) -> anyhow::Result<()> {
        let limit = self.batch_rows.clamp(1, MAX_USERS_PER_CALL);
        let (schemas, sql) = if direction == Direction::Remove {
            let schemas: Vec<String> = self
                .stage
                .query(
                    "SELECT DISTINCT match_keys FROM sync_removes ORDER BY 1",
                    &[],
                )
                .await
                .context("Failed to read the removal schemas")?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let sql = format!(
                "SELECT seq, cells FROM sync_removes WHERE match_keys = $1 AND seq > $2
                  ORDER BY seq LIMIT {limit}"
            );
            (schemas, sql)
        } else {
            let sql = format!(
                "SELECT seq, cells FROM sync_stage WHERE seq > $1 AND upload ORDER BY seq LIMIT {limit}"
            );
            (vec![self.target.match_keys.to_string()], sql)
        };
        let statement = self
            .stage
            .prepare(&sql)
            .await
            .context("Failed to prepare the batch query")?;
        for schema in schemas {
            let mut after = 0i64;
            loop {
                let rows = if direction == Direction::Remove {
                    self.stage.query(&statement, &[&schema, &after]).await
                } else {
                    self.stage.query(&statement, &[&after]).await
                }
                .context("Failed to read a batch")?;
                let Some(final_row) = rows.last() else {
                    break;
                };
                let mut packed = PackedRows::default();
                let mut seqs = Vec::with_capacity(rows.len());
                for row in &rows {
                    seqs.push(row.get(0));
                    packed.push(row.get(1));
                }
                let batch = Batch {
                    schema: schema.clone(),
                    rows: packed,
                    first: rows[0].get(0),
                    last: final_row.get(0),
                    seqs,
                };
                after = batch.last;
                drop(rows);
                if tx.send(batch).await.is_err() {
                    return Ok(()); // the sender stopped (interrupted or failed)
                }
            }
        }
        Ok(())
    }

    async fn send(
        &self,
        direction: Direction,
        mut rx: mpsc::Receiver<Batch>,
        accepted: mpsc::Sender<Accepted>,
    ) -> (UploadTotals, Option<UploadError>) {
        let per_call = self.batch_rows.clamp(1, MAX_USERS_PER_CALL) as i64;
        let batches = (self.total + per_call - 1) / per_call;
        let mut totals = UploadTotals::default();
        let started = Instant::now();
        let mut sender = SessionSender {
            target: self.target,
            direction,
            session_id: self.session_id,
            next_batch_seq: self.first_batch_seq,
            estimated_total: Some(self.session_total as u64),
            progress: self.progress,
        };
        while let Some(batch) = rx.recv().await {
            let rows = batch.rows.row_count() as i64;
            let last = totals.rows + rows >= self.total;
            let schema: Vec<&str> = batch.schema.split(',').collect();
            let sent = match sender.send(&schema, &batch.rows, last).await {
                Ok(Some(sent)) => sent,
                Ok(None) => {
                    totals.interrupted = true;
                    break;
                }
                Err(e) => return (totals, Some(e)),
            };
            totals.batches += 1;
            totals.rows += rows;
            tracing::info!(
                system = %self.target.plan.label(),
                direction = direction.as_str(),
                batch = totals.batches,
                batches,
                rows,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "batch accepted"
            );
            drop(schema);
            drop(batch.rows);
            let done = Accepted {
                rejected: sent
                    .rejected
                    .into_iter()
                    .map(|r| (batch.seqs[r.row], r))
                    .collect(),
                schema: batch.schema,
                first: batch.first,
                last: batch.last,
                final_batch: last,
                progress: sent.progress,
            };
            if accepted.send(done).await.is_err() {
                return (
                    totals,
                    Some(anyhow::anyhow!("the ledger writer stopped").into()),
                );
            }
        }
        (totals, None)
    }

    /// Commits accepted batches in order, one statement each (ledger and run row together).
    async fn commit(
        &self,
        direction: Direction,
        mut rx: mpsc::Receiver<Accepted>,
    ) -> anyhow::Result<()> {
        while let Some(accepted) = rx.recv().await {
            self.commit_one(direction, &accepted)
                .await
                .context("Failed to record an accepted batch in the ledger")?;
            self.record_rejections(&accepted.rejected).await?;
        }
        Ok(())
    }

    /// The run's details: Meta's sampled invalid entries, by the customer of their plan row.
    async fn record_rejections(&self, rejected: &[(i64, Rejected)]) -> anyhow::Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = rejected.iter().map(|(seq, _)| *seq).collect();
        let customers: HashMap<i64, (i32, i64)> = self
            .stage
            .query(
                "SELECT seq, tenant_id, customer_id FROM sync_stage WHERE seq = ANY($1)",
                &[&seqs],
            )
            .await
            .context("Failed to read the customers of Meta's invalid entries")?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let found: Vec<(i32, i64, Rejected)> = rejected
            .iter()
            .filter_map(|(seq, r)| {
                let (tenant, customer) = customers.get(seq)?;
                Some((*tenant, *customer, r.clone()))
            })
            .collect();
        rejections::record(self.stage, self.target.run_id, self.target.plan.id, &found).await
    }

    async fn commit_one(&self, direction: Direction, a: &Accepted) -> anyhow::Result<()> {
        let t = &self.target;
        match direction {
            Direction::Replace => {
                runs::count_batch(self.stage, t.run_id, 0, a.progress).await?;
                if a.final_batch {
                    ledger::replace(self.stage, &t.ledger(t.match_keys)).await?;
                }
            }
            Direction::Add => {
                let range = (a.first, a.last);
                let to = t.ledger(t.match_keys);
                ledger::record_added(self.stage, &to, range, a.progress, self.upsert).await?;
            }
            Direction::Remove => {
                let range = (a.first, a.last);
                ledger::record_removed(self.stage, &t.ledger(&a.schema), range, a.progress).await?;
            }
        }
        Ok(())
    }
}
