//! Dedupe the staged rows and decide, member by member, what changes in the audience: in SQL on
//! the staging session, so no side of the comparison has to fit in the worker's memory. The
//! staging table becomes the plan in place (no copy, no sort of the whole table).
//!
//! Only members the staging touched are compared: a candidate row's member, or a ledger member
//! whose source customer changed or left ("gone"). Every other ledger member is unchanged.
//!
//! Each candidate row of `sync_stage` gets an `action`:
//!
//! * none: a new member, to add;
//! * `duplicate`: another row of the same member ranks higher (fuller, then the lowest tenant and
//!   customer id); only members the staging marked `maybe_dup` are ranked;
//! * `change`: the candidate wins over the ledger's row (the ledger's source is gone, or a fuller
//!   twin appeared) and brings other cells: remove the old row, add the new one;
//! * `refresh`: the candidate wins with the ledger's very cells: only the ledger's source columns
//!   change, Meta is not called;
//! * `keep`: the ledger's member stays as it is (the candidate ranks lower).
//!
//! `upload` marks the rows the add (or replace) session sends. `sync_removes` lists the ledger
//! rows to remove: a gone member with no candidate, and the old row of a changed member.
use anyhow::Context;

use super::stage::StageReport;
use super::system::{LedgerScope, SyncMode};

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
    /// Ledger members with no candidate left: what a replace drops (the removal guard's measure
    /// in replace mode).
    pub leaving: i64,
}

/// The ranking of rows of one member: the fullest row, then the lowest tenant and customer id.
const RANK: &str = "filled DESC, tenant_id, customer_id";

/// Plans one configuration's run in `sync_stage`. In `append` mode no removals are planned (a
/// changed member's new row replaces the old one in the ledger when it is added). `audience` is
/// the ledger's size when the caller knows it.
///
/// The statements that join the ledger run with sequential scans disabled: the staged side is
/// what they scan, and the ledger's statistics can lag far behind it (an emptied audience still
/// counts its old rows; a first sync's members are counted only once the caller has run
/// [`analyze_ledger`]), which can make a scan of the whole ledger per staged row look cheap to the
/// planner. For the same reason the worker, which knows both sizes, picks how the ledger is read
/// (see [`ledger_join`]).
pub async fn diff(
    stage: &tokio_postgres::Client,
    scope: LedgerScope,
    match_keys: &str,
    mode: SyncMode,
    staged: &StageReport,
    audience: Option<i64>,
    refresh_ledger: bool,
) -> anyhow::Result<DiffReport> {
    let gone = if staged.gone > 0 {
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
        .context("Failed to index the staged members")?;
    if staged.maybe_dup > 0 {
        stage
            .batch_execute(&format!(
                "UPDATE sync_stage s SET action = 'duplicate', upload = false
                   FROM (SELECT seq, row_number() OVER (PARTITION BY member_key ORDER BY {RANK}) AS rank
                           FROM sync_stage
                          WHERE cells IS NOT NULL
                            AND member_key IN (SELECT member_key FROM sync_stage WHERE maybe_dup)) d
                  WHERE s.seq = d.seq AND d.rank > 1"
            ))
            .await
            .context("Failed to dedupe the staged members")?;
    }
    let audience: i64 = match audience {
        Some(n) => n,
        None => count_members(stage, scope).await?,
    };
    let ledger = |key: &str| ledger_join(key, staged.in_table, audience);
    let mut refreshed = 0;
    if audience > 0 {
        stage
            .batch_execute("SET enable_seqscan = off")
            .await
            .context("Failed to plan the ledger comparison")?;
        stage
            .execute(
                &format!(
                    "UPDATE sync_stage s
                    SET action = d.action, old_cells = d.old_cells, old_match_keys = d.old_match_keys,
                        upload = d.action = 'change'
                   FROM (SELECT c.seq, m.cells AS old_cells, m.match_keys AS old_match_keys,
                                CASE WHEN NOT (g.member_key IS NOT NULL
                                               OR c.filled > coalesce(m.filled, -1)
                                               OR (c.filled = m.filled
                                                   AND (c.tenant_id, c.customer_id)
                                                       < (m.source_tenant_id, m.source_customer_id)))
                                          THEN 'keep'
                                     WHEN c.cells = m.cells AND m.match_keys = $3 THEN 'refresh'
                                     ELSE 'change' END AS action
                           FROM sync_stage c
                           {}
                           LEFT JOIN sync_gone g ON g.member_key = c.member_key
                          WHERE c.action IS NULL) d
                  WHERE s.seq = d.seq",
                    ledger("c.member_key")
                ),
                &[&scope.configuration_id, &scope.definition_id, &match_keys],
            )
            .await
            .context("Failed to compare the staged members with the ledger")?;
        if refresh_ledger {
            refreshed = stage
                .execute(
                    "UPDATE cdp.facebook_audience_members m
                    SET source_tenant_id = p.tenant_id, source_customer_id = p.customer_id,
                        source_digest = p.digest, filled = p.filled, invalid_keys = p.invalid_keys,
                        filled_keys = p.filled_keys
                   FROM sync_stage p
                  WHERE p.action = 'refresh' AND m.configuration_id = $1 AND m.definition_id = $2
                    AND m.member_key = p.member_key",
                    &[&scope.configuration_id, &scope.definition_id],
                )
                .await
                .context("Failed to refresh the ledger's sources")? as i64;
        }
    }
    // Gone members with no candidate left: they leave the audience.
    let leaving = format!(
        "SELECT m.member_key, m.match_keys, m.cells
           FROM sync_gone g
           {}
          WHERE NOT EXISTS (SELECT 1 FROM sync_stage s
                             WHERE s.member_key = g.member_key AND s.cells IS NOT NULL)",
        ledger("g.member_key")
    );
    let removals_planned = mode == SyncMode::Mirror && audience > 0;
    let mut to_remove = 0;
    if removals_planned {
        to_remove = stage
            .execute(
                &format!(
                    "INSERT INTO sync_removes (seq, match_keys, member_key, cells)
                     SELECT row_number() OVER (ORDER BY match_keys, member_key), match_keys, member_key, cells
                       FROM ({leaving}
                             UNION ALL
                             SELECT member_key, old_match_keys, old_cells FROM sync_stage
                              WHERE action = 'change') r"
                ),
                &[&scope.configuration_id, &scope.definition_id],
            )
            .await
            .context("Failed to plan removals")? as i64;
    }
    let row = stage
        .query_one(
            "SELECT count(*) FILTER (WHERE upload AND action IS NULL),
                    count(*) FILTER (WHERE upload),
                    count(*) FILTER (WHERE action IN ('duplicate', 'keep')),
                    count(*) FILTER (WHERE action = 'change')
               FROM sync_stage",
            &[],
        )
        .await
        .context("Failed to count the plan")?;
    let (new, to_add, duplicates, changed): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    // The removals are the leaving members and the changed members' old rows; without planned
    // removals (append mode), the leaving members are counted on their own.
    let leaving: i64 = if removals_planned {
        to_remove - changed
    } else if staged.gone > 0 {
        stage
            .query_one(
                &format!("SELECT count(*) FROM ({leaving}) l"),
                &[&scope.configuration_id, &scope.definition_id],
            )
            .await
            .context("Failed to count the leaving members")?
            .get(0)
    } else {
        0
    };
    stage
        .batch_execute("RESET enable_seqscan")
        .await
        .context("Failed to plan the ledger comparison")?;
    Ok(DiffReport {
        eligible: audience + new - leaving,
        audience,
        to_add,
        to_remove,
        duplicates,
        refreshed,
        leaving,
    })
}

/// How a statement reaches the ledger rows (alias `m`) of the members it compares (`key`, a
/// column of the staged side; `$1` and `$2` are the configuration and definition ids). With few staged rows next to a large
/// ledger, each one is looked up in the ledger's primary key; otherwise the ledger's rows for the
/// configuration are scanned once and hash-joined. The planner would choose from the ledger's
/// statistics, which lag behind a ledger that has just grown by millions (a first sync).
fn ledger_join(key: &str, staged_rows: u64, audience: i64) -> String {
    // A primary-key lookup costs about as much as scanning a dozen ledger rows.
    if staged_rows.saturating_mul(12) < audience.max(0) as u64 {
        format!(
            "CROSS JOIN LATERAL (SELECT * FROM cdp.facebook_audience_members m
                                  WHERE m.configuration_id = $1 AND m.definition_id = $2
                                    AND m.member_key = {key}
                                 OFFSET 0) m"
        )
    } else {
        format!(
            "JOIN cdp.facebook_audience_members m
               ON m.configuration_id = $1 AND m.definition_id = $2 AND m.member_key = {key}"
        )
    }
}

/// Members in the audience's ledger.
pub async fn count_members(
    stage: &tokio_postgres::Client,
    scope: LedgerScope,
) -> anyhow::Result<i64> {
    Ok(stage
        .query_one(
            "SELECT count(*) FROM cdp.facebook_audience_members
              WHERE configuration_id = $1 AND definition_id = $2",
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await
        .context("Failed to count the audience")?
        .get(0))
}

/// Brings the planner's view of the ledger up to date after a first sync streamed members into it.
/// Until autovacuum gets there, statistics taken while the configuration had no member say it
/// has about one, and the plan built on that for the diff (the configuration's ledger rows as
/// the outer side of a nested loop over the staging table) took over 70 s instead of milliseconds
/// at 1M customers. Only the configuration column is sampled, 3,000 rows: about 25 ms at 1M.
pub async fn analyze_ledger(stage: &tokio_postgres::Client) -> anyhow::Result<()> {
    stage
        .batch_execute(
            "SET default_statistics_target = 10;
             ANALYZE cdp.facebook_audience_members (configuration_id, definition_id);
             RESET default_statistics_target",
        )
        .await
        .context("Failed to update the ledger's statistics")
}

/// Whether the audience's ledger has no member (a first sync, or a new audience).
pub async fn ledger_is_empty(
    stage: &tokio_postgres::Client,
    scope: LedgerScope,
) -> anyhow::Result<bool> {
    Ok(stage
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM cdp.facebook_audience_members
                                 WHERE configuration_id = $1 AND definition_id = $2)",
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await
        .context("Failed to look at the ledger")?
        .get(0))
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
             UPDATE sync_stage SET upload = false WHERE action = 'change';",
        )
        .await
        .context("Failed to hold removals")?;
    count(stage, "SELECT count(*) FROM sync_stage WHERE upload").await
}

/// Replace mode: the whole target set is uploaded: each candidate that wins, and each ledger
/// member that stays as it is (a candidate that lost to it takes its row; a member with no
/// candidate is added to the plan after the staged rows).
pub async fn plan_replace(
    stage: &tokio_postgres::Client,
    scope: LedgerScope,
) -> anyhow::Result<i64> {
    stage
        .execute(
            "UPDATE sync_stage p
                SET cells = m.cells, filled = m.filled, tenant_id = m.source_tenant_id,
                    customer_id = m.source_customer_id, digest = m.source_digest,
                    invalid_keys = m.invalid_keys, filled_keys = m.filled_keys, action = 'stay'
               FROM cdp.facebook_audience_members m
              WHERE p.action = 'keep' AND m.configuration_id = $1 AND m.definition_id = $2
                AND m.member_key = p.member_key",
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await
        .context("Failed to plan the replace upload")?;
    stage
        .execute(
            "INSERT INTO sync_stage (seq, member_key, cells, filled, tenant_id, customer_id, digest,
                                     invalid_keys, filled_keys, maybe_dup, action)
             SELECT (SELECT coalesce(max(seq), 0) FROM sync_stage) + row_number() OVER (),
                    m.member_key, m.cells, m.filled, m.source_tenant_id, m.source_customer_id,
                    m.source_digest, m.invalid_keys, m.filled_keys, false, 'stay'
               FROM cdp.facebook_audience_members m
              WHERE m.configuration_id = $1 AND m.definition_id = $2
                AND NOT EXISTS (SELECT 1 FROM sync_gone g WHERE g.member_key = m.member_key)
                AND NOT EXISTS (SELECT 1 FROM sync_stage s
                                 WHERE s.member_key = m.member_key AND s.cells IS NOT NULL)",
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await
        .context("Failed to plan the replace upload")?;
    stage
        .batch_execute(
            "TRUNCATE sync_removes;
             UPDATE sync_stage SET upload = true WHERE action IN ('refresh', 'stay') AND NOT upload;",
        )
        .await
        .context("Failed to plan the replace upload")?;
    count(stage, "SELECT count(*) FROM sync_stage WHERE upload").await
}

/// Drops the staging and plan tables (they also go with the session).
pub async fn drop_plan(stage: &tokio_postgres::Client) -> anyhow::Result<()> {
    stage
        .batch_execute(
            "DROP TABLE IF EXISTS pg_temp.sync_stage, pg_temp.sync_gone, pg_temp.sync_removes",
        )
        .await
        .context("Failed to drop the plan tables")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_staged_rows_next_to_a_large_ledger_look_their_members_up_by_key() {
        let join = ledger_join("c.member_key", 5_000, 360_000);
        assert!(join.starts_with("CROSS JOIN LATERAL"), "{join}");
        assert!(join.contains("m.member_key = c.member_key"), "{join}");
        assert!(
            join.contains("OFFSET 0"),
            "the lookup must not be flattened: {join}"
        );
    }

    #[test]
    fn a_staged_side_near_the_ledger_size_joins_the_ledger_once() {
        for (staged, audience) in [(360_000, 360_000), (40_000, 360_000), (10, 0), (0, 0)] {
            let join = ledger_join("g.member_key", staged, audience);
            assert!(join.starts_with("JOIN "), "{staged} vs {audience}: {join}");
        }
    }
}
