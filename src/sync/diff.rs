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

use super::plan_tables;
use super::stage::StageReport;
use super::system::SyncMode;
use crate::db::{LedgerScope, ledger};

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

/// Turns the filled staging table into the plan tables and marks the `duplicate` rows: only the
/// staged rows are read, so [`super::stage::stage_members`] does it as soon as the staging is
/// complete, before [`diff`].
pub async fn dedupe(stage: &tokio_postgres::Client, staged: &StageReport) -> anyhow::Result<()> {
    plan_tables::create_plan(stage, staged.gone > 0).await?;
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
    Ok(())
}

/// Plans one configuration's run in `sync_stage`, deduped by [`dedupe`]. In `append` mode no removals are planned (a
/// changed member's new row replaces the old one in the ledger when it is added). `audience` is
/// the ledger's size before the run changes it.
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
    audience: i64,
    refresh_ledger: bool,
) -> anyhow::Result<DiffReport> {
    let ledger = |key: &str| ledger::join(key, staged.in_table, audience);
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
            refreshed = ledger::refresh_sources(stage, scope).await?;
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
/// member that stays as it is. Returns the rows to upload.
pub async fn plan_replace(
    stage: &tokio_postgres::Client,
    scope: LedgerScope,
) -> anyhow::Result<i64> {
    ledger::plan_staying(stage, scope).await?;
    stage
        .batch_execute(
            "TRUNCATE sync_removes;
             UPDATE sync_stage SET upload = true WHERE action IN ('refresh', 'stay') AND NOT upload;",
        )
        .await
        .context("Failed to plan the replace upload")?;
    count(stage, "SELECT count(*) FROM sync_stage WHERE upload").await
}
