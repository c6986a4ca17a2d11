//! Upload (CTRL-PUT-*): reserve quota, open the partial file, receive checked chunks, verify
//! the whole-file md5, fsync and rename into place; on any interruption keep the verified
//! prefix for resume and account for it.

use std::io::{Seek, SeekFrom};
use std::sync::Arc;

use md5::{Digest, Md5};

use super::errors::{blocking, Reply};
use super::session::{lock, Conn, Next, Session};
use super::ServerState;
use crate::conn::ConnError;
use crate::home::{EntryKind, Home, HomeError, HomePath};
use crate::proto::control::Md5Digest;
use crate::proto::{ErrorCode, Frame, Request, Response, Transport};
use crate::store::Reservation;
use crate::transfer::{self, spawn_writer, ChunkCheck, TransferError};
use crate::udp::ranges::RangeSet;

/// Holds the (user, path) upload slot; released on drop.
pub(super) struct UploadSlot {
    state: Arc<ServerState>,
    key: (String, HomePath),
}

impl UploadSlot {
    fn acquire(state: &Arc<ServerState>, user: &str, target: &HomePath) -> Result<UploadSlot, Reply> {
        let key = (user.to_string(), target.clone());
        if !lock(&state.uploads).insert(key.clone()) {
            return Err(Reply::new(ErrorCode::Busy, format!("an upload to {target} is already in progress")));
        }
        Ok(UploadSlot { state: state.clone(), key })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        lock(&self.state.uploads).remove(&self.key);
    }
}

/// An accepted upload, ready for data.
pub(super) struct Upload {
    pub(super) target: HomePath,
    pub(super) size: u64,
    pub(super) offset: u64,
    /// Partial-file bytes already counted in the user's usage.
    counted: u64,
    /// The partial file did not exist before this upload.
    partial_new: bool,
    reservation: Reservation,
    /// A second handle on the partial, to measure what was kept even if its name changed.
    partial: std::fs::File,
    _slot: UploadSlot,
}

/// How the data phase ended.
pub(super) enum Outcome {
    PutEnd(Md5Digest),
    Abort,
    /// The upload failed; `true` if the error was already reported mid-stream.
    Failed(TransferError, bool),
    /// The upload failed (reported mid-stream), then the session timed out, stopped or broke.
    FailedThenClosed(TransferError),
    Idle,
    Stop,
    Lost(ConnError),
}

/// What to do with the partial file.
enum Settle {
    Finish,
    Keep,
    Discard,
}

impl Session {
    /// Serves one `Put`. Returns `Ok(false)` when the session must end afterwards.
    pub(crate) async fn put(
        &mut self,
        conn: &mut Conn,
        path: String,
        size: u64,
        resume: bool,
    ) -> Result<bool, ConnError> {
        let (upload, file, hasher, _) = match self.prepare_put(&path, size, resume, Transport::Tcp).await {
            Ok(x) => x,
            Err(reply) => {
                conn.reply(&reply.into_response()).await?;
                return Ok(true);
            }
        };
        let prefix_md5 = (upload.offset > 0).then(|| hasher.clone().finalize().into());
        let ready = conn.reply(&Response::PutReady { offset: upload.offset, prefix_md5 }).await;
        let end = match ready {
            Ok(()) => receive(conn, &upload, file, hasher).await,
            Err(e) => Outcome::Lost(e),
        };
        self.finish_put(conn, upload, end).await
    }

    pub(super) async fn prepare_put(
        &self,
        path: &str,
        size: u64,
        resume: bool,
        transport: Transport,
    ) -> Result<(Upload, std::fs::File, Md5, RangeSet), Reply> {
        let target = self.resolve(path)?;
        if target.is_root() {
            return Err(Reply::new(ErrorCode::IsADirectory, "cannot upload onto the home directory"));
        }
        if target.partial_target().is_some() {
            return Err(Reply::new(
                ErrorCode::InvalidPath,
                format!("{target}: names ending in .xfer-part are reserved for partial uploads"),
            ));
        }
        let slot = UploadSlot::acquire(&self.state, &self.user, &target)?;
        let (home, state, user) = (self.home.clone(), self.state.clone(), self.user.clone());
        blocking(move || open_upload(&home, &state, &user, target, size, resume, slot, transport)).await
    }

    pub(super) async fn finish_put(&self, conn: &mut Conn, upload: Upload, end: Outcome) -> Result<bool, ConnError> {
        let (settle, md5) = match &end {
            Outcome::PutEnd(md5) => (Settle::Finish, Some(*md5)),
            Outcome::Failed(e, _) | Outcome::FailedThenClosed(e) if discards_partial(e) => (Settle::Discard, None),
            _ => (Settle::Keep, None),
        };
        let (home, state, user) = (self.home.clone(), self.state.clone(), self.user.clone());
        let settled = blocking(move || settle_upload(&home, &state, &user, upload, settle, md5)).await;
        let err = |code, message: &str| Some(Response::Error { code, message: message.to_string() });
        let reply = match &end {
            Outcome::PutEnd(_) | Outcome::Abort => Some(settled.unwrap_or_else(Reply::into_response)),
            Outcome::Failed(e, false) => Some(Reply::from(e).into_response()),
            Outcome::Failed(_, true) | Outcome::FailedThenClosed(_) => None,
            Outcome::Lost(e) => {
                tracing::debug!("upload connection lost: {e}");
                None
            }
            Outcome::Idle => err(ErrorCode::IdleTimeout, "upload idle too long; resume it with --resume"),
            Outcome::Stop => err(ErrorCode::ShuttingDown, "server is shutting down; resume the upload with --resume"),
        };
        if let Some(reply) = reply {
            conn.reply(&reply).await?;
        }
        Ok(matches!(end, Outcome::PutEnd(_) | Outcome::Abort | Outcome::Failed(..)))
    }
}

/// Errors after which the partial bytes are worthless and released (CTRL-PUT-4, CTRL-PUT-6).
fn discards_partial(e: &TransferError) -> bool {
    matches!(e, TransferError::TooLarge { .. } | TransferError::DigestMismatch { .. })
}

/// Reserves quota and opens the partial file (CTRL-PUT-2, CTRL-RESUME-1, QUOTA-1). Returns the
/// upload, the file, the md5 state over the TCP resume prefix, and the ranges already held.
///
/// A partial left by a UDP upload may have holes; its range map says which bytes are real
/// (UDP-RESUME-3). A UDP resume continues from that map; a TCP resume keeps only the map's
/// contiguous prefix, truncating the rest, and drops the map.
#[allow(clippy::too_many_arguments)]
fn open_upload(
    home: &Home,
    state: &ServerState,
    user: &str,
    target: HomePath,
    size: u64,
    resume: bool,
    slot: UploadSlot,
    transport: Transport,
) -> Result<(Upload, std::fs::File, Md5, RangeSet), Reply> {
    let existing = match home.stat(&target) {
        Ok(e) if e.kind == EntryKind::Dir => return Err(HomeError::IsADirectory(target.to_string()).into()),
        Ok(e) if e.kind == EntryKind::File => Some(e.size),
        Ok(_) => None,
        Err(HomeError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let key = target.to_string();
    let map = if resume { state.store.load_ranges(user, &key)? } else { None };
    let prior = home.partial_len(&target)?;
    let offset = if resume { prior.unwrap_or(0) } else { 0 };
    if offset > size {
        return Err(Reply::new(
            ErrorCode::SourceChanged,
            format!("the server holds {offset} bytes of a partial upload but the file has {size}; upload again without --resume"),
        ));
    }
    let held = match (&map, transport) {
        // A map claiming bytes past the partial's end is stale: nothing counts (UDP-RESUME-4).
        (Some((s, ranges)), Transport::Udp) if *s == size => {
            if ranges.iter().all(|r| r.1 <= offset) {
                RangeSet::from_ranges(ranges.iter().copied())
            } else {
                RangeSet::new()
            }
        }
        (Some((s, _)), Transport::Udp) => {
            return Err(Reply::new(
                ErrorCode::SourceChanged,
                format!("the partial upload was for a file of {s} bytes, not {size}; upload again without --resume"),
            ));
        }
        (Some((_, ranges)), Transport::Tcp) => {
            let prefix = RangeSet::from_ranges(ranges.iter().copied()).contiguous_from(0);
            RangeSet::from_ranges([(0, prefix.min(offset))])
        }
        (None, _) => RangeSet::from_ranges([(0, offset)]),
    };
    // A TCP upload appends after a contiguous prefix: drop whatever a UDP upload left beyond it.
    let keep = if transport == Transport::Tcp { held.contiguous_from(0) } else { offset };
    let partial_new = prior.is_none();
    let bytes = (size - keep).saturating_sub(existing.unwrap_or(0));
    let files = u64::from(partial_new && existing.is_none());
    let reservation = state.store.reserve(user, bytes, files)?;
    match open_partial(home, &target, resume, offset, keep, transport) {
        Ok((file, hasher)) => {
            let partial = match file.try_clone() {
                Ok(f) => f,
                Err(e) => {
                    let _ = state.store.release(reservation);
                    return Err(Reply::internal(e));
                }
            };
            // UDP-RESUME-6: the map goes only after the partial was cut to its prefix and synced.
            if (map.is_some() && transport == Transport::Tcp) || !resume {
                if let Err(e) = state.store.delete_ranges(user, &key) {
                    let _ = state.store.release(reservation);
                    return Err(e.into());
                }
            }
            let counted = if resume { keep } else { 0 };
            let dropped = prior.unwrap_or(0) - counted;
            if dropped > 0 {
                let _ = state.store.adjust_usage(user, -(dropped as i64), 0);
            }
            let upload = Upload { target, size, offset: keep, counted, partial_new, reservation, partial, _slot: slot };
            Ok((upload, file, hasher, if resume { held } else { RangeSet::new() }))
        }
        Err(e) => {
            let _ = state.store.release(reservation);
            Err(e)
        }
    }
}

/// Opens the partial, cuts it to `keep` bytes, and for TCP hashes that prefix and positions
/// the file after it.
fn open_partial(
    home: &Home,
    target: &HomePath,
    resume: bool,
    offset: u64,
    keep: u64,
    transport: Transport,
) -> Result<(std::fs::File, Md5), Reply> {
    let (mut file, len) = home.open_partial(target, resume)?;
    if len != offset {
        return Err(Reply::new(ErrorCode::Busy, "partial file changed while opening it"));
    }
    if keep < len {
        file.set_len(keep).map_err(TransferError::from)?;
        file.sync_all().map_err(TransferError::from)?;
    }
    let hasher = if keep > 0 && transport == Transport::Tcp { transfer::hash_prefix(&file, keep)? } else { Md5::new() };
    file.seek(SeekFrom::Start(keep)).map_err(TransferError::from)?;
    Ok((file, hasher))
}

/// The data phase: checked chunks go to the writer thread until `PutEnd` or `Abort`.
async fn receive(conn: &mut Conn, upload: &Upload, file: std::fs::File, hasher: Md5) -> Outcome {
    let mut check = ChunkCheck::new(upload.offset, upload.size);
    let mut writer = spawn_writer(file, hasher);
    let mut failure: Option<TransferError> = None;
    let end = loop {
        let next = match conn.next().await {
            Ok(n) => n,
            Err(e) => break Outcome::Lost(e),
        };
        let step = match next {
            Next::Idle => break Outcome::Idle,
            Next::Stop => break Outcome::Stop,
            Next::Frame(Frame::Data(chunk)) if failure.is_none() => match check.accept(&chunk) {
                Ok(()) => writer.write(chunk).await,
                Err(e) => Err(e),
            },
            Next::Frame(Frame::Data(_)) => Ok(()), // draining after a reported failure
            Next::Frame(Frame::Control(p)) => match Frame::decode_control::<Request>(&p) {
                Ok(Request::PutEnd { md5 }) => break Outcome::PutEnd(md5),
                Ok(Request::Abort) => break Outcome::Abort,
                _ => {
                    break Outcome::Lost(ConnError::Decode(crate::proto::DecodeError::Malformed(
                        "expected a data frame, PutEnd or Abort".into(),
                    )))
                }
            },
        };
        if let Err(e) = step {
            if failure.is_none() {
                tracing::warn!("upload of {} failed: {e}", upload.target);
                if let Err(ce) = conn.reply(&Reply::from(&e).into_response()).await {
                    break Outcome::Lost(ce);
                }
                failure = Some(e);
            }
        }
    };
    let written = writer.finish().await;
    match (failure, end) {
        (Some(f), Outcome::PutEnd(_) | Outcome::Abort) => Outcome::Failed(f, true),
        // Reported already; the session ends without a second error for this upload.
        (Some(f), _) => Outcome::FailedThenClosed(f),
        (_, Outcome::PutEnd(md5)) => match written {
            Ok(w) => {
                verify_end(&check, &md5, &w.md5).map_or_else(|e| Outcome::Failed(e, false), |_| Outcome::PutEnd(md5))
            }
            Err(e) => Outcome::Failed(e, false),
        },
        (_, other) => other,
    }
}

fn verify_end(check: &ChunkCheck, client_md5: &Md5Digest, server_md5: &Md5Digest) -> Result<(), TransferError> {
    check.ensure_complete()?;
    transfer::check_digest(client_md5, server_md5)
}

/// Applies the outcome to the partial file and the quota in one place (QUOTA-2, QUOTA-3).
/// Returns the reply for a normal ending.
fn settle_upload(
    home: &Home,
    state: &ServerState,
    user: &str,
    upload: Upload,
    settle: Settle,
    client_md5: Option<Md5Digest>,
) -> Result<Response, Reply> {
    let new_file = i64::from(upload.partial_new);
    let counted = upload.counted as i64;
    if !matches!(settle, Settle::Keep) {
        state.store.delete_ranges(user, &upload.target.to_string())?;
    }
    match settle {
        Settle::Finish => match home.finish_partial(&upload.target) {
            Ok(replaced) => {
                let bytes = upload.size as i64 - counted - replaced.unwrap_or(0) as i64;
                let files = new_file - i64::from(replaced.is_some());
                state.store.commit(upload.reservation, bytes, files)?;
                let md5 = client_md5.unwrap_or_default();
                tracing::info!(%user, path = %upload.target, size = upload.size, "upload complete");
                Ok(Response::PutDone { size: upload.size, md5 })
            }
            Err(e) => {
                keep_partial(state, user, upload)?;
                Err(e.into())
            }
        },
        Settle::Keep => {
            keep_partial(state, user, upload)?;
            Ok(Response::Ok)
        }
        Settle::Discard => {
            home.discard_partial(&upload.target)?;
            state.store.commit(upload.reservation, -counted, new_file - 1)?;
            Ok(Response::Ok)
        }
    }
}

/// Leaves the partial for resume and counts its bytes as used.
fn keep_partial(state: &ServerState, user: &str, upload: Upload) -> Result<(), Reply> {
    use std::os::unix::fs::MetadataExt;
    // Measured through the open handle: a link count of 0 means the partial is gone.
    let meta = upload.partial.metadata().map_err(Reply::internal)?;
    let len = (meta.nlink() > 0).then_some(meta.len());
    let bytes = len.unwrap_or(0) as i64 - upload.counted as i64;
    let files = match (len, upload.partial_new) {
        (Some(_), true) => 1,
        (None, false) => -1,
        _ => 0,
    };
    tracing::info!(%user, path = %upload.target, kept = len.unwrap_or(0), "upload interrupted; partial kept");
    state.store.commit(upload.reservation, bytes, files)?;
    Ok(())
}
