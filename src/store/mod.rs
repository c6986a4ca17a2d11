//! User store: accounts, argon2id password hashes, quotas, usage and reservations in SQLite.
//!
//! The store is the single source of truth shared by every session of a server and by the
//! `xfer user ...` admin commands (which may run while the server runs: SQLite WAL mode lets
//! both open the same file, and every call reads fresh rows, so changes apply without restart).
//!
//! Quota accounting: `used_bytes`/`used_files` are bytes and entries on disk in the home
//! (regular files, partial upload files and directories; QUOTA-5). `reserved_bytes`/`reserved_files` are held by uploads
//! in flight. A reservation succeeds only if `used + reserved + requested <= quota`, checked
//! and applied in one transaction, so concurrent uploads can never overrun the quota.

mod api;
#[cfg(feature = "cluster")]
pub mod postgres;
mod schema;
mod sessions;
#[cfg(test)]
mod tests;
mod usage;

pub use api::{UploadClaim, UserStore, DEFAULT_LEASE};
pub use usage::Reservation;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use usage::Delta;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::auth::password;

pub use sessions::LoginRecord;

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
    #[error("file-count quota exceeded: at most {limit} files and directories")]
    QuotaFiles { limit: u64 },
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("resume map of {count} ranges refused: at most {max} are kept")]
    TooManyRanges { count: usize, max: usize },
    /// The PostgreSQL store could not be reached or answered with an error (STORE-PG-6).
    #[error("user store unavailable: {0}")]
    Unavailable(String),
    /// The PostgreSQL store answered, but refused the statement.
    #[error("user store (PostgreSQL): {0}")]
    Postgres(String),
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

/// Most ranges a saved resume map may hold (QUOTA-8, UDP-RESUME-*): a map with more is
/// refused, so the store row a peer can make the server write stays small.
pub const MAX_SAVED_RANGES: usize = crate::udp::ranges::MAX_RESUME_RANGES;

/// The embedded store: one SQLite file beside the homes (the default profile). Cheap to
/// share behind an `Arc`; all methods take `&self`. It implements [`UserStore`].
pub struct Store {
    db: Arc<Db>,
    /// Entry limit for users without `max_files` (QUOTA-6); `None` means none.
    default_entry_limit: Option<u64>,
    /// Upload targets being written, as (user, path): one writer per partial file. One
    /// process serves a SQLite store, so the set lives in its memory.
    claims: Arc<Mutex<HashSet<(String, String)>>>,
}

/// The connection and the usage changes not yet written; shared with the reservations.
struct Db {
    // A std mutex rather than an async one: every call holds it for one short statement or
    // transaction, and the server calls the store from `spawn_blocking`, never across an
    // `.await`. Argon2 work is always done outside the lock.
    conn: Mutex<Connection>,
    /// Usage changes not yet written (see [`usage`]); lock before `conn`.
    pending: Mutex<Vec<(String, Delta)>>,
}

const USER_COLUMNS: &str = "name, quota_bytes, max_files, used_bytes, used_files, reserved_bytes, reserved_files";

impl Store {
    /// Opens (creating if missing) the store at `path`, in WAL mode with a busy timeout.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        schema::configure(&conn)?;
        schema::migrate(&mut conn)?;
        if let Err(e) = schema::keep_headroom(&conn) {
            tracing::warn!("cannot keep free space in the user store: {e}");
        }
        let db = Arc::new(Db { conn: Mutex::new(conn), pending: Mutex::default() });
        Ok(Store { db, default_entry_limit: None, claims: Arc::default() })
    }

    /// Sets the entry limit for users without their own `max_files` (QUOTA-6).
    pub fn with_default_entry_limit(mut self, limit: Option<u64>) -> Store {
        self.default_entry_limit = limit;
        self
    }

    /// Adds a user with an argon2id hash of `password`.
    pub fn add_user(
        &self,
        name: &str,
        password: &str,
        quota_bytes: u64,
        max_files: Option<u64>,
    ) -> Result<(), StoreError> {
        validate_name(name)?;
        let hash = hash(password)?;
        let inserted = self.conn().execute(
            "INSERT INTO users (name, hash, quota_bytes, max_files, created_at)
             VALUES (?1, ?2, ?3, ?4, unixepoch())
             ON CONFLICT (name) DO NOTHING",
            params![name, hash, to_db(quota_bytes), max_files.map(to_db)],
        )?;
        match inserted {
            0 => Err(StoreError::UserExists(name.to_owned())),
            _ => Ok(()),
        }
    }

    pub fn set_password(&self, name: &str, password: &str) -> Result<(), StoreError> {
        let hash = hash(password)?;
        let updated = self.conn().execute("UPDATE users SET hash = ?2 WHERE name = ?1", params![name, hash])?;
        expect_one(updated, name)
    }

    pub fn set_quota(&self, name: &str, quota_bytes: u64, max_files: Option<u64>) -> Result<(), StoreError> {
        let updated = self.conn().execute(
            "UPDATE users SET quota_bytes = ?2, max_files = ?3 WHERE name = ?1",
            params![name, to_db(quota_bytes), max_files.map(to_db)],
        )?;
        expect_one(updated, name)
    }

    pub fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        let deleted = conn.execute("DELETE FROM users WHERE name = ?1", [name])?;
        conn.execute("DELETE FROM partial_ranges WHERE user = ?1", [name])?;
        expect_one(deleted, name)
    }

    pub fn get_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        fetch_user(&self.conn(), name)
    }

    /// All users sorted by name.
    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
        let users = stmt.query_map([], user_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(users)
    }

    /// Checks a password. Unknown users cost the same argon2 work as known ones and return
    /// `Ok(false)` just like a wrong password.
    pub fn verify_password(&self, name: &str, password: &str) -> Result<bool, StoreError> {
        let stored: Option<String> =
            self.conn().query_row("SELECT hash FROM users WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        // The lock is released here: verification takes tens of milliseconds.
        match stored {
            Some(hash) => Ok(password::verify_password(&hash, password)),
            None => {
                password::verify_against_dummy(password);
                Ok(false)
            }
        }
    }

    /// Sets usage to measured values and clears reservations (reconciliation at server start).
    /// A no-op if the user does not exist (deleted between listing and reconciling).
    pub fn reconcile_usage(&self, name: &str, used_bytes: u64, used_files: u64) -> Result<(), StoreError> {
        self.update_usage(name, |u| {
            u.used_bytes = used_bytes;
            u.used_files = used_files;
            u.reserved_bytes = 0;
            u.reserved_files = 0;
        })
    }

    /// The saved resume map of `user`'s partial upload to `path`: the file size and the held
    /// ranges as `(start, end)` pairs.
    pub fn load_ranges(&self, user: &str, path: &str) -> Result<Option<SavedRanges>, StoreError> {
        let row: Option<(i64, String)> = self
            .conn()
            .query_row(
                "SELECT size, ranges FROM partial_ranges WHERE user = ?1 AND path = ?2",
                params![user, path],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        // A map over the limit was not written by this build; it describes nothing usable.
        Ok(row.map(|(size, text)| (size as u64, parse_ranges(&text))).filter(|(_, r)| r.len() <= MAX_SAVED_RANGES))
    }

    /// Paths of `user`'s saved resume maps (for the partial sweep, QUOTA-7).
    pub fn range_map_paths(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT path FROM partial_ranges WHERE user = ?1 ORDER BY path")?;
        let paths = stmt.query_map([user], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
        Ok(paths)
    }

    /// Saves the resume map of a partial upload, replacing any earlier one. A map of more than
    /// [`MAX_SAVED_RANGES`] ranges is refused (QUOTA-8).
    pub fn save_ranges(&self, user: &str, path: &str, size: u64, ranges: &[(u64, u64)]) -> Result<(), StoreError> {
        if ranges.len() > MAX_SAVED_RANGES {
            return Err(StoreError::TooManyRanges { count: ranges.len(), max: MAX_SAVED_RANGES });
        }
        let text: String = ranges.iter().map(|(s, e)| format!("{s} {e}\n")).collect();
        self.conn().execute(
            "INSERT INTO partial_ranges (user, path, size, ranges) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user, path) DO UPDATE SET size = excluded.size, ranges = excluded.ranges",
            params![user, path, size as i64, text],
        )?;
        Ok(())
    }

    /// Forgets the resume map of a partial upload (finished, discarded or continued by TCP).
    pub fn delete_ranges(&self, user: &str, path: &str) -> Result<(), StoreError> {
        self.conn().execute("DELETE FROM partial_ranges WHERE user = ?1 AND path = ?2", params![user, path])?;
        Ok(())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.conn()
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.db.write(f)
    }

    /// Read-modify-write of one user's usage counters; a missing user is left alone.
    fn update_usage(&self, name: &str, change: impl FnOnce(&mut User)) -> Result<(), StoreError> {
        self.write(|tx| {
            if let Some(mut user) = fetch_user(tx, name)? {
                change(&mut user);
                write_usage(tx, &user)?;
            }
            Ok(())
        })
    }
}

impl Db {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic cannot leave a transaction open behind a poisoned lock (a dropped
        // `Transaction` rolls back, also while unwinding), so the connection stays usable.
        lock(&self.conn)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction. Taking the write lock up front, rather than
    /// upgrading a read, makes another process's concurrent writer wait on the busy timeout
    /// instead of failing with SQLITE_BUSY on a stale snapshot.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

impl StoreError {
    /// True when the store could not be written because its disk is full (SQLITE_FULL, or
    /// the OS said ENOSPC/EDQUOT), QUOTA-9.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Db(rusqlite::Error::SqliteFailure(e, _)) => e.code == rusqlite::ErrorCode::DiskFull,
            _ => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// 1-32 of `a-z 0-9 _ - .`, starting with a letter or digit: safe as a directory name on every
/// platform, with no hidden files, no `..` and no case-folding collisions.
fn validate_name(name: &str) -> Result<(), StoreError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.');
    let starts_well = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if starts_well && name.len() <= 32 && name.chars().all(allowed) {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_owned()))
    }
}

/// Hashing errors never carry the password (see `auth::password`).
fn hash(password: &str) -> Result<String, StoreError> {
    password::hash_password(password).map_err(|e| StoreError::Hash(e.to_string()))
}

fn expect_one(changed: usize, name: &str) -> Result<(), StoreError> {
    match changed {
        0 => Err(StoreError::NoSuchUser(name.to_owned())),
        _ => Ok(()),
    }
}

fn check_bytes(user: &User, bytes: u64) -> Result<(), StoreError> {
    let committed = user.used_bytes.saturating_add(user.reserved_bytes);
    let available = user.quota_bytes.saturating_sub(committed);
    if bytes <= available {
        return Ok(());
    }
    Err(StoreError::QuotaBytes { needed: bytes, available, quota: user.quota_bytes })
}

/// Entries (files, partials, directories) are limited by the user's `max_files`, else by the
/// server-wide default (QUOTA-5, QUOTA-6).
fn check_files(user: &User, files: u64, default_limit: Option<u64>) -> Result<(), StoreError> {
    let Some(limit) = user.max_files.or(default_limit) else {
        return Ok(());
    };
    let committed = user.used_files.saturating_add(user.reserved_files);
    if files <= limit.saturating_sub(committed) {
        return Ok(());
    }
    Err(StoreError::QuotaFiles { limit })
}

/// A saved resume map: the file size and its held `(start, end)` ranges.
pub type SavedRanges = (u64, Vec<(u64, u64)>);

/// Parses a saved range map's text (`start end` lines, as `save_ranges` writes them), skipping
/// anything malformed or empty. Public for the decoder fuzz targets.
pub fn parse_ranges(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let (s, e) = l.split_once(' ')?;
            let (s, e) = (s.parse().ok()?, e.parse().ok()?);
            (s < e).then_some((s, e))
        })
        .collect()
}

fn fetch_user(conn: &Connection, name: &str) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1");
    Ok(conn.query_row(&sql, [name], user_from_row).optional()?)
}

fn write_usage(conn: &Connection, user: &User) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE users SET used_bytes = ?2, used_files = ?3, reserved_bytes = ?4, reserved_files = ?5
         WHERE name = ?1",
        params![
            user.name,
            to_db(user.used_bytes),
            to_db(user.used_files),
            to_db(user.reserved_bytes),
            to_db(user.reserved_files)
        ],
    )?;
    Ok(())
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: row.get(0)?,
        quota_bytes: from_db(row.get(1)?),
        max_files: row.get::<_, Option<i64>>(2)?.map(from_db),
        used_bytes: from_db(row.get(3)?),
        used_files: from_db(row.get(4)?),
        reserved_bytes: from_db(row.get(5)?),
        reserved_files: from_db(row.get(6)?),
    })
}

/// SQLite integers are signed 64-bit; counters beyond `i64::MAX` are clamped, which for
/// byte counts means "unlimited" in practice.
fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The schema's CHECK constraints keep stored values non-negative; 0 is a safe reading of
/// anything else (e.g. a file edited by hand).
fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
