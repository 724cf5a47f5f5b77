use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cdp_meta_sync::cli::Cli::parse();
    cdp_meta_sync::cli::main(cli)
}
