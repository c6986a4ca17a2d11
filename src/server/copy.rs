//! `Copy`: a file copied inside the home (CTRL-COPY-1). Like an upload, the copy is charged to
//! the quota before it exists, written through the storage's upload staging under the target's
//! upload slot (the local home's partial file, or a new blob in object storage), verified and
//! published at once; the replaced file's bytes go out only then (QUOTA-3, STORE-OBJ-11).

use super::errors::{blocking, Reply};
use super::session::Session;
use super::upload::UploadSlot;
use crate::home::HomePath;
use crate::proto::control::Md5Digest;
use crate::proto::{ErrorCode, Response};
use crate::storage::{hash_blob, BlobReader, Staging, Storage, StorageError};
use crate::store::UserStore;

/// Bytes read and written at a time.
const PIECE: u64 = 1 << 20;

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
        let (state, storage, user) = (self.state.clone(), self.storage.clone(), self.user.clone());
        // The claim is a store call (possibly PostgreSQL): taken off the async workers too.
        blocking(move || {
            let _slot = UploadSlot::acquire(&state, &user, &to)?;
            copy_file(&*storage, &state.store, &user, &from, &to)
        })
        .await
    }
}

fn copy_file(
    storage: &dyn Storage,
    store: &std::sync::Arc<dyn UserStore>,
    user: &str,
    from: &HomePath,
    to: &HomePath,
) -> Result<Response, Reply> {
    let source = storage.open_reader(from)?;
    let size = source.size();
    if storage.staged_len(to)?.is_some() {
        return Err(Reply::new(ErrorCode::Busy, format!("{to} has an interrupted upload; finish or remove it first")));
    }
    // The new file is charged before it exists: its bytes and, as a new partial, one entry.
    let reservation = store.reserve(user, size, 1)?;
    let replaced = storage
        .open_staging(to, size, false)
        .and_then(|mut staging| {
            let md5 = fill(&*source, &mut *staging)?;
            staging.finish(&md5)
        })
        .map_err(Reply::from);
    match replaced {
        Ok(replaced) => {
            let bytes = signed(size) - signed(replaced.unwrap_or(0));
            reservation.commit(bytes, 1 - i64::from(replaced.is_some()));
            Ok(Response::Ok)
        }
        Err(e) => {
            // Nothing was committed: the staging goes, the reservation is released by its drop.
            if let Err(d) = storage.discard_staging(to) {
                tracing::warn!(%user, path = %to, "cannot remove the partial of a failed copy: {d}");
            }
            Err(e)
        }
    }
}

/// Copies every byte of `source` in order; a source that changed meanwhile is
/// [`StorageError::SourceChanged`]. Returns the md5 of what was written: the running one the
/// staging kept on the way, else one read back from the source.
fn fill(source: &dyn BlobReader, staging: &mut dyn Staging) -> Result<Md5Digest, StorageError> {
    let size = source.size();
    let mut buf = vec![0u8; PIECE.min(size) as usize];
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(PIECE) as usize;
        source.read_exact_at(&mut buf[..n], pos)?;
        staging.write_at(pos, &buf[..n])?;
        pos += n as u64;
    }
    source.check_unchanged()?;
    match staging.received_md5() {
        Some(md5) => Ok(md5),
        None => Ok(hash_blob(source)?.0),
    }
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
