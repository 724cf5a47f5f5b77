//! The command line's clap types: one subcommand per operator task, each with `--help` (run by
//! [`crate::commands::execute`]; `main.rs` maps the outcome to the exit code).
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cdp-meta-sync",
    version,
    about = "Keeps Meta Custom Audiences and the Conversions API in step with a Postgres CDP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending SQL migrations to DATABASE_URL (safe to run from several instances at once).
    Migrate,
    /// Run the worker: the scheduler (RUN_MODE=scheduler) or one pass over every due system (--once).
    Run {
        /// Sync every due system and send pending events, then exit (same as RUN_MODE=once).
        #[arg(long)]
        once: bool,
    },
    /// Sync one system now, whatever its next_sync.
    Sync {
        /// The system_name of the configuration row.
        #[arg(long)]
        system: String,
        /// Print what the sync would send (counts per direction, the first request bodies with
        /// hashes, the removal guard's decision) and change nothing at Meta or in the database.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: one of the system's audience definitions (cdp.facebook_audiences.name)
        /// instead of its own audience.
        #[arg(long, requires = "dry_run", value_name = "NAME")]
        audience: Option<String>,
    },
    /// Print every system's status, last and next sync, members, last error and lease.
    Status {
        /// One JSON document instead of the table, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Normalize and hash raw values (one per stdin line) as they would be sent to Meta.
    Normalize {
        /// Match key: EMAIL, PHONE, FN, LN, FI, CT, ST, ZIP, COUNTRY, DOBY, DOBM, DOBD, GEN, EXTERN_ID, MADID, LOOKALIKE_VALUE.
        #[arg(long)]
        key: String,
        /// ISO 3166-1 alpha-2 country for phone numbers written without a country code.
        #[arg(long)]
        country: Option<String>,
    },
    /// Create the CDP's demo source tables, fill them with synthetic customers and add the three demo systems.
    DemoData {
        /// Number of customers to generate.
        #[arg(long, default_value_t = 10_000)]
        customers: u64,
        /// Seed: the same customers and seed give the same rows.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Columns of customers_master: `original` is the original design's six (id, tenant_id,
        /// email, phone, firstname, lastname) with systems inserted by the original INSERT,
        /// `original-location` adds city, state, zip, country, `rich` has every column.
        #[arg(long, value_enum, default_value_t = DemoSchema::Rich)]
        schema: DemoSchema,
    },
    /// Conversion events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
}

/// `demo-data --schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoSchema {
    Original,
    OriginalLocation,
    Rich,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Import store or website CSV exports into the cdp.conversion_events outbox.
    Import {
        /// Column map (TOML), e.g. config/maps/physical_store.toml.
        #[arg(long)]
        map: PathBuf,
        /// Tenant the events belong to.
        #[arg(long)]
        tenant: i32,
        /// Where rejected rows are written (default: <first file>.rejects.csv).
        #[arg(long)]
        rejects: Option<PathBuf>,
        /// CSV files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}
