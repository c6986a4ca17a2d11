//! Connection setup and schema migrations, versioned with `PRAGMA user_version`.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Version written by this build. Older files are migrated forward on open; newer ones are
/// refused rather than written with a schema this build does not know.
pub(super) const SCHEMA_VERSION: i64 = 3;

/// Long enough to ride out the other process's transactions (all of them are short), short
/// enough that a wedged lock surfaces as an error instead of a hang.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const V1: &str = "
CREATE TABLE IF NOT EXISTS users (
    name           TEXT PRIMARY KEY NOT NULL,
    hash           TEXT NOT NULL,
    quota_bytes    INTEGER NOT NULL CHECK (quota_bytes >= 0),
    max_files      INTEGER NULL CHECK (max_files IS NULL OR max_files >= 0),
    used_bytes     INTEGER NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    used_files     INTEGER NOT NULL DEFAULT 0 CHECK (used_files >= 0),
    reserved_bytes INTEGER NOT NULL DEFAULT 0 CHECK (reserved_bytes >= 0),
    reserved_files INTEGER NOT NULL DEFAULT 0 CHECK (reserved_files >= 0),
    created_at     INTEGER NOT NULL
);
";

/// Resume maps of interrupted UDP uploads (UDP-RESUME-*): which byte ranges of a partial file
/// are written and synced. `ranges` is a text list of `start end` lines.
const V2: &str = "
CREATE TABLE IF NOT EXISTS partial_ranges (
    user   TEXT NOT NULL,
    path   TEXT NOT NULL,
    size   INTEGER NOT NULL CHECK (size >= 0),
    ranges TEXT NOT NULL,
    PRIMARY KEY (user, path)
);
";

/// Sets the per-connection pragmas. WAL lets the server and an admin command use the file at
/// once (readers never block the writer); NORMAL sync is durable across application crashes
/// in WAL mode, which is what quota bookkeeping needs.
pub(super) fn configure(conn: &Connection) -> Result<(), StoreError> {
    // First, so that even switching the journal mode waits for a concurrent opener.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`]. The version is re-read inside a write
/// transaction so two processes opening a new file at once do not both migrate it.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    if user_version(conn)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version = user_version(&tx)?;
    if version > SCHEMA_VERSION {
        return Err(too_new(version));
    }
    if version < 1 {
        tx.execute_batch(V1)?;
    }
    if version < 2 {
        tx.execute_batch(V2)?;
    }
    if version < 3 {
        tx.execute_batch(super::sessions::SCHEMA)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Free pages kept in the store file, so that usage updates still find room when the disk
/// under it is full (QUOTA-9). 256 pages of 4 KiB: many thousands of counter updates.
const HEADROOM_PAGES: i64 = 256;

/// Tops the store file's free list up to [`HEADROOM_PAGES`]: writes that many pages (so the
/// file and the write-ahead log really hold them on disk), then frees them. A full disk then
/// fails new uploads, not the accounting of those already running.
pub(super) fn keep_headroom(conn: &Connection) -> Result<(), StoreError> {
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    if free >= HEADROOM_PAGES {
        return Ok(());
    }
    let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let fill = (HEADROOM_PAGES - free) * page;
    // Two transactions: pages freed in the transaction that wrote them are never written.
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS main.xfer_headroom (b BLOB);
         INSERT INTO main.xfer_headroom VALUES (randomblob({fill}));"
    ))?;
    conn.execute_batch("DROP TABLE main.xfer_headroom;")?;
    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    Ok(())
}

fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

fn too_new(version: i64) -> StoreError {
    let code = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR);
    let msg = format!("schema version {version} is newer than this build supports ({SCHEMA_VERSION}); upgrade xfer");
    StoreError::Db(rusqlite::Error::SqliteFailure(code, Some(msg)))
}
