//! Trees, attributes and copies in the S3 profile (STORE-OBJ-11): real xfer servers on a real
//! PostgreSQL and SeaweedFS, driven by the real `xfer` binary. `sync` both ways, `get -r`,
//! `put -r`, remote globs, `cp` under the quota, and what one user's walk or glob can see of
//! another's rows in the shared namespace.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::profile::{path, s3_env};
use crate::support::cluster::*;
use crate::support::*;
use xfer::home::{EntryKind, TreeItem};
use xfer::proto::{ErrorCode, Request, Response};
use xfer::storage::object::ObjectService;
use xfer::storage::Storage;

const PW: &str = "objtree-pw";
/// A fixed past modification time, far from "now", so a kept mtime cannot be a coincidence.
const OLD: i64 = 1_000_000_000;

/// A fresh database and bucket root, and a server in the S3 profile on them.
struct Cluster {
    env: TestEnv,
    srv: TestServer,
    url: String,
    root: String,
}

impl Cluster {
    fn start() -> Cluster {
        let s3 = S3::shared();
        let (url, root) = (Postgres::shared().create_database(), s3.unique_root());
        let env = s3_env(&url, s3, &root);
        let srv = env.start();
        Cluster { env, srv, url, root }
    }

    /// The `xfer` binary as `user`, in UTC so `ls -l` times are fixed.
    fn cli_as(&self, user: &str, args: &[&str]) -> Out {
        let mut cmd = client_cmd(&self.srv.addr_string(), user, PW, &self.env.config_dir, &self.env.work, args);
        cmd.env("TZ", "UTC");
        run(cmd)
    }

    fn cli(&self, args: &[&str]) -> Out {
        self.cli_as("alice", args)
    }

    /// The namespace seen from outside the servers.
    fn namespace(&self) -> ObjectService {
        namespace(&self.url, S3::shared(), &self.root)
    }

    fn usage(&self) -> (u64, u64, u64) {
        let u = self.srv.user("alice");
        (u.used_bytes, u.used_files, u.reserved_bytes)
    }

    /// Alice's usage once it is `want`, or as it is after 10 s: a reservation's end in the
    /// PostgreSQL store may land just after the reply that follows it.
    fn usage_settled(&self, want: (u64, u64, u64)) -> (u64, u64, u64) {
        wait_until_blocking(Duration::from_secs(10), || self.usage() == want);
        self.usage()
    }
}

/// Every entry beneath `top` in `user`'s home, as the namespace walks it.
fn walk(ns: &ObjectService, user: &str, top: &str) -> Vec<TreeItem> {
    let mut out = Vec::new();
    let all = ns.backend().home(user).walk_tree(&path(top), usize::MAX, &mut |i| {
        out.push(i);
        true
    });
    assert!(all.unwrap(), "walk of {top} complete");
    out
}

fn set_mtime(path: &Path, secs: i64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs as u64)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn json_summary(out: &Out) -> serde_json::Value {
    let line = out.stdout.lines().last().unwrap_or_else(|| panic!("no JSON: {out:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// A tree as `(relative path, content)` pairs for files, `None` for directories.
fn tree_of(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    for _ in 0..10_000 {
        let Some(dir) = stack.pop() else { break };
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                out.push((rel, None));
            } else {
                out.push((rel, Some(std::fs::read(e.path()).unwrap())));
            }
        }
    }
    out.sort();
    out
}

/// `a` (4 KiB), `d/b` (mode 0o640) and `d/e/c` (a little over one segment's worth of 1 MiB
/// reads), all with the mtime [`OLD`].
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    make_file(&root.join("a"), 4096, 1);
    make_file(&root.join("d/b"), 10_000, 2);
    make_file(&root.join("d/e/c"), 3 * MIB as usize + 17, 3);
    for (f, m) in [("a", 0o644), ("d/b", 0o640), ("d/e/c", 0o644)] {
        std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(m)).unwrap();
    }
    for f in ["a", "d/b", "d/e/c"] {
        set_mtime(&root.join(f), OLD);
    }
}

/// STORE-OBJ-11, CTRL-TREE-1, CTRL-ATTR-1: `sync -p` up and down keeps mtimes and modes in the
/// namespace, a second run copies nothing, `--delete` removes extras on either side.
#[test]
fn sync_up_and_down_in_the_s3_profile_keeps_mtimes_and_modes() {
    let cl = Cluster::start();
    cl.srv.add_user("alice", PW, 256 * MIB, None);
    let src = cl.env.local("src");
    make_tree(&src);

    let s = json_summary(cl.cli(&["--json", "sync", "-p", "src", ":dst"]).assert_ok());
    assert_eq!((s["copied"].as_u64(), s["mkdirs"].as_u64()), (Some(3), Some(2)), "{s}");
    let ns = cl.namespace();
    let seen: Vec<(String, EntryKind, i64, u32)> =
        walk(&ns, "alice", "/dst").into_iter().map(|i| (i.rel, i.kind, i.mtime, i.mode)).collect();
    let file = |rel: &str, mode| (rel.to_string(), EntryKind::File, OLD, mode);
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(seen[0], file("a", 0o644));
    assert_eq!((seen[1].0.as_str(), seen[1].1), ("d", EntryKind::Dir));
    assert_eq!(seen[2], file("d/b", 0o640), "-p keeps the mode");
    assert_eq!(seen[4], file("d/e/c", 0o644));
    // `ls -l` shows the kept mtime from the namespace.
    let out = cl.cli(&["ls", "-l", "dst/d"]);
    let line = out.assert_ok().stdout.lines().find(|l| l.ends_with(" b")).unwrap_or_default().to_string();
    assert!(line.contains("10000") && line.contains("2001-09-09 01:46"), "{out:?}");

    let s = json_summary(cl.cli(&["--json", "sync", "-p", "src", ":dst"]).assert_ok());
    assert_eq!((s["copied"].as_u64(), s["unchanged"].as_u64()), (Some(0), Some(3)), "second run: {s}");

    // Extras on the server go only with --delete.
    cl.cli(&["mkdir", "dst/zz"]).assert_ok();
    make_file(&cl.env.local("z"), 100, 4);
    cl.cli(&["put", "z", "dst/zz/z"]).assert_ok();
    let s = json_summary(cl.cli(&["--json", "sync", "src", ":dst"]).assert_ok());
    assert_eq!((s["copied"].as_u64(), s["deleted"].as_u64()), (Some(0), Some(0)), "{s}");
    let s = json_summary(cl.cli(&["--json", "sync", "--delete", "src", ":dst"]).assert_ok());
    assert_eq!(s["deleted"].as_u64(), Some(2), "{s}");
    assert_eq!(walk(&ns, "alice", "/dst").len(), 5, "zz and zz/z are gone");

    // Down: the tree, its mtimes and with -p its modes come back.
    let s = json_summary(cl.cli(&["--json", "sync", "-p", ":dst", "copy"]).assert_ok());
    assert_eq!(s["copied"].as_u64(), Some(3), "{s}");
    let copy = cl.env.local("copy");
    assert_eq!(tree_of(&copy), tree_of(&src));
    assert_eq!(std::fs::metadata(copy.join("d/e/c")).unwrap().mtime(), OLD);
    assert_eq!(mode(&copy.join("d/b")), 0o640);
    let s = json_summary(cl.cli(&["--json", "sync", "-p", ":dst", "copy"]).assert_ok());
    assert_eq!((s["copied"].as_u64(), s["unchanged"].as_u64()), (Some(0), Some(3)), "second run: {s}");
    std::fs::write(copy.join("extra"), b"x").unwrap();
    cl.cli(&["sync", "--delete", ":dst", "copy"]).assert_ok();
    assert!(!copy.join("extra").exists());
    assert_eq!(tree_of(&copy), tree_of(&src));
    let bytes = 4096 + 10_000 + 3 * MIB + 17;
    assert_eq!(cl.usage_settled((bytes, 6, 0)), (bytes, 6, 0), "three files and three directories charged");
    cl.srv.assert_no_panics();
}

/// STORE-OBJ-11, CTRL-GLOB-1, CTRL-ATTR-1: `put -r`, `get -r`, `put -p`, remote globs for
/// `ls`, `get` and `rm`, and `SetAttrs` on what is not a file.
#[test]
fn put_r_get_r_and_remote_globs_in_the_s3_profile() {
    let cl = Cluster::start();
    cl.srv.add_user("alice", PW, 256 * MIB, None);
    let src = cl.env.local("tree");
    make_tree(&src);
    cl.cli(&["put", "-r", "tree", "up"]).assert_ok();
    cl.cli(&["get", "-r", "up", "down"]).assert_ok();
    assert_eq!(tree_of(&cl.env.local("down")), tree_of(&src));
    assert_eq!(std::fs::metadata(cl.env.local("down/d/b")).unwrap().mtime(), OLD, "mtime kept both ways");

    // put -p: the mode is masked as in the local home, set-id bits never land.
    let odd = cl.env.local("odd");
    make_file(&odd, 10, 5);
    std::fs::set_permissions(&odd, std::fs::Permissions::from_mode(0o4705)).unwrap();
    cl.cli(&["put", "-p", "odd"]).assert_ok();
    let ns = cl.namespace();
    let item = ns.backend().home("alice").tree_item(&path("/odd")).unwrap();
    assert_eq!(item.mode, 0o705, "0o4705 kept as 0o705 (owner read and write always)");
    cl.cli(&["get", "-p", "odd", "odd-back"]).assert_ok();
    assert_eq!(mode(&cl.env.local("odd-back")), 0o705);

    cl.cli(&["mkdir", "logs"]).assert_ok();
    cl.cli(&["mkdir", "logs/old"]).assert_ok();
    for f in ["logs/a.log", "logs/b.log", "logs/c.txt", "logs/.h.log", "logs/old/z.log"] {
        let local = cl.env.local("one");
        std::fs::write(&local, f.as_bytes()).unwrap();
        cl.cli(&["put", "one", f]).assert_ok();
    }
    let out = cl.cli(&["ls", "logs/*.log"]);
    let names: Vec<&str> = out.assert_ok().stdout.lines().collect();
    assert_eq!(names, ["/logs/a.log", "/logs/b.log"], "{out:?}");
    let out = cl.cli(&["ls", "/**/*.log"]);
    let text = &out.assert_ok().stdout;
    assert!(text.contains("/logs/old/z.log") && !text.contains(".h.log"), "{text}");

    std::fs::create_dir(cl.env.local("got")).unwrap();
    cl.cli(&["get", "logs/*.log", "got/"]).assert_ok();
    assert_eq!(dir_names(&cl.env.local("got")), ["a.log", "b.log"]);
    assert_eq!(std::fs::read(cl.env.local("got/a.log")).unwrap(), b"logs/a.log");

    cl.cli(&["rm", "logs/?.log"]).assert_ok();
    let left: Vec<String> = walk(&ns, "alice", "/logs").into_iter().map(|i| i.rel).collect();
    assert_eq!(left, [".h.log", "c.txt", "old", "old/z.log"]);
    let out = cl.cli(&["ls", "logs/*.nothing"]);
    out.assert_one_line_error();
    assert_eq!(out.status.code(), Some(4), "no match: {out:?}");

    // SetAttrs is for regular files only.
    tokio::runtime::Runtime::new().unwrap().block_on(guard(async {
        let mut c = cl.srv.connect("alice", PW).await;
        assert_eq!(code_of(c.set_attrs("logs", OLD, None).await), ErrorCode::IsADirectory);
        assert_eq!(code_of(c.set_attrs("missing", OLD, None).await), ErrorCode::NotFound);
        assert_eq!(code_of(c.set_attrs("/", OLD, None).await), ErrorCode::IsADirectory);
        c.set_attrs("logs/c.txt", OLD + 5, Some(0o600)).await.unwrap();
        assert_eq!(c.stat("logs/c.txt").await.unwrap().mtime, OLD + 5);
    }));
    cl.srv.assert_no_panics();
}

/// STORE-OBJ-11, CTRL-COPY-1: `cp` makes a new blob with the same bytes, charged before it
/// exists; past the quota it is refused and leaves nothing behind.
#[test]
fn cp_in_the_s3_profile_is_a_new_blob_charged_like_an_upload() {
    let cl = Cluster::start();
    let size = 2 * MIB + 4321;
    cl.srv.add_user("alice", PW, 3 * size + size / 2, None);
    let local = cl.env.local("a");
    let data = make_file(&local, size as usize, 6);
    cl.cli(&["put", "a"]).assert_ok();
    cl.cli(&["mkdir", "d"]).assert_ok();
    assert_eq!(cl.usage_settled((size, 2, 0)), (size, 2, 0));

    cl.cli(&["cp", "a", "b"]).assert_ok();
    assert_eq!(cl.usage_settled((2 * size, 3, 0)), (2 * size, 3, 0));
    let out = cl.cli(&["sum", "b"]);
    assert!(out.assert_ok().stdout.contains(&hex(&md5_bytes(&data))), "{out:?}");
    // Onto an existing file: the old bytes go once the copy is in place.
    cl.cli(&["cp", "a", "b"]).assert_ok();
    assert_eq!(cl.usage_settled((2 * size, 3, 0)), (2 * size, 3, 0), "b replaced, charged once");
    // Into a directory.
    cl.cli(&["cp", "b", "d"]).assert_ok();
    assert_eq!(cl.usage_settled((3 * size, 4, 0)), (3 * size, 4, 0));

    // A fourth copy does not fit: refused, nothing staged, nothing held.
    let out = cl.cli(&["cp", "a", "c"]);
    out.assert_one_line_error();
    assert_eq!(out.status.code(), Some(6), "quota exceeded: {out:?}");
    assert_eq!(cl.usage_settled((3 * size, 4, 0)), (3 * size, 4, 0));
    let ns = cl.namespace();
    let home = ns.backend().home("alice");
    assert_eq!(home.staged_len(&path("/c")).unwrap(), None);
    assert!(home.partials().unwrap().is_empty());
    assert!(home.stat(&path("/c")).is_err());
    let usage = home.usage().unwrap();
    assert_eq!((usage.bytes, usage.entries), (3 * size, 4));

    // Each copy is a blob of its own: removing the source leaves the copies whole.
    cl.cli(&["rm", "a"]).assert_ok();
    for name in ["b", "d/b"] {
        let back = cl.env.local(&format!("back-{}", name.replace('/', "-")));
        cl.cli(&["get", name, back.to_str().unwrap()]).assert_ok();
        assert_eq!(md5_file(&back), md5_bytes(&data), "{name}");
    }
    assert_eq!(cl.usage_settled((2 * size, 3, 0)), (2 * size, 3, 0));
    cl.srv.assert_no_panics();
}

/// SEC-JAIL-*, STORE-OBJ-11: two users in one namespace. A walk or glob reads its own home's
/// rows only, a directory's walk does not take in a sibling that shares its name as a prefix,
/// and `..` in a pattern is refused.
#[test]
fn walks_and_globs_never_see_another_users_rows() {
    let cl = Cluster::start();
    cl.srv.add_user("alice", PW, 64 * MIB, None);
    cl.srv.add_user("bob", PW, 64 * MIB, None);
    let one = cl.env.local("one");
    make_file(&one, 1000, 7);
    for (user, dirs, files) in [
        ("bob", &["/a", "/secret"][..], &["/a/bob.log", "/secret/key.log", "/top.log"][..]),
        ("alice", &["/a"][..], &["/a/in.log", "/ab.log", "/a-b.log"][..]),
    ] {
        for d in dirs {
            cl.cli_as(user, &["mkdir", d]).assert_ok();
        }
        for f in files {
            cl.cli_as(user, &["put", "one", f]).assert_ok();
        }
    }
    let out = cl.cli(&["ls", "/**/*.log"]);
    let names: Vec<&str> = out.assert_ok().stdout.lines().collect();
    assert_eq!(names, ["/a-b.log", "/a/in.log", "/ab.log"], "{out:?}");
    cl.cli(&["sync", ":/", "mine"]).assert_ok();
    assert_eq!(dir_names(&cl.env.local("mine")), ["a", "a-b.log", "ab.log"]);
    assert_eq!(dir_names(&cl.env.local("mine/a")), ["in.log"]);
    for pattern in ["../bob/*", "/../bob/**", "../*"] {
        let out = cl.cli(&["ls", pattern]);
        out.assert_one_line_error();
        assert_eq!(out.status.code(), Some(5), "{pattern} escapes: {out:?}");
    }
    tokio::runtime::Runtime::new().unwrap().block_on(guard(async {
        let mut c = cl.srv.connect("alice", PW).await;
        let all: Vec<String> = c.walk("/").await.unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(all, ["a", "a-b.log", "ab.log", "a/in.log"]);
        let under_a: Vec<String> = c.walk("/a").await.unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(under_a, ["in.log"], "/ab.log and /a-b.log are not beneath /a");
        assert_eq!(code_of(c.walk("/secret").await), ErrorCode::NotFound, "bob's directory is not alice's");
        assert_eq!(code_of(c.walk("../bob").await), ErrorCode::PathEscapes);
        let mut raw = cl.srv.raw("alice", PW).await;
        for (pattern, code) in [("a*/../x", ErrorCode::InvalidPath), ("../bob/*", ErrorCode::PathEscapes)] {
            match raw.call(&Request::Glob { pattern: pattern.into() }).await {
                Response::Error { code: got, .. } => assert_eq!(got, code, "{pattern}"),
                other => panic!("{pattern} answered {other:?}"),
            }
        }
        let bob = cl.srv.connect("bob", PW).await.glob("/**").await.unwrap();
        let paths: Vec<&str> = bob.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/a/bob.log", "/secret", "/secret/key.log", "/top.log"]);
    }));
    cl.srv.assert_no_panics();
}

/// Runs `sql` on the database at `url`.
fn execute(url: &str, sql: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let conn = tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = conn.await;
    });
}

/// STORE-OBJ-11, CTRL-TREE-2, CTRL-GLOB-2: a walk reads a bounded number of rows and bytes of
/// paths; past either bound it stops, and `Walk` and `Glob` refuse it, while a glob whose depth
/// stays above the crowd is answered.
#[test]
fn a_walk_past_its_bounds_stops_and_the_requests_refuse_it() {
    let cl = Cluster::start();
    cl.srv.add_user("alice", PW, 64 * MIB, None);
    let one = cl.env.local("one");
    make_file(&one, 10, 8);
    cl.cli(&["mkdir", "small"]).assert_ok();
    cl.cli(&["put", "one", "small/f"]).assert_ok();
    // 100 002 files in one directory (one past the walk's bound), and 20 000 beneath 15
    // directories of 252-byte names (about 3.8 KiB of path each, 75 MiB in all).
    let comps: Vec<String> = (0..15).map(|i| format!("{}{i:02}", "d".repeat(250))).collect();
    let mut sql = String::from(
        "INSERT INTO ns_entries (home, path, parent, name, is_dir, size, mtime) \
         VALUES ('alice', '/many', '/', 'many', true, 0, 0);\n\
         INSERT INTO ns_entries (home, path, parent, name, is_dir, size, mtime) \
         SELECT 'alice', '/many/f' || i, '/many', 'f' || i, false, 1, 0 FROM generate_series(0, 100001) i;\n",
    );
    let mut parent = "/".to_string();
    for c in &comps {
        let p = if parent == "/" { format!("/{c}") } else { format!("{parent}/{c}") };
        sql += &format!(
            "INSERT INTO ns_entries (home, path, parent, name, is_dir, size, mtime) \
             VALUES ('alice', '{p}', '{parent}', '{c}', true, 0, 0);\n"
        );
        parent = p;
    }
    sql += &format!(
        "INSERT INTO ns_entries (home, path, parent, name, is_dir, size, mtime) \
         SELECT 'alice', '{parent}/f' || i, '{parent}', 'f' || i, false, 1, 0 FROM generate_series(0, 19999) i;\n"
    );
    execute(&cl.url, &sql);

    let ns = cl.namespace();
    let home = ns.backend().home("alice");
    for (top, bound) in [("/many", "entries"), (parent.as_str(), "bytes")] {
        let mut seen = 0usize;
        let all = home.walk_tree(&path(top), usize::MAX, &mut |_| {
            seen += 1;
            true
        });
        assert!(!all.unwrap(), "a walk past its {bound} stops");
        assert!(seen <= xfer::storage::MAX_WALK_ENTRIES, "{seen} visited");
    }
    let mut seen = Vec::new();
    assert!(home
        .walk_tree(&path("/small"), usize::MAX, &mut |i| {
            seen.push(i.rel);
            true
        })
        .unwrap());
    assert_eq!(seen, ["f"]);

    tokio::runtime::Runtime::new().unwrap().block_on(guard(async {
        let mut raw = cl.srv.raw("alice", PW).await;
        for req in [Request::Walk { path: "/many".into() }, Request::Glob { pattern: "many/f1000?".into() }] {
            match raw.call(&req).await {
                Response::Error { code, .. } => assert_eq!(code, ErrorCode::TooManyEntries, "{req:?}"),
                other => panic!("{req:?} answered {other:?}"),
            }
        }
        // One level down from the root: the crowd beneath is never read.
        match raw.call(&Request::Glob { pattern: "*".into() }).await {
            Response::Tree { entries } => {
                let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
                assert_eq!(paths.len(), 3, "{paths:?}");
                assert!(paths.contains(&"/many") && paths.contains(&"/small"), "{paths:?}");
            }
            other => panic!("glob * answered {other:?}"),
        }
        match raw.call(&Request::Glob { pattern: "small/*".into() }).await {
            Response::Tree { entries } => assert_eq!(entries[0].path, "/small/f"),
            other => panic!("glob small/* answered {other:?}"),
        }
    }));
    cl.srv.assert_no_panics();
}
