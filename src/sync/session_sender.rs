//! One upload session at Meta, as both upload paths use it (batches streamed while a first sync
//! extracts, and the batches sent after the diff): each batch checked against cancellation and
//! the lease, sent under the lease, its answer turned into the session's progress and the rows
//! Meta sampled as invalid.
use tokio_util::sync::CancellationToken;

use super::cells::PackedRows;
use super::lease::Lease;
use super::rejections::{Rejected, locate};
use super::system::SyncPlan;
use crate::db::ledger::BatchOf;
use crate::db::runs::BatchProgress;
use crate::meta::{Direction, MetaClient, MetaError, UploadSession, UsersResponse, UsersUpload};

/// Where a run's batches go, whichever path sends them: the audience on Meta's side, the run row
/// and the ledger on ours.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub meta: &'a MetaClient,
    pub plan: &'a SyncPlan,
    pub audience_id: &'a str,
    /// `EMAIL,PHONE,FN,LN`: the schema of added rows.
    pub match_keys: &'a str,
    pub run_id: i64,
    /// Checked before every call to Meta; every ledger write is fenced on it.
    pub lease: &'a Lease,
    pub cancel: &'a CancellationToken,
}

impl<'a> Target<'a> {
    pub fn new(
        meta: &'a MetaClient,
        plan: &'a SyncPlan,
        audience_id: &'a str,
        match_keys: &'a str,
        run_id: i64,
        lease: &'a Lease,
        cancel: &'a CancellationToken,
    ) -> Self {
        Target {
            meta,
            plan,
            audience_id,
            match_keys,
            run_id,
            lease,
            cancel,
        }
    }

    /// Where a batch of `match_keys` rows lands in the ledger.
    pub fn ledger(&self, match_keys: &'a str) -> BatchOf<'a> {
        BatchOf {
            scope: self.plan.scope(),
            audience_id: self.audience_id,
            match_keys,
            run_id: self.run_id,
            worker_id: self.lease.worker_id(),
        }
    }
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

/// Meta's `num_received` and `num_invalid_entries` are the session's running totals; the run row
/// records each batch's increase. Carried across the phases of one session (a first sync's
/// streamed batches, then the add phase).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionProgress {
    received: i64,
    invalid: i64,
}

impl SessionProgress {
    /// Takes a batch's answer; returns the increases.
    pub fn advance(&mut self, response: &UsersResponse) -> BatchProgress {
        let received = (response.num_received as i64 - self.received).max(0);
        let invalid = (response.num_invalid_entries as i64 - self.invalid).max(0);
        self.received = self.received.max(response.num_received as i64);
        self.invalid = self.invalid.max(response.num_invalid_entries as i64);
        BatchProgress { received, invalid }
    }
}

/// A batch Meta accepted.
pub struct Accepted {
    pub progress: BatchProgress,
    /// Rows of the batch Meta sampled as invalid, by their index in the batch (adds only:
    /// removed rows have no customer to name).
    pub rejected: Vec<Rejected>,
}

/// Sends one session's batches in order.
pub struct SessionSender<'a> {
    pub target: Target<'a>,
    pub direction: Direction,
    pub session_id: i64,
    /// The number the next batch gets (1 starts the session).
    pub next_batch_seq: u32,
    /// Meta's estimate of the session's rows, when known.
    pub estimated_total: Option<u64>,
    pub progress: SessionProgress,
}

impl SessionSender<'_> {
    /// Sends one batch; `None` when the run was cancelled before it went.
    pub async fn send(
        &mut self,
        schema: &[&str],
        rows: &PackedRows,
        last_batch: bool,
    ) -> Result<Option<Accepted>, UploadError> {
        if self.target.cancel.is_cancelled() {
            return Ok(None);
        }
        self.target.lease.ensure().await?;
        let upload = UsersUpload {
            schema,
            rows,
            session: UploadSession {
                session_id: self.session_id,
                batch_seq: self.next_batch_seq,
                last_batch_flag: last_batch,
                estimated_num_total: self.estimated_total,
            },
        };
        let plan = self.target.plan;
        let call = self.target.meta.upload_users(
            self.direction,
            &plan.ad_account_id,
            self.target.audience_id,
            &upload,
        );
        let response = self
            .target
            .lease
            .guard(call)
            .await?
            .inspect_err(count_meta_error)?;
        self.next_batch_seq += 1;
        let rejected = match self.direction {
            Direction::Remove => Vec::new(),
            _ => locate(&response.invalid_entry_samples, schema, rows.rows()),
        };
        Ok(Some(Accepted {
            progress: self.progress.advance(&response),
            rejected,
        }))
    }
}

/// Counts a failed Meta call by its error code.
pub fn count_meta_error(e: &MetaError) {
    let code = e
        .code()
        .map_or("transport".to_string(), |(c, _)| c.to_string());
    metrics::counter!("cdp_meta_errors_total", "code" => code).increment(1);
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

    fn moved(received: i64, invalid: i64) -> BatchProgress {
        BatchProgress { received, invalid }
    }

    #[test]
    fn a_session_carried_into_the_next_phase_counts_only_the_new_batches() {
        let mut streamed = SessionProgress::default();
        assert_eq!(streamed.advance(&answer(10_000, 2)), moved(10_000, 2));
        assert_eq!(streamed.advance(&answer(20_000, 3)), moved(10_000, 1));
        // The add phase goes on with the same session: Meta's totals include the streamed rows.
        let mut add_phase = streamed;
        assert_eq!(add_phase.advance(&answer(20_500, 3)), moved(500, 0));
        // A retried batch's answer repeats the total: nothing is counted twice.
        assert_eq!(add_phase.advance(&answer(20_500, 3)), moved(0, 0));
    }
}
