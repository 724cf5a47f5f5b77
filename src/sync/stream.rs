//! The first sync of an audience (an empty ledger) does not wait for the diff: while customers
//! are still being extracted and hashed, members the run has certainly not staged before go
//! straight to Meta in batches, and each accepted batch is copied into the ledger. Rows that may
//! repeat a member (the Bloom filter says maybe) are staged and settled by the diff afterwards,
//! like an incremental run's, so the fullest twin still wins.
//!
//! The batches use the run's add session; the stream's last rows are staged instead of sent, so
//! the add phase after the diff always has a batch to close the session with.
use std::pin::pin;

use anyhow::Context;
use bytes::{BufMut, BytesMut};
use futures_util::SinkExt;
use tokio::sync::mpsc;

use super::cells::PackedRows;
use super::copy::{self, Tuple};
use super::member::Member;
use super::rejections::{self, Rejected, locate};
use super::upload::{SessionProgress, Target, UploadError, count_meta_error};
use crate::db::Pool;
use crate::meta::{UploadSession, UsersUpload};

/// A member's ledger columns besides its cells.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub member_key: [u8; 32],
    pub filled: i16,
    pub tenant_id: i32,
    pub customer_id: i64,
    pub digest: i64,
    pub invalid_keys: i32,
    pub filled_keys: i32,
}

impl Source {
    pub fn of(member: &Member, digest: i64) -> Self {
        Source {
            member_key: member.member_key,
            filled: member.filled,
            tenant_id: member.tenant_id,
            customer_id: member.customer_id,
            digest,
            invalid_keys: member.invalid_keys,
            filled_keys: member.filled_keys,
        }
    }
}

/// Up to one upload batch of new members.
#[derive(Default)]
pub struct StreamBatch {
    pub sources: Vec<Source>,
    pub cells: PackedRows,
}

impl StreamBatch {
    pub fn push(&mut self, source: Source, cells: &[u8]) {
        self.sources.push(source);
        self.cells.push(cells);
    }
    pub fn len(&self) -> usize {
        self.sources.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

/// What the streamed part of the add session did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streamed {
    pub batches: u32,
    pub rows: i64,
    pub interrupted: bool,
    /// Where the session's running totals stand, for the add phase that goes on with it.
    pub progress: SessionProgress,
}

/// Everything the streaming uploader needs.
pub struct Streamer<'a> {
    pub pool: &'a Pool,
    /// The run's add session.
    pub target: Target<'a>,
}

impl Streamer<'_> {
    /// Sends each batch from `rx` (in order, never the session's last), then records it in the
    /// ledger and the run row in one transaction. Stops at the first error or on cancellation.
    pub async fn run(
        &self,
        mut rx: mpsc::Receiver<StreamBatch>,
    ) -> (Streamed, Option<UploadError>) {
        let mut done = Streamed::default();
        let schema: Vec<&str> = self.target.match_keys.split(',').collect();
        while let Some(batch) = rx.recv().await {
            if self.target.cancel.is_cancelled() {
                done.interrupted = true;
                return (done, None);
            }
            if let Err(lost) = self.target.lease.ensure().await {
                return (done, Some(lost.into()));
            }
            let upload = UsersUpload {
                schema: &schema,
                rows: &batch.cells,
                session: UploadSession {
                    session_id: self.target.session_id,
                    batch_seq: done.batches + 1,
                    last_batch_flag: false,
                    estimated_num_total: None,
                },
            };
            let call = self.target.meta.add_users(
                self.target.ad_account_id,
                self.target.audience_id,
                &upload,
            );
            let result = match self.target.lease.guard(call).await {
                Ok(result) => result,
                Err(lost) => return (done, Some(lost.into())),
            };
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    count_meta_error(&e);
                    return (done, Some(e.into()));
                }
            };
            let (received, invalid) = done.progress.advance(&response);
            let rejected: Vec<(i32, i64, Rejected)> =
                locate(&response.invalid_entry_samples, &schema, batch.cells.rows())
                    .into_iter()
                    .map(|r| {
                        let source = &batch.sources[r.row];
                        (source.tenant_id, source.customer_id, r)
                    })
                    .collect();
            if let Err(e) = self.commit(&batch, received, invalid, &rejected).await {
                return (done, Some(e.into()));
            }
            done.batches += 1;
            done.rows += batch.len() as i64;
            tracing::info!(
                system = self.target.system_name,
                direction = "add",
                batch = done.batches,
                rows = batch.len(),
                "batch accepted while extracting"
            );
        }
        (done, None)
    }

    /// Copies an accepted batch into the ledger (in key order, which the index takes fastest)
    /// and counts it in the run row, in one transaction fenced on the lease (which also holds the
    /// configuration row as a foreign key would).
    async fn commit(
        &self,
        batch: &StreamBatch,
        received: i64,
        invalid: i64,
        rejected: &[(i32, i64, Rejected)],
    ) -> anyhow::Result<()> {
        let mut client = self
            .pool
            .get()
            .await
            .context("Failed to get a connection for the ledger")?;
        let tx = client
            .transaction()
            .await
            .context("Failed to start a ledger transaction")?;
        tx.execute(
            "SELECT cdp.hold_lease($1, $2)",
            &[
                &self.target.configuration_id,
                &self.target.lease.worker_id(),
            ],
        )
        .await
        .context("Failed to hold the lease for the ledger")?;
        let sink = tx
            .copy_in(
                "COPY cdp.facebook_audience_members
                     (configuration_id, definition_id, audience_id, member_key, match_keys, cells,
                      added_run_id, source_tenant_id, source_customer_id, source_digest, filled,
                      invalid_keys, filled_keys)
                 FROM STDIN (FORMAT binary)",
            )
            .await
            .context("Failed to start the ledger COPY")?;
        let mut sink = pin!(sink);
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_unstable_by_key(|&i| batch.sources[i].member_key);
        let rows: Vec<&[u8]> = batch.cells.rows().collect();
        // Sent in pieces, so the batch is never copied whole.
        let mut buf = BytesMut::new();
        buf.put_slice(copy::HEADER);
        // Everything but the cells: field lengths, the ids, the key, the audience and schema.
        let fixed = 2
            + 13 * 4
            + (4 + 4 + 8 + 4 + 8 + 8 + 2 + 4 + 4)
            + 32
            + self.target.audience_id.len()
            + self.target.match_keys.len();
        for piece in order.chunks(COPY_PIECE_ROWS) {
            // Reserved whole, so a piece is written without the buffer growing under it.
            buf.reserve(piece.iter().map(|&i| fixed + rows[i].len()).sum());
            for &i in piece {
                encode_ledger_row(&mut buf, &self.target, &batch.sources[i], rows[i]);
            }
            sink.send(buf.split().freeze())
                .await
                .context("The ledger COPY failed")?;
        }
        buf.put_slice(&copy::TRAILER);
        sink.send(buf.freeze())
            .await
            .context("The ledger COPY failed")?;
        let copied = sink
            .as_mut()
            .finish()
            .await
            .context("The ledger COPY failed")?;
        tx.execute(
            "UPDATE cdp.facebook_sync_runs
                SET added = added + $2, batches = batches + 1, num_received = num_received + $3,
                    num_invalid_entries = num_invalid_entries + $4
              WHERE id = $1",
            &[&self.target.run_id, &(copied as i64), &received, &invalid],
        )
        .await
        .context("Failed to count the batch")?;
        rejections::record(
            &*tx,
            self.target.run_id,
            self.target.configuration_id,
            rejected,
        )
        .await?;
        tx.commit().await.context("Failed to commit the batch")?;
        Ok(())
    }
}

/// Rows per piece of the ledger COPY.
const COPY_PIECE_ROWS: usize = 1000;

/// One ledger row.
fn encode_ledger_row(buf: &mut BytesMut, t: &Target<'_>, source: &Source, cells: &[u8]) {
    Tuple::start(buf, 13)
        .i32(t.configuration_id)
        .i32(t.definition_id)
        .bytes(t.audience_id.as_bytes())
        .bytes(&source.member_key)
        .bytes(t.match_keys.as_bytes())
        .bytes(cells)
        .i64(t.run_id)
        .i32(source.tenant_id)
        .i64(source.customer_id)
        .i64(source.digest)
        .i16(source.filled)
        .i32(source.invalid_keys)
        .i32(source.filled_keys);
}
