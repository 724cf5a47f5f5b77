//! One sync of one system, start to finish:
//!
//! validate → open run → ensure audience → stage (extract, hash, COPY) → dedupe + diff
//! → removal guard → upload removals, then additions → record run and status.
//!
//! The caller holds the lease (see [`crate::db::configurations`]); this keeps it renewed while
//! working and always writes an outcome and releases it.
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::audience::ensure_audience;
use super::audience_runs;
use super::consent;
use super::diff::{self, DiffReport};
use super::guard::{self, Removals};
use super::lease::{Lease, LeaseLost, is_lease_lost};
use super::readback;
use super::source::Catalog;
use super::stage::{StageError, StageReport, Stream, stage_members};
use super::stream::Streamer;
use super::system::{
    AdoptMode, LedgerScope, OWN_AUDIENCE, Schedule, SyncMode, SyncPlan, SystemRow, failure_backoff,
};
use super::upload::{Direction, SessionProgress, Target, Upload, UploadError};
use crate::configuration::Settings;
use crate::db::configurations::{Finish, finish};
use crate::db::{self, Pool, runs};
use crate::meta::MetaClient;

/// What a sync needs from the worker: shared, cheap to clone.
#[derive(Clone)]
pub struct SyncContext {
    pub pool: Pool,
    pub meta: MetaClient,
    pub settings: Arc<Settings>,
    /// Names this worker in leases and run rows (host and process id by default).
    pub worker_id: String,
    /// The operator's extraction query (`EXTRACT_SQL_FILE`); `None`: the default query, built for
    /// each run from the CDP's columns (see [`super::source`]).
    pub extract_sql: Option<Arc<str>>,
    /// Posts alerts (see [`crate::alerts`]).
    pub alerts_http: reqwest::Client,
}

/// Why the run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Manual,
    Once,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Once => "once",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Synced, but removals were held by the guard, replace was refused, or Meta reports a
    /// problem with the audience (see [`super::readback`]).
    Partial,
    Failed(String),
    InvalidConfig(String),
    Interrupted,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::Failed(_) => "failed",
            Outcome::InvalidConfig(_) => "invalid_config",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// The summary of one run, for logs, metrics and callers.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub system_name: String,
    pub run_id: Option<i64>,
    pub outcome: Outcome,
    pub added: i64,
    pub removed: i64,
    pub members: i64,
}

/// Syncs one claimed system. Never returns an error: every failure ends as an outcome written
/// to the configuration row and the run row (unless the database stays out of reach; then the
/// lease runs out and the system is claimed again).
///
/// The outcome is written on a fresh connection, so a run whose own connection died (killed,
/// timed out, the server restarted) still leaves `failed` and its backoff, not `running`. A panic
/// inside the run ends as `failed` too.
pub async fn sync_system(
    ctx: &SyncContext,
    row: SystemRow,
    trigger: Trigger,
    cancel: CancellationToken,
) -> RunReport {
    let lease = Lease::claimed(
        ctx.pool.clone(),
        row.id,
        ctx.worker_id.clone(),
        Duration::from_secs(ctx.settings.worker.lease_secs),
    );
    let run_cancel = cancel.child_token();
    let plan = row.validate();
    let mut report = RunReport {
        system_name: row.system_name.clone(),
        run_id: None,
        outcome: Outcome::Success,
        added: 0,
        removed: 0,
        members: 0,
    };
    let mut held = None;
    match open_run(ctx, &row, trigger).await {
        Err(e) => report.outcome = Outcome::Failed(format!("Failed to open the run: {e}")),
        Ok(run_id) => {
            report.run_id = Some(run_id);
            let renewing = CancellationToken::new();
            let work = async {
                let done = match &plan {
                    Err(problems) => Err(Outcome::InvalidConfig(problems.join("; "))),
                    Ok(plan) => unless_it_panics(run_plan(ctx, plan, run_id, &lease, &run_cancel))
                        .await
                        .unwrap_or_else(|| {
                            tracing::error!(system = %row.system_name, run_id, "the sync panicked");
                            Err(Outcome::Failed(PANICKED.into()))
                        }),
                };
                // Then the system's other audiences, unless the run is stopping.
                let interrupted = matches!(&done, Ok(d) if d.outcome == Outcome::Interrupted);
                let audiences = match &plan {
                    Ok(plan) if !interrupted && !lease.is_lost() => {
                        audience_runs::sync_all(ctx, plan, trigger, &lease, &run_cancel).await
                    }
                    _ => Vec::new(),
                };
                renewing.cancel();
                (done, audiences)
            };
            let ((done, audiences), ()) = tokio::join!(work, lease.keep(&renewing, &run_cancel));
            match done {
                Ok(done) => {
                    report.added = done.added;
                    report.removed = done.removed;
                    report.members = done.members;
                    report.outcome = done.outcome;
                    held = done.held;
                }
                Err(outcome) => report.outcome = outcome,
            }
            (report.outcome, held) = audience_runs::combine(report.outcome, held, &audiences);
        }
    }
    if lease.is_lost() {
        report.outcome = Outcome::Failed(LeaseLost.to_string());
    }
    let schedule = plan.as_ref().ok().map(|p| &p.schedule);
    record_outcome(ctx, &row, schedule, &report, held.clone()).await;
    crate::alerts::after_run(ctx, &row, &report, held.as_deref()).await;

    let outcome = report.outcome.as_str();
    metrics::counter!("cdp_sync_runs_total", "outcome" => outcome).increment(1);
    metrics::counter!("cdp_sync_rows_added_total", "system" => row.system_name.clone())
        .increment(report.added.max(0) as u64);
    metrics::counter!("cdp_sync_rows_removed_total", "system" => row.system_name.clone())
        .increment(report.removed.max(0) as u64);
    if matches!(report.outcome, Outcome::Success | Outcome::Partial) {
        metrics::gauge!("cdp_sync_last_success_timestamp_seconds", "system" => row.system_name.clone())
            .set(Utc::now().timestamp() as f64);
    }
    match &report.outcome {
        Outcome::Failed(e) | Outcome::InvalidConfig(e) => {
            tracing::warn!(system = %row.system_name, outcome, error = %e, "sync ended")
        }
        _ => tracing::info!(
            system = %row.system_name,
            outcome,
            added = report.added,
            removed = report.removed,
            members = report.members,
            "sync ended"
        ),
    }
    report
}

/// What a run that panicked records (the panic's own text may hold anything).
pub(super) const PANICKED: &str =
    "the sync stopped on an internal error (a panic; the worker's log has where)";

/// `work`'s output, or `None` when it panicked: the panic ends the run, not the worker's task
/// with its lease still held.
pub(super) async fn unless_it_panics<T>(work: impl std::future::Future<Output = T>) -> Option<T> {
    AssertUnwindSafe(work).catch_unwind().await.ok()
}

async fn open_run(ctx: &SyncContext, row: &SystemRow, trigger: Trigger) -> anyhow::Result<i64> {
    let client = ctx.pool.get().await.context("database unavailable")?;
    let of = runs::RunOf {
        configuration_id: row.id,
        system_name: &row.system_name,
        definition_id: OWN_AUDIENCE,
        audience_name: None,
    };
    let id = runs::open(
        &**client,
        &of,
        trigger.as_str(),
        &ctx.worker_id,
        &row.sync_mode,
    )
    .await
    .map_err(|e| anyhow::anyhow!(db::error_text(&e)))?;
    Ok(id)
}

/// Runs a valid plan on a connection of its own (its session holds the staging and plan tables),
/// which goes back to the pool clean, or is closed when it cannot be cleaned.
pub(super) async fn run_plan(
    ctx: &SyncContext,
    plan: &SyncPlan,
    run_id: i64,
    lease: &Lease,
    cancel: &CancellationToken,
) -> Result<Done, Outcome> {
    // The system's own token (token_ref), or the worker's.
    let meta = crate::tokens::client_for(ctx, plan.token_ref.as_deref()).await?;
    let ctx = &SyncContext {
        meta,
        ..ctx.clone()
    };
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|e| Outcome::Failed(format!("database unavailable: {e}")))?;
    let result = execute(ctx, &client, plan, run_id, lease, cancel)
        .await
        .map_err(|o| crate::tokens::explain_refusal(o, &ctx.meta, plan.token_ref.as_deref()));
    // A failed statement may have left a transaction open, which ROLLBACK ends (outside one it
    // only warns); whatever the run left in its session goes.
    if let Err(e) = client
        .batch_execute(
            "ROLLBACK; RESET enable_seqscan; RESET default_statistics_target; DISCARD TEMP",
        )
        .await
    {
        tracing::warn!(error = %db::error_text(&e), "Failed to reset the staging session; closing it");
        drop(deadpool_postgres::Object::take(client));
    }
    result
}

/// Closes the run row and writes the outcome to the configuration row (releasing the lease), on
/// a fresh connection, trying again for a few seconds while the database is out of reach.
async fn record_outcome(
    ctx: &SyncContext,
    row: &SystemRow,
    schedule: Option<&Schedule>,
    report: &RunReport,
    held: Option<String>,
) {
    let error = match &report.outcome {
        Outcome::Failed(e) | Outcome::InvalidConfig(e) => Some(e.clone()),
        _ => held.clone(),
    };
    let write = || async {
        let client = ctx.pool.get().await.context("database unavailable")?;
        if let Some(run_id) = report.run_id {
            runs::close(&**client, run_id, report.outcome.as_str(), error.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("closing the run row: {}", db::error_text(&e)))?;
        }
        write_finish(
            &client,
            ctx,
            row,
            schedule,
            &report.outcome,
            report.members,
            held.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("writing the sync status: {}", db::error_text(&e)))
    };
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(4))
        .with_max_times(6);
    if let Err(e) = write
        .retry(policy)
        .notify(|e, after| tracing::warn!(error = %db::describe(e), ?after, "Failed to record the outcome; retrying"))
        .await
    {
        tracing::error!(system = %row.system_name, error = %db::describe(&e), "Failed to record the outcome; the lease will run out");
    }
}

async fn write_finish(
    client: &tokio_postgres::Client,
    ctx: &SyncContext,
    row: &SystemRow,
    schedule: Option<&Schedule>,
    outcome: &Outcome,
    members: i64,
    held: Option<String>,
) -> Result<(), tokio_postgres::Error> {
    let now = Utc::now();
    let schedule_hours = i64::from(row.schedule_hours.unwrap_or(48)).max(1);
    let finish_row = match outcome {
        Outcome::Success | Outcome::Partial => {
            let next_sync = match schedule {
                Some(schedule) => schedule.next_after(now, ctx.settings.worker.timezone),
                None => now + chrono::Duration::hours(schedule_hours),
            };
            Finish::Synced {
                status: outcome.as_str(),
                next_sync,
                total_customers: members,
                error_log: held,
                clear_force_removals: row.force_removals,
            }
        }
        Outcome::Failed(e) | Outcome::InvalidConfig(e) => Finish::Failed {
            status: outcome.as_str(),
            error_log: e.clone(),
            next_sync: failure_backoff(now, row.consecutive_failures, schedule_hours),
        },
        Outcome::Interrupted => Finish::Interrupted,
    };
    finish(client, row.id, &ctx.worker_id, &finish_row).await
}

pub(super) struct Done {
    pub outcome: Outcome,
    pub added: i64,
    pub removed: i64,
    pub members: i64,
    /// Why the run is partial (held removals, a refused replace, Meta's word on the audience).
    pub held: Option<String>,
}

/// `stage` is the run's own connection: the staging and plan tables live in its session.
async fn execute(
    ctx: &SyncContext,
    stage: &tokio_postgres::Client,
    plan: &SyncPlan,
    run_id: i64,
    lease: &Lease,
    cancel: &CancellationToken,
) -> Result<Done, Outcome> {
    let failed = |e: anyhow::Error| Outcome::Failed(db::describe(&e));
    // Staging and the diff live in session tables on `stage`; the extraction streams on another.
    let extract = ctx.pool.get().await.map_err(|e| failed(e.into()))?;
    let (sql, suppressed) = extraction(ctx, &extract, plan).await?;

    let lease_lost = |e: LeaseLost| Outcome::Failed(e.to_string());
    lease.ensure().await.map_err(lease_lost)?;
    let audience = lease
        .guard(ensure_audience(&ctx.meta, stage, plan))
        .await
        .map_err(lease_lost)?
        .map_err(|e| failed(e.into()))?;
    let audience_id = audience.id;
    // One audience, one configuration: two would remove each other's members.
    if let Some(other) = audience_owner(stage, plan.scope(), &audience_id)
        .await
        .map_err(failed)?
    {
        return Err(Outcome::InvalidConfig(format!(
            "audience {audience_id} is the audience of '{other}' already; give '{}' an audience of \
             its own (custom_audience_id, or a different audience name)",
            plan.label()
        )));
    }
    // Ledger rows of another audience (an operator changed custom_audience_id) no longer apply.
    // Every row of a configuration names the same audience (this runs before any upload), so
    // one row tells. `ORDER BY member_key` reads that row from the primary key: a plain `LIMIT 1`
    // may scan the whole ledger up to the configuration's first row.
    stage
        .execute(
            "DELETE FROM cdp.facebook_audience_members
              WHERE configuration_id = $1 AND definition_id = $3
                AND (SELECT audience_id FROM cdp.facebook_audience_members
                      WHERE configuration_id = $1 AND definition_id = $3
                      ORDER BY member_key LIMIT 1) <> $2",
            &[&plan.id, &audience_id, &plan.definition_id],
        )
        .await
        .map_err(|e| failed(e.into()))?;

    let keys = match_keys_schema(plan);
    let as_outcome = |e: UploadError| match e {
        UploadError::Meta(m) => Outcome::Failed(m.to_string()),
        UploadError::LeaseLost(lost) => Outcome::Failed(lost.to_string()),
        UploadError::Other(o) if is_lease_lost(&o) => Outcome::Failed(LeaseLost.to_string()),
        UploadError::Other(o) => failed(o),
    };

    let started = std::time::Instant::now();
    let expected = runs::last_extracted(stage, plan.scope())
        .await
        .map_err(|e| failed(e.into()))?;
    let ledger_empty = diff::ledger_is_empty(stage, plan.scope())
        .await
        .map_err(failed)?;
    // An audience this worker did not fill (the original worker's, one found by name, one an
    // operator set) holds members nobody recorded: its first run replaces them with the source
    // set, unless the row says to keep them (adopt_mode = 'append').
    let adopting = ledger_empty
        && !audience.created
        && plan.mode != SyncMode::Replace
        && plan.adopt == AdoptMode::Replace;
    let mode = if adopting {
        SyncMode::Replace
    } else {
        plan.mode
    };
    // A first sync sends new members while it extracts (see stream.rs).
    let first_sync = mode != SyncMode::Replace && ledger_empty;
    // A replace the previous run left open at Meta goes on in the same session (a new one would
    // be refused as busy until the old one timed out, leaving the audience a partial upload).
    let resumed = match mode {
        SyncMode::Replace => open_replace_session(ctx, plan, &audience_id, stage, run_id).await,
        _ => None,
    };
    let (add_session, first_batch_seq) = match resumed {
        Some((session, batches)) => (session, batches as u32 + 1),
        None => (new_session_id(), 1),
    };
    let remove_session = new_session_id();
    runs::record_sessions(stage, run_id, mode.as_str(), add_session, remove_session)
        .await
        .map_err(|e| failed(e.into()))?;
    let (stream_tx, stream_rx) = mpsc::channel(1);
    let stream = first_sync.then(|| Stream {
        tx: stream_tx,
        batch_rows: ctx.settings.worker.upload_batch_rows,
    });
    let target = Target {
        meta: &ctx.meta,
        system_name: &plan.system_name,
        ad_account_id: &plan.ad_account_id,
        audience_id: &audience_id,
        configuration_id: plan.id,
        definition_id: plan.definition_id,
        match_keys: &keys,
        run_id,
        session_id: add_session,
        lease,
        cancel,
    };
    let streamer = Streamer {
        pool: &ctx.pool,
        target,
    };
    let (staging, (streamed, stream_error)) = tokio::join!(
        stage_members(
            &extract,
            stage,
            &sql,
            plan,
            expected as usize,
            stream,
            cancel
        ),
        streamer.run(stream_rx),
    );
    drop(extract);
    if let Some(e) = stream_error {
        return Err(as_outcome(e));
    }
    // Cancelled while extracting, or the streamer stopped on cancellation.
    let interrupted = streamed.interrupted || matches!(staging, Err(StageError::Interrupted));
    let staged = match staging {
        Ok(report) => report,
        Err(_) if interrupted => {
            let members = diff::count_members(stage, plan.scope())
                .await
                .map_err(failed)?;
            let _ = diff::drop_plan(stage).await;
            return Ok(Done {
                outcome: Outcome::Interrupted,
                added: streamed.rows,
                removed: 0,
                members,
                held: None,
            });
        }
        Err(StageError::Columns(problems)) => {
            return Err(Outcome::InvalidConfig(problems.join("; ")));
        }
        Err(e) => return Err(failed(e.into())),
    };
    let staged_ms = started.elapsed().as_millis() as u64;
    // On a first sync the ledger holds exactly the streamed members; else it is counted.
    let known_audience = first_sync.then_some(streamed.rows);
    if first_sync && streamed.rows > 0 {
        diff::analyze_ledger(stage).await.map_err(failed)?;
    }
    let Changes {
        planned,
        held,
        replacing,
        consent_leaving,
    } = plan_changes(ctx, stage, plan, mode, &staged, known_audience, true).await?;

    let counts = runs::PlanCounts {
        audience_id: audience_id.clone(),
        extracted: staged.tally.rows as i64,
        eligible: planned.eligible,
        duplicates: planned.duplicates,
        skipped_no_key: staged.tally.no_usable_key as i64,
        skipped_invalid: staged.tally.invalid_json(&plan.match_keys),
        to_add: planned.to_add,
        to_remove: planned.to_remove,
        removals_held: held.as_ref().map_or(0, |(_, n)| *n),
        unchanged: staged.unchanged as i64,
        refreshed: planned.refreshed,
        suppressed,
        consent_removals: consent_leaving,
        coverage: staged.tally.coverage_json(&plan.match_keys),
    };
    runs::record_plan(stage, run_id, &counts)
        .await
        .map_err(|e| failed(e.into()))?;
    tracing::info!(
        system = %plan.label(),
        extracted = counts.extracted,
        eligible = counts.eligible,
        to_add = counts.to_add,
        to_remove = counts.to_remove,
        unchanged = counts.unchanged,
        refreshed = counts.refreshed,
        staged_ms,
        diffed_ms = started.elapsed().as_millis() as u64 - staged_ms,
        "sync planned"
    );

    let upload = |total: i64, session_id: i64| Upload {
        stage,
        target: Target {
            session_id,
            ..target
        },
        total,
        first_batch_seq: 1,
        session_total: total,
        progress: SessionProgress::default(),
        batch_rows: ctx.settings.worker.upload_batch_rows,
        upsert: mode == SyncMode::Append,
    };
    let removed = upload(planned.to_remove, remove_session)
        .run(Direction::Remove)
        .await
        .map_err(as_outcome)?;
    let mut interrupted = removed.interrupted;
    let mut added = Default::default();
    let mut refused = None;
    if !interrupted {
        let direction = if replacing {
            Direction::Replace
        } else {
            Direction::Add
        };
        // The add session goes on after the batches streamed while extracting (or, resuming a
        // replace, after the batches its first run sent).
        let sent = Upload {
            first_batch_seq: first_batch_seq + streamed.batches,
            session_total: streamed.rows + planned.to_add,
            progress: streamed.progress,
            ..upload(planned.to_add, add_session)
        }
        .run(direction)
        .await;
        added = match sent {
            // Meta will not replace this audience: when adopting it, add the source set instead
            // (what was there stays) and say so.
            Err(UploadError::Meta(e)) if adopting && e.refuses_replace() => {
                tracing::warn!(system = %plan.label(), error = %e, "usersreplace refused; adding instead");
                refused = Some(format!(
                    "usersreplace was refused for audience {audience_id} ({e}); the source set was \
                     added, and members the audience held before were not removed"
                ));
                upload(planned.to_add, new_session_id())
                    .run(Direction::Add)
                    .await
                    .map_err(as_outcome)?
            }
            other => other.map_err(as_outcome)?,
        };
        interrupted = added.interrupted;
    }
    let members = diff::count_members(stage, plan.scope())
        .await
        .map_err(failed)?;
    let _ = diff::drop_plan(stage).await;
    // The audience as Meta reports it now; a problem it reports makes the run partial.
    let unhealthy = if interrupted {
        None
    } else {
        readback::check(&ctx.meta, stage, run_id, &plan.ad_account_id, &audience_id).await
    };
    let outcome = if interrupted {
        Outcome::Interrupted
    } else if held.is_some() || refused.is_some() || unhealthy.is_some() {
        Outcome::Partial
    } else {
        Outcome::Success
    };
    let note = [held.map(|(why, _)| why), refused, unhealthy]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
    Ok(Done {
        outcome,
        added: streamed.rows + added.rows,
        removed: removed.rows,
        members,
        held: (!note.is_empty()).then(|| note.join("; ")),
    })
}

/// The extraction query for `plan` and how many customers its consent rule keeps out: the
/// operator's query or one built from the CDP's columns, with suppressed customers filtered out.
/// A CDP without the columns the keys need, or a consent rule naming what it lacks, is a
/// configuration problem (found before any audience exists).
pub(super) async fn extraction(
    ctx: &SyncContext,
    extract: &tokio_postgres::Client,
    plan: &SyncPlan,
) -> Result<(Arc<str>, i64), Outcome> {
    let failed = |e: anyhow::Error| Outcome::Failed(db::describe(&e));
    // One catalog query tells what the CDP has: for the default extraction and the consent rule.
    let consent_tables = plan.consent.as_ref().map_or_else(Vec::new, |c| c.tables());
    let catalog = Catalog::read_with(extract, &consent_tables)
        .await
        .map_err(failed)?;
    let sql: Arc<str> = match &ctx.extract_sql {
        Some(sql) => sql.clone(),
        None => catalog
            .default_extraction(&plan.match_keys)
            .map_err(|problems| Outcome::InvalidConfig(problems.join("; ")))?
            .into(),
    };
    // Suppressed customers leave the extraction itself: they are never staged nor streamed.
    let (sql, suppressed) = match &plan.consent {
        Some(rule) => {
            let problems = rule.check(&catalog);
            if !problems.is_empty() {
                return Err(Outcome::InvalidConfig(problems.join("; ")));
            }
            let suppressed = consent::count_suppressed(
                extract,
                rule,
                &sql,
                &plan.tenant_ids,
                &plan.excluded_segments,
            )
            .await
            .map_err(failed)?;
            (Arc::from(rule.filter(&sql)), suppressed)
        }
        None => (sql, 0),
    };

    Ok((sql, suppressed))
}

/// What a run will send: the diff against the ledger, weighed by the removal guard, with the
/// consent removals.
pub(super) struct Changes {
    pub planned: DiffReport,
    /// Why removals were held, and how many.
    pub held: Option<(String, i64)>,
    /// The additions go through `usersreplace`.
    pub replacing: bool,
    /// Members leaving for consent (outside the guard).
    pub consent_leaving: i64,
}

/// Plans the run on the staged members (`sync_stage` on `stage`). `refresh_ledger`: whether
/// the ledger's source columns of unchanged members are brought up to date (not in a dry run).
pub(super) async fn plan_changes(
    ctx: &SyncContext,
    stage: &tokio_postgres::Client,
    plan: &SyncPlan,
    mode: SyncMode,
    staged: &StageReport,
    known_audience: Option<i64>,
    refresh_ledger: bool,
) -> Result<Changes, Outcome> {
    let failed = |e: anyhow::Error| Outcome::Failed(db::describe(&e));
    let keys = match_keys_schema(plan);
    let mut planned: DiffReport = diff::diff(
        stage,
        plan.scope(),
        &keys,
        mode,
        staged,
        known_audience,
        refresh_ledger,
    )
    .await
    .map_err(failed)?;
    let mut held = None;
    // A replace drops the members that left the source: the guard weighs those.
    let mut replacing = mode == SyncMode::Replace;
    // Members removed for consent are not the guard's to weigh (see consent.rs).
    let consent_leaving = match &plan.consent {
        Some(rule) => consent::count_leaving(stage, rule, plan.scope())
            .await
            .map_err(failed)?,
        None => 0,
    };
    let dropping = if replacing {
        planned.leaving
    } else {
        planned.to_remove
    };
    let dropping = (dropping - consent_leaving).max(0);
    let max_share = plan
        .max_removal_share
        .unwrap_or(ctx.settings.worker.removal_guard_share);
    if let Removals::Held(why) =
        guard::decide(planned.audience, dropping, max_share, plan.force_removals)
    {
        tracing::warn!(system = %plan.label(), to_remove = dropping, audience = planned.audience, "removals held");
        // Held: only newcomers are added; a replace would have dropped the rest.
        planned.to_add = diff::hold_removals(stage).await.map_err(failed)?;
        held = Some((why, dropping));
        planned.to_remove = 0;
        replacing = false;
    } else if replacing {
        planned.to_add = diff::plan_replace(stage, plan.scope())
            .await
            .map_err(failed)?;
        planned.to_remove = 0;
    }
    // A replace drops them; otherwise (append mode, held removals) they are removed on their own.
    if let Some(rule) = plan.consent.as_ref().filter(|_| !replacing) {
        planned.to_remove += consent::plan_removals(stage, rule, plan.scope())
            .await
            .map_err(failed)?;
    }

    Ok(Changes {
        planned,
        held,
        replacing,
        consent_leaving,
    })
}

/// The schema keys of `plan`, comma-separated, as the ledger stores them.
pub(super) fn match_keys_schema(plan: &SyncPlan) -> String {
    plan.match_keys
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The audience of the system's (or its definitions') that `audience_id` belongs to already, if
/// it is not `scope`'s: named as custom_audience_id by an active system or definition. Of several
/// naming one audience, it belongs to the one whose ledger holds it, else to the oldest (lowest
/// ids).
async fn audience_owner(
    client: &tokio_postgres::Client,
    scope: LedgerScope,
    audience_id: &str,
) -> anyhow::Result<Option<String>> {
    // A ledger holds one audience: its first row in key order tells which (see `execute`).
    let holds = |c: &str, d: &str| {
        format!(
            "(SELECT m.audience_id FROM cdp.facebook_audience_members m
               WHERE m.configuration_id = {c} AND m.definition_id = {d}
               ORDER BY m.member_key LIMIT 1) = $2"
        )
    };
    let row = client
        .query_opt(
            &format!(
                "WITH named AS (
                     SELECT c.id AS cid, 0 AS did, c.system_name::text AS name, {} AS holds
                       FROM cdp.facebook_configurations c
                      WHERE (c.custom_audience_id = $2 AND coalesce(c.is_active, false))
                         OR (c.id = $1 AND $3 = 0)
                     UNION ALL
                     SELECT a.configuration_id, a.id, c.system_name || ' / ' || a.name, {}
                       FROM cdp.facebook_audiences a
                       JOIN cdp.facebook_configurations c ON c.id = a.configuration_id
                      WHERE (a.custom_audience_id = $2 AND a.is_active AND coalesce(c.is_active, false))
                         OR (a.configuration_id = $1 AND a.id = $3))
                 SELECT cid, did, name FROM named
                  ORDER BY coalesce(holds, false) DESC, cid, did
                  LIMIT 1",
                holds("c.id", "0"),
                holds("a.configuration_id", "a.id")
            ),
            &[&scope.configuration_id, &audience_id, &scope.definition_id],
        )
        .await
        .context("Failed to check which system the audience belongs to")?;
    Ok(row
        .filter(|r| {
            (r.get::<_, i32>(0), r.get::<_, i32>(1))
                != (scope.configuration_id, scope.definition_id)
        })
        .map(|r| r.get(2)))
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
fn new_session_id() -> i64 {
    (rand::random::<u64>() >> 1).max(1) as i64
}

/// Ensures the pool can reach the database (used by `/healthz`).
pub async fn database_answers(pool: &Pool) -> bool {
    match pool.get().await {
        Ok(client) => client.query_one("SELECT 1", &[]).await.is_ok(),
        Err(_) => false,
    }
}

/// The worker id: `WORKER_ID`, else host name and process id.
pub fn default_worker_id() -> String {
    std::env::var("WORKER_ID")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}:{}", std::process::id())
        })
}

/// Builds the context from settings (pool, Meta client, extraction SQL).
pub fn context(settings: Settings, meta: MetaClient) -> anyhow::Result<SyncContext> {
    let pool = db::connect_pool(&settings.database)?;
    let extract_sql = super::extract::load_sql(&settings.worker.extract_sql_file)
        .context("Failed to load the extraction query")?;
    Ok(SyncContext {
        pool,
        meta,
        settings: Arc::new(settings),
        worker_id: default_worker_id(),
        extract_sql: extract_sql.map(Into::into),
        alerts_http: reqwest::Client::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_that_panics_ends_as_none_instead_of_unwinding_into_the_scheduler() {
        let panicking = async {
            if std::hint::black_box(true) {
                panic!("poison");
            }
            1
        };
        assert_eq!(unless_it_panics(panicking).await, None);
        assert_eq!(unless_it_panics(async { 2 }).await, Some(2));
    }
}
