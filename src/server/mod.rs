//! The server: one tokio runtime serving many TLS control sessions that share one user store.
//!
//! [`Server::open`] prepares everything under the root directory (config, store, TLS identity,
//! homes, usage reconciliation); [`run`] serves an already-bound listener until `shutdown`
//! resolves, then gives sessions a grace period to save their partial files.

mod errors;
mod files;
mod get;
mod session;
mod udp;
mod upload;

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::auth::throttle::Throttle;
use crate::config::{ConfigError, ServerConfig};
use crate::home::{HomeError, HomePath};
use crate::store::{Store, StoreError};
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
    pub store: Arc<Store>,
    pub layout: RootLayout,
    pub config: ServerConfig,
    pub(crate) throttle: Mutex<Throttle>,
    pub(crate) tls: TlsAcceptor,
    /// Upload targets being written, as (user, path); one writer per partial file.
    pub(crate) uploads: Mutex<HashSet<(String, HomePath)>>,
    /// Live UDP flows, routed by id.
    pub(crate) flows: Arc<crate::flow::FlowTable>,
    /// The UDP socket on the control port's number, once `run` has bound it.
    pub(crate) udp: std::sync::OnceLock<Arc<crate::flow::UdpIo>>,
}

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
        let store =
            Arc::new(Store::open(&layout.store())?.with_default_entry_limit(config.quota.default_entry_limit()));
        let identity = ServerIdentity::load_or_create(&layout.tls_dir())?;
        upload::sweep::at_start(&store, &layout, config.quota.partial_expiry())?;
        // Build the dummy hash now so the first unknown-user login costs what any login costs.
        crate::auth::verify_against_dummy("");
        let state = ServerState {
            throttle: Mutex::new(Throttle::new(config.auth.clone())),
            tls: TlsAcceptor::from(identity.server_config()?),
            uploads: Mutex::new(HashSet::new()),
            flows: Arc::default(),
            udp: std::sync::OnceLock::new(),
            store,
            layout,
            config,
        };
        Ok(Server { state: Arc::new(state), fingerprint: identity.fingerprint() })
    }
}

/// Serves `listener` until `shutdown` completes, then waits up to the configured grace period
/// for sessions to stop (each saves its partial upload, so it stays resumable).
pub async fn run(listener: TcpListener, state: Arc<ServerState>, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every session holds a clone of `done_tx`; when all are dropped, `done_rx` yields None.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let slots = Arc::new(Semaphore::new(state.config.server.max_sessions.max(1)));
    let demux = start_udp(&listener, &state);
    let sweeper = tokio::spawn(upload::sweep::periodic(state.clone()));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
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
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            session::serve_connection(tcp, peer, state, stop).await;
            drop(permit);
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
    if let Some(d) = demux {
        d.abort();
    }
    sweeper.abort();
}

/// Binds UDP on the TCP listener's address (UDP-CTRL-1) and starts routing datagrams to flows.
/// Without it the server still works: clients fall back to TCP.
fn start_udp(listener: &TcpListener, state: &Arc<ServerState>) -> Option<tokio::task::JoinHandle<()>> {
    let addr = listener.local_addr().ok()?;
    let io = match crate::flow::UdpIo::bind(addr) {
        Ok(io) => Arc::new(io),
        Err(e) => {
            tracing::warn!("cannot listen for UDP on {addr}: {e}; transfers will use TCP");
            return None;
        }
    };
    let _ = state.udp.set(io.clone());
    let table = state.flows.clone();
    Some(tokio::spawn(async move {
        if let Err(e) = crate::flow::demux(io, table).await {
            tracing::error!("UDP socket failed: {e}; new transfers will use TCP");
        }
    }))
}
