//! `xfer sync SRC DST`: makes the directory DST like SRC, in either direction. The remote tree is
//! listed with one `Walk` (CTRL-TREE-1), so a sync with nothing to do costs a `Stat` and a
//! `Walk` after login. Files whose size and mtime match (or md5, with `--checksum`) are skipped;
//! copied files get the source's mtime (and mode with `-p`). Symlinks in a local source are
//! skipped with a note, or followed with `-L`: the files and directories they point to are
//! copied under the link's name, a link back to a directory above it is cut.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use xfer::client::Client;
use xfer::proto::{EntryKind, ErrorCode, Request, TreeEntry};
use xfer::size::format_size;

use crate::args::{CopyArgs, TransportArgs};
use crate::error::CliError;
use crate::exit_codes::ExitCode;
use crate::pool::Job;
use crate::remote::Ui;
use crate::session::Session;
use crate::transfers::join_remote;
use crate::{output, tree};

/// Entries one side of a sync may hold at most (the server's `Walk` bound, CTRL-TREE-2).
const MAX_ENTRIES: usize = 100_000;

/// What the command line asked for.
pub struct SyncArgs {
    pub src: String,
    pub dst: String,
    pub checksum: bool,
    pub delete: bool,
    pub dry_run: bool,
    pub preserve: bool,
    pub keep_going: bool,
    pub dereference: bool,
    pub parallel: u16,
    pub via: TransportArgs,
}

/// Which way the files go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Direction {
    Push { local: PathBuf, remote: String },
    Pull { remote: String, local: PathBuf },
}

/// One side's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Item {
    kind: Kind,
    size: u64,
    mtime: i64,
    mode: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    /// Symlinks (unless a local source is read with `-L`), devices, FIFOs, sockets: never
    /// copied.
    Other,
}

/// A tree by `/`-separated relative path.
type Tree = BTreeMap<String, Item>;

/// One step of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Mkdir(String),
    Copy {
        rel: String,
        size: u64,
    },
    Delete {
        rel: String,
        dir: bool,
    },
    /// The two sides disagree on what a path is (file against directory).
    Conflict(String),
}

/// Runs a sync.
pub async fn run(session: &mut Session, args: SyncArgs, ui: &Ui) -> Result<(), CliError> {
    let dir = direction(&args.src, &args.dst)?;
    if args.dereference && matches!(dir, Direction::Pull { .. }) {
        return Err(CliError::usage(
            "-L follows symlinks of a local source; the server never follows symlinks in the home",
        ));
    }
    let links = if args.dereference { Links::Follow } else { Links::Skip };
    let client = session.client().await?;
    let (src, dst) = match &dir {
        Direction::Push { local, remote } => {
            let src = local_tree(local, links, ui)?.ok_or_else(|| CliError::local(local, "no such directory"))?;
            (src, remote_tree(client, remote).await?)
        }
        Direction::Pull { remote, local } => {
            let src = remote_tree(client, remote)
                .await?
                .ok_or_else(|| CliError::new(ExitCode::RemotePath, format!("{remote}: no such remote directory")))?;
            (src, local_tree(local, Links::Describe, ui)?)
        }
    };
    let dst_missing = dst.is_none();
    let dst = dst.unwrap_or_default();
    let same_md5 = if args.checksum { matching_digests(client, &dir, &src, &dst).await? } else { HashSet::new() };
    let actions = plan(&src, &dst, args.delete, |rel, s, d| {
        if args.checksum {
            same_md5.contains(rel)
        } else {
            s.size == d.size && s.mtime == d.mtime
        }
    });
    let unchanged = src
        .values()
        .filter(|i| i.kind == Kind::File)
        .count()
        .saturating_sub(actions.iter().filter(|a| matches!(a, Action::Copy { .. } | Action::Conflict(_))).count());
    let mut tally = Tally { unchanged, ..Tally::default() };
    if args.dry_run {
        for action in &actions {
            tally.count(action);
            dry_line(action, ui)?;
        }
        return finish(&tally, &actions, true, ui);
    }
    if dst_missing {
        prepare_top(client, &dir).await?;
    }
    // Directories (and conflicts) first, in order; then the copies, several at once; then the
    // deletions, deepest first.
    let (copies, steps): (Vec<&Action>, Vec<&Action>) = actions.iter().partition(|a| matches!(a, Action::Copy { .. }));
    let (deletions, steps): (Vec<&Action>, Vec<&Action>) =
        steps.into_iter().partition(|a| matches!(a, Action::Delete { .. }));
    let opts = CopyArgs {
        preserve: args.preserve,
        parallel: args.parallel,
        keep_going: args.keep_going,
        via: args.via.clone(),
        ..CopyArgs::default()
    };
    // The other sessions connect while the directories are made.
    let others = usize::from(opts.parallel).saturating_sub(1).min(copies.len().saturating_sub(1));
    let helpers = crate::pool::Helpers::start(session, others, &opts, ui);
    run_steps(session, &dir, &steps, &args, &mut tally).await?;
    let jobs: Vec<Job> = copies.iter().filter_map(|a| job(&dir, a, &src)).collect();
    let failed = crate::pool::run(session, helpers, jobs, &opts, ui).await?;
    for a in &copies {
        tally.count(a);
    }
    tally.copied -= failed;
    tally.failed += failed;
    run_steps(session, &dir, &deletions, &args, &mut tally).await?;
    finish(&tally, &actions, false, ui)
}

/// Runs `steps` in order on the main session, counting what they did.
async fn run_steps(
    session: &mut Session,
    dir: &Direction,
    steps: &[&Action],
    args: &SyncArgs,
    tally: &mut Tally,
) -> Result<(), CliError> {
    let client = session.client().await?;
    let mut done_remotely = remote_steps(client, dir, steps).await?.into_iter();
    for action in steps {
        let result = match (dir, action) {
            (Direction::Push { .. }, Action::Mkdir(_) | Action::Delete { .. }) => {
                done_remotely.next().unwrap_or_else(|| Err(CliError::general("a step went missing")))
            }
            _ => execute(dir, action),
        };
        match result {
            Ok(()) => tally.count(action),
            Err(e) if args.keep_going && !e.is_connection_loss() => {
                diag!("xfer: {}", crate::escape::terminal_safe(&e.message));
                tally.failed += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The steps of a push that change the server, its `Mkdir`s, `Remove`s and `Rmdir`s, in a row
/// (CTRL-SESS-8): in order, so parents are made before their children and emptied before they
/// go. Returns each one's outcome, in the order of `steps`.
async fn remote_steps(
    client: &mut Client,
    dir: &Direction,
    steps: &[&Action],
) -> Result<Vec<Result<(), CliError>>, CliError> {
    let Direction::Push { remote, .. } = dir else { return Ok(Vec::new()) };
    let (paths, reqs): (Vec<String>, Vec<Request>) = steps
        .iter()
        .filter_map(|action| {
            let (rel, req): (&String, fn(String) -> Request) = match action {
                Action::Mkdir(rel) => (rel, |path| Request::Mkdir { path }),
                Action::Delete { rel, dir: true } => (rel, |path| Request::Rmdir { path }),
                Action::Delete { rel, dir: false } => (rel, |path| Request::Remove { path }),
                _ => return None,
            };
            let path = join_remote(remote, rel);
            Some((path.clone(), req(path)))
        })
        .unzip();
    let replies = client.call_many(&reqs).await?;
    Ok(paths.iter().zip(replies).map(|(path, r)| r.map(|_| ()).map_err(|e| CliError::from(e).context(path))).collect())
}

/// The transfer a copy step needs.
fn job(dir: &Direction, action: &Action, src: &Tree) -> Option<Job> {
    let Action::Copy { rel, size } = action else { return None };
    Some(match dir {
        Direction::Push { local, remote } => {
            Job::Put { local: local.join(rel), remote: join_remote(remote, rel), size: *size }
        }
        Direction::Pull { remote, local } => {
            let item = src.get(rel)?;
            let known = TreeEntry {
                path: rel.clone(),
                kind: EntryKind::File,
                size: item.size,
                mtime: item.mtime,
                mode: item.mode,
            };
            Job::Get { remote: join_remote(remote, rel), local: local.join(rel), known: Some(known) }
        }
    })
}

/// Exactly one side is remote: `:PATH` (the login's `USER@HOST:` was taken off already).
fn direction(src: &str, dst: &str) -> Result<Direction, CliError> {
    match (src.strip_prefix(':'), dst.strip_prefix(':')) {
        (None, Some(r)) => Ok(Direction::Push { local: PathBuf::from(src), remote: r.to_string() }),
        (Some(r), None) => Ok(Direction::Pull { remote: r.to_string(), local: PathBuf::from(dst) }),
        _ => Err(CliError::usage("sync needs one local and one remote directory (remote as :PATH or USER@HOST:PATH)")),
    }
}

/// The remote tree under `path`, or None if nothing is there. A path that is not a directory
/// is refused.
async fn remote_tree(client: &mut Client, path: &str) -> Result<Option<Tree>, CliError> {
    // One round trip for both: the Stat tells a directory from a file the Walk would list
    // under its own name.
    let entries = match client.stat_and_walk(path).await {
        Ok((e, entries)) if e.kind == EntryKind::Dir => entries,
        Ok(_) => return Err(CliError::new(ExitCode::RemotePath, format!("{path}: not a remote directory"))),
        Err(e) if e.code() == Some(ErrorCode::NotFound) => return Ok(None),
        Err(e) => return Err(CliError::from(e).context(path)),
    };
    let mut tree = Tree::new();
    for e in entries {
        let Some(parts) = tree::safe_rel(&e.path) else {
            return Err(CliError::new(
                ExitCode::Protocol,
                format!("{path}: the server listed a bad path {:?}", e.path),
            ));
        };
        if parts.iter().any(|p| tree::is_partial(p)) {
            continue;
        }
        let kind = match e.kind {
            EntryKind::File => Kind::File,
            EntryKind::Dir => Kind::Dir,
            _ => Kind::Other,
        };
        tree.insert(e.path, Item { kind, size: e.size, mtime: e.mtime, mode: e.mode });
    }
    Ok(Some(tree))
}

/// What a local walk does with a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Links {
    /// A destination: the link is an entry of its own (`Kind::Other`), never followed, so
    /// `--delete` removes the link and not its target.
    Describe,
    /// A source without `-L`: as `Describe`, with a note that it is skipped.
    Skip,
    /// A source with `-L`: the link stands for what it points to. A dangling link, or one
    /// leading back to a directory the walk is inside (a loop), is skipped with a note.
    Follow,
}

/// The local tree under `root`, or None if missing; symlinks as `links` says.
fn local_tree(root: &Path, links: Links, ui: &Ui) -> Result<Option<Tree>, CliError> {
    let root_meta = if links == Links::Follow { std::fs::metadata(root) } else { std::fs::symlink_metadata(root) };
    match root_meta {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(CliError::local(root, "not a directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError::local(root, e)),
    }
    let top = std::fs::canonicalize(root).map_err(|e| CliError::local(root, e))?;
    let mut tree = Tree::new();
    // Each directory to read with the real paths of the directories it lies in, itself
    // included: a link to one of them is a loop.
    let mut stack = vec![(root.to_path_buf(), String::new(), vec![top])];
    while let Some((dir, rel, above)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| CliError::local(&dir, e))? {
            let entry = entry.map_err(|e| CliError::local(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if tree::is_partial(&name) {
                continue;
            }
            let path = entry.path();
            let mut meta = entry.metadata().map_err(|e| CliError::local(&path, e))?;
            let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if meta.file_type().is_symlink() {
                match links {
                    Links::Describe => {}
                    Links::Skip => ui.note(format!("{}: symlink skipped (-L follows symlinks)", path.display())),
                    Links::Follow => match std::fs::metadata(&path) {
                        Ok(target) => meta = target,
                        Err(e) => ui.note(format!("{}: symlink not followed ({e}); skipped", path.display())),
                    },
                }
            }
            let kind = if meta.is_dir() {
                let real = std::fs::canonicalize(&path).map_err(|e| CliError::local(&path, e))?;
                if above.contains(&real) {
                    ui.note(format!("{}: symlink loop (leads back to {}); skipped", path.display(), real.display()));
                    Kind::Other
                } else {
                    let mut inside = above.clone();
                    inside.push(real);
                    stack.push((path, child.clone(), inside));
                    Kind::Dir
                }
            } else if meta.is_file() {
                Kind::File
            } else {
                Kind::Other
            };
            let size = if kind == Kind::File { meta.len() } else { 0 };
            tree.insert(child, Item { kind, size, mtime: meta.mtime(), mode: meta.mode() & 0o7777 });
            if tree.len() > MAX_ENTRIES {
                return Err(CliError::new(
                    ExitCode::TooMany,
                    format!("{}: more than {MAX_ENTRIES} entries", root.display()),
                ));
            }
        }
    }
    Ok(Some(tree))
}

/// Files on both sides with the same size whose md5 digests match (`--checksum`). One `Sum`
/// per such file.
async fn matching_digests(
    client: &mut Client,
    dir: &Direction,
    src: &Tree,
    dst: &Tree,
) -> Result<HashSet<String>, CliError> {
    let (local_root, remote_root) = match dir {
        Direction::Push { local, remote } | Direction::Pull { remote, local } => (local, remote),
    };
    let mut same = HashSet::new();
    for (rel, s) in src {
        let Some(d) = dst.get(rel) else { continue };
        if s.kind != Kind::File || d.kind != Kind::File || s.size != d.size {
            continue;
        }
        let path = local_root.join(rel);
        let file = std::fs::File::open(&path).map_err(|e| CliError::local(&path, e))?;
        let (local_md5, _) = xfer::transfer::hash_file(&file).map_err(|e| CliError::local(&path, e))?;
        let remote = join_remote(remote_root, rel);
        let (remote_md5, _) = client.sum(&remote).await.map_err(|e| CliError::from(e).context(&remote))?;
        if local_md5 == remote_md5 {
            same.insert(rel.clone());
        }
    }
    Ok(same)
}

/// What to do, in order: directories before what they hold, deletions last and deepest first.
/// `same(rel, src, dst)` says whether two regular files count as equal.
fn plan(src: &Tree, dst: &Tree, delete: bool, same: impl Fn(&str, &Item, &Item) -> bool) -> Vec<Action> {
    let mut out = Vec::new();
    for (rel, s) in src {
        match (s.kind, dst.get(rel)) {
            (Kind::Dir, None) => out.push(Action::Mkdir(rel.clone())),
            (Kind::Dir, Some(d)) if d.kind == Kind::Dir => {}
            (Kind::File, None) => out.push(Action::Copy { rel: rel.clone(), size: s.size }),
            (Kind::File, Some(d)) if d.kind == Kind::File => {
                if !same(rel, s, d) {
                    out.push(Action::Copy { rel: rel.clone(), size: s.size });
                }
            }
            (Kind::Other, _) => {}
            (_, Some(_)) => out.push(Action::Conflict(rel.clone())),
        }
    }
    if delete {
        let mut gone: Vec<(&String, &Item)> = dst.iter().filter(|(rel, _)| !src.contains_key(*rel)).collect();
        gone.sort_by(|a, b| b.0.cmp(a.0));
        out.extend(gone.into_iter().map(|(rel, d)| Action::Delete { rel: rel.clone(), dir: d.kind == Kind::Dir }));
    }
    out
}

/// Creates the destination directory itself if it is missing.
async fn prepare_top(client: &mut Client, dir: &Direction) -> Result<(), CliError> {
    match dir {
        Direction::Push { remote, .. } => tree::mkdir_p(client, remote).await,
        Direction::Pull { local, .. } => std::fs::create_dir_all(local).map_err(|e| CliError::local(local, e)),
    }
}

/// One step that is not a copy (copies go through the pool) and does not change the server
/// (those go in a row, [`remote_steps`]).
fn execute(dir: &Direction, action: &Action) -> Result<(), CliError> {
    match (dir, action) {
        (_, Action::Conflict(rel)) => Err(CliError::new(
            ExitCode::Exists,
            format!("{rel}: a file on one side and a directory on the other; not replaced"),
        )),
        (Direction::Push { .. }, Action::Mkdir(rel) | Action::Delete { rel, .. }) => {
            Err(CliError::general(format!("{rel}: steps on the server go in a row")))
        }
        (Direction::Pull { local, .. }, Action::Mkdir(rel)) => tree::local_dir(&local.join(rel)),
        (_, Action::Copy { rel, .. }) => Err(CliError::general(format!("{rel}: copies go through the pool"))),
        (Direction::Pull { local, .. }, Action::Delete { rel, dir }) => {
            let path = local.join(rel);
            let r = if *dir { std::fs::remove_dir(&path) } else { std::fs::remove_file(&path) };
            r.map_err(|e| CliError::local(&path, e))
        }
    }
}

/// Counts of what a sync did (or would do).
#[derive(Debug, Default)]
struct Tally {
    copied: u64,
    bytes: u64,
    mkdirs: u64,
    deleted: u64,
    unchanged: usize,
    failed: u64,
}

impl Tally {
    fn count(&mut self, action: &Action) {
        match action {
            Action::Mkdir(_) => self.mkdirs += 1,
            Action::Copy { size, .. } => {
                self.copied += 1;
                self.bytes += size;
            }
            Action::Delete { .. } => self.deleted += 1,
            Action::Conflict(_) => self.failed += 1,
        }
    }
}

fn describe(action: &Action) -> (&'static str, &str) {
    match action {
        Action::Mkdir(rel) => ("mkdir", rel),
        Action::Copy { rel, .. } => ("copy", rel),
        Action::Delete { rel, .. } => ("delete", rel),
        Action::Conflict(rel) => ("conflict", rel),
    }
}

/// `--dry-run` prints each step on stdout (one JSON object per step with `--json`).
fn dry_line(action: &Action, ui: &Ui) -> Result<(), CliError> {
    let (op, rel) = describe(action);
    if ui.json {
        output::json(serde_json::json!({"op": op, "path": rel, "dry_run": true}))
    } else {
        output::line(format!("would {op} {}", crate::escape::terminal_safe(rel)))
    }
}

/// The summary: JSON on stdout with `--json`, else one line on stderr unless `-q`. Failures
/// collected with `--keep-going` make the exit code `Partial`.
fn finish(t: &Tally, actions: &[Action], dry_run: bool, ui: &Ui) -> Result<(), CliError> {
    if ui.json {
        output::json(serde_json::json!({
            "op": "sync", "dry_run": dry_run, "copied": t.copied, "bytes": t.bytes, "mkdirs": t.mkdirs,
            "deleted": t.deleted, "unchanged": t.unchanged, "failed": t.failed,
        }))?;
    } else if !ui.quiet {
        let verb = if dry_run { "would copy" } else { "copied" };
        diag!(
            "sync: {verb} {} files ({}), {} directories created, {} deleted, {} unchanged{}",
            t.copied,
            format_size(t.bytes),
            t.mkdirs,
            t.deleted,
            t.unchanged,
            if t.failed > 0 { format!(", {} failed", t.failed) } else { String::new() }
        );
    }
    if t.failed > 0 && !dry_run {
        return Err(CliError::new(ExitCode::Partial, format!("sync: {} of {} steps failed", t.failed, actions.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, mtime: i64) -> Item {
        Item { kind: Kind::File, size, mtime, mode: 0o644 }
    }

    fn dir() -> Item {
        Item { kind: Kind::Dir, size: 0, mtime: 0, mode: 0o755 }
    }

    #[test]
    fn plans_only_what_differs_with_parents_first_and_deletions_deepest_first() {
        let src: Tree = [("a", file(1, 1)), ("d", dir()), ("d/b", file(2, 2)), ("same", file(3, 3))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let dst: Tree = [("a", file(1, 9)), ("same", file(3, 3)), ("old", dir()), ("old/x", file(1, 1))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let by_size_and_mtime = |_: &str, s: &Item, d: &Item| s.size == d.size && s.mtime == d.mtime;
        let actions = plan(&src, &dst, true, by_size_and_mtime);
        assert_eq!(
            actions,
            vec![
                Action::Copy { rel: "a".into(), size: 1 },
                Action::Mkdir("d".into()),
                Action::Copy { rel: "d/b".into(), size: 2 },
                Action::Delete { rel: "old/x".into(), dir: false },
                Action::Delete { rel: "old".into(), dir: true },
            ]
        );
        assert!(plan(&src, &src, true, by_size_and_mtime).is_empty());
        let conflict: Tree = [("a".to_string(), dir())].into_iter().collect();
        assert_eq!(plan(&src, &conflict, false, by_size_and_mtime)[0], Action::Conflict("a".into()));
    }

    #[test]
    fn one_side_must_be_remote() {
        assert!(matches!(direction("d", ":r"), Ok(Direction::Push { .. })));
        assert!(matches!(direction(":r", "d"), Ok(Direction::Pull { .. })));
        assert!(direction("a", "b").is_err());
        assert!(direction(":a", ":b").is_err());
    }
}
