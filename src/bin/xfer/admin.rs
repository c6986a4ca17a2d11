//! `xfer serve` and `xfer user ...`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use xfer::config::LogFormat;
use xfer::home::Home;
use xfer::server::{self, RootLayout, Server};
use xfer::size::{format_quota, format_size, parse_quota};
use xfer::store::{Store, UserStore};
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
        say!("xfer: listening on {local} (root {})", root.display());
        say!("xfer: TLS certificate fingerprint {}", format_fingerprint(&srv.fingerprint));
        if srv.state.store.list_users().map_err(|e| e.to_string())?.is_empty() {
            say!(
                "xfer: no users yet; add one with:\n  XFER_PASSWORD='secret' xfer user add NAME --quota 1GiB --root {}",
                root.display()
            );
        }
        let _ = std::io::stdout().flush();
        server::run(listener, srv.state, shutdown).await;
        say!("xfer: stopped");
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

/// Opens the store of a server root. Only `user add --init` creates one: any other command,
/// or `add` on a directory that is not a server root (no `xfer.db`, no `xfer.toml`), is refused
/// so a wrong `--root` never silently makes an empty store.
///
/// With `--store URL` the PostgreSQL store is used and no root is touched: the homes belong to
/// the servers (they create a home at its first login).
fn open_store(root: &crate::args::RootArg, init: bool) -> Result<(Box<dyn UserStore>, Option<RootLayout>), CliError> {
    if let Some(url) = root.store.as_deref().filter(|u| !u.trim().is_empty()) {
        return Ok((open_postgres(url)?, None));
    }
    let (store, layout) = open_root_store(&root.root, init)?;
    Ok((Box::new(store), Some(layout)))
}

#[cfg(feature = "cluster")]
fn open_postgres(url: &str) -> Result<Box<dyn UserStore>, CliError> {
    use xfer::store::postgres::{PgOptions, PgStore};
    Ok(Box::new(PgStore::connect(url, PgOptions::default()).map_err(store_err)?))
}

#[cfg(not(feature = "cluster"))]
fn open_postgres(_url: &str) -> Result<Box<dyn UserStore>, CliError> {
    Err(CliError::new(ExitCode::Usage, "--store needs a build of xfer with the `cluster` feature"))
}

fn open_root_store(root: &Path, init: bool) -> Result<(Store, RootLayout), CliError> {
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

/// A diagnostic on stderr, unless quiet.
fn note(quiet: bool, msg: String) {
    if !quiet {
        diag!("xfer: {msg}");
    }
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
            let (store, layout) = open_store(&root, init)?;
            store.add_user(&name, &password, quota, max_files).map_err(store_err)?;
            let Some(layout) = layout else {
                audit("user_add", &name);
                return say(
                    format!("added {name} with quota {}", format_quota(quota)),
                    serde_json::json!({"ok": true, "op": "user add", "user": name, "quota_bytes": quota}),
                );
            };
            // A new account starts empty: files left under its name by an older account are
            // moved aside, never inherited (and never counted as 0 bytes).
            let old = layout
                .archive_home(&name)
                .map_err(|e| CliError::general(format!("cannot move the old home aside: {e}")))?;
            if let Some(old) = old {
                note(quiet, format!("moved files left by an earlier {name} to {}", old.display()));
            }
            let home = layout.home_of(&name);
            std::fs::create_dir_all(&home).map_err(|e| CliError::local(&home, e))?;
            audit("user_add", &name);
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
            open_store(&root, false)?.0.set_password(&name, &password).map_err(store_err)?;
            audit("user_passwd", &name);
            say(
                format!("password of {name} changed; a running server ends its sessions within a second"),
                serde_json::json!({"ok": true, "op": "user passwd", "user": name}),
            )
        }
        UserCommand::Quota { name, quota, max_files, root } => {
            let quota = parse_quota(&quota).map_err(size_err)?;
            let max_files = max_files.filter(|&n| n > 0);
            open_store(&root, false)?.0.set_quota(&name, quota, max_files).map_err(store_err)?;
            audit("user_quota", &name);
            say(
                format!("quota of {name} set to {}", format_quota(quota)),
                serde_json::json!({"ok": true, "op": "user quota", "user": name, "quota_bytes": quota}),
            )
        }
        UserCommand::Del { name, root } => {
            let (store, layout) = open_store(&root, false)?;
            store.delete_user(&name).map_err(store_err)?;
            audit("user_del", &name);
            let Some(layout) = layout else {
                let text = format!("deleted {name}; every server ends its sessions within a second");
                return say(text, serde_json::json!({"ok": true, "op": "user del", "user": name}));
            };
            let archived = layout
                .archive_home(&name)
                .map_err(|e| CliError::general(format!("deleted {name}, but its home: {e}")))?;
            let text = match &archived {
                Some(to) => format!("deleted {name}; its files were moved to {}", to.display()),
                None => format!("deleted {name}"),
            };
            say(text, serde_json::json!({"ok": true, "op": "user del", "user": name, "archived_home": archived}))
        }
        UserCommand::List { root } => {
            let (store, layout) = open_store(&root, false)?;
            list_users(&*store, layout.as_ref(), json)
        }
    }
}

fn list_users(store: &dyn UserStore, layout: Option<&RootLayout>, json: bool) -> Result<(), CliError> {
    let users = store.list_users().map_err(store_err)?;
    // Partial uploads are measured on disk: they are part of USED, shown apart. Without a
    // root (a shared store), the disk is the servers'.
    let partial = |name: &str| Home::open(&layout?.home_of(name)).and_then(|h| h.usage()).ok().map(|u| u.partial_bytes);
    if json {
        let rows = users.iter().map(|u| {
            serde_json::json!({
                "name": u.name, "used_bytes": u.used_bytes, "partial_bytes": partial(&u.name),
                "quota_bytes": u.quota_bytes, "used_files": u.used_files, "max_files": u.max_files,
            })
        });
        return crate::output::json(serde_json::Value::Array(rows.collect()));
    }
    let header =
        format!("{:<20} {:>12} {:>12} {:>12} {:>8} {:>10}", "USER", "USED", "PARTIAL", "QUOTA", "FILES", "MAX FILES");
    crate::output::line(header)?;
    for u in users {
        let max = u.max_files.map_or_else(|| "-".to_string(), |n| n.to_string());
        let part = partial(&u.name).map_or_else(|| "?".to_string(), format_size);
        crate::output::line(format!(
            "{:<20} {:>12} {:>12} {:>12} {:>8} {:>10}",
            u.name,
            format_size(u.used_bytes),
            part,
            format_quota(u.quota_bytes),
            u.used_files,
            max
        ))?;
    }
    Ok(())
}

/// The audit line of an account change (OPS-AUDIT-1), written to this command's log.
fn audit(event: &'static str, name: &str) {
    tracing::info!(target: "xfer::audit", event, user = %server::escape_for_log(name), result = "ok", "{event}");
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
