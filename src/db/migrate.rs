//! Versioned SQL migrations from `sql/`, embedded in the binary.
//!
//! Each file runs once, in its own transaction, and is recorded in `cdp.schema_migrations` with a
//! checksum. A session-level advisory lock serializes concurrent `migrate` runs (two replicas
//! starting together): the second waits, then finds nothing left to do. An applied migration
//! whose file has changed is an error: add a new migration instead of editing an old one.
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
];

/// Arbitrary but fixed key for `pg_advisory_lock`: "cdpmeta" in ASCII.
const LOCK_KEY: i64 = 0x0063_6470_6d65_7461;

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<i32>,
    pub already_applied: usize,
}

/// The oldest server the worker runs on: the extraction's source digest uses
/// `hash_record_extended`, new in PostgreSQL 14.
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
    let result = apply_pending(client).await;
    // Unlock even when a migration failed; the session ends soon after anyway.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let report = result?;
    unlocked.context("Failed to release the migration lock")?;
    Ok(report)
}

async fn apply_pending(client: &mut tokio_postgres::Client) -> anyhow::Result<MigrationReport> {
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
    };
    for &(version, name, sql) in MIGRATIONS {
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
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("Failed to apply migration {version:04}_{name}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
