//! `xfer serve` and `xfer user ...`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use xfer::home::Home;
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
            let home = layout.home_of(&name);
            std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
            say(format!("added {name} with quota {} (home {})", format_size(quota), home.display()));
        }
        UserCommand::Passwd { name, password_stdin, root } => {
            let password = new_password(password_stdin)?;
            open_store(&root.root)?.0.set_password(&name, &password).map_err(|e| e.to_string())?;
            say(format!("password of {name} changed"));
        }
        UserCommand::Quota { name, quota, max_files, root } => {
            let quota = parse_size(&quota).map_err(|e| e.to_string())?;
            let max_files = max_files.filter(|&n| n > 0);
            open_store(&root.root)?.0.set_quota(&name, quota, max_files).map_err(|e| e.to_string())?;
            say(format!("quota of {name} set to {}", format_size(quota)));
        }
        UserCommand::Del { name, root } => {
            let (store, layout) = open_store(&root.root)?;
            store.delete_user(&name).map_err(|e| e.to_string())?;
            say(format!("deleted {name}; home kept at {}", layout.home_of(&name).display()));
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
