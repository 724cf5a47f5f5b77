//! Claims on pending events (`cdp.conversion_event_claims`): the pump takes a batch under a lease
//! in one short transaction and holds no transaction and no row lock while it talks to Meta.
//!
//! A claimed event is not claimable again until its lease runs out (the worker died, or recording
//! its outcome failed) or, after a transient failure, until `not_before`. Each claim whose outcome
//! is never recorded counts in `sends`; the pump records an event `failed` rather than send it a
//! further time past [`super::verdict::MAX_UNRECORDED_SENDS`].
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::GenericClient;

use super::outbox::PixelSystem;

/// One claimed event: its row id, and how many claims (this one included) went unrecorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub row_id: i64,
    pub sends: i32,
}

/// What one claim took, and whether another pump's claim took some of the rows it found.
#[derive(Debug, Default)]
pub struct ClaimedBatch {
    pub claims: Vec<Claim>,
    /// Rows were pending when the claim looked, but another pump committed its claim on them
    /// first; an empty `claims` then does not mean that nothing is left.
    pub contended: bool,
}

/// Claims up to `limit` pending events of the system with ids above `after_id`, oldest first, in
/// one short transaction, and commits. Rows another transaction is claiming at this moment are
/// skipped (`SKIP LOCKED`), not waited for. A row whose other claim commits while this one reads
/// is locked here after all (the lock is free again) but not taken (`ON CONFLICT … WHERE`), and
/// the batch is marked `contended`.
///
/// `OFFSET 0` keeps both checks per-row index probes: walking events in id order and stopping at
/// `limit` takes milliseconds, where the hash anti-join the planner otherwise picks reads every
/// delivery of the system for each batch.
pub async fn claim_batch(
    client: &mut deadpool_postgres::Object,
    system: &PixelSystem,
    after_id: i64,
    limit: i64,
    worker_id: &str,
    lease: Duration,
) -> anyhow::Result<ClaimedBatch> {
    let lease_secs = lease.as_secs_f64();
    let tx = client
        .transaction()
        .await
        .context("Failed to start a claim")?;
    let row = tx
        .query_one(
            "WITH pending AS (
                 SELECT e.id FROM cdp.conversion_events e
                 WHERE e.tenant_id = ANY($1) AND e.id > $2
                   AND NOT EXISTS (SELECT 1 FROM cdp.conversion_event_deliveries d
                                   WHERE d.event_row_id = e.id AND d.configuration_id = $3
                                   OFFSET 0)
                   AND NOT EXISTS (SELECT 1 FROM cdp.conversion_event_claims c
                                   WHERE c.event_row_id = e.id AND c.configuration_id = $3
                                     AND (c.lease_until > now() OR c.not_before > now())
                                   OFFSET 0)
                 ORDER BY e.id
                 LIMIT $4
                 FOR NO KEY UPDATE OF e SKIP LOCKED
             ), claimed AS (
             INSERT INTO cdp.conversion_event_claims AS c
                 (event_row_id, configuration_id, claimed_by, lease_until)
             SELECT id, $3, $5, now() + make_interval(secs => $6) FROM pending
             ON CONFLICT (event_row_id, configuration_id) DO UPDATE
             SET claimed_by = EXCLUDED.claimed_by, claimed_at = now(),
                 lease_until = EXCLUDED.lease_until, sends = c.sends + 1
             WHERE c.lease_until <= now() AND c.not_before <= now()
             RETURNING c.event_row_id, c.sends)
             SELECT (SELECT count(*) FROM pending),
                    coalesce(array_agg(event_row_id), '{}'), coalesce(array_agg(sends), '{}')
             FROM claimed",
            &[
                &system.tenant_ids,
                &after_id,
                &system.configuration_id,
                &limit,
                &worker_id,
                &lease_secs,
            ],
        )
        .await
        .context("Failed to claim pending events")?;
    tx.commit().await.context("Failed to commit a claim")?;
    let found: i64 = row.get(0);
    let row_ids: Vec<i64> = row.get(1);
    let sends: Vec<i32> = row.get(2);
    let mut claims: Vec<Claim> = row_ids
        .into_iter()
        .zip(sends)
        .map(|(row_id, sends)| Claim { row_id, sends })
        .collect();
    claims.sort_by_key(|c| c.row_id);
    Ok(ClaimedBatch {
        contended: found > claims.len() as i64,
        claims,
    })
}

/// Inside the recording transaction: the claims of events that now have an outcome go away.
pub async fn drop_claims(
    tx: &impl GenericClient,
    configuration_id: i32,
    row_ids: &[i64],
) -> anyhow::Result<()> {
    if row_ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM cdp.conversion_event_claims
         WHERE configuration_id = $1 AND event_row_id = ANY($2)",
        &[&configuration_id, &row_ids],
    )
    .await
    .context("Failed to drop the claims of recorded events")?;
    Ok(())
}

/// Inside the recording transaction: events Meta did not take this time (an error that is not
/// theirs, or delivery stopped before them) are released for a later claim; with `backoff` (a
/// transient error) not before `backoff · 2^(failures-1)` (see [`super::verdict::retry_delay`]).
/// Their send does not count against the bound: Meta answered with an error, so nothing was
/// delivered (after a timeout it may have been; Meta deduplicates the resend).
pub async fn release_for_retry(
    tx: &impl GenericClient,
    configuration_id: i32,
    row_ids: &[i64],
    error: &str,
    backoff: Option<Duration>,
) -> anyhow::Result<()> {
    if row_ids.is_empty() {
        return Ok(());
    }
    let (base_secs, max_secs) = match backoff {
        Some(base) => (
            base.as_secs_f64(),
            super::verdict::retry_delay(base, i32::MAX).as_secs_f64(),
        ),
        None => (0.0, 0.0),
    };
    tx.execute(
        "UPDATE cdp.conversion_event_claims
         SET failures = failures + $6::int, sends = greatest(sends - 1, 0), lease_until = now(),
             not_before = now() + make_interval(secs => least($4::float8,
                                   $3::float8 * power(2, least(failures, 20)))),
             last_error = $5
         WHERE configuration_id = $1 AND event_row_id = ANY($2)",
        &[
            &configuration_id,
            &row_ids,
            &base_secs,
            &max_secs,
            &error,
            &(backoff.is_some() as i32),
        ],
    )
    .await
    .context("Failed to release events for a retry")?;
    Ok(())
}
