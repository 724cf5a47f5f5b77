//! Integration tests against a real Postgres (and the Meta sandbox): one binary, a module per area.
mod cli;
mod demo;
mod events_import;
mod migrations;
mod support;
