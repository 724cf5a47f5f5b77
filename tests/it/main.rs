//! Integration tests against a real Postgres (and the Meta sandbox): one binary, a module per area.
mod cli;
mod demo;
mod digest;
mod events_faults;
mod events_import;
mod events_pump;
mod incremental;
mod migrations;
mod original_schema;
mod pipeline;
mod poison;
mod replace;
mod resume;
mod scheduler;
mod support;
mod takeover;
mod world;
