//! Client commands: connect and log in, then run one command (or many, from the shell).

use xfer::client::Client;
use xfer::proto::{EntryKind, ErrorCode, Response};
use xfer::size::{format_quota, format_size};
use xfer::transfer::hex_digest;

use crate::args::{Command, Global, ProgressArg};
use crate::error::CliError;
use crate::exit_codes::ExitCode;
use crate::output::{self, ListStyle};
use crate::progress::InFlight;
use crate::session::{password, Session, Target};
use crate::{transfers, tree};

/// How command output is shown.
#[derive(Clone)]
pub struct Ui {
    pub quiet: bool,
    pub verbose: u8,
    pub json: bool,
    pub progress: ProgressArg,
    pub in_flight: InFlight,
}

impl Ui {
    pub fn new(g: &Global) -> Ui {
        Ui { quiet: g.quiet, verbose: g.verbose, json: g.json, progress: g.progress, in_flight: InFlight::default() }
    }

    /// A diagnostic line on stderr, unless `-q`.
    pub fn note(&self, text: impl std::fmt::Display) {
        if !self.quiet {
            diag!("xfer: {text}");
        }
    }
}

/// Runs one client command from the command line.
pub fn run(g: &Global, mut cmd: Command) -> Result<(), CliError> {
    let login = transfers::take_login(&mut cmd)?;
    let target = Target::resolve(g, login.as_ref())?;
    let password = password(&target.user)?;
    let ui = Ui::new(g);
    crate::runtime()?.block_on(async move {
        let mut session = Session::new(target, password);
        let result = exec_interruptible(&mut session, cmd, &ui).await;
        session.close().await;
        result
    })
}

/// Runs a command; Ctrl-C cancels it (partials stay resumable) and a lost connection is
/// dropped so the next command logs in again. Both say how much of a transfer was kept.
pub async fn exec_interruptible(session: &mut Session, cmd: Command, ui: &Ui) -> Result<(), CliError> {
    let outcome = tokio::select! {
        r = exec(session, cmd, ui) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    let result = match outcome {
        Some(r) => r,
        None => {
            session.drop_connection();
            let e = CliError::new(ExitCode::Interrupted, "interrupted");
            Err(match ui.in_flight.describe() {
                Some(kept) => e.with_note(kept),
                None => e,
            })
        }
    };
    let result = result.map_err(|e| {
        if !e.is_connection_loss() {
            return e;
        }
        session.drop_connection();
        match ui.in_flight.describe() {
            Some(kept) => e.with_note(kept),
            None => e,
        }
    });
    ui.in_flight.end();
    result
}

/// Runs one command on a session.
pub async fn exec(session: &mut Session, cmd: Command, ui: &Ui) -> Result<(), CliError> {
    match cmd {
        Command::Put { paths, opts, dereference } => transfers::put(session, paths, &opts, dereference, ui).await,
        Command::Get { paths, opts } => transfers::get(session, paths, &opts, ui).await,
        Command::Sync { src, dst, checksum, delete, dry_run, preserve, keep_going, dereference, parallel, via } => {
            let args = crate::sync::SyncArgs {
                src,
                dst,
                checksum,
                delete,
                dry_run,
                preserve,
                keep_going,
                dereference,
                parallel,
                via,
            };
            crate::sync::run(session, args, ui).await
        }
        Command::Ls { path, long, human, by_time, by_size, reverse, all, help: _ } => {
            let style = ListStyle { long, human, by_time, by_size, reverse, all };
            let client = session.client().await?;
            let entries = match path.as_deref() {
                Some(p) if crate::glob::is_pattern(p) => crate::glob::as_entries(crate::glob::expand(client, p).await?),
                p => client.list(p.unwrap_or("")).await?,
            };
            list(output::arrange(entries, style), style, ui)
        }
        Command::Pwd => {
            let cwd = session.client().await?.pwd().await?;
            say_path(ui, "cwd", &cwd)
        }
        Command::Cd { path } => {
            let cwd = session.client().await?.cd(&path).await?;
            session.cwd = Some(cwd.clone());
            say_path(ui, "cwd", &cwd)
        }
        Command::Mkdir { path, parents } => {
            let client = session.client().await?;
            if parents {
                tree::mkdir_p(client, &path).await?;
            } else {
                client.mkdir(&path).await?;
            }
            done(ui, "mkdir", &path)
        }
        Command::Rm { path, recursive } => {
            let client = session.client().await?;
            let targets = crate::glob::expand_all(client, vec![path.clone()]).await?;
            // Deepest first, so a match inside another matched directory goes before it.
            for target in targets.iter().rev() {
                if recursive {
                    tree::rm_r(client, target).await?;
                } else {
                    match client.remove(target).await {
                        Err(e) if crate::glob::is_pattern(&path) => return Err(CliError::from(e).context(target)),
                        other => other?,
                    }
                }
            }
            done(ui, "rm", &path)
        }
        Command::Rmdir { path } => {
            session.client().await?.rmdir(&path).await?;
            done(ui, "rmdir", &path)
        }
        Command::Mv { from, to } => {
            session.client().await?.rename(&from, &to).await?;
            done(ui, "mv", &to)
        }
        Command::Cp { from, to, preserve } => {
            let copied = copy(session.client().await?, &from, &to, preserve).await?;
            done(ui, "cp", &copied)
        }
        Command::Stat { path } => {
            let e = session.client().await?.stat(&path).await?;
            if ui.json {
                output::json(output::entry_json(&e))
            } else {
                output::line(output::stat_line(&e))
            }
        }
        Command::Df => df(session.client().await?, ui).await,
        Command::Sum { path } => {
            let (md5, size) = session.client().await?.sum(&path).await?;
            if ui.json {
                output::json(serde_json::json!({"path": path, "md5": hex_digest(&md5), "size": size}))
            } else {
                output::line(format!("{}  {path}", hex_digest(&md5)))
            }
        }
        Command::Serve { .. }
        | Command::User(_)
        | Command::Shell { .. }
        | Command::Completions { .. }
        | Command::Man => Err(CliError::usage("not available here")),
    }
}

fn list(entries: Vec<xfer::proto::Entry>, style: ListStyle, ui: &Ui) -> Result<(), CliError> {
    if ui.json {
        return output::json(serde_json::Value::Array(entries.iter().map(output::entry_json).collect()));
    }
    for e in &entries {
        output::line(output::listing_line(e, style))?;
    }
    Ok(())
}

fn say_path(ui: &Ui, key: &str, path: &str) -> Result<(), CliError> {
    if ui.json {
        output::json(serde_json::json!({ key: path }))
    } else {
        output::line(crate::escape::terminal_safe(path))
    }
}

/// Commands whose result is success alone print nothing, or `{"ok": true}` with `--json`.
fn done(ui: &Ui, op: &str, path: &str) -> Result<(), CliError> {
    if ui.json {
        output::json(serde_json::json!({"ok": true, "op": op, "path": path}))
    } else {
        Ok(())
    }
}

/// `xfer cp` (CTRL-COPY-1): copies the remote file `from` to `to`, or into `to` when it is a
/// directory; returns the path of the copy. A symlink source is refused before anything is
/// copied: cp never follows links, like the tree requests (CTRL-TREE-1). With `preserve` the
/// copy then gets the source's mtime and permission bits (CTRL-ATTR-1); without it, the time of
/// its making.
async fn copy(client: &mut Client, from: &str, to: &str, preserve: bool) -> Result<String, CliError> {
    let source = client.stat(from).await.map_err(|e| CliError::from(e).context(from))?;
    match source.kind {
        EntryKind::File => {}
        EntryKind::Symlink => {
            return Err(CliError::new(
                ExitCode::RemotePath,
                format!("{from}: a symlink; cp never follows one (name the file it points to)"),
            ))
        }
        EntryKind::Dir => return Err(CliError::new(ExitCode::RemotePath, format!("{from}: a directory"))),
        EntryKind::Other => return Err(CliError::new(ExitCode::RemotePath, format!("{from}: not a regular file"))),
    }
    // The permission bits are only in a Walk entry; for a file it is the one entry.
    let attrs = if preserve {
        match client.walk(from).await.map_err(|e| CliError::from(e).context(from))?.as_slice() {
            [e] if e.kind == EntryKind::File => Some((e.mtime, e.mode)),
            _ => return Err(CliError::new(ExitCode::RemotePath, format!("{from}: changed while being copied"))),
        }
    } else {
        None
    };
    let name = from.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
    let mut target = if to.ends_with('/') { format!("{to}{name}") } else { to.to_string() };
    match client.copy(from, &target).await {
        // TO is a directory: the copy goes into it, as cp does.
        Err(e) if e.code() == Some(ErrorCode::IsADirectory) && !name.is_empty() => {
            target = format!("{}/{name}", target.trim_end_matches('/'));
            client.copy(from, &target).await?;
        }
        other => other?,
    }
    if let Some((mtime, mode)) = attrs {
        client.set_attrs(&target, mtime, Some(mode)).await.map_err(|e| CliError::from(e).context(&target))?;
    }
    Ok(target)
}

async fn df(client: &mut Client, ui: &Ui) -> Result<(), CliError> {
    let Response::Df { used_bytes, quota_bytes, used_files, max_files, reserved_bytes } = client.df().await? else {
        return Err(CliError::new(ExitCode::Protocol, "unexpected reply to df"));
    };
    if ui.json {
        return output::json(serde_json::json!({
            "used_bytes": used_bytes, "quota_bytes": quota_bytes, "used_files": used_files,
            "max_files": max_files, "reserved_bytes": reserved_bytes,
        }));
    }
    let pct = if quota_bytes > 0 { used_bytes as f64 * 100.0 / quota_bytes as f64 } else { 0.0 };
    output::line(format!(
        "used {} of {} ({pct:.1}%), {} free",
        format_size(used_bytes),
        format_quota(quota_bytes),
        format_quota(quota_bytes.saturating_sub(used_bytes + reserved_bytes))
    ))?;
    match max_files {
        Some(max) => output::line(format!("files {used_files} of {max}"))?,
        None => output::line(format!("files {used_files}"))?,
    }
    if reserved_bytes > 0 {
        output::line(format!("reserved by uploads in progress: {}", format_size(reserved_bytes)))?;
    }
    Ok(())
}
