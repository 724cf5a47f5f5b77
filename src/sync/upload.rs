//! Upload planned changes in batches of at most 10,000 rows, one session per direction, as a
//! three-stage pipeline so the network never waits on the database:
//!
//! fetch (keyset pages of the plan table) → send (one batch at a time, in `batch_seq` order)
//! → commit (ledger + run progress in one statement, only for batches Meta accepted).
//!
//! A crash loses at most the batch in flight: accepted batches are in the ledger, so the next
//! run's diff does not plan them again.
use std::time::Instant;

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cells::unpack;
use crate::db::Pool;
use crate::meta::{MAX_USERS_PER_CALL, MetaClient, MetaError, UploadSession, UsersUpload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Remove,
    Add,
    Replace,
}

impl Direction {
    fn table(self) -> &'static str {
        match self {
            Direction::Remove => "sync_removes",
            Direction::Add | Direction::Replace => "sync_adds",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Direction::Remove => "remove",
            Direction::Add => "add",
            Direction::Replace => "replace",
        }
    }
}

/// Everything one direction's upload needs.
pub struct Upload<'a> {
    /// The session holding the plan tables.
    pub stage: &'a tokio_postgres::Client,
    /// Connections for ledger writes.
    pub pool: &'a Pool,
    pub meta: &'a MetaClient,
    pub system_name: &'a str,
    pub ad_account_id: &'a str,
    pub audience_id: &'a str,
    pub configuration_id: i32,
    /// `EMAIL,PHONE,FN,LN`: the schema of added rows.
    pub match_keys: &'a str,
    pub run_id: i64,
    pub session_id: i64,
    pub total: i64,
    /// Rows per call (at most Meta's 10,000).
    pub batch_rows: usize,
    pub cancel: &'a CancellationToken,
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
    Other(#[from] anyhow::Error),
}

/// A page of the plan, kept packed until it is sent (a decoded 10,000-row batch takes about
/// three times the memory).
struct Batch {
    schema: String,
    rows: PackedRows,
}

/// Member keys and packed rows in two contiguous buffers: two allocations per batch instead of
/// two per row.
#[derive(Default)]
struct PackedRows {
    /// 32 bytes per row.
    keys: Vec<u8>,
    cells: Vec<u8>,
    /// End of each row's cells in `cells`.
    ends: Vec<usize>,
}

impl PackedRows {
    fn push(&mut self, key: &[u8], cells: &[u8]) {
        self.keys.extend_from_slice(key);
        self.cells.extend_from_slice(cells);
        self.ends.push(self.cells.len());
    }
    fn len(&self) -> usize {
        self.ends.len()
    }
    fn cells(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.cells[start..end])
    }
    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.chunks(32)
    }
}

/// A batch Meta accepted, on its way to the ledger.
struct Accepted {
    rows: PackedRows,
    last: bool,
    /// Increases of the session's running totals (`num_received`, `num_invalid_entries`).
    received: i64,
    invalid: i64,
}

/// Ledger writes of different batches touch different members, so two may run at once on
/// separate connections; the run-row update serializes them briefly.
const CONCURRENT_COMMITS: usize = 2;

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

    async fn fetch(&self, direction: Direction, tx: mpsc::Sender<Batch>) -> anyhow::Result<()> {
        let table = direction.table();
        let limit = self.batch_rows.clamp(1, MAX_USERS_PER_CALL);
        let sql = if direction == Direction::Remove {
            format!(
                "SELECT seq, match_keys, cells, member_key FROM {table}
                  WHERE seq > $1 AND match_keys = (SELECT match_keys FROM {table} WHERE seq > $1 ORDER BY seq LIMIT 1)
                  ORDER BY seq LIMIT {limit}"
            )
        } else {
            format!(
                "SELECT seq, $2::text, cells, member_key FROM {table} WHERE seq > $1 ORDER BY seq LIMIT {limit}"
            )
        };
        let statement = self
            .stage
            .prepare(&sql)
            .await
            .context("Failed to prepare the batch query")?;
        let mut last = 0i64;
        loop {
            let rows = if direction == Direction::Remove {
                self.stage.query(&statement, &[&last]).await
            } else {
                self.stage
                    .query(&statement, &[&last, &self.match_keys])
                    .await
            }
            .context("Failed to read a batch")?;
            let Some(final_row) = rows.last() else {
                return Ok(());
            };
            let hi: i64 = final_row.get(0);
            let schema: String = final_row.get(1);
            let mut packed = PackedRows::default();
            for row in &rows {
                packed.push(row.get(3), row.get(2));
            }
            let batch = Batch {
                schema,
                rows: packed,
            };
            drop(rows);
            last = hi;
            if tx.send(batch).await.is_err() {
                return Ok(()); // the sender stopped (interrupted or failed)
            }
        }
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
        // Meta's num_received (and the sandbox's num_invalid_entries) are the session's running
        // totals: the ledger writer records the increases.
        let (mut session_received, mut session_invalid) = (0i64, 0i64);
        while let Some(batch) = rx.recv().await {
            if self.cancel.is_cancelled() {
                totals.interrupted = true;
                break;
            }
            let seq = totals.batches as u32 + 1;
            let cells = match batch
                .rows
                .cells()
                .map(unpack)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(cells) => cells,
                Err(e) => return (totals, Some(anyhow::Error::new(e).into())),
            };
            let last = totals.rows + cells.len() as i64 >= self.total;
            let schema: Vec<&str> = batch.schema.split(',').collect();
            let upload = UsersUpload {
                schema: &schema,
                rows: &cells,
                session: UploadSession {
                    session_id: self.session_id,
                    batch_seq: seq,
                    last_batch_flag: last,
                    estimated_num_total: Some(self.total as u64),
                },
            };
            let result = match direction {
                Direction::Add => {
                    self.meta
                        .add_users(self.ad_account_id, self.audience_id, &upload)
                        .await
                }
                Direction::Remove => {
                    self.meta
                        .remove_users(self.ad_account_id, self.audience_id, &upload)
                        .await
                }
                Direction::Replace => {
                    self.meta
                        .replace_users(self.ad_account_id, self.audience_id, &upload)
                        .await
                }
            };
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    metrics::counter!("cdp_meta_errors_total", "code" => e.code().map_or("transport".to_string(), |(c, _)| c.to_string())).increment(1);
                    return (totals, Some(e.into()));
                }
            };
            totals.batches += 1;
            totals.rows += cells.len() as i64;
            tracing::info!(
                system = self.system_name,
                direction = direction.name(),
                batch = totals.batches,
                batches,
                rows = cells.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "batch accepted"
            );
            drop(cells);
            let received = (response.num_received as i64 - session_received).max(0);
            session_received = session_received.max(response.num_received as i64);
            let invalid = (response.num_invalid_entries as i64 - session_invalid).max(0);
            session_invalid = session_invalid.max(response.num_invalid_entries as i64);
            let done = Accepted {
                rows: batch.rows,
                last,
                received,
                invalid,
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

    async fn commit(
        &self,
        direction: Direction,
        rx: mpsc::Receiver<Accepted>,
    ) -> anyhow::Result<()> {
        // Replace batches only count progress until the last one swaps the ledger, in order.
        let concurrency = if direction == Direction::Replace {
            1
        } else {
            CONCURRENT_COMMITS
        };
        let mut rx = rx;
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
            .map(Ok)
            .try_for_each_concurrent(concurrency, |accepted| self.commit_one(direction, accepted))
            .await
    }

    async fn commit_one(&self, direction: Direction, a: Accepted) -> anyhow::Result<()> {
        if direction == Direction::Replace {
            self.stage
                .execute(
                    "UPDATE cdp.facebook_sync_runs
                        SET batches = batches + 1, num_received = num_received + $2,
                            num_invalid_entries = num_invalid_entries + $3
                      WHERE id = $1",
                    &[&self.run_id, &a.received, &a.invalid],
                )
                .await?;
            if a.last {
                self.replace_ledger().await?;
            }
            return Ok(());
        }
        debug_assert_eq!(a.rows.keys().count(), a.rows.len());
        let keys: Vec<&[u8]> = a.rows.keys().collect();
        let cells: Vec<&[u8]> = a.rows.cells().collect();
        let client = self
            .pool
            .get()
            .await
            .context("Failed to get a connection for the ledger")?;
        let written = if direction == Direction::Add {
            client
                .execute(
                    "WITH ins AS (
                         INSERT INTO cdp.facebook_audience_members
                                (configuration_id, audience_id, member_key, match_keys, cells, added_run_id)
                         SELECT $1, $2, u.k, $3, u.c, $4 FROM unnest($5::bytea[], $6::bytea[]) AS u(k, c)
                         ON CONFLICT (configuration_id, member_key) DO UPDATE
                            SET audience_id = EXCLUDED.audience_id, match_keys = EXCLUDED.match_keys,
                                cells = EXCLUDED.cells, added_run_id = EXCLUDED.added_run_id, added_at = now()
                         RETURNING 1)
                     UPDATE cdp.facebook_sync_runs
                        SET added = added + (SELECT count(*) FROM ins), batches = batches + 1,
                            num_received = num_received + $7, num_invalid_entries = num_invalid_entries + $8
                      WHERE id = $4",
                    &[
                        &self.configuration_id,
                        &self.audience_id,
                        &self.match_keys,
                        &self.run_id,
                        &keys,
                        &cells,
                        &a.received,
                        &a.invalid,
                    ],
                )
                .await
        } else {
            client
                .execute(
                    "WITH del AS (
                         DELETE FROM cdp.facebook_audience_members m
                          USING unnest($3::bytea[], $4::bytea[]) AS u(k, c)
                          WHERE m.configuration_id = $1 AND m.member_key = u.k AND m.cells = u.c
                         RETURNING 1)
                     UPDATE cdp.facebook_sync_runs
                        SET removed = removed + (SELECT count(*) FROM del), batches = batches + 1,
                            num_received = num_received + $5, num_invalid_entries = num_invalid_entries + $6
                      WHERE id = $2",
                    &[&self.configuration_id, &self.run_id, &keys, &cells, &a.received, &a.invalid],
                )
                .await
        };
        written.context("Failed to record an accepted batch in the ledger")?;
        Ok(())
    }

    /// After the last replace batch the audience is exactly the uploaded set: so is the ledger.
    async fn replace_ledger(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.audience_id.chars().all(|c| c.is_ascii_digit())
                && self
                    .match_keys
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c == ','),
            "unexpected audience id or match keys"
        );
        self.stage
            .batch_execute(&format!(
                "BEGIN;
                 DELETE FROM cdp.facebook_audience_members WHERE configuration_id = {cfg};
                 INSERT INTO cdp.facebook_audience_members (configuration_id, audience_id, member_key, match_keys, cells, added_run_id)
                 SELECT {cfg}, '{aud}', member_key, '{keys}', cells, {run} FROM sync_adds;
                 UPDATE cdp.facebook_sync_runs SET added = (SELECT count(*) FROM sync_adds) WHERE id = {run};
                 COMMIT;",
                cfg = self.configuration_id,
                aud = self.audience_id,
                keys = self.match_keys,
                run = self.run_id,
            ))
            .await
            .context("Failed to replace the ledger")?;
        Ok(())
    }
}
