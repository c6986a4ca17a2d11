//! Attributes, trees and globs through the `xfer` binary: put and get keep the mtime (and the
//! mode with -p), `xfer sync` in both directions, remote globs expanded by the server, and the
//! round trips of a sync with nothing to do. Real servers, real files, real symlinks.

use crate::support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use support::flights::FlightProxy;
use support::*;
use xfer::proto::{ErrorCode, Request, Response};

const PW: &str = "sync-pw";
/// A fixed past modification time, far from "now", so a kept mtime cannot be a coincidence.
const OLD: i64 = 1_000_000_000;

fn setup() -> (TestEnv, TestServer) {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, 64 * MIB, None);
    (env, srv)
}

fn cli(env: &TestEnv, srv: &TestServer, args: &[&str]) -> Out {
    run(client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, args))
}

fn exit_code(out: &Out) -> Option<i32> {
    out.status.code()
}

fn set_mtime(path: &Path, secs: i64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs as u64)).unwrap();
}

fn mtime(path: &Path) -> i64 {
    std::fs::metadata(path).unwrap().mtime()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// CTRL-ATTR-1, CTRL-ATTR-2, CTRL-ATTR-3: small (inline) and large files, over TCP and UDP.
#[test]
fn put_and_get_keep_the_mtime_and_with_p_the_mode() {
    let (env, srv) = setup();
    let home = srv.home("alice");
    for (name, size, transport) in [("small", 5_000, "auto"), ("big-tcp", 300_000, "tcp"), ("big-udp", 300_000, "udp")]
    {
        let local = env.local(name);
        make_file(&local, size, 7);
        set_mtime(&local, OLD);
        std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o640)).unwrap();
        cli(&env, &srv, &["put", name, "--transport", transport]).assert_ok();
        assert_eq!(mtime(&home.join(name)), OLD, "put {name} keeps the mtime");
        let kept = format!("{name}-p");
        cli(&env, &srv, &["put", "-p", name, &kept, "--transport", transport]).assert_ok();
        assert_eq!(mode(&home.join(&kept)), 0o640, "put -p {name} keeps the mode");

        std::fs::set_permissions(home.join(&kept), std::fs::Permissions::from_mode(0o604)).unwrap();
        set_mtime(&home.join(&kept), OLD + 60);
        let back = format!("{name}-back");
        cli(&env, &srv, &["get", &kept, &back, "--transport", transport]).assert_ok();
        assert_eq!(mtime(&env.local(&back)), OLD + 60, "get {name} keeps the mtime");
        assert_ne!(mode(&env.local(&back)), 0o604, "without -p the mode is the local default");
        let back_p = format!("{name}-back-p");
        cli(&env, &srv, &["get", "-p", &kept, &back_p, "--transport", transport]).assert_ok();
        assert_eq!(mode(&env.local(&back_p)), 0o604, "get -p {name} keeps the mode");
        assert_eq!(md5_file(&env.local(&back_p)), md5_file(&local));
    }
}

/// CTRL-ATTR-1: set-id bits are never set, and the owner keeps read and write.
#[test]
fn put_p_never_sets_set_id_bits_nor_takes_the_owners_access() {
    let (env, srv) = setup();
    let local = env.local("locked");
    make_file(&local, 100, 1);
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o4000)).unwrap();
    cli(&env, &srv, &["put", "-p", "locked"]).assert_ok();
    let m = std::fs::metadata(srv.home("alice").join("locked")).unwrap().permissions().mode();
    assert_eq!(m & 0o7777, 0o600, "mode {m:o}");
}

/// CTRL-ATTR-2: attributes sent behind a refused upload do not land on the old file.
#[test]
fn attributes_behind_a_refused_upload_change_nothing() {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, 20 * KIB, None);
    let old = srv.home("alice").join("x");
    std::fs::write(&old, b"old").unwrap();
    set_mtime(&old, OLD);
    make_file(&env.local("x"), 30_000, 2);
    let out = cli(&env, &srv, &["put", "x"]);
    out.assert_one_line_error();
    assert_eq!(exit_code(&out), Some(6), "quota exceeded: {out:?}");
    assert_eq!(std::fs::read(&old).unwrap(), b"old");
    assert_eq!(mtime(&old), OLD, "the old file keeps its mtime");
    // The session stayed in step: the next command on a fresh connection works too.
    cli(&env, &srv, &["ls"]).assert_ok();
}

/// CTRL-ATTR-2: `upload_md5` that no committed upload of this session matches is refused.
#[tokio::test]
async fn rejects_attributes_for_an_upload_that_did_not_commit() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let file = srv.home("alice").join("f");
        std::fs::write(&file, b"data").unwrap();
        set_mtime(&file, OLD);
        let mut raw = srv.raw("alice", PW).await;
        let req = Request::SetAttrs { path: "f".into(), mtime: 5, mode: None, upload_md5: Some([7; 16]) };
        raw.send(&req).await;
        raw.expect_error(ErrorCode::SourceChanged).await;
        assert_eq!(mtime(&file), OLD);
        let req = Request::SetAttrs { path: "f".into(), mtime: OLD + 1, mode: None, upload_md5: None };
        assert_eq!(raw.call(&req).await, Response::Ok);
        assert_eq!(mtime(&file), OLD + 1);
        // Partial names belong to the server (QUOTA-4).
        std::fs::write(srv.home("alice").join(".g.xfer-part"), b"p").unwrap();
        raw.send(&Request::SetAttrs { path: ".g.xfer-part".into(), mtime: 1, mode: None, upload_md5: None }).await;
        raw.expect_error(ErrorCode::InvalidPath).await;
    })
    .await
}

/// CTRL-TREE-1: one request lists the tree; symlinks are described, never followed.
#[tokio::test]
async fn walk_lists_the_whole_tree_parents_first_without_following_symlinks() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let home = srv.home("alice");
        std::fs::create_dir_all(home.join("d/e")).unwrap();
        std::fs::write(home.join("d/e/c"), b"ccc").unwrap();
        std::fs::write(home.join("a"), b"a").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), home.join("d/out")).unwrap();
        let mut c = srv.connect("alice", PW).await;
        let paths: Vec<String> = c.walk("/").await.unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["a", "d", "d/e", "d/out", "d/e/c"]);
        let entries = c.walk("d").await.unwrap();
        let out = entries.iter().find(|e| e.path == "out").unwrap();
        assert_eq!(out.kind, xfer::proto::EntryKind::Symlink);
        assert!(entries.iter().all(|e| !e.path.contains("secret")), "{entries:?}");
        let one = c.walk("a").await.unwrap();
        assert_eq!((one.len(), one[0].path.as_str(), one[0].size), (1, "a", 1));
        assert_eq!(code_of(c.walk("nope").await), ErrorCode::NotFound);
        let link = c.walk("d/out").await.unwrap();
        assert_eq!(link.len(), 1, "a symlink is described, not walked: {link:?}");
        assert_eq!(link[0].kind, xfer::proto::EntryKind::Symlink);
    })
    .await
}

/// A tree as `(relative path, content)` pairs for files, `None` for directories.
fn tree_of(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
                out.push((rel, None));
            } else if ft.is_file() && !rel.ends_with(".xfer-part") {
                out.push((rel, Some(std::fs::read(e.path()).unwrap())));
            }
        }
    }
    out.sort();
    out
}

fn json_summary(out: &Out) -> serde_json::Value {
    let line = out.stdout.lines().last().unwrap_or_else(|| panic!("no JSON: {out:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    make_file(&root.join("a"), 4096, 1);
    make_file(&root.join("d/b"), 10_000, 2);
    make_file(&root.join("d/e/c"), 200_000, 3);
    for f in ["a", "d/b", "d/e/c"] {
        set_mtime(&root.join(f), OLD);
    }
}

#[test]
fn sync_pushes_what_differs_keeps_mtimes_and_deletes_only_when_asked() {
    let (env, srv) = setup();
    let src = env.local("src");
    make_tree(&src);
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
    let home = srv.home("alice");
    let out = cli(&env, &srv, &["--json", "sync", "src", ":dst"]);
    let s = json_summary(out.assert_ok());
    assert_eq!((s["copied"].as_u64(), s["mkdirs"].as_u64()), (Some(3), Some(2)), "{s}");
    assert_eq!(tree_of(&home.join("dst")), tree_of(&src).into_iter().filter(|e| e.0 != "link").collect::<Vec<_>>());
    assert_eq!(mtime(&home.join("dst/d/e/c")), OLD, "sync keeps the mtime");
    assert!(std::fs::symlink_metadata(home.join("dst/link")).is_err(), "symlinks are not followed");

    let s = json_summary(cli(&env, &srv, &["--json", "sync", "src", ":dst"]).assert_ok());
    assert_eq!((s["copied"].as_u64(), s["unchanged"].as_u64()), (Some(0), Some(3)), "{s}");

    // Same size, new content and mtime: copied. Same size and mtime, new content: skipped
    // unless --checksum.
    make_file(&src.join("a"), 4096, 9);
    let s = json_summary(cli(&env, &srv, &["--json", "sync", "src", ":dst"]).assert_ok());
    assert_eq!(s["copied"].as_u64(), Some(1), "{s}");
    assert_eq!(std::fs::read(home.join("dst/a")).unwrap(), std::fs::read(src.join("a")).unwrap());
    make_file(&src.join("d/b"), 10_000, 8);
    set_mtime(&src.join("d/b"), OLD);
    let s = json_summary(cli(&env, &srv, &["--json", "sync", "src", ":dst"]).assert_ok());
    assert_eq!(s["copied"].as_u64(), Some(0), "size and mtime match: {s}");
    let s = json_summary(cli(&env, &srv, &["--json", "sync", "--checksum", "src", ":dst"]).assert_ok());
    assert_eq!(s["copied"].as_u64(), Some(1), "md5 differs: {s}");
    assert_eq!(md5_file(&home.join("dst/d/b")), md5_file(&src.join("d/b")));

    // Extra remote entries stay without --delete; --dry-run only prints.
    std::fs::create_dir(home.join("dst/zz")).unwrap();
    std::fs::write(home.join("dst/zz/z"), b"z").unwrap();
    cli(&env, &srv, &["sync", "src", ":dst"]).assert_ok();
    assert!(home.join("dst/zz/z").exists());
    let out = cli(&env, &srv, &["sync", "--delete", "--dry-run", "src", ":dst"]);
    assert!(out.assert_ok().stdout.contains("would delete zz/z"), "{out:?}");
    assert!(home.join("dst/zz/z").exists(), "dry run changed nothing");
    let s = json_summary(cli(&env, &srv, &["--json", "sync", "--delete", "src", ":dst"]).assert_ok());
    assert_eq!(s["deleted"].as_u64(), Some(2), "{s}");
    assert!(!home.join("dst/zz").exists());
}

#[test]
fn sync_pulls_into_a_local_directory_and_keeps_mtimes() {
    let (env, srv) = setup();
    let home = srv.home("alice");
    make_tree(&home.join("remote"));
    let out = cli(&env, &srv, &["--json", "sync", ":remote", "copy"]);
    let s = json_summary(out.assert_ok());
    assert_eq!(s["copied"].as_u64(), Some(3), "{s}");
    let local = env.local("copy");
    assert_eq!(tree_of(&local), tree_of(&home.join("remote")));
    assert_eq!(mtime(&local.join("d/e/c")), OLD);
    let s = json_summary(cli(&env, &srv, &["--json", "sync", ":remote", "copy"]).assert_ok());
    assert_eq!((s["copied"].as_u64(), s["unchanged"].as_u64()), (Some(0), Some(3)), "{s}");

    // --delete removes local extras, a symlink as a link (its target is left alone).
    let keep = env.local("keep-me");
    std::fs::write(&keep, b"k").unwrap();
    std::os::unix::fs::symlink(&keep, local.join("ln")).unwrap();
    std::fs::write(local.join("extra"), b"x").unwrap();
    let out = cli(&env, &srv, &["sync", "--delete", "-n", ":remote", "copy"]);
    assert!(out.assert_ok().stdout.contains("would delete extra"), "{out:?}");
    assert!(local.join("extra").exists());
    cli(&env, &srv, &["sync", "--delete", ":remote", "copy"]).assert_ok();
    assert!(!local.join("extra").exists() && std::fs::symlink_metadata(local.join("ln")).is_err());
    assert_eq!(std::fs::read(&keep).unwrap(), b"k");

    // A local FIFO where a file should go is never replaced.
    std::fs::remove_file(local.join("a")).unwrap();
    let status = std::process::Command::new("mkfifo").arg(local.join("a")).status().unwrap();
    assert!(status.success());
    let out = cli(&env, &srv, &["sync", ":remote", "copy"]);
    out.assert_one_line_error();
    assert_eq!(exit_code(&out), Some(12), "not replaced: {out:?}");
    assert!(std::fs::symlink_metadata(local.join("a")).unwrap().file_type().is_fifo());
}

#[test]
fn sync_needs_one_remote_side_and_a_source_directory() {
    let (env, srv) = setup();
    std::fs::create_dir(env.local("l")).unwrap();
    let out = cli(&env, &srv, &["sync", "l", "m"]);
    out.assert_one_line_error();
    assert_eq!(exit_code(&out), Some(2));
    let out = cli(&env, &srv, &["sync", ":missing", "l"]);
    out.assert_one_line_error();
    assert_eq!(exit_code(&out), Some(4));
    let out = cli(&env, &srv, &["sync", "missing", ":x"]);
    out.assert_one_line_error();
    assert_eq!(exit_code(&out), Some(3));
}

/// `--keep-going` goes past a failed file and exits 15 with a summary; without it the first
/// failure stops the sync.
#[test]
fn sync_keep_going_collects_errors_and_exits_non_zero() {
    let (env, srv) = setup();
    let home = srv.home("alice");
    let src = env.local("src");
    make_tree(&src);
    // A directory on the server where the source has the file `a`: a conflict.
    std::fs::create_dir_all(home.join("dst/a")).unwrap();
    let out = cli(&env, &srv, &["sync", "src", ":dst"]);
    out.assert_one_line_error();
    assert!(!home.join("dst/d/b").exists(), "stopped at the first failure");
    let out = cli(&env, &srv, &["--json", "sync", "-k", "src", ":dst"]);
    assert_eq!(exit_code(&out), Some(15), "{out:?}");
    let summary: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!((summary["copied"].as_u64(), summary["failed"].as_u64()), (Some(2), Some(1)), "{summary}");
    assert!(home.join("dst/d/e/c").exists());
}

/// CTRL-GLOB-1: patterns are expanded by the server, `*` stops at `/`, dotfiles and partials
/// stay hidden, and nothing is found through a symlink leading out of the home.
#[test]
fn remote_globs_are_expanded_inside_the_home() {
    let (env, srv) = setup();
    let home = srv.home("alice");
    std::fs::create_dir_all(home.join("logs/old")).unwrap();
    for f in ["logs/a.log", "logs/b.log", "logs/c.txt", "logs/.h.log", "logs/old/z.log"] {
        std::fs::write(home.join(f), f.as_bytes()).unwrap();
    }
    std::fs::write(home.join("logs/.p.log.xfer-part"), b"partial").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.log"), b"s").unwrap();
    std::os::unix::fs::symlink(outside.path(), home.join("logs/out")).unwrap();

    let out = cli(&env, &srv, &["ls", "logs/*.log"]);
    let names: Vec<&str> = out.assert_ok().stdout.lines().collect();
    assert_eq!(names, ["/logs/a.log", "/logs/b.log"], "{out:?}");
    let out = cli(&env, &srv, &["ls", "/**/*.log"]);
    let text = &out.assert_ok().stdout;
    assert!(text.contains("/logs/old/z.log") && !text.contains("secret") && !text.contains(".h.log"), "{text}");

    std::fs::create_dir(env.local("got")).unwrap();
    cli(&env, &srv, &["get", "logs/*.log", "got/"]).assert_ok();
    assert_eq!(dir_names(&env.local("got")), ["a.log", "b.log"]);
    assert_eq!(std::fs::read(env.local("got/a.log")).unwrap(), b"logs/a.log");

    cli(&env, &srv, &["rm", "logs/?.log"]).assert_ok();
    assert!(!home.join("logs/a.log").exists() && !home.join("logs/b.log").exists());
    assert!(home.join("logs/c.txt").exists() && home.join("logs/.h.log").exists());

    let out = cli(&env, &srv, &["ls", "logs/*.nothing"]);
    out.assert_one_line_error();
    assert_eq!(exit_code(&out), Some(4), "no match: {out:?}");
    let out = cli(&env, &srv, &["ls", "../*"]);
    out.assert_one_line_error();
    assert_eq!(exit_code(&out), Some(5), "escape: {out:?}");
    let out = cli(&env, &srv, &["ls", "logs/out/*"]);
    out.assert_one_line_error();
    assert!(!out.stdout.contains("secret"));
}

/// CTRL-GLOB-2: past the match bound the server refuses, never cuts the list; exit code 14.
#[test]
fn refuses_a_glob_with_too_many_matches() {
    let (env, srv) = setup();
    let dir = srv.home("alice").join("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..10_001 {
        std::fs::File::create(dir.join(format!("f{i}"))).unwrap();
    }
    let out = cli(&env, &srv, &["ls", "many/f*"]);
    let line = out.assert_one_line_error();
    assert_eq!(exit_code(&out), Some(14), "{line}");
    assert!(line.contains("10000"), "{line}");
    cli(&env, &srv, &["ls", "many/f1000?"]).assert_ok();
}

/// CTRL-TREE-1: a sync with nothing to do lists the remote tree with one request, so its
/// round trips do not grow with the number of files.
#[test]
fn a_no_change_sync_takes_a_few_round_trips_whatever_the_file_count() {
    let (env, srv) = setup();
    let proxy = FlightProxy::start(srv.addr, Duration::from_millis(200));
    let remote = |args: &[&str]| run(client_cmd(&proxy.addr_string(), "alice", PW, &env.config_dir, &env.work, args));
    let src = env.local("many");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..300 {
        let dir = if i % 2 == 0 { "" } else { "sub/" };
        make_file(&src.join(format!("{dir}f{i}")), 512, i);
    }
    remote(&["pwd"]).assert_ok();
    direct(&env, &srv, &["sync", "many", ":many"]);
    let before = proxy.connections();
    let out = remote(&["--json", "sync", "many", ":many"]);
    let s = json_summary(out.assert_ok());
    assert_eq!((s["copied"].as_u64(), s["unchanged"].as_u64()), (Some(0), Some(300)), "{s}");
    assert_eq!(proxy.connections(), before + 1);
    let n = proxy.last().round_trips();
    // TCP, TLS, login with Stat, Walk.
    assert!(n <= 5, "a no-change sync of 300 files took {n} round trips: {:?}", proxy.last());
}

fn direct(env: &TestEnv, srv: &TestServer, args: &[&str]) {
    cli(env, srv, args).assert_ok();
}

/// `sync -L`: a local source with a symlink to a file, one to a directory, a dangling link and
/// a link loop. Without -L all four are skipped with a note (exit 0); with -L the targets'
/// contents are copied under the links' names, and the dangling link and the loop are skipped.
#[test]
fn sync_skips_local_symlinks_unless_l_follows_them_and_ends_on_a_loop() {
    let (env, srv) = setup();
    let home = srv.home("alice");
    let src = env.local("src");
    make_tree(&src);
    let outside = env.local("outside");
    std::fs::create_dir_all(outside.join("dir/sub")).unwrap();
    make_file(&outside.join("f.txt"), 7_000, 4);
    make_file(&outside.join("dir/sub/g"), 300_000, 5);
    set_mtime(&outside.join("f.txt"), OLD + 7);
    std::os::unix::fs::symlink(outside.join("f.txt"), src.join("to-file")).unwrap();
    std::os::unix::fs::symlink(outside.join("dir"), src.join("to-dir")).unwrap();
    std::os::unix::fs::symlink("missing-target", src.join("dangling")).unwrap();
    std::os::unix::fs::symlink("..", src.join("d/loop")).unwrap();
    let links = ["to-file", "to-dir", "dangling", "d/loop"];

    let out = cli(&env, &srv, &["--json", "sync", "src", ":plain"]);
    let s = json_summary(out.assert_ok());
    assert_eq!((s["copied"].as_u64(), s["mkdirs"].as_u64()), (Some(3), Some(2)), "{s}");
    for link in links {
        let note = format!("xfer: src/{link}: symlink skipped (-L follows symlinks)");
        assert!(out.stderr.contains(&note), "no note for {link}: {out:?}");
        assert!(std::fs::symlink_metadata(home.join("plain").join(link)).is_err(), "{link} copied without -L");
    }
    assert_eq!(tree_of(&home.join("plain")), tree_of(&src));

    let out = cli(&env, &srv, &["--json", "sync", "-L", "src", ":deref"]);
    let s = json_summary(out.assert_ok());
    // a, d/b, d/e/c, to-file, to-dir/sub/g; directories d, d/e, to-dir, to-dir/sub.
    assert_eq!((s["copied"].as_u64(), s["mkdirs"].as_u64(), s["failed"].as_u64()), (Some(5), Some(4), Some(0)), "{s}");
    let dst = home.join("deref");
    assert_eq!(std::fs::read(dst.join("to-file")).unwrap(), std::fs::read(outside.join("f.txt")).unwrap());
    assert_eq!(mtime(&dst.join("to-file")), OLD + 7, "the target's mtime");
    assert!(std::fs::symlink_metadata(dst.join("to-file")).unwrap().is_file(), "a file, not a link");
    assert_eq!(md5_file(&dst.join("to-dir/sub/g")), md5_file(&outside.join("dir/sub/g")));
    assert!(std::fs::symlink_metadata(dst.join("dangling")).is_err());
    assert!(std::fs::symlink_metadata(dst.join("d/loop")).is_err(), "the loop is not copied");
    assert!(out.stderr.contains("dangling: symlink not followed"), "{out:?}");
    assert!(out.stderr.contains("d/loop: symlink loop"), "{out:?}");
    let s = json_summary(cli(&env, &srv, &["--json", "sync", "-L", "src", ":deref"]).assert_ok());
    assert_eq!((s["copied"].as_u64(), s["unchanged"].as_u64()), (Some(0), Some(5)), "{s}");

    // -L is about a local source; a pull is refused before anything happens.
    let out = cli(&env, &srv, &["sync", "-L", ":deref", "back"]);
    out.assert_one_line_error();
    assert_eq!(exit_code(&out), Some(2), "{out:?}");
    assert!(!env.local("back").exists());
}

/// CTRL-SESS-8: a push's directories and deletions go in a row, so a sync that makes forty
/// directories and deletes forty files costs a few round trips, not eighty.
#[test]
fn a_push_makes_and_deletes_many_entries_in_a_few_round_trips() {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, 64 * MIB, None);
    let proxy = support::flights::FlightProxy::start(srv.addr, std::time::Duration::from_millis(200));
    let cli = |args: &[&str]| run(client_cmd(&proxy.addr_string(), "alice", PW, &env.config_dir, &env.work, args));
    cli(&["pwd"]).assert_ok();
    let src = env.local("s");
    for i in 0..40 {
        std::fs::create_dir_all(src.join(format!("d{i:02}/e"))).unwrap();
    }
    let dst = srv.home("alice").join("dst");
    std::fs::create_dir(&dst).unwrap();
    for i in 0..40 {
        std::fs::write(dst.join(format!("old{i:02}")), b"gone").unwrap();
    }
    cli(&["sync", "--delete", "-j", "1", "s", ":dst"]).assert_ok();
    let flights = proxy.last();
    // TCP, TLS, login with the Stat and Walk of both sides, the Mkdirs, the deletions.
    assert!(flights.round_trips() <= 3 + 2 + 2, "{flights:?}");
    for i in 0..40 {
        assert!(dst.join(format!("d{i:02}/e")).is_dir(), "d{i:02}/e");
        assert!(!dst.join(format!("old{i:02}")).exists(), "old{i:02}");
    }
}
