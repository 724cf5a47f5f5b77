//! The run's session tables, on the staging connection (they go with the session):
//!
//! * `sync_stage`: the staged source set, one row per candidate (see [`super::stage`]); the diff
//!   adds its plan columns (`action`, `old_cells`, `old_match_keys`, `upload`; see
//!   [`super::diff`]) and the upload reads the rows marked `upload`;
//! * `sync_gone`: the keys of ledger members whose source customer changed or left;
//! * `sync_removes`: the ledger rows to remove, numbered for the removal batches.
use anyhow::Context;

/// The staging table's columns, in the order the staging COPY sends them.
pub const STAGE_COPY: &str =
    "COPY sync_stage (seq, member_key, cells, filled, tenant_id, customer_id,
                                     digest, invalid_keys, filled_keys, maybe_dup)
                  FROM STDIN (FORMAT binary)";

/// Creates an empty `sync_stage` (dropping one a previous run left).
pub async fn create_stage(stage: &tokio_postgres::Client) -> anyhow::Result<()> {
    stage
        .batch_execute(
            "DROP TABLE IF EXISTS pg_temp.sync_stage;
             CREATE TEMP TABLE sync_stage (seq BIGINT NOT NULL, member_key BYTEA NOT NULL, cells BYTEA,
                 filled SMALLINT, tenant_id INTEGER, customer_id BIGINT, digest BIGINT, invalid_keys INTEGER,
                 filled_keys INTEGER, maybe_dup BOOLEAN NOT NULL);",
        )
        .await
        .context("Failed to create the staging table")
}

/// Turns the filled staging table into the plan: its key and plan columns, `sync_removes`, and
/// `sync_gone` (filled from the staged rows without cells when `any_gone`), then fresh statistics.
pub async fn create_plan(stage: &tokio_postgres::Client, any_gone: bool) -> anyhow::Result<()> {
    let gone = if any_gone {
        "CREATE TEMP TABLE sync_gone AS SELECT DISTINCT member_key FROM sync_stage WHERE cells IS NULL;
         UPDATE sync_stage SET upload = false, action = 'gone' WHERE cells IS NULL;"
    } else {
        "CREATE TEMP TABLE sync_gone (member_key BYTEA);"
    };
    stage
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS pg_temp.sync_gone, pg_temp.sync_removes;
             ALTER TABLE sync_stage ADD PRIMARY KEY (seq), ADD COLUMN action TEXT,
                 ADD COLUMN old_cells BYTEA, ADD COLUMN old_match_keys TEXT,
                 ADD COLUMN upload BOOLEAN NOT NULL DEFAULT true;
             CREATE TEMP TABLE sync_removes (seq BIGINT PRIMARY KEY, match_keys TEXT NOT NULL,
                 member_key BYTEA NOT NULL, cells BYTEA NOT NULL);
             {gone}
             ANALYZE sync_stage;"
        ))
        .await
        .context("Failed to index the staged members")
}

/// Drops the staging and plan tables.
pub async fn drop(stage: &tokio_postgres::Client) -> anyhow::Result<()> {
    stage
        .batch_execute(
            "DROP TABLE IF EXISTS pg_temp.sync_stage, pg_temp.sync_gone, pg_temp.sync_removes",
        )
        .await
        .context("Failed to drop the plan tables")
}
