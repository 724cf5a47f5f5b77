//! One audience's sync, start to finish. Each stage is a file of its own; every stage returns a
//! [`SyncError`] that ends the run (see [`super::attempt`] for the run row, the lease and the
//! outcome around it).
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::audience;
use super::changes::plan_changes;
use super::context::SyncContext;
use super::error::SyncError;
use super::first_sync::{Staged, stage_and_send_new};
use super::lease::Lease;
use super::outcome::{Outcome, Synced};
use super::query::source_query;
use super::readback;
use super::send::{Sent, send};
use super::session_sender::Target;
use super::sessions::RunSessions;
use super::system::{SyncMode, SyncPlan};
use crate::db::{ledger, runs};

/// Syncs `plan`'s audience. `stage` is the run's own connection: the staging and plan tables
/// live in its session.
pub(super) async fn execute(
    ctx: &SyncContext,
    stage: &tokio_postgres::Client,
    plan: &SyncPlan,
    run_id: i64,
    lease: &Lease,
    cancel: &CancellationToken,
) -> Result<Synced, SyncError> {
    // A first sync cut short by a crash left its members unindexed, outside the ledger: they
    // join it before anything reads it.
    ledger::attach(stage, plan.scope()).await?;
    // The extraction streams on a connection of its own.
    let extract = ctx.pool.get().await?;
    // What to read: the operator's query or one built from the CDP's columns, minus the
    // customers the consent rule suppresses.
    let query = source_query(ctx, &extract, plan).await?;
    // Where it goes: the plan's audience at Meta, found or created, owned by this plan alone.
    let audience = audience::claim(&ctx.meta, stage, plan, lease).await?;
    // How: the mode (an audience this worker did not fill is replaced) and the upload sessions.
    let sessions = RunSessions::open(ctx, stage, plan, &audience, run_id).await?;
    let match_keys = plan.schema();
    let target = Target::new(
        &ctx.meta,
        plan,
        &audience.id,
        &match_keys,
        run_id,
        lease,
        cancel,
    );
    // The source set staged (extract, hash, COPY); a first sync sends new members meanwhile.
    let Staged { report, streamed } =
        stage_and_send_new(ctx, &extract, stage, &query.sql, &sessions, target).await?;
    drop(extract);
    // What the ledger holds at the end: on a first sync in mirror mode (which neither upserts, as
    // append does, nor replaces), the rows the run's ledger statements counted on the run row (a
    // count of a just-loaded partition took 47-55 ms of a 1M first sync's last half second);
    // otherwise a count.
    let members = match sessions.first_sync && sessions.mode == SyncMode::Mirror {
        true => Members::CountedByRun(run_id),
        false => Members::Count,
    };
    let Some(staged) = report else {
        let sent = Sent::interrupted_after(&streamed);
        return finish(stage, plan, members, sent, None, None).await;
    };
    // What changes: the diff against the ledger, weighed by the removal guard. On a first sync
    // the ledger holds exactly the streamed members (whose statistics the diff needs); otherwise
    // the staging counted it.
    let known_audience = match sessions.first_sync {
        true => streamed.rows,
        false => staged.ledger_members,
    };
    if sessions.first_sync && streamed.rows > 0 {
        ledger::analyze(stage, plan.scope()).await?;
    }
    let changes = plan_changes(
        ctx,
        stage,
        plan,
        sessions.mode,
        &staged,
        known_audience,
        true,
    )
    .await?;
    changes
        .record(stage, run_id, plan, &audience.id, &staged, query.suppressed)
        .await?;
    // Removals first, then the additions (or the replace).
    let sent = send(ctx, stage, target, &sessions, &changes, &streamed).await?;
    // Meta's word on the audience: a problem it reports makes the run partial.
    let unhealthy = match sent.interrupted {
        true => None,
        false => readback::check(&ctx.meta, stage, run_id, &plan.ad_account_id, &audience.id).await,
    };
    let held = changes.held.map(|(why, _)| why);
    finish(stage, plan, members, sent, held, unhealthy).await
}

/// How [`finish`] learns the members in the audience's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Members {
    /// Counted in the ledger.
    Count,
    /// The run (of this id) began with an empty ledger and only inserted and deleted rows, each
    /// counted on its run row (see [`runs::ledger_rows_added`]).
    CountedByRun(i64),
}

/// How the run ended: the members the ledger now holds, and why it is partial (removals held, a
/// refused replace, Meta's word on the audience).
async fn finish(
    stage: &tokio_postgres::Client,
    plan: &SyncPlan,
    members: Members,
    sent: Sent,
    held: Option<String>,
    unhealthy: Option<String>,
) -> Result<Synced, SyncError> {
    let members = match members {
        Members::Count => ledger::count_members(stage, plan.scope()).await?,
        Members::CountedByRun(run_id) => runs::ledger_rows_added(stage, run_id)
            .await
            .context("Failed to read the run's ledger counts")?,
    };
    let _ = super::plan_tables::drop(stage).await;
    let notes: Vec<String> = [held, sent.refused, unhealthy]
        .into_iter()
        .flatten()
        .collect();
    let outcome = match (sent.interrupted, notes.is_empty()) {
        (true, _) => Outcome::Interrupted,
        (false, false) => Outcome::Partial,
        (false, true) => Outcome::Success,
    };
    Ok(Synced {
        outcome,
        added: sent.added,
        removed: sent.removed,
        members,
        why_partial: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}
