//! The server: one tokio runtime serving many TLS control sessions that share one user store.
//!
//! [`Server::open`] prepares everything under the root directory (config, store, TLS identity,
//! homes, usage reconciliation); [`run`] serves an already-bound listener until `shutdown`
//! resolves, then gives sessions a grace period to save their partial files.
//!
//! Two runtimes: sessions, logins and control commands run on the caller's runtime; the data
//! phase of every transfer (TLS reads and crc32 of data frames, UDP flows and the datagram
//! demultiplexer) runs on a data runtime that `run` starts ([`data::DataRuntime`]). Under many
//! transfers the data runtime's workers are always busy, while the control runtime's sleep
//! until a command comes, so the kernel wakes them at once: control commands never queue
//! behind transfer work (issue 9 §5, BENCHMARKS.md "Control latency under load").

mod audit;
mod copy;
mod data;
mod dispatch;
mod errors;
mod files;
mod get;
mod hashing;
mod limits;
mod login;
mod metrics;
pub mod path_memory;
mod revoke;
mod session;
mod tree;
mod udp;
mod upload;

pub use audit::{clean as escape_for_log, needs_escape};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::auth::throttle::Throttle;
use crate::config::{ConfigError, ServerConfig};
use crate::home::HomeError;
#[cfg(feature = "cluster")]
pub(crate) use crate::storage::object::ObjectService;
use crate::store::{Store, StoreError, UserStore};
use crate::tls::{ServerIdentity, TlsSetupError};

/// Errors preparing a server root.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot create root {path}: {source}")]
    Root { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("home of {user}: {source}")]
    Home { user: String, source: HomeError },
    #[error("object storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
}

/// Paths inside a server root.
#[derive(Debug, Clone)]
pub struct RootLayout {
    pub root: PathBuf,
}

impl RootLayout {
    pub fn new(root: &Path) -> RootLayout {
        RootLayout { root: root.to_path_buf() }
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("xfer.db")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
    pub fn homes(&self) -> PathBuf {
        self.root.join("homes")
    }
    pub fn home_of(&self, user: &str) -> PathBuf {
        self.homes().join(user)
    }
    /// Where the homes of deleted users are moved (outside `homes/`, so no new account can
    /// inherit them).
    pub fn deleted(&self) -> PathBuf {
        self.root.join("deleted")
    }

    /// Moves the home of `user`, if there is one, to `deleted/NAME.UNIXTIME[.N]`; returns the
    /// new place. A deleted or re-created account thus never inherits old files.
    pub fn archive_home(&self, user: &str) -> std::io::Result<Option<PathBuf>> {
        let home = self.home_of(user);
        if !home.exists() {
            return Ok(None);
        }
        std::fs::create_dir_all(self.deleted())?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for n in 0..1000u32 {
            let name = if n == 0 { format!("{user}.{stamp}") } else { format!("{user}.{stamp}.{n}") };
            let to = self.deleted().join(name);
            if to.exists() {
                continue;
            }
            std::fs::rename(&home, &to)?;
            return Ok(Some(to));
        }
        Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free name to archive the home under"))
    }

    /// Creates the root directory (mode 0700) if missing.
    pub fn create(&self) -> Result<(), SetupError> {
        use std::os::unix::fs::DirBuilderExt;
        let err = |source| SetupError::Root { path: self.root.clone(), source };
        if !self.root.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.root).map_err(err)?;
        }
        std::fs::create_dir_all(self.homes()).map_err(err)
    }
}

/// State shared by every session.
pub struct ServerState {
    /// The embedded SQLite store or the shared PostgreSQL one (`[store] url`, STORE-1).
    pub store: Arc<dyn UserStore>,
    pub layout: RootLayout,
    pub config: ServerConfig,
    pub(crate) throttle: Mutex<Throttle>,
    /// Bounded argon2 work (CTRL-AUTH-4).
    pub(crate) hashing: hashing::Hashing,
    /// Pre-login and logged-in pools (CTRL-SESS-5, CTRL-SESS-6).
    pub(crate) limits: Arc<limits::Limits>,
    /// Live sessions' revocation handles (CTRL-SESS-7).
    pub(crate) revocations: Arc<revoke::Registry>,
    /// Rate limit of log lines that peers can cause before logging in (OPS-LOG-2).
    pub(crate) log_budget: Mutex<audit::LineBudget>,
    pub(crate) tls: TlsAcceptor,
    /// Live UDP flows, routed by id.
    pub(crate) flows: Arc<crate::flow::FlowTable>,
    /// What the server's downloads learnt of their paths (UDP-RATE-9).
    pub download_paths: path_memory::DownloadPaths,
    /// The UDP socket on the control port's number, once `run` has bound it.
    pub(crate) udp: std::sync::OnceLock<Arc<crate::flow::UdpIo>>,
    /// Where `/metrics` is served, once `run` has bound it.
    pub metrics_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// The data runtime of the current `run`, if it could be started.
    pub(crate) data: Mutex<Option<tokio::runtime::Handle>>,
    /// `[storage] kind = "s3"`: homes are object storage (STORE-OBJ-*), else the local disk.
    pub(crate) objects: Option<ObjectService>,
}

/// Without the cluster back ends no home is in object storage: this type has no values.
#[cfg(not(feature = "cluster"))]
pub(crate) enum ObjectService {}

/// A prepared server: state plus what `serve` prints at start.
pub struct Server {
    pub state: Arc<ServerState>,
    pub fingerprint: crate::tls::Fingerprint,
}

impl Server {
    /// Prepares `root`: writes the default config on first start, opens the store, loads or
    /// creates the TLS identity, creates homes and reconciles every user's usage with the disk.
    pub fn open(root: &Path) -> Result<Server, SetupError> {
        let layout = RootLayout::new(root);
        layout.create()?;
        let config = ServerConfig::load_or_init(root)?;
        let objects = open_objects(&config)?;
        let store = open_store(&config, &layout)?;
        let identity = ServerIdentity::load_or_create(&layout.tls_dir())?;
        upload::sweep::at_start(&*store, objects.as_ref(), &layout, config.quota.partial_expiry())?;
        // Build the dummy hash now so the first unknown-user login costs what any login costs.
        crate::auth::verify_against_dummy("");
        let state = ServerState {
            throttle: Mutex::new(Throttle::new(config.auth.clone())),
            hashing: hashing::Hashing::new(config.server.max_parallel_hashes),
            limits: limits::Limits::new(&config.server),
            revocations: Arc::default(),
            log_budget: Mutex::default(),
            tls: TlsAcceptor::from(identity.server_config()?),
            flows: Arc::new(crate::flow::FlowTable::holding_early_datagrams()),
            download_paths: path_memory::DownloadPaths::default(),
            udp: std::sync::OnceLock::new(),
            metrics_addr: std::sync::OnceLock::new(),
            data: Mutex::new(None),
            objects,
            store,
            layout,
            config,
        };
        Ok(Server { state: Arc::new(state), fingerprint: identity.fingerprint() })
    }
}

/// Opens the object storage the config names, if any. It keeps its namespace in PostgreSQL:
/// without a PostgreSQL `[store] url` it is refused with a config error (STORE-OBJ-1).
#[cfg(feature = "cluster")]
fn open_objects(config: &ServerConfig) -> Result<Option<ObjectService>, SetupError> {
    let store_url = config.store.postgres_url();
    match (config.storage.object_config(store_url.as_deref(), |k| std::env::var(k).ok())?, &store_url) {
        (Some(c), Some(url)) => {
            let id = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
            let service = ObjectService::start(&c, url, &id)?;
            tracing::info!(endpoint = %c.endpoint, bucket = %c.bucket, "using object storage");
            Ok(Some(service))
        }
        _ => Ok(None),
    }
}

#[cfg(not(feature = "cluster"))]
fn open_objects(config: &ServerConfig) -> Result<Option<ObjectService>, SetupError> {
    match config.storage.kind {
        crate::config::StorageKind::Local => Ok(None),
        crate::config::StorageKind::S3 => Err(ConfigError::Invalid(WITHOUT_CLUSTER.into()).into()),
    }
}

/// Why a build without the cluster back ends refuses a cluster config.
#[cfg(not(feature = "cluster"))]
const WITHOUT_CLUSTER: &str =
    "this build of xfer has no cluster back ends (built without the `cluster` feature): [store] url and [storage] kind = \"s3\" are unavailable";

/// Opens the store the config names (STORE-1): the shared PostgreSQL store when `[store] url`
/// (or `XFER_STORE_URL`) is set, else the embedded SQLite file in the root.
fn open_store(config: &ServerConfig, layout: &RootLayout) -> Result<Arc<dyn UserStore>, SetupError> {
    let limit = config.quota.default_entry_limit();
    match config.store.postgres_url() {
        Some(url) => open_postgres(config, &url),
        None => Ok(Arc::new(Store::open(&layout.store())?.with_default_entry_limit(limit))),
    }
}

#[cfg(feature = "cluster")]
fn open_postgres(config: &ServerConfig, url: &str) -> Result<Arc<dyn UserStore>, SetupError> {
    use crate::store::postgres::{PgOptions, PgStore};
    let opts = PgOptions {
        lease: config.store.lease(),
        heartbeat: true,
        default_entry_limit: config.quota.default_entry_limit(),
        throttle: config.auth.clone(),
    };
    let store = PgStore::connect(url, opts)?;
    tracing::info!(store = %crate::pg::redact(url), owner = store.owner(), "using the PostgreSQL store");
    Ok(Arc::new(store))
}

#[cfg(not(feature = "cluster"))]
fn open_postgres(_config: &ServerConfig, _url: &str) -> Result<Arc<dyn UserStore>, SetupError> {
    Err(ConfigError::Invalid(WITHOUT_CLUSTER.into()).into())
}

/// Serves `listener` until `shutdown` completes, then waits up to the configured grace period
/// for sessions to stop (each saves its partial upload, so it stays resumable).
///
/// The accept loop never waits for a slot: a connection that finds the pre-login pool full
/// is closed at once (CTRL-SESS-5), so the listen backlog cannot fill up behind idle ones.
pub async fn run(listener: TcpListener, state: Arc<ServerState>, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every session holds a clone of `done_tx`; when all are dropped, `done_rx` yields None.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let data_runtime = data::DataRuntime::start(&state);
    let demux = start_udp(&listener, &state);
    let helpers = start_helpers(&state, &stop_rx).await;
    let sweeper = tokio::spawn(upload::sweep::periodic(state.clone()));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let pending = match state.limits.pending(peer.ip()) {
            Ok(p) => p,
            Err(full) => {
                refuse(&state, peer, full);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tcp = data::Rebinding::new(tcp);
        let state = state.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let _gauge = metrics::GaugeGuard::new(::metrics::gauge!(metrics::PENDING_LOGINS));
            session::serve_connection(tcp, peer, state, stop, pending).await;
            drop(done);
        });
    }
    tracing::info!("shutting down: no new connections; letting sessions finish");
    let _ = stop_tx.send(true);
    drop(done_tx);
    let grace = state.config.server.shutdown_grace();
    if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
        tracing::warn!("sessions still running after {grace:?}; exiting anyway");
    }
    for task in demux.into_iter().chain(helpers) {
        task.abort();
    }
    sweeper.abort();
    drop(data_runtime);
}

/// Closes a connection the pre-login pool has no room for; counted, and logged within the
/// log budget.
fn refuse(state: &ServerState, peer: std::net::SocketAddr, full: limits::Full) {
    ::metrics::counter!(metrics::CONNECTIONS_REFUSED, "pool" => full.label()).increment(1);
    if let Some(dropped) = session::lock(&state.log_budget).admit("refused", std::time::Instant::now()) {
        tracing::warn!(%peer, limit = full.label(), suppressed = dropped, "connection refused: too many pending logins");
    }
}

/// Starts the credential poller and, if configured, the metrics listener.
async fn start_helpers(state: &Arc<ServerState>, stop: &watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(revoke::poll(state.store.clone(), state.revocations.clone(), stop.clone()))];
    let addr = state.config.admin.metrics_listen.trim();
    if addr.is_empty() {
        return tasks;
    }
    let Some(handle) = metrics::handle() else {
        return tasks;
    };
    match metrics::bind(addr).await {
        Ok((listener, local)) => {
            tracing::info!("metrics at http://{local}/metrics");
            let _ = state.metrics_addr.set(local);
            tasks.push(tokio::spawn(metrics::serve(listener, handle)));
        }
        Err(e) => tracing::warn!("cannot serve metrics on {addr}: {e}"),
    }
    tasks
}

/// Binds UDP on the TCP listener's address (UDP-CTRL-1) and starts routing datagrams to flows.
/// Without it the server still works: clients fall back to TCP.
fn start_udp(listener: &TcpListener, state: &Arc<ServerState>) -> Option<tokio::task::JoinHandle<()>> {
    let addr = listener.local_addr().ok()?;
    // Registered with the data runtime's reactor, whose workers take its readiness events.
    let io = match data::enter(state, || crate::flow::UdpIo::bind(addr)) {
        Ok(io) => Arc::new(io),
        Err(e) => {
            tracing::warn!("cannot listen for UDP on {addr}: {e}; transfers will use TCP");
            return None;
        }
    };
    let _ = state.udp.set(io.clone());
    let table = state.flows.clone();
    // Every datagram is opened here: data work, so on the data runtime.
    Some(data::spawn(state, async move {
        if let Err(e) = crate::flow::demux(io, table).await {
            tracing::error!("UDP socket failed: {e}; new transfers will use TCP");
        }
    }))
}
