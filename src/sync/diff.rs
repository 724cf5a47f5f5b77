//! Dedupe the staged rows and decide, member by member, what changes in the audience: in SQL on
//! the staging session, so no side of the comparison has to fit in the worker's memory.
//!
//! Only members the staging touched are compared: a candidate row's member, or a ledger member
//! whose source customer changed or left ("gone"). Every other ledger member is unchanged.
//!
//! `sync_plan` holds the best candidate row per member (the fullest row, then the lowest tenant
//! and customer id), numbered for keyset batching, with its ledger member's old row and an action:
//!
//! * `add`: a new member;
//! * `change`: the candidate wins (the ledger's source is gone, or a fuller twin appeared) and
//!   brings other cells: remove the old row, add the new one;
//! * `refresh`: the candidate wins with the ledger's very cells: only the ledger's source columns
//!   change, Meta is not called;
//! * `keep`: the ledger's member stays as it is (the candidate is a duplicate that ranks lower).
//!
//! `upload` marks the rows the add (or replace) session sends. `sync_removes` lists the ledger
//! rows to remove: a gone member with no candidate, and the old row of a changed member.
use anyhow::Context;

use super::system::SyncMode;

/// Sizes after dedupe and diff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Members the audience should have.
    pub eligible: i64,
    /// Members in the ledger before the run.
    pub audience: i64,
    pub to_add: i64,
    pub to_remove: i64,
    /// Candidate rows that lost to another row of the same member.
    pub duplicates: i64,
    /// Ledger members given a new source without a change on Meta's side.
    pub refreshed: i64,
}

/// Builds the plan for one configuration. In `append` mode no removals are planned (a changed
/// member's new row replaces the old one in the ledger when it is added).
/// `candidates` is the number of candidate rows staged.
pub async fn diff(
    stage: &tokio_postgres::Client,
    configuration_id: i32,
    match_keys: &str,
    mode: SyncMode,
    candidates: i64,
) -> anyhow::Result<DiffReport> {
    stage
        .batch_execute(
            "DROP TABLE IF EXISTS pg_temp.sync_gone, pg_temp.sync_plan, pg_temp.sync_removes;
             CREATE TEMP TABLE sync_gone AS SELECT DISTINCT member_key FROM sync_stage WHERE cells IS NULL;",
        )
        .await
        .context("Failed to collect the gone members")?;
    stage
        .execute(
            "CREATE TEMP TABLE sync_plan AS
             SELECT row_number() OVER () AS seq, d.*, d.action IN ('add', 'change') AS upload FROM (
             SELECT c.*, m.cells AS old_cells, m.match_keys AS old_match_keys,
                    CASE WHEN m.member_key IS NULL THEN 'add'
                         WHEN NOT (g.member_key IS NOT NULL
                                   OR c.filled > coalesce(m.filled, -1)
                                   OR (c.filled = m.filled
                                       AND (c.tenant_id, c.customer_id) < (m.source_tenant_id, m.source_customer_id)))
                              THEN 'keep'
                         WHEN c.cells = m.cells AND m.match_keys = $2 THEN 'refresh'
                         ELSE 'change' END AS action
               FROM (SELECT DISTINCT ON (member_key) member_key, cells, filled, tenant_id, customer_id, digest, invalid_keys
                       FROM sync_stage WHERE cells IS NOT NULL
                      ORDER BY member_key, filled DESC, tenant_id, customer_id) c
               LEFT JOIN cdp.facebook_audience_members m
                      ON m.configuration_id = $1 AND m.member_key = c.member_key
               LEFT JOIN sync_gone g ON g.member_key = c.member_key) d",
            &[&configuration_id, &match_keys],
        )
        .await
        .context("Failed to dedupe the staged members")?;
    stage
        .batch_execute(
            "DROP TABLE sync_stage;
             ALTER TABLE sync_plan ADD PRIMARY KEY (seq);
             CREATE TEMP TABLE sync_removes (seq BIGINT PRIMARY KEY, member_key BYTEA NOT NULL,
                 match_keys TEXT NOT NULL, cells BYTEA NOT NULL);",
        )
        .await
        .context("Failed to index the plan")?;
    if mode == SyncMode::Mirror {
        stage
            .execute(
                "INSERT INTO sync_removes (seq, member_key, match_keys, cells)
                 SELECT row_number() OVER (ORDER BY match_keys, member_key), member_key, match_keys, cells
                   FROM (SELECT m.member_key, m.match_keys, m.cells
                           FROM sync_gone g
                           JOIN cdp.facebook_audience_members m
                             ON m.configuration_id = $1 AND m.member_key = g.member_key
                          WHERE NOT EXISTS (SELECT 1 FROM sync_plan p WHERE p.member_key = g.member_key)
                         UNION ALL
                         SELECT member_key, old_match_keys, old_cells FROM sync_plan WHERE action = 'change') r",
                &[&configuration_id],
            )
            .await
            .context("Failed to plan removals")?;
    }
    let refreshed = stage
        .execute(
            "UPDATE cdp.facebook_audience_members m
                SET source_tenant_id = p.tenant_id, source_customer_id = p.customer_id,
                    source_digest = p.digest, filled = p.filled, invalid_keys = p.invalid_keys
               FROM sync_plan p
              WHERE p.action = 'refresh' AND m.configuration_id = $1 AND m.member_key = p.member_key",
            &[&configuration_id],
        )
        .await
        .context("Failed to refresh the ledger's sources")? as i64;
    let row = stage
        .query_one(
            "SELECT (SELECT count(*) FROM cdp.facebook_audience_members WHERE configuration_id = $1),
                    count(*) FILTER (WHERE action = 'add'),
                    count(*) FILTER (WHERE action IN ('add', 'change')),
                    count(*) FILTER (WHERE action = 'keep'),
                    count(*),
                    (SELECT count(*) FROM sync_gone g
                      WHERE NOT EXISTS (SELECT 1 FROM sync_plan p WHERE p.member_key = g.member_key)
                        AND EXISTS (SELECT 1 FROM cdp.facebook_audience_members m
                                     WHERE m.configuration_id = $1 AND m.member_key = g.member_key)),
                    (SELECT count(*) FROM sync_removes)
               FROM sync_plan",
            &[&configuration_id],
        )
        .await
        .context("Failed to count the plan")?;
    let (audience, new, to_add, lost_to_ledger, members, leaving): (i64, i64, i64, i64, i64, i64) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    Ok(DiffReport {
        eligible: audience + new - leaving,
        audience,
        to_add,
        to_remove: row.get(6),
        duplicates: candidates - members + lost_to_ledger,
        refreshed,
    })
}

async fn count(stage: &tokio_postgres::Client, sql: &str) -> anyhow::Result<i64> {
    Ok(stage
        .query_one(sql, &[])
        .await
        .with_context(|| format!("Failed to count: {sql}"))?
        .get(0))
}

/// When removals are held, a changed member's new row is held too (its old row stays in the
/// audience and in the ledger): only true newcomers are added. Returns the additions left.
pub async fn hold_removals(stage: &tokio_postgres::Client) -> anyhow::Result<i64> {
    stage
        .batch_execute(
            "TRUNCATE sync_removes;
             UPDATE sync_plan SET upload = false WHERE action = 'change';",
        )
        .await
        .context("Failed to hold removals")?;
    count(stage, "SELECT count(*) FROM sync_plan WHERE upload").await
}

/// Replace mode: the whole target set is uploaded: each candidate that wins, and each ledger
/// member that stays as it is (added to the plan after the candidates).
pub async fn plan_replace(
    stage: &tokio_postgres::Client,
    configuration_id: i32,
) -> anyhow::Result<i64> {
    stage
        .batch_execute(
            "TRUNCATE sync_removes; UPDATE sync_plan SET upload = true WHERE action = 'refresh';",
        )
        .await
        .context("Failed to plan the replace upload")?;
    stage
        .execute(
            "INSERT INTO sync_plan (seq, member_key, cells, filled, tenant_id, customer_id, digest, invalid_keys,
                                    action, upload)
             SELECT (SELECT coalesce(max(seq), 0) FROM sync_plan) + row_number() OVER (),
                    m.member_key, m.cells, m.filled, m.source_tenant_id, m.source_customer_id,
                    m.source_digest, m.invalid_keys, 'stay', true
               FROM cdp.facebook_audience_members m
              WHERE m.configuration_id = $1
                AND NOT EXISTS (SELECT 1 FROM sync_gone g WHERE g.member_key = m.member_key)
                AND NOT EXISTS (SELECT 1 FROM sync_plan p
                                 WHERE p.member_key = m.member_key AND p.action <> 'keep')",
            &[&configuration_id],
        )
        .await
        .context("Failed to plan the replace upload")?;
    count(stage, "SELECT count(*) FROM sync_plan WHERE upload").await
}

/// Drops the staging and plan tables (they also go with the session).
pub async fn drop_plan(stage: &tokio_postgres::Client) -> anyhow::Result<()> {
    stage
        .batch_execute(
            "DROP TABLE IF EXISTS pg_temp.sync_stage, pg_temp.sync_gone, pg_temp.sync_plan, pg_temp.sync_removes",
        )
        .await
        .context("Failed to drop the plan tables")
}
