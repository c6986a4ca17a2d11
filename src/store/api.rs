//! The store boundary (STORE-1): everything servers share about users, behind one trait with
//! two implementations, the embedded SQLite [`Store`] (one server, the default) and the
//! PostgreSQL [`PgStore`](super::postgres::PgStore) (several servers sharing one database).
//!
//! The methods are blocking, like the SQLite calls they replace: the server calls the store
//! from `spawn_blocking`, and the values that end themselves on drop ([`Reservation`],
//! [`UploadClaim`]) need an end that does not `.await`.

use std::net::IpAddr;
use std::time::Duration;

use super::{LoginRecord, Reservation, SavedRanges, Store, StoreError, User};

/// Lease of a reservation or upload claim held by a server of a shared store unless configured
/// (`[store] lease_secs`, STORE-LEASE-2).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// What every store implementation provides (STORE-1).
pub trait UserStore: Send + Sync {
    /// Adds a user with an argon2id hash of `password`.
    fn add_user(&self, name: &str, password: &str, quota_bytes: u64, max_files: Option<u64>) -> Result<(), StoreError>;
    fn set_password(&self, name: &str, password: &str) -> Result<(), StoreError>;
    fn set_quota(&self, name: &str, quota_bytes: u64, max_files: Option<u64>) -> Result<(), StoreError>;
    fn delete_user(&self, name: &str) -> Result<(), StoreError>;
    fn get_user(&self, name: &str) -> Result<Option<User>, StoreError>;
    /// All users sorted by name.
    fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// Checks a password; unknown users cost the same argon2 work and return `Ok(false)`.
    fn verify_password(&self, name: &str, password: &str) -> Result<bool, StoreError>;

    /// Sets usage to what a scan of the home measured, at server start (OPS-USAGE-1). The
    /// embedded store also clears the reservations; a shared one keeps those of live leases
    /// (STORE-LEASE-3).
    fn reconcile_usage(&self, name: &str, used_bytes: u64, used_files: u64) -> Result<(), StoreError>;
    /// Reserves quota atomically (QUOTA-1); the value ends itself exactly once (QUOTA-2).
    fn reserve(&self, name: &str, bytes: u64, files: u64) -> Result<Reservation, StoreError>;
    /// A usage change outside any reservation; clamps at zero; never lost while running.
    fn adjust_usage(&self, name: &str, bytes_delta: i64, files_delta: i64);
    /// Usage changes not yet written (a full disk under the SQLite store, QUOTA-9).
    fn pending_changes(&self) -> usize {
        0
    }

    fn load_ranges(&self, user: &str, path: &str) -> Result<Option<SavedRanges>, StoreError>;
    fn range_map_paths(&self, user: &str) -> Result<Vec<String>, StoreError>;
    fn save_ranges(&self, user: &str, path: &str, size: u64, ranges: &[(u64, u64)]) -> Result<(), StoreError>;
    fn delete_ranges(&self, user: &str, path: &str) -> Result<(), StoreError>;

    /// The hash and credential generation of `name` (CTRL-SESS-7).
    fn login_record(&self, name: &str) -> Result<Option<LoginRecord>, StoreError>;
    fn latest_auth_generation(&self) -> Result<i64, StoreError>;
    fn auth_changes_since(&self, since: i64) -> Result<Vec<(String, i64)>, StoreError>;

    /// Takes the one-writer slot of `user`'s upload to `path` (CTRL-PUT-*): `None` when
    /// another upload (on any server sharing the store) holds it.
    fn claim_upload(&self, user: &str, path: &str) -> Result<Option<UploadClaim>, StoreError>;
    /// Targets of `user`'s uploads in progress (claims held), on any server.
    fn claimed_paths(&self, user: &str) -> Result<Vec<String>, StoreError>;

    /// Shared login throttle (STORE-THROTTLE-1): how long `user` from `source` must still wait
    /// because of failures counted by any server. The embedded store has one server, whose
    /// own throttle is the whole answer, so it never asks anyone to wait.
    fn shared_lockout(&self, _user: &str, _source: IpAddr) -> Result<Option<Duration>, StoreError> {
        Ok(None)
    }
    /// Records a login verdict in the shared throttle (a no-op for the embedded store).
    fn record_login(&self, _user: &str, _source: IpAddr, _ok: bool) -> Result<(), StoreError> {
        Ok(())
    }

    /// "sqlite" or "postgres", for logs and health output.
    fn kind(&self) -> &'static str;

    /// Woken when another process announces a credential change (STORE-REVOKE-1), so the
    /// server need not wait for its next poll. `None`: polling only.
    fn change_signal(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// True when other servers share this store (so the shared throttle must be consulted).
    fn shared(&self) -> bool {
        false
    }
}

/// The one-writer slot of an upload target. Released when dropped. `epoch` grows with every
/// claim of the same target, so a writer that lost its claim can be told apart (STORE-CLAIM-2).
#[must_use]
pub struct UploadClaim {
    epoch: u64,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl UploadClaim {
    pub(crate) fn new(epoch: u64, release: Box<dyn FnOnce() + Send + Sync>) -> UploadClaim {
        UploadClaim { epoch, release: Some(release) }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Drop for UploadClaim {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for UploadClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadClaim").field("epoch", &self.epoch).finish()
    }
}

impl UserStore for Store {
    fn add_user(&self, name: &str, password: &str, quota: u64, max_files: Option<u64>) -> Result<(), StoreError> {
        Store::add_user(self, name, password, quota, max_files)
    }
    fn set_password(&self, name: &str, password: &str) -> Result<(), StoreError> {
        Store::set_password(self, name, password)
    }
    fn set_quota(&self, name: &str, quota_bytes: u64, max_files: Option<u64>) -> Result<(), StoreError> {
        Store::set_quota(self, name, quota_bytes, max_files)
    }
    fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        Store::delete_user(self, name)
    }
    fn get_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        Store::get_user(self, name)
    }
    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        Store::list_users(self)
    }
    fn verify_password(&self, name: &str, password: &str) -> Result<bool, StoreError> {
        Store::verify_password(self, name, password)
    }
    fn reconcile_usage(&self, name: &str, used_bytes: u64, used_files: u64) -> Result<(), StoreError> {
        Store::reconcile_usage(self, name, used_bytes, used_files)
    }
    fn reserve(&self, name: &str, bytes: u64, files: u64) -> Result<Reservation, StoreError> {
        Store::reserve(self, name, bytes, files)
    }
    fn adjust_usage(&self, name: &str, bytes_delta: i64, files_delta: i64) {
        Store::adjust_usage(self, name, bytes_delta, files_delta)
    }
    fn pending_changes(&self) -> usize {
        Store::pending_changes(self)
    }
    fn load_ranges(&self, user: &str, path: &str) -> Result<Option<SavedRanges>, StoreError> {
        Store::load_ranges(self, user, path)
    }
    fn range_map_paths(&self, user: &str) -> Result<Vec<String>, StoreError> {
        Store::range_map_paths(self, user)
    }
    fn save_ranges(&self, user: &str, path: &str, size: u64, ranges: &[(u64, u64)]) -> Result<(), StoreError> {
        Store::save_ranges(self, user, path, size, ranges)
    }
    fn delete_ranges(&self, user: &str, path: &str) -> Result<(), StoreError> {
        Store::delete_ranges(self, user, path)
    }
    fn login_record(&self, name: &str) -> Result<Option<LoginRecord>, StoreError> {
        Store::login_record(self, name)
    }
    fn latest_auth_generation(&self) -> Result<i64, StoreError> {
        Store::latest_auth_generation(self)
    }
    fn auth_changes_since(&self, since: i64) -> Result<Vec<(String, i64)>, StoreError> {
        Store::auth_changes_since(self, since)
    }
    fn claim_upload(&self, user: &str, path: &str) -> Result<Option<UploadClaim>, StoreError> {
        let key = (user.to_owned(), path.to_owned());
        if !super::lock(&self.claims).insert(key.clone()) {
            return Ok(None);
        }
        let claims = self.claims.clone();
        Ok(Some(UploadClaim::new(
            0,
            Box::new(move || {
                super::lock(&claims).remove(&key);
            }),
        )))
    }
    fn claimed_paths(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let claims = super::lock(&self.claims);
        Ok(claims.iter().filter(|(u, _)| u == user).map(|(_, p)| p.clone()).collect())
    }
    fn kind(&self) -> &'static str {
        "sqlite"
    }
}
