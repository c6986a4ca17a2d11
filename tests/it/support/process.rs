//! Processes: the `xfer` binary as a client (CLI runs) and as a server (restart and crash
//! tests).

use super::*;

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
