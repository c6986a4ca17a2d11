//! `Copy`: a file copied inside the home (CTRL-COPY-1). Like an upload, the copy is charged to
//! the quota before it exists, written by the storage under the target's upload slot (the
//! local home's partial file, synced and renamed into place; or a new blob in object storage,
//! through the upload staging) and published at once; the replaced file's bytes go out only
//! then (QUOTA-3, STORE-OBJ-11).

use super::errors::{blocking, Reply};
use super::session::Session;
use super::upload::UploadSlot;
use crate::home::HomePath;
use crate::proto::{ErrorCode, Response};
use crate::storage::Storage;
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
    // Refuses what a download refuses, and learns the size to charge.
    let size = storage.open_reader(from)?.size();
    if storage.staged_len(to)?.is_some() {
        return Err(Reply::new(ErrorCode::Busy, format!("{to} has an interrupted upload; finish or remove it first")));
    }
    // The new file is charged before it exists: its bytes and, as a new partial, one entry.
    let reservation = store.reserve(user, size, 1)?;
    match storage.copy_file(from, to, size) {
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
            Err(e.into())
        }
    }
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
