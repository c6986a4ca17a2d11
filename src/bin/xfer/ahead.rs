//! Small transfers sent ahead of the replies of those before them on one session (CTRL-PUT-8,
//! CTRL-GET-6): which jobs may go ahead, and how each is sent, finished and reported. Many
//! small files then cost one round trip in all rather than one each.

use std::path::{Path, PathBuf};
use std::time::Instant;

use xfer::client::{local, Client, ClientError, SMALL_TRANSFER_MAX};
use xfer::proto::TreeEntry;

use crate::args::{CopyArgs, TransportArg};
use crate::error::CliError;
use crate::pool::Job;
use crate::progress;
use crate::remote::Ui;
use crate::transfers::{report, Timed};

/// Whether `job` may go ahead: an upload of a file small enough to go inline, or a download
/// of a file a listing showed to be that small; not forced over UDP, and with nothing to look
/// up on the server first.
pub fn goes_ahead(job: &Job, opts: &CopyArgs) -> bool {
    let small = match job {
        Job::Put { size, .. } => *size <= SMALL_TRANSFER_MAX && !opts.no_clobber,
        Job::Get { known: Some(entry), .. } => entry.size <= SMALL_TRANSFER_MAX,
        Job::Get { known: None, .. } => false,
    };
    small && opts.via.transport != TransportArg::Udp
}

/// A transfer sent ahead, to finish in the order sent.
pub struct SentAhead {
    what: Sent,
    at: Instant,
}

enum Sent {
    Put {
        local: PathBuf,
        remote: String,
    },
    /// `dest` is where the download lands (`local`, or what a symlink there points to).
    Get {
        remote: String,
        local: PathBuf,
        dest: PathBuf,
        entry: TreeEntry,
    },
}

/// Sends `job`, which [`goes_ahead`], without waiting for its replies.
pub async fn send(client: &mut Client, job: &Job, opts: &CopyArgs, ui: &Ui) -> Result<SentAhead, CliError> {
    let at = Instant::now();
    let what = match job {
        Job::Put { local, remote, .. } => {
            let label = put_label(local);
            let attrs = crate::attrs::of_local(local, opts.preserve)?;
            let progress = progress::lines_only(&label, ui.progress, ui.quiet);
            let sent = client.send_small_put(local, remote, Some(attrs), opts.via.rate_limit, progress).await;
            sent.map_err(|e| CliError::from(e).context(&label))?;
            Sent::Put { local: local.clone(), remote: remote.clone() }
        }
        Job::Get { remote, local, known: Some(entry) } => {
            let label = get_label(remote);
            let dest = local::download_target(local, opts.no_clobber)?;
            let progress = progress::lines_only(&label, ui.progress, ui.quiet);
            let resume = !opts.no_resume;
            let sent = client.send_small_get(remote, &dest, resume, opts.via.rate_limit, progress).await;
            sent.map_err(|e| CliError::from(e).context(&label))?;
            Sent::Get { remote: remote.clone(), local: local.clone(), dest, entry: entry.clone() }
        }
        Job::Get { remote, .. } => return Err(CliError::general(format!("{remote}: its size is not known"))),
    };
    Ok(SentAhead { what, at })
}

/// Reads the outcome of the oldest transfer sent ahead and reports it, as a transfer of its
/// own would be.
pub async fn finish(client: &mut Client, sent: SentAhead, opts: &CopyArgs, ui: &Ui) -> Result<(), CliError> {
    let result = client.finish_ahead().await.unwrap_or(Err(ClientError::Broken));
    let secs = sent.at.elapsed().as_secs_f64();
    match sent.what {
        Sent::Put { local, remote } => {
            let summary = result.map_err(|e| CliError::from(e).context(put_label(&local)))?;
            report(ui, "uploaded", &local.display().to_string(), &remote, &Timed { summary, secs, entry: None })
        }
        Sent::Get { remote, local, dest, entry } => {
            let summary = result.map_err(|e| CliError::from(e).context(get_label(&remote)))?;
            crate::attrs::keep_local(&dest, entry.mtime, opts.preserve.then_some(entry.mode))?;
            report(ui, "downloaded", &remote, &local.display().to_string(), &Timed { summary, secs, entry: None })
        }
    }
}

fn put_label(local: &Path) -> String {
    format!("put {}", local.display())
}

fn get_label(remote: &str) -> String {
    format!("get {remote}")
}
