//! `-j/--parallel`: the files of one command travel over several sessions of the same login at
//! once, every file arrives verified, errors are collected with `--keep-going`, and a session
//! cap smaller than `-j` only means fewer sessions.

use crate::support;

use std::time::Duration;

use support::flights::FlightProxy;
use support::*;
use xfer::client::SMALL_TRANSFER_MAX;

const PW: &str = "par-pw";

/// `files` files in `root` and `root/sub`. `larger` makes each bigger than a small transfer:
/// one session would take a whole tree of small files on the wire at once (CTRL-PUT-8), so
/// the tests that count sessions use files that go one at a time.
fn tree(root: &std::path::Path, files: usize, larger: bool) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let base = if larger { SMALL_TRANSFER_MAX as usize + 1 } else { 2000 };
    for i in 0..files {
        let dir = if i % 3 == 0 { "sub/" } else { "" };
        make_file(&root.join(format!("{dir}f{i}")), base + i * 10, i as u64);
    }
}

/// alice (64 MiB) in `env`'s root, created by `xfer user add`, served by a real `xfer serve`
/// process whose log the tests read.
fn alice_on_a_server_process(env: &TestEnv) -> ServerProcess {
    let mut cmd = xfer_cmd(&env.config_dir, &env.work);
    let init: &[&str] = if env.root.join("xfer.toml").exists() { &[] } else { &["--init"] };
    cmd.args(["user", "add", "alice", "--quota", "64MiB"]).args(init).arg("--root").arg(&env.root);
    cmd.env("XFER_PASSWORD", PW);
    run(cmd).assert_ok();
    ServerProcess::start(&env.root, "127.0.0.1:0", &env.tmp.path().join("server.log"), &[])
}

#[test]
fn put_and_get_r_with_j_use_that_many_sessions_and_move_every_file() {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, 64 * MIB, None);
    let proxy = FlightProxy::start(srv.addr, Duration::from_millis(20));
    let cli = |args: &[&str]| run(client_cmd(&proxy.addr_string(), "alice", PW, &env.config_dir, &env.work, args));
    cli(&["pwd"]).assert_ok();
    let src = env.local("t");
    tree(&src, 24, true);

    let before = proxy.connections();
    cli(&["put", "-r", "-j", "4", "t"]).assert_ok();
    assert_eq!(proxy.connections(), before + 4, "the command's own session and three more");
    for f in dir_names(&src).into_iter().filter(|f| f != "sub") {
        assert_eq!(md5_file(&srv.home("alice").join("t").join(&f)), md5_file(&src.join(&f)), "{f}");
    }
    assert_eq!(dir_names(&srv.home("alice").join("t/sub")), dir_names(&src.join("sub")));

    let before = proxy.connections();
    cli(&["get", "-r", "-j", "3", "t", "back"]).assert_ok();
    assert_eq!(proxy.connections(), before + 3);
    for f in ["f1", "f23", "sub/f0", "sub/f21"] {
        assert_eq!(md5_file(&env.local("back").join(f)), md5_file(&src.join(f)), "{f}");
    }
    let before = proxy.connections();
    cli(&["get", "-r", "-j", "1", "t", "back1"]).assert_ok();
    assert_eq!(proxy.connections(), before + 1, "-j 1: one session");
    assert_eq!(dir_names(&env.local("back1/sub")), dir_names(&src.join("sub")));
}

#[test]
fn keep_going_tries_every_file_and_exits_15_with_a_summary() {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, 64 * MIB, None);
    let cli = |args: &[&str]| run(client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, args));
    let d = srv.home("alice").join("d");
    std::fs::create_dir(&d).unwrap();
    for i in 0..6 {
        make_file(&d.join(format!("ok{i}")), 3000, i);
    }
    // A hard-linked file is refused by the server (PermissionDenied), both of its names.
    make_file(&d.join("h"), 100, 9);
    std::fs::hard_link(d.join("h"), d.join("h2")).unwrap();

    let out = cli(&["get", "-r", "-k", "-j", "2", "d", "got"]);
    assert_eq!(out.status.code(), Some(15), "{out:?}");
    let failures: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("xfer: ")).collect();
    assert_eq!(failures.len(), 3, "two files and the summary: {out:?}");
    assert!(failures.last().unwrap().contains("2 of 8 files failed"), "{out:?}");
    for i in 0..6 {
        assert_eq!(md5_file(&env.local("got").join(format!("ok{i}"))), md5_file(&d.join(format!("ok{i}"))));
    }
    assert!(!env.local("got/h").exists() && !env.local("got/h2").exists());

    // Without -k the first failure stops new transfers; those already sent ahead of it
    // (CTRL-GET-6) still finish, and only the failure is an error line.
    let out = cli(&["get", "-r", "-j", "2", "d", "got2"]);
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("xfer: ")).collect();
    assert_eq!(errors.len(), 1, "{out:?}");
    assert_eq!(out.status.code(), Some(5), "the first failure's own code: {out:?}");
}

#[test]
fn a_session_cap_below_j_means_fewer_sessions_not_failures() {
    let env = TestEnv::new();
    env.configure(&[("max_sessions_per_user", "2")]);
    let srv = env.start();
    srv.add_user("alice", PW, 64 * MIB, None);
    let cli = |args: &[&str]| run(client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, args));
    let src = env.local("t");
    tree(&src, 12, false);
    cli(&["put", "-r", "-j", "8", "t"]).assert_ok();
    for f in ["f1", "f11", "sub/f0", "sub/f9"] {
        assert_eq!(md5_file(&srv.home("alice").join("t").join(f)), md5_file(&src.join(f)), "{f}");
    }
}

/// CTRL-SESS-5: the server closes connections of one client address beyond
/// `max_pending_logins_per_ip` waiting for their login; the workers of `-j` connect a few at a
/// time, so a `-j` above that cap still moves files over `-j` sessions.
#[test]
fn j_above_the_pending_login_cap_still_gets_that_many_sessions() {
    let env = TestEnv::new();
    env.configure(&[("max_pending_logins_per_ip", "10")]);
    let srv = alice_on_a_server_process(&env);
    let cli = |args: &[&str]| run(client_cmd(&srv.addr, "alice", PW, &env.config_dir, &env.work, args));
    let src = env.local("t");
    tree(&src, 48, true);
    // Each file takes a while (130 KB at 1 MB/s), so every session is still wanted when the
    // last of them, which wait for a login slot, have connected.
    cli(&["put", "-r", "-j", "16", "--rate-limit", "1M", "t"]).assert_ok();
    for f in ["f1", "f47", "sub/f0", "sub/f45"] {
        assert_eq!(md5_file(&env.root.join("homes/alice/t").join(f)), md5_file(&src.join(f)), "{f}");
    }
    // The sessions that uploaded, by client address and port.
    let stderr = srv.stderr();
    let peers: std::collections::HashSet<&str> = stderr
        .lines()
        .filter(|l| l.contains("event=\"put\""))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("peer=")))
        .collect();
    assert_eq!(peers.len(), 16, "sessions that uploaded: {peers:?}");
}

/// CTRL-PUT-8 with QUOTA-1: small uploads sent ahead of each other's replies cannot overrun
/// the quota together; each one refused is reported, the session stays in step, and every
/// file that landed is whole.
#[test]
fn small_uploads_in_flight_together_stop_at_the_quota_and_report_each_refusal() {
    let env = TestEnv::new();
    let srv = env.start();
    let quota = 100 * 1024;
    srv.add_user("alice", PW, quota, None);
    let cli = |args: &[&str]| run(client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, args));
    let src = env.local("q");
    std::fs::create_dir(&src).unwrap();
    let files = 60;
    for i in 0..files {
        make_file(&src.join(format!("f{i:02}")), 4096, i as u64);
    }
    let out = cli(&["put", "-r", "-k", "-j", "1", "q"]);
    assert_eq!(out.status.code(), Some(15), "{out:?}");
    let landed: Vec<String> = dir_names(&srv.home("alice").join("q"));
    assert!(!landed.is_empty() && landed.len() < files, "{landed:?}");
    let used: u64 = landed.iter().map(|f| file_len(&srv.home("alice").join("q").join(f)).unwrap()).sum();
    assert!(used <= quota, "{used} bytes stored under a quota of {quota}");
    for f in &landed {
        assert_eq!(md5_file(&srv.home("alice").join("q").join(f)), md5_file(&src.join(f)), "{f}");
    }
    let refused = out.stderr.lines().filter(|l| l.starts_with("xfer: ") && l.contains("quota")).count();
    assert_eq!(refused, files - landed.len(), "one report per refused file: {out:?}");
    let summary = format!("{} of {files} files failed", files - landed.len());
    assert!(out.stderr.contains(&summary), "{summary}: {out:?}");
    // The sessions stayed in step: the next command on the same login works.
    cli(&["ls", "q"]).assert_ok();
}

/// CTRL-PUT-8: a connection lost while small uploads are in flight. With `--keep-going` the
/// upload whose reply was lost is reported, and those sent behind it, never answered, go again
/// on a new session: every other file lands, none twice reported.
#[test]
fn uploads_in_flight_on_a_lost_connection_go_again_on_a_new_session() {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, 64 * MIB, None);
    let relay = CuttingRelay::start(srv.addr, 96 * 1024);
    let cli = |args: &[&str]| run(client_cmd(&relay.addr, "alice", PW, &env.config_dir, &env.work, args));
    cli(&["pwd"]).assert_ok();
    let src = env.local("c");
    std::fs::create_dir(&src).unwrap();
    let files = 150;
    for i in 0..files {
        make_file(&src.join(format!("f{i:03}")), 3000, i as u64);
    }
    let out = cli(&["put", "-r", "-k", "-j", "2", "c"]);
    assert_eq!(relay.cut.load(std::sync::atomic::Ordering::SeqCst), 1, "one connection was cut");
    let failed: Vec<&str> =
        out.stderr.lines().filter(|l| l.starts_with("xfer: ") && !l.contains("files failed")).collect();
    assert!(failed.len() <= 1, "at most the upload whose reply was lost fails: {out:?}");
    let expected = if failed.is_empty() { 0 } else { 15 };
    assert_eq!(out.status.code(), Some(expected), "{out:?}");
    let home = srv.home("alice").join("c");
    let missing: Vec<String> = (0..files).map(|i| format!("f{i:03}")).filter(|f| !home.join(f).exists()).collect();
    assert!(missing.len() <= failed.len(), "files lost with the connection: {missing:?}; {out:?}");
    // The upload cut in the middle keeps its partial, resumable (CTRL-PUT-5).
    for f in dir_names(&home).into_iter().filter(|f| !f.ends_with(".xfer-part")) {
        assert_eq!(md5_file(&home.join(&f)), md5_file(&src.join(&f)), "{f}");
    }
}

/// A TCP relay that closes the first connection to carry more than `limit` bytes towards the
/// server, both ways at once, and relays every other connection untouched.
struct CuttingRelay {
    addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _thread: std::thread::JoinHandle<()>,
}

impl CuttingRelay {
    fn start(server: std::net::SocketAddr, limit: u64) -> CuttingRelay {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = std::sync::Arc::new(AtomicUsize::new(0));
        let cuts = cut.clone();
        let thread = std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                let Ok(outbound) = std::net::TcpStream::connect(server) else { continue };
                let (i2, o2) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                let cuts = cuts.clone();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut &o2, &mut &i2);
                    let _ = i2.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    let mut carried = 0u64;
                    loop {
                        let n = match std::io::Read::read(&mut &inbound, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        carried += n as u64;
                        if carried > limit && cuts.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                            break;
                        }
                        if std::io::Write::write_all(&mut &outbound, &buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = inbound.shutdown(std::net::Shutdown::Both);
                    let _ = outbound.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingRelay { addr, cut, _thread: thread }
    }
}

/// The other `-j` sessions connect while the tree is walked but send their logins with their
/// first files: a tree that one session moves alone costs the server one password check, and
/// one that keeps all of them busy one per session.
#[test]
fn sessions_opened_ahead_log_in_only_when_they_get_files() {
    let env = TestEnv::new();
    let srv = alice_on_a_server_process(&env);
    let cli = |args: &[&str]| run(client_cmd(&srv.addr, "alice", PW, &env.config_dir, &env.work, args));
    let logins = || srv.stderr().lines().filter(|l| l.contains("event=\"login\"")).count();
    std::fs::create_dir(env.local("one")).unwrap();
    make_file(&env.local("one/f"), 100, 1);
    cli(&["put", "-r", "-j", "4", "one"]).assert_ok();
    assert_eq!(std::fs::read(env.root.join("homes/alice/one/f")).unwrap(), std::fs::read(env.local("one/f")).unwrap());
    assert!(wait_until_blocking(Duration::from_secs(5), || logins() >= 1));
    assert_eq!(logins(), 1, "one file: only the command's own session logs in");
    let src = env.local("t");
    tree(&src, 24, true);
    // Files that take a while each (130 KB at 1 MB/s): every session is still wanted when it
    // has connected.
    cli(&["put", "-r", "-j", "4", "--rate-limit", "1M", "t"]).assert_ok();
    assert!(wait_until_blocking(Duration::from_secs(5), || logins() >= 5));
    assert_eq!(logins(), 1 + 4, "a busy tree: every session logs in");
}
