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

use super::context::SyncContext;
use super::copy::{self, Tuple};
use super::error::SyncError;
use super::new_members::{MemberSource, NewMembers};
use super::rejections::{self, Rejected};
use super::session_sender::UploadError;
use super::session_sender::{SessionProgress, SessionSender, Target};
use super::sessions::RunSessions;
use super::stage::{NewMemberFeed, StageError, StageReport, stage_members};
use crate::db::Pool;
use crate::db::ledger::{self, LoadInto};
use crate::db::runs::{self, BatchProgress};
use crate::meta::Direction;

/// What the streamed part of the add session did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentWhileStaging {
    pub batches: u32,
    pub rows: i64,
    pub interrupted: bool,
    /// Where the session's running totals stand, for the add phase that goes on with it.
    pub progress: SessionProgress,
}

/// Everything the streaming uploader needs.
pub struct FirstSyncUploader<'a> {
    pub pool: &'a Pool,
    pub target: Target<'a>,
    /// The run's add session.
    pub session_id: i64,
    /// Where accepted batches go.
    pub load: &'a LoadInto,
}

impl FirstSyncUploader<'_> {
    /// Sends each batch from `rx` (in order, never the session's last), then records it in the
    /// ledger and the run row in one transaction. The record of one batch is written while the
    /// next goes to Meta (a batch Meta took but the ledger missed is only sent again by the next
    /// run, which Meta takes as a no-op). Stops at the first error or on cancellation.
    pub async fn run(
        &self,
        mut rx: mpsc::Receiver<NewMembers>,
    ) -> (SentWhileStaging, Option<UploadError>) {
        let mut done = SentWhileStaging::default();
        let schema: Vec<&str> = self.target.match_keys.split(',').collect();
        let mut sender = SessionSender {
            target: self.target,
            direction: Direction::Add,
            session_id: self.session_id,
            next_batch_seq: 1,
            estimated_total: None,
            progress: SessionProgress::default(),
        };
        let mut committing = None;
        let mut error = None;
        while let Some(batch) = rx.recv().await {
            let send = sender.send(&schema, &batch.cells, false);
            let (committed, sent) = match committing.take() {
                Some(commit) => {
                    let (committed, sent) = tokio::join!(commit, send);
                    (Some(committed), sent)
                }
                None => (None, send.await),
            };
            if let Some(Err(e)) = committed.map(|c| self.accepted(&mut done, c)) {
                error = Some(e.into());
                break;
            }
            let sent = match sent {
                Ok(Some(sent)) => sent,
                Ok(None) => {
                    done.interrupted = true;
                    break;
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            };
            let rejected: Vec<(i32, i64, Rejected)> = sent
                .rejected
                .into_iter()
                .map(|r| {
                    let source = &batch.sources[r.row];
                    (source.tenant_id, source.customer_id, r)
                })
                .collect();
            committing = Some(self.commit(batch, sent.progress, rejected));
        }
        if let Some(commit) = committing
            && let Err(e) = self.accepted(&mut done, commit.await)
        {
            error = error.or(Some(e.into()));
        }
        done.progress = sender.progress;
        (done, error)
    }

    /// Counts a batch whose record `committed` (its rows) in `done`.
    fn accepted(
        &self,
        done: &mut SentWhileStaging,
        committed: anyhow::Result<usize>,
    ) -> anyhow::Result<()> {
        let rows = committed?;
        done.batches += 1;
        done.rows += rows as i64;
        tracing::info!(
            system = %self.target.plan.label(),
            direction = "add",
            batch = done.batches,
            rows,
            "batch accepted while extracting"
        );
        Ok(())
    }

    /// Copies an accepted batch into the ledger (in key order when the ledger's index takes it; a
    /// new audience's load has no index yet) and counts it in the run row, in one transaction
    /// fenced on the lease (which also holds the configuration row as a foreign key would).
    async fn commit(
        &self,
        batch: NewMembers,
        progress: BatchProgress,
        rejected: Vec<(i32, i64, Rejected)>,
    ) -> anyhow::Result<usize> {
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
            &[&self.target.plan.id, &self.target.lease.worker_id()],
        )
        .await
        .context("Failed to hold the lease for the ledger")?;
        let sink = tx
            .copy_in(&ledger::copy_statement(self.load))
            .await
            .context("Failed to start the ledger COPY")?;
        let mut sink = pin!(sink);
        let mut order: Vec<usize> = (0..batch.len()).collect();
        if *self.load == LoadInto::Ledger {
            order.sort_unstable_by_key(|&i| batch.sources[i].member_key);
        }
        let rows: Vec<&[u8]> = batch.cells.rows().collect();
        // Sent in pieces, so the batch is never copied whole.
        let mut buf = BytesMut::new();
        buf.put_slice(copy::HEADER);
        let fixed = fixed_row_bytes(&self.target);
        let run = (*self.load == LoadInto::Ledger).then_some(&self.target);
        for piece in order.chunks(COPY_PIECE_ROWS) {
            // Reserved whole, so a piece is written without the buffer growing under it.
            buf.reserve(piece.iter().map(|&i| fixed + rows[i].len()).sum());
            for &i in piece {
                encode_row(&mut buf, run, &batch.sources[i], rows[i]);
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
        runs::count_batch(&*tx, self.target.run_id, copied as i64, progress)
            .await
            .context("Failed to count the batch")?;
        rejections::record(&*tx, self.target.run_id, self.target.plan.id, &rejected).await?;
        tx.commit().await.context("Failed to commit the batch")?;
        Ok(batch.len())
    }
}

/// Rows per piece of the ledger COPY.
const COPY_PIECE_ROWS: usize = 1000;

/// Everything of a ledger row but its cells, at most (field lengths, ids, key, audience, schema).
fn fixed_row_bytes(t: &Target<'_>) -> usize {
    2 + 13 * 4 + (4 + 4 + 8 + 4 + 8 + 8 + 2 + 4 + 4) + 32 + t.audience_id.len() + t.match_keys.len()
}

/// One row of the COPY: the member's own columns, then the run's where `run` is given (a load
/// table has those as its defaults; see [`ledger::copy_statement`]).
fn encode_row(buf: &mut BytesMut, run: Option<&Target<'_>>, source: &MemberSource, cells: &[u8]) {
    let row = Tuple::start(buf, if run.is_some() { 13 } else { 8 })
        .bytes(&source.member_key)
        .bytes(cells)
        .i32(source.tenant_id)
        .i64(source.customer_id)
        .i64(source.digest)
        .i16(source.filled)
        .i32(source.invalid_keys)
        .i32(source.filled_keys);
    if let Some(t) = run {
        row.i32(t.plan.id)
            .i32(t.plan.definition_id)
            .bytes(t.audience_id.as_bytes())
            .bytes(t.match_keys.as_bytes())
            .i64(t.run_id);
    }
}

/// The staged source set, and what went to Meta while it was staged.
pub struct Staged {
    /// `None`: the run was cancelled while extracting (or the uploader stopped on cancellation).
    pub report: Option<StageReport>,
    pub streamed: SentWhileStaging,
}

/// Stages the plan's customers (extract, hash, COPY; see [`super::stage`]); on a first sync
/// (`sessions.first_sync`) new members go to Meta in the add session meanwhile.
pub async fn stage_and_send_new(
    ctx: &SyncContext,
    extract: &tokio_postgres::Client,
    stage: &tokio_postgres::Client,
    sql: &str,
    sessions: &RunSessions,
    target: Target<'_>,
) -> Result<Staged, SyncError> {
    let plan = target.plan;
    let expected = runs::last_extracted(stage, plan.scope()).await?;
    let load = match sessions.first_sync {
        true => {
            let of = ledger::LoadOf {
                scope: plan.scope(),
                audience_id: target.audience_id,
                match_keys: target.match_keys,
                run_id: target.run_id,
            };
            ledger::begin_load(stage, of).await?
        }
        false => LoadInto::Ledger,
    };
    let (tx, rx) = mpsc::channel(1);
    let stream = sessions.first_sync.then(|| NewMemberFeed {
        tx,
        batch_rows: ctx.settings.worker.upload_batch_rows,
    });
    let streamer = FirstSyncUploader {
        pool: &ctx.pool,
        target,
        session_id: sessions.add,
        load: &load,
    };
    let (staging, (streamed, stream_error)) = tokio::join!(
        stage_members(
            extract,
            stage,
            sql,
            plan,
            expected as usize,
            stream,
            target.cancel
        ),
        streamer.run(rx),
    );
    if matches!(staging, Err(StageError::Interrupted)) {
        // The server would go on sending every remaining row of the extraction.
        crate::db::cancel_query(extract, &ctx.settings.database).await;
    }
    // What was loaded joins the ledger however the run went on (if the worker dies first, the
    // audience's next run attaches it before anything else).
    let attached = match sessions.first_sync {
        true => ledger::attach(stage, plan.scope()).await.map(drop),
        false => Ok(()),
    };
    // The upload's error says more than one the attach may have run into after it.
    if let Some(e) = stream_error {
        return Err(e.into());
    }
    attached?;
    match staging {
        Ok(report) => Ok(Staged {
            report: Some(report),
            streamed,
        }),
        Err(StageError::Interrupted) => Ok(Staged {
            report: None,
            streamed,
        }),
        Err(_) if streamed.interrupted => Ok(Staged {
            report: None,
            streamed,
        }),
        Err(e) => Err(e.into()),
    }
}
