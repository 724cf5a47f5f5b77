//! Dedupe the staged members and diff them against the ledger, in SQL on the staging session, so
//! that no side of the comparison has to fit in the worker's memory.
//!
//! Results are two session tables numbered for keyset batching: `sync_removes` (ledger rows to
//! remove: leavers, and the old row of a member whose identifiers changed) and `sync_adds`
//! (newcomers, and the new row of a changed member).
use anyhow::Context;

/// Sizes after dedupe and diff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffReport {
    pub eligible: i64,
    pub audience: i64,
    pub to_add: i64,
    pub to_remove: i64,
}

/// Builds `sync_target` (one row per member: the fullest row, then the lowest tenant and customer
/// id), `sync_adds` and `sync_removes`. In `append` mode no removals are planned.
pub async fn diff(
    stage: &tokio_postgres::Client,
    configuration_id: i32,
    match_keys: &str,
    with_removals: bool,
) -> anyhow::Result<DiffReport> {
    stage
        .batch_execute(
            "DROP TABLE IF EXISTS pg_temp.sync_target, pg_temp.sync_adds, pg_temp.sync_removes;
             CREATE TEMP TABLE sync_target AS
                 SELECT DISTINCT ON (member_key) member_key, cells
                   FROM sync_stage ORDER BY member_key, filled DESC, tenant_id, customer_id;
             ALTER TABLE sync_target ADD PRIMARY KEY (member_key);
             ANALYZE sync_target;
             DROP TABLE sync_stage;
             CREATE TEMP TABLE sync_adds (seq BIGINT PRIMARY KEY, member_key BYTEA NOT NULL, cells BYTEA NOT NULL);
             CREATE TEMP TABLE sync_removes (seq BIGINT PRIMARY KEY, member_key BYTEA NOT NULL,
                 match_keys TEXT NOT NULL, cells BYTEA NOT NULL);",
        )
        .await
        .context("Failed to dedupe the staged members")?;
    if with_removals {
        stage
            .execute(
                "INSERT INTO sync_removes (seq, member_key, match_keys, cells)
                 SELECT row_number() OVER (ORDER BY m.match_keys, m.member_key), m.member_key, m.match_keys, m.cells
                   FROM cdp.facebook_audience_members m
                   LEFT JOIN sync_target t ON t.member_key = m.member_key
                  WHERE m.configuration_id = $1
                    AND (t.member_key IS NULL OR t.cells <> m.cells OR m.match_keys <> $2)",
                &[&configuration_id, &match_keys],
            )
            .await
            .context("Failed to plan removals")?;
    }
    stage
        .execute(
            "INSERT INTO sync_adds (seq, member_key, cells)
             SELECT row_number() OVER (ORDER BY t.member_key), t.member_key, t.cells
               FROM sync_target t
               LEFT JOIN cdp.facebook_audience_members m
                      ON m.configuration_id = $1 AND m.member_key = t.member_key
              WHERE m.member_key IS NULL OR m.cells <> t.cells OR m.match_keys <> $2",
            &[&configuration_id, &match_keys],
        )
        .await
        .context("Failed to plan additions")?;
    let row = stage
        .query_one(
            "SELECT (SELECT count(*) FROM sync_target),
                    (SELECT count(*) FROM cdp.facebook_audience_members WHERE configuration_id = $1),
                    (SELECT count(*) FROM sync_adds),
                    (SELECT count(*) FROM sync_removes)",
            &[&configuration_id],
        )
        .await?;
    Ok(DiffReport {
        eligible: row.get(0),
        audience: row.get(1),
        to_add: row.get(2),
        to_remove: row.get(3),
    })
}

/// When removals are held, a changed member's new row is held too (its old row stays in the
/// audience and in the ledger): only true newcomers are added. Returns the additions left.
pub async fn hold_removals(
    stage: &tokio_postgres::Client,
    configuration_id: i32,
) -> anyhow::Result<i64> {
    stage
        .batch_execute("TRUNCATE sync_removes")
        .await
        .context("Failed to hold removals")?;
    stage
        .execute(
            "DELETE FROM sync_adds a USING cdp.facebook_audience_members m
              WHERE m.configuration_id = $1 AND m.member_key = a.member_key",
            &[&configuration_id],
        )
        .await
        .context("Failed to hold changed members")?;
    let left: i64 = stage
        .query_one("SELECT count(*) FROM sync_adds", &[])
        .await?
        .get(0);
    Ok(left)
}

/// Replace mode: the whole target set is uploaded, so every member is an "addition".
pub async fn plan_replace(stage: &tokio_postgres::Client) -> anyhow::Result<i64> {
    stage
        .batch_execute(
            "TRUNCATE sync_adds, sync_removes;
             INSERT INTO sync_adds (seq, member_key, cells)
             SELECT row_number() OVER (ORDER BY member_key), member_key, cells FROM sync_target;",
        )
        .await
        .context("Failed to plan the replace upload")?;
    let total: i64 = stage
        .query_one("SELECT count(*) FROM sync_adds", &[])
        .await?
        .get(0);
    Ok(total)
}
