//! The one PostgreSQL connection pool of a server process (STORE-PG-1). The PostgreSQL store
//! and any other part that keeps its state in the same database share it.
//!
//! Connections are plain TCP or a local socket; TLS to PostgreSQL is not offered yet, so the
//! database belongs on a private network (docs/deploy.md).

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

/// Connections per pool: enough for every blocking worker that may call the store at once.
pub const POOL_SIZE: usize = 16;
/// Longest wait for a connection, for a new one to be set up, or for a TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a pool could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL is not a PostgreSQL connection string (the operator's to fix).
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    /// The pool could not be built.
    #[error("cannot set up the PostgreSQL pool: {0}")]
    Pool(String),
}

/// Builds the pool for `url` (`postgres://user@host:port/db`). Connects lazily: a server
/// down now is reported by the first use, as [`crate::store::StoreError::Unavailable`].
/// Must be called within a tokio runtime's context when the pool is first used.
pub fn connect(url: &str) -> Result<Pool, PgError> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| PgError::Url(clean(url, &e.to_string())))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("xfer");
    }
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}

/// An error message that never repeats a password given in the URL.
fn clean(url: &str, message: &str) -> String {
    match url_password(url) {
        Some(pw) if !pw.is_empty() => message.replace(pw, "***"),
        _ => message.to_owned(),
    }
}

fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    Some(userinfo.split_once(':')?.1)
}

/// `url` with any password replaced, for logs.
pub fn redact(url: &str) -> String {
    match url_password(url) {
        Some(pw) if !pw.is_empty() => url.replacen(&format!(":{pw}@"), ":***@", 1),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_refuses_bad_urls() {
        assert_eq!(redact("postgres://x:secret@h:5432/db"), "postgres://x:***@h:5432/db");
        assert_eq!(redact("postgres://x@h/db"), "postgres://x@h/db");
        assert!(matches!(connect("postgres://x@h:notaport/db"), Err(PgError::Url(_))));
    }
}
