//! `sync --system NAME --dry-run`: what a sync would send, computed as a sync computes it, with
//! nothing written at Meta or in the worker's tables.
//!
//! The system is read, not claimed (no lease, no status change, no run row). The audience is the
//! stored one or one found by name (a read); none means the run would create it. Extraction,
//! hashing, staging and the diff run as in a sync, on one connection inside a transaction that is
//! rolled back, and the diff leaves the ledger's source columns as they are. The first batch of
//! each direction is shown as the request body Meta would receive, without the token.
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::changes::{Changes, plan_changes};
use super::context::SyncContext;
use super::error::SyncError;
use super::outcome::Outcome;
use super::query::source_query;
use super::sessions::adopts;
use super::stage::stage_members;
use super::system::SyncMode;
use crate::db::audiences::DefinitionRow;
use crate::db::configurations::SystemRow;
use crate::db::{ledger, runs};
use crate::meta::{UploadSession, UsersUpload};

/// Rows of each direction shown in a request body (a real batch holds up to 10,000).
pub const SHOWN_ROWS: i64 = 3;

/// What a sync of the system would do now.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub system_name: String,
    /// The audience id, or `None`: the run would create `audience_name`.
    pub audience_id: Option<String>,
    pub audience_name: String,
    /// The mode the run would use (`replace` when it adopts an audience it did not fill).
    pub mode: &'static str,
    pub extracted: i64,
    pub eligible: i64,
    pub suppressed: i64,
    pub to_add: i64,
    pub to_remove: i64,
    /// `None`: removals go ahead; else why the removal guard would hold them.
    pub removals_held: Option<String>,
    /// The first request body of each direction that sends anything, as Meta would receive it.
    pub first_requests: Vec<Request>,
}

/// One request a sync would make.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    /// Rows in the whole batch; the body shows at most [`SHOWN_ROWS`] of them.
    pub batch_rows: i64,
    pub body: Value,
}

/// Plans a sync of `row`'s own audience, or of one of its definitions, and reports it. A row
/// that does not validate is `invalid_config` (returned as the outcome a sync would end with).
pub async fn dry_run(
    ctx: &SyncContext,
    row: SystemRow,
    definition: Option<&DefinitionRow>,
) -> Result<DryRun, Outcome> {
    let invalid = |problems: Vec<String>| Outcome::InvalidConfig(problems.join("; "));
    let plan = row.validate().map_err(invalid)?;
    let plan = match definition {
        None => plan,
        Some(definition) => {
            super::audience_runs::with_segments(ctx, definition.plan(&plan).map_err(invalid)?)
                .await?
        }
    };
    let meta = super::tokens::client_for(ctx, plan.token_ref.as_deref()).await?;
    planned(ctx, &meta, &plan).await.map_err(Outcome::from)
}

async fn planned(
    ctx: &SyncContext,
    meta: &crate::meta::MetaClient,
    plan: &super::system::SyncPlan,
) -> Result<DryRun, SyncError> {
    let extract = ctx.pool.get().await?;
    let query = source_query(ctx, &extract, plan).await?;
    let audience_id = match &plan.custom_audience_id {
        Some(id) => Some(id.clone()),
        None => {
            meta.find_audience_by_name(&plan.ad_account_id, &plan.audience_name)
                .await?
        }
    };
    let stage = ctx.pool.get().await?;
    stage.batch_execute("BEGIN").await?;
    let planned = plan_in(
        ctx,
        &extract,
        &stage,
        plan,
        &query.sql,
        audience_id.as_deref(),
    )
    .await;
    // Everything the plan wrote (its session tables) goes; nothing else was written.
    let rolled_back = stage.batch_execute("ROLLBACK").await;
    let (mode, changes, extracted, first_requests) = planned?;
    rolled_back?;
    let suppressed = query.suppressed;
    Ok(DryRun {
        system_name: plan.label(),
        audience_id,
        audience_name: plan.audience_name.clone(),
        mode: mode.as_str(),
        extracted,
        eligible: changes.planned.eligible,
        suppressed,
        to_add: changes.planned.to_add,
        to_remove: changes.planned.to_remove,
        removals_held: changes.held.map(|(why, _)| why),
        first_requests,
    })
}

type Planned = (SyncMode, Changes, i64, Vec<Request>);

async fn plan_in(
    ctx: &SyncContext,
    extract: &tokio_postgres::Client,
    stage: &tokio_postgres::Client,
    plan: &super::system::SyncPlan,
    sql: &str,
    audience_id: Option<&str>,
) -> Result<Planned, SyncError> {
    let expected = runs::last_extracted(stage, plan.scope()).await?;
    let ledger_empty = ledger::is_empty(stage, plan.scope()).await?;
    // As a sync decides it: an audience it did not fill is replaced on its first run.
    let mode = if adopts(plan, ledger_empty, audience_id.is_some()) {
        SyncMode::Replace
    } else {
        plan.mode
    };
    let cancel = CancellationToken::new();
    let staged = stage_members(extract, stage, sql, plan, expected as usize, None, &cancel).await?;
    let changes = plan_changes(
        ctx,
        stage,
        plan,
        mode,
        &staged,
        staged.ledger_members,
        false,
    )
    .await?;
    let keys = plan.schema();
    let schema: Vec<&str> = keys.split(',').collect();
    let mut requests = Vec::new();
    let batch = ctx.settings.worker.upload_batch_rows.clamp(1, 10_000) as i64;
    let removals = stage
        .query(
            "SELECT match_keys, cells FROM sync_removes ORDER BY match_keys, seq LIMIT $1",
            &[&SHOWN_ROWS],
        )
        .await?;
    if let Some(first) = removals.first() {
        let schema_of: String = first.get(0);
        let rows: Vec<Vec<u8>> = removals
            .iter()
            .filter(|r| r.get::<_, String>(0) == schema_of)
            .map(|r| r.get(1))
            .collect();
        let remove_schema: Vec<&str> = schema_of.split(',').collect();
        requests.push(request(
            "DELETE",
            audience_id,
            "users",
            &remove_schema,
            &rows,
            changes.planned.to_remove.min(batch),
        ));
    }
    let additions = stage
        .query(
            "SELECT cells FROM sync_stage WHERE upload ORDER BY seq LIMIT $1",
            &[&SHOWN_ROWS],
        )
        .await?;
    if changes.planned.to_add > 0 && !additions.is_empty() {
        let rows: Vec<Vec<u8>> = additions.iter().map(|r| r.get(0)).collect();
        let (method, edge) = if changes.replacing {
            ("POST", "usersreplace")
        } else {
            ("POST", "users")
        };
        requests.push(request(
            method,
            audience_id,
            edge,
            &schema,
            &rows,
            changes.planned.to_add.min(batch),
        ));
    }
    Ok((mode, changes, staged.tally.rows as i64, requests))
}

fn request(
    method: &'static str,
    audience_id: Option<&str>,
    edge: &str,
    schema: &[&str],
    rows: &[Vec<u8>],
    batch_rows: i64,
) -> Request {
    let mut packed = super::cells::PackedRows::default();
    for cells in rows {
        packed.push(cells);
    }
    let body = UsersUpload {
        schema,
        rows: &packed,
        session: UploadSession {
            session_id: 0,
            batch_seq: 1,
            last_batch_flag: false,
            estimated_num_total: None,
        },
    }
    .body_preview();
    let audience = audience_id.unwrap_or("{new audience}");
    Request {
        method,
        path: format!("/{audience}/{edge}"),
        batch_rows,
        body,
    }
}

impl DryRun {
    /// The report as an operator reads it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let audience = match &self.audience_id {
            Some(id) => format!("audience {id}"),
            None => format!("a new audience '{}' (would be created)", self.audience_name),
        };
        let _ = writeln!(
            out,
            "dry run of {}: nothing is sent to Meta or written to the database",
            self.system_name
        );
        let _ = writeln!(out, "  target:     {audience}, mode {}", self.mode);
        let _ = writeln!(
            out,
            "  source:     {} customers extracted, {} eligible members, {} suppressed by consent",
            self.extracted, self.eligible, self.suppressed
        );
        let _ = writeln!(out, "  would add:    {}", self.to_add);
        let _ = writeln!(out, "  would remove: {}", self.to_remove);
        let _ = match &self.removals_held {
            Some(why) => writeln!(out, "  removal guard: would HOLD removals: {why}"),
            None => writeln!(out, "  removal guard: removals would go ahead"),
        };
        for r in &self.first_requests {
            let shown = r.body["payload"]["data"].as_array().map_or(0, Vec::len);
            let _ = writeln!(
                out,
                "\nfirst request: {} {} ({} rows in the batch, {shown} shown; the token travels in the body and is not shown)",
                r.method, r.path, r.batch_rows
            );
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&r.body).unwrap_or_default()
            );
        }
        out
    }
}
