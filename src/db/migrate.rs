//! Versioned SQL migrations from `sql/`, embedded in the binary.
//!
//! Each file runs once, in its own transaction, and is recorded in `cdp.schema_migrations` with a
//! checksum. A session-level advisory lock serializes concurrent `migrate` runs (two replicas
//! starting together): the second waits, then finds nothing left to do. An applied migration
//! whose file has changed is an error: add a new migration instead of editing an old one.
//!
//! A database the original worker ran on already has `cdp.facebook_configurations` (the original
//! design's table, with its rows) and no record of migration 0001. Then 0001 is applied by
//! *adopting* the table: `sql/adopt/original_table.sql` brings it to 0001's shape in place, and
//! the rest of 0001 (everything after its CREATE TABLE of that table) runs as written, in the same
//! transaction; 0001 is recorded as applied, with its own checksum, and later migrations follow.
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// `(version, name, sql)` in order. Add new files here.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../../sql/0001_initial.sql")),
    (
        2,
        "conversion_events",
        include_str!("../../sql/0002_conversion_events.sql"),
    ),
    (
        3,
        "ledger_sources",
        include_str!("../../sql/0003_ledger_sources.sql"),
    ),
    (4, "adoption", include_str!("../../sql/0004_adoption.sql")),
    (
        5,
        "outbox_faults",
        include_str!("../../sql/0005_outbox_faults.sql"),
    ),
    (
        6,
        "lease_fence",
        include_str!("../../sql/0006_lease_fence.sql"),
    ),
    (7, "alerts", include_str!("../../sql/0007_alerts.sql")),
    (8, "token_ref", include_str!("../../sql/0008_token_ref.sql")),
    (
        9,
        "audience_health",
        include_str!("../../sql/0009_audience_health.sql"),
    ),
    (10, "consent", include_str!("../../sql/0010_consent.sql")),
    (11, "coverage", include_str!("../../sql/0011_coverage.sql")),
    (
        12,
        "rejections",
        include_str!("../../sql/0012_rejections.sql"),
    ),
    (
        13,
        "audience_definitions",
        include_str!("../../sql/0013_audience_definitions.sql"),
    ),
    (
        14,
        "ledger_partitions",
        include_str!("../../sql/0014_ledger_partitions.sql"),
    ),
    (
        15,
        "ledger_key_order",
        include_str!("../../sql/0015_ledger_key_order.sql"),
    ),
    (
        16,
        "ledger_load_defaults",
        include_str!("../../sql/0016_ledger_load_defaults.sql"),
    ),
    (
        17,
        "ledger_load_autovacuum",
        include_str!("../../sql/0017_ledger_load_autovacuum.sql"),
    ),
];

/// Upgrades the original design's table in place (see the module docs).
const ADOPT_ORIGINAL_TABLE: &str = include_str!("../../sql/adopt/original_table.sql");

/// Columns the worker cannot do without; an existing table without them is not the original
/// design's, and `migrate` refuses to touch it.
const ORIGINAL_IDENTITY_COLUMNS: [&str; 4] = ["id", "system_name", "ad_account_id", "tenant_ids"];

/// Arbitrary but fixed key for `pg_advisory_lock`: "cdpmeta" in ASCII.
const LOCK_KEY: i64 = 0x0063_6470_6d65_7461;

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<i32>,
    pub already_applied: usize,
    /// The original worker's table was upgraded in place (migration 0001 by adoption), with
    /// this many rows.
    pub adopted_rows: Option<i64>,
    /// Adopted rows whose `sync_status` was mapped: `(system_name, old value, new value)`.
    pub mapped_statuses: Vec<(String, String, String)>,
}

/// The oldest server the worker supports. Its SQL was written for PostgreSQL 14 and later (the
/// source digest used `hash_record_extended`, new in 14, until #17); nothing is tested on older
/// servers.
const MIN_SERVER_VERSION_NUM: i32 = 140_000;

/// Refuses a server older than [`MIN_SERVER_VERSION_NUM`] (`server_version_num`, e.g. 150004),
/// in one sentence naming both versions.
pub fn check_server_version(version_num: i32) -> anyhow::Result<()> {
    if version_num < MIN_SERVER_VERSION_NUM {
        bail!(
            "PostgreSQL {}.{} is too old: cdp-meta-sync needs PostgreSQL {} or later",
            version_num / 10_000,
            version_num % 10_000,
            MIN_SERVER_VERSION_NUM / 10_000
        );
    }
    Ok(())
}

pub async fn run(client: &mut tokio_postgres::Client) -> anyhow::Result<MigrationReport> {
    run_through(client, i32::MAX).await
}

/// Applies the pending migrations up to version `last` (a database as an older release left
/// it, to test an upgrade on).
pub async fn run_through(
    client: &mut tokio_postgres::Client,
    last: i32,
) -> anyhow::Result<MigrationReport> {
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .context("Failed to read the server version")?
        .get(0);
    check_server_version(version.trim().parse().unwrap_or(0))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .context("Failed to take the migration lock")?;
    let result = apply_pending(client, last).await;
    // Unlock even when a migration failed; the session ends soon after anyway.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let report = result?;
    unlocked.context("Failed to release the migration lock")?;
    Ok(report)
}

async fn apply_pending(
    client: &mut tokio_postgres::Client,
    last: i32,
) -> anyhow::Result<MigrationReport> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS cdp;
             CREATE TABLE IF NOT EXISTS cdp.schema_migrations (
                 version INTEGER PRIMARY KEY,
                 name TEXT NOT NULL,
                 checksum TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );",
        )
        .await
        .context("Failed to create cdp.schema_migrations")?;
    let rows = client
        .query("SELECT version, checksum FROM cdp.schema_migrations", &[])
        .await
        .context("Failed to read cdp.schema_migrations")?;
    let applied: std::collections::HashMap<i32, String> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();

    let mut report = MigrationReport {
        applied: Vec::new(),
        already_applied: 0,
        adopted_rows: None,
        mapped_statuses: Vec::new(),
    };
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 <= last) {
        let checksum = const_hex::encode(Sha256::digest(sql.as_bytes()));
        match applied.get(&version) {
            Some(existing) if *existing == checksum => {
                report.already_applied += 1;
                continue;
            }
            Some(_) => bail!(
                "migration {version:04}_{name} was changed after it was applied; add a new migration instead"
            ),
            None => {}
        }
        let tx = client.transaction().await?;
        if version == 1 && original_table_exists(&tx).await? {
            adopt_original_table(&tx, sql, &mut report).await?;
        } else {
            tx.batch_execute(sql)
                .await
                .with_context(|| format!("Failed to apply migration {version:04}_{name}"))?;
        }
        tx.execute(
            "INSERT INTO cdp.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&version, &name, &checksum],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "migration applied");
        report.applied.push(version);
    }
    Ok(report)
}

async fn original_table_exists(tx: &tokio_postgres::Transaction<'_>) -> anyhow::Result<bool> {
    Ok(tx
        .query_one(
            "SELECT to_regclass('cdp.facebook_configurations') IS NOT NULL",
            &[],
        )
        .await
        .context("Failed to look for an existing cdp.facebook_configurations")?
        .get(0))
}

/// Migration 0001 on a database that already has the original design's table.
async fn adopt_original_table(
    tx: &tokio_postgres::Transaction<'_>,
    initial: &str,
    report: &mut MigrationReport,
) -> anyhow::Result<()> {
    let columns: Vec<String> = tx
        .query(
            "SELECT attname::text FROM pg_attribute
              WHERE attrelid = 'cdp.facebook_configurations'::regclass AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .await
        .context("Failed to read the columns of cdp.facebook_configurations")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&str> = ORIGINAL_IDENTITY_COLUMNS
        .into_iter()
        .filter(|c| !columns.iter().any(|have| have == c))
        .collect();
    if !missing.is_empty() {
        bail!(
            "cdp.facebook_configurations exists but is not the original design's table (no column {}); \
             rename it or add the columns, then run migrate again",
            missing.join(", ")
        );
    }
    refuse_rows_the_worker_cannot_hold(tx).await?;
    tx.batch_execute(ADOPT_ORIGINAL_TABLE)
        .await
        .context("Failed to upgrade the original cdp.facebook_configurations in place")?;
    tx.batch_execute(after_configurations_table(initial)?)
        .await
        .context("Failed to apply migration 0001_initial next to the original table")?;
    // The adoption keeps a mapped status's old value in legacy_sync_status, and only then.
    report.mapped_statuses = tx
        .query(
            "SELECT system_name::text, legacy_sync_status::text, sync_status::text
               FROM cdp.facebook_configurations WHERE legacy_sync_status IS NOT NULL
              ORDER BY system_name",
            &[],
        )
        .await
        .context("Failed to read the mapped statuses")?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    report.adopted_rows = Some(
        tx.query_one("SELECT count(*) FROM cdp.facebook_configurations", &[])
            .await?
            .get(0),
    );
    tracing::info!(rows = ?report.adopted_rows, mapped = report.mapped_statuses.len(), "adopted the original cdp.facebook_configurations");
    Ok(())
}

/// The constraints the worker relies on (one row per system name; a name, an ad account and
/// tenants on every row) must hold already: `migrate` names the rows that break them and changes
/// nothing, rather than guessing which duplicate is the real one.
async fn refuse_rows_the_worker_cannot_hold(
    tx: &tokio_postgres::Transaction<'_>,
) -> anyhow::Result<()> {
    let rows = tx
        .query(
            "SELECT coalesce(system_name::text, '(NULL, id ' || id || ')')
               FROM cdp.facebook_configurations c
              WHERE system_name IS NULL OR ad_account_id IS NULL OR tenant_ids IS NULL
                 OR (SELECT count(*) FROM cdp.facebook_configurations d
                      WHERE d.system_name = c.system_name) > 1
              ORDER BY 1",
            &[],
        )
        .await
        .context("Failed to check the existing rows")?;
    if !rows.is_empty() {
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        bail!(
            "cdp.facebook_configurations has rows without a system_name, ad_account_id or tenant_ids, \
             or with a system_name used twice: {}; fix them, then run migrate again",
            names.join(", ")
        );
    }
    Ok(())
}

/// Migration 0001 without its CREATE TABLE of `cdp.facebook_configurations`.
fn after_configurations_table(initial: &str) -> anyhow::Result<&str> {
    const START: &str = "CREATE TABLE cdp.facebook_configurations (";
    let start = initial
        .find(START)
        .context("0001_initial has no CREATE TABLE cdp.facebook_configurations")?;
    let end = initial[start..]
        .find("\n);\n")
        .context("0001_initial's CREATE TABLE cdp.facebook_configurations does not end")?;
    Ok(&initial[start + end + "\n);\n".len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopting_runs_everything_of_0001_after_its_configurations_table() {
        let rest = after_configurations_table(MIGRATIONS[0].2).unwrap();
        assert!(
            rest.trim_start()
                .starts_with("CREATE FUNCTION cdp.touch_updated_at()"),
            "{}",
            &rest[..80]
        );
        assert!(!rest.contains("CREATE TABLE cdp.facebook_configurations"));
        assert!(rest.contains("CREATE TABLE cdp.facebook_sync_runs"));
    }

    #[test]
    fn a_server_older_than_postgresql_14_is_refused_by_name() {
        let err = check_server_version(130_016).unwrap_err().to_string();
        assert_eq!(
            err,
            "PostgreSQL 13.16 is too old: cdp-meta-sync needs PostgreSQL 14 or later"
        );
        assert!(check_server_version(140_000).is_ok());
        assert!(check_server_version(170_002).is_ok());
    }
}
