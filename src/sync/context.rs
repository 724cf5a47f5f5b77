//! What every sync needs from the worker, built once at start-up and cloned into each run.
use std::sync::Arc;

use anyhow::Context;

use crate::configuration::Settings;
use crate::db::{self, Pool};
use crate::meta::MetaClient;

/// The worker's shared parts, cheap to clone: a run takes its own copy (with the system's own
/// Meta client when its `token_ref` names one, see [`super::tokens::client_for`]).
#[derive(Clone)]
pub struct SyncContext {
    pub pool: Pool,
    pub meta: MetaClient,
    pub settings: Arc<Settings>,
    /// Names this worker in leases and run rows (`WORKER_ID`, else host and process id).
    pub worker_id: String,
    /// The operator's extraction query (`EXTRACT_SQL_FILE`); `None`: the default query, built for
    /// each run from the CDP's columns (see [`super::source`]).
    pub extract_sql: Option<Arc<str>>,
    /// Posts alerts (see [`super::alerts`]).
    pub alerts_http: reqwest::Client,
}

/// Builds the context from settings (pool, Meta client, extraction SQL).
pub fn context(settings: Settings, meta: MetaClient) -> anyhow::Result<SyncContext> {
    // The normalization rules' tables are built beside the connecting and the calls to Meta
    // that come first, not by the first rows hashed (see `identity::prepare`).
    std::thread::spawn(crate::identity::prepare);
    let pool = db::connect_pool(&settings.database)?;
    let extract_sql = super::extract::load_sql(&settings.worker.extract_sql_file)
        .context("Failed to load the extraction query")?;
    Ok(SyncContext {
        pool,
        meta,
        worker_id: settings.worker.worker_id(),
        settings: Arc::new(settings),
        extract_sql: extract_sql.map(Into::into),
        alerts_http: reqwest::Client::new(),
    })
}
