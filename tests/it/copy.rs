//! `xfer cp` (CTRL-COPY-1): a copy inside the home is charged before it exists, replaces a file
//! (releasing its bytes) only once complete, goes into a directory target, and never reads
//! through a symlink leading out of the home.

use crate::support;

use support::*;

const PW: &str = "cp-pw";

fn usage(srv: &TestServer) -> (u64, u64, u64) {
    let u = srv.user("alice");
    (u.used_bytes, u.used_files, u.reserved_bytes)
}

#[test]
fn copies_inside_the_home_charged_like_an_upload() {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, 100 * KIB, None);
    let cli = |args: &[&str]| run(client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, args));
    make_file(&env.local("a"), 30_000, 1);
    cli(&["put", "a"]).assert_ok();
    cli(&["mkdir", "d"]).assert_ok();
    let home = srv.home("alice");
    assert_eq!(usage(&srv), (30_000, 2, 0));

    cli(&["cp", "a", "b"]).assert_ok();
    assert_eq!(md5_file(&home.join("b")), md5_file(&env.local("a")));
    assert_eq!(usage(&srv), (60_000, 3, 0));
    cli(&["cp", "a", "d"]).assert_ok();
    assert_eq!(md5_file(&home.join("d/a")), md5_file(&env.local("a")));
    assert_eq!(usage(&srv), (90_000, 4, 0));

    // Over an existing file: the old bytes go once the copy is in place.
    std::fs::write(home.join("small"), b"12345").unwrap();
    srv.state.store.adjust_usage("alice", 5, 1);
    let out = cli(&["cp", "a", "small"]);
    // 90 005 used + 30 000 reserved > 100 KiB: refused, the old file untouched, nothing held.
    out.assert_one_line_error();
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert_eq!(std::fs::read(home.join("small")).unwrap(), b"12345");
    assert_eq!(usage(&srv), (90_005, 5, 0));
    assert!(!home.join(".small.xfer-part").exists());
    cli(&["rm", "b"]).assert_ok();
    cli(&["cp", "a", "small"]).assert_ok();
    assert_eq!(usage(&srv), (90_000, 4, 0));
    assert_eq!(md5_file(&home.join("small")), md5_file(&env.local("a")));
}

#[test]
fn refuses_missing_sources_partials_and_escapes() {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, MIB, None);
    let cli = |args: &[&str]| run(client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, args));
    let home = srv.home("alice");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"s").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), home.join("link")).unwrap();
    std::fs::write(home.join(".p.xfer-part"), b"partial").unwrap();
    std::fs::write(home.join("f"), b"f").unwrap();
    for (args, code) in [
        (["cp", "missing", "x"], 4),
        (["cp", "link", "x"], 5),
        (["cp", ".p.xfer-part", "x"], 4),
        (["cp", "f", ".q.xfer-part"], 4),
        (["cp", "f", "f"], 4),
    ] {
        let out = cli(&args);
        out.assert_one_line_error();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
    }
    assert!(!home.join("x").exists());
    assert_eq!(srv.user("alice").reserved_bytes, 0);
}
