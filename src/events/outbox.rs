//! Every SQL statement on the outbox, its per-system deliveries and delivery runs (the claims
//! that lease a batch to one worker are in `lease.rs`).
//!
//! An event is pending for a system while it belongs to one of the system's tenants and has no
//! row in `cdp.conversion_event_deliveries` for that system. A batch is claimed in one short
//! transaction, sent with no transaction open, and its outcomes recorded in another short one: a
//! crash in between leaves the batch claimed until its lease runs out, then it is resent with the
//! same `event_id`s (Meta deduplicates), a bounded number of times.
use anyhow::Context;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::payload::{Identity, OutboxEvent, ProcessingOptions};
use crate::db::configurations::ColumnReader;
use crate::sync::source::Catalog;

/// An active system with a pixel: where its tenants' events go, and how.
#[derive(Debug, Clone)]
pub struct PixelSystem {
    pub configuration_id: i32,
    pub system_name: String,
    pub pixel_id: String,
    pub tenant_ids: Vec<i32>,
    pub default_country: Option<String>,
    pub test_event_code: Option<String>,
    pub partner_agent: Option<String>,
    pub processing: ProcessingOptions,
}

pub async fn pixel_systems(client: &impl GenericClient) -> anyhow::Result<Vec<PixelSystem>> {
    let rows = client
        .query(
            "SELECT id, system_name, pixel_id, tenant_ids, default_country,
                    NULLIF(btrim(test_event_code), '') AS test_event_code,
                    NULLIF(btrim(partner_agent), '') AS partner_agent,
                    data_processing_options, data_processing_options_country,
                    data_processing_options_state
             FROM cdp.facebook_configurations
             WHERE is_active IS TRUE AND NULLIF(btrim(pixel_id), '') IS NOT NULL
             ORDER BY id",
            &[],
        )
        .await
        .context("Failed to read the systems with a pixel_id")?;
    Ok(rows.iter().filter_map(pixel_system).collect())
}

/// One system's row; a row with a column that does not decode (a 2-D array, a NULL tenant or
/// processing option) is left out with a warning, so the other systems' events still flow.
fn pixel_system(r: &Row) -> Option<PixelSystem> {
    let mut unreadable = Vec::new();
    let mut read = ColumnReader {
        row: r,
        unreadable: &mut unreadable,
    };
    let tenant_ids: Vec<Option<i32>> = read.get("tenant_ids");
    let options: Option<Vec<Option<String>>> = read.get("data_processing_options");
    let system = PixelSystem {
        configuration_id: read.get("id"),
        system_name: read.get("system_name"),
        pixel_id: read.get::<String>("pixel_id").trim().to_string(),
        tenant_ids: tenant_ids.iter().flatten().copied().collect(),
        default_country: read.get("default_country"),
        test_event_code: read.get("test_event_code"),
        partner_agent: read.get("partner_agent"),
        processing: ProcessingOptions {
            data_processing_options: options
                .as_ref()
                .map(|o| o.iter().flatten().cloned().collect()),
            country: read.get("data_processing_options_country"),
            state: read.get("data_processing_options_state"),
        },
    };
    if tenant_ids.contains(&None) {
        unreadable.push("tenant_ids must not contain NULL".to_string());
    }
    if options.is_some_and(|o| o.contains(&None)) {
        unreadable.push("data_processing_options must not contain NULL".to_string());
    }
    if unreadable.is_empty() {
        return Some(system);
    }
    tracing::warn!(
        configuration_id = system.configuration_id,
        problems = %unreadable.join("; "),
        "a system's configuration cannot be read; its events stay pending until it is fixed"
    );
    None
}

/// How an event's customer is looked up in the CDP's `customers_master` (events with a
/// `customer_id` take their identity from it): the select list of what that table has, `None`
/// when there is no such table. Read from the catalog, so a CDP with only the original design's
/// columns works (see [`crate::sync::source`]).
pub async fn customer_lookup(client: &tokio_postgres::Client) -> anyhow::Result<Option<String>> {
    Ok(Catalog::read(client).await?.customer_identity())
}

const EVENT_COLUMNS: &str = "e.id, e.event_name,
    CASE WHEN isfinite(e.event_time) THEN e.event_time END, e.action_source, e.event_id,
    e.event_source_url, e.email, e.phone, e.first_name, e.last_name, e.city, e.state, e.zip,
    e.country, e.birth_date, e.gender, e.external_id, e.client_ip_address, e.client_user_agent,
    e.fbc, e.fbp, e.value::float8, e.currency, e.order_id, e.contents, e.custom_data, e.user_data";

/// A claimed batch as read: the events that can be sent, and those that cannot even be read (an
/// `event_time` of `infinity`…), each with the reason, to be recorded as rejected.
#[derive(Debug, Default)]
pub struct PendingBatch {
    pub events: Vec<OutboxEvent>,
    pub unreadable: Vec<(i64, String)>,
}

/// The events `row_ids` (claimed by this worker), in id order. `customers`: the select list of
/// [`customer_lookup`], when there is a `customers_master`.
pub async fn claimed_events(
    client: &impl GenericClient,
    row_ids: &[i64],
    customers: Option<&str>,
) -> anyhow::Result<PendingBatch> {
    let (customer_columns, customer_join) = match customers {
        Some(list) => (
            format!(", c.id IS NOT NULL, {list}"),
            "LEFT JOIN customers_master c ON c.id = e.customer_id AND c.tenant_id = e.tenant_id",
        ),
        None => (String::new(), ""),
    };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} {customer_columns}
         FROM cdp.conversion_events e {customer_join}
         WHERE e.id = ANY($1)
         ORDER BY e.id"
    );
    let rows = client
        .query(&sql, &[&row_ids])
        .await
        .context("Failed to read claimed events")?;
    let mut batch = PendingBatch::default();
    for r in &rows {
        let row_id: i64 = r.try_get(0).context("An event id could not be read")?;
        match event_from_row(r, customers.is_some()) {
            Ok(event) => batch.events.push(event),
            Err(reason) => batch.unreadable.push((row_id, reason)),
        }
    }
    Ok(batch)
}

/// One event, or why it cannot be read (in plain words, naming the column, never its value).
fn event_from_row(r: &Row, with_customers: bool) -> Result<OutboxEvent, String> {
    let get = |i: usize| {
        move |e: tokio_postgres::Error| {
            format!("column {} cannot be read: {e}", r.columns()[i].name())
        }
    };
    macro_rules! col {
        ($i:expr) => {
            r.try_get($i).map_err(get($i))?
        };
    }
    let identity_at = |i: usize| -> Result<Identity, String> {
        Ok(Identity {
            email: col!(i),
            phone: col!(i + 1),
            first_name: col!(i + 2),
            last_name: col!(i + 3),
            city: col!(i + 4),
            state: col!(i + 5),
            zip: col!(i + 6),
            country: col!(i + 7),
            birth_date: col!(i + 8),
            gender: col!(i + 9),
            external_id: col!(i + 10),
        })
    };
    let has_customer: Option<bool> = if with_customers { col!(27) } else { None };
    let customer = match has_customer {
        Some(true) => Some(identity_at(28)?),
        _ => None,
    };
    let event_time: Option<chrono::DateTime<Utc>> = col!(2);
    Ok(OutboxEvent {
        row_id: col!(0),
        event_name: col!(1),
        event_time: event_time.ok_or("event_time is not a finite time (infinity?)")?,
        action_source: col!(3),
        event_id: col!(4),
        event_source_url: col!(5),
        identity: identity_at(6)?,
        customer,
        client_ip_address: col!(17),
        client_user_agent: col!(18),
        fbc: col!(19),
        fbp: col!(20),
        value: col!(21),
        currency: col!(22),
        order_id: col!(23),
        contents: col!(24),
        custom_data: col!(25),
        user_data: col!(26),
    })
}

/// The final state of one event for one system.
#[derive(Debug, Clone, PartialEq)]
pub struct EventOutcome {
    pub row_id: i64,
    /// `sent`, `rejected`, `expired` or `failed`.
    pub status: &'static str,
    pub attempts: i32,
    pub error: Option<String>,
    pub fbtrace_id: Option<String>,
}

/// Per-batch counts added to the delivery run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    pub sent: i64,
    pub accepted: i64,
    pub rejected: i64,
    pub expired: i64,
    pub failed: i64,
    /// Undocumented `user_data` keys left out of the events sent.
    pub dropped_keys: i64,
}

/// Records the outcomes (deliveries, the events' summary columns, the run's counters).
pub async fn record_outcomes(
    tx: &impl GenericClient,
    configuration_id: i32,
    run_id: i64,
    outcomes: &[EventOutcome],
    counts: BatchCounts,
) -> anyhow::Result<()> {
    if !outcomes.is_empty() {
        let ids: Vec<i64> = outcomes.iter().map(|o| o.row_id).collect();
        let statuses: Vec<&str> = outcomes.iter().map(|o| o.status).collect();
        let attempts: Vec<i32> = outcomes.iter().map(|o| o.attempts).collect();
        let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.error.as_deref()).collect();
        let traces: Vec<Option<&str>> = outcomes.iter().map(|o| o.fbtrace_id.as_deref()).collect();
        tx.execute(
            "INSERT INTO cdp.conversion_event_deliveries AS d
                 (event_row_id, configuration_id, status, attempts, last_error, fbtrace_id,
                  delivery_run_id)
             SELECT i, $1, s, a, err, t, $2
             FROM UNNEST($3::bigint[], $4::text[], $5::int[], $6::text[], $7::text[])
                  AS o(i, s, a, err, t)
             ON CONFLICT (event_row_id, configuration_id) DO UPDATE
             SET status = EXCLUDED.status, attempts = d.attempts + EXCLUDED.attempts,
                 last_error = EXCLUDED.last_error, fbtrace_id = EXCLUDED.fbtrace_id,
                 delivery_run_id = EXCLUDED.delivery_run_id, updated_at = now()",
            &[
                &configuration_id,
                &run_id,
                &ids,
                &statuses,
                &attempts,
                &errors,
                &traces,
            ],
        )
        .await
        .context("Failed to record event deliveries")?;
        tx.execute(
            "UPDATE cdp.conversion_events e
             SET status = o.s, attempts = e.attempts + o.a, last_error = o.err,
                 fbtrace_id = COALESCE(o.t, e.fbtrace_id),
                 sent_at = CASE WHEN o.s = 'sent' THEN now() ELSE e.sent_at END,
                 updated_at = now()
             FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[])
                  AS o(i, s, a, err, t)
             WHERE e.id = o.i
               -- A row from before the event_id check (0005, NOT VALID) cannot be updated at all:
               -- its delivery row above carries the outcome.
               AND btrim(e.event_id, E' \\t\\n\\r\\f\\x0B') <> ''",
            &[&ids, &statuses, &attempts, &errors, &traces],
        )
        .await
        .context("Failed to update the events' status")?;
    }
    tx.execute(
        "UPDATE cdp.conversion_delivery_runs
         SET batches = batches + 1, sent = sent + $2, accepted = accepted + $3,
             rejected = rejected + $4, expired = expired + $5, failed = failed + $6,
             dropped_user_data_keys = dropped_user_data_keys + $7
         WHERE id = $1",
        &[
            &run_id,
            &counts.sent,
            &counts.accepted,
            &counts.rejected,
            &counts.expired,
            &counts.failed,
            &counts.dropped_keys,
        ],
    )
    .await
    .context("Failed to count the batch in its delivery run")?;
    Ok(())
}

pub async fn start_run(
    client: &impl GenericClient,
    system: &PixelSystem,
    worker_id: &str,
) -> anyhow::Result<i64> {
    let row = client
        .query_one(
            "INSERT INTO cdp.conversion_delivery_runs (configuration_id, pixel_id, worker_id)
             VALUES ($1, $2, $3) RETURNING id",
            &[&system.configuration_id, &system.pixel_id, &worker_id],
        )
        .await
        .context("Failed to record the start of a delivery run")?;
    Ok(row.get(0))
}

pub async fn finish_run(
    client: &impl GenericClient,
    run_id: i64,
    error: Option<&str>,
) -> anyhow::Result<()> {
    client
        .execute(
            "UPDATE cdp.conversion_delivery_runs SET finished_at = now(), error = $2 WHERE id = $1",
            &[&run_id, &error],
        )
        .await
        .context("Failed to record the end of a delivery run")?;
    Ok(())
}

/// One system's backlog, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PendingSummary {
    pub system_name: String,
    pub pending: i64,
    /// The oldest pending event's `event_time` (how close the backlog is to expiring).
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// Pending events per active system with a pixel.
pub async fn pending_by_system(
    client: &tokio_postgres::Client,
) -> anyhow::Result<Vec<PendingSummary>> {
    let rows = client
        .query(
            "SELECT f.system_name, count(e.id), min(e.event_time)
             FROM cdp.facebook_configurations f
             LEFT JOIN cdp.conversion_events e
                    ON e.tenant_id = ANY(f.tenant_ids)
                   AND NOT EXISTS (SELECT 1 FROM cdp.conversion_event_deliveries d
                                   WHERE d.event_row_id = e.id AND d.configuration_id = f.id)
             WHERE f.is_active IS TRUE AND NULLIF(btrim(f.pixel_id), '') IS NOT NULL
             GROUP BY f.id, f.system_name
             ORDER BY f.system_name",
            &[],
        )
        .await
        .context("Failed to count pending events")?;
    Ok(rows
        .iter()
        .map(|r| PendingSummary {
            system_name: r.get(0),
            pending: r.get(1),
            oldest_pending: r.get(2),
        })
        .collect())
}
