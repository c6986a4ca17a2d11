//! `xfer serve` and `xfer user ...`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use xfer::server::{self, RootLayout, Server};
use xfer::size::{format_quota, format_size, parse_quota};
use xfer::store::Store;
use xfer::tls::format_fingerprint;

use crate::args::UserCommand;
use crate::error::CliError;
use crate::exit_codes::ExitCode;

/// Runs the server until SIGINT or SIGTERM.
pub fn serve(root: &Path, listen: Option<&str>) -> Result<(), CliError> {
    serve_inner(root, listen).map_err(CliError::general)
}

fn serve_inner(root: &Path, listen: Option<&str>) -> Result<(), String> {
    let srv = Server::open(root).map_err(|e| e.to_string())?;
    let addr = listen.map(str::to_string).unwrap_or_else(|| srv.state.config.server.listen.clone());
    crate::runtime().map_err(|e| e.message)?.block_on(async move {
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

/// Opens the store of a server root. Only `user add --init` creates one: any other command,
/// or `add` on a directory that is not a server root (no `xfer.db`, no `xfer.toml`), is refused
/// so a wrong `--root` never silently makes an empty store.
fn open_store(root: &Path, init: bool) -> Result<(Store, RootLayout), CliError> {
    let layout = RootLayout::new(root);
    let is_root = layout.store().is_file() || root.join("xfer.toml").is_file();
    if !is_root && !init {
        return Err(CliError::new(
            ExitCode::Local,
            format!(
                "{}: not a server root (no xfer.db or xfer.toml); pass --root DIR, or --init to create a new store there",
                absolute(root).display()
            ),
        ));
    }
    layout.create().map_err(|e| CliError::local(root, e))?;
    let store = Store::open(&layout.store()).map_err(|e| CliError::local(&layout.store(), e))?;
    Ok((store, layout))
}

fn absolute(p: &Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn store_err(e: xfer::store::StoreError) -> CliError {
    CliError::general(e.to_string())
}

fn size_err(e: xfer::size::SizeError) -> CliError {
    CliError::usage(e.to_string())
}

/// Runs one `xfer user` command.
pub fn user(cmd: UserCommand, quiet: bool, json: bool) -> Result<(), CliError> {
    let say = |msg: String, v: serde_json::Value| {
        if json {
            crate::output::json(v)
        } else if !quiet {
            crate::output::line(msg)
        } else {
            Ok(())
        }
    };
    match cmd {
        UserCommand::Add { name, quota, init, max_files, password_stdin, root } => {
            let quota = parse_quota(&quota).map_err(size_err)?;
            let password = new_password(password_stdin)?;
            let (store, layout) = open_store(&root.root, init)?;
            store.add_user(&name, &password, quota, max_files).map_err(store_err)?;
            let home = layout.home_of(&name);
            std::fs::create_dir_all(&home).map_err(|e| CliError::local(&home, e))?;
            let root = absolute(&root.root);
            say(
                format!(
                    "added {name} with quota {} (root {}, home {})",
                    format_quota(quota),
                    root.display(),
                    home.display()
                ),
                serde_json::json!({"ok": true, "op": "user add", "user": name, "quota_bytes": quota, "root": root}),
            )
        }
        UserCommand::Passwd { name, password_stdin, root } => {
            let password = new_password(password_stdin)?;
            open_store(&root.root, false)?.0.set_password(&name, &password).map_err(store_err)?;
            say(
                format!("password of {name} changed"),
                serde_json::json!({"ok": true, "op": "user passwd", "user": name}),
            )
        }
        UserCommand::Quota { name, quota, max_files, root } => {
            let quota = parse_quota(&quota).map_err(size_err)?;
            let max_files = max_files.filter(|&n| n > 0);
            open_store(&root.root, false)?.0.set_quota(&name, quota, max_files).map_err(store_err)?;
            say(
                format!("quota of {name} set to {}", format_quota(quota)),
                serde_json::json!({"ok": true, "op": "user quota", "user": name, "quota_bytes": quota}),
            )
        }
        UserCommand::Del { name, root } => {
            let (store, layout) = open_store(&root.root, false)?;
            store.delete_user(&name).map_err(store_err)?;
            let home = layout.home_of(&name);
            say(
                format!("deleted {name}; home kept at {}", home.display()),
                serde_json::json!({"ok": true, "op": "user del", "user": name, "home": home}),
            )
        }
        UserCommand::List { root } => list_users(&open_store(&root.root, false)?.0, json),
    }
}

fn list_users(store: &Store, json: bool) -> Result<(), CliError> {
    let users = store.list_users().map_err(store_err)?;
    if json {
        let rows = users.iter().map(|u| {
            serde_json::json!({
                "name": u.name, "used_bytes": u.used_bytes, "quota_bytes": u.quota_bytes,
                "used_files": u.used_files, "max_files": u.max_files,
            })
        });
        return crate::output::json(serde_json::Value::Array(rows.collect()));
    }
    crate::output::line(format!("{:<20} {:>12} {:>12} {:>8} {:>10}", "USER", "USED", "QUOTA", "FILES", "MAX FILES"))?;
    for u in users {
        let max = u.max_files.map_or_else(|| "-".to_string(), |n| n.to_string());
        crate::output::line(format!(
            "{:<20} {:>12} {:>12} {:>8} {:>10}",
            u.name,
            format_size(u.used_bytes),
            format_quota(u.quota_bytes),
            u.used_files,
            max
        ))?;
    }
    Ok(())
}

/// A new password from `XFER_PASSWORD`, standard input, or a prompt asked twice.
fn new_password(from_stdin: bool) -> Result<String, CliError> {
    new_password_text(from_stdin).map_err(CliError::usage)
}

fn new_password_text(from_stdin: bool) -> Result<String, String> {
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
