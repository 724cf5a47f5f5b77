//! Alerts: one Slack-compatible message (`{"text": …}`) when a system goes from healthy to
//! `failed`, `invalid_config` or `partial`, and one when it recovers; nothing while it stays
//! where it is. The webhook is the system's `alert_webhook_url`, else `ALERT_WEBHOOK_URL`.
//!
//! A message names the system, its status and its last error, which never holds personal data
//! or tokens (see [`crate::db::error`]); the URL itself is a secret and is never logged. Delivery
//! happens after the outcome is recorded and the lease released, three tries with backoff within
//! 15 s: a slow or broken webhook never holds up a sync, and a `run --once` still sends before it
//! exits.
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::db::configurations::SystemRow;
use crate::secret::{ExposeSecret, SecretString};
use crate::sync::{Outcome, RunReport, SyncContext};

/// Sends the alert a run's outcome calls for, if the system has a webhook (its own, else
/// `ALERT_WEBHOOK_URL`) and its health changed since its last finished run. `held`: the note a
/// partial run wrote to `error_log`.
pub async fn after_run(ctx: &SyncContext, row: &SystemRow, report: &RunReport, held: Option<&str>) {
    let (Some(run_id), Some(url)) = (
        report.run_id,
        row.alert_webhook_url
            .as_ref()
            .or(ctx.settings.worker.alert_webhook_url.as_ref()),
    ) else {
        return;
    };
    let previous = async {
        let client = ctx.pool.get().await?;
        anyhow::Ok(crate::db::runs::previous_outcome(&**client, row.id, run_id).await?)
    };
    let previous = match previous.await {
        Ok(previous) => previous,
        Err(e) => {
            tracing::warn!(system = %row.system_name, error = %crate::db::describe(&e), "no alert: the previous outcome could not be read");
            return;
        }
    };
    let error = match &report.outcome {
        Outcome::Failed(e) | Outcome::InvalidConfig(e) => Some(e.as_str()),
        _ => held,
    };
    if let Some(change) = change(previous.as_deref(), &report.outcome, error) {
        tracing::info!(system = %row.system_name, ?change, "sending an alert");
        deliver(&ctx.alerts_http, url, message(&row.system_name, &change)).await;
    }
}

/// What changed between a system's previous finished run and this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Healthy before (or never run), now `failed`, `invalid_config` or `partial`.
    Broke { status: &'static str, error: String },
    /// Unhealthy before, `success` now.
    Recovered { was: String },
}

fn unhealthy(status: &str) -> bool {
    matches!(status, "failed" | "invalid_config" | "partial")
}

/// The change to report, if any. `previous`: the outcome of the system's last finished run
/// before this one (`None` for its first). An interrupted run changes nothing.
pub fn change(previous: Option<&str>, now: &Outcome, error: Option<&str>) -> Option<Change> {
    let was_unhealthy = previous.is_some_and(unhealthy);
    match now {
        Outcome::Interrupted => None,
        Outcome::Success if was_unhealthy => Some(Change::Recovered {
            was: previous.unwrap_or_default().to_string(),
        }),
        Outcome::Success => None,
        _ if was_unhealthy => None,
        _ => Some(Change::Broke {
            status: now.as_str(),
            error: error.unwrap_or_default().to_string(),
        }),
    }
}

/// The message for `change` of `system`, as Slack's incoming webhooks take it.
pub fn message(system: &str, change: &Change) -> serde_json::Value {
    let text = match change {
        Change::Broke { status, error } if error.is_empty() => {
            format!("cdp-meta-sync: {system} is {status}")
        }
        Change::Broke { status, error } => {
            let error: String = error.chars().take(500).collect();
            format!("cdp-meta-sync: {system} is {status}: {error}")
        }
        Change::Recovered { was } => format!("cdp-meta-sync: {system} recovered (was {was})"),
    };
    serde_json::json!({ "text": text })
}

/// Posts `body` to `url`, three tries with backoff, 15 s in all; failures are logged without the
/// URL.
pub async fn deliver(client: &reqwest::Client, url: &SecretString, body: serde_json::Value) {
    if tokio::time::timeout(Duration::from_secs(15), try_deliver(client, url, body))
        .await
        .is_err()
    {
        tracing::warn!("the alert could not be delivered in 15 s");
    }
}

async fn try_deliver(client: &reqwest::Client, url: &SecretString, body: serde_json::Value) {
    let send = || async {
        client
            .post(url.expose_secret())
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await?
            .error_for_status()
            .map(|_| ())
    };
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(2);
    if let Err(e) = send.retry(policy).await {
        // reqwest's error text names the URL: only its kind and status go to the log.
        let status = e.status().map(|s| s.as_u16());
        tracing::warn!(
            ?status,
            timeout = e.is_timeout(),
            "the alert could not be delivered"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_system_that_fails_or_is_partial_or_misconfigured_alerts_once() {
        for now in [
            Outcome::Failed("Meta error 190".into()),
            Outcome::Partial,
            Outcome::InvalidConfig("ad_account_id".into()),
        ] {
            for previous in [None, Some("success")] {
                assert!(
                    matches!(
                        change(previous, &now, Some("x")),
                        Some(Change::Broke { .. })
                    ),
                    "{previous:?} → {now:?}"
                );
            }
            // Still broken: no second message.
            assert_eq!(change(Some("failed"), &now, Some("x")), None);
        }
    }

    #[test]
    fn a_recovery_alerts_once_and_an_interrupted_run_never() {
        assert_eq!(
            change(Some("partial"), &Outcome::Success, None),
            Some(Change::Recovered {
                was: "partial".into()
            })
        );
        assert_eq!(change(Some("success"), &Outcome::Success, None), None);
        assert_eq!(change(None, &Outcome::Success, None), None);
        assert_eq!(change(Some("success"), &Outcome::Interrupted, None), None);
        assert_eq!(change(Some("failed"), &Outcome::Interrupted, None), None);
    }

    #[test]
    fn the_message_is_slack_text_with_the_error_cut_to_500_characters() {
        let m = message(
            "kangoo_system",
            &Change::Broke {
                status: "failed",
                error: "e".repeat(900),
            },
        );
        let text = m["text"].as_str().unwrap();
        assert!(text.starts_with("cdp-meta-sync: kangoo_system is failed: eee"));
        assert_eq!(
            text.chars().count(),
            "cdp-meta-sync: kangoo_system is failed: ".len() + 500
        );
        assert_eq!(
            message(
                "s",
                &Change::Recovered {
                    was: "failed".into()
                }
            )["text"],
            "cdp-meta-sync: s recovered (was failed)"
        );
    }
}
