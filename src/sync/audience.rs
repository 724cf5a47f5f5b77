//! Makes sure the system has its Custom Audience before anything is uploaded: the stored id, else
//! one found by exact name in the ad account, else a new one. The id is stored at once, so a crash
//! never leads to a second audience.
use crate::db::configurations::store_audience_id;
use crate::meta::{MetaClient, MetaError};
use crate::sync::system::SyncPlan;

pub const DESCRIPTION: &str = "Synced from the CDP by cdp-meta-sync";

#[derive(Debug, thiserror::Error)]
pub enum AudienceError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("Failed to store the audience id: {0}")]
    Database(#[from] tokio_postgres::Error),
}

pub async fn ensure_audience(
    meta: &MetaClient,
    client: &impl tokio_postgres::GenericClient,
    plan: &SyncPlan,
) -> Result<String, AudienceError> {
    if let Some(id) = &plan.custom_audience_id {
        return Ok(id.clone());
    }
    let id = match meta
        .find_audience_by_name(&plan.ad_account_id, &plan.audience_name)
        .await?
    {
        Some(found) => {
            tracing::info!(system = %plan.system_name, audience_id = %found, "audience found by name");
            found
        }
        None => {
            let created = meta
                .create_custom_audience(&plan.ad_account_id, &plan.audience_name, DESCRIPTION)
                .await?;
            tracing::info!(system = %plan.system_name, audience_id = %created, "audience created");
            created
        }
    };
    store_audience_id(client, plan.id, &id).await?;
    Ok(id)
}
