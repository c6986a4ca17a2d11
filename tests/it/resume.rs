//! Interrupted transfers through the real CLI: killed clients, a killed server, changed
//! sources, and resume with nothing to resume.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

const PW: &str = "resume-pw";
/// Large enough that a transfer is still running when the test interrupts it.
const BIG: u64 = 256 * MIB;
/// Interrupt once this much has arrived.
const INTERRUPT_AT: u64 = 16 * MIB;

fn quiet(mut cmd: Command) -> Command {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd
}

/// Starts `cmd`, waits until `watched` holds more than INTERRUPT_AT bytes, then SIGKILLs the
/// process named by `kill`. Panics if the transfer finished (or died) before that.
fn interrupt_when_grown(child: &mut ChildGuard, watched: &Path, finished: &Path) {
    let grew = wait_until_blocking(STEP, || {
        file_len(watched).is_some_and(|n| n > INTERRUPT_AT)
            || finished.exists()
            || child.child.try_wait().unwrap().is_some()
    });
    assert!(grew, "transfer never got past {INTERRUPT_AT} bytes");
    assert!(!finished.exists(), "test setup: the transfer completed before it could be interrupted");
    assert!(child.try_wait().is_none(), "test setup: the transfer process ended on its own");
}

#[tokio::test]
async fn resumes_upload_after_client_is_killed() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 1024 * MIB, None);
        let local = env.local("big.bin");
        let want = make_big_file(&local, BIG, 1);
        let home = srv.home("alice");
        let part = home.join(".big.bin.xfer-part");
        let addr = srv.addr_string();

        let put = client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["put", "big.bin"]);
        let mut child = ChildGuard::spawn(quiet(put));
        interrupt_when_grown(&mut child, &part, &home.join("big.bin"));
        child.kill();

        // The server notices the lost connection and keeps the verified prefix.
        assert!(wait_until(STEP, || srv.user("alice").reserved_bytes == 0).await, "upload never settled");
        let kept = file_len(&part).expect("partial kept after the client was killed");
        assert!(kept > 0 && kept < BIG, "kept {kept}");
        assert!(!home.join("big.bin").exists());

        let out = run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["put", "--resume", "big.bin"]));
        out.assert_ok();
        assert!(out.stderr.contains("resumed at"), "output should mention the resume: {}", out.stderr);
        assert_eq!(md5_file(&home.join("big.bin")), want);
        assert!(!part.exists());
        let sum = run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["sum", "big.bin"]));
        assert!(sum.assert_ok().stdout.starts_with(&hex(&want)), "{}", sum.stdout);
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (BIG, 1, 0));
    })
    .await
}

#[tokio::test]
async fn resumes_download_after_client_is_killed() {
    guard(async {
        let env = TestEnv::new();
        let want = make_big_file(&env.home("alice").join("big.bin"), BIG, 2);
        let srv = env.start();
        srv.add_user("alice", PW, 1024 * MIB, None);
        let addr = srv.addr_string();
        let local = env.local("big.bin");
        let part = partial_path(&local);

        let get = client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["get", "big.bin"]);
        let mut child = ChildGuard::spawn(quiet(get));
        interrupt_when_grown(&mut child, &part, &local);
        child.kill();
        assert!(!local.exists(), "the final local name appeared before the download completed");
        let kept = file_len(&part).expect("local partial kept");
        assert!(kept > 0 && kept < BIG, "kept {kept}");

        let out = run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["get", "-c", "big.bin"]));
        out.assert_ok();
        assert!(out.stderr.contains("resumed at"), "output should mention the resume: {}", out.stderr);
        assert_eq!(md5_file(&local), want);
        assert!(!part.exists(), "partial left after the resumed download");
    })
    .await
}

#[test]
fn resumes_upload_after_server_is_killed_and_restarted() {
    let env = TestEnv::new();
    env.configure(&[]);
    let mut add = xfer_cmd(&env.config_dir, &env.work);
    add.args(["user", "add", "alice", "--quota", "1GiB", "--root"]).arg(&env.root).env("XFER_PASSWORD", PW);
    run(add).assert_ok();
    let local = env.local("big.bin");
    let want = make_big_file(&local, BIG, 3);
    let home = env.home("alice");
    let part = home.join(".big.bin.xfer-part");
    let log = env.tmp.path().join("server.log");
    let mut srv = ServerProcess::start(&env.root, "127.0.0.1:0", &log, &[]);
    let addr = srv.addr.clone();

    let put = client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["put", "big.bin"]);
    let mut child = ChildGuard::spawn(quiet(put));
    interrupt_when_grown(&mut child, &part, &home.join("big.bin"));
    srv.kill(); // SIGKILL: no graceful save
    let status = child.wait_timeout(STEP).expect("client did not notice the server died");
    assert!(!status.success(), "an interrupted upload must not report success");
    let kept = file_len(&part).expect("partial survives the server crash");
    assert!(kept < BIG);
    assert!(!home.join("big.bin").exists());

    let mut srv = ServerProcess::start(&env.root, &addr, &log, &[]);
    let out = run(client_cmd(&srv.addr, "alice", PW, &env.config_dir, &env.work, &["put", "--resume", "big.bin"]));
    out.assert_ok();
    if kept > 0 {
        assert!(out.stderr.contains("resumed at"), "{}", out.stdout);
    }
    assert_eq!(md5_file(&home.join("big.bin")), want);
    assert!(!part.exists());
    assert!(srv.terminate().is_some());
}

/// Leaves a server-side partial of `data[..n]` for `name` by sending it over a raw connection
/// that is then dropped; waits until the server has settled it.
async fn leave_partial(srv: &TestServer, name: &str, data: &[u8], n: usize) {
    {
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put(name, data.len() as u64, false).await;
        raw.send_range(data, 0, n).await;
        let part = srv.home("alice").join(format!(".{name}.xfer-part"));
        assert!(wait_until(STEP, || file_len(&part) == Some(n as u64)).await);
    }
    assert!(wait_until(STEP, || srv.user("alice").reserved_bytes == 0).await, "upload never settled");
}

#[tokio::test]
async fn rejects_upload_resume_when_source_changed() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 100 * MIB, None);
        let local = env.local("doc.bin");
        let mut data = make_file(&local, 4 * MIB as usize, 4);
        leave_partial(&srv, "doc.bin", &data, 2 * MIB as usize).await;
        let part = srv.home("alice").join(".doc.bin.xfer-part");
        let kept = std::fs::read(&part).unwrap();

        // The local file changes in its first bytes after the interruption.
        data[..16].copy_from_slice(b"CHANGED CHANGED!");
        std::fs::write(&local, &data).unwrap();
        let addr = srv.addr_string();
        let out = run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["put", "--resume", "doc.bin"]));
        let line = out.assert_one_line_error();
        assert!(line.contains("source changed"), "message should say the source changed: {line}");
        assert!(!srv.home("alice").join("doc.bin").exists(), "a mixed file was published");
        assert_eq!(std::fs::read(&part).unwrap(), kept, "the server's partial was altered");

        // A local file now shorter than the server's partial is refused too.
        std::fs::write(&local, &data[..MIB as usize]).unwrap();
        let out = run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["put", "-c", "doc.bin"]));
        let line = out.assert_one_line_error();
        assert!(line.contains("--no-resume"), "message should say how to recover: {line}");
        assert!(!srv.home("alice").join("doc.bin").exists());

        // Uploading again without --resume replaces the stale partial.
        std::fs::write(&local, &data).unwrap();
        run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["put", "doc.bin"])).assert_ok();
        assert_eq!(md5_file(&srv.home("alice").join("doc.bin")), md5_bytes(&data));
        assert!(!part.exists());
    })
    .await
}

#[tokio::test]
async fn rejects_download_resume_when_server_file_changed() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 100 * MIB, None);
        let mut data = make_file(&srv.home("alice").join("doc.bin"), 3 * MIB as usize, 5);
        let local = env.local("doc.bin");
        // A local partial whose bytes do not match the start of the server's file.
        let mut stale = data[..MIB as usize].to_vec();
        stale[0] ^= 0xff;
        std::fs::write(partial_path(&local), &stale).unwrap();
        let addr = srv.addr_string();
        let out = run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["get", "-c", "doc.bin"]));
        let line = out.assert_one_line_error();
        assert!(line.contains("differ"), "message should say the bytes differ: {line}");
        assert!(!local.exists());
        assert_eq!(std::fs::read(partial_path(&local)).unwrap(), stale, "local partial was altered");
        // A matching prefix resumes.
        std::fs::write(partial_path(&local), &data[..MIB as usize]).unwrap();
        let out = run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["get", "-c", "doc.bin"]));
        assert!(out.assert_ok().stderr.contains("resumed at"), "{}", out.stdout);
        assert_eq!(std::fs::read(&local).unwrap(), data);
        // A partial longer than the server's file is refused.
        data.truncate(10);
        std::fs::write(partial_path(&env.local("short.bin")), &data).unwrap();
        std::fs::write(srv.home("alice").join("short.bin"), &data[..5]).unwrap();
        let out = run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["get", "-c", "short.bin"]));
        out.assert_one_line_error();
        assert!(!env.local("short.bin").exists());
    })
    .await
}

#[tokio::test]
async fn uploads_from_zero_when_resuming_without_partial() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 100 * MIB, None);
        let local = env.local("fresh.bin");
        let data = make_file(&local, 3 * MIB as usize + 7, 6);
        let addr = srv.addr_string();
        let out = run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["put", "--resume", "fresh.bin"]));
        out.assert_ok();
        assert!(!out.stderr.contains("resumed"), "nothing to resume: {}", out.stderr);
        assert_eq!(md5_file(&srv.home("alice").join("fresh.bin")), md5_bytes(&data));
        // Downloads likewise.
        let out =
            run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["get", "-c", "fresh.bin", "copy.bin"]));
        out.assert_ok();
        assert!(!out.stderr.contains("resumed"), "{}", out.stdout);
        assert_eq!(std::fs::read(env.local("copy.bin")).unwrap(), data);
    })
    .await
}

#[tokio::test]
async fn resumes_upload_from_kept_partial_through_cli() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 100 * MIB, None);
        let local = env.local("doc.bin");
        let data = make_file(&local, 4 * MIB as usize + 3, 7);
        leave_partial(&srv, "doc.bin", &data, 2 * MIB as usize).await;
        let addr = srv.addr_string();
        let out = run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["put", "--resume", "doc.bin"]));
        assert!(out.assert_ok().stderr.contains("resumed at 2.00 MiB"), "{}", out.stderr);
        assert_eq!(md5_file(&srv.home("alice").join("doc.bin")), md5_bytes(&data));
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (data.len() as u64, 1, 0));
    })
    .await
}
