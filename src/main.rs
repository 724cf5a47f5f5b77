//! `cdp-meta-sync`: parses the command line, loads the settings and runs the command.
//!
//! Exit codes: 0 done; 1 the task failed (database down, Meta refused, …); 2 a bad argument or
//! setting, reported on one line that names it.
use std::process::ExitCode;

use cdp_meta_sync::cli::Cli;
use cdp_meta_sync::configuration::{ConfigError, Settings};
use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
    run(Cli::parse())
}

/// Runs the command and maps the outcome to an exit code.
fn run(cli: Cli) -> ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    cdp_meta_sync::telemetry::init(settings.worker.log_format, std::io::stderr);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cdp_meta_sync::commands::execute(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<ConfigError>() {
            Some(config) => config_error(config),
            None => {
                eprintln!("error: {}", cdp_meta_sync::db::describe(&e));
                ExitCode::FAILURE
            }
        },
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// glibc gives each thread that allocates its own arena (up to 8 per core), and memory freed into
/// one is not reused by another: hashing threads hand their chunks to the async threads, which
/// grew the peak RSS by a third at 10M customers (README "Dependency choices", `libc`). Runs
/// before any other thread exists. `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread is running yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
