//! Usage changes and reservations (QUOTA-1, QUOTA-2).
//!
//! Every change to a user's counters is a [`Delta`]. A change that cannot be written at once
//! (a full disk under the store, QUOTA-9) is kept in memory and written with the next change,
//! so no settled upload or delete loses its accounting while the server runs; a restart
//! reconciles with the disk anyway (OPS-USAGE-1).

use super::{Db, Store, StoreError};

/// A signed change to one user's four counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Delta {
    pub used_bytes: i64,
    pub used_files: i64,
    pub reserved_bytes: i64,
    pub reserved_files: i64,
}

/// How a reservation ends: called once, with the change to usage (`bytes_delta`,
/// `files_delta`) for a commit, or `None` for a release. A commit is applied before it
/// returns, even one that changes nothing (a file replaced by one of the same size), so
/// usage read after the reply that follows it is settled; a release may finish later. Each
/// store implementation supplies its own.
pub(crate) type End = Box<dyn FnOnce(Option<(i64, i64)>) + Send + Sync>;

/// Quota held for one upload or one `Mkdir` in flight (QUOTA-1). Ends exactly once
/// (QUOTA-2): [`Reservation::commit`] consumes it; dropping it without a commit releases it
/// with no change to usage. It holds its store, so no code path can forget it.
#[must_use]
pub struct Reservation {
    user: String,
    bytes: u64,
    files: u64,
    end: Option<End>,
}

impl Reservation {
    pub(crate) fn new(user: String, bytes: u64, files: u64, end: End) -> Reservation {
        Reservation { user, bytes, files, end: Some(end) }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Entries (files, partials, directories) held.
    pub fn files(&self) -> u64 {
        self.files
    }

    /// Ends the reservation: drops it from `reserved_*` and applies the actual change on disk
    /// (`bytes_delta`, `files_delta`, may be negative) to `used_*`, in one transaction.
    pub fn commit(mut self, bytes_delta: i64, files_delta: i64) {
        self.end(Some((bytes_delta, files_delta)));
    }

    /// Ends the reservation with no change to usage (what dropping it does).
    pub fn release(self) {}

    fn end(&mut self, change: Option<(i64, i64)>) {
        if let Some(end) = self.end.take() {
            end(change);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.end(None);
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("user", &self.user)
            .field("bytes", &self.bytes)
            .field("files", &self.files)
            .finish()
    }
}

impl Store {
    /// Atomically reserves quota: checks `used + reserved + requested <= limit` for bytes and
    /// entries and raises `reserved_*`, in one transaction (QUOTA-1). The entry limit is the
    /// user's `max_files`, else the server-wide default (QUOTA-6).
    pub fn reserve(&self, name: &str, bytes: u64, files: u64) -> Result<Reservation, StoreError> {
        let default_limit = self.default_entry_limit;
        self.db.write_with_pending(|tx| {
            let mut user = super::fetch_user(tx, name)?.ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?;
            super::check_bytes(&user, bytes)?;
            super::check_files(&user, files, default_limit)?;
            user.reserved_bytes = user.reserved_bytes.saturating_add(bytes);
            user.reserved_files = user.reserved_files.saturating_add(files);
            super::write_usage(tx, &user)?;
            Ok(())
        })?;
        let (db, user) = (self.db.clone(), name.to_owned());
        let end: End = Box::new(move |change| {
            let (bytes_delta, files_delta) = change.unwrap_or((0, 0));
            let delta = Delta {
                used_bytes: bytes_delta,
                used_files: files_delta,
                reserved_bytes: -to_signed(bytes),
                reserved_files: -to_signed(files),
            };
            db.apply(&user, delta);
        });
        Ok(Reservation::new(name.to_owned(), bytes, files, end))
    }

    /// Applies a usage change outside any reservation (deletes, renames over a file, a swept
    /// partial). Clamps at zero; a no-op for a user deleted meanwhile. Never lost: see the
    /// module docs.
    pub fn adjust_usage(&self, name: &str, bytes_delta: i64, files_delta: i64) {
        self.db.apply(name, Delta { used_bytes: bytes_delta, used_files: files_delta, ..Delta::default() });
    }

    /// Changes not yet written to the store (non-zero only while its disk is full).
    pub fn pending_changes(&self) -> usize {
        super::lock(&self.db.pending).len()
    }
}

impl Db {
    /// Writes `delta` with every pending one; keeps them all pending if that fails.
    pub(super) fn apply(&self, name: &str, delta: Delta) {
        let mut pending = super::lock(&self.pending);
        pending.push((name.to_owned(), delta));
        let batch = std::mem::take(&mut *pending);
        let written = self.write(|tx| {
            for (user, d) in &batch {
                apply_one(tx, user, *d)?;
            }
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!("usage change kept in memory until the store can be written: {e}");
            *pending = batch;
        }
    }

    /// Runs `f` in a write transaction after writing the pending changes, so a check inside
    /// `f` sees them. Fails (and keeps them pending) if they cannot be written.
    fn write_with_pending<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut pending = super::lock(&self.pending);
        let out = self.write(|tx| {
            for (user, d) in pending.iter() {
                apply_one(tx, user, *d)?;
            }
            f(tx)
        });
        if out.is_ok() {
            pending.clear();
        }
        out
    }
}

fn apply_one(tx: &rusqlite::Transaction<'_>, name: &str, d: Delta) -> Result<(), StoreError> {
    let Some(mut u) = super::fetch_user(tx, name)? else {
        return Ok(());
    };
    u.used_bytes = u.used_bytes.saturating_add_signed(d.used_bytes);
    u.used_files = u.used_files.saturating_add_signed(d.used_files);
    u.reserved_bytes = u.reserved_bytes.saturating_add_signed(d.reserved_bytes);
    u.reserved_files = u.reserved_files.saturating_add_signed(d.reserved_files);
    super::write_usage(tx, &u)
}

fn to_signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
