//! Writes demo customers into the CDP's source tables with COPY, and adds the demo systems.
use std::fmt::Write as _;
use std::pin::pin;

use anyhow::{Context, bail};
use futures_util::SinkExt;

use super::generate::{DemoCustomer, customer};
use crate::sync::source::IDENTITY_COLUMN_NAMES;

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

/// Which columns the demo's `customers_master` has: the smallest CDP the original design
/// allows, that plus location, or every column the worker knows (the demo's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schema {
    /// `id, tenant_id, email, phone, firstname, lastname` (the original design's query), the
    /// systems inserted with the original `INSERT` (no `default_country`).
    Original,
    /// [`Schema::Original`] plus `city, state, zip, country`.
    OriginalWithLocation,
    /// Every identity column, and `default_country = 'AR'` on the systems.
    #[default]
    Rich,
}

impl Schema {
    /// The customer columns besides `id, tenant_id`, in COPY order.
    fn customer_columns(self) -> &'static [&'static str] {
        // The identity columns the worker reads, as the CDP names them.
        let rich = &IDENTITY_COLUMN_NAMES;
        match self {
            Schema::Original => &rich[..4],
            Schema::OriginalWithLocation => &rich[..8],
            Schema::Rich => rich,
        }
    }

    /// The table definitions, typed as such a CDP would type them.
    fn ddl(self) -> &'static str {
        match self {
            Schema::Original => {
                "CREATE TABLE customers_master (
                     id INTEGER NOT NULL, tenant_id INTEGER NOT NULL,
                     email VARCHAR(255), phone VARCHAR(50), firstname VARCHAR(100), lastname VARCHAR(100));"
            }
            Schema::OriginalWithLocation => {
                "CREATE TABLE customers_master (
                     id INTEGER NOT NULL, tenant_id INTEGER NOT NULL,
                     email VARCHAR(255), phone VARCHAR(50), firstname VARCHAR(100), lastname VARCHAR(100),
                     city VARCHAR(100), state VARCHAR(100), zip VARCHAR(20), country VARCHAR(50));"
            }
            Schema::Rich => {
                "CREATE TABLE customers_master (
                     id BIGINT NOT NULL, tenant_id INTEGER NOT NULL,
                     email TEXT, phone TEXT, firstname TEXT, lastname TEXT,
                     city TEXT, state TEXT, zip TEXT, country TEXT,
                     birth_date DATE, gender TEXT, external_id TEXT,
                     created_at TIMESTAMPTZ NOT NULL DEFAULT now());"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub customers: u64,
    pub systems_added: u64,
}

/// (Re)creates `customers_master` (with the columns of `schema`), `cdp_rfm_analysis` and
/// `cdp_clv_analysis` with `count` customers, and inserts the demo systems (existing rows with
/// those names are kept).
pub async fn load(
    client: &tokio_postgres::Client,
    count: u64,
    seed: u64,
    schema: Schema,
) -> anyhow::Result<LoadReport> {
    refuse_foreign_tables(client).await?;
    let (id_type, segment_type) = match schema {
        Schema::Rich => ("BIGINT", "TEXT"),
        _ => ("INTEGER", "VARCHAR(50)"),
    };
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS customers_master, cdp_rfm_analysis, cdp_clv_analysis;
             {}
             CREATE TABLE cdp_rfm_analysis (customer_id {id_type} NOT NULL, rfm_segment {segment_type} NOT NULL);
             CREATE TABLE cdp_clv_analysis (customer_id {id_type} NOT NULL, clv NUMERIC(12,2) NOT NULL);
             COMMENT ON TABLE customers_master IS '{DEMO_MARK}';
             COMMENT ON TABLE cdp_rfm_analysis IS '{DEMO_MARK}';
             COMMENT ON TABLE cdp_clv_analysis IS '{DEMO_MARK}';",
            schema.ddl()
        ))
        .await
        .context("Failed to create the demo tables")?;

    let columns = schema.customer_columns();
    copy_rows(
        client,
        &format!(
            "COPY customers_master (id, tenant_id, {}) FROM STDIN",
            columns.join(", ")
        ),
        count,
        seed,
        |c, line| {
            let _ = write!(line, "{}\t{}", c.id, c.tenant_id);
            for column in columns {
                push_field(line, c.value(column));
            }
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

    // The rich demo knows its country; the original design's INSERT does not say one.
    let default_country = (schema == Schema::Rich).then_some("AR");
    let mut systems_added = 0;
    for (name, account, tenants) in DEMO_SYSTEMS {
        systems_added += client
            .execute(
                "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids, is_active, schedule_hours, default_country)
                 VALUES ($1, $2, $3, true, 48, $4) ON CONFLICT (system_name) DO NOTHING",
                &[&name, &account, &tenants, &default_country],
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
