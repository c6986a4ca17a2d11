//! Small transfers sent ahead of the replies of those before them, many in a row on one
//! session: uploads sent whole (CTRL-PUT-7, CTRL-PUT-8) and downloads of files known to be
//! small (CTRL-GET-6). [`Client::send_small_put`] and [`Client::send_small_get`] queue a
//! transfer's requests (and an upload's data) and return at once; [`Client::finish_ahead`]
//! sends what is queued, in one write, and reads the replies of the oldest transfer sent.
//! Replies come in order (CTRL-SESS-1), so the client only remembers, per transfer in flight,
//! what each outcome leaves to read.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::files::open_source;
use super::pace::{self, Pacer};
use super::partial::{open_local_partial, partial_path};
use super::transfer::TcpDownload;
use super::{unexpected, Client, ClientError, FileAttrs, TransferSummary};
use crate::conn::{Batch, ConnError};
use crate::proto::control::Md5Digest;
use crate::proto::{DataChunk, ErrorCode, Request, Response, Transport, CHUNK_SIZE};
use crate::transfer::{self, Progress, ProgressFn, TransferError};

/// At most this many small transfers are unanswered on one session (CTRL-PUT-8, CTRL-GET-6).
/// An upload's replies are at most three short frames, and a download's requests one short
/// frame: what one end writes while the other is not reading then fits in the socket buffers,
/// so neither can block the other.
pub const AHEAD_MAX: usize = 64;

/// A transfer sent ahead whose replies are still to be read.
enum InFlight {
    Put(PutInFlight),
    Get(GetInFlight),
}

/// An inline upload whose replies are still to be read.
struct PutInFlight {
    size: u64,
    md5: Md5Digest,
    /// Frames sent behind the `Put` (data and `PutEnd`): each gets an `Error` if it is refused.
    frames: usize,
    /// A `SetAttrs` rides behind the `PutEnd` (CTRL-ATTR-2).
    attrs: bool,
    progress: ProgressFn,
}

/// A download whose replies are still to be read, with the partial it goes into: `offset`
/// bytes long and hashed into `hasher` when sent, opened again only when its data comes, so
/// that a window of downloads holds no file open.
struct GetInFlight {
    local: PathBuf,
    partial: PathBuf,
    offset: u64,
    hasher: Md5,
    progress: ProgressFn,
}

/// The transfers of one session sent ahead whose replies are unread, oldest first, and the
/// frames of those not written yet.
#[derive(Default)]
pub(super) struct AheadQueue {
    in_flight: VecDeque<InFlight>,
    unsent: Batch,
}

impl Client {
    /// How many transfers sent ahead still wait for their replies.
    pub fn ahead_in_flight(&self) -> usize {
        self.ahead.in_flight.len()
    }

    /// Sends the small file `local` (at most `SMALL_TRANSFER_MAX` bytes) as an inline upload to
    /// `remote`, with `attrs` applied if it commits, without reading any reply (CTRL-PUT-7,
    /// CTRL-PUT-8). Read its outcome with [`Client::finish_ahead`], in the order sent; at
    /// most [`AHEAD_MAX`] may be unanswered. A file that cannot be read, or is
    /// larger than one chunk, is refused here and nothing is sent.
    pub async fn send_small_put(
        &mut self,
        local: &Path,
        remote: &str,
        attrs: Option<FileAttrs>,
        rate_limit: Option<u64>,
        progress: ProgressFn,
    ) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        if self.ahead.in_flight.iter().any(|t| matches!(t, InFlight::Get(_))) {
            // The server reads nothing while it sends a download (CTRL-GET-6): an upload's
            // data written behind unread downloads could wait on each other forever.
            return Err(ClientError::Protocol("an upload is sent behind downloads whose data is unread".into()));
        }
        let (file, size) = open_source(local)?;
        if size > super::SMALL_TRANSFER_MAX {
            return Err(TransferError::SourceChanged(format!("{} grew past a small upload", local.display())).into());
        }
        self.tcp_rate = rate_limit;
        self.send_inline(file, size, remote, attrs, progress).await
    }

    /// Sends a `Get` of `remote`, a file known to be small, into the partial of `local`
    /// (resuming it when `resume`), without reading any reply (CTRL-GET-6). Read its outcome
    /// with [`Client::finish_ahead`], in the order sent. The download goes over TCP whatever
    /// its size turns out to be.
    pub async fn send_small_get(
        &mut self,
        remote: &str,
        local: &Path,
        resume: bool,
        rate_limit: Option<u64>,
        progress: ProgressFn,
    ) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        self.tcp_rate = rate_limit;
        let partial = partial_path(local);
        let (file, offset, hasher) = open_local_partial(&partial, resume).await?;
        drop(file);
        let prefix_md5 = (offset > 0).then(|| hasher.clone().finalize().into());
        let req = Request::Get { path: remote.to_string(), offset, prefix_md5, transport: Transport::Tcp };
        self.ahead.unsent.control(&req).map_err(ConnError::from)?;
        let local = local.to_path_buf();
        self.ahead.in_flight.push_back(InFlight::Get(GetInFlight { local, partial, offset, hasher, progress }));
        Ok(())
    }

    /// Reads the replies of the oldest transfer sent ahead; `None` when none is in flight. A
    /// refusal leaves the session in step (CTRL-PUT-7, CTRL-GET-1); any other failure leaves
    /// it unusable, and the transfers behind this one unanswered.
    pub async fn finish_ahead(&mut self) -> Option<Result<TransferSummary, ClientError>> {
        let unsent = std::mem::take(&mut self.ahead.unsent);
        let sent = self.ahead.in_flight.pop_front()?;
        let written = match unsent.is_empty() {
            true => Ok(()),
            false => self.writer.write_batch(unsent).await.map_err(|e| ConnError::from(e).into()),
        };
        let result = match written {
            Err(e) => Err(e),
            Ok(()) => match sent {
                InFlight::Put(put) => self.read_inline(put).await,
                InFlight::Get(get) => self.read_get(get).await,
            },
        };
        // Only a refusal leaves the stream in step; after anything else the replies of the
        // transfers behind this one cannot be found.
        if result.as_ref().is_err_and(|e| !matches!(e, ClientError::Server { .. })) || self.broken {
            self.broken = true;
            self.ahead.in_flight.clear();
        }
        Some(result)
    }

    /// One small upload in one round trip (CTRL-PUT-7), with the attributes the caller left
    /// pending (CTRL-ATTR-2).
    pub(super) async fn put_inline(
        &mut self,
        file: std::fs::File,
        size: u64,
        remote: &str,
        progress: ProgressFn,
    ) -> Result<TransferSummary, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        if !self.ahead.in_flight.is_empty() {
            return Err(ClientError::Protocol("an upload is sent while earlier transfers are unanswered".into()));
        }
        let attrs = self.attrs_pending.take();
        self.send_inline(file, size, remote, attrs, progress).await?;
        match self.finish_ahead().await {
            Some(result) => result,
            None => Err(ClientError::Protocol("the upload sent is not in flight".into())),
        }
    }

    async fn send_inline(
        &mut self,
        file: std::fs::File,
        size: u64,
        remote: &str,
        attrs: Option<FileAttrs>,
        progress: ProgressFn,
    ) -> Result<(), ClientError> {
        let data = read_small(file, size).await?;
        let md5: Md5Digest = Md5::digest(&data).into();
        let mut batch = Batch::new();
        let put = Request::Put { path: remote.to_string(), size, resume: false, transport: Transport::Tcp };
        batch.control(&put).map_err(ConnError::from)?;
        let data_frames = usize::from(!data.is_empty());
        if data_frames > 0 {
            batch.data(&DataChunk::new(0, data));
        }
        batch.control(&Request::PutEnd { md5 }).map_err(ConnError::from)?;
        // CTRL-ATTR-2: the file's attributes ride along, applied only if this upload commits.
        if let Some(a) = attrs {
            let req =
                Request::SetAttrs { path: remote.to_string(), mtime: a.mtime, mode: a.mode, upload_md5: Some(md5) };
            batch.control(&req).map_err(ConnError::from)?;
        }
        progress(Progress::Start { total: size, offset: 0 });
        pace::pace(&mut self.tcp_rate.map(Pacer::new), size).await;
        self.ahead.unsent.append(batch);
        let sent = PutInFlight { size, md5, frames: data_frames + 1, attrs: attrs.is_some(), progress };
        self.ahead.in_flight.push_back(InFlight::Put(sent));
        Ok(())
    }

    async fn read_inline(&mut self, sent: PutInFlight) -> Result<TransferSummary, ClientError> {
        let PutInFlight { size, md5, frames, attrs, progress } = sent;
        let behind = usize::from(attrs);
        self.settle_greeting().await?;
        match self.read_reply().await {
            Ok(Response::PutReady { offset: 0, prefix_md5: None }) => {}
            Ok(other) => {
                self.broken = true;
                return Err(unexpected(other));
            }
            Err(e @ ClientError::Server { .. }) => return Err(self.drain_refused(e, frames + behind).await),
            Err(e) => return Err(e),
        }
        progress(Progress::Advance { done: size });
        progress(Progress::Verifying);
        match self.read_reply().await {
            Ok(Response::PutDone { size: s, md5: m }) if s == size && m == md5 => {}
            Ok(other) => {
                self.broken = true;
                return Err(unexpected(other));
            }
            Err(e @ ClientError::Server { .. }) => return Err(self.drain_refused(e, behind).await),
            Err(e) => return Err(e),
        }
        if behind > 0 {
            match self.read_reply().await {
                Ok(Response::Ok) => {}
                // A server that predates SetAttrs: the file stays as uploaded.
                Err(e) if e.code() == Some(ErrorCode::BadRequest) => {}
                Ok(other) => {
                    self.broken = true;
                    return Err(unexpected(other));
                }
                Err(e) => return Err(e),
            }
        }
        progress(Progress::Finish);
        Ok(TransferSummary { size, resumed_from: 0, md5, transport: Transport::Tcp, udp_stats: None })
    }

    /// Reads a download sent ahead: `GetReady`, its data and `GetEnd` into the partial, then
    /// the commit (CTRL-GET-1 to CTRL-GET-4). A refusal is the only reply (`CTRL-GET-1`).
    async fn read_get(&mut self, sent: GetInFlight) -> Result<TransferSummary, ClientError> {
        let GetInFlight { local, partial, offset, hasher, progress } = sent;
        self.settle_greeting().await?;
        let size = match self.read_reply().await {
            Ok(Response::GetReady { size, offset: o }) if o == offset => size,
            other => {
                if offset == 0 {
                    let _ = std::fs::remove_file(&partial);
                }
                return Err(other.map_or_else(|e| e, unexpected));
            }
        };
        let file = match reopen_partial(&partial, offset) {
            Ok(f) => f,
            Err(e) => {
                // Its data is on the way and must be read off the connection, so end here.
                self.broken = true;
                return Err(e);
            }
        };
        let download = TcpDownload { file, offset, size, hasher, walk_behind: false };
        self.finish_get(&partial, &local, download, &progress).await
    }

    /// After a refused inline `Put`, reads the one error reply each of its `frames` frames sent
    /// ahead got (CTRL-PUT-7), so the session is back in step. Returns the refusal.
    async fn drain_refused(&mut self, refusal: ClientError, frames: usize) -> ClientError {
        for _ in 0..frames {
            match self.read_reply().await {
                Err(ClientError::Server { .. }) => {}
                _ => {
                    self.broken = true;
                    break;
                }
            }
        }
        refusal
    }
}

/// Reads a whole small file (at most one chunk) off the async threads.
async fn read_small(file: std::fs::File, size: u64) -> Result<bytes::Bytes, ClientError> {
    debug_assert!(size as usize <= CHUNK_SIZE);
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; size as usize];
        transfer::source::read_source_at(&file, &mut buf, 0, size)?;
        Ok::<_, TransferError>(bytes::Bytes::from(buf))
    });
    Ok(read.await.map_err(|e| TransferError::Io(std::io::Error::other(e)))??)
}

/// Opens a download's partial again, as it was when its `Get` was sent: `offset` bytes long,
/// positioned at its end.
fn reopen_partial(partial: &Path, offset: u64) -> Result<std::fs::File, ClientError> {
    use std::io::{Seek, SeekFrom};
    let local = |source| ClientError::Local { path: partial.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(partial).map_err(local)?;
    let len = file.metadata().map_err(local)?.len();
    if len != offset {
        return Err(TransferError::SourceChanged(format!(
            "{} changed while its download waited: {len} bytes, {offset} expected",
            partial.display()
        ))
        .into());
    }
    file.seek(SeekFrom::Start(offset)).map_err(local)?;
    Ok(file)
}
