//! `meta-sandbox`: a local emulator of the Meta Graph API endpoints cdp-meta-sync uses.
//!
//! Point the worker at it with `META_GRAPH_URL=http://127.0.0.1:PORT`. Exit codes: 0 after
//! SIGINT/SIGTERM, 1 when the port cannot be bound, 2 for a bad flag.
use std::process::ExitCode;

use clap::Parser;
use meta_sandbox::{
    AudienceStatus, FaultCode, Faults, SandboxOptions, SandboxState, UsageFault, WireFault,
    parse_error_codes, parse_wire_fault, serve,
};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "meta-sandbox",
    version,
    about = "Local emulator of the Meta Graph API endpoints used by cdp-meta-sync (custom audiences, Conversions API)"
)]
struct Args {
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, env = "SANDBOX_PORT", default_value_t = 8089)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Seed for injected failures, ids and trace ids.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fixed delay on every Graph call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of Graph calls that fail (0.0–1.0).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    error_rate: f64,
    /// Errors the failing calls answer with: CODE or CODE/SUBCODE, comma separated.
    #[arg(long, value_name = "2,4,80003/2446079", value_parser = parse_codes)]
    error_codes: Option<CodeList>,
    /// Every call answers 190/463 (expired token).
    #[arg(long)]
    token_error: bool,
    /// Report usage headers at this percentage (near the limit).
    #[arg(long, value_name = "PCT")]
    usage_near_limit: Option<u32>,
    /// estimated_time_to_regain_access (minutes) reported with --usage-near-limit.
    #[arg(long, value_name = "M", default_value_t = 0)]
    regain_minutes: u32,
    /// After N accepted user-write calls, further ones hang until faults change.
    #[arg(long, value_name = "N")]
    stall_after_writes: Option<u64>,
    /// Refuse every usersreplace (2650/1870144), as Meta does for an audience it cannot replace.
    #[arg(long)]
    refuse_replace: bool,
    /// Report this operation_status on every audience read (e.g. 471, flagged for integrity).
    #[arg(long, value_name = "CODE")]
    audience_status: Option<i64>,
    /// Misbehave on the wire of stateful calls: KIND:TARGET[:TIMES[:SLOW_MS]], repeatable.
    /// KIND: drop_after_success, bad_gateway_html, truncated_json, slow_body; TARGET:
    /// audience_create, replace_first_batch, users_write, events; TIMES default 1, SLOW_MS 30000.
    #[arg(long, value_name = "KIND:TARGET[:TIMES[:SLOW_MS]]", value_parser = parse_wire_fault)]
    wire_fault: Vec<WireFault>,
    /// Accept HTTP method override (POST with method=GET|DELETE), as Meta does for apps that used
    /// it before Graph API v27.0 (refused by default, as for new apps).
    #[arg(long)]
    allow_method_override: bool,
    /// Seconds a replace session stays open before it times out (Meta: 5400, 90 minutes).
    #[arg(long, value_name = "SECS")]
    replace_window_secs: Option<u64>,
    /// App secret to verify appsecret_proof against (otherwise only its shape is checked).
    #[arg(long, env = "SANDBOX_APP_SECRET", hide_env_values = true)]
    app_secret: Option<String>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share between 0.0 and 1.0")),
    }
}

/// The whole `--error-codes` list as one value (a bare Vec would make clap expect many flags).
#[derive(Debug, Clone)]
struct CodeList(Vec<FaultCode>);

fn parse_codes(s: &str) -> Result<CodeList, String> {
    let codes = parse_error_codes(s)?;
    if codes.is_empty() {
        return Err("expected at least one code".into());
    }
    Ok(CodeList(codes))
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!("meta-sandbox: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meta-sandbox: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let options = SandboxOptions {
        seed: args.seed,
        faults: Faults {
            error_rate: args.error_rate,
            error_codes: args.error_codes.map(|c| c.0).unwrap_or_default(),
            latency_ms: args.latency_ms,
            token_error: args.token_error,
            usage: args.usage_near_limit.map(|pct| UsageFault {
                call_count_pct: pct,
                estimated_time_to_regain_access: args.regain_minutes,
            }),
            stall_after_writes: args.stall_after_writes,
            refuse_replace: args.refuse_replace,
            wire: args.wire_fault,
            // Set at run time through POST /_sandbox/faults (cells are hashes, not flags).
            invalid_cells: Vec::new(),
            audience_operation_status: args.audience_status.map(AudienceStatus::new),
            audience_delivery_status: None,
            audience_read_error: None,
            // Set at run time through POST /_sandbox/faults (by token value).
            tokens: Default::default(),
        },
        app_secret: args.app_secret,
        allow_method_override: args.allow_method_override,
        replace_window_secs: args.replace_window_secs,
    };
    let listener = match TcpListener::bind((args.host.as_str(), args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "meta-sandbox: cannot listen on {}:{}: {e}",
                args.host, args.port
            );
            return ExitCode::from(1);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, seed = args.seed, "meta-sandbox listening on http://{addr}");
    match serve(listener, SandboxState::new(options), shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("meta-sandbox stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meta-sandbox: {e}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
