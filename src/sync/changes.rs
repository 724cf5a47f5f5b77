//! What a run will send: the diff against the ledger (see [`super::diff`]), weighed by the removal
//! guard (see [`super::guard`]), with the members leaving for consent.
use super::consent;
use super::context::SyncContext;
use super::diff::{self, DiffReport};
use super::error::SyncError;
use super::guard::{self, Removals};
use super::stage::StageReport;
use super::system::{SyncMode, SyncPlan};
use crate::db::runs::{self, PlanCounts};

pub struct Changes {
    pub planned: DiffReport,
    /// Why removals were held, and how many.
    pub held: Option<(String, i64)>,
    /// The additions go through `usersreplace`.
    pub replacing: bool,
    /// Members leaving for consent (outside the guard).
    pub consent_leaving: i64,
}

/// Plans the run on the staged members (`sync_stage` on `stage`). `known_audience`: the ledger's
/// size before the run changes it. `refresh_ledger`: whether the ledger's source columns of
/// unchanged members are brought up to date (not in a dry run).
pub async fn plan_changes(
    ctx: &SyncContext,
    stage: &tokio_postgres::Client,
    plan: &SyncPlan,
    mode: SyncMode,
    staged: &StageReport,
    known_audience: i64,
    refresh_ledger: bool,
) -> Result<Changes, SyncError> {
    let scope = plan.scope();
    let mut planned = diff::diff(
        stage,
        scope,
        &plan.schema(),
        mode,
        staged,
        known_audience,
        refresh_ledger,
    )
    .await?;
    let mut held = None;
    // A replace drops the members that left the source: the guard weighs those.
    let mut replacing = mode == SyncMode::Replace;
    // Members removed for consent are not the guard's to weigh (see consent.rs).
    let consent_leaving = match &plan.consent {
        Some(rule) => consent::count_leaving(stage, rule, scope).await?,
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
        planned.to_add = diff::hold_removals(stage).await?;
        held = Some((why, dropping));
        planned.to_remove = 0;
        replacing = false;
    } else if replacing {
        planned.to_add = diff::plan_replace(stage, scope).await?;
        planned.to_remove = 0;
    }
    // A replace drops them; otherwise (append mode, held removals) they are removed on their own.
    if let Some(rule) = plan.consent.as_ref().filter(|_| !replacing) {
        planned.to_remove += consent::plan_removals(stage, rule, scope).await?;
    }
    Ok(Changes {
        planned,
        held,
        replacing,
        consent_leaving,
    })
}

impl Changes {
    /// Writes the plan's counts to the run row, and logs them.
    pub async fn record(
        &self,
        stage: &tokio_postgres::Client,
        run_id: i64,
        plan: &SyncPlan,
        audience_id: &str,
        staged: &StageReport,
        suppressed: i64,
    ) -> Result<(), SyncError> {
        let counts = self.counts(plan, audience_id, staged, suppressed);
        runs::record_plan(stage, run_id, &counts).await?;
        tracing::info!(
            system = %plan.label(),
            extracted = counts.extracted,
            eligible = counts.eligible,
            to_add = counts.to_add,
            to_remove = counts.to_remove,
            unchanged = counts.unchanged,
            refreshed = counts.refreshed,
            "sync planned"
        );
        Ok(())
    }

    /// The run row's counts once the run is planned.
    fn counts(
        &self,
        plan: &SyncPlan,
        audience_id: &str,
        staged: &StageReport,
        suppressed: i64,
    ) -> PlanCounts {
        let planned = &self.planned;
        PlanCounts {
            audience_id: audience_id.to_string(),
            extracted: staged.tally.rows as i64,
            eligible: planned.eligible,
            duplicates: planned.duplicates,
            skipped_no_key: staged.tally.no_usable_key as i64,
            skipped_invalid: staged.tally.invalid_json(&plan.match_keys),
            to_add: planned.to_add,
            to_remove: planned.to_remove,
            removals_held: self.held.as_ref().map_or(0, |(_, n)| *n),
            unchanged: staged.unchanged as i64,
            refreshed: planned.refreshed,
            suppressed,
            consent_removals: self.consent_leaving,
            coverage: staged.tally.coverage_json(&plan.match_keys),
        }
    }
}
