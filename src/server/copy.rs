//! `Copy`: a file copied inside the home (CTRL-COPY-1). Like an upload, the copy is charged to
//! the quota before it exists, written to the target's partial file under the target's upload
//! slot, synced, and renamed into place; the replaced file's bytes go out only then (QUOTA-3).

use std::io::{Read, Write};

use super::errors::{blocking, Reply};
use super::session::Session;
use super::upload::UploadSlot;
use crate::home::{Home, HomePath};
use crate::proto::{ErrorCode, Response};
use crate::store::UserStore;

impl Session {
    pub(crate) async fn copy(&mut self, from: &str, to: &str) -> Result<Response, Reply> {
        let from = self.resolve(from)?;
        let to = self.resolve(to)?;
        for p in [&from, &to] {
            if p.partial_target().is_some() {
                return Err(Reply::new(ErrorCode::InvalidPath, format!("{p}: partial uploads belong to the server")));
            }
        }
        if to.is_root() {
            return Err(Reply::new(ErrorCode::IsADirectory, "cannot copy onto the home directory"));
        }
        if from == to {
            return Err(Reply::new(ErrorCode::InvalidPath, format!("{from}: source and target are the same")));
        }
        let (state, home, user) = (self.state.clone(), self.home.clone(), self.user.clone());
        // The claim is a store call (possibly PostgreSQL): taken off the async workers too.
        blocking(move || {
            let _slot = UploadSlot::acquire(&state, &user, &to)?;
            copy_file(&home, &state.store, &user, &from, &to)
        })
        .await
    }
}

fn copy_file(
    home: &Home,
    store: &std::sync::Arc<dyn UserStore>,
    user: &str,
    from: &HomePath,
    to: &HomePath,
) -> Result<Response, Reply> {
    let (source, size) = home.open_read(from)?;
    if home.partial_len(to)?.is_some() {
        return Err(Reply::new(ErrorCode::Busy, format!("{to} has an interrupted upload; finish or remove it first")));
    }
    // The new file is charged before it exists: its bytes and, as a new partial, one entry.
    let reservation = store.reserve(user, size, 1)?;
    let (mut partial, _) = home.open_partial(to, false)?;
    let written = fill(&source, &mut partial, size);
    let replaced = match written {
        Ok(()) => home.finish_partial(to).map_err(Reply::from),
        Err(e) => Err(e),
    };
    match replaced {
        Ok(replaced) => {
            let bytes = signed(size) - signed(replaced.unwrap_or(0));
            reservation.commit(bytes, 1 - i64::from(replaced.is_some()));
            Ok(Response::Ok)
        }
        Err(e) => {
            // Nothing was committed: the partial goes, the reservation is released by its drop.
            if let Err(d) = home.discard_partial(to) {
                tracing::warn!(%user, path = %to, "cannot remove the partial of a failed copy: {d}");
            }
            Err(e)
        }
    }
}

/// Copies exactly `size` bytes and syncs; a source that changed length meanwhile is refused.
fn fill(source: &std::fs::File, partial: &mut std::fs::File, size: u64) -> Result<(), Reply> {
    let copied = std::io::copy(&mut source.take(size), partial).map_err(|e| disk_or_internal(&e))?;
    let mut extra = [0u8; 1];
    let more = (&mut &*source).read(&mut extra).map_err(|e| disk_or_internal(&e))?;
    if copied != size || more > 0 {
        return Err(Reply::new(ErrorCode::SourceChanged, "the source changed while being copied"));
    }
    partial.flush().and_then(|()| partial.sync_all()).map_err(|e| disk_or_internal(&e))
}

fn disk_or_internal(e: &std::io::Error) -> Reply {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            Reply::new(ErrorCode::DiskFull, "no space left on the server's disk")
        }
        _ => Reply::internal(e),
    }
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
