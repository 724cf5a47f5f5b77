//! Logging: one `tracing` subscriber, JSON (for Railway) or pretty (for people), to stderr so that
//! commands which print results (`status`, `normalize`) keep stdout clean.
use tracing_subscriber::EnvFilter;

use crate::configuration::LogFormat;

/// Installs the global subscriber. `RUST_LOG` filters (default `info`). Safe to call twice.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
