//! One system's audience sync: from the CDP's customers to a Meta Custom Audience equal to them.
//! [`run::sync_system`] is the entry point; each step has its own file.
pub mod audience;
pub mod audience_runs;
pub mod cells;
pub mod consent;
pub mod copy;
pub mod definition;
pub mod diff;
pub mod digest;
pub mod dry_run;
pub mod extract;
pub mod guard;
pub mod lease;
pub mod member;
pub mod readback;
pub mod rejections;
pub mod run;
pub mod seen;
pub mod source;
pub mod stage;
pub mod stream;
pub mod system;
pub mod upload;

pub use run::{Outcome, RunReport, SyncContext, Trigger, sync_system};
