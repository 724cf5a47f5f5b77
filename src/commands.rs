//! What each subcommand does, once settings are loaded: the glue between the CLI and the library.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{Command, DemoSchema, EventsCommand};
use crate::configuration::{RunMode, Settings};
use crate::db;
use crate::events::EventPump;
use crate::meta::MetaClient;
use crate::scheduler;
use crate::sync::{Outcome, SyncContext, Trigger};

pub async fn execute(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Migrate => migrate(&settings).await,
        Command::DemoData {
            customers,
            seed,
            schema,
        } => demo_data(&settings, customers, seed, schema).await,
        Command::Run { once } => {
            if once || settings.worker.run_mode == RunMode::Once {
                run_once(settings).await
            } else {
                run_scheduler(settings).await
            }
        }
        Command::Sync {
            system,
            dry_run: true,
            audience,
        } => dry_run(settings, &system, audience.as_deref()).await,
        Command::Sync { system, .. } => sync_one(settings, &system).await,
        Command::Status { json } => status(&settings, json).await,
        Command::Normalize { key, country } => normalize(&key, country.as_deref()),
        Command::Events {
            command:
                EventsCommand::Import {
                    map,
                    tenant,
                    rejects,
                    files,
                },
        } => crate::events::import::run(&settings, &map, tenant, rejects, &files).await,
    }
}

fn sync_context(settings: Settings) -> anyhow::Result<SyncContext> {
    let token = settings.meta.require_access_token()?;
    let meta = MetaClient::new(&settings.meta, token).context("Failed to build the Meta client")?;
    crate::sync::context(settings, meta)
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let mut client = db::connect_single(&settings.database).await?;
    let report = db::migrate::run(&mut client)
        .await
        .context("Migration failed")?;
    tracing::info!(applied = ?report.applied, already_applied = report.already_applied, "migrations done");
    if let Some(rows) = report.adopted_rows {
        println!(
            "adopted the original worker's cdp.facebook_configurations in place: {rows} rows kept"
        );
        for (system, was, now) in &report.mapped_statuses {
            println!("  {system}: sync_status '{was}' is now '{now}' (kept in legacy_sync_status)");
        }
    }
    println!(
        "migrations: {} applied, {} already applied",
        report.applied.len(),
        report.already_applied
    );
    Ok(())
}

async fn run_once(settings: Settings) -> anyhow::Result<()> {
    let ctx = sync_context(settings)?;
    let shutdown = shutdown_on_signal();
    // Every token in use is checked first: warnings recorded, expired tokens fail at once.
    if let Err(e) = crate::sync::tokens::check_all(&ctx).await {
        tracing::warn!(error = %db::describe(&e), "token check failed");
    }
    let reports = scheduler::run_due(&ctx, Trigger::Once, &shutdown).await?;
    for r in &reports {
        println!("{}: {}", r.system_name, describe(&r.outcome, r.members));
    }
    if reports.is_empty() {
        println!("no system was due");
    }
    // Cron platforms run nothing between passes: drain every pending event too.
    let pump = EventPump::new(ctx.pool.clone(), ctx.meta.clone(), ctx.worker_id.clone());
    let events = pump.run_once(&shutdown).await?;
    if events.systems > 0 {
        println!(
            "events: {} sent, {} rejected, {} expired, {} failed, {} undocumented user_data keys dropped",
            events.sent,
            events.rejected,
            events.expired,
            events.failed,
            events.dropped_user_data_keys
        );
    }
    // A cron platform alerts on the exit code: 1 when any system needs an operator.
    let unhealthy: Vec<String> = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_) | Outcome::InvalidConfig(_)))
        .map(|r| format!("{} ({})", r.system_name, r.outcome.as_str()))
        .collect();
    if !unhealthy.is_empty() {
        anyhow::bail!(
            "{} of {} systems did not sync: {}",
            unhealthy.len(),
            reports.len(),
            unhealthy.join(", ")
        );
    }
    Ok(())
}

/// `run`: the long-running worker (see [`crate::startup::Worker`]).
async fn run_scheduler(settings: Settings) -> anyhow::Result<()> {
    let worker = crate::startup::Worker::build(sync_context(settings)?).await?;
    worker.run_until_stopped(shutdown_on_signal()).await
}

/// `sync --system NAME --dry-run` (see [`crate::sync::dry_run`]).
async fn dry_run(settings: Settings, system: &str, audience: Option<&str>) -> anyhow::Result<()> {
    let ctx = sync_context(settings)?;
    let (row, definition) = {
        let client = ctx
            .pool
            .get()
            .await
            .context("Failed to get a database connection")?;
        let row = db::configurations::read_by_name(&**client, system)
            .await?
            .with_context(|| format!("no system named '{system}'"))?;
        let definition = match audience {
            None => None,
            Some(name) => Some(
                db::audiences::by_name(&**client, row.id, name)
                    .await?
                    .with_context(|| {
                        format!("system '{system}' has no audience definition named '{name}'")
                    })?,
            ),
        };
        (row, definition)
    };
    match crate::sync::dry_run::dry_run(&ctx, row, definition.as_ref()).await {
        Ok(report) => {
            print!("{}", report.render());
            Ok(())
        }
        Err(outcome) => anyhow::bail!(
            "dry run of {system}: the sync would end {}",
            describe(&outcome, 0)
        ),
    }
}

async fn sync_one(settings: Settings, system: &str) -> anyhow::Result<()> {
    let ctx = sync_context(settings)?;
    let row = {
        let client = ctx
            .pool
            .get()
            .await
            .context("Failed to get a database connection")?;
        db::configurations::claim_by_name(
            &**client,
            system,
            &ctx.worker_id,
            ctx.settings.worker.lease_secs as i64,
        )
        .await?
    };
    let report = crate::sync::sync_system(&ctx, row, Trigger::Manual, shutdown_on_signal()).await;
    println!(
        "{}: {}",
        report.system_name,
        describe(&report.outcome, report.members)
    );
    match report.outcome {
        Outcome::Failed(_) | Outcome::InvalidConfig(_) => {
            anyhow::bail!("sync of {system} did not succeed")
        }
        _ => Ok(()),
    }
}

fn describe(outcome: &Outcome, members: i64) -> String {
    match outcome {
        Outcome::Success => format!("success, {members} members"),
        Outcome::Partial => format!("partial (removals held), {members} members"),
        Outcome::Interrupted => "interrupted".to_string(),
        Outcome::Failed(e) => format!("failed: {e}"),
        Outcome::InvalidConfig(e) => format!("invalid_config: {e}"),
    }
}

async fn status(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let client = db::connect_single(&settings.database).await?;
    let rows = db::status::status_rows(&client)
        .await
        .context("Failed to read the systems")?;
    let pending = crate::events::pending_by_system(&client).await?;
    if json {
        println!("{}", crate::status::render_json(&rows, &pending));
        return Ok(());
    }
    print!("{}", crate::status::render(&rows));
    if !pending.is_empty() {
        println!();
        print!("{}", crate::status::render_events(&pending));
    }
    Ok(())
}

fn normalize(key: &str, country: Option<&str>) -> anyhow::Result<()> {
    let key: crate::identity::MatchKey = key
        .parse()
        .map_err(|e| crate::configuration::ConfigError::new("--key", format!("{e}")))?;
    if let Some(c) = country {
        crate::identity::Normalizer::new(Some(c)).map_err(|_| {
            crate::configuration::ConfigError::new(
                "--country",
                format!("'{c}' is not an ISO 3166-1 country"),
            )
        })?;
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    crate::identity::run_normalize(
        key,
        country,
        stdin.lock(),
        std::io::BufWriter::new(stdout.lock()),
    )?;
    Ok(())
}

async fn demo_data(
    settings: &Settings,
    customers: u64,
    seed: u64,
    schema: DemoSchema,
) -> anyhow::Result<()> {
    let schema = match schema {
        DemoSchema::Original => crate::demo::Schema::Original,
        DemoSchema::OriginalLocation => crate::demo::Schema::OriginalWithLocation,
        DemoSchema::Rich => crate::demo::Schema::Rich,
    };
    let client = db::connect_single(&settings.database).await?;
    let started = std::time::Instant::now();
    let report = crate::demo::load(&client, customers, seed, schema).await?;
    println!(
        "demo data: {} customers (seed {seed}) in {:.1} s; {} demo systems added",
        report.customers,
        started.elapsed().as_secs_f64(),
        report.systems_added
    );
    Ok(())
}

/// A token cancelled on SIGTERM (Railway's stop) or SIGINT (Ctrl-C).
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}
