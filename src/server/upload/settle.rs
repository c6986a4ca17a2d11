//! The settle phase: applies an upload's outcome to the partial file and the quota in one
//! place (CTRL-PUT-4 to -6, QUOTA-2, QUOTA-3). Consumes the upload, so its reservation ends
//! here: committed with the change on disk, or released by the drop if settling fails early.

use std::os::unix::fs::MetadataExt;

use super::{Ctx, Outcome, Upload};
use crate::home::HomePath;
use crate::proto::control::Md5Digest;
use crate::proto::Response;
use crate::server::errors::Reply;
use crate::storage::{Staging, StorageError};
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

/// Settles; returns the reply for a normal ending. `staging` is the upload's staging (TCP,
/// and UDP in object storage); a UDP upload on local disk settles its partial file through
/// the home.
pub(super) fn settle(
    ctx: &Ctx,
    upload: Upload,
    staging: Option<Box<dyn Staging>>,
    how: How,
    md5: Option<Md5Digest>,
) -> Result<Response, Reply> {
    match how {
        How::Finish => finish(ctx, upload, staging, md5.unwrap_or_default()),
        How::Keep => {
            let held = measure(ctx, &upload, staging.as_deref());
            keep(ctx, upload, held);
            Ok(Response::Ok)
        }
        How::Discard => {
            drop(staging);
            discard(ctx, upload)
        }
    }
}

/// Verifies the md5 and makes the file visible (the staging's finish over TCP, the rename of
/// the partial over UDP), then commits: the new file's bytes come in, the replaced file's go
/// out, both only now (QUOTA-3). A digest mismatch discards the partial (CTRL-PUT-4).
fn finish(ctx: &Ctx, upload: Upload, staging: Option<Box<dyn Staging>>, md5: Md5Digest) -> Result<Response, Reply> {
    let finished = match staging {
        Some(staging) => staging.finish(&md5),
        None => ctx.home.finish_partial(&upload.target).map_err(StorageError::from),
    };
    let replaced = match finished {
        Ok(replaced) => replaced,
        Err(e @ StorageError::DigestMismatch { .. }) => {
            let reply = Reply::from(e);
            discard(ctx, upload)?;
            return Err(reply);
        }
        Err(e) => {
            // What the failed finish left is measured through the storage.
            let held = match &upload.partial {
                Some(_) => measure(ctx, &upload, None),
                None => ctx.storage.staged_len(&upload.target).ok(),
            };
            keep(ctx, upload, held);
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

/// What the partial holds now: `Some(None)` if it is gone, `None` if that cannot be told.
fn measure(ctx: &Ctx, upload: &Upload, staging: Option<&dyn Staging>) -> Option<Option<u64>> {
    if let Some(staging) = staging {
        return Some(staging.held());
    }
    let Some(file) = &upload.partial else {
        // The staging's writer thread died: ask the storage.
        return ctx.storage.staged_len(&upload.target).ok();
    };
    // Measured through the open handle: a link count of 0 means the partial is gone.
    match file.metadata() {
        Ok(meta) => Some((meta.nlink() > 0).then_some(meta.len())),
        Err(e) => {
            tracing::error!(path = %upload.target, "cannot measure a kept partial: {e}");
            None
        }
    }
}

/// Leaves the partial for resume and counts what it holds as used (CTRL-PUT-5). What it holds
/// never exceeds what was reserved: the data phase refuses bytes past the declared size.
fn keep(ctx: &Ctx, upload: Upload, held: Option<Option<u64>>) {
    let (bytes, files) = match held {
        Some(len) => {
            let files = match (len, upload.partial_new) {
                (Some(_), true) => 1,
                (None, false) => -1,
                _ => 0,
            };
            (signed(len.unwrap_or(0)) - signed(upload.offset), files)
        }
        // Cannot tell: charge everything that was reserved; a restart measures the disk.
        None => (signed(upload.reservation.bytes()), signed(upload.reservation.files())),
    };
    tracing::info!(user = %ctx.user, path = %upload.target, "upload interrupted; partial kept");
    upload.reservation.commit(bytes, files);
}

/// Deletes the partial and releases what it held.
fn discard(ctx: &Ctx, upload: Upload) -> Result<Response, Reply> {
    if let Err(e) = ctx.storage.discard_staging(&upload.target) {
        let held = measure(ctx, &upload, None);
        keep(ctx, upload, held);
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
