//! The PostgreSQL connection pool of a server process: one per process, shared by every part
//! that keeps state in PostgreSQL. Each part creates its own tables, prefixed by area.

use std::str::FromStr;

/// Why the pool could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL url: {0}")]
    Url(String),
    #[error("cannot create the PostgreSQL pool: {0}")]
    Pool(String),
}

/// Most connections one server process holds open.
const MAX_CONNECTIONS: usize = 16;

/// A pool on `url` (`postgres://user@host:port/db`). Connections are made on first use, so a
/// database that is down shows up as an error of the operation that needed it.
pub fn connect(url: &str) -> Result<deadpool_postgres::Pool, PgError> {
    let config = tokio_postgres::Config::from_str(url).map_err(|e| PgError::Url(e.to_string()))?;
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(MAX_CONNECTIONS)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}
