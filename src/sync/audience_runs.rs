//! The runs of a system's audience definitions (see [`super::definition`]): after the system's
//! own audience, each active definition in id order, under the system's lease and on the same
//! pipeline ([`super::run::execute`]), each with a run row and status columns of its own. The
//! system's outcome then counts them: a definition that did not sync makes the system `partial`.
use tokio_util::sync::CancellationToken;

use super::context::SyncContext;
use super::definition::excluded_for;
use super::guarded::guarded;
use super::lease::{Lease, LeaseLost};
use super::outcome::{Outcome, Trigger};
use super::system::SyncPlan;
use crate::db::audiences::DefinitionRow;
use crate::db::{self, audiences, runs};

/// How one definition's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceResult {
    pub name: String,
    pub outcome: Outcome,
    /// Why a synced run is partial.
    pub note: Option<String>,
}

/// Syncs the system's active definitions one after another; stops early on shutdown (then the
/// first definition left is `interrupted`, which keeps the system due) or when the lease is lost
/// (which fails the system's run).
pub async fn sync_all(
    ctx: &SyncContext,
    system: &SyncPlan,
    trigger: Trigger,
    lease: &Lease,
    cancel: &CancellationToken,
) -> Vec<AudienceResult> {
    let read = async {
        let client = ctx.pool.get().await?;
        anyhow::Ok(audiences::active(&**client, system.id).await?)
    };
    let definitions = match read.await {
        Ok(definitions) => definitions,
        Err(e) => {
            return vec![AudienceResult {
                name: "(definitions)".into(),
                outcome: Outcome::Failed(format!(
                    "Failed to read the audience definitions: {}",
                    db::describe(&e)
                )),
                note: None,
            }];
        }
    };
    let mut results = Vec::with_capacity(definitions.len());
    for definition in &definitions {
        if lease.is_lost() {
            break;
        }
        if cancel.is_cancelled() {
            // Not started: the system stays due, so the next run syncs it.
            results.push(AudienceResult {
                name: definition.name.clone(),
                outcome: Outcome::Interrupted,
                note: None,
            });
            break;
        }
        results.push(sync_one(ctx, system, definition, trigger, lease, cancel).await);
    }
    results
}

async fn sync_one(
    ctx: &SyncContext,
    system: &SyncPlan,
    definition: &DefinitionRow,
    trigger: Trigger,
    lease: &Lease,
    cancel: &CancellationToken,
) -> AudienceResult {
    let label = format!("{} / {}", system.system_name, definition.name);
    let opened = async {
        let client = ctx.pool.get().await?;
        audiences::start(&**client, definition.id).await?;
        let of = runs::RunOf {
            configuration_id: system.id,
            system_name: &system.system_name,
            definition_id: definition.id,
            audience_name: Some(&definition.name),
        };
        anyhow::Ok(
            runs::open(
                &**client,
                &of,
                trigger.as_str(),
                &ctx.worker_id,
                &definition.sync_mode,
            )
            .await?,
        )
    };
    let run_id = match opened.await {
        Ok(id) => id,
        Err(e) => {
            return AudienceResult {
                name: definition.name.clone(),
                outcome: Outcome::Failed(format!("Failed to open the run: {}", db::describe(&e))),
                note: None,
            };
        }
    };
    let done = match definition.plan(system) {
        Err(problems) => Err(Outcome::InvalidConfig(problems.join("; "))),
        Ok(plan) => match with_segments(ctx, plan).await {
            Err(outcome) => Err(outcome),
            Ok(plan) => guarded(ctx, &plan, run_id, lease, cancel).await,
        },
    };
    let (mut outcome, members, note) = match done {
        Ok(synced) => (synced.outcome, synced.members, synced.why_partial),
        Err(outcome) => (outcome, 0, None),
    };
    if lease.is_lost() {
        outcome = Outcome::Failed(LeaseLost.to_string());
    }
    let error = match &outcome {
        Outcome::Failed(e) | Outcome::InvalidConfig(e) => Some(e.clone()),
        _ => note.clone(),
    };
    let finish = match &outcome {
        Outcome::Success | Outcome::Partial => audiences::AudienceFinish::Synced {
            status: outcome.as_str(),
            total_customers: members,
            error_log: note.clone(),
            clear_force_removals: definition.force_removals,
        },
        _ => audiences::AudienceFinish::Stopped {
            status: outcome.as_str(),
            error_log: error.clone(),
        },
    };
    let recorded = async {
        let client = ctx.pool.get().await?;
        runs::close(&**client, run_id, outcome.as_str(), error.as_deref()).await?;
        audiences::finish(&**client, definition.id, &finish).await?;
        anyhow::Ok(())
    };
    if let Err(e) = recorded.await {
        tracing::error!(system = %label, error = %db::describe(&e), "Failed to record the audience's outcome");
    }
    metrics::counter!("cdp_sync_runs_total", "outcome" => outcome.as_str()).increment(1);
    match &outcome {
        Outcome::Failed(e) | Outcome::InvalidConfig(e) => {
            tracing::warn!(system = %label, outcome = outcome.as_str(), error = %e, "audience sync ended")
        }
        _ => {
            tracing::info!(system = %label, outcome = outcome.as_str(), members, "audience sync ended")
        }
    }
    AudienceResult {
        name: definition.name.clone(),
        outcome,
        note,
    }
}

/// A plan with included segments, turned into the one list of excluded segments the extraction
/// takes (`$2`): every other segment the CDP holds.
pub(super) async fn with_segments(
    ctx: &SyncContext,
    mut plan: SyncPlan,
) -> Result<SyncPlan, Outcome> {
    let Some(included) = plan.included_segments.clone() else {
        return Ok(plan);
    };
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|e| Outcome::Failed(format!("database unavailable: {e}")))?;
    let rows = client
        .query(
            &format!(
                "SELECT DISTINCT rfm_segment::text FROM {} WHERE rfm_segment IS NOT NULL",
                super::source::RFM
            ),
            &[],
        )
        .await
        .map_err(|e| match e.code() {
            Some(c)
                if *c == tokio_postgres::error::SqlState::UNDEFINED_TABLE
                    || *c == tokio_postgres::error::SqlState::UNDEFINED_COLUMN =>
            {
                Outcome::InvalidConfig(format!(
                    "included_segments needs column {}.rfm_segment, which the CDP does not have",
                    super::source::RFM
                ))
            }
            _ => Outcome::Failed(format!(
                "Failed to read the CDP's segments: {}",
                db::error_text(&e)
            )),
        })?;
    let in_cdp: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    plan.excluded_segments = excluded_for(&included, &plan.excluded_segments, &in_cdp);
    Ok(plan)
}

/// The system's outcome once its definitions ran: its own audience's, unless that synced and a
/// definition did not (then `partial`, naming each), or a definition was interrupted (then the
/// system stays due).
pub fn combine(
    own: Outcome,
    own_note: Option<String>,
    audiences: &[AudienceResult],
) -> (Outcome, Option<String>) {
    if !matches!(own, Outcome::Success | Outcome::Partial) {
        return (own, own_note);
    }
    if audiences.iter().any(|a| a.outcome == Outcome::Interrupted) {
        return (Outcome::Interrupted, own_note);
    }
    let problems: Vec<String> = audiences
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::Failed(e) | Outcome::InvalidConfig(e) => {
                Some(format!("audience '{}' {}: {e}", a.name, a.outcome.as_str()))
            }
            Outcome::Partial => Some(format!(
                "audience '{}' partial: {}",
                a.name,
                a.note.as_deref().unwrap_or("see its row")
            )),
            _ => None,
        })
        .collect();
    if problems.is_empty() {
        return (own, own_note);
    }
    let note = own_note.into_iter().chain(problems).collect::<Vec<_>>();
    (Outcome::Partial, Some(note.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, outcome: Outcome) -> AudienceResult {
        AudienceResult {
            name: name.into(),
            outcome,
            note: None,
        }
    }

    #[test]
    fn a_system_whose_audiences_all_synced_keeps_its_own_outcome() {
        let audiences = [
            result("Win-back", Outcome::Success),
            result("Value", Outcome::Success),
        ];
        assert_eq!(
            combine(Outcome::Success, None, &audiences),
            (Outcome::Success, None)
        );
        assert_eq!(
            combine(Outcome::Partial, Some("held".into()), &audiences),
            (Outcome::Partial, Some("held".into()))
        );
    }

    #[test]
    fn a_definition_that_did_not_sync_makes_a_synced_system_partial_naming_it() {
        let audiences = [
            result("Win-back", Outcome::Success),
            result("Value", Outcome::InvalidConfig("no clv".into())),
        ];
        let (outcome, note) = combine(Outcome::Success, None, &audiences);
        assert_eq!(outcome, Outcome::Partial);
        assert_eq!(
            note.as_deref(),
            Some("audience 'Value' invalid_config: no clv")
        );
    }

    #[test]
    fn a_failed_system_stays_failed_and_an_interrupted_definition_keeps_it_due() {
        let failed = Outcome::Failed("Meta is down".into());
        assert_eq!(
            combine(failed.clone(), None, &[result("x", Outcome::Success)]).0,
            failed
        );
        assert_eq!(
            combine(Outcome::Success, None, &[result("x", Outcome::Interrupted)]).0,
            Outcome::Interrupted
        );
    }
}
