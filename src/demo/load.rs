//! Writes demo customers into the CDP's source tables with COPY, and adds the demo systems.
use std::fmt::Write as _;
use std::pin::pin;

use anyhow::{Context, bail};
use futures_util::SinkExt;

use super::generate::{DemoCustomer, customer};

/// The original design's three systems: (system_name, ad_account_id, tenant_ids).
pub const DEMO_SYSTEMS: [(&str, &str, &[i32]); 3] = [
    ("kangoo_system", "act_323379512251780", &[20, 25]),
    (
        "septimo_system",
        "act_881526052911252",
        &[100, 107, 112, 118],
    ),
    ("digitalfarma_system", "act_2850528471874859", &[28]),
];

/// Marks tables this generator created, so it never drops a real CDP's table.
const DEMO_MARK: &str = "cdp-meta-sync demo data";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub customers: u64,
    pub systems_added: u64,
}

/// (Re)creates `customers_master`, `cdp_rfm_analysis` and `cdp_clv_analysis` with `count`
/// customers, and inserts the demo systems (existing rows with those names are kept).
pub async fn load(
    client: &tokio_postgres::Client,
    count: u64,
    seed: u64,
) -> anyhow::Result<LoadReport> {
    refuse_foreign_tables(client).await?;
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS customers_master, cdp_rfm_analysis, cdp_clv_analysis;
             CREATE TABLE customers_master (
                 id BIGINT NOT NULL, tenant_id INTEGER NOT NULL,
                 email TEXT, phone TEXT, firstname TEXT, lastname TEXT,
                 city TEXT, state TEXT, zip TEXT, country TEXT,
                 birth_date DATE, gender TEXT, external_id TEXT,
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now());
             CREATE TABLE cdp_rfm_analysis (customer_id BIGINT NOT NULL, rfm_segment TEXT NOT NULL,
                 analyzed_at TIMESTAMPTZ NOT NULL DEFAULT now());
             CREATE TABLE cdp_clv_analysis (customer_id BIGINT NOT NULL, clv NUMERIC(12,2) NOT NULL);
             COMMENT ON TABLE customers_master IS '{DEMO_MARK}';
             COMMENT ON TABLE cdp_rfm_analysis IS '{DEMO_MARK}';
             COMMENT ON TABLE cdp_clv_analysis IS '{DEMO_MARK}';"
        ))
        .await
        .context("Failed to create the demo tables")?;

    copy_rows(
        client,
        "COPY customers_master (id, tenant_id, email, phone, firstname, lastname, city, state, zip, country, birth_date, gender, external_id) FROM STDIN",
        count,
        seed,
        |c, line| {
            let _ = write!(line, "{}\t{}", c.id, c.tenant_id);
            for field in [&c.email, &c.phone, &c.firstname, &c.lastname, &c.city, &c.state, &c.zip, &c.country] {
                push_field(line, field.as_deref());
            }
            // An impossible date cannot be stored in a DATE column: it is simply absent here.
            let date = c.birth_date.as_deref().filter(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok());
            push_field(line, date);
            push_field(line, c.gender.as_deref());
            push_field(line, c.external_id.as_deref());
        },
    )
    .await?;
    copy_rows(
        client,
        "COPY cdp_rfm_analysis (customer_id, rfm_segment) FROM STDIN",
        count,
        seed,
        |c, line| {
            let _ = write!(line, "{}\t{}", c.id, c.rfm_segment);
        },
    )
    .await?;
    copy_rows(
        client,
        "COPY cdp_clv_analysis (customer_id, clv) FROM STDIN",
        count,
        seed,
        |c, line| {
            let _ = write!(
                line,
                "{}\t{}.{:02}",
                c.id,
                c.clv_cents / 100,
                c.clv_cents % 100
            );
        },
    )
    .await?;

    client
        .batch_execute(
            "ALTER TABLE customers_master ADD PRIMARY KEY (id);
             CREATE INDEX customers_master_tenant ON customers_master (tenant_id);
             ALTER TABLE cdp_rfm_analysis ADD PRIMARY KEY (customer_id);
             ALTER TABLE cdp_clv_analysis ADD PRIMARY KEY (customer_id);
             ANALYZE customers_master, cdp_rfm_analysis, cdp_clv_analysis;",
        )
        .await
        .context("Failed to index the demo tables")?;

    let mut systems_added = 0;
    for (name, account, tenants) in DEMO_SYSTEMS {
        systems_added += client
            .execute(
                "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids, is_active, schedule_hours, default_country)
                 VALUES ($1, $2, $3, true, 48, 'AR') ON CONFLICT (system_name) DO NOTHING",
                &[&name, &account, &tenants],
            )
            .await
            .context("Failed to insert the demo systems (run `cdp-meta-sync migrate` first)")?;
    }
    Ok(LoadReport {
        customers: count,
        systems_added,
    })
}

async fn refuse_foreign_tables(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r'
               AND c.relname IN ('customers_master', 'cdp_rfm_analysis', 'cdp_clv_analysis')
               AND obj_description(c.oid, 'pg_class') IS DISTINCT FROM $1",
            &[&DEMO_MARK],
        )
        .await?;
    if let Some(row) = rows.first() {
        let table: String = row.get(0);
        bail!("table {table} exists and was not made by demo-data; refusing to replace it");
    }
    Ok(())
}

async fn copy_rows(
    client: &tokio_postgres::Client,
    statement: &str,
    count: u64,
    seed: u64,
    write_row: impl Fn(&DemoCustomer, &mut String),
) -> anyhow::Result<()> {
    const CHUNK: u64 = 20_000;
    let sink = client
        .copy_in::<_, bytes::Bytes>(statement)
        .await
        .context("Failed to start COPY")?;
    let mut sink = pin!(sink);
    let mut buffer = String::with_capacity(4 << 20);
    let mut line = String::with_capacity(512);
    for start in (1..=count).step_by(CHUNK as usize) {
        buffer.clear();
        for id in start..(start + CHUNK).min(count + 1) {
            line.clear();
            write_row(&customer(seed, id as i64), &mut line);
            buffer.push_str(&line);
            buffer.push('\n');
        }
        sink.send(bytes::Bytes::from(buffer.clone()))
            .await
            .context("COPY failed")?;
    }
    sink.finish().await.context("COPY failed")?;
    Ok(())
}

/// Appends a tab and the value in COPY text format (`\N` for NULL, escapes for `\`, tab, newline).
fn push_field(line: &mut String, value: Option<&str>) {
    line.push('\t');
    match value {
        None => line.push_str("\\N"),
        Some(v) => {
            for ch in v.chars() {
                match ch {
                    '\\' => line.push_str("\\\\"),
                    '\t' => line.push_str("\\t"),
                    '\n' => line.push_str("\\n"),
                    '\r' => line.push_str("\\r"),
                    c => line.push(c),
                }
            }
        }
    }
}
