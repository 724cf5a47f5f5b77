//! Why a sync stopped short. Every step of the pipeline returns a [`SyncError`], so `?` carries
//! it to the end of the run, where it becomes the run's [`Outcome`] (and its `error_log` text).
use super::lease::{LeaseLost, is_lease_lost};
use super::outcome::Outcome;
use super::session_sender::UploadError;
use super::stage::StageError;
use crate::db;
use crate::meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The configuration cannot work as written (`invalid_config`): the text says what to fix.
    #[error("{0}")]
    Config(String),
    /// Meta refused a call, after the client's own retries.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Another worker holds the system now: this run must not write anything more.
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
    /// The database, or anything else; described without the values Postgres quotes.
    #[error("{}", db::describe(.0))]
    Other(anyhow::Error),
}

impl SyncError {
    /// Problems with the configuration, as one `invalid_config` text.
    pub fn config(problems: Vec<String>) -> Self {
        SyncError::Config(problems.join("; "))
    }
}

impl From<anyhow::Error> for SyncError {
    fn from(e: anyhow::Error) -> Self {
        if is_lease_lost(&e) {
            SyncError::LeaseLost(LeaseLost)
        } else {
            SyncError::Other(e)
        }
    }
}

impl From<tokio_postgres::Error> for SyncError {
    fn from(e: tokio_postgres::Error) -> Self {
        anyhow::Error::from(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for SyncError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        SyncError::Other(anyhow::Error::from(e).context("database unavailable"))
    }
}

impl From<UploadError> for SyncError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Meta(m) => SyncError::Meta(m),
            UploadError::LeaseLost(lost) => SyncError::LeaseLost(lost),
            UploadError::Other(o) => o.into(),
        }
    }
}

impl From<StageError> for SyncError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Columns(problems) => SyncError::config(problems),
            StageError::Interrupted => SyncError::Other(anyhow::anyhow!("interrupted")),
            StageError::Other(o) => o.into(),
        }
    }
}

impl From<SyncError> for Outcome {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Config(why) => Outcome::InvalidConfig(why),
            failed => Outcome::Failed(failed.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_problem_is_invalid_config_and_everything_else_failed() {
        let config = SyncError::config(vec!["no tenant_ids".into(), "no match_keys".into()]);
        assert_eq!(
            Outcome::from(config),
            Outcome::InvalidConfig("no tenant_ids; no match_keys".into())
        );
        let lost: SyncError = anyhow::Error::from(LeaseLost)
            .context("writing a batch")
            .into();
        assert!(matches!(lost, SyncError::LeaseLost(_)), "{lost:?}");
        assert_eq!(Outcome::from(lost), Outcome::Failed(LeaseLost.to_string()));
        let other: SyncError = anyhow::anyhow!("disk full")
            .context("Failed to stage")
            .into();
        assert_eq!(
            Outcome::from(other),
            Outcome::Failed("Failed to stage: disk full".into())
        );
    }
}
