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
use tokio_util::sync::CancellationToken;

use super::cells::PackedRows;
use super::lease::Lease;
use super::rejections::{self, Rejected, locate};
use crate::meta::{
    MAX_USERS_PER_CALL, MetaClient, MetaError, UploadSession, UserRows, UsersResponse, UsersUpload,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Remove,
    Add,
    Replace,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Remove => "remove",
            Direction::Add => "add",
            Direction::Replace => "replace",
        }
    }
}

/// Where a run's batches go, whichever phase sends them (streamed on a first sync, or after the
/// diff): the audience and session on Meta's side, the run row and the ledger on ours.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub meta: &'a MetaClient,
    pub system_name: &'a str,
    pub ad_account_id: &'a str,
    pub audience_id: &'a str,
    pub configuration_id: i32,
    /// Which of the system's audiences (see [`crate::sync::system::OWN_AUDIENCE`]).
    pub definition_id: i32,
    /// `EMAIL,PHONE,FN,LN`: the schema of added rows.
    pub match_keys: &'a str,
    pub run_id: i64,
    pub session_id: i64,
    /// Checked before every call to Meta; every ledger write is fenced on it.
    pub lease: &'a Lease,
    pub cancel: &'a CancellationToken,
}

/// Everything one direction's upload needs.
pub struct Upload<'a> {
    /// The session holding the plan tables; the ledger is written on it too.
    pub stage: &'a tokio_postgres::Client,
    pub target: Target<'a>,
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

/// Meta's `num_received` and `num_invalid_entries` are the session's running totals; the run row
/// records each batch's increase. Carried across the phases of one session (a first sync's
/// streamed batches, then the add phase).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionProgress {
    received: i64,
    invalid: i64,
}

impl SessionProgress {
    /// Takes a batch's answer; returns the increases `(received, invalid)`.
    pub fn advance(&mut self, response: &UsersResponse) -> (i64, i64) {
        let received = (response.num_received as i64 - self.received).max(0);
        let invalid = (response.num_invalid_entries as i64 - self.invalid).max(0);
        self.received = self.received.max(response.num_received as i64);
        self.invalid = self.invalid.max(response.num_invalid_entries as i64);
        (received, invalid)
    }
}

/// Counts a failed Meta call by its error code.
pub fn count_meta_error(e: &MetaError) {
    let code = e
        .code()
        .map_or("transport".to_string(), |(c, _)| c.to_string());
    metrics::counter!("cdp_meta_errors_total", "code" => code).increment(1);
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadTotals {
    pub batches: i64,
    pub rows: i64,
    pub interrupted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    LeaseLost(#[from] super::lease::LeaseLost),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
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
    /// Increases of the session's running totals (`num_received`, `num_invalid_entries`).
    received: i64,
    invalid: i64,
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
        let mut progress = self.progress;
        while let Some(batch) = rx.recv().await {
            if self.target.cancel.is_cancelled() {
                totals.interrupted = true;
                break;
            }
            if let Err(lost) = self.target.lease.ensure().await {
                return (totals, Some(lost.into()));
            }
            let seq = self.first_batch_seq + totals.batches as u32;
            let rows = batch.rows.row_count() as i64;
            let last = totals.rows + rows >= self.total;
            let schema: Vec<&str> = batch.schema.split(',').collect();
            let upload = UsersUpload {
                schema: &schema,
                rows: &batch.rows,
                session: UploadSession {
                    session_id: self.target.session_id,
                    batch_seq: seq,
                    last_batch_flag: last,
                    estimated_num_total: Some(self.session_total as u64),
                },
            };
            let call = async {
                let (meta, account, audience) = (
                    self.target.meta,
                    self.target.ad_account_id,
                    self.target.audience_id,
                );
                match direction {
                    Direction::Add => meta.add_users(account, audience, &upload).await,
                    Direction::Remove => meta.remove_users(account, audience, &upload).await,
                    Direction::Replace => meta.replace_users(account, audience, &upload).await,
                }
            };
            let result = match self.target.lease.guard(call).await {
                Ok(result) => result,
                Err(lost) => return (totals, Some(lost.into())),
            };
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    count_meta_error(&e);
                    return (totals, Some(e.into()));
                }
            };
            totals.batches += 1;
            totals.rows += rows;
            tracing::info!(
                system = self.target.system_name,
                direction = direction.name(),
                batch = totals.batches,
                batches,
                rows,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "batch accepted"
            );
            // Removed rows have no customer to name (and Meta's samples only matter for adds).
            let rejected = match direction {
                Direction::Remove => Vec::new(),
                _ => locate(&response.invalid_entry_samples, &schema, batch.rows.rows())
                    .into_iter()
                    .map(|r| (batch.seqs[r.row], r))
                    .collect(),
            };
            drop(schema);
            drop(batch.rows);
            let (received, invalid) = progress.advance(&response);
            let done = Accepted {
                schema: batch.schema,
                first: batch.first,
                last: batch.last,
                final_batch: last,
                received,
                invalid,
                rejected,
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
        rejections::record(
            self.stage,
            self.target.run_id,
            self.target.configuration_id,
            &found,
        )
        .await
    }

    async fn commit_one(&self, direction: Direction, a: &Accepted) -> anyhow::Result<()> {
        let progress = "UPDATE cdp.facebook_sync_runs
                           SET batches = batches + 1, num_received = num_received + $4,
                               num_invalid_entries = num_invalid_entries + $5";
        match direction {
            Direction::Replace => {
                self.stage
                    .execute(
                        "UPDATE cdp.facebook_sync_runs
                            SET batches = batches + 1, num_received = num_received + $2,
                                num_invalid_entries = num_invalid_entries + $3
                          WHERE id = $1",
                        &[&self.target.run_id, &a.received, &a.invalid],
                    )
                    .await?;
                if a.final_batch {
                    self.replace_ledger().await?;
                }
            }
            Direction::Add => {
                let upsert = if self.upsert {
                    "ON CONFLICT (configuration_id, definition_id, member_key) DO UPDATE
                        SET audience_id = EXCLUDED.audience_id, match_keys = EXCLUDED.match_keys,
                            cells = EXCLUDED.cells, added_run_id = EXCLUDED.added_run_id, added_at = now(),
                            source_tenant_id = EXCLUDED.source_tenant_id,
                            source_customer_id = EXCLUDED.source_customer_id,
                            source_digest = EXCLUDED.source_digest, filled = EXCLUDED.filled,
                            invalid_keys = EXCLUDED.invalid_keys, filled_keys = EXCLUDED.filled_keys"
                } else {
                    ""
                };
                self.stage
                    .execute(
                        &format!(
                            // The configuration row is locked once for the batch, as a foreign key would
                            // for each row (see sql/0003_ledger_sources.sql).
                            "WITH cfg AS (SELECT $6::int AS id WHERE cdp.hold_lease($6, $9)),
                                  ins AS (
                                 INSERT INTO cdp.facebook_audience_members
                                        (configuration_id, definition_id, audience_id, member_key, match_keys, cells,
                                         added_run_id, source_tenant_id, source_customer_id, source_digest, filled,
                                         invalid_keys, filled_keys)
                                 SELECT cfg.id, $10, $7, a.member_key, $8, a.cells, $1, a.tenant_id, a.customer_id, a.digest,
                                        a.filled, a.invalid_keys, a.filled_keys
                                   FROM cfg, sync_stage a WHERE a.seq BETWEEN $2 AND $3 AND a.upload
                                  -- In key order, the ledger's index takes a batch much faster.
                                  ORDER BY a.member_key
                                 {upsert}
                                 RETURNING 1)
                             {progress}, added = added + (SELECT count(*) FROM ins)
                              WHERE id = $1 AND EXISTS (SELECT 1 FROM cfg)"
                        ),
                        &[
                            &self.target.run_id,
                            &a.first,
                            &a.last,
                            &a.received,
                            &a.invalid,
                            &self.target.configuration_id,
                            &self.target.audience_id,
                            &self.target.match_keys,
                            &self.target.lease.worker_id(),
                            &self.target.definition_id,
                        ],
                    )
                    .await?;
            }
            Direction::Remove => {
                self.stage
                    .execute(
                        &format!(
                            "WITH cfg AS (SELECT $6::int AS id WHERE cdp.hold_lease($6, $8)),
                                  del AS (
                                 DELETE FROM cdp.facebook_audience_members m
                                  USING sync_removes r, cfg
                                  WHERE r.match_keys = $7 AND r.seq BETWEEN $2 AND $3
                                    AND m.configuration_id = $6 AND m.definition_id = $9
                                    AND m.member_key = r.member_key AND m.cells = r.cells
                                 RETURNING 1)
                             {progress}, removed = removed + (SELECT count(*) FROM del)
                              WHERE id = $1 AND EXISTS (SELECT 1 FROM cfg)"
                        ),
                        &[
                            &self.target.run_id,
                            &a.first,
                            &a.last,
                            &a.received,
                            &a.invalid,
                            &self.target.configuration_id,
                            &a.schema,
                            &self.target.lease.worker_id(),
                            &self.target.definition_id,
                        ],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// After the last replace batch the audience is exactly the uploaded set: so is the ledger.
    /// One transaction, fenced on the lease; on any error it is rolled back, so the pooled
    /// connection is never left in an aborted transaction.
    async fn replace_ledger(&self) -> anyhow::Result<()> {
        let t = &self.target;
        self.stage
            .batch_execute("BEGIN")
            .await
            .context("Failed to start the ledger replacement")?;
        let replaced = async {
            self.stage
                .execute(
                    "SELECT cdp.hold_lease($1, $2)",
                    &[&t.configuration_id, &t.lease.worker_id()],
                )
                .await?;
            self.stage
                .execute(
                    "DELETE FROM cdp.facebook_audience_members
                      WHERE configuration_id = $1 AND definition_id = $2",
                    &[&t.configuration_id, &t.definition_id],
                )
                .await?;
            let added = self
                .stage
                .execute(
                    "INSERT INTO cdp.facebook_audience_members
                            (configuration_id, definition_id, audience_id, member_key, match_keys, cells,
                             added_run_id, source_tenant_id, source_customer_id, source_digest, filled,
                             invalid_keys, filled_keys)
                     SELECT $1, $5, $2, member_key, $3, cells, $4, tenant_id, customer_id, digest,
                            filled, invalid_keys, filled_keys
                       FROM sync_stage WHERE upload",
                    &[&t.configuration_id, &t.audience_id, &t.match_keys, &t.run_id, &t.definition_id],
                )
                .await?;
            self.stage
                .execute(
                    "UPDATE cdp.facebook_sync_runs SET added = $2 WHERE id = $1",
                    &[&t.run_id, &(added as i64)],
                )
                .await?;
            self.stage.batch_execute("COMMIT").await
        }
        .await;
        if replaced.is_err() {
            let _ = self.stage.batch_execute("ROLLBACK").await;
        }
        replaced.context("Failed to replace the ledger")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(received: u64, invalid: u64) -> UsersResponse {
        UsersResponse {
            num_received: received,
            num_invalid_entries: invalid,
            ..UsersResponse::default()
        }
    }

    #[test]
    fn a_session_carried_into_the_next_phase_counts_only_the_new_batches() {
        let mut streamed = SessionProgress::default();
        assert_eq!(streamed.advance(&answer(10_000, 2)), (10_000, 2));
        assert_eq!(streamed.advance(&answer(20_000, 3)), (10_000, 1));
        // The add phase goes on with the same session: Meta's totals include the streamed rows.
        let mut add_phase = streamed;
        assert_eq!(add_phase.advance(&answer(20_500, 3)), (500, 0));
        // A retried batch's answer repeats the total: nothing is counted twice.
        assert_eq!(add_phase.advance(&answer(20_500, 3)), (0, 0));
    }
}
