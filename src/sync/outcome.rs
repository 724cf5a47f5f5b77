//! What a run is asked to do and how it ended, for the status columns, metrics and callers.
/// Why the run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Manual,
    Once,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Once => "once",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Synced, but removals were held by the guard, replace was refused, or Meta reports a
    /// problem with the audience (see [`super::readback`]).
    Partial,
    Failed(String),
    InvalidConfig(String),
    Interrupted,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::Failed(_) => "failed",
            Outcome::InvalidConfig(_) => "invalid_config",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// The summary of one run, for logs, metrics and callers.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub system_name: String,
    pub run_id: Option<i64>,
    pub outcome: Outcome,
    pub added: i64,
    pub removed: i64,
    pub members: i64,
}

/// How one audience's pipeline ended (see [`super::run::execute`]).
#[derive(Debug)]
pub struct Synced {
    pub outcome: Outcome,
    pub added: i64,
    pub removed: i64,
    pub members: i64,
    /// Why the run is partial (held removals, a refused replace, Meta's word on the audience).
    pub why_partial: Option<String>,
}
