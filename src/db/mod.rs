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

pub use error::{describe, error_text};
pub use pool::{Pool, cancel_query, connect_pool, connect_single, database_answers, tls_connector};
