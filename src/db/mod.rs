//! Postgres: the connection pool, migrations, and one module of queries per table we own.
pub mod audiences;
pub mod configurations;
pub mod error;
pub mod ledger;
pub mod migrate;
pub mod notify;
pub mod pool;
pub mod runs;
pub mod status;
pub mod token_checks;

pub use error::{describe, error_text};
pub use pool::{Pool, cancel_query, connect_pool, connect_single, database_answers, tls_connector};

/// Which audience's ledger rows a statement reads or writes: a system's own audience or one of
/// its definitions. Every ledger statement filters on both columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerScope {
    pub configuration_id: i32,
    pub definition_id: i32,
}
