//! What each subcommand does, once settings are loaded: the glue between the CLI and the library.
use anyhow::Context;

use crate::cli::Command;
use crate::configuration::Settings;
use crate::db;

pub async fn execute(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Migrate => migrate(&settings).await,
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
