//! Command-line grammar.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "xfer",
    version,
    about = "Multi-user file transfer: TLS control channel, verified resumable transfers"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Server address HOST:PORT [default: from profile, else 127.0.0.1:7070]
    #[arg(long, global = true, env = "XFER_SERVER")]
    pub server: Option<String>,
    /// User name [default: from profile]
    #[arg(long, global = true, env = "XFER_USER")]
    pub user: Option<String>,
    /// Named profile from the client config file
    #[arg(long, global = true, env = "XFER_PROFILE")]
    pub profile: Option<String>,
    /// Trust a server seen for the first time without asking (pins its certificate)
    #[arg(long, global = true)]
    pub accept_new_host: bool,
    /// No progress bars or informational output
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More output (-v: transfer details, -vv: debug logs)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server
    Serve {
        /// Server root: config, store, TLS identity and user homes
        #[arg(long, default_value = "xfer-data")]
        root: PathBuf,
        /// Listen address [default: from ROOT/xfer.toml, 127.0.0.1:7070]
        #[arg(long)]
        listen: Option<String>,
    },
    /// Manage users (works while the server runs)
    #[command(subcommand)]
    User(UserCommand),
    /// Upload a file
    Put {
        local: PathBuf,
        remote: Option<String>,
        /// Resume an interrupted upload
        #[arg(short = 'c', long)]
        resume: bool,
        #[command(flatten)]
        via: TransportArgs,
    },
    /// Download a file
    Get {
        remote: String,
        local: Option<PathBuf>,
        /// Resume an interrupted download
        #[arg(short = 'c', long)]
        resume: bool,
        #[command(flatten)]
        via: TransportArgs,
    },
    /// List a directory
    Ls {
        path: Option<String>,
        /// Long format: type, size, modification time
        #[arg(short, long)]
        long: bool,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Print the working directory
    Pwd,
    /// Check a directory and print it as the new working directory
    Cd { path: String },
    /// Create a directory
    Mkdir { path: String },
    /// Remove a file
    Rm { path: String },
    /// Remove an empty directory
    Rmdir { path: String },
    /// Rename or move within the home
    Mv { from: String, to: String },
    /// Show type, size and modification time
    Stat { path: String },
    /// Show usage and quota
    Df,
    /// md5 of a remote file
    Sum { path: String },
    /// Interactive prompt with history
    Shell,
}

#[derive(Args, Debug, Clone)]
pub struct RootArg {
    /// Server root
    #[arg(long, default_value = "xfer-data")]
    pub root: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (password from XFER_PASSWORD, --password-stdin, or a prompt)
    Add {
        name: String,
        /// Byte quota, e.g. 10GiB, 500MB, 1048576
        #[arg(long)]
        quota: String,
        /// Maximum number of files
        #[arg(long)]
        max_files: Option<u64>,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        root: RootArg,
    },
    /// Change a password
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        root: RootArg,
    },
    /// Change a quota
    Quota {
        name: String,
        #[arg(long)]
        quota: String,
        /// Maximum number of files (0 removes the limit)
        #[arg(long)]
        max_files: Option<u64>,
        #[command(flatten)]
        root: RootArg,
    },
    /// Delete a user; its home moves to ROOT/deleted/ and its sessions end
    Del {
        name: String,
        #[command(flatten)]
        root: RootArg,
    },
    /// List users with usage and quota
    List {
        #[command(flatten)]
        root: RootArg,
    },
}

/// How a transfer's data travels.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TransportArgs {
    /// Data transport: udp (our reliable UDP), tcp (the control connection), or auto (UDP,
    /// falling back to TCP when UDP is blocked or does clearly worse)
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    pub transport: TransportArg,
    /// Cap the UDP sending rate, in bytes per second (units: K, M, G, e.g. 50M)
    #[arg(long, value_parser = parse_rate)]
    pub rate_limit: Option<u64>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TransportArg {
    #[default]
    Auto,
    Udp,
    Tcp,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    match xfer::size::parse_size(s) {
        Ok(0) => Err("the rate limit must be above zero".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
