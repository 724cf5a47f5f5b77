//! Checking every token in use (at start and daily), and the client a system syncs with.
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{Outcome, SyncContext};
use crate::configuration::named_tokens::{GLOBAL, Unresolved, variable};
use crate::db::token_checks as store;
use crate::meta::MetaClient;
use crate::secret::{ExposeSecret, SecretString};
use crate::tokens::{assess, fingerprint};

/// How often the scheduler checks every token again.
pub const CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);

/// One token's check: its verdict, or why it could not be checked.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub variable: String,
    pub outcome: Result<crate::tokens::Assessment, String>,
}

/// The token in `name` and a client calling Meta with it.
fn token_client(ctx: &SyncContext, name: &str) -> Result<(SecretString, MetaClient), Unresolved> {
    // A client of its own even for the worker's token, so that what it saw (a refused token) is
    // this caller's alone.
    let token = match name {
        GLOBAL => ctx.settings.meta.access_token.clone(),
        _ => ctx.settings.tokens.resolve(name)?,
    }
    .ok_or_else(|| Unresolved::NotSet(name.to_string()))?;
    let client = ctx
        .meta
        .with_token(token.clone())
        .map_err(|_| Unresolved::Empty(name.to_string()))?;
    Ok((token, client))
}

/// Checks every token in use with `debug_token`, stores each verdict, writes the warnings into
/// the error_log of the systems using the token, and sets the token metrics. A token that cannot
/// be checked (Meta unreachable) keeps its last check; a variable that is not set is left to the
/// sync, which makes its systems `invalid_config`.
pub async fn check_all(ctx: &SyncContext) -> anyhow::Result<Vec<CheckReport>> {
    let client = ctx.pool.get().await?;
    let names = store::in_use(&**client).await?;
    let mut reports = Vec::with_capacity(names.len());
    for name in names {
        let outcome = check_one(ctx, &client, &name).await;
        match &outcome {
            Ok(v) if v.refused.is_some() => {
                tracing::error!(token_ref = %name, problem = v.warning.as_deref(), "access token refused")
            }
            Ok(v) if v.warning.is_some() => {
                tracing::warn!(token_ref = %name, warning = v.warning.as_deref(), "access token needs attention")
            }
            Ok(_) => tracing::info!(token_ref = %name, "access token checked"),
            Err(e) => tracing::warn!(token_ref = %name, error = %e, "access token not checked"),
        }
        reports.push(CheckReport {
            variable: name,
            outcome,
        });
    }
    Ok(reports)
}

async fn check_one(
    ctx: &SyncContext,
    db: &tokio_postgres::Client,
    name: &str,
) -> Result<crate::tokens::Assessment, String> {
    let (token, meta) = token_client(ctx, name).map_err(|e| e.to_string())?;
    let mut info = meta.debug_token(&token).await.map_err(|e| e.to_string())?;
    if let Some(e) = &mut info.error {
        e.message = e.message.replace(token.expose_secret(), "[redacted]");
    }
    let now = Utc::now();
    let verdict = assess(name, &info, now);
    store::record(db, name, &fingerprint(&token), &info, &verdict)
        .await
        .map_err(|e| crate::db::error_text(&e))?;
    let expires_in = info
        .expires_at
        .map_or(f64::INFINITY, |at| (at - now).num_seconds() as f64);
    metrics::gauge!("cdp_meta_token_expires_in_seconds", "token_ref" => name.to_string())
        .set(expires_in);
    metrics::gauge!("cdp_meta_token_valid", "token_ref" => name.to_string())
        .set(if verdict.refused.is_none() { 1.0 } else { 0.0 });
    metrics::gauge!("cdp_meta_token_warning", "token_ref" => name.to_string())
        .set(if verdict.warning.is_some() { 1.0 } else { 0.0 });
    Ok(verdict)
}

/// The scheduler's token check: at start, then every [`CHECK_EVERY`], until `shutdown`.
pub async fn run_daily(ctx: SyncContext, shutdown: CancellationToken) {
    loop {
        if let Err(e) = check_all(&ctx).await {
            tracing::warn!(error = %crate::db::describe(&e), "token check failed; next one in a day");
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A run that failed because Meta refused its token (190, seen by `meta`), said in plain words
/// naming the variable; any other outcome as it is.
pub fn explain_refusal(outcome: Outcome, meta: &MetaClient, token_ref: Option<&str>) -> Outcome {
    match outcome {
        Outcome::Failed(e) if meta.token_refused() => Outcome::Failed(format!(
            "the access token in {} was refused by Meta (expired or revoked); create a new \
             system-user token and set the variable ({e})",
            variable(token_ref)
        )),
        other => other,
    }
}

/// The client a system syncs with: the worker's own for `token_ref` NULL, else one with the token
/// of the variable it names. A variable that is not set (or empty) is `invalid_config` naming it;
/// a token whose last check found it expired or revoked (or whose expiry has passed) fails the
/// run at once, before any call to Meta.
pub async fn client_for(ctx: &SyncContext, token_ref: Option<&str>) -> Result<MetaClient, Outcome> {
    let name = variable(token_ref);
    let (token, meta) =
        token_client(ctx, name).map_err(|e| Outcome::InvalidConfig(e.to_string()))?;
    let last = match ctx.pool.get().await {
        Ok(db) => store::last_check(&**db, name, &fingerprint(&token)).await,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the last token check");
            return Ok(meta);
        }
    };
    match last {
        Ok(Some(check)) => match check.refusal(name, Utc::now()) {
            Some(refused) => Err(Outcome::Failed(refused)),
            None => Ok(meta),
        },
        Ok(None) => Ok(meta),
        Err(e) => {
            tracing::warn!(error = %crate::db::error_text(&e), "could not read the last token check");
            Ok(meta)
        }
    }
}
