//! The upload lifecycle (CTRL-PUT-*, QUOTA-1 to -4): **open** (decide how it resumes, reserve
//! quota, open the partial; [`open`]), **data** (checked chunks over TCP, [`receive`], or a
//! UDP flow, `server::udp`), **settle** (rename into place, keep or discard the partial, and
//! commit the quota in one place; [`settle`]).
//!
//! The quota held for an upload is a [`Reservation`] inside [`Upload`]: dropping the upload on
//! any path releases it, and settling consumes it, so it ends exactly once (QUOTA-2).

mod open;
mod receive;
mod resume;
mod settle;
pub(super) mod sweep;
mod writer;

use std::sync::Arc;

use md5::Digest;

use super::errors::{blocking, Reply};
use super::session::{Conn, Session};
use super::ServerState;
use crate::conn::ConnError;
use crate::home::{Home, HomePath};
use crate::proto::control::Md5Digest;
use crate::proto::{ErrorCode, Response, Transport};
use crate::store::{Reservation, UploadClaim};
use crate::transfer::TransferError;

pub(super) use open::{Body, Opened};

/// Holds the (user, path) upload slot; released on drop. The partial sweep takes the same
/// slot, so it never deletes a partial an upload is writing.
/// The slot is a store claim (STORE-CLAIM-1), so with a shared store it is taken across
/// servers.
pub(super) struct UploadSlot {
    _claim: UploadClaim,
}

impl UploadSlot {
    pub(super) fn acquire(state: &Arc<ServerState>, user: &str, target: &HomePath) -> Result<UploadSlot, Reply> {
        match state.store.claim_upload(user, &target.to_string())? {
            Some(claim) => Ok(UploadSlot { _claim: claim }),
            None => Err(Reply::new(ErrorCode::Busy, format!("an upload to {target} is already in progress"))),
        }
    }
}

/// What the blocking parts of the lifecycle need.
pub(super) struct Ctx {
    pub home: Arc<Home>,
    pub storage: Arc<dyn crate::storage::Storage>,
    pub state: Arc<ServerState>,
    pub user: String,
}

/// An accepted upload, ready for data.
pub(in crate::server) struct Upload {
    pub(in crate::server) target: HomePath,
    pub(in crate::server) size: u64,
    /// Bytes of the partial kept from earlier; they are already counted in `used_*`.
    pub(in crate::server) offset: u64,
    /// The partial file did not exist before this upload (its entry is reserved).
    partial_new: bool,
    reservation: Reservation,
    /// UDP: a second handle on the partial file, to measure what was kept even if its name
    /// changed. TCP measures through its staging.
    partial: Option<std::fs::File>,
    _slot: UploadSlot,
}

/// How the data phase ended.
pub(in crate::server) enum Outcome {
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

impl Session {
    fn ctx(&self) -> Ctx {
        Ctx {
            home: self.home.clone(),
            storage: self.storage.clone(),
            state: self.state.clone(),
            user: self.user.clone(),
        }
    }

    /// Serves one `Put` over TCP. Returns `Ok(false)` when the session must end afterwards.
    pub(crate) async fn put(
        &mut self,
        conn: &mut Conn,
        path: String,
        size: u64,
        resume: bool,
    ) -> Result<bool, ConnError> {
        let (upload, staging, hasher) = match self.prepare_put(&path, size, resume, Transport::Tcp).await {
            Ok((upload, Body::Staging(staging), hasher, _)) => (upload, staging, hasher),
            // A TCP upload always opens a staging; dropping the upload releases it.
            Ok((_, Body::File(_), ..)) => {
                conn.reply(&Reply::internal("a TCP upload without a staging").into_response()).await?;
                return Ok(true);
            }
            Err(reply) => {
                conn.reply(&reply.into_response()).await?;
                return Ok(true);
            }
        };
        let prefix_md5 = (upload.offset > 0).then(|| hasher.finalize().into());
        let ready = conn.reply(&Response::PutReady { offset: upload.offset, prefix_md5 }).await;
        let (staging, end) = match ready {
            Ok(()) => receive::receive(conn, &upload, staging).await,
            Err(e) => (Some(staging), Outcome::Lost(e)),
        };
        self.finish_put(conn, upload, staging, end).await
    }

    /// The open phase: checks the target, takes the upload slot, reserves and opens.
    pub(super) async fn prepare_put(
        &self,
        path: &str,
        size: u64,
        resume: bool,
        transport: Transport,
    ) -> Result<Opened, Reply> {
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
        let ctx = self.ctx();
        blocking(move || {
            let slot = UploadSlot::acquire(&ctx.state, &ctx.user, &target)?;
            open::open_upload(&ctx, target, (size, resume, transport), slot)
        })
        .await
    }

    /// The settle phase: applies the outcome and sends the upload's final reply, if any.
    /// `staging` is the upload's (TCP, and UDP in object storage), `None` for a UDP upload on
    /// local disk (or if its writer thread died).
    pub(super) async fn finish_put(
        &self,
        conn: &mut Conn,
        upload: Upload,
        staging: Option<Box<dyn crate::storage::Staging>>,
        end: Outcome,
    ) -> Result<bool, ConnError> {
        let ctx = self.ctx();
        let (how, md5) = settle::how(&end);
        let settled = blocking(move || settle::settle(&ctx, upload, staging, how, md5)).await;
        let err = |code, message: &str| Some(Response::Error { code, message: message.to_string() });
        let reply = match &end {
            Outcome::PutEnd(_) | Outcome::Abort => Some(settled.unwrap_or_else(Reply::into_response)),
            Outcome::Failed(e, false) => Some(Reply::from(e).into_response()),
            Outcome::Failed(_, true) | Outcome::FailedThenClosed(_) => None,
            Outcome::Lost(e) => {
                tracing::debug!("upload connection lost: {e}");
                None
            }
            Outcome::Idle => err(ErrorCode::IdleTimeout, "upload idle too long; resume it"),
            // CTRL-SESS-3 shutdown, or CTRL-SESS-7 revocation: NotAuthenticated, not ShuttingDown.
            Outcome::Stop => {
                let (code, message) = conn.stop_error(true);
                err(code, message)
            }
        };
        if let Some(reply) = reply {
            conn.reply(&reply).await?;
        }
        Ok(matches!(end, Outcome::PutEnd(_) | Outcome::Abort | Outcome::Failed(..)))
    }
}
