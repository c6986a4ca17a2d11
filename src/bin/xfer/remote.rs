//! Client commands: connect and log in, then run one command (or many, from the shell).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use xfer::client::{Client, ClientError, ConnectOptions, TransferOptions, TransferSummary, TransportChoice};
use xfer::config::{client_config_dir, ClientConfig};
use xfer::proto::{ErrorCode, Response};
use xfer::size::format_size;
use xfer::transfer::hex_digest;

use crate::args::{Command, Global, TransportArg, TransportArgs};
use crate::output;

/// Server used when neither flags, environment nor a profile name one.
const DEFAULT_SERVER: &str = "127.0.0.1:7070";

/// Where and as whom to connect, resolved from flags, environment and profile.
pub struct Target {
    pub server: String,
    pub user: String,
    pub config_dir: PathBuf,
    pub accept_new_host: bool,
}

impl Target {
    pub fn resolve(g: &Global) -> Result<Target, String> {
        let config_dir = client_config_dir();
        let config = ClientConfig::load(&config_dir).map_err(|e| e.to_string())?;
        let profile = config.profile(g.profile.as_deref());
        if let (Some(name), None) = (&g.profile, profile) {
            return Err(format!("no profile {name:?} in {}", config_dir.join("config.toml").display()));
        }
        let server = g
            .server
            .clone()
            .or_else(|| profile.and_then(|p| p.server.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.into());
        let user = g
            .user
            .clone()
            .or_else(|| profile.and_then(|p| p.user.clone()))
            .ok_or("no user: pass --user NAME, set XFER_USER, or set one in a profile")?;
        Ok(Target { server, user, config_dir, accept_new_host: g.accept_new_host })
    }

    /// Connects and sends the login; the first command goes out behind it without waiting,
    /// and a refused login is what that command reports.
    pub async fn login(&self, password: &str) -> Result<Client, String> {
        let opts = ConnectOptions {
            server: self.server.clone(),
            config_dir: self.config_dir.clone(),
            accept_new_host: self.accept_new_host,
            confirm_new_host: std::io::stdin().is_terminal().then(|| Box::new(ask_trust) as _),
        };
        Client::connect_and_login(&opts, &self.user, password).await.map_err(|e| e.to_string())
    }
}

fn ask_trust(host: &str, fingerprint: &str) -> bool {
    eprint!("The server {host} is not known yet.\nIts certificate fingerprint is {fingerprint}.\nTrust it and continue? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES")
}

/// The password from `XFER_PASSWORD`, else a prompt in a terminal.
pub fn password(user: &str) -> Result<String, String> {
    if let Ok(pw) = std::env::var("XFER_PASSWORD") {
        return Ok(pw);
    }
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("Password for {user}: ")).map_err(|e| e.to_string());
    }
    Err("no password: set XFER_PASSWORD or run in a terminal".into())
}

/// How command output is shown.
#[derive(Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
    pub verbose: u8,
}

/// Runs one client command from the command line.
pub fn run(g: &Global, cmd: Command) -> Result<(), String> {
    let target = Target::resolve(g)?;
    let password = password(&target.user)?;
    let ui = Ui { quiet: g.quiet, verbose: g.verbose };
    crate::runtime()?.block_on(async move {
        let mut client = target.login(&password).await?;
        let result = exec(&mut client, cmd, ui).await;
        client.bye().await;
        result
    })
}

/// Runs one command on a logged-in client.
pub async fn exec(client: &mut Client, cmd: Command, ui: Ui) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    match cmd {
        Command::Put { local, remote, resume, via } => {
            let opts = transfer_options(resume, &via);
            let (remote, summary) = put(client, &local, remote, &opts, ui).await?;
            report(ui, "uploaded", &local.display().to_string(), &remote, &summary);
        }
        Command::Get { remote, local, resume, via } => {
            let local = get_target(&remote, local);
            let opts = transfer_options(resume, &via);
            let summary = transfer(ui, &format!("get {remote}"), |p| client.get_with(&remote, &local, &opts, p))
                .await
                .map_err(e)?;
            report(ui, "downloaded", &remote, &local.display().to_string(), &summary);
        }
        Command::Ls { path, long, json } => {
            let entries = client.list(path.as_deref().unwrap_or("")).await.map_err(e)?;
            let text = output::listing(&entries, long, json);
            if !text.is_empty() {
                println!("{text}");
            }
        }
        Command::Pwd => println!("{}", client.pwd().await.map_err(e)?),
        Command::Cd { path } => println!("{}", client.cd(&path).await.map_err(e)?),
        Command::Mkdir { path } => client.mkdir(&path).await.map_err(e)?,
        Command::Rm { path } => client.remove(&path).await.map_err(e)?,
        Command::Rmdir { path } => client.rmdir(&path).await.map_err(e)?,
        Command::Mv { from, to } => client.rename(&from, &to).await.map_err(e)?,
        Command::Stat { path } => println!("{}", output::stat_line(&client.stat(&path).await.map_err(e)?)),
        Command::Df => print_df(client.df().await.map_err(e)?),
        Command::Sum { path } => {
            let (md5, _) = client.sum(&path).await.map_err(e)?;
            println!("{}  {path}", hex_digest(&md5));
        }
        Command::Serve { .. } | Command::User(_) | Command::Shell => {
            return Err("not available here".into());
        }
    }
    Ok(())
}

fn transfer_options(resume: bool, via: &TransportArgs) -> TransferOptions {
    let transport = match via.transport {
        TransportArg::Auto => TransportChoice::Auto,
        TransportArg::Udp => TransportChoice::Udp,
        TransportArg::Tcp => TransportChoice::Tcp,
    };
    TransferOptions { resume, transport, rate_limit: via.rate_limit }
}

/// Runs a transfer with a progress bar, timing it.
async fn transfer<'a, F, Fut>(ui: Ui, label: &str, start: F) -> Result<(TransferSummary, f64), ClientError>
where
    F: FnOnce(xfer::transfer::ProgressFn) -> Fut,
    Fut: std::future::Future<Output = Result<TransferSummary, ClientError>> + 'a,
{
    let (bar, progress) = output::progress_bar(label, ui.quiet);
    let t0 = Instant::now();
    let result = start(progress).await;
    bar.finish_and_clear();
    Ok((result?, t0.elapsed().as_secs_f64()))
}

fn report(ui: Ui, verb: &str, from: &str, to: &str, (s, secs): &(TransferSummary, f64)) {
    if ui.quiet {
        return;
    }
    let moved = s.size - s.resumed_from;
    let rate = moved as f64 / secs.max(1e-6);
    let resumed =
        if s.resumed_from > 0 { format!(", resumed at {}", format_size(s.resumed_from)) } else { String::new() };
    let via = output::transport_name(s.transport);
    println!(
        "{verb} {from} -> {to}: {} in {secs:.2} s ({}/s) over {via}{resumed}",
        format_size(s.size),
        format_size(rate as u64)
    );
    if ui.verbose > 0 {
        println!("  md5 {}  transport {via}", hex_digest(&s.md5));
        if let Some(u) = &s.udp_stats {
            let moved = u.sent_bytes.saturating_sub(u.retransmitted_bytes).max(1);
            println!(
                "  udp: {} datagrams of up to {} bytes, {} retransmitted ({:.2}% of the data), {} lost, \
                 rtt {:.1} ms (min {:.1}), bottleneck {}/s",
                u.sent_packets,
                u.datagram_size,
                format_size(u.retransmitted_bytes),
                100.0 * u.retransmitted_bytes as f64 / moved as f64,
                u.lost_packets,
                u.srtt.as_secs_f64() * 1e3,
                u.min_rtt.as_secs_f64() * 1e3,
                format_size(u.bottleneck_rate),
            );
        }
    }
}

/// `put LOCAL [REMOTE]`: uploads to REMOTE, or to REMOTE/NAME if REMOTE is a directory. Rather
/// than asking first (a round trip on every upload), it tries REMOTE and retries into it when the
/// server answers that REMOTE is a directory. Returns where the file went.
async fn put(
    client: &mut Client,
    local: &Path,
    remote: Option<String>,
    opts: &TransferOptions,
    ui: Ui,
) -> Result<(String, (TransferSummary, f64)), String> {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{}: not a file name", local.display()))?;
    let label = format!("put {}", local.display());
    let Some(remote) = remote else {
        let summary = transfer(ui, &label, |p| client.put_with(local, &name, opts, p)).await;
        return Ok((name, summary.map_err(|e| e.to_string())?));
    };
    match transfer(ui, &label, |p| client.put_with(local, &remote, opts, p)).await {
        Err(e) if e.code() == Some(ErrorCode::IsADirectory) && client.is_usable() => {
            let inside = format!("{}/{name}", remote.trim_end_matches('/'));
            let summary = transfer(ui, &label, |p| client.put_with(local, &inside, opts, p)).await;
            Ok((inside, summary.map_err(|e| e.to_string())?))
        }
        other => Ok((remote, other.map_err(|e| e.to_string())?)),
    }
}

/// Local path for `get REMOTE [LOCAL]`: LOCAL, LOCAL/NAME if it is a directory, or NAME.
fn get_target(remote: &str, local: Option<PathBuf>) -> PathBuf {
    let name = remote.trim_end_matches('/').rsplit('/').next().unwrap_or(remote).to_string();
    match local {
        Some(dir) if dir.is_dir() => dir.join(name),
        Some(path) => path,
        None => PathBuf::from(name),
    }
}

fn print_df(r: Response) {
    if let Response::Df { used_bytes, quota_bytes, used_files, max_files, reserved_bytes } = r {
        let pct = if quota_bytes > 0 { used_bytes as f64 * 100.0 / quota_bytes as f64 } else { 0.0 };
        println!(
            "used {} of {} ({pct:.1}%), {} free",
            format_size(used_bytes),
            format_size(quota_bytes),
            format_size(quota_bytes.saturating_sub(used_bytes + reserved_bytes))
        );
        match max_files {
            Some(max) => println!("files {used_files} of {max}"),
            None => println!("files {used_files}"),
        }
        if reserved_bytes > 0 {
            println!("reserved by uploads in progress: {}", format_size(reserved_bytes));
        }
    }
}
