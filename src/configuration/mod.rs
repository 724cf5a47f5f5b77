//! Settings: `config/default.toml` (embedded in the binary) overlaid by environment variables.
//!
//! Every setting has one environment variable (listed in the README); a value that is missing
//! where it is needed, or that does not parse, is a [`ConfigError`] naming the variable and what
//! it accepts, which `main` prints on one line before exiting with status 2.
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

use crate::secret::SecretString;

pub mod named_tokens;
mod variables;
pub use variables::{VARIABLES, is_webhook_url};

const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// A setting that is missing or does not parse: names the variable and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(variable: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub meta: MetaSettings,
    pub worker: WorkerSettings,
    /// `FACEBOOK_ACCESS_TOKEN_*`: the tokens systems may name in `token_ref`.
    #[serde(skip)]
    pub tokens: named_tokens::NamedTokens,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`; holds a password, hence secret.
    #[serde(deserialize_with = "secret_from_string")]
    pub url: SecretString,
    pub pool_size: usize,
    pub connect_timeout_secs: u64,
    /// Longest a statement may run. The longest the worker sends is the COPY that stages a
    /// system's customers, which lasts as long as the extraction (over a minute at 10M customers).
    pub statement_timeout_secs: u64,
    /// Longest a statement waits for a lock (an operator's open transaction on the configuration
    /// table, a `LOCK TABLE`): the run fails and is retried, instead of hanging.
    pub lock_timeout_secs: u64,
    /// A session left idle inside a transaction this long is ended by the server.
    pub idle_in_transaction_timeout_secs: u64,
    /// `PG_CA_CERT`: a PEM file to verify the server's certificate against; empty: encrypt
    /// without verification when the server offers TLS (see [`crate::db::tls_connector`]).
    #[serde(default)]
    pub ca_cert: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetaSettings {
    pub graph_url: String,
    pub api_version: String,
    /// `FACEBOOK_ACCESS_TOKEN`: needed only by commands that call Meta.
    #[serde(skip)]
    pub access_token: Option<SecretString>,
    /// `FACEBOOK_APP_SECRET`: when set, every call carries `appsecret_proof`.
    #[serde(skip)]
    pub app_secret: Option<SecretString>,
    pub request_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub retry_max_attempts: u32,
    pub retry_min_delay_ms: u64,
    pub retry_max_delay_secs: u64,
    pub retry_max_elapsed_secs: u64,
    pub throttle_max_wait_secs: u64,
}

impl MetaSettings {
    /// The token, or the error that tells the operator to set it.
    pub fn require_access_token(&self) -> Result<SecretString, ConfigError> {
        self.access_token.clone().ok_or_else(|| {
            ConfigError::new(
                "FACEBOOK_ACCESS_TOKEN",
                "missing; set it to a Meta system-user access token",
            )
        })
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    pub fn retry_min_delay(&self) -> Duration {
        Duration::from_millis(self.retry_min_delay_ms)
    }
    pub fn retry_max_delay(&self) -> Duration {
        Duration::from_secs(self.retry_max_delay_secs)
    }
    pub fn retry_max_elapsed(&self) -> Duration {
        Duration::from_secs(self.retry_max_elapsed_secs)
    }
    pub fn throttle_max_wait(&self) -> Duration {
        Duration::from_secs(self.throttle_max_wait_secs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    Scheduler,
    Once,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WorkerMode {
    Facebook,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub mode: WorkerMode,
    pub run_mode: RunMode,
    #[serde(deserialize_with = "timezone_from_string")]
    pub timezone: chrono_tz::Tz,
    pub port: u16,
    pub log_format: LogFormat,
    pub poll_interval_secs: u64,
    pub max_concurrent_systems: usize,
    pub lease_secs: u64,
    pub removal_guard_share: f64,
    /// Rows per upload call: Meta takes at most 10,000; smaller suits slow links (and tests).
    pub upload_batch_rows: usize,
    pub events_interval_secs: u64,
    pub shutdown_grace_secs: u64,
    pub extract_sql_file: String,
    /// `ALERT_WEBHOOK_URL`: where alerts go for systems without their own `alert_webhook_url`.
    /// A Slack webhook URL is its own secret.
    #[serde(skip)]
    pub alert_webhook_url: Option<SecretString>,
    /// `WORKER_ID`: names this worker in leases and run rows; empty: host name and process id.
    #[serde(default)]
    pub worker_id: String,
}

impl WorkerSettings {
    /// `WORKER_ID`, else host name and process id (unique among workers sharing a database).
    pub fn worker_id(&self) -> String {
        if !self.worker_id.is_empty() {
            return self.worker_id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "worker".into());
        format!("{host}:{}", std::process::id())
    }
}

impl Settings {
    /// Defaults overlaid by the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_env(&std::env::vars().collect())
    }

    /// Defaults overlaid by the given variables (tests pass their own map).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut settings: Settings = toml::from_str(DEFAULT_TOML)
            .map_err(|e| ConfigError::new("config/default.toml", e.to_string()))?;
        settings.apply_env(env)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Each variable of [`VARIABLES`] that is set (and not blank) overrides its setting.
    fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        for (name, apply) in VARIABLES {
            if let Some(value) = env.get(*name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                apply(self, value).map_err(|problem| ConfigError::new(*name, problem))?;
            }
        }
        self.tokens = named_tokens::NamedTokens::from_env(env);
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        use crate::secret::ExposeSecret;
        if !(1..=64).contains(&self.database.pool_size) {
            return Err(ConfigError::new(
                "DATABASE_POOL_SIZE",
                "expected a whole number from 1 to 64",
            ));
        }
        if !(1..=64).contains(&self.worker.max_concurrent_systems) {
            return Err(ConfigError::new(
                "SCHEDULER_MAX_CONCURRENT",
                "expected a whole number from 1 to 64",
            ));
        }
        // A run holds its staging and extraction connections and briefly takes a third (ledger
        // batches of a first sync, lease renewals); the claim and the event pump need theirs.
        let needed = 3 * self.worker.max_concurrent_systems + 2;
        if self.database.pool_size < needed {
            return Err(ConfigError::new(
                "DATABASE_POOL_SIZE",
                format!(
                    "expected at least {needed} (3 per system synced at once, SCHEDULER_MAX_CONCURRENT = {}, and 2 more)",
                    self.worker.max_concurrent_systems
                ),
            ));
        }
        if !(1..=10_000).contains(&self.worker.upload_batch_rows) {
            return Err(ConfigError::new(
                "UPLOAD_BATCH_ROWS",
                "expected a whole number from 1 to 10000",
            ));
        }
        if !(0.0..=1.0).contains(&self.worker.removal_guard_share) {
            return Err(ConfigError::new(
                "REMOVAL_GUARD_SHARE",
                "expected a share from 0 to 1, such as 0.2",
            ));
        }
        if self.worker.poll_interval_secs == 0 || self.worker.events_interval_secs == 0 {
            return Err(ConfigError::new(
                "SCHEDULER_INTERVAL_SECS",
                "expected at least 1 second",
            ));
        }
        if self.worker.lease_secs < 30 {
            return Err(ConfigError::new(
                "LEASE_SECS",
                "expected at least 30 seconds",
            ));
        }
        if self.meta.retry_max_attempts == 0 {
            return Err(ConfigError::new(
                "META_RETRY_MAX_ATTEMPTS",
                "expected at least 1",
            ));
        }
        let url = self.database.url.expose_secret();
        if url.parse::<tokio_postgres::Config>().is_err() {
            // Never echo the URL: it carries the password.
            return Err(ConfigError::new(
                "DATABASE_URL",
                "not a valid connection string; expected postgres://user:password@host:port/database[?sslmode=disable|prefer|require]",
            ));
        }
        if !(self.meta.graph_url.starts_with("http://")
            || self.meta.graph_url.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "META_GRAPH_URL",
                "expected an http:// or https:// URL",
            ));
        }
        let v = &self.meta.api_version;
        let well_formed = v.len() > 1
            && v.starts_with('v')
            && v[1..]
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !well_formed {
            return Err(ConfigError::new(
                "META_API_VERSION",
                format!("'{v}' is not accepted; expected a Graph API version such as v27.0"),
            ));
        }
        Ok(())
    }
}

fn secret_from_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    Ok(SecretString::from(String::deserialize(d)?))
}

fn timezone_from_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<chrono_tz::Tz, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

impl fmt::Display for RunMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_possible_value() {
            Some(value) => f.write_str(value.get_name()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_embedded_defaults_load_without_any_environment() {
        let s = Settings::from_env(&HashMap::new()).unwrap();
        assert_eq!(s.meta.api_version, "v27.0");
        assert_eq!(s.meta.graph_url, "https://graph.facebook.com");
        assert_eq!(s.worker.run_mode, RunMode::Scheduler);
        assert!(s.meta.access_token.is_none());
    }

    #[test]
    fn environment_variables_override_the_defaults() {
        let s = Settings::from_env(&env(&[
            ("RUN_MODE", "once"),
            ("TZ", "America/Argentina/Buenos_Aires"),
            ("PORT", "9000"),
            ("META_GRAPH_URL", "http://127.0.0.1:1234/"),
            ("FACEBOOK_ACCESS_TOKEN", "tok"),
        ]))
        .unwrap();
        assert_eq!(s.worker.run_mode, RunMode::Once);
        assert_eq!(
            s.worker.timezone,
            chrono_tz::America::Argentina::Buenos_Aires
        );
        assert_eq!(s.worker.port, 9000);
        assert_eq!(s.meta.graph_url, "http://127.0.0.1:1234");
        assert!(s.meta.require_access_token().is_ok());
    }

    #[test]
    fn a_pool_too_small_for_the_concurrency_is_refused_with_the_size_it_needs() {
        let e = Settings::from_env(&env(&[
            ("SCHEDULER_MAX_CONCURRENT", "5"),
            ("DATABASE_POOL_SIZE", "12"),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "DATABASE_POOL_SIZE");
        assert!(e.problem.contains("at least 17"), "{}", e.problem);
        assert!(
            Settings::from_env(&env(&[
                ("SCHEDULER_MAX_CONCURRENT", "5"),
                ("DATABASE_POOL_SIZE", "17"),
            ]))
            .is_ok()
        );
    }

    #[test]
    fn an_unparsable_value_names_the_variable_and_what_it_accepts() {
        let e = Settings::from_env(&env(&[("RUN_MODE", "sometimes")])).unwrap_err();
        assert_eq!(e.variable, "RUN_MODE");
        assert!(e.to_string().contains("scheduler or once"), "{e}");
        let e = Settings::from_env(&env(&[("PORT", "eighty")])).unwrap_err();
        assert_eq!(e.variable, "PORT");
        let e = Settings::from_env(&env(&[("TZ", "Mars/Olympus")])).unwrap_err();
        assert_eq!(e.variable, "TZ");
        let e = Settings::from_env(&env(&[("REMOVAL_GUARD_SHARE", "2")])).unwrap_err();
        assert_eq!(e.variable, "REMOVAL_GUARD_SHARE");
        let e = Settings::from_env(&env(&[("META_API_VERSION", "latest")])).unwrap_err();
        assert_eq!(e.variable, "META_API_VERSION");
    }

    #[test]
    fn a_bad_database_url_is_reported_without_echoing_its_password() {
        let e = Settings::from_env(&env(&[(
            "DATABASE_URL",
            "postgres://u:hunter2@h:notaport/db",
        )]))
        .unwrap_err();
        assert_eq!(e.variable, "DATABASE_URL");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn a_missing_access_token_is_reported_when_required() {
        let s = Settings::from_env(&HashMap::new()).unwrap();
        let e = s.meta.require_access_token().unwrap_err();
        assert_eq!(e.variable, "FACEBOOK_ACCESS_TOKEN");
    }

    #[test]
    fn settings_debug_output_does_not_show_secrets() {
        let s = Settings::from_env(&env(&[
            ("DATABASE_URL", "postgres://u:hunter2@localhost/db"),
            ("FACEBOOK_ACCESS_TOKEN", "EAAsecret"),
            ("FACEBOOK_APP_SECRET", "appsecret123"),
            (
                "ALERT_WEBHOOK_URL",
                "https://hooks.slack.com/services/T0/B0/hooksecret",
            ),
        ]))
        .unwrap();
        let shown = format!("{s:?}");
        for secret in ["hunter2", "EAAsecret", "appsecret123", "hooksecret"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
    }

    #[test]
    fn every_variable_read_is_in_the_readmes_table_and_a_bad_value_names_that_variable() {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README has a Configuration section");
        for (name, _) in VARIABLES {
            assert!(
                table.contains(&format!("`{name}`")),
                "{name} is not in the README's table"
            );
        }
        // A value that does not parse for one variable names that variable (not another).
        for (name, _) in VARIABLES {
            if let Err(e) = Settings::from_env(&env(&[(name, "\u{1}not a value")])) {
                assert_eq!(e.variable, *name, "{e}");
            }
        }
    }

    #[test]
    fn enum_values_are_read_in_any_case_and_the_error_lists_them() {
        let s =
            Settings::from_env(&env(&[("LOG_FORMAT", "Pretty"), ("RUN_MODE", "ONCE")])).unwrap();
        assert_eq!(s.worker.log_format, LogFormat::Pretty);
        assert_eq!(s.worker.run_mode, RunMode::Once);
        let e = Settings::from_env(&env(&[("LOG_FORMAT", "xml")])).unwrap_err();
        assert_eq!(e.problem, "'xml' is not accepted; expected json or pretty");
        assert_eq!(RunMode::Once.to_string(), "once");
    }

    #[test]
    fn an_alert_webhook_that_is_not_an_http_url_is_refused_naming_the_variable() {
        let e =
            Settings::from_env(&env(&[("ALERT_WEBHOOK_URL", "hooks.slack.com/x")])).unwrap_err();
        assert_eq!(e.variable, "ALERT_WEBHOOK_URL");
        assert!(e.problem.contains("http"), "{}", e.problem);
    }
}
