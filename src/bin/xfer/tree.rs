//! Directory operations built on single requests: `mkdir -p`, `rm -r`, and the walks of
//! `put -r` and `get -r`. One file at a time, in name order.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use xfer::client::{Client, ClientError};
use xfer::proto::{EntryKind, ErrorCode, Request, Response};

use crate::error::CliError;
use crate::exit_codes::ExitCode;
use crate::pool::Job;
use crate::remote::Ui;
use crate::transfers::remote_kind;

/// Directories visited by one walk at most, so a link loop under `-L` ends.
const MAX_DIRS: usize = 100_000;

/// Creates `path` and its missing parents; an existing directory is fine.
pub async fn mkdir_p(client: &mut Client, path: &str) -> Result<(), CliError> {
    let mut prefix = String::from(if path.starts_with('/') { "/" } else { "" });
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        prefix.push_str(part);
        mkdir_one(client, &prefix).await?;
    }
    Ok(())
}

/// Creates the directory `path`, whose parent exists; an existing directory is fine. One round
/// trip, two when something exists there already.
async fn mkdir_one(client: &mut Client, path: &str) -> Result<(), CliError> {
    match client.mkdir(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {
            if remote_kind(client, path).await? != Some(EntryKind::Dir) {
                return Err(CliError::new(ExitCode::RemotePath, format!("{path}: exists and is not a directory")));
            }
            Ok(())
        }
        Err(e) => Err(CliError::from(e).context(path)),
    }
}

/// Removes `path`, and everything under it when it is a directory (depth first).
pub async fn rm_r(client: &mut Client, path: &str) -> Result<(), CliError> {
    if remote_kind(client, path).await? != Some(EntryKind::Dir) {
        return Ok(client.remove(path).await?);
    }
    // Directories in the order found; removed in reverse, so children go before parents.
    let mut dirs = vec![path.to_string()];
    let mut i = 0;
    while i < dirs.len() {
        let dir = dirs[i].clone();
        for e in client.list(&dir).await? {
            let child = format!("{}/{}", dir.trim_end_matches('/'), e.name);
            if e.kind == EntryKind::Dir {
                dirs.push(child);
            } else {
                client.remove(&child).await.map_err(|e| CliError::from(e).context(&child))?;
            }
        }
        i += 1;
    }
    for dir in dirs.iter().rev() {
        client.rmdir(dir).await.map_err(|e| CliError::from(e).context(dir))?;
    }
    Ok(())
}

/// Creates the remote directories of the tree at `local` as `remote` and adds its files to
/// `jobs`. Symlinks inside it are skipped unless `dereference`; FIFOs, sockets and devices are
/// always skipped.
pub async fn put_tree(
    client: &mut Client,
    local: &Path,
    remote: &str,
    dereference: bool,
    jobs: &mut Vec<Job>,
    ui: &Ui,
) -> Result<(), CliError> {
    let mut stack = vec![(local.to_path_buf(), remote.to_string())];
    let mut seen = HashSet::new();
    let mut dirs = Vec::new();
    while let Some((dir, rdir)) = stack.pop() {
        let real = std::fs::canonicalize(&dir).map_err(|e| CliError::local(&dir, e))?;
        if !seen.insert(real) || seen.len() > MAX_DIRS {
            ui.note(format!("{}: already visited (a symlink loop?); skipped", dir.display()));
            continue;
        }
        if rdir != remote {
            dirs.push(rdir.clone());
        }
        let mut subdirs = Vec::new();
        for (path, name) in sorted_entries(&dir)? {
            let rpath = format!("{}/{name}", rdir.trim_end_matches('/'));
            let meta = std::fs::symlink_metadata(&path).map_err(|e| CliError::local(&path, e))?;
            let meta = if meta.file_type().is_symlink() {
                if !dereference {
                    ui.note(format!("{}: symlink skipped (-L follows symlinks)", path.display()));
                    continue;
                }
                std::fs::metadata(&path).map_err(|e| CliError::local(&path, e))?
            } else {
                meta
            };
            if meta.is_dir() {
                subdirs.push((path, rpath));
            } else if meta.is_file() {
                jobs.push(Job::Put { local: path, remote: rpath, size: meta.len() });
            } else {
                ui.note(format!("{}: not a regular file; skipped", path.display()));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    // The walk goes top down, so below the root every directory comes after its parent: one
    // `Mkdir` each, all in a row.
    mkdir_p(client, remote).await?;
    make_dirs(client, &dirs).await
}

/// Creates `dirs`, each of whose parents exists or comes earlier in the list, with their
/// `Mkdir`s in a row (CTRL-SESS-8): one round trip for the lot, two when some exist already
/// (their `Stat`s, also in a row). An existing directory is fine.
pub async fn make_dirs(client: &mut Client, dirs: &[String]) -> Result<(), CliError> {
    let reqs: Vec<Request> = dirs.iter().map(|d| Request::Mkdir { path: d.clone() }).collect();
    let made = client.call_many(&reqs).await?;
    let exists =
        |r: &Result<Response, ClientError>| r.as_ref().is_err_and(|e| e.code() == Some(ErrorCode::AlreadyExists));
    let stats: Vec<Request> =
        dirs.iter().zip(&made).filter(|(_, r)| exists(r)).map(|(d, _)| Request::Stat { path: d.clone() }).collect();
    let mut stats = client.call_many(&stats).await?.into_iter();
    // The first failure in the list's order: what fails below it follows from it.
    for (dir, result) in dirs.iter().zip(made) {
        let result = if exists(&result) { stats.next().unwrap_or(Err(ClientError::Broken)) } else { result };
        match result {
            Ok(Response::Stat { entry }) if entry.kind != EntryKind::Dir => {
                return Err(CliError::new(ExitCode::RemotePath, format!("{dir}: exists and is not a directory")))
            }
            Ok(_) => {}
            Err(e) => return Err(CliError::from(e).context(dir)),
        }
    }
    Ok(())
}

/// A directory's entries sorted by name, without partial downloads of our own.
fn sorted_entries(dir: &Path) -> Result<Vec<(PathBuf, String)>, CliError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| CliError::local(dir, e))? {
        let e = e.map_err(|e| CliError::local(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_partial(&name) {
            out.push((e.path(), name));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// A listed name is one path component: never empty, `.`, `..`, or holding `/` or NUL.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

pub fn is_partial(name: &str) -> bool {
    name.starts_with('.') && (name.ends_with(".xfer-part") || name.ends_with(".xfer-part.ranges"))
}

/// Creates the local directories of the remote tree at `remote` in `local` and adds its files
/// to `jobs`. The tree is listed with one `Walk` (CTRL-TREE-1); each job carries the remote
/// entry, so its file gets the remote mtime (and mode with -p) without asking again.
pub async fn get_tree(
    client: &mut Client,
    remote: &str,
    local: &Path,
    jobs: &mut Vec<Job>,
    ui: &Ui,
) -> Result<(), CliError> {
    let entries = client.walk(remote).await.map_err(|e| CliError::from(e).context(remote))?;
    local_dir(local)?;
    for e in &entries {
        let Some(rel) = safe_rel(&e.path) else {
            return Err(CliError::new(
                ExitCode::Protocol,
                format!("{remote}: the server listed a bad path {:?}", e.path),
            ));
        };
        if rel.iter().any(|c| is_partial(c)) {
            continue;
        }
        let rpath = format!("{}/{}", remote.trim_end_matches('/'), e.path);
        let path = rel.iter().fold(local.to_path_buf(), |p, c| p.join(c));
        match e.kind {
            EntryKind::Dir => local_dir(&path)?,
            EntryKind::File => jobs.push(Job::Get { remote: rpath, local: path, known: Some(e.clone()) }),
            _ => ui.note(format!("{rpath}: not a regular file; skipped")),
        }
    }
    Ok(())
}

/// Creates the local directory `dir` unless it is one already; never replaces anything.
pub fn local_dir(dir: &Path) -> Result<(), CliError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(CliError::local(dir, "exists and is not a directory")),
        Err(_) => std::fs::create_dir(dir).map_err(|e| CliError::local(dir, e)),
    }
}

/// The components of a relative path the server listed, if each is a plain name.
pub fn safe_rel(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path.split('/').collect();
    parts.iter().all(|p| is_plain_name(p)).then_some(parts)
}
