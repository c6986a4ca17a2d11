//! `xfer serve` and `xfer user ...`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use xfer::home::Home;
use xfer::config::LogFormat;
use xfer::server::{self, RootLayout, Server};
use xfer::size::{format_size, parse_size};
use xfer::store::Store;
use xfer::tls::format_fingerprint;

use crate::args::UserCommand;

/// Runs the server until SIGINT or SIGTERM.
pub fn serve(root: &Path, listen: Option<&str>) -> Result<(), String> {
    let srv = Server::open(root).map_err(|e| e.to_string())?;
    let addr = listen.map(str::to_string).unwrap_or_else(|| srv.state.config.server.listen.clone());
    crate::runtime()?.block_on(async move {
        // Signal handlers exist before readiness is announced, so an early SIGTERM is graceful.
        let shutdown = shutdown_signal()?;
        let listener =
            tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        println!("xfer: listening on {local} (root {})", root.display());
        println!("xfer: TLS certificate fingerprint {}", format_fingerprint(&srv.fingerprint));
        if srv.state.store.list_users().map_err(|e| e.to_string())?.is_empty() {
            println!(
                "xfer: no users yet; add one with:\n  XFER_PASSWORD='secret' xfer user add NAME --quota 1GiB --root {}",
                root.display()
            );
        }
        let _ = std::io::stdout().flush();
        server::run(listener, srv.state, shutdown).await;
        println!("xfer: stopped");
        Ok(())
    })
}

/// The server's log format: `XFER_LOG_FORMAT` (`text` or `json`), else `[log] format` in
/// ROOT/xfer.toml; text for every other command.
pub fn log_format(cmd: &crate::args::Command) -> LogFormat {
    let crate::args::Command::Serve { root, .. } = cmd else {
        return LogFormat::Text;
    };
    match std::env::var("XFER_LOG_FORMAT").as_deref() {
        Ok("json") => return LogFormat::Json,
        Ok("text") => return LogFormat::Text,
        _ => {}
    }
    let text = std::fs::read_to_string(root.join("xfer.toml")).unwrap_or_default();
    toml::from_str::<xfer::config::ServerConfig>(&text).map_or(LogFormat::Text, |c| c.log.format)
}

/// Installs SIGINT and SIGTERM handlers; the returned future resolves on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

fn open_store(root: &Path) -> Result<(Store, RootLayout), String> {
    let layout = RootLayout::new(root);
    layout.create().map_err(|e| e.to_string())?;
    let store = Store::open(&layout.store()).map_err(|e| e.to_string())?;
    Ok((store, layout))
}

/// Runs one `xfer user` command.
pub fn user(cmd: UserCommand, quiet: bool) -> Result<(), String> {
    let say = |msg: String| {
        if !quiet {
            println!("{msg}");
        }
    };
    match cmd {
        UserCommand::Add { name, quota, max_files, password_stdin, root } => {
            let quota = parse_size(&quota).map_err(|e| e.to_string())?;
            let password = new_password(password_stdin)?;
            let (store, layout) = open_store(&root.root)?;
            store.add_user(&name, &password, quota, max_files).map_err(|e| e.to_string())?;
            // A new account starts empty: files left under its name by an older account are
            // moved aside, never inherited (and never counted as 0 bytes).
            if let Some(old) = layout.archive_home(&name).map_err(|e| format!("cannot move the old home aside: {e}"))? {
                say(format!("moved files left by an earlier {name} to {}", old.display()));
            }
            let home = layout.home_of(&name);
            std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
            audit("user_add", &name);
            say(format!("added {name} with quota {} (home {})", format_size(quota), home.display()));
        }
        UserCommand::Passwd { name, password_stdin, root } => {
            let password = new_password(password_stdin)?;
            open_store(&root.root)?.0.set_password(&name, &password).map_err(|e| e.to_string())?;
            audit("user_passwd", &name);
            say(format!("password of {name} changed; a running server ends its sessions within a second"));
        }
        UserCommand::Quota { name, quota, max_files, root } => {
            let quota = parse_size(&quota).map_err(|e| e.to_string())?;
            let max_files = max_files.filter(|&n| n > 0);
            open_store(&root.root)?.0.set_quota(&name, quota, max_files).map_err(|e| e.to_string())?;
            audit("user_quota", &name);
            say(format!("quota of {name} set to {}", format_size(quota)));
        }
        UserCommand::Del { name, root } => {
            let (store, layout) = open_store(&root.root)?;
            store.delete_user(&name).map_err(|e| e.to_string())?;
            audit("user_del", &name);
            let archived = layout.archive_home(&name).map_err(|e| format!("deleted {name}, but its home: {e}"))?;
            match archived {
                Some(to) => say(format!("deleted {name}; its files were moved to {}", to.display())),
                None => say(format!("deleted {name}")),
            }
        }
        UserCommand::List { root } => {
            let (store, layout) = open_store(&root.root)?;
            println!(
                "{:<20} {:>12} {:>12} {:>12} {:>8} {:>10}",
                "USER", "USED", "PARTIAL", "QUOTA", "FILES", "MAX FILES"
            );
            for u in store.list_users().map_err(|e| e.to_string())? {
                let max = u.max_files.map_or_else(|| "-".to_string(), |n| n.to_string());
                // Partial uploads are measured on disk: they are part of USED, shown apart.
                let partial = Home::open(&layout.home_of(&u.name))
                    .and_then(|h| h.usage())
                    .map_or_else(|_| "?".to_string(), |usage| format_size(usage.partial_bytes));
                println!(
                    "{:<20} {:>12} {:>12} {:>12} {:>8} {:>10}",
                    u.name,
                    format_size(u.used_bytes),
                    partial,
                    format_size(u.quota_bytes),
                    u.used_files,
                    max
                );
            }
        }
    }
    Ok(())
}

/// The audit line of an account change (OPS-AUDIT-1), written to this command's log.
fn audit(event: &'static str, name: &str) {
    tracing::info!(target: "xfer::audit", event, user = %server::escape_for_log(name), result = "ok", "{event}");
}

/// A new password from `XFER_PASSWORD`, standard input, or a prompt asked twice.
fn new_password(from_stdin: bool) -> Result<String, String> {
    let pw = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading password: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if let Ok(pw) = std::env::var("XFER_PASSWORD") {
        pw
    } else if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("New password: ").map_err(|e| e.to_string())?;
        let b = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if a != b {
            return Err("passwords do not match".into());
        }
        a
    } else {
        return Err("no password: set XFER_PASSWORD, use --password-stdin, or run in a terminal".into());
    };
    if pw.is_empty() {
        return Err("empty password refused".into());
    }
    Ok(pw)
}
