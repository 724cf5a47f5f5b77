//! The run's extraction query: the operator's (`EXTRACT_SQL_FILE`) or one built from the CDP's
//! columns, with the customers the consent rule suppresses filtered out. A CDP without the columns
//! the keys need, or a consent rule naming what it lacks, is a configuration problem, found before
//! any audience exists.
use std::sync::Arc;

use super::consent;
use super::context::SyncContext;
use super::error::SyncError;
use super::source::Catalog;
use super::system::SyncPlan;

pub struct SourceQuery {
    pub sql: Arc<str>,
    /// Customers the consent rule keeps out (never staged nor streamed).
    pub suppressed: i64,
}

pub async fn source_query(
    ctx: &SyncContext,
    extract: &tokio_postgres::Client,
    plan: &SyncPlan,
) -> Result<SourceQuery, SyncError> {
    // One catalog query tells what the CDP has: for the default extraction and the consent rule.
    let consent_tables = plan.consent.as_ref().map_or_else(Vec::new, |c| c.tables());
    let catalog = Catalog::read_with(extract, &consent_tables).await?;
    let sql: Arc<str> = match &ctx.extract_sql {
        Some(sql) => sql.clone(),
        None => catalog
            .default_extraction(&plan.match_keys)
            .map_err(SyncError::config)?
            .into(),
    };
    let Some(rule) = &plan.consent else {
        return Ok(SourceQuery { sql, suppressed: 0 });
    };
    let problems = rule.check(&catalog);
    if !problems.is_empty() {
        return Err(SyncError::config(problems));
    }
    let suppressed = consent::count_suppressed(
        extract,
        rule,
        &sql,
        &plan.tenant_ids,
        &plan.excluded_segments,
    )
    .await?;
    Ok(SourceQuery {
        sql: Arc::from(rule.filter(&sql)),
        suppressed,
    })
}
