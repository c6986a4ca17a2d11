//! `put` and `get`: sources and targets as scp reads them, `-` for standard input and output,
//! safe local destinations, resume by default, and whole trees with `-r`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use xfer::client::{local, Client, ClientError, TransferOptions, TransferSummary, TransportChoice};
use xfer::proto::{EntryKind, ErrorCode, TreeEntry};
use xfer::size::format_size;
use xfer::transfer::{hex_digest, TransferError};

use crate::address::remote_arg;
use crate::args::{Command, CopyArgs, TransportArg};
use crate::error::CliError;
use crate::exit_codes::ExitCode;
use crate::pool::Job;
use crate::remote::Ui;
use crate::session::Session;
use crate::{output, progress, tree};

/// Takes `USER@HOST:` off the remote path arguments of put, get and sync; every remote argument
/// must name the same login. A sync argument keeps a leading `:` to mark its side as remote.
pub fn take_login(cmd: &mut Command) -> Result<Option<(String, String)>, CliError> {
    let sync = matches!(cmd, Command::Sync { .. });
    let remote_args: Vec<&mut String> = match cmd {
        Command::Put { paths, .. } if paths.len() > 1 => paths.last_mut().into_iter().collect(),
        Command::Get { paths, .. } => {
            let n = if paths.len() > 1 { paths.len() - 1 } else { paths.len() };
            paths.iter_mut().take(n).collect()
        }
        Command::Sync { src, dst, .. } => vec![src, dst],
        _ => return Ok(None),
    };
    let mut login = None;
    for arg in remote_args {
        let parsed = remote_arg(arg)?;
        if let Some(l) = parsed.login {
            if login.as_ref().is_some_and(|seen| *seen != l) {
                return Err(CliError::usage("all remote paths must name the same USER@HOST"));
            }
            login = Some(l);
            *arg = if sync { format!(":{}", parsed.path) } else { parsed.path };
        }
    }
    Ok(login)
}

/// Splits `SOURCES... TARGET` (a single argument is a source with no target).
fn split_sources(mut paths: Vec<String>) -> (Vec<String>, Option<String>) {
    let target = if paths.len() > 1 { paths.pop() } else { None };
    (paths, target)
}

/// The last path component of a remote path.
fn remote_name(path: &str) -> Result<String, CliError> {
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." => Ok(n.to_string()),
        _ => Err(CliError::usage(format!("{path:?}: no file name to use; give a target name"))),
    }
}

pub(crate) fn join_remote(dir: &str, name: &str) -> String {
    match dir.trim_end_matches('/') {
        "" if dir.starts_with('/') => format!("/{name}"),
        "" => name.to_string(),
        d => format!("{d}/{name}"),
    }
}

/// The type of a remote path, or None if it does not exist.
pub async fn remote_kind(client: &mut Client, path: &str) -> Result<Option<EntryKind>, CliError> {
    match client.stat(path).await {
        Ok(e) => Ok(Some(e.kind)),
        Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Resume and transport choice; the rate limit paces every transport (CTRL-XFER-9), so a
/// fallback from UDP to TCP stays within it.
fn transfer_options(opts: &CopyArgs) -> Result<TransferOptions, CliError> {
    let transport = match opts.via.transport {
        TransportArg::Udp => TransportChoice::Udp,
        TransportArg::Auto => TransportChoice::Auto,
        TransportArg::Tcp => TransportChoice::Tcp,
    };
    Ok(TransferOptions { resume: !opts.no_resume, transport, rate_limit: opts.via.rate_limit })
}

/// A partial that does not match (the source changed): by default the transfer starts over.
fn partial_mismatch(e: &ClientError) -> bool {
    matches!(e, ClientError::Transfer(TransferError::SourceChanged(_))) || e.code() == Some(ErrorCode::SourceChanged)
}

/// One file to move.
#[derive(Clone, Copy)]
pub(crate) enum Op<'a> {
    Put {
        local: &'a Path,
        remote: &'a str,
    },
    /// `entry`: also learn the remote file's mtime and mode (CTRL-ATTR-3).
    Get {
        remote: &'a str,
        local: &'a Path,
        entry: bool,
    },
}

/// One transfer with progress; a mismatching partial is discarded and the transfer run again
/// unless `-c` asked for a strict resume.
pub(crate) async fn with_resume(
    client: &mut Client,
    op: Op<'_>,
    label: &str,
    opts: &CopyArgs,
    ui: &Ui,
) -> Result<Timed, CliError> {
    let mut topts = transfer_options(opts)?;
    loop {
        let (bar, progress) = progress::start(label, ui.progress, ui.quiet, &ui.in_flight);
        let t0 = Instant::now();
        let result = match op {
            Op::Put { local, remote } => {
                let attrs = crate::attrs::of_local(local, opts.preserve)?;
                client.put_keeping(local, remote, &topts, attrs, progress).await.map(|s| (s, None))
            }
            Op::Get { remote, local, entry: false } => {
                client.get_with(remote, local, &topts, progress).await.map(|s| (s, None))
            }
            Op::Get { remote, local, entry: true } => client.get_keeping(remote, local, &topts, progress).await,
        };
        bar.finish_and_clear();
        match result {
            Ok((s, entry)) => {
                ui.in_flight.end();
                return Ok(Timed { summary: s, secs: t0.elapsed().as_secs_f64(), entry });
            }
            Err(e) if topts.resume && !opts.resume && partial_mismatch(&e) => {
                ui.note(format!("{label}: the partial transfer does not match the source; starting over"));
                topts.resume = false;
            }
            Err(e) => return Err(CliError::from(e).context(label)),
        }
    }
}

pub(crate) struct Timed {
    pub summary: TransferSummary,
    pub secs: f64,
    /// The remote file's entry, when a download asked for it.
    pub entry: Option<TreeEntry>,
}

/// Uploads the sources: files, `-` (standard input, spooled to a temporary file to learn its
/// size and md5), and directories with `-r`.
pub async fn put(
    session: &mut Session,
    paths: Vec<String>,
    opts: &CopyArgs,
    dereference: bool,
    ui: &Ui,
) -> Result<(), CliError> {
    let (sources, target) = split_sources(paths);
    let client = session.client().await?;
    if let Some((local, remote)) = single_file_upload(&sources, target.as_deref()) {
        return put_file_or_into_dir(client, local, remote, opts, ui).await;
    }
    let target_is_dir = match &target {
        Some(t) => remote_kind(client, t).await? == Some(EntryKind::Dir),
        None => false,
    };
    if let Some(t) = &target {
        check_dir_target(t, target_is_dir, sources.len(), "remote")?;
    }
    // A tree or several files: the other sessions connect while the tree is walked.
    let helpers = crate::pool::Helpers::start(session, helpers_for(opts, sources.len()), opts, ui);
    let client = session.client().await?;
    let mut jobs = Vec::new();
    for source in &sources {
        if source == "-" {
            let remote = target
                .as_deref()
                .filter(|_| !target_is_dir && sources.len() == 1)
                .ok_or_else(|| CliError::usage("put -: standard input needs a remote file name (put - NAME)"))?;
            put_stdin(client, remote, opts, ui).await?;
            continue;
        }
        let local = Path::new(source);
        let meta = std::fs::metadata(local).map_err(|e| CliError::local(local, e))?;
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| CliError::usage(format!("{source}: no file name to use")))?;
        let remote = match &target {
            Some(t) if target_is_dir => join_remote(t, &name),
            Some(t) => t.clone(),
            None => name,
        };
        if meta.is_dir() {
            if !opts.recursive {
                return Err(CliError::local(local, "is a directory; use -r to upload a tree"));
            }
            tree::put_tree(client, local, &remote, dereference, &mut jobs, ui).await?;
        } else {
            refuse_ambiguous_target(local, sources.len(), target.as_deref(), target_is_dir)?;
            jobs.push(Job::Put { local: local.to_path_buf(), remote, size: meta.len() });
        }
    }
    crate::pool::run_all(session, helpers, jobs, opts, ui).await
}

/// One regular file to a target that is not marked as a directory: the upload needs no lookup
/// first (`put_file_or_into_dir`).
fn single_file_upload<'a>(sources: &'a [String], target: Option<&'a str>) -> Option<(&'a Path, &'a str)> {
    let ([source], Some(target)) = (sources, target) else { return None };
    let local = Path::new(source.as_str());
    let plain = source != "-" && !target.ends_with('/') && local.is_file();
    (plain && refuse_ambiguous_target(local, 1, Some(target), false).is_ok()).then_some((local, target))
}

/// `put FILE TARGET`: uploads to TARGET, or to TARGET/NAME if TARGET is a directory. Rather than
/// asking first (a round trip on every upload), it tries TARGET and retries into it when the
/// server answers that TARGET is a directory.
async fn put_file_or_into_dir(
    client: &mut Client,
    local: &Path,
    target: &str,
    opts: &CopyArgs,
    ui: &Ui,
) -> Result<(), CliError> {
    match put_file(client, local, target, opts, ui).await {
        Err(e) if e.server_code == Some(ErrorCode::IsADirectory) && client.is_usable() => {
            let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            put_file(client, local, &join_remote(target, &name), opts, ui).await
        }
        other => other,
    }
}

/// A trailing `/` means a directory; several sources need one.
fn check_dir_target(target: &str, is_dir: bool, sources: usize, side: &str) -> Result<(), CliError> {
    if is_dir {
        return Ok(());
    }
    let code = if side == "local" { ExitCode::Local } else { ExitCode::RemotePath };
    if target.ends_with('/') {
        return Err(CliError::new(code, format!("{target}: no such {side} directory")));
    }
    if sources > 1 {
        return Err(CliError::new(
            code,
            format!("{target}: not a {side} directory; several sources need a directory target"),
        ));
    }
    Ok(())
}

/// `put a.log b.log` where b.log is also a local file is what a glob with two matches looks
/// like: refuse rather than upload a.log under b.log's name (unless the target is the source
/// itself, `put f f`).
fn refuse_ambiguous_target(source: &Path, sources: usize, target: Option<&str>, is_dir: bool) -> Result<(), CliError> {
    let same_file =
        |t: &str| std::fs::canonicalize(t).ok().is_some_and(|t| std::fs::canonicalize(source).ok() == Some(t));
    match target {
        Some(t) if sources == 1 && !is_dir && !t.contains('/') && Path::new(t).is_file() && !same_file(t) => Err(CliError::usage(
            format!("{t} is also a local file: to upload both, name a directory target (e.g. ./); to upload under that name, write ./{t}"),
        )),
        _ => Ok(()),
    }
}

/// Uploads one regular file.
pub async fn put_file(
    client: &mut Client,
    local: &Path,
    remote: &str,
    opts: &CopyArgs,
    ui: &Ui,
) -> Result<(), CliError> {
    if opts.no_clobber && remote_kind(client, remote).await?.is_some() {
        return Err(CliError::new(ExitCode::Exists, format!("{remote}: exists on the server (refusing to overwrite)")));
    }
    let label = format!("put {}", local.display());
    let t = with_resume(client, Op::Put { local, remote }, &label, opts, ui).await?;
    report(ui, "uploaded", &local.display().to_string(), remote, &t)
}

async fn put_stdin(client: &mut Client, remote: &str, opts: &CopyArgs, ui: &Ui) -> Result<(), CliError> {
    let mut spool = tempfile::NamedTempFile::new().map_err(|e| CliError::local(&std::env::temp_dir(), e))?;
    std::io::copy(&mut std::io::stdin().lock(), spool.as_file_mut())
        .map_err(|e| CliError::local(Path::new("standard input"), e))?;
    let label = "put -".to_string();
    let path = spool.path().to_path_buf();
    let t = with_resume(client, Op::Put { local: &path, remote }, &label, opts, ui).await?;
    report(ui, "uploaded", "-", remote, &t)
}

/// Downloads the sources: files, directories with `-r`, or one file to standard output (`-`,
/// spooled to a temporary file and written out only once its md5 is verified).
pub async fn get(session: &mut Session, paths: Vec<String>, opts: &CopyArgs, ui: &Ui) -> Result<(), CliError> {
    let (sources, target) = split_sources(paths);
    let client = session.client().await?;
    let sources = crate::glob::expand_all(client, sources).await?;
    if target.as_deref() == Some("-") {
        if sources.len() != 1 || opts.recursive {
            return Err(CliError::usage("get ... -: standard output takes exactly one file"));
        }
        return get_stdout(client, &sources[0], opts, ui).await;
    }
    let target_is_dir = target.as_ref().is_some_and(|t| Path::new(t).is_dir());
    if let Some(t) = &target {
        check_dir_target(t, target_is_dir, sources.len(), "local")?;
    }
    if let ([source], false) = (sources.as_slice(), opts.recursive) {
        // One file: no lookup first, and the remote entry comes with the download.
        let local = local_for(source, target.as_deref(), target_is_dir)?;
        return get_file(client, source, &local, None, opts, ui).await;
    }
    let helpers = crate::pool::Helpers::start(session, helpers_for(opts, sources.len()), opts, ui);
    let client = session.client().await?;
    let mut jobs = Vec::new();
    for source in &sources {
        let local = local_for(source, target.as_deref(), target_is_dir)?;
        if opts.recursive && remote_kind(client, source).await? == Some(EntryKind::Dir) {
            tree::get_tree(client, source, &local, &mut jobs, ui).await?;
        } else {
            jobs.push(Job::Get { remote: source.clone(), local, known: None });
        }
    }
    crate::pool::run_all(session, helpers, jobs, opts, ui).await
}

/// How many sessions besides the command's own to start before the files are known: `-j`
/// less one for trees, no more than the other files otherwise.
fn helpers_for(opts: &CopyArgs, sources: usize) -> usize {
    let others = usize::from(opts.parallel).saturating_sub(1);
    if opts.recursive {
        others
    } else {
        others.min(sources.saturating_sub(1))
    }
}

/// Where a downloaded `source` goes: into the target directory, onto the target, or here.
fn local_for(source: &str, target: Option<&str>, target_is_dir: bool) -> Result<PathBuf, CliError> {
    let name = remote_name(source)?;
    Ok(match target {
        Some(t) if target_is_dir => Path::new(t).join(&name),
        Some(t) => PathBuf::from(t),
        None => PathBuf::from(&name),
    })
}

/// Downloads one file to a checked local destination and gives it the remote mtime (and mode
/// with `-p`), from `known` when the caller listed it already.
pub async fn get_file(
    client: &mut Client,
    remote: &str,
    local: &Path,
    known: Option<&TreeEntry>,
    opts: &CopyArgs,
    ui: &Ui,
) -> Result<(), CliError> {
    let dest = local::download_target(local, opts.no_clobber)?;
    let label = format!("get {remote}");
    let op = Op::Get { remote, local: &dest, entry: known.is_none() };
    let t = with_resume(client, op, &label, opts, ui).await.map_err(|e| {
        if e.server_code == Some(ErrorCode::IsADirectory) && !opts.recursive {
            e.with_note("use -r to download a tree")
        } else {
            e
        }
    })?;
    if let Some(e) = known.or(t.entry.as_ref()) {
        crate::attrs::keep_local(&dest, e.mtime, opts.preserve.then_some(e.mode))?;
    }
    report(ui, "downloaded", remote, &local.display().to_string(), &t)
}

async fn get_stdout(client: &mut Client, remote: &str, opts: &CopyArgs, ui: &Ui) -> Result<(), CliError> {
    let dir = tempfile::tempdir().map_err(|e| CliError::local(&std::env::temp_dir(), e))?;
    let dest = dir.path().join("download");
    let label = format!("get {remote}");
    let t = with_resume(client, Op::Get { remote, local: &dest, entry: false }, &label, opts, ui).await?;
    let mut file = std::fs::File::open(&dest).map_err(|e| CliError::local(&dest, e))?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut file, &mut out).and_then(|_| std::io::Write::flush(&mut out)).map_err(CliError::stdout)?;
    if !ui.quiet && !ui.json {
        summary_line(ui, "downloaded", remote, "-", &t);
    }
    Ok(())
}

/// The result of one transfer: a JSON line on stdout with `--json`, else a summary on stderr.
pub(crate) fn report(ui: &Ui, verb: &str, from: &str, to: &str, t: &Timed) -> Result<(), CliError> {
    let s = &t.summary;
    if ui.json {
        return output::json(serde_json::json!({
            "op": verb, "from": from, "to": to, "size": s.size, "resumed_from": s.resumed_from,
            "md5": hex_digest(&s.md5), "transport": output::transport_name(s.transport), "seconds": t.secs,
        }));
    }
    if !ui.quiet {
        summary_line(ui, verb, from, to, t);
    }
    Ok(())
}

fn summary_line(ui: &Ui, verb: &str, from: &str, to: &str, t: &Timed) {
    let s = &t.summary;
    let rate = (s.size - s.resumed_from) as f64 / t.secs.max(1e-6);
    let resumed =
        if s.resumed_from > 0 { format!(", resumed at {}", format_size(s.resumed_from)) } else { String::new() };
    let via = output::transport_name(s.transport);
    diag!(
        "{verb} {} -> {}: {} in {:.2} s ({}/s) over {via}{resumed}",
        crate::escape::terminal_safe(from),
        crate::escape::terminal_safe(to),
        format_size(s.size),
        t.secs,
        format_size(rate as u64)
    );
    if ui.verbose > 0 {
        diag!("  md5 {}  transport {via}", hex_digest(&s.md5));
        if let Some(u) = &s.udp_stats {
            let moved = u.sent_bytes.saturating_sub(u.retransmitted_bytes).max(1);
            diag!(
                "  udp: {} datagrams of up to {} bytes, {} retransmitted ({:.2}% of the data), {} lost, \
                 rtt {:.1} ms (min {:.1}), bottleneck {}/s{}",
                u.sent_packets,
                u.datagram_size,
                format_size(u.retransmitted_bytes),
                100.0 * u.retransmitted_bytes as f64 / moved as f64,
                u.lost_packets,
                u.srtt.as_secs_f64() * 1e3,
                u.min_rtt.as_secs_f64() * 1e3,
                format_size(u.bottleneck_rate),
                if u.resumed_start { ", started at the remembered rate" } else { "" },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_names_remote_paths() {
        assert_eq!(join_remote("d", "f"), "d/f");
        assert_eq!(join_remote("d/", "f"), "d/f");
        assert_eq!(join_remote("/", "f"), "/f");
        assert_eq!(remote_name("a/b/c.txt").unwrap(), "c.txt");
        assert_eq!(remote_name("dir/").unwrap(), "dir");
        assert!(remote_name("..").is_err());
        assert!(remote_name("").is_err());
    }
}
