//! User store: accounts, argon2id password hashes, quotas, usage and reservations in SQLite.
//!
//! The store is the single source of truth shared by every session of a server and by the
//! `xfer user ...` admin commands (which may run while the server runs: SQLite WAL mode lets
//! both open the same file, and every call reads fresh rows, so changes apply without restart).
//!
//! Quota accounting: `used_bytes`/`used_files` are bytes and regular files on disk in the
//! home (partial upload files included). `reserved_bytes`/`reserved_files` are held by uploads
//! in flight. A reservation succeeds only if `used + reserved + requested <= quota`, checked
//! and applied in one transaction, so concurrent uploads can never overrun the quota.

use std::path::Path;

/// Errors from the user store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user store: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error("user already exists: {0}")]
    UserExists(String),
    #[error("invalid user name {0:?}: use 1-32 of a-z, 0-9, '_', '-', '.', starting with a letter or digit")]
    InvalidName(String),
    #[error("quota exceeded: need {needed} bytes, {available} available of {quota}")]
    QuotaBytes { needed: u64, available: u64, quota: u64 },
    #[error("file-count quota exceeded: limit is {limit} files")]
    QuotaFiles { limit: u64 },
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// One account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub quota_bytes: u64,
    /// `None` means no limit on the number of files.
    pub max_files: Option<u64>,
    pub used_bytes: u64,
    pub used_files: u64,
    pub reserved_bytes: u64,
    pub reserved_files: u64,
}

/// Quota held for one upload in flight. Returned by [`Store::reserve`]; must be passed back to
/// exactly one of [`Store::commit`] or [`Store::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct Reservation {
    pub user: String,
    pub bytes: u64,
    pub files: u64,
}

/// Handle on the SQLite store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    _private: (),
}

impl Store {
    /// Opens (creating if missing) the store at `path`, in WAL mode with a busy timeout.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let _ = path;
        todo!()
    }

    /// Adds a user with an argon2id hash of `password`.
    pub fn add_user(
        &self,
        name: &str,
        password: &str,
        quota_bytes: u64,
        max_files: Option<u64>,
    ) -> Result<(), StoreError> {
        let _ = (name, password, quota_bytes, max_files);
        todo!()
    }

    pub fn set_password(&self, name: &str, password: &str) -> Result<(), StoreError> {
        let _ = (name, password);
        todo!()
    }

    pub fn set_quota(&self, name: &str, quota_bytes: u64, max_files: Option<u64>) -> Result<(), StoreError> {
        let _ = (name, quota_bytes, max_files);
        todo!()
    }

    pub fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        let _ = name;
        todo!()
    }

    pub fn get_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let _ = name;
        todo!()
    }

    /// All users sorted by name.
    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        todo!()
    }

    /// Checks a password. Unknown users cost the same argon2 work as known ones and return
    /// `Ok(false)` just like a wrong password.
    pub fn verify_password(&self, name: &str, password: &str) -> Result<bool, StoreError> {
        let _ = (name, password);
        todo!()
    }

    /// Atomically reserves quota for an upload.
    pub fn reserve(&self, name: &str, bytes: u64, files: u64) -> Result<Reservation, StoreError> {
        let _ = (name, bytes, files);
        todo!()
    }

    /// Ends a reservation: drops it from `reserved_*` and applies the actual on-disk change
    /// (`bytes_delta`, `files_delta`, may be negative) to `used_*`, in one transaction.
    pub fn commit(&self, r: Reservation, bytes_delta: i64, files_delta: i64) -> Result<(), StoreError> {
        let _ = (r, bytes_delta, files_delta);
        todo!()
    }

    /// Ends a reservation with no change to usage.
    pub fn release(&self, r: Reservation) -> Result<(), StoreError> {
        self.commit(r, 0, 0)
    }

    /// Applies a usage change outside any reservation (deletes, renames over a file).
    /// Clamps at zero.
    pub fn adjust_usage(&self, name: &str, bytes_delta: i64, files_delta: i64) -> Result<(), StoreError> {
        let _ = (name, bytes_delta, files_delta);
        todo!()
    }

    /// Sets usage to measured values and clears reservations (reconciliation at server start).
    pub fn reconcile_usage(&self, name: &str, used_bytes: u64, used_files: u64) -> Result<(), StoreError> {
        let _ = (name, used_bytes, used_files);
        todo!()
    }
}
