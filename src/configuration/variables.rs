//! The environment variables, as data: each name and where its value goes in [`Settings`].
use std::str::FromStr;

use clap::ValueEnum;

use super::Settings;
use crate::secret::SecretString;

/// Puts one variable's value (trimmed, not blank) into the settings, or says what it accepts.
type Apply = fn(&mut Settings, &str) -> Result<(), String>;

/// Every environment variable read into [`Settings`] (the README's "Configuration" table lists
/// the same), and where its value goes. `FACEBOOK_ACCESS_TOKEN_*` are read apart, as a family.
pub const VARIABLES: &[(&str, Apply)] = &[
    ("DATABASE_URL", |s, v| {
        s.database.url = SecretString::from(v.to_string());
        Ok(())
    }),
    ("DATABASE_POOL_SIZE", |s, v| {
        parse(v, "a whole number from 1 to 64", &mut s.database.pool_size)
    }),
    ("DATABASE_CONNECT_TIMEOUT_SECS", |s, v| {
        parse(v, SECONDS, &mut s.database.connect_timeout_secs)
    }),
    ("DATABASE_STATEMENT_TIMEOUT_SECS", |s, v| {
        parse(v, SECONDS, &mut s.database.statement_timeout_secs)
    }),
    ("DATABASE_LOCK_TIMEOUT_SECS", |s, v| {
        parse(v, SECONDS, &mut s.database.lock_timeout_secs)
    }),
    ("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECS", |s, v| {
        parse(v, SECONDS, &mut s.database.idle_in_transaction_timeout_secs)
    }),
    ("META_GRAPH_URL", |s, v| {
        s.meta.graph_url = v.trim_end_matches('/').to_string();
        Ok(())
    }),
    ("META_API_VERSION", |s, v| {
        s.meta.api_version = v.to_string();
        Ok(())
    }),
    ("FACEBOOK_ACCESS_TOKEN", |s, v| {
        s.meta.access_token = Some(SecretString::from(v.to_string()));
        Ok(())
    }),
    ("FACEBOOK_APP_SECRET", |s, v| {
        s.meta.app_secret = Some(SecretString::from(v.to_string()));
        Ok(())
    }),
    ("META_REQUEST_TIMEOUT_SECS", |s, v| {
        parse(v, SECONDS, &mut s.meta.request_timeout_secs)
    }),
    ("META_CONNECT_TIMEOUT_SECS", |s, v| {
        parse(v, SECONDS, &mut s.meta.connect_timeout_secs)
    }),
    ("META_RETRY_MAX_ATTEMPTS", |s, v| {
        parse(
            v,
            "a whole number of attempts",
            &mut s.meta.retry_max_attempts,
        )
    }),
    ("META_RETRY_MIN_DELAY_MS", |s, v| {
        parse(
            v,
            "a whole number of milliseconds",
            &mut s.meta.retry_min_delay_ms,
        )
    }),
    ("META_RETRY_MAX_DELAY_SECS", |s, v| {
        parse(v, SECONDS, &mut s.meta.retry_max_delay_secs)
    }),
    ("META_RETRY_MAX_ELAPSED_SECS", |s, v| {
        parse(v, SECONDS, &mut s.meta.retry_max_elapsed_secs)
    }),
    ("META_THROTTLE_MAX_WAIT_SECS", |s, v| {
        parse(v, SECONDS, &mut s.meta.throttle_max_wait_secs)
    }),
    ("WORKER_MODE", |s, v| choice(v, &mut s.worker.mode)),
    ("RUN_MODE", |s, v| choice(v, &mut s.worker.run_mode)),
    ("TZ", |s, v| {
        // A leading ':' is the POSIX "read from the tz database" form (TZ=:America/Bogota).
        s.worker.timezone = v.trim_start_matches(':').parse().map_err(|_| {
            format!("'{v}' is not accepted; expected an IANA time zone such as America/Argentina/Buenos_Aires or UTC")
        })?;
        Ok(())
    }),
    ("PORT", |s, v| {
        parse(v, "a port number from 0 to 65535", &mut s.worker.port)
    }),
    ("LOG_FORMAT", |s, v| choice(v, &mut s.worker.log_format)),
    ("SCHEDULER_INTERVAL_SECS", |s, v| {
        parse(v, SECONDS, &mut s.worker.poll_interval_secs)
    }),
    ("SCHEDULER_MAX_CONCURRENT", |s, v| {
        parse(
            v,
            "a whole number from 1 to 64",
            &mut s.worker.max_concurrent_systems,
        )
    }),
    ("LEASE_SECS", |s, v| {
        parse(v, SECONDS, &mut s.worker.lease_secs)
    }),
    ("REMOVAL_GUARD_SHARE", |s, v| {
        parse(
            v,
            "a share from 0 to 1, such as 0.2",
            &mut s.worker.removal_guard_share,
        )
    }),
    ("UPLOAD_BATCH_ROWS", |s, v| {
        parse(
            v,
            "a whole number from 1 to 10000",
            &mut s.worker.upload_batch_rows,
        )
    }),
    ("EVENTS_INTERVAL_SECS", |s, v| {
        parse(v, SECONDS, &mut s.worker.events_interval_secs)
    }),
    ("SHUTDOWN_GRACE_SECS", |s, v| {
        parse(v, SECONDS, &mut s.worker.shutdown_grace_secs)
    }),
    ("PG_CA_CERT", |s, v| {
        s.database.ca_cert = v.to_string();
        Ok(())
    }),
    ("WORKER_ID", |s, v| {
        s.worker.worker_id = v.to_string();
        Ok(())
    }),
    ("EXTRACT_SQL_FILE", |s, v| {
        s.worker.extract_sql_file = v.to_string();
        Ok(())
    }),
    ("ALERT_WEBHOOK_URL", |s, v| {
        // The URL is a secret: the problem does not repeat it.
        if !is_webhook_url(v) {
            return Err("expected an http:// or https:// URL".to_string());
        }
        s.worker.alert_webhook_url = Some(SecretString::from(v.to_string()));
        Ok(())
    }),
];

const SECONDS: &str = "a whole number of seconds";

fn parse<T: FromStr>(v: &str, accepted: &str, target: &mut T) -> Result<(), String> {
    *target = v
        .parse()
        .map_err(|_| format!("'{v}' is not accepted; expected {accepted}"))?;
    Ok(())
}

/// One of an enum's values, in any case; the error lists them (`expected json or pretty`).
fn choice<E: ValueEnum>(v: &str, target: &mut E) -> Result<(), String> {
    *target = E::from_str(v, true).map_err(|_| {
        let names: Vec<String> = E::value_variants()
            .iter()
            .filter_map(|e| e.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        let expected = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        format!("'{v}' is not accepted; expected {expected}")
    })?;
    Ok(())
}

/// Whether `url` can be a webhook: http or https.
pub fn is_webhook_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_are_webhooks() {
        assert!(is_webhook_url("https://hooks.slack.com/services/T0/B0/x"));
        assert!(is_webhook_url("http://127.0.0.1:9/hook"));
        assert!(!is_webhook_url("hooks.slack.com/services"));
        assert!(!is_webhook_url("ftp://example.com/x"));
    }
}
