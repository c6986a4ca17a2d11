//! The PostgreSQL store (STORE-PG-*): what several xfer servers share, in one database.
//!
//! - Quota reservations are one conditional statement at READ COMMITTED (STORE-LEASE-1):
//!   `UPDATE accounts SET reserved = reserved + n WHERE used + reserved + n <= quota`, and in
//!   the same statement a `reservations` row naming the owning server and a lease. The owner
//!   renews its leases from a heartbeat task; a reservation ends exactly once, by deleting its
//!   row in the statement that gives its quota back, whether it is committed, released, or
//!   reclaimed by any server after its lease expired (its server died; STORE-LEASE-2).
//! - Reconciling usage at start keeps every live lease (STORE-LEASE-3).
//! - Upload claims (one writer per path) are rows with an owner, a lease and an epoch
//!   (STORE-CLAIM-1, -2); the login throttle's failures are rows (STORE-THROTTLE-1); credential
//!   changes stamp generations that every server polls (STORE-REVOKE-1).
//!
//! The [`UserStore`] methods are blocking; they run their statements on a small runtime of
//! the store's own, so they may be called from any thread, and wait a bounded time: a
//! connection is tried [`ATTEMPTS`] times, a statement gets [`OP_TIMEOUT`] (STORE-PG-6).

mod schema;

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::runtime::{Handle, Runtime};

use super::usage::End;
use super::{LoginRecord, Reservation, SavedRanges, StoreError, UploadClaim, User, UserStore, MAX_SAVED_RANGES};
use crate::auth::password;
use crate::auth::throttle::{source_of, ThrottlePolicy};

/// Tries to get a connection before a call gives up with [`StoreError::Unavailable`].
pub const ATTEMPTS: u32 = 3;
/// Longest a call's statements may take, once connected.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
pub use super::DEFAULT_LEASE;

/// How a [`PgStore`] behaves.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// How long a reservation or claim outlives its server's last heartbeat.
    pub lease: Duration,
    /// Run the heartbeat (renew own leases, reclaim expired ones). Servers do; `xfer user`
    /// commands holding no leases do not.
    pub heartbeat: bool,
    /// Entry limit for users without `max_files` (QUOTA-6).
    pub default_entry_limit: Option<u64>,
    /// Policy of the shared login throttle (the server's `[auth]`).
    pub throttle: ThrottlePolicy,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            lease: DEFAULT_LEASE,
            heartbeat: false,
            default_entry_limit: None,
            throttle: ThrottlePolicy::default(),
        }
    }
}

/// Handle on the PostgreSQL store.
pub struct PgStore {
    inner: Arc<Inner>,
    rt: Option<Runtime>,
}

struct Inner {
    pool: Pool,
    /// This process's id in `owner` columns: unique per process, so a restarted server never
    /// takes its previous life's leases for its own.
    owner: String,
    lease: Duration,
    default_entry_limit: Option<u64>,
    throttle: ThrottlePolicy,
    handle: Handle,
    /// Usage changes that could not be written yet; written by the next heartbeat.
    pending: Mutex<Vec<(String, i64, i64)>>,
    /// Notified on every announced credential change (the listener task).
    changes: Arc<tokio::sync::Notify>,
}

impl PgStore {
    /// Connects to `url`, creates the schema if needed and, with `heartbeat`, starts renewing
    /// this process's leases. Fails with [`StoreError::Unavailable`] if PostgreSQL cannot be
    /// reached.
    pub fn connect(url: &str, opts: PgOptions) -> Result<PgStore, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("xfer-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store's runtime: {e}")))?;
        let pool = {
            let _in = rt.enter();
            crate::pg::connect(url).map_err(|e| StoreError::Unavailable(e.to_string()))?
        };
        let owner = format!("{}-{}-{:016x}", host_name(), std::process::id(), rand::random::<u64>());
        let inner = Arc::new(Inner {
            pool,
            owner,
            lease: opts.lease.max(Duration::from_millis(300)),
            default_entry_limit: opts.default_entry_limit,
            throttle: opts.throttle,
            handle: rt.handle().clone(),
            pending: Mutex::default(),
            changes: Arc::default(),
        });
        let store = PgStore { inner, rt: Some(rt) };
        store.run(|mut c| async move { schema::setup(&mut c).await.map_err(db) })?;
        if opts.heartbeat {
            store.inner.handle.spawn(heartbeat(Arc::downgrade(&store.inner)));
            store.inner.handle.spawn(listen(url.to_owned(), Arc::downgrade(&store.inner)));
        }
        Ok(store)
    }

    /// This process's owner id in the lease columns.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Ends every reservation whose lease expired, giving its quota back (STORE-LEASE-2).
    /// Returns how many ended. The heartbeat does this; tests and tools may call it.
    pub fn reclaim_expired(&self) -> Result<u64, StoreError> {
        self.run(|c| async move { reclaim(&c).await })
    }

    /// Live reservations of `name` as (owner, bytes, files), for health output and tests.
    pub fn reservations_of(&self, name: &str) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let name = name.to_owned();
        self.run(|c| async move {
            let rows = c
                .query("SELECT owner, bytes, files FROM reservations WHERE name = $1 ORDER BY id", &[&name])
                .await
                .map_err(db)?;
            Ok(rows.iter().map(|r| (r.get(0), from_db(r.get(1)), from_db(r.get(2)))).collect())
        })
    }

    fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
        T: Send + 'static,
    {
        self.inner.run(f)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Safe on any thread, also inside another runtime; unfinished work is dropped, and
        // leases it held expire.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Inner {
    /// Runs `f` with a connection on the store's runtime and waits for it (bounded).
    fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let pool = self.pool.clone();
        self.handle.spawn(async move {
            let _ = tx.send(with_client(&pool, f).await);
        });
        rx.recv().unwrap_or_else(|_| Err(StoreError::Unavailable("the store is shutting down".into())))
    }

    /// Runs `f` on the store's runtime without waiting (ends that must not block a caller).
    fn spawn<F, Fut>(&self, what: &'static str, f: F)
    where
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), StoreError>> + Send,
    {
        let pool = self.pool.clone();
        self.handle.spawn(async move {
            if let Err(e) = with_client(&pool, f).await {
                tracing::warn!("{what}: {e}; its lease expires instead");
            }
        });
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    fn adjust(self: &Arc<Self>, name: &str, bytes: i64, files: i64) {
        let (name, again) = (name.to_owned(), name.to_owned());
        let written = self.run(move |c| async move { adjust(&c, &name, bytes, files).await });
        if let Err(e) = written {
            tracing::warn!("usage change kept in memory until the store can be written: {e}");
            lock(&self.pending).push((again, bytes, files));
        }
    }
}

/// Gets a connection (up to [`ATTEMPTS`] tries) and runs `f` within [`OP_TIMEOUT`]. Only
/// getting the connection is retried: a statement may have taken effect before its error.
async fn with_client<T, F, Fut>(pool: &Pool, f: F) -> Result<T, StoreError>
where
    F: FnOnce(Object) -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        match pool.get().await {
            Ok(client) => {
                return tokio::time::timeout(OP_TIMEOUT, f(client))
                    .await
                    .unwrap_or_else(|_| Err(StoreError::Unavailable("PostgreSQL did not answer in time".into())));
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(StoreError::Unavailable(format!("cannot connect to PostgreSQL: {last}")))
}

/// Classifies a driver error: the server gone or shutting down is [`StoreError::Unavailable`],
/// anything the server refused is [`StoreError::Postgres`].
fn db(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        // Class 08 (connection exception) and 57 (operator intervention: shutdown).
        Some(d) if matches!(&d.code().code()[..2], "08" | "57") => StoreError::Unavailable(e.to_string()),
        Some(d) => StoreError::Postgres(d.message().to_owned()),
        None => {
            let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
            if e.is_closed() || io {
                StoreError::Unavailable(e.to_string())
            } else {
                StoreError::Postgres(e.to_string())
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect())
        .unwrap_or_else(|_| "xfer".into())
}

const USER_COLUMNS: &str = "name, quota_bytes, max_files, used_bytes, used_files, reserved_bytes, reserved_files";

fn user_from_row(r: &tokio_postgres::Row) -> User {
    User {
        name: r.get(0),
        quota_bytes: from_db(r.get(1)),
        max_files: r.get::<_, Option<i64>>(2).map(from_db),
        used_bytes: from_db(r.get(3)),
        used_files: from_db(r.get(4)),
        reserved_bytes: from_db(r.get(5)),
        reserved_files: from_db(r.get(6)),
    }
}

async fn fetch_user(c: &Object, name: &str) -> Result<Option<User>, StoreError> {
    let row =
        c.query_opt(&format!("SELECT {USER_COLUMNS} FROM accounts WHERE name = $1"), &[&name]).await.map_err(db)?;
    Ok(row.as_ref().map(user_from_row))
}

/// Stamps `name` with a new credential generation and announces it (CTRL-SESS-7,
/// STORE-REVOKE-1). The advisory lock, held to the end of the transaction, makes generations
/// commit in the order they are numbered, so a poller that saw `g` has seen all below it.
async fn bump_generation(tx: &deadpool_postgres::Transaction<'_>, name: &str) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::GENERATION_LOCK]).await.map_err(db)?;
    tx.execute(
        "INSERT INTO account_generations (name, generation) VALUES ($1, nextval('account_generations_seq'))
         ON CONFLICT (name) DO UPDATE SET generation = excluded.generation",
        &[&name],
    )
    .await
    .map_err(db)?;
    tx.execute("SELECT pg_notify($1, $2)", &[&schema::AUTH_CHANNEL, &name]).await.map_err(db)?;
    Ok(())
}

async fn adjust(c: &Object, name: &str, bytes: i64, files: i64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE accounts SET used_bytes = GREATEST(used_bytes + $2, 0), used_files = GREATEST(used_files + $3, 0)
         WHERE name = $1",
        &[&name, &bytes, &files],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Ends reservation `id` (STORE-LEASE-2): deletes its row and, only if this statement deleted
/// it, gives its quota back; applies the usage change either way.
async fn end_reservation(c: &Object, id: i64, name: &str, bytes: i64, files: i64) -> Result<(), StoreError> {
    c.execute(
        "WITH gone AS (DELETE FROM reservations WHERE id = $1 RETURNING bytes, files)
         UPDATE accounts SET
            reserved_bytes = GREATEST(reserved_bytes - COALESCE((SELECT bytes FROM gone), 0), 0),
            reserved_files = GREATEST(reserved_files - COALESCE((SELECT files FROM gone), 0), 0),
            used_bytes = GREATEST(used_bytes + $3, 0),
            used_files = GREATEST(used_files + $4, 0)
         WHERE name = $2",
        &[&id, &name, &bytes, &files],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Deletes every expired reservation and gives its quota back, in one statement.
async fn reclaim(c: &Object) -> Result<u64, StoreError> {
    let row = c
        .query_one(
            "WITH gone AS (DELETE FROM reservations WHERE expires_at < now() RETURNING name, bytes, files),
                  sums AS (SELECT name, SUM(bytes)::bigint AS b, SUM(files)::bigint AS f, COUNT(*) AS n
                           FROM gone GROUP BY name),
                  fixed AS (UPDATE accounts a SET
                               reserved_bytes = GREATEST(a.reserved_bytes - s.b, 0),
                               reserved_files = GREATEST(a.reserved_files - s.f, 0)
                            FROM sums s WHERE a.name = s.name RETURNING a.name)
             SELECT COALESCE(SUM(n), 0)::bigint FROM sums",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(from_db(row.get(0)))
}

/// Renews this process's leases, reclaims expired ones and writes pending usage changes,
/// every third of a lease, until the store is dropped.
async fn heartbeat(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(i) => i.lease / 3,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        let (owner, lease_ms, me) = (i.owner.clone(), i.lease_ms(), i.clone());
        let result = with_client(&i.pool, |c| async move {
            for table in ["reservations", "upload_claims"] {
                let sql = format!(
                    "UPDATE {table} SET expires_at = now() + $2::bigint * interval '1 millisecond' WHERE owner = $1"
                );
                c.execute(&sql, &[&owner, &lease_ms]).await.map_err(db)?;
            }
            reclaim(&c).await?;
            // Usage changes that could not be written before; any not written now stay.
            let batch = std::mem::take(&mut *lock(&me.pending));
            let mut left = batch.into_iter();
            while let Some((name, b, f)) = left.next() {
                if let Err(e) = adjust(&c, &name, b, f).await {
                    let mut kept = vec![(name, b, f)];
                    kept.extend(left);
                    lock(&me.pending).extend(kept);
                    return Err(e);
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            tracing::warn!("store heartbeat: {e}");
        }
    }
}

/// Listens on the credential channel (STORE-REVOKE-1) on a connection of its own and wakes
/// the revocation poller on every announcement. A lost connection is made again after a
/// second; meanwhile the poller's own interval is the fallback.
async fn listen(url: String, inner: Weak<Inner>) {
    loop {
        let Some(changes) = inner.upgrade().map(|i| i.changes.clone()) else { return };
        if let Err(e) = listen_once(&url, &changes).await {
            tracing::debug!("credential change listener: {e}; polling meanwhile");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(url: &str, changes: &tokio::sync::Notify) -> Result<(), StoreError> {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, mut conn) = tokio::time::timeout(crate::pg::CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| StoreError::Unavailable("PostgreSQL did not answer in time".into()))?
        .map_err(db)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        // Drives the connection (also for `client`) and forwards notifications.
        while let Some(Ok(message)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(_) = message {
                if tx.send(()).is_err() {
                    break;
                }
            }
        }
    });
    let listening = client.batch_execute(&format!("LISTEN {}", schema::AUTH_CHANNEL)).await.map_err(db);
    if listening.is_ok() {
        while rx.recv().await.is_some() {
            changes.notify_one();
        }
    }
    driver.abort();
    listening.and(Err(StoreError::Unavailable("listener connection closed".into())))
}

impl UserStore for PgStore {
    fn add_user(&self, name: &str, password: &str, quota: u64, max_files: Option<u64>) -> Result<(), StoreError> {
        super::validate_name(name)?;
        let hash = super::hash(password)?;
        let name = name.to_owned();
        self.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db)?;
            let n = tx
                .execute(
                    "INSERT INTO accounts (name, hash, quota_bytes, max_files) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &hash, &to_db(quota), &max_files.map(to_db)],
                )
                .await
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::UserExists(name));
            }
            bump_generation(&tx, &name).await?;
            tx.commit().await.map_err(db)
        })
    }

    fn set_password(&self, name: &str, password: &str) -> Result<(), StoreError> {
        let hash = super::hash(password)?;
        let name = name.to_owned();
        self.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db)?;
            let n = tx.execute("UPDATE accounts SET hash = $2 WHERE name = $1", &[&name, &hash]).await.map_err(db)?;
            if n == 0 {
                return Err(StoreError::NoSuchUser(name));
            }
            bump_generation(&tx, &name).await?;
            tx.commit().await.map_err(db)
        })
    }

    fn set_quota(&self, name: &str, quota: u64, max_files: Option<u64>) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.run(move |c| async move {
            let n = c
                .execute(
                    "UPDATE accounts SET quota_bytes = $2, max_files = $3 WHERE name = $1",
                    &[&name, &to_db(quota), &max_files.map(to_db)],
                )
                .await
                .map_err(db)?;
            match n {
                0 => Err(StoreError::NoSuchUser(name)),
                _ => Ok(()),
            }
        })
    }

    fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db)?;
            let n = tx.execute("DELETE FROM accounts WHERE name = $1", &[&name]).await.map_err(db)?;
            if n == 0 {
                return Err(StoreError::NoSuchUser(name));
            }
            for table in ["partial_ranges", "reservations", "upload_claims"] {
                tx.execute(&format!("DELETE FROM {table} WHERE name = $1"), &[&name]).await.map_err(db)?;
            }
            bump_generation(&tx, &name).await?;
            tx.commit().await.map_err(db)
        })
    }

    fn get_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| async move { fetch_user(&c, &name).await })
    }

    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.run(|c| async move {
            let rows = c.query(&format!("SELECT {USER_COLUMNS} FROM accounts ORDER BY name"), &[]).await.map_err(db)?;
            Ok(rows.iter().map(user_from_row).collect())
        })
    }

    fn verify_password(&self, name: &str, pw: &str) -> Result<bool, StoreError> {
        let record = self.login_record(name)?;
        // Verification (tens of milliseconds) runs here, not on the store's runtime.
        match record {
            Some(r) => Ok(password::verify_password(&r.hash, pw)),
            None => {
                password::verify_against_dummy(pw);
                Ok(false)
            }
        }
    }

    fn reconcile_usage(&self, name: &str, used_bytes: u64, used_files: u64) -> Result<(), StoreError> {
        let (name, owner) = (name.to_owned(), self.inner.owner.clone());
        self.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db)?;
            // The account row's lock orders this against reservations being made or ended.
            if tx.query_opt("SELECT 1 FROM accounts WHERE name = $1 FOR UPDATE", &[&name]).await.map_err(db)?.is_none()
            {
                return Ok(());
            }
            tx.execute("DELETE FROM reservations WHERE name = $1 AND expires_at < now()", &[&name])
                .await
                .map_err(db)?;
            let live = tx
                .query_one(
                    "SELECT COALESCE(SUM(bytes), 0)::bigint, COALESCE(SUM(files), 0)::bigint,
                            COUNT(*) FILTER (WHERE owner <> $2)
                     FROM reservations WHERE name = $1",
                    &[&name, &owner],
                )
                .await
                .map_err(db)?;
            let (bytes, files, others): (i64, i64, i64) = (live.get(0), live.get(1), live.get(2));
            // STORE-LEASE-3: another live server is writing into this home, so the scan saw
            // its uploads half-written; its own commits keep `used` right, the scan is skipped.
            tx.execute(
                "UPDATE accounts SET reserved_bytes = $2, reserved_files = $3,
                    used_bytes = CASE WHEN $6 THEN $4 ELSE used_bytes END,
                    used_files = CASE WHEN $6 THEN $5 ELSE used_files END
                 WHERE name = $1",
                &[&name, &bytes, &files, &to_db(used_bytes), &to_db(used_files), &(others == 0)],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)
        })
    }

    fn reserve(&self, name: &str, bytes: u64, files: u64) -> Result<Reservation, StoreError> {
        let (owner, lease_ms, limit) =
            (self.inner.owner.clone(), self.inner.lease_ms(), self.inner.default_entry_limit);
        let n = name.to_owned();
        let (b, f, lim) = (to_db(bytes), to_db(files), limit.map(to_db));
        let id = self.run(move |c| async move {
            // STORE-LEASE-1: check and raise in one statement; the row's lock serialises
            // concurrent reservations of one user on every server.
            let row = c
                .query_opt(
                    "WITH r AS (
                        UPDATE accounts SET reserved_bytes = reserved_bytes + $2::bigint, reserved_files = reserved_files + $3::bigint
                        WHERE name = $1
                          AND ($2::bigint = 0 OR used_bytes::numeric + reserved_bytes + $2::bigint <= quota_bytes)
                          AND ($3::bigint = 0 OR COALESCE(max_files, $4::bigint) IS NULL
                               OR used_files::numeric + reserved_files + $3::bigint <= COALESCE(max_files, $4::bigint))
                        RETURNING name)
                     INSERT INTO reservations (name, bytes, files, owner, expires_at)
                     SELECT name, $2::bigint, $3::bigint, $5::text, now() + $6::bigint * interval '1 millisecond' FROM r
                     RETURNING id",
                    &[&n, &b, &f, &lim, &owner, &lease_ms],
                )
                .await
                .map_err(db)?;
            if let Some(row) = row {
                return Ok(row.get::<_, i64>(0));
            }
            // Refused: say why, from a fresh read.
            let user = fetch_user(&c, &n).await?.ok_or_else(|| StoreError::NoSuchUser(n.clone()))?;
            super::check_bytes(&user, bytes)?;
            super::check_files(&user, files, limit)?;
            Err(StoreError::Postgres("reservation refused while usage changed; try again".into()))
        })?;
        let (inner, user) = (self.inner.clone(), name.to_owned());
        let end: End = Box::new(move |change| {
            let Some((bytes_delta, files_delta)) = change else {
                // A release: nobody waits for it, and if it is lost the lease ends it.
                inner.spawn(
                    "releasing a reservation",
                    move |c| async move { end_reservation(&c, id, &user, 0, 0).await },
                );
                return;
            };
            let u = user.clone();
            let done = inner.run(move |c| async move { end_reservation(&c, id, &u, bytes_delta, files_delta).await });
            if let Err(e) = done {
                // The lease gives the quota back; the usage change waits for the heartbeat.
                tracing::warn!("committing a reservation: {e}; usage change kept in memory");
                lock(&inner.pending).push((user, bytes_delta, files_delta));
            }
        });
        Ok(Reservation::new(name.to_owned(), bytes, files, end))
    }

    fn adjust_usage(&self, name: &str, bytes_delta: i64, files_delta: i64) {
        self.inner.adjust(name, bytes_delta, files_delta);
    }

    fn pending_changes(&self) -> usize {
        lock(&self.inner.pending).len()
    }

    fn load_ranges(&self, user: &str, path: &str) -> Result<Option<SavedRanges>, StoreError> {
        let (user, path) = (user.to_owned(), path.to_owned());
        let row = self.run(move |c| async move {
            let row = c
                .query_opt("SELECT size, ranges FROM partial_ranges WHERE name = $1 AND path = $2", &[&user, &path])
                .await
                .map_err(db)?;
            Ok(row.map(|r| (from_db(r.get(0)), r.get::<_, String>(1))))
        })?;
        Ok(row.map(|(size, text)| (size, super::parse_ranges(&text))).filter(|(_, r)| r.len() <= MAX_SAVED_RANGES))
    }

    fn range_map_paths(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let user = user.to_owned();
        self.run(move |c| async move {
            let rows =
                c.query("SELECT path FROM partial_ranges WHERE name = $1 ORDER BY path", &[&user]).await.map_err(db)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn save_ranges(&self, user: &str, path: &str, size: u64, ranges: &[(u64, u64)]) -> Result<(), StoreError> {
        if ranges.len() > MAX_SAVED_RANGES {
            return Err(StoreError::TooManyRanges { count: ranges.len(), max: MAX_SAVED_RANGES });
        }
        let text: String = ranges.iter().map(|(s, e)| format!("{s} {e}\n")).collect();
        let (user, path) = (user.to_owned(), path.to_owned());
        self.run(move |c| async move {
            c.execute(
                "INSERT INTO partial_ranges (name, path, size, ranges) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name, path) DO UPDATE SET size = excluded.size, ranges = excluded.ranges",
                &[&user, &path, &to_db(size), &text],
            )
            .await
            .map_err(db)?;
            Ok(())
        })
    }

    fn delete_ranges(&self, user: &str, path: &str) -> Result<(), StoreError> {
        let (user, path) = (user.to_owned(), path.to_owned());
        self.run(move |c| async move {
            c.execute("DELETE FROM partial_ranges WHERE name = $1 AND path = $2", &[&user, &path]).await.map_err(db)?;
            Ok(())
        })
    }

    fn login_record(&self, name: &str) -> Result<Option<LoginRecord>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT a.hash, COALESCE(g.generation, 0) FROM accounts a
                     LEFT JOIN account_generations g ON g.name = a.name WHERE a.name = $1",
                    &[&name],
                )
                .await
                .map_err(db)?;
            Ok(row.map(|r| LoginRecord { hash: r.get(0), generation: r.get(1) }))
        })
    }

    fn latest_auth_generation(&self) -> Result<i64, StoreError> {
        self.run(|c| async move {
            let row =
                c.query_one("SELECT COALESCE(MAX(generation), 0) FROM account_generations", &[]).await.map_err(db)?;
            Ok(row.get(0))
        })
    }

    fn auth_changes_since(&self, since: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.run(move |c| async move {
            let rows = c
                .query(
                    "SELECT name, generation FROM account_generations WHERE generation > $1 ORDER BY generation",
                    &[&since],
                )
                .await
                .map_err(db)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn claim_upload(&self, user: &str, path: &str) -> Result<Option<UploadClaim>, StoreError> {
        let (owner, lease_ms) = (self.inner.owner.clone(), self.inner.lease_ms());
        let (u, p) = (user.to_owned(), path.to_owned());
        // STORE-CLAIM-1: a claim is taken if free or if its lease expired; each taking gets a
        // new epoch (STORE-CLAIM-2).
        let epoch = self.run(move |c| async move {
            let row = c
                .query_opt(
                    "INSERT INTO upload_claims (name, path, owner, epoch, expires_at)
                     VALUES ($1, $2, $3, nextval('upload_claims_epoch_seq'), now() + $4::bigint * interval '1 millisecond')
                     ON CONFLICT (name, path) DO UPDATE
                        SET owner = excluded.owner, epoch = excluded.epoch, expires_at = excluded.expires_at
                        WHERE upload_claims.expires_at < now()
                     RETURNING epoch",
                    &[&u, &p, &owner, &lease_ms],
                )
                .await
                .map_err(db)?;
            Ok(row.map(|r| r.get::<_, i64>(0)))
        })?;
        let Some(epoch) = epoch else { return Ok(None) };
        let (inner, user, path) = (self.inner.clone(), user.to_owned(), path.to_owned());
        let release = Box::new(move || {
            inner.spawn("releasing an upload claim", move |c| async move {
                c.execute(
                    "DELETE FROM upload_claims WHERE name = $1 AND path = $2 AND epoch = $3",
                    &[&user, &path, &epoch],
                )
                .await
                .map_err(db)?;
                Ok(())
            });
        });
        Ok(Some(UploadClaim::new(from_db(epoch), release)))
    }

    fn claimed_paths(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let user = user.to_owned();
        self.run(move |c| async move {
            let rows = c
                .query("SELECT path FROM upload_claims WHERE name = $1 AND expires_at >= now()", &[&user])
                .await
                .map_err(db)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn shared_lockout(&self, user: &str, source: IpAddr) -> Result<Option<Duration>, StoreError> {
        let keys = throttle_keys(user, source);
        let forget = i64::try_from(self.inner.throttle.forget_after().as_millis()).unwrap_or(i64::MAX);
        self.run(move |c| async move {
            let row = c
                .query_one(
                    "SELECT COALESCE(MAX(EXTRACT(EPOCH FROM (locked_until - now())) * 1000), 0)::bigint
                     FROM login_failures
                     WHERE key = ANY($1) AND locked_until > now()
                       AND last_failure > now() - $2::bigint * interval '1 millisecond'",
                    &[&keys.to_vec(), &forget],
                )
                .await
                .map_err(db)?;
            let ms: i64 = row.get(0);
            Ok((ms > 0).then(|| Duration::from_millis(from_db(ms))))
        })
    }

    fn record_login(&self, user: &str, source: IpAddr, ok: bool) -> Result<(), StoreError> {
        let keys = throttle_keys(user, source);
        let policy = self.inner.throttle.clone();
        let forget = i64::try_from(policy.forget_after().as_millis()).unwrap_or(i64::MAX);
        self.run(move |c| async move {
            if ok {
                // As the local throttle does: success clears the (user, source) record.
                c.execute("DELETE FROM login_failures WHERE key = $1", &[&keys[0]]).await.map_err(db)?;
                return Ok(());
            }
            for key in &keys {
                let row = c
                    .query_one(
                        "INSERT INTO login_failures (key, failures, last_failure, locked_until)
                         VALUES ($1, 1, now(), now())
                         ON CONFLICT (key) DO UPDATE SET
                            failures = CASE WHEN login_failures.last_failure < now() - $2::bigint * interval '1 millisecond'
                                            THEN 1 ELSE login_failures.failures + 1 END,
                            last_failure = now()
                         RETURNING failures",
                        &[key, &forget],
                    )
                    .await
                    .map_err(db)?;
                let failures = u32::try_from(row.get::<_, i32>(0)).unwrap_or(u32::MAX);
                let ms = i64::try_from(policy.lockout(failures).as_millis()).unwrap_or(i64::MAX);
                c.execute(
                    "UPDATE login_failures SET locked_until = now() + $2::bigint * interval '1 millisecond' WHERE key = $1",
                    &[key, &ms],
                )
                .await
                .map_err(db)?;
            }
            c.execute(
                "DELETE FROM login_failures WHERE last_failure < now() - $1::bigint * interval '1 millisecond'",
                &[&forget],
            )
            .await
            .map_err(db)?;
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }

    fn change_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.inner.changes.clone())
    }
}

/// The shared throttle's keys: (user, source) and source, as in `auth::throttle`.
fn throttle_keys(user: &str, source: IpAddr) -> [String; 2] {
    let source = source_of(source);
    [format!("u:{user}|s:{source}"), format!("s:{source}")]
}
