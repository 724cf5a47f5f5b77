//! One system's audience sync: from the CDP's customers to a Meta Custom Audience equal to them.
//!
//! [`sync_system`] (in `attempt.rs`) runs one claimed system: its run row and lease around the
//! pipeline of `run.rs`, whose stages are the files below, then the bookkeeping of `record.rs`.
pub mod alerts;
mod attempt;
pub mod audience;
mod audience_runs;
pub mod cells;
mod changes;
pub mod consent;
mod context;
pub mod copy;
pub mod definition;
mod diff;
pub mod digest;
pub mod dry_run;
mod error;
pub mod extract;
mod first_sync;
pub mod guard;
mod guarded;
pub mod lease;
pub mod member;
mod new_members;
mod outcome;
mod plan_tables;
mod query;
pub mod readback;
mod record;
pub mod rejections;
mod run;
pub mod seen_keys;
mod send;
mod session_sender;
mod sessions;
pub mod source;
pub mod stage;
pub mod system;
pub mod tokens;
mod upload;

pub use attempt::sync_system;
pub use context::{SyncContext, context};
pub use error::SyncError;
pub use outcome::{Outcome, RunReport, Trigger};
