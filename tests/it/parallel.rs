//! `-j/--parallel`: the files of one command travel over several sessions of the same login at
//! once, every file arrives verified, errors are collected with `--keep-going`, and a session
//! cap smaller than `-j` only means fewer sessions.

use crate::support;

use std::time::Duration;

use support::flights::FlightProxy;
use support::*;

const PW: &str = "par-pw";

fn tree(root: &std::path::Path, files: usize) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    for i in 0..files {
        let dir = if i % 3 == 0 { "sub/" } else { "" };
        make_file(&root.join(format!("{dir}f{i}")), 2000 + i * 10, i as u64);
    }
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
    tree(&src, 24);

    let before = proxy.connections();
    cli(&["put", "-r", "-j", "4", "t"]).assert_ok();
    assert_eq!(proxy.connections(), before + 1 + 4, "the command's session plus four workers");
    for f in dir_names(&src).into_iter().filter(|f| f != "sub") {
        assert_eq!(md5_file(&srv.home("alice").join("t").join(&f)), md5_file(&src.join(&f)), "{f}");
    }
    assert_eq!(dir_names(&srv.home("alice").join("t/sub")), dir_names(&src.join("sub")));

    let before = proxy.connections();
    cli(&["get", "-r", "-j", "3", "t", "back"]).assert_ok();
    assert_eq!(proxy.connections(), before + 1 + 3);
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

    let out = cli(&["get", "-r", "-j", "2", "d", "got2"]);
    out.assert_one_line_error();
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
    tree(&src, 12);
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
    let mut cmd = xfer_cmd(&env.config_dir, &env.work);
    cmd.args(["user", "add", "alice", "--quota", "64MiB", "--root"]).arg(&env.root).env("XFER_PASSWORD", PW);
    run(cmd).assert_ok();
    let log = env.tmp.path().join("server.log");
    let srv = ServerProcess::start(&env.root, "127.0.0.1:0", &log, &[]);
    let cli = |args: &[&str]| run(client_cmd(&srv.addr, "alice", PW, &env.config_dir, &env.work, args));
    let src = env.local("t");
    tree(&src, 48);
    cli(&["put", "-r", "-j", "16", "t"]).assert_ok();
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
