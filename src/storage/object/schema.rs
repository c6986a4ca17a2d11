//! The object-storage tables in PostgreSQL (all named `ns_*`), created idempotently.
//!
//! - `ns_entries`: the namespace, one row per file or directory of a home (the root is
//!   implicit). A file names its immutable blob and has an mtime and a mode.
//! - `ns_blobs`: immutable blob objects (`blobs/ID`): size, md5 and the ETag the store gave.
//! - `ns_uploads`: one unfinished upload per (home, target), with the epoch of its writer.
//! - `ns_segments`: the staged segment objects of an upload, recorded after their PUT.
//! - `ns_garbage`: objects no name refers to any more, deleted by the sweep.

/// Serialises schema set-up between servers starting together.
const SCHEMA_LOCK: i64 = 0x7866_6572_6e73; // "xferns"

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ns_entries (
    home   TEXT    NOT NULL,
    path   TEXT    NOT NULL,
    parent TEXT    NOT NULL,
    name   TEXT    NOT NULL,
    is_dir BOOLEAN NOT NULL,
    blob   TEXT,
    size   BIGINT  NOT NULL DEFAULT 0,
    mtime  BIGINT  NOT NULL,
    PRIMARY KEY (home, path)
);
CREATE INDEX IF NOT EXISTS ns_entries_parent ON ns_entries (home, parent);
-- Permission bits (STORE-OBJ-11); rows from before the column have a new file's 0o644.
ALTER TABLE ns_entries ADD COLUMN IF NOT EXISTS mode INTEGER NOT NULL DEFAULT 420;
CREATE TABLE IF NOT EXISTS ns_blobs (
    id      TEXT   PRIMARY KEY,
    home    TEXT   NOT NULL,
    size    BIGINT NOT NULL,
    md5     BYTEA  NOT NULL,
    etag    TEXT   NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS ns_uploads (
    id      TEXT   PRIMARY KEY,
    home    TEXT   NOT NULL,
    target  TEXT   NOT NULL,
    size    BIGINT NOT NULL,
    epoch   BIGINT NOT NULL,
    owner   TEXT   NOT NULL,
    updated BIGINT NOT NULL,
    UNIQUE (home, target)
);
CREATE TABLE IF NOT EXISTS ns_segments (
    upload TEXT    NOT NULL REFERENCES ns_uploads (id) ON DELETE CASCADE,
    idx    INTEGER NOT NULL,
    len    BIGINT  NOT NULL,
    key    TEXT    NOT NULL,
    PRIMARY KEY (upload, idx)
);
CREATE TABLE IF NOT EXISTS ns_garbage (
    key   TEXT   PRIMARY KEY,
    since BIGINT NOT NULL
);
";

/// Creates the tables if missing.
pub(super) async fn ensure(client: &mut deadpool_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
    tx.batch_execute(SCHEMA).await?;
    tx.commit().await
}
