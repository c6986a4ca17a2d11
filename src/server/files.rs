//! File-operation requests inside the home: pwd, cd, ls, stat, mkdir, rm, rmdir, mv, df, sum.
//! xfer runs no shell; these built-ins are the whole command set.

use super::errors::{blocking, Reply};
use super::session::Session;
use crate::home::{self, EntryKind as HomeKind};
use crate::proto::{Entry, EntryKind, ErrorCode, Request, Response};
use crate::storage::Storage;

impl Session {
    /// Serves one request that is neither a transfer nor a goodbye.
    pub(crate) async fn file_op(&mut self, request: Request) -> Result<Response, Reply> {
        match request {
            Request::Pwd => Ok(Response::Pwd { path: self.cwd.to_string() }),
            Request::Cd { path } => {
                let target = self.resolve(&path)?;
                let storage = self.storage.clone();
                let t = target.clone();
                blocking(move || storage.check_dir(&t).map_err(Reply::from)).await?;
                self.cwd = target;
                Ok(Response::Pwd { path: self.cwd.to_string() })
            }
            Request::List { path } => {
                let target = self.resolve(&path)?;
                let storage = self.storage.clone();
                let entries = blocking(move || list_or_stat(&*storage, &target)).await?;
                Ok(Response::Listing { entries })
            }
            Request::Stat { path } => {
                let target = self.resolve(&path)?;
                let storage = self.storage.clone();
                let entry = blocking(move || storage.stat(&target).map_err(Reply::from)).await?;
                Ok(Response::Stat { entry: wire_entry(entry) })
            }
            Request::Mkdir { path } => self.mkdir(&path).await,
            Request::Remove { path } => self.remove(&path).await,
            Request::Rmdir { path } => {
                let target = self.resolve(&path)?;
                if target.is_root() {
                    return Err(Reply::new(ErrorCode::InvalidPath, "cannot remove the home directory"));
                }
                let storage = self.storage.clone();
                blocking(move || storage.remove_dir(&target).map_err(Reply::from)).await?;
                self.release_usage(0, 1).await?;
                Ok(Response::Ok)
            }
            Request::Rename { from, to } => self.rename(&from, &to).await,
            Request::Df => self.df().await,
            Request::Sum { path } => {
                let target = self.resolve(&path)?;
                let storage = self.storage.clone();
                // CTRL-SUM-1: digests run off the async workers, a bounded number at once.
                self.state
                    .hashing
                    .file_job(move || {
                        let reader = storage.open_reader(&target)?;
                        let (md5, size) = crate::storage::hash_blob(&*reader)?;
                        Ok(Response::Sum { md5, size })
                    })
                    .await
            }
            // STORE-OBJ-11: served through the storage in both profiles.
            Request::SetAttrs { path, mtime, mode, .. } => self.set_attrs(&path, mtime, mode).await,
            Request::Walk { path } => self.walk(&path).await,
            Request::Glob { pattern } => self.glob(&pattern).await,
            Request::Copy { from, to } => self.copy(&from, &to).await,
            Request::Auth { .. } => Err(Reply::new(ErrorCode::BadRequest, "already logged in")),
            Request::PutEnd { .. } | Request::Abort => Err(Reply::new(ErrorCode::BadRequest, "no upload in progress")),
            Request::Bye
            | Request::Put { .. }
            | Request::Get { .. }
            | Request::GetUdp { .. }
            | Request::GetAuto { .. }
            | Request::PutFlow { .. }
            | Request::GetFlow { .. } => Err(Reply::new(ErrorCode::BadRequest, "unexpected request")),
        }
    }

    /// Refuses to touch the partial file of an upload in progress, or to move a directory
    /// holding one, which would leave the upload writing where it cannot settle (CTRL-PUT-2).
    /// The claims are a store call (possibly PostgreSQL): read off the async workers.
    pub(crate) async fn check_not_uploading(&self, path: &home::HomePath) -> Result<(), Reply> {
        let partial_of = path.partial_target();
        let (store, user) = (self.state.store.clone(), self.user.clone());
        let uploads = blocking(move || store.claimed_paths(&user).map_err(Reply::from)).await?;
        let root = home::HomePath::root();
        let busy = uploads
            .iter()
            .filter_map(|p| home::HomePath::resolve(&root, p).ok())
            .any(|target| partial_of.as_ref() == Some(&target) || (&target != path && target.starts_with(path)));
        if busy {
            return Err(Reply::new(ErrorCode::Busy, format!("{path} is in use by an upload in progress")));
        }
        Ok(())
    }

    /// A new directory is an entry: charged before it exists (QUOTA-5).
    async fn mkdir(&mut self, path: &str) -> Result<Response, Reply> {
        let target = self.resolve(path)?;
        refuse_partial_name(&target)?;
        let (storage, store, user) = (self.storage.clone(), self.state.store.clone(), self.user.clone());
        blocking(move || {
            let reservation = store.reserve(&user, 0, 1)?;
            storage.mkdir(&target)?;
            reservation.commit(0, 1);
            Ok(Response::Ok)
        })
        .await
    }

    /// Removes a file or symlink; removing a partial (of no running upload) also forgets its
    /// range map (QUOTA-4).
    async fn remove(&mut self, path: &str) -> Result<Response, Reply> {
        let target = self.resolve(path)?;
        self.check_not_uploading(&target).await?;
        let (storage, store, user) = (self.storage.clone(), self.state.store.clone(), self.user.clone());
        blocking(move || {
            let entry = storage.stat(&target)?;
            if entry.kind == HomeKind::Dir {
                return Err(Reply::new(ErrorCode::IsADirectory, format!("is a directory: {target} (use rmdir)")));
            }
            let freed = storage.remove_file(&target)?;
            store.adjust_usage(&user, -(freed as i64), -i64::from(entry.kind == HomeKind::File));
            if let Some(of) = target.partial_target() {
                if let Err(e) = store.delete_ranges(&user, &of.to_string()) {
                    tracing::warn!(%user, path = %of, "cannot delete the resume map: {e}");
                }
            }
            Ok(Response::Ok)
        })
        .await
    }

    async fn rename(&mut self, from: &str, to: &str) -> Result<Response, Reply> {
        let from = self.resolve(from)?;
        let to = self.resolve(to)?;
        if from.is_root() || to.is_root() {
            return Err(Reply::new(ErrorCode::InvalidPath, "cannot rename the home directory"));
        }
        refuse_partial_name(&from)?;
        refuse_partial_name(&to)?;
        self.check_not_uploading(&from).await?;
        self.check_not_uploading(&to).await?;
        let storage = self.storage.clone();
        let replaced = blocking(move || storage.rename(&from, &to).map_err(Reply::from)).await?;
        if let Some(bytes) = replaced {
            self.release_usage(bytes, 1).await?;
        }
        Ok(Response::Ok)
    }

    async fn df(&self) -> Result<Response, Reply> {
        let state = self.state.clone();
        let name = self.user.clone();
        let user = blocking(move || state.store.get_user(&name).map_err(Reply::internal)).await?;
        let user = user.ok_or_else(|| Reply::new(ErrorCode::NotAuthenticated, "account no longer exists"))?;
        Ok(Response::Df {
            used_bytes: user.used_bytes,
            quota_bytes: user.quota_bytes,
            used_files: user.used_files,
            max_files: user.max_files,
            reserved_bytes: user.reserved_bytes,
        })
    }

    /// Lowers the user's usage after a delete or an overwrite.
    pub(crate) async fn release_usage(&self, bytes: u64, files: u64) -> Result<(), Reply> {
        let state = self.state.clone();
        let name = self.user.clone();
        blocking(move || {
            state.store.adjust_usage(&name, -(bytes as i64), -(files as i64));
            Ok(())
        })
        .await
    }
}

/// Partial names are the server's (QUOTA-4): `Rename` from or onto one and `Mkdir` of one are
/// refused, so a partial never becomes a visible file without verification and never blocks
/// an upload.
fn refuse_partial_name(path: &home::HomePath) -> Result<(), Reply> {
    if path.partial_target().is_some() {
        return Err(Reply::new(
            ErrorCode::InvalidPath,
            format!("{path}: names ending in .xfer-part are reserved for partial uploads"),
        ));
    }
    Ok(())
}

/// `ls` of a directory lists it; `ls` of anything else describes just that entry.
fn list_or_stat(storage: &dyn Storage, target: &home::HomePath) -> Result<Vec<Entry>, Reply> {
    let entry = storage.stat(target)?;
    if entry.kind == HomeKind::Dir {
        Ok(storage.list(target)?.into_iter().map(wire_entry).collect())
    } else {
        Ok(vec![wire_entry(entry)])
    }
}

/// Converts a home entry to its wire form.
pub(crate) fn wire_entry(e: home::Entry) -> Entry {
    let kind = match e.kind {
        HomeKind::File => EntryKind::File,
        HomeKind::Dir => EntryKind::Dir,
        HomeKind::Symlink => EntryKind::Symlink,
        HomeKind::Other => EntryKind::Other,
    };
    Entry { name: e.name, kind, size: e.size, mtime: e.mtime }
}
