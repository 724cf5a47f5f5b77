//! Logging: one `tracing` subscriber, JSON (for Railway) or pretty (for people), to stderr so that
//! commands which print results (`status`, `normalize`) keep stdout clean.
//!
//! `RUST_LOG` chooses the levels, with one limit it cannot lift: the database driver and the HTTP
//! stack log at most `info`. At `debug` they print what crosses the wire — tokio-postgres every
//! query's parameters (raw emails and phones during `events import`), the HTTP stack its
//! requests — and personal data and tokens never go to the log.
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::configuration::LogFormat;

/// Crates whose `debug` and `trace` output carries request data.
const WIRE_CRATES: &[&str] = &[
    "tokio_postgres",
    "postgres_protocol",
    "deadpool_postgres",
    "reqwest",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
];

/// The limit on the wire crates, whatever `RUST_LOG` says.
pub fn wire_limit() -> Targets {
    WIRE_CRATES.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, name| t.with_target(*name, LevelFilter::INFO),
    )
}

/// Installs the global subscriber, writing to `writer` (the binary: stderr; tests: their own
/// output when `TEST_LOG` is set). `RUST_LOG` filters (default `info`). Safe to call twice.
pub fn init<W>(format: LogFormat, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(wire_limit());
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let _ = match format {
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_current_span(true))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt.compact()).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn the_database_driver_is_held_at_info_while_our_own_code_may_log_debug() {
        let limit = wire_limit();
        assert!(!limit.would_enable("tokio_postgres::query", &Level::DEBUG));
        assert!(!limit.would_enable("hyper_util::client", &Level::TRACE));
        assert!(limit.would_enable("tokio_postgres::query", &Level::INFO));
        assert!(limit.would_enable("cdp_meta_sync::sync", &Level::DEBUG));
    }
}
