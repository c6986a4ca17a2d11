//! Opening an upload (CTRL-PUT-2, CTRL-RESUME-1, QUOTA-1): decide how it resumes, reserve the
//! quota it can consume, then open and cut the partial upload: over TCP the storage's
//! [`Staging`] (the partial file, or segment objects, STORE-OBJ-3), over UDP the partial file
//! on local disk, and the staging in object storage (STORE-OBJ-9).

use std::io::{Seek, SeekFrom};

use md5::{Digest, Md5};

use super::resume::{self, Ask, Plan, Refusal};
use super::{Ctx, Upload, UploadSlot};
use crate::home::{EntryKind, HomeError, HomePath};
use crate::proto::{ErrorCode, Transport};
use crate::server::errors::Reply;
use crate::storage::{Staging, StorageError};
use crate::transfer::{self, TransferError};
use crate::udp::ranges::RangeSet;

/// Where an upload's bytes go.
pub(in crate::server) enum Body {
    /// UDP on local disk: the partial file, positioned after the kept bytes.
    File(std::fs::File),
    /// TCP, and UDP in object storage: the storage's staging, holding the kept prefix.
    Staging(Box<dyn Staging>),
}

/// An opened upload: the upload, where its bytes go, the md5 state over the TCP resume
/// prefix, and the ranges already held.
pub(in crate::server) type Opened = (Upload, Body, Md5, RangeSet);

/// Reserves and opens. Every failure after the reservation drops it, which releases it.
pub(super) fn open_upload(
    ctx: &Ctx,
    target: HomePath,
    ask: (u64, bool, Transport),
    slot: UploadSlot,
) -> Result<Opened, Reply> {
    let (size, resume, transport) = ask;
    refuse_directory(ctx, &target)?;
    let key = target.to_string();
    let map = if resume { ctx.state.store.load_ranges(&ctx.user, &key)? } else { None };
    // STORE-OBJ-9: in object storage a UDP upload is staged as a TCP one is and resumes from
    // the staging's durable prefix; on local disk it keeps the whole partial file and its map.
    let staged = transport == Transport::Tcp || ctx.state.objects.is_some();
    let partial = match staged {
        true => ctx.storage.staged_len(&target)?,
        false => ctx.home.partial_len(&target)?,
    };
    let decide_as = if staged { Transport::Tcp } else { transport };
    let plan =
        resume::decide(Ask { size, resume, transport: decide_as, partial, map: map.as_ref() }).map_err(refusal)?;
    // QUOTA-1: the whole rest of the declared size, and an entry for a partial that does not
    // exist yet. An overwritten target keeps its charge until the rename (QUOTA-3).
    let reservation = ctx.state.store.reserve(&ctx.user, size - plan.keep, u64::from(partial.is_none()))?;
    let (body, hasher, handle) = match staged {
        true => {
            let (staging, hasher) = open_staging(ctx, &target, (size, resume), &plan)?;
            (Body::Staging(staging), hasher, None)
        }
        false => {
            let (file, hasher) = open_partial(ctx, &target, resume, &plan, transport)?;
            let handle = file.try_clone().map_err(TransferError::from)?;
            (Body::File(file), hasher, Some(handle))
        }
    };
    // The partial now holds `keep` bytes of the `partial` it had: release what was cut.
    let dropped = partial.unwrap_or(0).saturating_sub(plan.keep);
    if dropped > 0 {
        ctx.state.store.adjust_usage(&ctx.user, -(dropped as i64), 0);
    }
    // UDP-RESUME-6: the map goes only after the partial was cut to its prefix and synced.
    if plan.drop_map {
        ctx.state.store.delete_ranges(&ctx.user, &key)?;
    }
    let upload = Upload {
        target,
        size,
        offset: plan.keep,
        partial_new: partial.is_none(),
        reservation,
        partial: handle,
        _slot: slot,
    };
    Ok((upload, body, hasher, plan.held))
}

fn refuse_directory(ctx: &Ctx, target: &HomePath) -> Result<(), Reply> {
    match ctx.storage.stat(target) {
        Ok(e) if e.kind == EntryKind::Dir => Err(HomeError::IsADirectory(target.to_string()).into()),
        Ok(_) | Err(StorageError::Home(HomeError::NotFound(_))) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn refusal(r: Refusal) -> Reply {
    let message = match r {
        Refusal::PartialTooLong { held, size } => format!(
            "the server holds {held} bytes of a partial upload but the file has {size}; upload again without resuming"
        ),
        Refusal::MapForOtherSize { map, size } => {
            format!("the partial upload was for a file of {map} bytes, not {size}; upload again without resuming")
        }
    };
    Reply::new(ErrorCode::SourceChanged, message)
}

/// Opens the partial, cuts it to `keep` bytes, and for TCP hashes that prefix and positions
/// the file after it.
fn open_partial(
    ctx: &Ctx,
    target: &HomePath,
    resume: bool,
    plan: &Plan,
    transport: Transport,
) -> Result<(std::fs::File, Md5), Reply> {
    let (mut file, len) = ctx.home.open_partial(target, resume)?;
    if len != plan.found {
        return Err(Reply::new(ErrorCode::Busy, "partial file changed while opening it"));
    }
    if plan.keep < len {
        file.set_len(plan.keep).map_err(TransferError::from)?;
        file.sync_all().map_err(TransferError::from)?;
    }
    let hasher = match (plan.keep, transport) {
        (1.., Transport::Tcp) => transfer::hash_prefix(&file, plan.keep)?,
        _ => Md5::new(),
    };
    file.seek(SeekFrom::Start(plan.keep)).map_err(TransferError::from)?;
    Ok((file, hasher))
}

/// Opens the staging of a TCP upload, cuts it to `keep` bytes and hashes that prefix.
fn open_staging(
    ctx: &Ctx,
    target: &HomePath,
    (size, resume): (u64, bool),
    plan: &Plan,
) -> Result<(Box<dyn Staging>, Md5), Reply> {
    let mut staging = ctx.storage.open_staging(target, size, resume)?;
    let found = staging.durable().contiguous_from(0);
    if found != plan.found {
        // Object storage starts over when the earlier upload was of another size: what it
        // held is gone, and so is its charge. The retry opens what is there now.
        let gone = plan.found.saturating_sub(found);
        if gone > 0 {
            ctx.state.store.adjust_usage(&ctx.user, -(gone as i64), 0);
        }
        return Err(Reply::new(ErrorCode::Busy, "partial upload changed while opening it; try again"));
    }
    if plan.keep < plan.found {
        staging.cut(plan.keep)?;
    }
    let hasher = match plan.keep {
        0 => Md5::new(),
        keep => staging.hash_prefix(keep)?,
    };
    Ok((staging, hasher))
}
