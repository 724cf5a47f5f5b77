//! Every statement on the ledger, `cdp.facebook_audience_members`: one row per member an audience
//! holds at Meta, as this worker sent it (its cells, the schema they were sent with, the source
//! customer they came from). Each statement reads or writes one audience's rows, named by a
//! [`LedgerScope`] (`$1`, `$2` where a fragment is spliced into another statement).
//!
//! Writes after an upload are fenced on the lease (`cdp.hold_lease`), so a worker that lost the
//! system never records a batch the new holder does not know about.
use anyhow::Context;
use tokio_postgres::Client;

use super::{LedgerScope, runs};

/// A ledger row's columns, in the order the writes below give them.
const COLUMNS: &str =
    "(configuration_id, definition_id, audience_id, member_key, match_keys, cells,
     added_run_id, source_tenant_id, source_customer_id, source_digest, filled, invalid_keys,
     filled_keys)";

/// A ledger row's own columns, in the order a first sync's COPY gives them first.
const MEMBER_COLUMNS: &str = "member_key, cells, source_tenant_id, source_customer_id,
     source_digest, filled, invalid_keys, filled_keys";

/// The run's columns of a ledger row: a load table has them as its defaults (see
/// `sql/0016_ledger_load_defaults.sql`); a COPY into the ledger itself sends them after the
/// member's.
const RUN_COLUMNS: &str = "configuration_id, definition_id, audience_id, match_keys, added_run_id";

/// The binary COPY of one accepted batch into `table` (see [`crate::sync::first_sync`], which
/// encodes the rows in this order).
pub fn copy_statement(table: &LoadInto) -> String {
    match table {
        LoadInto::Ledger => format!(
            "COPY cdp.facebook_audience_members ({MEMBER_COLUMNS}, {RUN_COLUMNS}) FROM STDIN (FORMAT binary)"
        ),
        LoadInto::Unindexed(name) => {
            format!("COPY {name} ({MEMBER_COLUMNS}) FROM STDIN (FORMAT binary)")
        }
    }
}

/// Where a first sync copies its members while it extracts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadInto {
    /// The audience's partition-to-be, with no index yet and the run's constant columns as
    /// defaults: [`attach`] indexes and attaches it.
    Unindexed(String),
    /// The ledger itself (the audience has its partition already).
    Ledger,
}

/// The run a load's rows come from: their constant columns.
#[derive(Debug, Clone, Copy)]
pub struct LoadOf<'a> {
    pub scope: LedgerScope,
    pub audience_id: &'a str,
    pub match_keys: &'a str,
    pub run_id: i64,
}

/// Starts a first sync's load (see `sql/0014_ledger_partitions.sql`): an audience with no
/// partition yet gets an unindexed table of its own to load.
pub async fn begin_load(client: &Client, of: LoadOf<'_>) -> anyhow::Result<LoadInto> {
    let table: Option<String> = client
        .query_one(
            "SELECT cdp.begin_ledger_load($1, $2, $3, $4, $5)",
            &[
                &of.scope.configuration_id,
                &of.scope.definition_id,
                &of.audience_id,
                &of.match_keys,
                &of.run_id,
            ],
        )
        .await
        .context("Failed to start the ledger's load")?
        .get(0);
    Ok(table.map_or(LoadInto::Ledger, LoadInto::Unindexed))
}

/// Ends a load: the loaded members get their primary key and become the audience's partition,
/// with fresh statistics for the diff. A load cut short (a crash, a failed run) is attached by
/// the audience's next run before anything reads its ledger. Returns whether there was a load.
pub async fn attach(client: &Client, scope: LedgerScope) -> anyhow::Result<bool> {
    let attached: bool = client
        .query_one(
            "SELECT cdp.attach_ledger($1, $2)",
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await
        .context("Failed to attach the loaded ledger")?
        .get(0);
    Ok(attached)
}

/// Members in the audience's ledger.
pub async fn count_members(client: &Client, scope: LedgerScope) -> anyhow::Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM cdp.facebook_audience_members
              WHERE configuration_id = $1 AND definition_id = $2",
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await
        .context("Failed to count the audience")?
        .get(0))
}

/// Whether the audience's ledger has no member (a first sync, or a new audience).
pub async fn is_empty(client: &Client, scope: LedgerScope) -> anyhow::Result<bool> {
    Ok(client
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM cdp.facebook_audience_members
                                 WHERE configuration_id = $1 AND definition_id = $2)",
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await
        .context("Failed to look at the ledger")?
        .get(0))
}

/// Brings the planner's view of the audience's ledger up to date after a first sync streamed
/// members into it. Until autovacuum gets there, statistics taken while the audience had no member
/// say it has about one, and the plan built on that for the diff (the ledger rows as the outer side
/// of a nested loop over the staging table) took over 70 s instead of milliseconds at 1M
/// customers. Only the scope's columns and the member key are sampled, 3,000 rows, of the
/// audience's own partition when it has one (else of the default partition, where its rows are).
/// Without the key's statistics the planner takes each lookup of a staged member in the primary
/// key to find about 1/200 of the audience, and reads it through a bitmap: 27 ms against 23 ms
/// for 7,400 lookups in a 352,000-member partition.
pub async fn analyze(client: &Client, scope: LedgerScope) -> anyhow::Result<()> {
    let table: String = client
        .query_one(
            "SELECT coalesce(to_regclass('cdp.' || quote_ident(cdp.ledger_table($1, $2))),
                             'cdp.facebook_audience_members_default'::regclass)::text",
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await
        .context("Failed to find the audience's ledger")?
        .get(0);
    client
        .batch_execute(&format!(
            "SET default_statistics_target = 10;
             ANALYZE {table} (configuration_id, definition_id, member_key);
             RESET default_statistics_target"
        ))
        .await
        .context("Failed to update the ledger's statistics")
}

/// Deletes the scope's rows when they are of another audience than `audience_id` (an operator
/// changed `custom_audience_id`): they no longer say anything about the audience synced now.
/// Every row of a scope names the same audience (this runs before any upload), so one row tells;
/// `ORDER BY member_key` reads that row from the primary key (a plain `LIMIT 1` may scan the whole
/// ledger up to the scope's first row).
pub async fn forget_other_audience(
    client: &Client,
    scope: LedgerScope,
    audience_id: &str,
) -> anyhow::Result<()> {
    client
        .execute(
            "DELETE FROM cdp.facebook_audience_members
              WHERE configuration_id = $1 AND definition_id = $2
                AND (SELECT audience_id FROM cdp.facebook_audience_members
                      WHERE configuration_id = $1 AND definition_id = $2
                      ORDER BY member_key LIMIT 1) <> $3",
            &[&scope.configuration_id, &scope.definition_id, &audience_id],
        )
        .await
        .context("Failed to drop the ledger of a former audience")?;
    Ok(())
}

/// The system or definition that `audience_id` belongs to already, if not `scope`: named as
/// `custom_audience_id` by an active system or definition. Of several naming one audience, it
/// belongs to the one whose ledger holds it, else to the oldest (lowest ids).
pub async fn owner(
    client: &Client,
    scope: LedgerScope,
    audience_id: &str,
) -> anyhow::Result<Option<String>> {
    // A ledger holds one audience: its first row in key order tells which.
    let holds = |c: &str, d: &str| {
        format!(
            "(SELECT m.audience_id FROM cdp.facebook_audience_members m
               WHERE m.configuration_id = {c} AND m.definition_id = {d}
               ORDER BY m.member_key LIMIT 1) = $2"
        )
    };
    let row = client
        .query_opt(
            &format!(
                "WITH named AS (
                     SELECT c.id AS cid, 0 AS did, c.system_name::text AS name, {} AS holds
                       FROM cdp.facebook_configurations c
                      WHERE (c.custom_audience_id = $2 AND coalesce(c.is_active, false))
                         OR (c.id = $1 AND $3 = 0)
                     UNION ALL
                     SELECT a.configuration_id, a.id, c.system_name || ' / ' || a.name, {}
                       FROM cdp.facebook_audiences a
                       JOIN cdp.facebook_configurations c ON c.id = a.configuration_id
                      WHERE (a.custom_audience_id = $2 AND a.is_active AND coalesce(c.is_active, false))
                         OR (a.configuration_id = $1 AND a.id = $3))
                 SELECT cid, did, name FROM named
                  ORDER BY coalesce(holds, false) DESC, cid, did
                  LIMIT 1",
                holds("c.id", "0"),
                holds("a.configuration_id", "a.id")
            ),
            &[&scope.configuration_id, &audience_id, &scope.definition_id],
        )
        .await
        .context("Failed to check which system the audience belongs to")?;
    Ok(row
        .filter(|r| {
            (r.get::<_, i32>(0), r.get::<_, i32>(1))
                != (scope.configuration_id, scope.definition_id)
        })
        .map(|r| r.get(2)))
}

/// The scope's members' sources, for the extraction's full join (`$3`, `$5` = configuration
/// and definition id there).
pub const SOURCES: &str = "SELECT member_key, source_tenant_id, source_customer_id, source_digest
                             FROM cdp.facebook_audience_members
                            WHERE configuration_id = $3 AND definition_id = $5";

/// The scope's members matching `condition` (on alias `m`), as `member_key, match_keys, cells`.
pub fn members_where(condition: &str) -> String {
    format!(
        "SELECT m.member_key, m.match_keys, m.cells
           FROM cdp.facebook_audience_members m
          WHERE m.configuration_id = $1 AND m.definition_id = $2 AND {condition}"
    )
}

/// How a statement reaches the ledger rows (alias `m`) of the members it compares (`key`, a
/// column of the staged side). With few staged rows next to a large ledger, each one is looked
/// up in the ledger's primary key; otherwise the scope's rows are scanned once and hash-joined.
/// The planner would choose from the ledger's statistics, which lag behind a ledger that has
/// just grown by millions (a first sync).
pub fn join(key: &str, staged_rows: u64, audience: i64) -> String {
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

/// The audience's ledger next to a run's staged rows (`sync_stage`), before anything changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Members in the ledger.
    pub members: i64,
    /// Members the run did not stage as gone, so their source customers are unchanged: how many
    /// per `(invalid_keys, filled_keys)`.
    pub unchanged: Vec<(i32, i32, i64)>,
}

/// Counts the ledger's members, and those the staging left alone (see [`Settled`]). Right after
/// an incremental run's staging, while nothing else writes the audience's ledger (the lease).
pub async fn settled(client: &Client, scope: LedgerScope) -> anyhow::Result<Settled> {
    let rows = client
        .query(
            "SELECT m.invalid_keys, m.filled_keys, count(*) FILTER (WHERE g.member_key IS NULL),
                    count(*)
               FROM cdp.facebook_audience_members m
               LEFT JOIN (SELECT DISTINCT member_key FROM sync_stage WHERE cells IS NULL) g
                 ON g.member_key = m.member_key
              WHERE m.configuration_id = $1 AND m.definition_id = $2
              GROUP BY 1, 2",
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await
        .context("Failed to count the unchanged members")?;
    let mut settled = Settled::default();
    for row in rows {
        settled.members += row.get::<_, i64>(3);
        let unchanged: i64 = row.get(2);
        if unchanged > 0 {
            settled.unchanged.push((row.get(0), row.get(1), unchanged));
        }
    }
    Ok(settled)
}

/// Brings the source columns of members the plan marked `refresh` (same cells, another source
/// row) up to date. Returns how many.
pub async fn refresh_sources(client: &Client, scope: LedgerScope) -> anyhow::Result<i64> {
    Ok(client
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
        .context("Failed to refresh the ledger's sources")? as i64)
}

/// Replace mode: puts the ledger members that stay as they are into the plan, so the whole target
/// set is uploaded: a `keep` row takes its member's ledger row; a member with no candidate is
/// added after the staged rows.
pub async fn plan_staying(client: &Client, scope: LedgerScope) -> anyhow::Result<()> {
    let ids: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
        [&scope.configuration_id, &scope.definition_id];
    client
        .execute(
            "UPDATE sync_stage p
                SET cells = m.cells, filled = m.filled, tenant_id = m.source_tenant_id,
                    customer_id = m.source_customer_id, digest = m.source_digest,
                    invalid_keys = m.invalid_keys, filled_keys = m.filled_keys, action = 'stay'
               FROM cdp.facebook_audience_members m
              WHERE p.action = 'keep' AND m.configuration_id = $1 AND m.definition_id = $2
                AND m.member_key = p.member_key",
            &ids,
        )
        .await
        .context("Failed to plan the replace upload")?;
    client
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
            &ids,
        )
        .await
        .context("Failed to plan the replace upload")?;
    Ok(())
}

/// Where an accepted batch lands: the audience, the schema its rows were sent with, and the run.
pub struct BatchOf<'a> {
    pub scope: LedgerScope,
    pub audience_id: &'a str,
    pub match_keys: &'a str,
    pub run_id: i64,
    /// The lease holder that must still hold the system for the write to happen.
    pub worker_id: &'a str,
}

/// An accepted batch of additions: the plan rows `first..=last` marked for upload go into the
/// ledger and the run row counts them, in one statement. `upsert` (append mode): an added row
/// replaces the ledger row of the same member (a changed member).
pub async fn record_added(
    client: &Client,
    to: &BatchOf<'_>,
    (first, last): (i64, i64),
    progress: runs::BatchProgress,
    upsert: bool,
) -> Result<(), tokio_postgres::Error> {
    let upsert = if upsert {
        "ON CONFLICT (configuration_id, definition_id, member_key) DO UPDATE
            SET audience_id = EXCLUDED.audience_id, match_keys = EXCLUDED.match_keys,
                cells = EXCLUDED.cells, added_run_id = EXCLUDED.added_run_id, added_at = now(),
                source_tenant_id = EXCLUDED.source_tenant_id,
                source_customer_id = EXCLUDED.source_customer_id,
                source_digest = EXCLUDED.source_digest, filled = EXCLUDED.filled,
                invalid_keys = EXCLUDED.invalid_keys, filled_keys = EXCLUDED.filled_keys"
    } else {
        ""
    };
    client
        .execute(
            &format!(
                // The configuration row is locked once for the batch, as a foreign key would
                // for each row (see sql/0003_ledger_sources.sql).
                "WITH cfg AS (SELECT $6::int AS id WHERE cdp.hold_lease($6, $9)),
                      ins AS (
                     INSERT INTO cdp.facebook_audience_members {COLUMNS}
                     SELECT cfg.id, $10, $7, a.member_key, $8, a.cells, $1, a.tenant_id, a.customer_id, a.digest,
                            a.filled, a.invalid_keys, a.filled_keys
                       FROM cfg, sync_stage a WHERE a.seq BETWEEN $2 AND $3 AND a.upload
                      -- In key order, the ledger's index takes a batch much faster.
                      ORDER BY a.member_key
                     {upsert}
                     RETURNING 1)
                 {}, added = added + (SELECT count(*) FROM ins)
                  WHERE id = $1 AND EXISTS (SELECT 1 FROM cfg)",
                runs::COUNT_BATCH
            ),
            &[
                &to.run_id,
                &first,
                &last,
                &progress.received,
                &progress.invalid,
                &to.scope.configuration_id,
                &to.audience_id,
                &to.match_keys,
                &to.worker_id,
                &to.scope.definition_id,
            ],
        )
        .await?;
    Ok(())
}

/// An accepted batch of removals: the removal plan's rows `first..=last` of the batch's schema
/// leave the ledger (only where the ledger still holds those very cells) and the run row counts
/// them, in one statement.
pub async fn record_removed(
    client: &Client,
    from: &BatchOf<'_>,
    (first, last): (i64, i64),
    progress: runs::BatchProgress,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            &format!(
                "WITH cfg AS (SELECT $6::int AS id WHERE cdp.hold_lease($6, $8)),
                      del AS (
                     DELETE FROM cdp.facebook_audience_members m
                      USING sync_removes r, cfg
                      WHERE r.match_keys = $7 AND r.seq BETWEEN $2 AND $3
                        AND m.configuration_id = $6 AND m.definition_id = $9
                        AND m.member_key = r.member_key AND m.cells = r.cells
                     RETURNING 1)
                 {}, removed = removed + (SELECT count(*) FROM del)
                  WHERE id = $1 AND EXISTS (SELECT 1 FROM cfg)",
                runs::COUNT_BATCH
            ),
            &[
                &from.run_id,
                &first,
                &last,
                &progress.received,
                &progress.invalid,
                &from.scope.configuration_id,
                &from.match_keys,
                &from.worker_id,
                &from.scope.definition_id,
            ],
        )
        .await?;
    Ok(())
}

/// After the last replace batch the audience is exactly the uploaded set: so is the ledger. One
/// transaction, fenced on the lease; on any error it is rolled back, so the pooled connection is
/// never left in an aborted transaction. Returns the members now in the ledger.
pub async fn replace(client: &Client, with: &BatchOf<'_>) -> anyhow::Result<i64> {
    client
        .batch_execute("BEGIN")
        .await
        .context("Failed to start the ledger replacement")?;
    let replaced = async {
        client
            .execute(
                "SELECT cdp.hold_lease($1, $2)",
                &[&with.scope.configuration_id, &with.worker_id],
            )
            .await?;
        client
            .execute(
                "DELETE FROM cdp.facebook_audience_members
                  WHERE configuration_id = $1 AND definition_id = $2",
                &[&with.scope.configuration_id, &with.scope.definition_id],
            )
            .await?;
        let added = client
            .execute(
                &format!(
                    "INSERT INTO cdp.facebook_audience_members {COLUMNS}
                     SELECT $1, $5, $2, member_key, $3, cells, $4, tenant_id, customer_id, digest,
                            filled, invalid_keys, filled_keys
                       FROM sync_stage WHERE upload"
                ),
                &[
                    &with.scope.configuration_id,
                    &with.audience_id,
                    &with.match_keys,
                    &with.run_id,
                    &with.scope.definition_id,
                ],
            )
            .await? as i64;
        runs::set_added(client, with.run_id, added).await?;
        client.batch_execute("COMMIT").await?;
        Ok::<_, tokio_postgres::Error>(added)
    }
    .await;
    if replaced.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    replaced.context("Failed to replace the ledger")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_staged_rows_next_to_a_large_ledger_look_their_members_up_by_key() {
        let join = join("c.member_key", 5_000, 360_000);
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
            let join = join("g.member_key", staged, audience);
            assert!(join.starts_with("JOIN "), "{staged} vs {audience}: {join}");
        }
    }
}
