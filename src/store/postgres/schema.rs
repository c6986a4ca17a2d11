//! Tables of the PostgreSQL store (STORE-PG-2). Created idempotently at connect, under an
//! advisory lock so that servers starting together do not race on the catalog.

/// Key of the advisory lock held while the schema is set up.
const SCHEMA_LOCK: i64 = 0x7866_6572_0001;

/// Key of the advisory lock that orders credential generations (see `bump_generation`).
pub(super) const GENERATION_LOCK: i64 = 0x7866_6572_0002;

/// Channel on which credential changes are announced (STORE-REVOKE-1).
pub(super) const AUTH_CHANNEL: &str = "xfer_auth";

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    name           TEXT PRIMARY KEY,
    hash           TEXT NOT NULL,
    quota_bytes    BIGINT NOT NULL CHECK (quota_bytes >= 0),
    max_files      BIGINT CHECK (max_files >= 0),
    used_bytes     BIGINT NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    used_files     BIGINT NOT NULL DEFAULT 0 CHECK (used_files >= 0),
    reserved_bytes BIGINT NOT NULL DEFAULT 0 CHECK (reserved_bytes >= 0),
    reserved_files BIGINT NOT NULL DEFAULT 0 CHECK (reserved_files >= 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE SEQUENCE IF NOT EXISTS account_generations_seq;
CREATE TABLE IF NOT EXISTS account_generations (
    name       TEXT PRIMARY KEY,
    generation BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS account_generations_by_generation ON account_generations (generation);
CREATE TABLE IF NOT EXISTS reservations (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    bytes      BIGINT NOT NULL CHECK (bytes >= 0),
    files      BIGINT NOT NULL CHECK (files >= 0),
    owner      TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_by_owner ON reservations (owner);
CREATE INDEX IF NOT EXISTS reservations_by_expiry ON reservations (expires_at);
CREATE INDEX IF NOT EXISTS reservations_by_name ON reservations (name);
CREATE TABLE IF NOT EXISTS partial_ranges (
    name   TEXT NOT NULL,
    path   TEXT NOT NULL,
    size   BIGINT NOT NULL CHECK (size >= 0),
    ranges TEXT NOT NULL,
    PRIMARY KEY (name, path)
);
CREATE SEQUENCE IF NOT EXISTS upload_claims_epoch_seq;
CREATE TABLE IF NOT EXISTS upload_claims (
    name       TEXT NOT NULL,
    path       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, path)
);
CREATE INDEX IF NOT EXISTS upload_claims_by_owner ON upload_claims (owner);
CREATE TABLE IF NOT EXISTS login_failures (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_failure TIMESTAMPTZ NOT NULL,
    locked_until TIMESTAMPTZ NOT NULL
);
";

/// Creates whatever is missing, in one transaction under [`SCHEMA_LOCK`].
pub(super) async fn setup(client: &mut deadpool_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
    tx.batch_execute(TABLES).await?;
    tx.commit().await
}
