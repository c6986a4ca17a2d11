//! `xfer cp` (CTRL-COPY-1): a copy inside the home is charged before it exists, replaces a file
//! (releasing its bytes) only once complete, goes into a directory target, and never reads
//! through a symlink leading out of the home. `cp -p` keeps the source's mtime and mode; plain
//! `cp` gives the copy the time of its making, as cp does; a symlink source is refused.

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
        (["cp", "link", "x"], 4),
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

fn mtime(path: &std::path::Path) -> i64 {
    std::os::unix::fs::MetadataExt::mtime(&std::fs::metadata(path).unwrap())
}

fn mode(path: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

/// A fixed past modification time, so a kept mtime cannot be a coincidence.
const OLD: i64 = 1_000_000_000;

/// CTRL-COPY-1, CTRL-ATTR-1: `cp -p` sets the source's mtime and mode on the copy (into a
/// directory too); plain `cp` leaves the copy with the time of its making and the server's mode.
#[test]
fn cp_p_keeps_the_mtime_and_mode_and_plain_cp_does_not() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, MIB, None);
    let cli = |args: &[&str]| run(client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, args));
    let home = srv.home("alice");
    std::fs::create_dir(home.join("d")).unwrap();
    make_file(&home.join("src"), 70_000, 3);
    std::fs::set_permissions(home.join("src"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(home.join("src"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(OLD as u64))
        .unwrap();
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;

    cli(&["cp", "-p", "src", "kept"]).assert_ok();
    assert_eq!(md5_file(&home.join("kept")), md5_file(&home.join("src")));
    assert_eq!(mtime(&home.join("kept")), OLD, "cp -p keeps the mtime");
    assert_eq!(mode(&home.join("kept")), 0o640, "cp -p keeps the mode");
    cli(&["cp", "--preserve", "src", "d"]).assert_ok();
    assert_eq!((mtime(&home.join("d/src")), mode(&home.join("d/src"))), (OLD, 0o640), "into a directory");

    cli(&["cp", "src", "fresh"]).assert_ok();
    assert!(mtime(&home.join("fresh")) >= before, "without -p the copy has the time of its making");
    assert_ne!(mode(&home.join("fresh")), 0o640, "without -p the mode is the server's");
    assert_eq!(mtime(&home.join("src")), OLD, "the source is untouched");
}

/// `cp` never follows a symlink, even one that stays inside the home; the server itself still
/// refuses a link leading out (CTRL-PATH-4) when asked directly.
#[tokio::test]
async fn cp_refuses_a_symlink_source_with_a_clear_error() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let home = srv.home("alice");
        std::fs::write(home.join("f"), b"inside").unwrap();
        std::os::unix::fs::symlink("f", home.join("inner")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), home.join("out")).unwrap();
        for (link, flags) in [("inner", &[][..]), ("inner", &["-p"][..]), ("out", &[][..])] {
            let mut args = vec!["cp"];
            args.extend_from_slice(flags);
            args.extend([link, "x"]);
            let out = run(client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, &args));
            let line = out.assert_one_line_error();
            assert!(line.contains("a symlink; cp never follows one"), "{line}");
            assert_eq!(out.status.code(), Some(4), "{args:?}: {out:?}");
        }
        assert!(!home.join("x").exists());
        let mut raw = srv.raw("alice", PW).await;
        raw.send(&xfer::proto::Request::Copy { from: "out".into(), to: "x".into() }).await;
        raw.expect_error(xfer::proto::ErrorCode::PathEscapes).await;
        assert!(!home.join("x").exists());
        assert_eq!(srv.user("alice").reserved_bytes, 0);
    })
    .await
}
