//! Makes sure the system has its Custom Audience before anything is uploaded: the stored id, else
//! one found by exact name in the ad account, else a new one. The id is stored at once, so a crash
//! never leads to a second audience.
use anyhow::Context;

use super::error::SyncError;
use super::lease::Lease;
use super::system::{OWN_AUDIENCE, SyncPlan};
use crate::db::configurations::store_audience_id;
use crate::db::ledger;
use crate::meta::MetaClient;

pub const DESCRIPTION: &str = "Synced from the CDP by cdp-meta-sync";

/// The system's audience, and whether this run created it (an audience it did not create may
/// hold members nobody recorded: see [`crate::sync::system::AdoptMode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub id: String,
    pub created: bool,
}

pub async fn ensure_audience(
    meta: &MetaClient,
    client: &impl tokio_postgres::GenericClient,
    plan: &SyncPlan,
) -> Result<Ensured, SyncError> {
    if let Some(id) = &plan.custom_audience_id {
        return Ok(Ensured {
            id: id.clone(),
            created: false,
        });
    }
    let ensured = match meta
        .find_audience_by_name(&plan.ad_account_id, &plan.audience_name)
        .await?
    {
        Some(found) => {
            tracing::info!(system = %plan.label(), audience_id = %found, "audience found by name");
            Ensured {
                id: found,
                created: false,
            }
        }
        None => {
            let created = meta
                .create_audience(
                    &plan.ad_account_id,
                    &plan.audience_name,
                    DESCRIPTION,
                    plan.value_based,
                )
                .await?;
            tracing::info!(system = %plan.label(), audience_id = %created, value_based = plan.value_based, "audience created");
            Ensured {
                id: created,
                created: true,
            }
        }
    };
    let stored = match plan.definition_id {
        OWN_AUDIENCE => store_audience_id(client, plan.id, &ensured.id).await,
        definition => {
            crate::db::audiences::store_audience_id(client, definition, &ensured.id).await
        }
    };
    stored.context("Failed to store the audience id")?;
    Ok(ensured)
}

/// The plan's audience, for this plan alone: ensured at Meta (under the lease), refused when
/// another system or definition has it already (two would remove each other's members), and with
/// the ledger rows of a former audience (an operator changed `custom_audience_id`) dropped.
pub async fn claim(
    meta: &MetaClient,
    stage: &tokio_postgres::Client,
    plan: &SyncPlan,
    lease: &Lease,
) -> Result<Ensured, SyncError> {
    lease.ensure().await?;
    let audience = lease.guard(ensure_audience(meta, stage, plan)).await??;
    if let Some(other) = ledger::owner(stage, plan.scope(), &audience.id).await? {
        return Err(SyncError::Config(format!(
            "audience {} is the audience of '{other}' already; give '{}' an audience of \
             its own (custom_audience_id, or a different audience name)",
            audience.id,
            plan.label()
        )));
    }
    ledger::forget_other_audience(stage, plan.scope(), &audience.id).await?;
    Ok(audience)
}
