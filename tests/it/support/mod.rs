//! Shared test harness: an in-process server on its own runtime, a process-based server for
//! CLI and restart tests, a raw protocol client, the CLI runner, and file helpers.
//!
//! Everything runs for real: TLS on 127.0.0.1, SQLite in a temp root, files on disk.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use xfer::client::{Client, ClientError, ConnectOptions};
use xfer::conn::{ConnError, FrameReader, FrameWriter};
use xfer::proto::{DataChunk, ErrorCode, Frame, Request, Response, Transport, CHUNK_SIZE, PROTOCOL_VERSION};
use xfer::server::{self, Server, ServerState};
use xfer::tls::{client_config, PinnedVerifier, SERVER_NAME};

pub mod flights;
pub mod proxy;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
/// Hang guard for whole async tests.
pub const HANG: Duration = Duration::from_secs(60);
/// Hang guard for one step (a CLI run, a wait for a condition).
pub const STEP: Duration = Duration::from_secs(30);

/// Runs `f` with the global hang guard.
pub async fn guard<F: std::future::Future>(f: F) -> F::Output {
    match tokio::time::timeout(HANG, f).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {HANG:?} (hang guard)"),
    }
}

// ---------------------------------------------------------------------------------------------
// Server panics: each in-process server runs on its own runtime whose threads carry a unique
// name, and a panic hook counts panics on those threads. A panic in a session task is otherwise
// swallowed by tokio and would go unnoticed.

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

// ---------------------------------------------------------------------------------------------
// Raw protocol client

type Tls = TlsStream<TcpStream>;

/// A protocol-level client for sending exactly the frames a test wants.
pub struct Raw {
    pub reader: FrameReader<ReadHalf<Tls>>,
    pub writer: WriteHalf<Tls>,
}

impl Raw {
    /// TLS only (accepting any certificate), no preamble yet.
    pub async fn tls(addr: SocketAddr) -> Raw {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let config = client_config(Arc::new(PinnedVerifier::new(None))).expect("client config");
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("tls handshake");
        let (r, w) = tokio::io::split(tls);
        Raw { reader: FrameReader::new(r), writer: w }
    }

    /// TLS plus version preamble exchange.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let mut raw = Raw::tls(addr).await;
        FrameWriter::new(&mut raw.writer).write_preamble(PROTOCOL_VERSION).await.expect("preamble");
        let v = raw.reader.read_preamble().await.expect("server preamble");
        assert_eq!(v, PROTOCOL_VERSION);
        raw
    }

    pub async fn login(addr: SocketAddr, user: &str, password: &str) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let r = raw.call(&Request::Auth { user: user.into(), password: password.into() }).await;
        assert!(matches!(r, Response::Authed { .. }), "login failed: {r:?}");
        raw
    }

    pub async fn send(&mut self, req: &Request) {
        FrameWriter::new(&mut self.writer).write_control(req).await.expect("send control");
    }

    pub async fn try_send(&mut self, req: &Request) -> std::io::Result<()> {
        FrameWriter::new(&mut self.writer).write_control(req).await
    }

    /// Sends one data frame and flushes.
    pub async fn send_chunk(&mut self, chunk: &DataChunk) {
        let mut w = FrameWriter::new(&mut self.writer);
        w.write_data(chunk).await.expect("send data");
        w.flush().await.expect("flush");
    }

    /// Writes raw bytes and flushes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("send bytes");
        self.writer.flush().await.expect("flush");
    }

    pub async fn frame(&mut self) -> Result<Frame, ConnError> {
        tokio::time::timeout(STEP, self.reader.read_frame()).await.expect("no frame from server in time")
    }

    /// The next frame, which must be a control response.
    pub async fn recv(&mut self) -> Response {
        match self.frame().await {
            Ok(Frame::Control(p)) => Frame::decode_control::<Response>(&p).expect("decode response"),
            Ok(Frame::Data(c)) => panic!("expected a control reply, got a data frame at {}", c.offset),
            Err(e) => panic!("expected a control reply, connection failed: {e}"),
        }
    }

    pub async fn call(&mut self, req: &Request) -> Response {
        self.send(req).await;
        self.recv().await
    }

    /// Expects an error reply with `code`; returns its message.
    pub async fn expect_error(&mut self, code: ErrorCode) -> String {
        match self.recv().await {
            Response::Error { code: c, message } if c == code => message,
            other => panic!("expected error {code:?}, got {other:?}"),
        }
    }

    /// Waits until the server closes the connection (any read error counts as closed).
    pub async fn expect_closed(&mut self) {
        match self.frame().await {
            Err(_) => {}
            Ok(Frame::Control(p)) => {
                let r = Frame::decode_control::<Response>(&p);
                panic!("expected the connection to close, got {r:?}");
            }
            Ok(Frame::Data(_)) => panic!("expected the connection to close, got a data frame"),
        }
    }

    /// Starts an upload; returns the offset from `PutReady`.
    pub async fn start_put(&mut self, path: &str, size: u64, resume: bool) -> u64 {
        let req = Request::Put { path: path.into(), size, resume, transport: Transport::Tcp };
        match self.call(&req).await {
            Response::PutReady { offset, .. } => offset,
            other => panic!("expected PutReady, got {other:?}"),
        }
    }

    /// Requests a whole-file download without reading the reply.
    pub async fn send_get(&mut self, path: &str) {
        let req = Request::Get { path: path.into(), offset: 0, prefix_md5: None, transport: Transport::Tcp };
        self.send(&req).await;
    }

    /// Sends `data[from..to]` as chunks of at most CHUNK_SIZE.
    pub async fn send_range(&mut self, data: &[u8], from: usize, to: usize) {
        let mut pos = from;
        while pos < to {
            let end = (pos + CHUNK_SIZE).min(to);
            let chunk = DataChunk::new(pos as u64, Bytes::copy_from_slice(&data[pos..end]));
            self.send_chunk(&chunk).await;
            pos = end;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Files

/// Deterministic pseudo-random bytes (xorshift64*), different for each seed.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Writes `n` pseudo-random bytes to `path`; returns them.
pub fn make_file(path: &Path, n: usize, seed: u64) -> Vec<u8> {
    let data = pseudo_random(n, seed);
    std::fs::write(path, &data).unwrap();
    data
}

/// Writes a big file quickly: one random MiB block repeated, each copy stamped with its index
/// so no two MiB are equal. Returns the md5.
pub fn make_big_file(path: &Path, n: u64, seed: u64) -> [u8; 16] {
    let block = pseudo_random(MIB as usize, seed);
    let mut f = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(path).unwrap());
    let mut h = Md5::new();
    let mut written = 0u64;
    let mut i = 0u64;
    let mut buf = block.clone();
    while written < n {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        let take = (n - written).min(MIB) as usize;
        f.write_all(&buf[..take]).unwrap();
        h.update(&buf[..take]);
        written += take as u64;
        i += 1;
    }
    f.flush().unwrap();
    h.finalize().into()
}

pub fn md5_bytes(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

pub fn md5_file(path: &Path) -> [u8; 16] {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().into()
}

pub fn hex(d: &[u8; 16]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Names in a directory on disk, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Bytes and regular-file count under `dir` on disk, symlinks not followed.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    let mut totals = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                totals.0 += e.metadata().unwrap().len();
                totals.1 += 1;
            }
        }
    }
    totals
}

pub fn file_len(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.len())
}

/// Polls `cond` every 10 ms (async) until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Blocking variant of [`wait_until`] with a 5 ms poll interval.
pub fn wait_until_blocking(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

pub fn xfer_bin() -> &'static str {
    env!("CARGO_BIN_EXE_xfer")
}

/// A `xfer` command isolated from the caller's environment: no XFER_* or log variables,
/// `XFER_CONFIG_DIR` set, `HOME` pointed at the config dir, stdin null.
pub fn xfer_cmd(config_dir: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(xfer_bin());
    for var in ["XFER_SERVER", "XFER_USER", "XFER_PASSWORD", "XFER_PROFILE", "XFER_LOG", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.env("XFER_CONFIG_DIR", config_dir).env("HOME", config_dir).current_dir(cwd).stdin(Stdio::null());
    cmd
}

/// A client command: `xfer --server ADDR --user USER --accept-new-host ARGS` with the password
/// in `XFER_PASSWORD`.
pub fn client_cmd(server: &str, user: &str, password: &str, config_dir: &Path, cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = xfer_cmd(config_dir, cwd);
    cmd.args(["--server", server, "--user", user, "--accept-new-host"]).args(args).env("XFER_PASSWORD", password);
    cmd
}

/// What a finished process printed.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.status.success(), "command failed: {self:#?}");
        self
    }

    /// Asserts failure with exactly one stderr line starting with `xfer: `; returns that line.
    #[track_caller]
    pub fn assert_one_line_error(&self) -> String {
        assert!(!self.status.success(), "command unexpectedly succeeded: {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected one stderr line: {self:#?}");
        assert!(lines[0].starts_with("xfer: "), "stderr not of the form `xfer: ...`: {self:#?}");
        lines[0].to_string()
    }
}

/// Runs `cmd` to completion (hang guard [`STEP`]) with stdin at /dev/null.
pub fn run(cmd: Command) -> Out {
    run_with_stdin(cmd, None)
}

/// Runs `cmd` to completion (hang guard [`STEP`]), feeding `stdin` if given.
pub fn run_with_stdin(mut cmd: Command, stdin: Option<&str>) -> Out {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn xfer");
    if let Some(input) = stdin {
        let mut sin = child.stdin.take().unwrap();
        let input = input.to_string();
        std::thread::spawn(move || {
            let _ = sin.write_all(input.as_bytes());
        });
    }
    let out_t = read_to_string_thread(child.stdout.take().unwrap());
    let err_t = read_to_string_thread(child.stderr.take().unwrap());
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Out { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() }
}

fn read_to_string_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct ChildGuard {
    pub child: Child,
}

impl ChildGuard {
    pub fn spawn(mut cmd: Command) -> ChildGuard {
        ChildGuard { child: cmd.spawn().expect("spawn") }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for exit (bounded by `timeout`), killing on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `xfer serve` as a child process.
pub struct ServerProcess {
    pub guard: ChildGuard,
    pub addr: String,
    pub stderr_path: PathBuf,
    lines: mpsc::Receiver<String>,
    pub stdout: Vec<String>,
}

impl ServerProcess {
    /// Starts `xfer serve --root ROOT --listen LISTEN` with stderr going to `stderr_path` and
    /// waits for the `listening on` line.
    pub fn start(root: &Path, listen: &str, stderr_path: &Path, envs: &[(&str, &str)]) -> ServerProcess {
        let deadline = Instant::now() + STEP;
        loop {
            match Self::try_start(root, listen, stderr_path, envs) {
                Ok(p) => return p,
                // Restarting on a fixed port: the old socket may linger for a moment.
                Err(msg) if Instant::now() < deadline && msg.contains("cannot listen") => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(msg) => panic!("xfer serve did not start: {msg}"),
            }
        }
    }

    fn try_start(
        root: &Path,
        listen: &str,
        stderr_path: &Path,
        envs: &[(&str, &str)],
    ) -> Result<ServerProcess, String> {
        let cwd = root.parent().unwrap_or(root);
        let mut cmd = xfer_cmd(cwd, cwd);
        cmd.arg("serve").arg("--root").arg(root).arg("--listen").arg(listen);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let err_file = std::fs::OpenOptions::new().create(true).append(true).open(stderr_path).unwrap();
        cmd.stdout(Stdio::piped()).stderr(Stdio::from(err_file));
        let mut guard = ChildGuard::spawn(cmd);
        let stdout = guard.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let addr = line
                        .strip_prefix("xfer: listening on ")
                        .map(|rest| rest.split_whitespace().next().unwrap_or_default().to_string());
                    seen.push(line);
                    if let Some(addr) = addr {
                        let p = ServerProcess {
                            guard,
                            addr,
                            stderr_path: stderr_path.to_path_buf(),
                            lines: rx,
                            stdout: seen,
                        };
                        p.wait_ready();
                        return Ok(p);
                    }
                }
                Err(_) => {
                    guard.kill();
                    let err = std::fs::read_to_string(stderr_path).unwrap_or_default();
                    return Err(format!("stdout {seen:?}, stderr {err}"));
                }
            }
        }
    }

    /// Completes one TLS handshake and preamble exchange with the server, so its accept loop
    /// (and with it the SIGTERM handler, installed on the loop's first poll) is running. The
    /// `listening on` line alone does not guarantee that (see cli.rs, the SIGTERM race test).
    pub fn wait_ready(&self) {
        let addr = self.socket_addr();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let raw = tokio::time::timeout(STEP, Raw::connect(addr)).await.expect("server not ready");
                drop(raw);
            })
        })
        .join()
        .expect("readiness probe");
    }

    /// Starts the server without the readiness probe: returns as soon as `listening on` is
    /// printed.
    pub fn start_unprobed(root: &Path, stderr_path: &Path) -> ServerProcess {
        let cwd = root.parent().unwrap_or(root);
        let mut cmd = xfer_cmd(cwd, cwd);
        cmd.arg("serve").arg("--root").arg(root).arg("--listen").arg("127.0.0.1:0");
        let err_file = std::fs::OpenOptions::new().create(true).append(true).open(stderr_path).unwrap();
        cmd.stdout(Stdio::piped()).stderr(Stdio::from(err_file));
        let mut guard = ChildGuard::spawn(cmd);
        let stdout = guard.child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("first stdout line");
        let addr = line
            .strip_prefix("xfer: listening on ")
            .expect("listening line")
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ServerProcess { guard, addr, stderr_path: stderr_path.to_path_buf(), lines: rx, stdout: vec![line] }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr.parse().unwrap()
    }

    /// Waits (bounded) for a stdout line containing `needle`.
    pub fn wait_stdout(&mut self, needle: &str, timeout: Duration) -> bool {
        if self.stdout.iter().any(|l| l.contains(needle)) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.stdout.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL, no chance to save anything.
    pub fn kill(&mut self) {
        self.guard.kill();
    }

    /// SIGTERM (graceful shutdown), then waits for exit.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.signal("-TERM")
    }

    /// Sends `signal` (e.g. `-INT`) and waits for the exit.
    pub fn signal(&mut self, signal: &str) -> Option<ExitStatus> {
        let status = Command::new("kill").arg(signal).arg(self.guard.id().to_string()).status().expect("kill");
        assert!(status.success(), "kill {signal} failed");
        self.guard.wait_timeout(STEP)
    }
}

/// Where a download to a local path is written until verified.
#[allow(unused_imports)]
pub use xfer::client::partial_path;
