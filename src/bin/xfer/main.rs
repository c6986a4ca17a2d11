//! `xfer`: one binary for the server, the admin commands and the client.
//! Argument parsing and wiring only; the work lives in the library.

/// `eprintln!` that never panics: a line for a closed or full stderr is dropped (the exit
/// code still tells the failure).
macro_rules! diag {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that never panics, for the lines of `serve` (a closed stdout is no reason to stop
/// a server).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod address;
mod admin;
mod ahead;
mod args;
mod attrs;
mod completion;
mod error;
mod escape;
mod exit_codes;
mod glob;
mod output;
mod pool;
mod progress;
mod remote;
mod session;
mod shell;
mod sync;
mod transfers;
mod tree;

use clap::{CommandFactory, Parser};

use args::{Cli, Command};
use error::CliError;
use exit_codes::ExitCode;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let result = match cli.command {
        Command::Serve { root, listen } => admin::serve(&root, listen.as_deref()),
        Command::User(cmd) => admin::user(cmd, cli.global.quiet, cli.global.json),
        Command::Shell { keep_going } => shell::run(&cli.global, keep_going),
        Command::Completions { shell } => completions(shell),
        Command::Man => man_page(),
        other => remote::run(&cli.global, other),
    };
    match result {
        Ok(()) => ExitCode::Success.into(),
        Err(e) if e.broken_pipe => ExitCode::Success.into(),
        Err(e) => {
            if !e.message.is_empty() {
                diag!("xfer: {}", escape::terminal_safe(&e.message));
            }
            e.code.into()
        }
    }
}

fn completions(shell: clap_complete::Shell) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command(), "xfer", &mut out);
    std::io::Write::flush(&mut out).map_err(CliError::stdout)
}

fn man_page() -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(Cli::command()).render(&mut out).map_err(CliError::stdout)
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
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::general(format!("cannot start runtime: {e}")))
}
