//! cdp-meta-sync: keeps Meta Custom Audiences and the Conversions API in step with a Postgres CDP.
pub mod cli;
pub mod commands;
pub mod configuration;
pub mod db;
pub mod demo;
pub mod events;
pub mod health;
pub mod http;
pub mod identity;
pub mod meta;
pub mod scheduler;
pub mod secret;
pub mod startup;
pub mod status;
pub mod sync;
pub mod telemetry;
pub mod tokens;
