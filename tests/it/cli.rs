//! The README contract of the `xfer` binary: admin commands, client commands, exit codes and
//! one-line errors, size parsing, `serve` start-up text, and the shell driven through stdin.

use crate::support;

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;

use support::*;
use xfer::store::Store;

const PW: &str = "cli-pw";

fn admin(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = xfer_cmd(&env.config_dir, &env.work);
    cmd.arg("user").args(args).arg("--root").arg(&env.root);
    cmd
}

fn add_user(env: &TestEnv, name: &str, quota: &str, pw: &str) -> Out {
    let mut cmd = admin(env, &["add", name, &format!("--quota={quota}"), "--init"]);
    cmd.env("XFER_PASSWORD", pw);
    run(cmd)
}

fn stored_user(root: &Path, name: &str) -> Option<xfer::store::User> {
    Store::open(&root.join("xfer.db")).unwrap().get_user(name).unwrap()
}

/// A client command against `srv` as alice.
fn cli(env: &TestEnv, srv: &TestServer, args: &[&str]) -> Out {
    run(client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, args))
}

/// An environment with a running server and alice (10 MiB) added through the CLI.
fn setup() -> (TestEnv, TestServer) {
    let env = TestEnv::new();
    env.configure(&[]);
    add_user(&env, "alice", "10MiB", PW).assert_ok();
    let srv = env.start();
    (env, srv)
}

#[tokio::test]
async fn manages_users_through_cli() {
    guard(async {
        let env = TestEnv::new();
        env.configure(&[]);
        let out = add_user(&env, "alice", "10MiB", PW);
        assert!(out.assert_ok().stdout.contains("added alice"), "{}", out.stdout);
        assert!(env.root.join("homes/alice").is_dir(), "home created");
        add_user(&env, "bob", "1GiB", "bobpw").assert_ok();
        let line = add_user(&env, "alice", "1MiB", "x").assert_one_line_error();
        assert!(line.contains("exists"), "{line}");
        let line = add_user(&env, "Bad/Name", "1MiB", "x").assert_one_line_error();
        assert!(line.contains("invalid user name"), "{line}");
        // No password source at all (stdin is not a terminal) and an empty password: refused.
        run(admin(&env, &["add", "carol", "--quota", "1MiB"])).assert_one_line_error();
        add_user(&env, "carol", "1MiB", "").assert_one_line_error();
        assert!(stored_user(&env.root, "carol").is_none());

        let srv = env.start();
        let local = env.local("f");
        make_file(&local, 300_000, 1);
        cli(&env, &srv, &["put", "f"]).assert_ok();

        // `user list` shows usage and quota while the server runs.
        let list = run(admin(&env, &["list"]));
        let text = &list.assert_ok().stdout;
        let alice = text.lines().find(|l| l.starts_with("alice")).unwrap_or_else(|| panic!("{text}"));
        assert!(alice.contains("292.97 KiB") && alice.contains("10.00 MiB"), "usage and quota: {alice}");
        let bob = text.lines().find(|l| l.starts_with("bob")).unwrap_or_else(|| panic!("{text}"));
        assert!(bob.contains("0 B") && bob.contains("1.00 GiB"), "{bob}");

        // passwd from stdin: the new password works, the old one no longer does.
        let mut cmd = admin(&env, &["passwd", "alice", "--password-stdin"]);
        cmd.env_remove("XFER_PASSWORD");
        run_with_stdin(cmd, Some("n3w-pass\n")).assert_ok();
        let mut c = xfer::client::Client::connect(&srv.options()).await.unwrap();
        assert_eq!(code_of(c.login("alice", PW).await), xfer::proto::ErrorCode::AuthFailed);
        c.login("alice", "n3w-pass").await.unwrap();
        c.bye().await;

        run(admin(&env, &["quota", "alice", "--quota", "20MiB", "--max-files", "5"])).assert_ok();
        let u = stored_user(&env.root, "alice").unwrap();
        assert_eq!((u.quota_bytes, u.max_files), (20 * MIB, Some(5)));
        run(admin(&env, &["quota", "nobody", "--quota", "1MiB"])).assert_one_line_error();

        let out = run(admin(&env, &["del", "bob"]));
        assert!(out.assert_ok().stdout.contains("moved to"), "{}", out.stdout);
        assert!(stored_user(&env.root, "bob").is_none());
        assert!(!env.root.join("homes/bob").exists(), "the home left homes/ with its user");
        assert_eq!(dir_names(&env.root.join("deleted")).len(), 1, "and was kept aside");
        assert!(!run(admin(&env, &["list"])).stdout.contains("bob"));
        run(admin(&env, &["del", "bob"])).assert_one_line_error();
        // A deleted user cannot log in.
        let mut c = xfer::client::Client::connect(&srv.options()).await.unwrap();
        assert_eq!(code_of(c.login("bob", "bobpw").await), xfer::proto::ErrorCode::AuthFailed);
    })
    .await
}

#[test]
fn accepts_size_units_and_rejects_bad_sizes() {
    let env = TestEnv::new();
    for (name, size, bytes) in [
        ("u1", "10MiB", 10 * MIB),
        ("u2", "2GB", 2_000_000_000),
        ("u3", "1048576", 1_048_576),
        ("u4", "512k", 512 * KIB),
    ] {
        add_user(&env, name, size, "pw").assert_ok();
        assert_eq!(stored_user(&env.root, name).unwrap().quota_bytes, bytes, "--quota {size}");
    }
    for bad in ["10XB", "-1", "", "1e9", "ten", "99999999999TiB"] {
        let line = add_user(&env, "bad", bad, "pw").assert_one_line_error();
        assert!(line.contains("invalid size"), "--quota {bad:?}: {line}");
        let line = run(admin(&env, &["quota", "u1", &format!("--quota={bad}")])).assert_one_line_error();
        assert!(line.contains("invalid size"), "quota --quota {bad:?}: {line}");
    }
    assert!(stored_user(&env.root, "bad").is_none());
    assert_eq!(stored_user(&env.root, "u1").unwrap().quota_bytes, 10 * MIB, "bad sizes changed nothing");
}

#[test]
fn serve_without_users_prints_how_to_add_one() {
    let env = TestEnv::new();
    let log = env.tmp.path().join("serve.log");
    let mut srv = ServerProcess::start(&env.root, "127.0.0.1:0", &log, &[]);
    assert!(srv.wait_stdout("xfer user add", STEP), "stdout: {:?}", srv.stdout);
    assert!(srv.stdout.iter().any(|l| l.contains("fingerprint SHA256:")), "{:?}", srv.stdout);
    assert!(env.root.join("xfer.toml").is_file(), "default config written on first start");
    let status = srv.terminate().expect("serve did not stop on SIGTERM");
    assert!(status.success(), "serve exit status {status:?}");
    assert!(srv.wait_stdout("stopped", STEP), "{:?}", srv.stdout);

    // With a user the hint is gone.
    add_user(&env, "alice", "1MiB", PW).assert_ok();
    let mut srv = ServerProcess::start(&env.root, "127.0.0.1:0", &log, &[]);
    srv.terminate();
    srv.wait_stdout("stopped", STEP);
    assert!(!srv.stdout.iter().any(|l| l.contains("no users")), "{:?}", srv.stdout);
}

#[tokio::test]
async fn transfers_and_lists_through_cli() {
    guard(async {
        let (env, srv) = setup();
        let home = srv.home("alice");
        let a = make_file(&env.local("a.txt"), 1234, 1);
        let b = make_file(&env.local("b.bin"), MIB as usize + 3, 2);

        let out = cli(&env, &srv, &["put", "a.txt"]);
        assert!(out.assert_ok().stderr.contains("uploaded"), "summary on stderr: {}", out.stderr);
        assert!(out.stdout.is_empty(), "results only on stdout: {}", out.stdout);
        cli(&env, &srv, &["mkdir", "docs"]).assert_ok();
        cli(&env, &srv, &["put", "b.bin", "renamed.bin"]).assert_ok();
        cli(&env, &srv, &["put", "a.txt", "docs"]).assert_ok(); // into the directory
        cli(&env, &srv, &["put", "--resume", "b.bin", "docs/"]).assert_ok();
        assert_eq!(std::fs::read(home.join("a.txt")).unwrap(), a);
        assert_eq!(std::fs::read(home.join("renamed.bin")).unwrap(), b);
        assert_eq!(dir_names(&home.join("docs")), ["a.txt", "b.bin"]);
        // -q: nothing at all.
        let out = cli(&env, &srv, &["-q", "put", "a.txt", "quiet.txt"]);
        assert_eq!((out.assert_ok().stdout.as_str(), out.stderr.as_str()), ("", ""));

        let ls = cli(&env, &srv, &["ls"]);
        let names: Vec<&str> = ls.assert_ok().stdout.lines().collect();
        assert_eq!(names, ["a.txt", "docs/", "quiet.txt", "renamed.bin"]);
        let long = cli(&env, &srv, &["ls", "-l", "docs"]);
        let lines: Vec<&str> = long.assert_ok().stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", long.stdout);
        assert!(lines[0].starts_with('-') && lines[0].contains("1234") && lines[0].ends_with("a.txt"), "{}", lines[0]);
        assert!(lines[1].contains(&(MIB + 3).to_string()), "{}", lines[1]);
        let json = cli(&env, &srv, &["ls", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&json.assert_ok().stdout).expect("ls --json is JSON");
        let rows = v.as_array().expect("an array");
        assert_eq!(rows.len(), 4);
        let docs = rows.iter().find(|r| r["name"] == "docs").unwrap();
        assert_eq!(docs["type"], "dir");
        let renamed = rows.iter().find(|r| r["name"] == "renamed.bin").unwrap();
        assert_eq!((renamed["type"].as_str(), renamed["size"].as_u64()), (Some("file"), Some(MIB + 3)));
        assert!(renamed["mtime"].as_i64().unwrap() > 1_600_000_000);

        // get REMOTE into the cwd, get REMOTE LOCAL, get REMOTE DIR.
        std::fs::remove_file(env.local("a.txt")).unwrap();
        cli(&env, &srv, &["get", "a.txt"]).assert_ok();
        assert_eq!(std::fs::read(env.local("a.txt")).unwrap(), a);
        cli(&env, &srv, &["get", "docs/b.bin", "copy.bin"]).assert_ok();
        assert_eq!(std::fs::read(env.local("copy.bin")).unwrap(), b);
        std::fs::create_dir(env.local("into")).unwrap();
        cli(&env, &srv, &["get", "-c", "renamed.bin", "into"]).assert_ok();
        assert_eq!(std::fs::read(env.local("into/renamed.bin")).unwrap(), b);

        let sum = cli(&env, &srv, &["sum", "renamed.bin"]);
        assert_eq!(sum.assert_ok().stdout.trim(), format!("{}  renamed.bin", hex(&md5_bytes(&b))));
        let stat = cli(&env, &srv, &["stat", "docs/a.txt"]);
        assert!(stat.assert_ok().stdout.contains("a.txt file 1234 bytes"), "{}", stat.stdout);
        assert_eq!(cli(&env, &srv, &["pwd"]).assert_ok().stdout.trim(), "/");
        assert_eq!(cli(&env, &srv, &["cd", "docs"]).assert_ok().stdout.trim(), "/docs");
        cli(&env, &srv, &["mv", "quiet.txt", "docs/moved.txt"]).assert_ok();
        cli(&env, &srv, &["rm", "docs/moved.txt"]).assert_ok();
        assert!(!home.join("docs/moved.txt").exists());
        let df = cli(&env, &srv, &["df"]);
        let text = &df.assert_ok().stdout;
        // Four files and the directory holding two of them (QUOTA-5).
        assert!(text.contains("of 10.00 MiB") && text.contains("files 5"), "{text}");
        cli(&env, &srv, &["rm", "docs/a.txt"]).assert_ok();
        cli(&env, &srv, &["rm", "docs/b.bin"]).assert_ok();
        cli(&env, &srv, &["rmdir", "docs"]).assert_ok();
        assert_eq!(dir_names(&home), ["a.txt", "renamed.bin"]);
    })
    .await
}

#[tokio::test]
async fn exits_nonzero_with_one_line_error_on_failure() {
    guard(async {
        let (env, srv) = setup();
        let addr = srv.addr_string();
        make_file(&env.local("big"), 11 * MIB as usize, 1);
        make_file(&env.local("small"), 10, 2);
        // Wrong password.
        let out = run(client_cmd(&addr, "alice", "wrong", &env.config_dir, &env.work, &["ls"]));
        assert!(out.assert_one_line_error().contains("login failed"), "{}", out.stderr);
        // Missing remote file: nothing created locally.
        let line = cli(&env, &srv, &["get", "missing.bin"]).assert_one_line_error();
        assert!(line.contains("no such file"), "{line}");
        assert!(!env.local("missing.bin").exists() && !partial_path(&env.local("missing.bin")).exists());
        // Missing local file.
        let line = cli(&env, &srv, &["put", "does-not-exist"]).assert_one_line_error();
        assert!(line.contains("does-not-exist"), "{line}");
        // A local directory is not uploadable.
        std::fs::create_dir(env.local("localdir")).unwrap();
        let line = cli(&env, &srv, &["put", "localdir"]).assert_one_line_error();
        assert!(line.contains("is a directory") && line.contains("-r"), "{line}");
        // Over quota.
        let line = cli(&env, &srv, &["put", "big"]).assert_one_line_error();
        assert!(line.contains("quota"), "{line}");
        // Directory errors.
        cli(&env, &srv, &["mkdir", "d"]).assert_ok();
        cli(&env, &srv, &["put", "small", "d/small"]).assert_ok();
        assert!(cli(&env, &srv, &["rmdir", "d"]).assert_one_line_error().contains("not empty"));
        assert!(cli(&env, &srv, &["rm", "d"]).assert_one_line_error().contains("directory"));
        assert!(cli(&env, &srv, &["mkdir", "d"]).assert_one_line_error().contains("exists"));
        cli(&env, &srv, &["cd", ".."]).assert_one_line_error();
        // No user anywhere.
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.args(["--server", &addr, "--accept-new-host", "ls"]).env("XFER_PASSWORD", PW);
        assert!(run(cmd).assert_one_line_error().contains("--user"));
        let _ = &env;
        // No password and no terminal.
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.args(["--server", &addr, "--user", "alice", "--accept-new-host", "ls"]);
        assert!(run(cmd).assert_one_line_error().contains("XFER_PASSWORD"));
        // Nothing listening.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let out = run(client_cmd(&dead, "alice", PW, &env.config_dir, &env.work, &["ls"]));
        assert!(out.assert_one_line_error().contains("cannot connect"), "{}", out.stderr);
    })
    .await
}

#[tokio::test]
async fn accepts_environment_variables_for_server_user_and_password() {
    guard(async {
        let (env, srv) = setup();
        make_file(&env.local("e.txt"), 10, 3);
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.env("XFER_SERVER", srv.addr_string()).env("XFER_USER", "alice").env("XFER_PASSWORD", PW);
        cmd.args(["--accept-new-host", "put", "e.txt"]);
        run(cmd).assert_ok();
        assert!(srv.home("alice").join("e.txt").is_file());
    })
    .await
}

#[tokio::test]
async fn takes_server_and_user_from_the_default_or_named_profile() {
    guard(async {
        let (env, srv) = setup();
        make_file(&env.local("p.txt"), 10, 4);
        std::fs::create_dir_all(&env.config_dir).unwrap();
        let config = format!(
            "default_profile = \"lab\"\n[profiles.lab]\nserver = \"{addr}\"\nuser = \"alice\"\n\
             [profiles.wrong]\nserver = \"{addr}\"\nuser = \"nobody\"\n",
            addr = srv.addr_string()
        );
        std::fs::write(env.config_dir.join("config.toml"), config).unwrap();
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.env("XFER_PASSWORD", PW).args(["--accept-new-host", "put", "p.txt"]);
        run(cmd).assert_ok();
        assert!(srv.home("alice").join("p.txt").is_file(), "default profile used");
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.env("XFER_PASSWORD", PW).args(["--profile", "wrong", "ls"]);
        assert!(run(cmd).assert_one_line_error().contains("login failed"), "named profile used");
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.env("XFER_PASSWORD", PW).args(["--profile", "missing", "ls"]);
        assert!(run(cmd).assert_one_line_error().contains("no profile"));
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.env("XFER_PASSWORD", PW).args(["--profile", "wrong", "--user", "alice", "ls"]);
        run(cmd).assert_ok();
    })
    .await
}

#[tokio::test]
async fn drives_shell_through_stdin() {
    guard(async {
        let (env, srv) = setup();
        let data = make_file(&env.local("note.txt"), 4321, 5);
        let mut cmd = client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, &["shell"]);
        cmd.env_remove("XFER_LOG");
        cmd.arg("--keep-going");
        let script = "pwd\nmkdir d\ncd d\nput note.txt\nls\nbogus-command\nls -l\nexit\npwd\n";
        let out = run_with_stdin(cmd, Some(script));
        assert_eq!(out.status.code(), Some(2), "keep-going exits with the first failure (usage): {out:#?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(out.stderr.starts_with("xfer: connected to"), "banner on stderr: {}", out.stderr);
        assert_eq!(lines[0], "/", "pwd: {}", out.stdout);
        assert_eq!(lines[1], "/d", "cd prints the new directory: {}", out.stdout);
        assert!(out.stderr.contains("uploaded note.txt"), "put: {}", out.stderr);
        assert_eq!(lines[2], "note.txt", "ls in the new cwd: {}", out.stdout);
        assert!(lines[3].starts_with('-') && lines[3].ends_with("note.txt"), "ls -l: {}", out.stdout);
        assert_eq!(lines.len(), 4, "nothing runs after exit: {}", out.stdout);
        assert!(out.stderr.contains("bogus-command"), "unknown command reported: {}", out.stderr);
        assert_eq!(std::fs::read(srv.home("alice").join("d/note.txt")).unwrap(), data);
        assert!(env.config_dir.join("history").is_file(), "history saved in XFER_CONFIG_DIR");
        // lcd/lpwd change and show the local directory; get lands there.
        std::fs::create_dir(env.local("sub")).unwrap();
        let cmd = client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, &["shell"]);
        let out = run_with_stdin(cmd, Some("lcd sub\nlpwd\nget d/note.txt\nexit\n"));
        assert!(out.assert_ok().stdout.lines().any(|l| l.ends_with("/work/sub")), "lpwd: {}", out.stdout);
        assert_eq!(std::fs::read(env.local("sub/note.txt")).unwrap(), data);
        // End of input also ends the shell cleanly.
        let cmd = client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, &["shell"]);
        run_with_stdin(cmd, Some("pwd\n")).assert_ok();
    })
    .await
}

#[test]
fn stops_gracefully_on_sigterm_right_after_announcing_readiness() {
    // The handler is registered only when `server::run` first polls `shutdown_signal()`; a
    // SIGTERM sent as soon as the readiness line appears hits the default action (death by
    // signal) in a few percent of starts. 60 starts make a miss likely if the race exists.
    let mut killed = Vec::new();
    for i in 0..60 {
        let env = TestEnv::new();
        let log = env.tmp.path().join("serve.log");
        let mut srv = ServerProcess::start_unprobed(&env.root, &log);
        let status = srv.terminate().expect("serve did not exit");
        if !status.success() {
            killed.push((i, status));
        }
    }
    assert!(killed.is_empty(), "serve died from SIGTERM instead of shutting down: {killed:?}");
}

#[test]
fn stops_gracefully_on_sigint() {
    let env = TestEnv::new();
    let log = env.tmp.path().join("serve.log");
    let mut srv = ServerProcess::start_unprobed(&env.root, &log);
    let status = srv.signal("-INT").expect("serve did not exit on SIGINT");
    assert!(status.success(), "serve died from SIGINT instead of shutting down: {status:?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("shutting down"), "no graceful shutdown logged: {text}");
}

// ---------------------------------------------------------------------------------------------
// Scriptable client: exit codes, JSON, streams, safe local writes, several sources, trees.

fn code(out: &Out) -> Option<i32> {
    out.status.code()
}

#[tokio::test]
async fn exit_codes_name_the_error_class() {
    guard(async {
        let (env, srv) = setup();
        let addr = srv.addr_string();
        make_file(&env.local("big"), 11 * MIB as usize, 1);
        make_file(&env.local("small"), 10, 2);
        let out = run(client_cmd(&addr, "alice", "wrong", &env.config_dir, &env.work, &["ls"]));
        assert_eq!(code(&out), Some(7), "auth: {out:#?}");
        assert_eq!(code(&cli(&env, &srv, &["get", "missing.bin"])), Some(4), "remote path");
        assert_eq!(code(&cli(&env, &srv, &["put", "big"])), Some(6), "quota");
        assert_eq!(code(&cli(&env, &srv, &["put", "nope"])), Some(3), "local");
        assert_eq!(code(&cli(&env, &srv, &["ls", "--bogus-flag"])), Some(2), "usage");
        cli(&env, &srv, &["mkdir", "d"]).assert_ok();
        assert_eq!(code(&cli(&env, &srv, &["mkdir", "d"])), Some(12), "exists");
        assert_eq!(code(&cli(&env, &srv, &["ls", "../.."])), Some(5), "outside the home");
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let out = run(client_cmd(&dead, "alice", PW, &env.config_dir, &env.work, &["ls"]));
        assert_eq!(code(&out), Some(9), "connection: {out:#?}");
    })
    .await
}

#[tokio::test]
async fn refuses_unsafe_local_destinations() {
    guard(async {
        let (env, srv) = setup();
        let data = make_file(&env.local("f"), 5000, 3);
        cli(&env, &srv, &["put", "f"]).assert_ok();
        // A FIFO is never replaced (and never opened: the command would hang).
        let fifo = env.local("pipe");
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let out = cli(&env, &srv, &["get", "f", "pipe"]);
        assert_eq!(code(&out), Some(3), "{out:#?}");
        assert!(out.assert_one_line_error().contains("FIFO"));
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        // A device neither (we run as root in CI).
        let out = cli(&env, &srv, &["get", "f", "/dev/null"]);
        assert!(out.assert_one_line_error().contains("device"), "{out:#?}");
        assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
        // A symlink to a regular file: the file behind it is replaced, the link stays.
        make_file(&env.local("real"), 10, 9);
        std::os::unix::fs::symlink("real", env.local("link")).unwrap();
        cli(&env, &srv, &["get", "f", "link"]).assert_ok();
        assert!(std::fs::symlink_metadata(env.local("link")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(env.local("real")).unwrap(), data);
        // A dangling symlink is refused.
        std::os::unix::fs::symlink("nowhere/x", env.local("dangling")).unwrap();
        assert!(cli(&env, &srv, &["get", "f", "dangling"]).assert_one_line_error().contains("symlink"));
        // A planted partial link cannot redirect the bytes.
        std::os::unix::fs::symlink("/etc/hostname", env.local(".g.xfer-part")).unwrap();
        assert!(cli(&env, &srv, &["get", "f", "g"]).assert_one_line_error().contains("partial"));
        // --no-clobber keeps an existing file.
        make_file(&env.local("keep"), 7, 4);
        let out = cli(&env, &srv, &["get", "--no-clobber", "f", "keep"]);
        assert_eq!(code(&out), Some(12), "{out:#?}");
        assert_eq!(std::fs::read(env.local("keep")).unwrap().len(), 7);
        assert_eq!(code(&cli(&env, &srv, &["put", "-n", "keep", "./f"])), Some(12), "remote no-clobber");
    })
    .await
}

#[tokio::test]
async fn streams_standard_input_and_output_with_dash() {
    guard(async {
        let (env, srv) = setup();
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let cmd = client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, &["put", "-", "in.txt"]);
        run_with_stdin(cmd, Some(&text)).assert_ok();
        assert_eq!(std::fs::read_to_string(srv.home("alice").join("in.txt")).unwrap(), text);
        assert!(!env.local("-").exists(), "no file named -");
        let out = cli(&env, &srv, &["get", "in.txt", "-"]);
        assert_eq!(out.assert_ok().stdout, text, "get - writes the verified file to stdout");
        assert!(!env.local("-").exists());
        assert_eq!(code(&cli(&env, &srv, &["put", "-"])), Some(2), "stdin needs a remote name");
    })
    .await
}

#[tokio::test]
async fn copies_several_sources_and_whole_trees_as_scp_does() {
    guard(async {
        let (env, srv) = setup();
        let home = srv.home("alice");
        let a = make_file(&env.local("a.log"), 100, 1);
        let b = make_file(&env.local("b.log"), 200, 2);
        // Two matches of a glob: b.log is a local file too, so this is refused, not an overwrite.
        let out = cli(&env, &srv, &["put", "a.log", "b.log"]);
        assert_eq!(code(&out), Some(2), "{out:#?}");
        assert!(!home.join("b.log").exists());
        cli(&env, &srv, &["mkdir", "logs"]).assert_ok();
        cli(&env, &srv, &["put", "a.log", "b.log", "logs/"]).assert_ok();
        assert_eq!(std::fs::read(home.join("logs/b.log")).unwrap(), b);
        // Several sources into something that is not a directory: an error, nothing written.
        cli(&env, &srv, &["put", "a.log", "logs/a1"]).assert_ok();
        let out = cli(&env, &srv, &["put", "a.log", "b.log", "logs/a1"]);
        assert_eq!(code(&out), Some(4), "{out:#?}");
        assert_eq!(std::fs::read(home.join("logs/a1")).unwrap(), a);
        // A trailing slash means a directory.
        assert_eq!(code(&cli(&env, &srv, &["put", "a.log", "sub/"])), Some(4));
        assert!(!home.join("sub").exists());
        // get x y DIR/.
        std::fs::create_dir(env.local("down")).unwrap();
        cli(&env, &srv, &["get", "logs/a.log", "logs/b.log", "down/"]).assert_ok();
        assert_eq!(dir_names(&env.local("down")), ["a.log", "b.log"]);
        assert_eq!(code(&cli(&env, &srv, &["get", "logs/a.log", "logs/b.log", "a.log"])), Some(3));
        // put -r: symlinks skipped without -L; get -r brings the tree back.
        let tree = env.local("tree");
        std::fs::create_dir_all(tree.join("x/y")).unwrap();
        let deep = make_file(&tree.join("x/y/deep.bin"), 3000, 5);
        make_file(&tree.join("top.txt"), 10, 6);
        std::os::unix::fs::symlink("/etc/hostname", tree.join("link")).unwrap();
        let out = cli(&env, &srv, &["put", "-r", "tree"]);
        assert!(out.assert_ok().stderr.contains("symlink skipped"), "{}", out.stderr);
        assert_eq!(dir_names(&home.join("tree")), ["top.txt", "x"]);
        assert_eq!(std::fs::read(home.join("tree/x/y/deep.bin")).unwrap(), deep);
        cli(&env, &srv, &["put", "-r", "-L", "tree", "tree2"]).assert_ok();
        assert!(home.join("tree2/link").is_file(), "-L follows");
        cli(&env, &srv, &["get", "-r", "tree", "back"]).assert_ok();
        assert_eq!(std::fs::read(env.local("back/x/y/deep.bin")).unwrap(), deep);
        // mkdir -p and rm -r.
        cli(&env, &srv, &["mkdir", "-p", "p/q/r"]).assert_ok();
        cli(&env, &srv, &["mkdir", "-p", "p/q"]).assert_ok();
        assert!(home.join("p/q/r").is_dir());
        cli(&env, &srv, &["rm", "-r", "tree2"]).assert_ok();
        cli(&env, &srv, &["rm", "-r", "p"]).assert_ok();
        assert!(!home.join("p").exists() && !home.join("tree2").exists());
    })
    .await
}

#[tokio::test]
async fn lists_with_human_sizes_sorting_local_time_and_escaped_names() {
    guard(async {
        let (env, srv) = setup();
        let home = srv.home("alice");
        make_file(&home.join("small"), 10, 1);
        make_file(&home.join("big"), 3 * KIB as usize, 2);
        make_file(&home.join("evil\x1b]0;x\x07"), 1, 3);
        make_file(&home.join(".hidden"), 1, 4);
        let set = |name: &str, secs: u64| {
            let f = std::fs::File::options().write(true).open(home.join(name)).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).unwrap();
        };
        set("small", 2_000_000_000);
        set("big", 1_000_000_000);
        let mut cmd = client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, &["ls", "-lh"]);
        cmd.env("TZ", "IST-5:30");
        let out = run(cmd);
        let text = &out.assert_ok().stdout;
        let big = text.lines().find(|l| l.ends_with(" big")).unwrap_or_else(|| panic!("{text}"));
        assert!(big.contains("3.00 KiB") && big.contains("2001-09-09 07:16 IST"), "{big}");
        assert!(text.contains("evil\\e]0;x\\a") && !text.contains('\x1b'), "escaped: {text:?}");
        assert!(!text.contains(".hidden"), "dotfiles need -a");
        let names = |args: &[&str]| -> Vec<String> {
            cli(&env, &srv, args).assert_ok().stdout.lines().map(str::to_string).collect()
        };
        let by_time = names(&["ls", "-t"]);
        assert_eq!((by_time[0].as_str(), by_time.last().unwrap().as_str()), ("small", "big"), "newest first");
        assert_eq!(names(&["ls", "-S"])[0], "big");
        assert_eq!(names(&["ls", "-S", "-r"]).last().unwrap(), "big");
        assert!(names(&["ls", "-a"]).contains(&".hidden".to_string()));
        let json = cli(&env, &srv, &["ls", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&json.assert_ok().stdout).unwrap();
        assert!(v.as_array().unwrap().iter().any(|r| r["name"] == "evil\x1b]0;x\x07"), "exact name in JSON");
        // `ls --help` still prints help.
        assert!(cli(&env, &srv, &["ls", "--help"]).assert_ok().stdout.contains("--human"));
    })
    .await
}

#[tokio::test]
async fn prints_json_results_and_survives_a_closed_stdout() {
    guard(async {
        let (env, srv) = setup();
        make_file(&env.local("j"), 1234, 1);
        let v = |args: &[&str]| -> serde_json::Value {
            let out = cli(&env, &srv, args);
            serde_json::from_str(out.assert_ok().stdout.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:#?}"))
        };
        let put = v(&["--json", "put", "j"]);
        assert_eq!((put["op"].as_str(), put["size"].as_u64()), (Some("uploaded"), Some(1234)));
        assert_eq!(v(&["pwd", "--json"])["cwd"], "/");
        assert_eq!(v(&["stat", "j", "--json"])["size"], 1234);
        assert_eq!(v(&["df", "--json"])["used_bytes"], 1234);
        assert_eq!(v(&["sum", "j", "--json"])["size"], 1234);
        assert_eq!(v(&["mkdir", "m", "--json"])["ok"], true);
        // --progress json: JSON lines on stderr.
        let out = cli(&env, &srv, &["--progress", "json", "get", "j", "j2"]);
        let events: Vec<serde_json::Value> =
            out.assert_ok().stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        assert!(events.iter().any(|e| e["event"] == "start" && e["total"] == 1234), "{}", out.stderr);
        assert!(events.iter().any(|e| e["event"] == "done"), "{}", out.stderr);
        // `xfer ls | head` with the reader gone: no panic, exit 0.
        let mut cmd = client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, &["ls"]);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        drop(child.stdout.take());
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(0), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        // Full stdout and stderr (`/dev/full`): no panic (exit 101). A failing command exits
        // with its own code, an upload does its work, and results that cannot be written are
        // a local failure (as `ls > /dev/full` is for coreutils).
        let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        for (args, code) in [(&["get", "missing", "x"][..], 4), (&["put", "j", "j3"][..], 0), (&["ls", "-l"][..], 3)] {
            let mut cmd = client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, args);
            cmd.stdout(full()).stderr(full());
            let status = cmd.status().unwrap();
            assert_eq!(status.code(), Some(code), "{args:?} with stdout and stderr full");
        }
        assert!(srv.home("alice").join("j3").is_file());
    })
    .await
}

#[tokio::test]
async fn shell_from_a_pipe_stops_at_the_first_failure() {
    guard(async {
        let (env, srv) = setup();
        let cmd = client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, &["shell"]);
        let out = run_with_stdin(cmd, Some("pwd\nrm missing\nmkdir after\n"));
        assert_eq!(code(&out), Some(4), "{out:#?}");
        assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["/"]);
        assert!(!srv.home("alice").join("after").exists(), "nothing runs after the failure");
        let cmd = client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, &["shell", "-k"]);
        let out = run_with_stdin(cmd, Some("rm missing\nmkdir after\n"));
        assert_eq!(code(&out), Some(4), "{out:#?}");
        assert!(srv.home("alice").join("after").is_dir(), "-k goes on");
        // Quoting follows the shell's rules.
        make_file(&env.local("with space"), 5, 1);
        let cmd = client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, &["shell"]);
        run_with_stdin(cmd, Some("put 'with space' \"r e\"\n")).assert_ok();
        assert!(srv.home("alice").join("r e").is_file());
    })
    .await
}

#[tokio::test]
async fn accepts_user_at_host_ipv6_scp_paths_and_the_default_port() {
    guard(async {
        let env = TestEnv::new();
        env.configure(&[]);
        add_user(&env, "alice", "10MiB", PW).assert_ok();
        let srv = env.start_on("[::1]:0");
        let port = srv.addr.port();
        make_file(&env.local("f"), 10, 1);
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.args(["--server", &format!("alice@[::1]:{port}"), "--accept-new-host", "put", "f"]);
        {
            cmd.env("XFER_PASSWORD", PW);
            run(cmd)
        }
        .assert_ok();
        assert!(srv.home("alice").join("f").is_file());
        // scp-style target: the user comes from the path, the port from --server.
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.args(["--server", &format!("[::1]:{port}"), "--accept-new-host", "put", "f", "alice@[::1]:g"]);
        let out = {
            cmd.env("XFER_PASSWORD", PW);
            run(cmd)
        };
        out.assert_ok();
        assert!(srv.home("alice").join("g").is_file(), "{out:#?}");
        assert!(!srv.home("alice").join("alice@[::1]:g").exists());
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.args(["--server", &format!("[::1]:{port}"), "--accept-new-host", "put", "f", "notes:x"]);
        let out = {
            cmd.env("XFER_PASSWORD", PW);
            run(cmd)
        };
        assert_eq!(code(&out), Some(2), "{out:#?}");
        assert!(!srv.home("alice").join("notes:x").exists());
        // No port: 7070.
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.args(["--server", "alice@127.0.0.2", "ls"]).env("XFER_PASSWORD", PW);
        let out = run(cmd);
        assert!(out.stderr.contains("127.0.0.2:7070"), "{out:#?}");
    })
    .await
}

#[tokio::test]
async fn resumes_by_default_and_starts_over_when_the_partial_differs() {
    guard(async {
        let (env, srv) = setup();
        let data = make_file(&srv.home("alice").join("r.bin"), 3 * MIB as usize, 7);
        let partial = partial_path(&env.local("r.bin"));
        std::fs::write(&partial, &data[..MIB as usize]).unwrap();
        let out = cli(&env, &srv, &["get", "--transport", "tcp", "r.bin"]);
        assert!(out.assert_ok().stderr.contains("resumed at 1.00 MiB"), "{}", out.stderr);
        assert_eq!(std::fs::read(env.local("r.bin")).unwrap(), data);
        // A partial that does not match: started over, still correct.
        std::fs::remove_file(env.local("r.bin")).unwrap();
        std::fs::write(&partial, vec![0u8; MIB as usize]).unwrap();
        let out = cli(&env, &srv, &["get", "--transport", "tcp", "r.bin"]);
        assert!(out.assert_ok().stderr.contains("starting over"), "{}", out.stderr);
        assert_eq!(std::fs::read(env.local("r.bin")).unwrap(), data);
        // --no-resume discards a matching partial.
        std::fs::remove_file(env.local("r.bin")).unwrap();
        std::fs::write(&partial, &data[..MIB as usize]).unwrap();
        let out = cli(&env, &srv, &["get", "--no-resume", "--transport", "tcp", "r.bin"]);
        assert!(!out.assert_ok().stderr.contains("resumed"), "{}", out.stderr);
        assert_eq!(std::fs::read(env.local("r.bin")).unwrap(), data);
    })
    .await
}

#[test]
fn user_add_refuses_a_directory_that_is_not_a_server_root() {
    let env = TestEnv::new();
    let mut cmd = admin(&env, &["add", "alice", "--quota", "unlimited"]);
    cmd.env("XFER_PASSWORD", "pw");
    let out = run(cmd);
    assert_eq!(code(&out), Some(3), "{out:#?}");
    assert!(out.assert_one_line_error().contains("--init"));
    assert!(!env.root.join("xfer.db").exists(), "no store created");
    let out = add_user(&env, "alice", "unlimited", "pw");
    assert!(out.assert_ok().stdout.contains(&format!("root {}", env.root.display())), "{}", out.stdout);
    let list = run(admin(&env, &["list"]));
    assert!(list.assert_ok().stdout.contains("unlimited"), "{}", list.stdout);
}

#[test]
fn prints_completions_and_a_man_page() {
    let env = TestEnv::new();
    let mut cmd = xfer_cmd(&env.config_dir, &env.work);
    cmd.args(["completions", "bash"]);
    assert!(run(cmd).assert_ok().stdout.contains("complete"), "bash completion script");
    let mut cmd = xfer_cmd(&env.config_dir, &env.work);
    cmd.arg("man");
    assert!(run(cmd).assert_ok().stdout.contains(".TH"), "roff man page");
}

// ---------------------------------------------------------------------------------------------
// The interactive shell through a real pseudo-terminal.

fn pty_shell(env: &TestEnv, addr: &str) -> expectrl::session::OsSession {
    let mut cmd = client_cmd(addr, "alice", PW, &env.config_dir, &env.work, &["shell"]);
    cmd.stdin(std::process::Stdio::inherit());
    let mut p = expectrl::Session::spawn(cmd).expect("spawn the shell on a pty");
    p.set_expect_timeout(Some(STEP));
    p
}

#[test]
fn shell_in_a_terminal_completes_cancels_reconnects_and_keeps_history() {
    use expectrl::{ControlCode, Expect};
    let env = TestEnv::new();
    env.configure(&[]);
    add_user(&env, "alice", "1GiB", PW).assert_ok();
    let srv = env.start();
    let addr = srv.addr_string();
    make_file(&srv.home("alice").join("completeme.txt"), 10, 1);
    make_big_file(&srv.home("alice").join("big.bin"), 40 * MIB, 2);
    let mut p = pty_shell(&env, &addr);
    p.expect("xfer:/> ").expect("prompt");
    // Tab completes a command and a remote name.
    p.send("sta").unwrap();
    p.send("\t").unwrap();
    p.send("comp").unwrap();
    p.send("\t").unwrap();
    p.send("\r").unwrap();
    p.expect("completeme.txt file 10 bytes").expect("completed stat");
    p.expect("xfer:/> ").unwrap();
    // Ctrl-C in the middle of a rate-limited download: back at the prompt, partial kept.
    p.send_line("get --rate-limit 2M big.bin").unwrap();
    let partial = partial_path(&env.local("big.bin"));
    assert!(wait_until_blocking(STEP, || file_len(&partial).is_some_and(|n| n > 0)), "download started");
    p.send(ControlCode::EndOfText).unwrap();
    p.expect("interrupted").expect("Ctrl-C reported");
    p.expect("kept").expect("says what was kept");
    p.expect("xfer:/> ").expect("back at the prompt");
    assert!(file_len(&partial).is_some_and(|n| n > 0 && n < 40 * MIB), "partial kept");
    // The next command logs in again (the interrupted transfer's connection was dropped).
    p.send_line("cd .").unwrap();
    p.expect("xfer:/> ").unwrap();
    // The server restarts: the next command logs in again by itself.
    drop(srv);
    let srv = env.start_on(&addr);
    p.send_line("pwd").unwrap();
    p.expect("reconnecting").expect("reconnect noted");
    p.expect("\n/").expect("pwd after reconnect");
    p.expect("xfer:/> ").unwrap();
    p.send_line("get big.bin").unwrap();
    p.expect("resumed at").expect("the download resumed");
    p.expect("xfer:/> ").unwrap();
    assert_eq!(md5_file(&env.local("big.bin")), md5_file(&srv.home("alice").join("big.bin")));
    p.send_line("exit").unwrap();
    p.expect(expectrl::Eof).expect("shell exits");
    let history = std::fs::read_to_string(env.config_dir.join("history")).unwrap();
    assert!(history.contains("get --rate-limit 2M big.bin") && history.contains("pwd"), "{history}");
}

#[test]
fn ctrl_c_keeps_the_partial_says_how_much_and_exits_130() {
    let env = TestEnv::new();
    env.configure(&[]);
    add_user(&env, "alice", "1GiB", PW).assert_ok();
    let srv = env.start();
    let want = make_big_file(&srv.home("alice").join("big.bin"), 40 * MIB, 3);
    let mut cmd = client_cmd(
        &srv.addr_string(),
        "alice",
        PW,
        &env.config_dir,
        &env.work,
        &["get", "--rate-limit", "2M", "big.bin"],
    );
    let err_path = env.tmp.path().join("get.err");
    cmd.stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = ChildGuard::spawn(cmd);
    let partial = partial_path(&env.local("big.bin"));
    assert!(wait_until_blocking(STEP, || file_len(&partial).is_some_and(|n| n > 0)), "download started");
    assert!(Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap().success());
    let status = child.wait_timeout(STEP).expect("exits after SIGINT");
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted") && err.contains("kept") && err.contains("run the same command again"), "{err}");
    assert!(!env.local("big.bin").exists(), "nothing under the final name");
    let out = cli(&env, &srv, &["get", "big.bin"]);
    assert!(out.assert_ok().stderr.contains("resumed at"), "{}", out.stderr);
    assert_eq!(md5_file(&env.local("big.bin")), want);
}

#[test]
fn shell_up_arrow_recalls_a_command_from_the_previous_session() {
    use expectrl::Expect;
    let env = TestEnv::new();
    env.configure(&[]);
    add_user(&env, "alice", "1GiB", PW).assert_ok();
    let srv = env.start();
    let addr = srv.addr_string();
    make_file(&srv.home("alice").join("marker.txt"), 10, 1);
    let mut p = pty_shell(&env, &addr);
    p.expect("xfer:/> ").expect("prompt");
    p.send_line("stat marker.txt").unwrap();
    p.expect("marker.txt file 10 bytes").expect("stat");
    p.expect("xfer:/> ").unwrap();
    p.send_line("exit").unwrap();
    p.expect(expectrl::Eof).expect("shell exits");
    // A new shell: the up arrow walks back through the previous one's commands (`exit` first).
    let mut p = pty_shell(&env, &addr);
    p.expect("xfer:/> ").expect("prompt");
    p.send("\x1b[A").unwrap();
    p.send("\x1b[A").unwrap();
    p.send("\r").unwrap();
    p.expect("marker.txt file 10 bytes").expect("the recalled command ran");
    p.expect("xfer:/> ").unwrap();
    p.send_line("exit").unwrap();
    p.expect(expectrl::Eof).expect("shell exits");
}
