//! `xfer`: one binary for the server, the admin commands and the client.
//! Argument parsing and wiring only; the work lives in the library.

mod admin;
mod args;
mod output;
mod remote;
mod shell;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let result = match cli.command {
        Command::Serve { root, listen } => admin::serve(&root, listen.as_deref()),
        Command::User(cmd) => admin::user(cmd, cli.global.quiet),
        Command::Shell => shell::run(&cli.global),
        other => remote::run(&cli.global, other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xfer: {}", output::terminal_safe(&message));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr through `tracing`; `XFER_LOG` (or `RUST_LOG`) overrides the level.
fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (&cli.command, cli.global.verbose) {
        (_, v) if v >= 2 => "debug",
        (Command::Serve { .. }, _) => "info",
        _ => "warn",
    };
    let filter = std::env::var("XFER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match admin::log_format(&cli.command) {
        xfer::config::LogFormat::Json => builder.json().with_current_span(false).init(),
        xfer::config::LogFormat::Text => builder.with_ansi(ansi).with_target(false).init(),
    }
}

/// A multi-threaded runtime for the commands that need one.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| format!("cannot start runtime: {e}"))
}
