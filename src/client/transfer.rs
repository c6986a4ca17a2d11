//! Client side of uploads and downloads over the TCP data path.
//!
//! Downloads land in `.NAME.xfer-part` beside the target and are renamed into place only after
//! the whole-file md5 matches; `resume` continues from that partial after checking its prefix
//! against the server's file by md5.

use std::path::Path;

use md5::{Digest, Md5};

use super::files::{open_source, SMALL_TRANSFER_MAX};
use super::pace::{self, Pacer};
use super::partial::{self, open_local_partial, partial_path, ranges_path};
use super::{unexpected, Client, ClientError};
use crate::conn::{Batch, ConnError};
use crate::proto::control::Md5Digest;
use crate::proto::{ErrorCode, Frame, Request, Response, Transport};
use crate::transfer::{self, spawn_reader, spawn_writer, ChunkCheck, Progress, ProgressFn, SourceItem, TransferError};

/// What a finished transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSummary {
    pub size: u64,
    /// Bytes that were already in place and skipped by resume.
    pub resumed_from: u64,
    pub md5: Md5Digest,
    pub transport: Transport,
    /// What the UDP sender saw, when this end sent over UDP (an upload).
    pub udp_stats: Option<crate::udp::sender::SenderStats>,
}

impl Client {
    /// Uploads `local` to `remote`.
    pub async fn put(
        &mut self,
        local: &Path,
        remote: &str,
        resume: bool,
        progress: ProgressFn,
    ) -> Result<TransferSummary, ClientError> {
        let (file, size) = open_source(local)?;
        // CTRL-PUT-7: a small file is sent whole, inline, even when asked to resume: what a
        // resume could skip is worth less than the round trip its PutReady costs.
        if size <= SMALL_TRANSFER_MAX {
            return self.put_inline(file, size, remote, progress).await;
        }
        let req = Request::Put { path: remote.to_string(), size, resume, transport: Transport::Tcp };
        let (offset, prefix_md5) = match self.call(&req).await? {
            Response::PutReady { offset, prefix_md5 } => (offset, prefix_md5),
            other => return Err(unexpected(other)),
        };
        let hasher = match check_local_prefix(&file, offset, prefix_md5).await {
            Ok(h) => h,
            Err(e) => {
                self.abort_put().await?;
                return Err(e);
            }
        };
        progress(Progress::Start { total: size, offset });
        let md5 = self.stream_put(file, offset, size, hasher, &progress).await?;
        progress(Progress::Verifying);
        match self.read_response().await? {
            Response::PutDone { size: s, md5: m } if s == size && m == md5 => {}
            other => return Err(unexpected(other)),
        }
        progress(Progress::Finish);
        Ok(TransferSummary { size, resumed_from: offset, md5, transport: Transport::Tcp, udp_stats: None })
    }

    /// Streams chunks and `PutEnd`, watching for an early error reply. Returns our md5.
    async fn stream_put(
        &mut self,
        file: std::fs::File,
        offset: u64,
        size: u64,
        hasher: Md5,
        progress: &ProgressFn,
    ) -> Result<Md5Digest, ClientError> {
        let mut chunks = spawn_reader(file, offset, size, hasher);
        let mut pacer = self.tcp_rate.map(Pacer::new);
        loop {
            let item = tokio::select! {
                item = chunks.recv() => item,
                frame = self.reader.read_frame() => return Err(self.early_reply(frame).await),
            };
            match item {
                Some(Ok(SourceItem::Chunk(chunk))) => {
                    // CTRL-XFER-9: each frame waits until the limit allows it.
                    tokio::select! {
                        _ = pace::pace(&mut pacer, chunk.data.len() as u64) => {}
                        frame = self.reader.read_frame() => return Err(self.early_reply(frame).await),
                    }
                    self.writer.write_data(&chunk).await.map_err(ConnError::from)?;
                    progress(Progress::Advance { done: chunk.end() });
                }
                Some(Ok(SourceItem::Done { md5 })) => {
                    self.writer.write_control(&Request::PutEnd { md5 }).await.map_err(ConnError::from)?;
                    return Ok(md5);
                }
                Some(Err(e)) => {
                    self.abort_put().await?;
                    return Err(e.into());
                }
                None => {
                    self.abort_put().await?;
                    return Err(TransferError::Io(std::io::Error::other("file reader stopped")).into());
                }
            }
        }
    }

    /// The server replied while we were still sending: that is an error report. Tell it we
    /// stopped (it sends nothing more for this upload) and return its error.
    pub(super) async fn early_reply(&mut self, frame: Result<Frame, ConnError>) -> ClientError {
        let err = match frame {
            Ok(Frame::Control(p)) => match Frame::decode_control::<Response>(&p) {
                Ok(Response::Error { code, message }) => ClientError::Server { code, message },
                Ok(other) => unexpected(other),
                Err(e) => ClientError::Conn(e.into()),
            },
            Ok(Frame::Data(_)) => ClientError::Protocol("data frame during upload".into()),
            Err(e) => return ClientError::Conn(e),
        };
        // These end the session as well as the transfer (CTRL-SESS-3, CTRL-SESS-7): nothing more to send.
        let ending =
            matches!(err.code(), Some(ErrorCode::ShuttingDown | ErrorCode::IdleTimeout | ErrorCode::NotAuthenticated));
        if ending || self.writer.write_control(&Request::Abort).await.is_err() {
            self.broken = true;
        }
        err
    }

    /// Reads the reply to a `Walk` sent behind a `Get` (CTRL-ATTR-3) and keeps its one entry.
    /// A server that predates `Walk` answers `BadRequest`: the entry stays unknown.
    pub(super) async fn read_walk_behind(&mut self) {
        match self.read_reply().await {
            Ok(Response::Tree { mut entries }) if entries.len() == 1 => self.walked = entries.pop(),
            Ok(_) | Err(ClientError::Server { .. }) => {}
            Err(_) => self.broken = true,
        }
    }

    /// Abandons an accepted upload before or during streaming; the server keeps its partial.
    pub(super) async fn abort_put(&mut self) -> Result<(), ClientError> {
        self.writer.write_control(&Request::Abort).await.map_err(ConnError::from)?;
        match self.read_response().await {
            Ok(_) | Err(ClientError::Server { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Downloads `remote` to `local`.
    pub async fn get(
        &mut self,
        remote: &str,
        local: &Path,
        resume: bool,
        progress: ProgressFn,
    ) -> Result<TransferSummary, ClientError> {
        self.get_tcp(remote, local, resume, progress, false).await
    }

    /// Answered `UdpGetReady` for a file small enough that TCP finishes it first
    /// (UDP-FALLBACK-4): stops that download before any datagram and fetches the whole file over
    /// the control connection, the `Abort` and the `Get` leaving together (CTRL-GET-5).
    pub(super) async fn get_small_instead(
        &mut self,
        remote: &str,
        local: &Path,
        progress: ProgressFn,
    ) -> Result<TransferSummary, ClientError> {
        self.get_tcp(remote, local, false, progress, true).await
    }

    async fn get_tcp(
        &mut self,
        remote: &str,
        local: &Path,
        resume: bool,
        progress: ProgressFn,
        abort_udp_first: bool,
    ) -> Result<TransferSummary, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        let partial = partial_path(local);
        let (file, offset, hasher) = open_local_partial(&partial, resume).await?;
        let prefix_md5 = (offset > 0).then(|| hasher.clone().finalize().into());
        let mut batch = Batch::new();
        if abort_udp_first {
            batch.control(&Request::Abort).map_err(ConnError::from)?;
        }
        let req = Request::Get { path: remote.to_string(), offset, prefix_md5, transport: Transport::Tcp };
        batch.control(&req).map_err(ConnError::from)?;
        // CTRL-ATTR-3: the file's mtime and mode are asked for in the same flight; the server
        // answers after the download's final reply.
        let walk_behind = std::mem::take(&mut self.walk_behind_get);
        if walk_behind {
            batch.control(&Request::Walk { path: remote.to_string() }).map_err(ConnError::from)?;
        }
        self.writer.write_batch(batch).await.map_err(ConnError::from)?;
        if abort_udp_first {
            self.read_udp_get_end().await?;
        }
        let size = match self.read_response().await {
            Ok(Response::GetReady { size, offset: o }) if o == offset => size,
            other => {
                if offset == 0 {
                    let _ = std::fs::remove_file(&partial);
                }
                if walk_behind && matches!(other, Err(ClientError::Server { .. })) {
                    self.read_walk_behind().await;
                }
                return Err(other.map_or_else(|e| e, unexpected));
            }
        };
        let download = TcpDownload { file, offset, size, hasher, walk_behind };
        self.finish_get(&partial, local, download, &progress).await
    }

    /// Receives the TCP download the server chose for a `GetAuto` (UDP-CTRL-7), whose
    /// `GetReady` was read: the whole file, into a fresh partial.
    pub(super) async fn receive_auto_tcp(
        &mut self,
        partial: &Path,
        local: &Path,
        size: u64,
        walk_behind: bool,
        progress: &ProgressFn,
    ) -> Result<TransferSummary, ClientError> {
        let _ = std::fs::remove_file(ranges_path(partial));
        let (file, offset, hasher) = open_local_partial(partial, false).await?;
        self.finish_get(partial, local, TcpDownload { file, offset, size, hasher, walk_behind }, progress).await
    }

    /// The receive half of a TCP download after its `GetReady`: the data, `GetEnd`, the reply
    /// to a `Walk` behind the request (CTRL-ATTR-3), then the commit (CTRL-GET-4).
    pub(super) async fn finish_get(
        &mut self,
        partial: &Path,
        local: &Path,
        d: TcpDownload,
        progress: &ProgressFn,
    ) -> Result<TransferSummary, ClientError> {
        let TcpDownload { file, offset, size, hasher, walk_behind } = d;
        progress(Progress::Start { total: size, offset });
        let result = self.receive_get(file, offset, size, hasher, progress).await;
        match &result {
            Err(ClientError::Server { .. }) if walk_behind => self.read_walk_behind().await,
            Err(_) => self.broken = true,
            Ok(_) if walk_behind => self.read_walk_behind().await,
            Ok(_) => {}
        }
        let (server_md5, written_md5) = result?;
        progress(Progress::Verifying);
        partial::commit(partial, local, size, &server_md5, &written_md5)?;
        progress(Progress::Finish);
        Ok(TransferSummary { size, resumed_from: offset, md5: written_md5, transport: Transport::Tcp, udp_stats: None })
    }

    /// Reads how a UDP download stopped by `Abort` ended: `Ok`; or, if it ended first, its own
    /// final reply and then the refusal of the `Abort` (UDP-END-3).
    async fn read_udp_get_end(&mut self) -> Result<(), ClientError> {
        let replies = match self.read_response().await {
            Ok(Response::Ok) => 0,
            Ok(Response::GetEnd { .. }) | Err(ClientError::Server { .. }) => 1,
            Ok(other) => {
                self.broken = true;
                return Err(unexpected(other));
            }
            Err(e) => return Err(e),
        };
        for _ in 0..replies {
            match self.read_reply().await {
                Ok(_) | Err(ClientError::Server { .. }) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Receives checked chunks into the partial until `GetEnd`; returns (server md5, our md5).
    async fn receive_get(
        &mut self,
        file: std::fs::File,
        offset: u64,
        size: u64,
        hasher: Md5,
        progress: &ProgressFn,
    ) -> Result<(Md5Digest, Md5Digest), ClientError> {
        let mut check = ChunkCheck::new(offset, size);
        let mut writer = spawn_writer(file, hasher);
        let mut pacer = self.tcp_rate.map(Pacer::new);
        let outcome: Result<Md5Digest, ClientError> = loop {
            match self.reader.read_frame().await {
                Ok(Frame::Data(chunk)) => {
                    // CTRL-XFER-9: reading no faster than the limit holds the server back
                    // through TCP flow control.
                    pace::pace(&mut pacer, chunk.data.len() as u64).await;
                    let end = chunk.end();
                    if let Err(e) = check.accept(&chunk) {
                        break Err(e.into());
                    }
                    if let Err(e) = writer.write(chunk).await {
                        break Err(e.into());
                    }
                    progress(Progress::Advance { done: end });
                }
                Ok(Frame::Control(p)) => match Frame::decode_control::<Response>(&p) {
                    Ok(Response::GetEnd { md5 }) => match check.ensure_complete() {
                        Ok(()) => break Ok(md5),
                        Err(e) => break Err(e.into()),
                    },
                    Ok(Response::Error { code, message }) => break Err(ClientError::Server { code, message }),
                    Ok(other) => break Err(unexpected(other)),
                    Err(e) => break Err(ClientError::Conn(e.into())),
                },
                Err(e) => break Err(e.into()),
            }
        };
        // Always flush and fsync what arrived, so an interrupted download stays resumable.
        let written = writer.finish().await;
        let server_md5 = outcome?;
        Ok((server_md5, written?.md5))
    }
}

/// A TCP download whose `GetReady` is read: the partial, positioned at `offset`, and the md5
/// of the bytes before it.
pub(super) struct TcpDownload {
    pub file: std::fs::File,
    pub offset: u64,
    pub size: u64,
    pub hasher: Md5,
    pub walk_behind: bool,
}

/// Checks that our file starts with the bytes the server already holds (CTRL-RESUME-2).
async fn check_local_prefix(
    file: &std::fs::File,
    offset: u64,
    server_md5: Option<Md5Digest>,
) -> Result<Md5, ClientError> {
    if offset == 0 {
        return Ok(Md5::new());
    }
    let file = file.try_clone().map_err(TransferError::from)?;
    let hasher = tokio::task::spawn_blocking(move || transfer::hash_prefix(&file, offset))
        .await
        .map_err(|e| TransferError::Io(std::io::Error::other(e)))??;
    let ours: Md5Digest = hasher.clone().finalize().into();
    if server_md5 != Some(ours) {
        return Err(TransferError::SourceChanged(format!(
            "the server's partial upload ({offset} bytes) does not match the start of the local file; upload again without resuming"
        ))
        .into());
    }
    Ok(hasher)
}
