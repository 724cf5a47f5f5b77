//! Queries on `cdp.facebook_audiences`: a system's audience definitions, and each one's outcome
//! written back to the columns operators watch (as [`super::configurations`] does for the
//! system's own audience).
use tokio_postgres::{GenericClient, Row};

use super::configurations::ColumnReader;

/// The columns of `cdp.facebook_audiences` that drive one sync, as stored.
#[derive(Debug, Clone)]
pub struct DefinitionRow {
    pub id: i32,
    pub name: String,
    pub included_segments: Option<Vec<Option<String>>>,
    pub excluded_segments: Vec<Option<String>>,
    pub sync_mode: String,
    pub value_based: bool,
    pub custom_audience_id: Option<String>,
    pub max_removal_share: Option<f64>,
    pub force_removals: bool,
    /// Columns that could not be read as their type, each a sentence.
    pub unreadable: Vec<String>,
}

/// The system's active definitions, in id order (the order they sync in).
pub async fn active(
    client: &impl GenericClient,
    configuration_id: i32,
) -> Result<Vec<DefinitionRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM cdp.facebook_audiences
                  WHERE configuration_id = $1 AND is_active ORDER BY id"
            ),
            &[&configuration_id],
        )
        .await?;
    Ok(rows.iter().map(definition_row).collect())
}

/// The system's definition named `name`, active or not (for a dry run).
pub async fn by_name(
    client: &impl GenericClient,
    configuration_id: i32,
    name: &str,
) -> Result<Option<DefinitionRow>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM cdp.facebook_audiences WHERE configuration_id = $1 AND name = $2"),
            &[&configuration_id, &name],
        )
        .await?;
    Ok(row.as_ref().map(definition_row))
}

const COLUMNS: &str = "id, name, included_segments, excluded_segments, sync_mode, value_based,
    custom_audience_id, max_removal_share::float8 AS max_removal_share, force_removals";

/// A column that does not decode (a 2-D array) makes the definition `invalid_config`, not a crash.
fn definition_row(row: &Row) -> DefinitionRow {
    let mut unreadable = Vec::new();
    let mut read = ColumnReader {
        row,
        unreadable: &mut unreadable,
    };
    let definition = DefinitionRow {
        id: read.get("id"),
        name: read.get("name"),
        included_segments: read.get("included_segments"),
        excluded_segments: read.get("excluded_segments"),
        sync_mode: read.get("sync_mode"),
        value_based: read.get("value_based"),
        custom_audience_id: read.get("custom_audience_id"),
        max_removal_share: read.get("max_removal_share"),
        force_removals: read.get("force_removals"),
        unreadable: Vec::new(),
    };
    DefinitionRow {
        unreadable,
        ..definition
    }
}

/// Keeps the definition's audience id (found or created), so no run makes a second one.
pub async fn store_audience_id(
    client: &impl GenericClient,
    definition_id: i32,
    audience_id: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE cdp.facebook_audiences SET custom_audience_id = $2 WHERE id = $1",
            &[&definition_id, &audience_id],
        )
        .await?;
    Ok(())
}

/// Marks the definition `running` as its run starts.
pub async fn start(
    client: &impl GenericClient,
    definition_id: i32,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE cdp.facebook_audiences SET sync_status = 'running' WHERE id = $1",
            &[&definition_id],
        )
        .await?;
    Ok(())
}

/// How a definition's run ended, as written to its row.
#[derive(Debug, Clone, PartialEq)]
pub enum AudienceFinish {
    /// `success` or `partial`: the audience's size, and why it is partial.
    Synced {
        status: &'static str,
        total_customers: i64,
        error_log: Option<String>,
        clear_force_removals: bool,
    },
    /// `failed`, `invalid_config` or `interrupted`: the status, and why (kept from before when
    /// `None`).
    Stopped {
        status: &'static str,
        error_log: Option<String>,
    },
}

pub async fn finish(
    client: &impl GenericClient,
    definition_id: i32,
    finish: &AudienceFinish,
) -> Result<(), tokio_postgres::Error> {
    match finish {
        AudienceFinish::Synced {
            status,
            total_customers,
            error_log,
            clear_force_removals,
        } => {
            client
                .execute(
                    "UPDATE cdp.facebook_audiences
                        SET sync_status = $2, last_sync = now(), total_customers = $3, error_log = $4,
                            force_removals = force_removals AND NOT $5
                      WHERE id = $1",
                    &[
                        &definition_id,
                        status,
                        &i32::try_from(*total_customers).unwrap_or(i32::MAX),
                        error_log,
                        clear_force_removals,
                    ],
                )
                .await?;
        }
        AudienceFinish::Stopped { status, error_log } => {
            client
                .execute(
                    "UPDATE cdp.facebook_audiences
                        SET sync_status = $2, error_log = coalesce($3, error_log)
                      WHERE id = $1",
                    &[&definition_id, status, error_log],
                )
                .await?;
        }
    }
    Ok(())
}
