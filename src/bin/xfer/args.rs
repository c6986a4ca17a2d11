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
    /// Server address [USER@]HOST[:PORT] (IPv6 as [ADDR]:PORT; port 7070 when none)
    /// [default: from profile, else 127.0.0.1:7070]
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
    /// Only errors: no progress, banners or summaries
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Results as JSON on stdout (one object per line; `ls` prints one array)
    #[arg(long, global = true)]
    pub json: bool,
    /// Progress on stderr: a bar in a terminal (auto), JSON lines, or none
    #[arg(long, global = true, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// More output (-v: transfer details, -vv: debug logs)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug, Clone)]
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
    /// Upload files: put LOCAL [REMOTE], put LOCAL... DIR, put -r DIR [REMOTE];
    /// `-` reads standard input (put - NAME)
    Put {
        /// Local sources, then the remote target ([USER@HOST:]PATH) when more than one is given
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
        #[command(flatten)]
        opts: CopyArgs,
        /// Follow symlinks inside directories uploaded with -r
        #[arg(short = 'L', long)]
        dereference: bool,
    },
    /// Download files: get REMOTE [LOCAL], get REMOTE... DIR, get -r DIR [LOCAL];
    /// `-` as LOCAL writes standard output
    Get {
        /// Remote sources ([USER@HOST:]PATH), then the local target when more than one is given
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
        #[command(flatten)]
        opts: CopyArgs,
    },
    /// Make DST like SRC: copy what is missing or differs (size and mtime, or md5 with
    /// --checksum); one side is remote, written :PATH or USER@HOST:PATH
    Sync {
        /// Source directory (local, or remote as :PATH)
        src: String,
        /// Destination directory (local, or remote as :PATH)
        dst: String,
        /// Compare md5 digests instead of size and modification time
        #[arg(short = 'c', long)]
        checksum: bool,
        /// Delete files and directories in DST that SRC does not have
        #[arg(long)]
        delete: bool,
        /// Print what would be done and change nothing
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Keep the permission bits too (the modification time is always kept)
        #[arg(short = 'p', long)]
        preserve: bool,
        /// Go on past files that fail; exit non-zero at the end with a summary
        #[arg(short = 'k', long)]
        keep_going: bool,
        /// Follow symlinks in a local SRC: copy the files and directories they point to (a
        /// link loop is cut, a dangling link skipped). Without -L they are skipped with a note
        #[arg(short = 'L', long)]
        dereference: bool,
        /// Files in flight at once, each over its own session of the same login
        #[arg(short = 'j', long, default_value_t = DEFAULT_PARALLEL, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
        #[command(flatten)]
        via: TransportArgs,
    },
    /// List a directory (dotfiles and partial transfers only with -a)
    #[command(disable_help_flag = true)]
    Ls {
        path: Option<String>,
        /// Long format: type, size, modification time in local time
        #[arg(short, long)]
        long: bool,
        /// Sizes in binary units (KiB, MiB, ...)
        #[arg(short = 'h', long)]
        human: bool,
        /// Newest first
        #[arg(short = 't')]
        by_time: bool,
        /// Largest first
        #[arg(short = 'S')]
        by_size: bool,
        /// Reverse the order
        #[arg(short = 'r', long)]
        reverse: bool,
        /// Show names starting with '.', partial transfers included
        #[arg(short = 'a', long)]
        all: bool,
        /// Print help
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Print the working directory
    Pwd,
    /// Check a directory and print it as the new working directory
    Cd { path: String },
    /// Create a directory
    Mkdir {
        path: String,
        /// Create missing parents; an existing directory is fine
        #[arg(short = 'p', long)]
        parents: bool,
    },
    /// Remove a file
    Rm {
        path: String,
        /// Remove a directory and everything under it
        #[arg(short = 'r', short_alias = 'R', long)]
        recursive: bool,
    },
    /// Remove an empty directory
    Rmdir { path: String },
    /// Rename or move within the home
    Mv { from: String, to: String },
    /// Copy a remote file within the home (TO may be a directory); charged to the quota.
    /// The copy gets the time of its making, as with cp, unless -p. A symlink FROM is refused,
    /// even one inside the home: cp never follows links, so it has no -L (name the link's target)
    Cp {
        from: String,
        to: String,
        /// Keep the source's modification time and permission bits, as cp -p does
        #[arg(short = 'p', long)]
        preserve: bool,
    },
    /// Show type, size and modification time
    Stat { path: String },
    /// Show usage and quota
    Df,
    /// md5 of a remote file
    Sum { path: String },
    /// Interactive prompt with history and completion; reads commands from a pipe too
    Shell {
        /// With commands from a pipe: go on after a failed command (exit with the first failure)
        #[arg(short = 'k', long)]
        keep_going: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff)
    Man,
}

#[derive(Args, Debug, Clone)]
pub struct RootArg {
    /// Server root
    #[arg(long, default_value = "xfer-data")]
    pub root: PathBuf,
    /// Shared PostgreSQL store (postgres://USER@HOST:PORT/DB) instead of ROOT's; homes are
    /// then left to the servers
    #[arg(long, env = "XFER_STORE_URL", value_name = "URL")]
    pub store: Option<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum UserCommand {
    /// Add a user (password from XFER_PASSWORD, --password-stdin, or a prompt)
    Add {
        name: String,
        /// Byte quota, e.g. 10GiB, 500MB, 1048576, or unlimited
        #[arg(long)]
        quota: String,
        /// Create a new store when ROOT is not a server root yet
        #[arg(long)]
        init: bool,
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
        /// Byte quota, e.g. 10GiB, or unlimited
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
    /// Cap the rate in bytes per second (units: K, M, G, e.g. 50M), on UDP and TCP alike
    #[arg(long, value_parser = parse_rate)]
    pub rate_limit: Option<u64>,
}

/// Options shared by put and get.
#[derive(clap::Args, Debug, Clone)]
pub struct CopyArgs {
    /// Copy directories and everything under them
    #[arg(short = 'r', short_alias = 'R', long)]
    pub recursive: bool,
    /// Resume only: refuse instead of starting over when the partial does not match
    /// (resuming a matching partial is the default)
    #[arg(short = 'c', long = "resume", conflicts_with = "no_resume")]
    pub resume: bool,
    /// Discard any partial transfer and start over
    #[arg(long)]
    pub no_resume: bool,
    /// Never replace an existing destination file
    #[arg(short = 'n', long)]
    pub no_clobber: bool,
    /// Keep the permission bits too (the modification time is always kept)
    #[arg(short = 'p', long)]
    pub preserve: bool,
    /// Files in flight at once, each over its own session of the same login
    #[arg(short = 'j', long, default_value_t = DEFAULT_PARALLEL, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Go on past files that fail; exit non-zero at the end with a summary
    #[arg(short = 'k', long)]
    pub keep_going: bool,
    #[command(flatten)]
    pub via: TransportArgs,
}

/// Files in flight at once unless `-j` says otherwise.
pub const DEFAULT_PARALLEL: u16 = 4;

impl Default for CopyArgs {
    fn default() -> CopyArgs {
        CopyArgs {
            recursive: false,
            resume: false,
            no_resume: false,
            no_clobber: false,
            preserve: false,
            parallel: DEFAULT_PARALLEL,
            keep_going: false,
            via: TransportArgs::default(),
        }
    }
}

/// How progress is shown on stderr.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressArg {
    #[default]
    Auto,
    Json,
    None,
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
