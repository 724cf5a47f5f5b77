//! Queries on `cdp.facebook_configurations`: claiming due systems under a lease, renewing and
//! releasing it, and writing each run's outcome back to the columns operators watch.
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

/// The columns of `cdp.facebook_configurations` that drive one sync, as stored.
#[derive(Debug, Clone)]
pub struct SystemRow {
    pub id: i32,
    pub system_name: String,
    pub ad_account_id: String,
    pub tenant_ids: Vec<Option<i32>>,
    pub custom_audience_id: Option<String>,
    pub schedule_hours: Option<i32>,
    pub sync_mode: String,
    pub match_keys: Vec<Option<String>>,
    pub excluded_segments: Vec<Option<String>>,
    pub default_country: Option<String>,
    pub schedule_cron: Option<String>,
    pub audience_name: Option<String>,
    pub max_removal_share: Option<f64>,
    pub force_removals: bool,
    pub consecutive_failures: i32,
    pub adopt_mode: String,
    /// `alert_webhook_url`: where this system's alerts go (else `ALERT_WEBHOOK_URL`). It holds
    /// the webhook's secret, hence never printed.
    pub alert_webhook_url: Option<crate::secret::SecretString>,
    /// Consent: `opt_out_column` and `suppression_table` (see [`crate::sync::consent`]).
    pub opt_out_column: Option<String>,
    pub suppression_table: Option<String>,
    /// `token_ref`: the environment variable holding this system's Meta token (`None`: the
    /// worker's `FACEBOOK_ACCESS_TOKEN`). A name, never the token.
    pub token_ref: Option<String>,
    /// Columns that could not be read as their type (a 2-D array…), each a sentence: the row
    /// is then `invalid_config`, not a crash.
    pub unreadable: Vec<String>,
}

const COLUMNS: &str = "id, system_name, ad_account_id, tenant_ids, custom_audience_id, is_active, schedule_hours,
    sync_mode, match_keys, excluded_segments, default_country, schedule_cron, audience_name,
    max_removal_share::float8 AS max_removal_share, force_removals, consecutive_failures, adopt_mode,
    next_sync, alert_webhook_url, opt_out_column, suppression_table, token_ref";

/// Reads a claimed row. A column that does not decode (a 2-D array, a NULL element where none
/// is allowed) never panics: it takes its default and is named in `unreadable`, which makes the
/// row `invalid_config` (the lease is already taken; a panic here would keep it until expiry).
fn system_row(row: &Row) -> SystemRow {
    let mut unreadable = Vec::new();
    let mut read = ColumnReader {
        row,
        unreadable: &mut unreadable,
    };
    let system = SystemRow {
        id: read.get("id"),
        system_name: read.get("system_name"),
        ad_account_id: read.get("ad_account_id"),
        tenant_ids: read.get("tenant_ids"),
        custom_audience_id: read.get("custom_audience_id"),
        schedule_hours: read.get("schedule_hours"),
        sync_mode: read.get("sync_mode"),
        match_keys: read.get("match_keys"),
        excluded_segments: read.get("excluded_segments"),
        default_country: read.get("default_country"),
        schedule_cron: read.get("schedule_cron"),
        audience_name: read.get("audience_name"),
        max_removal_share: read.get("max_removal_share"),
        force_removals: read.get("force_removals"),
        consecutive_failures: read.get("consecutive_failures"),
        adopt_mode: read.get("adopt_mode"),
        alert_webhook_url: read
            .get::<Option<String>>("alert_webhook_url")
            .filter(|url| !url.trim().is_empty())
            .map(crate::secret::SecretString::from),
        opt_out_column: read.get("opt_out_column"),
        suppression_table: read.get("suppression_table"),
        token_ref: read.get("token_ref"),
        unreadable: Vec::new(),
    };
    SystemRow {
        unreadable,
        ..system
    }
}

/// Reads columns by name, collecting what does not decode instead of panicking.
pub struct ColumnReader<'a> {
    pub row: &'a Row,
    pub unreadable: &'a mut Vec<String>,
}

impl<'a> ColumnReader<'a> {
    pub fn get<T: tokio_postgres::types::FromSql<'a> + Default>(&mut self, name: &str) -> T {
        match self.row.try_get(name) {
            Ok(value) => value,
            Err(e) => {
                let why =
                    std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                self.unreadable
                    .push(format!("{name} cannot be read: {why}"));
                T::default()
            }
        }
    }
}

/// Takes a lease on up to `limit` due systems that no live lease holds, skipping rows another
/// worker is claiming at this instant.
pub async fn claim_due(
    client: &impl tokio_postgres::GenericClient,
    worker_id: &str,
    lease_secs: i64,
    limit: i64,
) -> Result<Vec<SystemRow>, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE cdp.facebook_configurations c
            SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2), sync_status = 'running'
          WHERE c.id IN (
                SELECT id FROM cdp.facebook_configurations
                 WHERE is_active IS TRUE
                   AND (next_sync IS NULL OR next_sync <= now())
                   AND (lease_expires_at IS NULL OR lease_expires_at < now())
                 ORDER BY next_sync NULLS FIRST, id
                 LIMIT $3
                   FOR UPDATE SKIP LOCKED)
        RETURNING {COLUMNS}"
    );
    let rows = client
        .query(&sql, &[&worker_id, &(lease_secs as f64), &limit])
        .await?;
    Ok(rows.iter().map(system_row).collect())
}

/// Why a named system could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("no system named '{0}'")]
    NotFound(String),
    #[error("system '{name}' is being synced by {owner} (lease until {until})")]
    Leased {
        name: String,
        owner: String,
        until: DateTime<Utc>,
    },
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

/// Takes the lease on one system by name, whatever its `next_sync` (a manual sync).
pub async fn claim_by_name(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
    worker_id: &str,
    lease_secs: i64,
) -> Result<SystemRow, ClaimError> {
    let sql = format!(
        "UPDATE cdp.facebook_configurations
            SET lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3), sync_status = 'running'
          WHERE system_name = $1 AND (lease_expires_at IS NULL OR lease_expires_at < now())
        RETURNING {COLUMNS}"
    );
    if let Some(row) = client
        .query_opt(&sql, &[&name, &worker_id, &(lease_secs as f64)])
        .await?
    {
        return Ok(system_row(&row));
    }
    let holder = client
        .query_opt(
            "SELECT lease_owner, lease_expires_at FROM cdp.facebook_configurations WHERE system_name = $1",
            &[&name],
        )
        .await?;
    match holder {
        None => Err(ClaimError::NotFound(name.to_string())),
        Some(row) => Err(ClaimError::Leased {
            name: name.to_string(),
            owner: row.get::<_, Option<String>>(0).unwrap_or_default(),
            until: row
                .get::<_, Option<DateTime<Utc>>>(1)
                .unwrap_or_else(Utc::now),
        }),
    }
}

/// Reads one system by name without claiming it (a dry run changes nothing, the lease included).
pub async fn read_by_name(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
) -> Result<Option<SystemRow>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM cdp.facebook_configurations WHERE system_name = $1");
    Ok(client
        .query_opt(&sql, &[&name])
        .await?
        .as_ref()
        .map(system_row))
}

/// Extends our lease; false when it is no longer ours (expired and taken over).
pub async fn renew_lease(
    client: &impl tokio_postgres::GenericClient,
    id: i32,
    worker_id: &str,
    lease_secs: i64,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "UPDATE cdp.facebook_configurations SET lease_expires_at = now() + make_interval(secs => $3)
              WHERE id = $1 AND lease_owner = $2",
            &[&id, &worker_id, &(lease_secs as f64)],
        )
        .await?;
    Ok(n == 1)
}

/// Stores the audience id as soon as it is known, before any upload, so that a crash never
/// leads to a second audience.
pub async fn store_audience_id(
    client: &impl tokio_postgres::GenericClient,
    id: i32,
    audience_id: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE cdp.facebook_configurations SET custom_audience_id = $2 WHERE id = $1",
            &[&id, &audience_id],
        )
        .await?;
    Ok(())
}

/// How a run ended, as written to the configuration row.
#[derive(Debug, Clone, PartialEq)]
pub enum SystemFinish {
    /// `success` or `partial` (removals held): the original columns as the original design set them.
    Synced {
        status: &'static str,
        next_sync: DateTime<Utc>,
        total_customers: i64,
        error_log: Option<String>,
        clear_force_removals: bool,
    },
    /// `failed` or `invalid_config`: a readable error, one more failure, and a backed-off retry.
    Failed {
        status: &'static str,
        error_log: String,
        next_sync: DateTime<Utc>,
    },
    /// `interrupted` (shutdown): stays due, so the next worker resumes it.
    Interrupted,
}

/// Writes the outcome and releases the lease, if it is still ours.
pub async fn finish(
    client: &impl tokio_postgres::GenericClient,
    id: i32,
    worker_id: &str,
    finish: &SystemFinish,
) -> Result<(), tokio_postgres::Error> {
    match finish {
        SystemFinish::Synced {
            status,
            next_sync,
            total_customers,
            error_log,
            clear_force_removals,
        } => {
            client
                .execute(
                    "UPDATE cdp.facebook_configurations
                        SET last_sync = now(), next_sync = $3, total_customers = $4, sync_status = $5,
                            error_log = cdp.with_token_warning($6, token_ref), consecutive_failures = 0,
                            force_removals = force_removals AND NOT $7,
                            lease_owner = NULL, lease_expires_at = NULL
                      WHERE id = $1 AND lease_owner = $2",
                    &[
                        &id,
                        &worker_id,
                        next_sync,
                        &i32::try_from(*total_customers).unwrap_or(i32::MAX),
                        status,
                        error_log,
                        clear_force_removals,
                    ],
                )
                .await?;
        }
        SystemFinish::Failed {
            status,
            error_log,
            next_sync,
        } => {
            client
                .execute(
                    "UPDATE cdp.facebook_configurations
                        SET sync_status = $3, error_log = cdp.with_token_warning($4, token_ref), next_sync = $5,
                            consecutive_failures = consecutive_failures + 1,
                            lease_owner = NULL, lease_expires_at = NULL
                      WHERE id = $1 AND lease_owner = $2",
                    &[&id, &worker_id, status, error_log, next_sync],
                )
                .await?;
        }
        SystemFinish::Interrupted => {
            client
                .execute(
                    "UPDATE cdp.facebook_configurations
                        SET sync_status = 'interrupted', lease_owner = NULL, lease_expires_at = NULL
                      WHERE id = $1 AND lease_owner = $2",
                    &[&id, &worker_id],
                )
                .await?;
        }
    }
    Ok(())
}
