//! What each subcommand does, once settings are loaded: the glue between the CLI and the library.
use anyhow::Context;

use crate::cli::{Command, EventsCommand};
use crate::configuration::Settings;
use crate::db;

pub async fn execute(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Migrate => migrate(&settings).await,
        Command::DemoData { customers, seed } => demo_data(&settings, customers, seed).await,
        Command::Events {
            command:
                EventsCommand::Import {
                    map,
                    tenant,
                    rejects,
                    files,
                },
        } => crate::events::import::run(&settings, &map, tenant, rejects, &files).await,
        other => anyhow::bail!("{other:?}: not available in this build yet"),
    }
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let mut client = db::connect_single(&settings.database).await?;
    let report = db::migrate::run(&mut client)
        .await
        .context("Migration failed")?;
    tracing::info!(applied = ?report.applied, already_applied = report.already_applied, "migrations done");
    println!(
        "migrations: {} applied, {} already applied",
        report.applied.len(),
        report.already_applied
    );
    Ok(())
}

async fn demo_data(settings: &Settings, customers: u64, seed: u64) -> anyhow::Result<()> {
    let client = db::connect_single(&settings.database).await?;
    let started = std::time::Instant::now();
    let report = crate::demo::load(&client, customers, seed).await?;
    println!(
        "demo data: {} customers (seed {seed}) in {:.1} s; {} demo systems added",
        report.customers,
        started.elapsed().as_secs_f64(),
        report.systems_added
    );
    Ok(())
}
