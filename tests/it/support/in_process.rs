//! An in-process server on its own runtime: panic counting, configuration, the test
//! environment (server root, client config dir, local working dir) and the server handle.

use super::*;

static PANIC_HOOK: Once = Once::new();
static SERVER_PANICS: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
static NEXT_SERVER: AtomicUsize = AtomicUsize::new(0);

fn panics() -> &'static Mutex<HashMap<String, usize>> {
    SERVER_PANICS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(name) = std::thread::current().name() {
                if name.starts_with("xfer-srv-") {
                    *panics().lock().unwrap_or_else(|p| p.into_inner()).entry(name.to_string()).or_default() += 1;
                }
            }
            previous(info);
        }));
    });
}

// ---------------------------------------------------------------------------------------------
// Server configuration

/// The embedded default server config with `edits` applied as `key = value` replacements.
/// Panics if a key is not in the default file, so a renamed setting fails loudly.
pub fn config_with(edits: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = xfer::config::DEFAULT_SERVER_CONFIG.lines().map(str::to_string).collect();
    for (key, value) in edits {
        let mut found = false;
        for line in lines.iter_mut() {
            let t = line.trim_start();
            if t.starts_with('#') {
                continue;
            }
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    *line = format!("{key} = {value}");
                    found = true;
                }
            }
        }
        assert!(found, "config key {key} not found in the default server config");
    }
    lines.join("\n") + "\n"
}

/// Settings every test server gets unless overridden: a short grace period so a stuck session
/// cannot make a test wait long.
const BASE_EDITS: &[(&str, &str)] = &[("shutdown_grace_secs", "3")];

// ---------------------------------------------------------------------------------------------
// Test environment: one temp dir holding the server root, the client config dir and a local
// working directory. Servers can be started and restarted on the same root.

pub struct TestEnv {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub config_dir: PathBuf,
    pub work: PathBuf,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let config_dir = tmp.path().join("client");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        TestEnv { tmp, root, config_dir, work }
    }

    /// Writes `ROOT/xfer.toml` (the defaults with `edits`) before the server's first start.
    pub fn configure(&self, edits: &[(&str, &str)]) {
        std::fs::create_dir_all(&self.root).unwrap();
        let mut all: Vec<(&str, &str)> = BASE_EDITS.to_vec();
        all.extend_from_slice(edits);
        std::fs::write(self.root.join("xfer.toml"), config_with(&all)).unwrap();
    }

    fn ensure_config(&self) {
        if !self.root.join("xfer.toml").exists() {
            self.configure(&[]);
        }
    }

    /// The home directory of `user` on disk (created if missing).
    pub fn home(&self, user: &str) -> PathBuf {
        let p = self.root.join("homes").join(user);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A path in the local working directory.
    pub fn local(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// Starts an in-process server on a fresh port.
    pub fn start(&self) -> TestServer {
        self.start_on("127.0.0.1:0")
    }

    /// Starts an in-process server on `addr` (use a previous server's address to restart on the
    /// same port).
    pub fn start_on(&self, addr: &str) -> TestServer {
        install_panic_hook();
        self.ensure_config();
        let srv = Server::open(&self.root).expect("Server::open");
        let id = NEXT_SERVER.fetch_add(1, Ordering::SeqCst);
        let thread_name = format!("xfer-srv-{id}");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(thread_name.clone())
            .enable_all()
            .build()
            .expect("server runtime");
        let std_listener = bind_with_retry(addr);
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = srv.state.clone();
        let task = {
            let _enter = rt.enter();
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            rt.spawn(server::run(listener, state, async move {
                let _ = rx.await;
            }))
        };
        TestServer {
            root: self.root.clone(),
            config_dir: self.config_dir.clone(),
            addr,
            state: srv.state,
            fingerprint: srv.fingerprint,
            thread_name,
            rt: Some(rt),
            shutdown: Some(tx),
            task: Some(task),
        }
    }
}

/// Binds `addr`, retrying briefly if a just-closed listener still holds the port.
fn bind_with_retry(addr: &str) -> std::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}

/// A running in-process server.
pub struct TestServer {
    pub root: PathBuf,
    pub config_dir: PathBuf,
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
    pub fingerprint: xfer::tls::Fingerprint,
    thread_name: String,
    rt: Option<tokio::runtime::Runtime>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Adds a user through the store (as `xfer user add` does) and creates the home.
    pub fn add_user(&self, name: &str, password: &str, quota: u64, max_files: Option<u64>) {
        self.state.store.add_user(name, password, quota, max_files).expect("add_user");
        std::fs::create_dir_all(self.home(name)).unwrap();
    }

    pub fn home(&self, user: &str) -> PathBuf {
        self.root.join("homes").join(user)
    }

    pub fn user(&self, name: &str) -> xfer::store::User {
        self.state.store.get_user(name).expect("get_user").expect("user exists")
    }

    pub fn options(&self) -> ConnectOptions {
        options_for(&self.addr_string(), &self.config_dir)
    }

    /// Connects (pinning on first contact) and logs in.
    pub async fn connect(&self, user: &str, password: &str) -> Client {
        let mut c = Client::connect(&self.options()).await.expect("connect");
        c.login(user, password).await.expect("login");
        c
    }

    /// A raw protocol connection, TLS and preamble done, logged in.
    pub async fn raw(&self, user: &str, password: &str) -> Raw {
        Raw::login(self.addr, user, password).await
    }

    /// Panics seen on this server's threads so far.
    pub fn panics(&self) -> usize {
        panics().lock().unwrap_or_else(|p| p.into_inner()).get(&self.thread_name).copied().unwrap_or(0)
    }

    pub fn assert_no_panics(&self) {
        assert_eq!(self.panics(), 0, "the server panicked (see the test output above)");
    }

    /// True while the accept loop is still running.
    pub fn is_serving(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Resolves the shutdown future without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Triggers shutdown and waits for `server::run` to return (sessions saved).
    pub async fn stop(mut self) {
        self.trigger_shutdown();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STEP, task).await.expect("server did not stop in time").expect("server task");
        }
        self.assert_no_panics();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_shutdown();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

pub fn options_for(server: &str, config_dir: &Path) -> ConnectOptions {
    ConnectOptions {
        server: server.to_string(),
        config_dir: config_dir.to_path_buf(),
        accept_new_host: true,
        confirm_new_host: None,
    }
}

/// The server error code of a client result, panicking with context otherwise.
pub fn code_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(e) => e.code().unwrap_or_else(|| panic!("expected a server error code, got {e:?}")),
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
    }
}

/// `(used_bytes, quota_bytes, used_files, max_files, reserved_bytes)` of a `Df` reply.
pub fn df_tuple(r: Response) -> (u64, u64, u64, Option<u64>, u64) {
    match r {
        Response::Df { used_bytes, quota_bytes, used_files, max_files, reserved_bytes } => {
            (used_bytes, quota_bytes, used_files, max_files, reserved_bytes)
        }
        other => panic!("not a Df reply: {other:?}"),
    }
}

/// Waits for concurrent uploads of `size` bytes each and returns how many completed; every
/// other one must have been refused for quota (QUOTA-1), nothing else.
pub async fn count_uploads_refused_only_by_quota(
    tasks: Vec<tokio::task::JoinHandle<Result<u64, Option<ErrorCode>>>>,
    size: u64,
) -> u64 {
    let mut ok = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            Ok(got) => {
                assert_eq!(got, size);
                ok += 1;
            }
            Err(code) => assert_eq!(code, Some(ErrorCode::QuotaExceeded), "only quota refusals expected"),
        }
    }
    ok
}
