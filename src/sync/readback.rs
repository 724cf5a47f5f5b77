//! After a run that reached Meta: the audience read back (see [`crate::meta::audience_health`]),
//! kept on the run row (`sql/0009_audience_health.sql`); a problem Meta reports makes the run
//! `partial`. A read-back that fails is logged and leaves the run as it was: it never fails a sync.
use crate::db::runs;
use crate::meta::MetaClient;
use crate::meta::audience_health::{AudienceHealth, problem};

/// Reads the audience back; `None` (and a warning naming the audience, not the people in it)
/// when Meta cannot be read.
pub async fn read_back(
    meta: &MetaClient,
    ad_account_id: &str,
    audience_id: &str,
) -> Option<AudienceHealth> {
    match meta.get_audience(ad_account_id, audience_id).await {
        Ok(info) => Some(AudienceHealth::from_info(&info)),
        Err(e) => {
            tracing::warn!(audience_id, error = %e, "Failed to read the audience back from Meta; its health stays unknown for this run");
            None
        }
    }
}

/// After a run that reached Meta: read the audience back, keep it on the run row, and return
/// Meta's problem, if it reports one. Nothing here fails the run.
pub async fn check(
    meta: &MetaClient,
    client: &impl tokio_postgres::GenericClient,
    run_id: i64,
    ad_account_id: &str,
    audience_id: &str,
) -> Option<String> {
    let health = read_back(meta, ad_account_id, audience_id).await?;
    if let Err(e) = runs::record_audience_health(client, run_id, &health).await {
        tracing::warn!(run_id, error = %crate::db::error_text(&e), "Failed to record the audience's health");
    }
    let found = problem(audience_id, &health);
    if let Some(p) = &found {
        tracing::warn!(audience_id, problem = %p, "Meta reports a problem with the audience");
    }
    found
}
