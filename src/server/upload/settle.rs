//! The settle phase: applies an upload's outcome to the partial file and the quota in one
//! place (CTRL-PUT-4 to -6, QUOTA-2, QUOTA-3). Consumes the upload, so its reservation ends
//! here: committed with the change on disk, or released by the drop if settling fails early.

use std::os::unix::fs::MetadataExt;

use super::{Ctx, Outcome, Upload};
use crate::home::HomePath;
use crate::proto::control::Md5Digest;
use crate::proto::Response;
use crate::server::errors::Reply;
use crate::transfer::TransferError;

/// What to do with the partial file.
pub(super) enum How {
    Finish,
    Keep,
    Discard,
}

/// The settling an outcome calls for, with the client's md5 for a `PutEnd`.
pub(super) fn how(end: &Outcome) -> (How, Option<Md5Digest>) {
    match end {
        Outcome::PutEnd(md5) => (How::Finish, Some(*md5)),
        Outcome::Failed(e, _) | Outcome::FailedThenClosed(e) if discards_partial(e) => (How::Discard, None),
        _ => (How::Keep, None),
    }
}

/// Errors after which the partial bytes are worthless and released (CTRL-PUT-4, CTRL-PUT-6).
fn discards_partial(e: &TransferError) -> bool {
    matches!(e, TransferError::TooLarge { .. } | TransferError::DigestMismatch { .. })
}

/// Settles; returns the reply for a normal ending.
pub(super) fn settle(ctx: &Ctx, upload: Upload, how: How, md5: Option<Md5Digest>) -> Result<Response, Reply> {
    match how {
        How::Finish => finish(ctx, upload, md5.unwrap_or_default()),
        How::Keep => {
            keep(ctx, upload);
            Ok(Response::Ok)
        }
        How::Discard => discard(ctx, upload),
    }
}

/// Renames the verified partial into place, then commits: the new file's bytes come in, the
/// replaced file's go out, both only now (QUOTA-3).
fn finish(ctx: &Ctx, upload: Upload, md5: Md5Digest) -> Result<Response, Reply> {
    let replaced = match ctx.home.finish_partial(&upload.target) {
        Ok(replaced) => replaced,
        Err(e) => {
            keep(ctx, upload);
            return Err(e.into());
        }
    };
    let (size, target) = (upload.size, upload.target.clone());
    let bytes = signed(size) - signed(upload.offset) - signed(replaced.unwrap_or(0));
    let files = i64::from(upload.partial_new) - i64::from(replaced.is_some());
    upload.reservation.commit(bytes, files);
    forget_map(ctx, &target);
    tracing::info!(user = %ctx.user, path = %target, size, "upload complete");
    Ok(Response::PutDone { size, md5 })
}

/// Leaves the partial for resume and counts what it holds as used (CTRL-PUT-5). What it holds
/// never exceeds what was reserved: the data phase refuses bytes past the declared size.
fn keep(ctx: &Ctx, upload: Upload) {
    // Measured through the open handle: a link count of 0 means the partial is gone.
    let (bytes, files) = match upload.partial.metadata() {
        Ok(meta) => {
            let len = (meta.nlink() > 0).then_some(meta.len());
            let files = match (len, upload.partial_new) {
                (Some(_), true) => 1,
                (None, false) => -1,
                _ => 0,
            };
            (signed(len.unwrap_or(0)) - signed(upload.offset), files)
        }
        // Cannot tell: charge everything that was reserved; a restart measures the disk.
        Err(e) => {
            tracing::error!(path = %upload.target, "cannot measure a kept partial: {e}");
            (signed(upload.reservation.bytes()), signed(upload.reservation.files()))
        }
    };
    tracing::info!(user = %ctx.user, path = %upload.target, "upload interrupted; partial kept");
    upload.reservation.commit(bytes, files);
}

/// Deletes the partial and releases what it held.
fn discard(ctx: &Ctx, upload: Upload) -> Result<Response, Reply> {
    if let Err(e) = ctx.home.discard_partial(&upload.target) {
        keep(ctx, upload);
        return Err(e.into());
    }
    let target = upload.target.clone();
    let bytes = -signed(upload.offset);
    let files = i64::from(upload.partial_new) - 1;
    upload.reservation.commit(bytes, files);
    forget_map(ctx, &target);
    Ok(Response::Ok)
}

/// Deletes the resume map of a partial that is gone. Best effort: a map left behind by a
/// failed delete describes no partial and is removed by the sweep (QUOTA-7).
pub(super) fn forget_map(ctx: &Ctx, target: &HomePath) {
    if let Err(e) = ctx.state.store.delete_ranges(&ctx.user, &target.to_string()) {
        tracing::warn!(user = %ctx.user, path = %target, "cannot delete the resume map: {e}");
    }
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
