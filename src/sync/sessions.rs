//! How a run uploads: the mode it really runs in, and its two upload sessions at Meta (one per
//! direction), recorded on the run row before the first batch.
use super::audience::Ensured;
use super::context::SyncContext;
use super::error::SyncError;
use super::system::{AdoptMode, SyncMode, SyncPlan};
use crate::db::{ledger, runs};

pub struct RunSessions {
    pub mode: SyncMode,
    /// The first run on an audience this worker did not fill: its members are replaced.
    pub adopting: bool,
    /// The ledger is empty and the run adds: new members go to Meta while extracting.
    pub first_sync: bool,
    pub add: i64,
    /// The add session's first batch number (after the batches a resumed replace already sent).
    pub first_add_batch: u32,
    pub remove: i64,
}

impl RunSessions {
    pub async fn open(
        ctx: &SyncContext,
        stage: &tokio_postgres::Client,
        plan: &SyncPlan,
        audience: &Ensured,
        run_id: i64,
    ) -> Result<Self, SyncError> {
        let ledger_empty = ledger::is_empty(stage, plan.scope()).await?;
        let adopting = adopts(plan, ledger_empty, !audience.created);
        let mode = if adopting {
            SyncMode::Replace
        } else {
            plan.mode
        };
        // A replace the previous run left open at Meta goes on in the same session (a new one
        // would be refused as busy until the old one timed out, leaving the audience a partial
        // upload).
        let resumed = match mode {
            SyncMode::Replace => open_replace_session(ctx, plan, &audience.id, stage, run_id).await,
            _ => None,
        };
        let (add, first_add_batch) = match resumed {
            Some((session, batches)) => (session, batches as u32 + 1),
            None => (new_session_id(), 1),
        };
        let remove = new_session_id();
        runs::record_sessions(stage, run_id, mode.as_str(), add, remove).await?;
        Ok(RunSessions {
            mode,
            adopting,
            first_sync: mode != SyncMode::Replace && ledger_empty,
            add,
            first_add_batch,
            remove,
        })
    }
}

/// Whether the run adopts the audience: one this worker did not fill (the original worker's, one
/// found by name, one an operator set) holds members nobody recorded, so its first run replaces
/// them with the source set, unless the row says to keep them (adopt_mode = 'append').
pub fn adopts(plan: &SyncPlan, ledger_empty: bool, audience_existed: bool) -> bool {
    ledger_empty
        && audience_existed
        && plan.mode != SyncMode::Replace
        && plan.adopt == AdoptMode::Replace
}

/// The previous run's replace session, with the batches it sent, when Meta still holds it open
/// (see [`runs::unfinished_replace`]). Any failure to tell means a new session.
async fn open_replace_session(
    ctx: &SyncContext,
    plan: &SyncPlan,
    audience_id: &str,
    stage: &tokio_postgres::Client,
    run_id: i64,
) -> Option<(i64, i64)> {
    let (session, batches) = runs::unfinished_replace(stage, plan.scope(), run_id)
        .await
        .ok()??;
    let sessions = match ctx
        .meta
        .get_sessions(&plan.ad_account_id, audience_id)
        .await
    {
        Ok(sessions) => sessions,
        Err(e) => {
            tracing::warn!(system = %plan.label(), error = %e, "could not read the audience's sessions; starting a new replace");
            return None;
        }
    };
    let open = sessions
        .iter()
        .any(|s| s.session_id == session.to_string() && s.is_open());
    tracing::info!(system = %plan.label(), session, batches, open, "the previous run left a replace session");
    open.then_some((session, batches))
}

/// A positive 63-bit session id, unique within the ad account for all practical purposes.
pub fn new_session_id() -> i64 {
    (rand::random::<u64>() >> 1).max(1) as i64
}
