//! Byte and file-count quotas: enforcement before data moves, under concurrency, and usage
//! accounting through deletes, overwrites, restarts and admin changes.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use xfer::proto::{ErrorCode, Request, Response, Transport};
use xfer::transfer::progress::no_progress;

const PW: &str = "quota-pw";

/// Asserts the store's usage equals what is on disk and nothing is reserved.
pub fn assert_usage_matches_disk(srv: &TestServer, user: &str) {
    let u = srv.user(user);
    let (bytes, files) = disk_entries(&srv.home(user));
    assert_eq!((u.used_bytes, u.used_files), (bytes, files), "store usage vs disk for {user}");
    assert_eq!((u.reserved_bytes, u.reserved_files), (0, 0), "reservations left behind for {user}");
}

#[tokio::test]
async fn rejects_upload_bigger_than_quota_before_any_data_moves() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        // Protocol level: the refusal comes instead of PutReady, so no chunk is ever asked for.
        let mut raw = srv.raw("alice", PW).await;
        let req = Request::Put { path: "big".into(), size: MIB + 1, resume: false, transport: Transport::Tcp };
        match raw.call(&req).await {
            Response::Error { code: ErrorCode::QuotaExceeded, message } => {
                assert!(message.contains("quota"), "{message}")
            }
            other => panic!("expected QuotaExceeded instead of PutReady, got {other:?}"),
        }
        // Client level, same outcome; no partial file is left.
        let mut c = srv.connect("alice", PW).await;
        let local = env.local("big");
        make_file(&local, 2 * MIB as usize, 1);
        assert_eq!(code_of(c.put(&local, "big", false, no_progress()).await), ErrorCode::QuotaExceeded);
        assert!(dir_names(&srv.home("alice")).is_empty(), "left behind: {:?}", dir_names(&srv.home("alice")));
        let (used, quota, files, _, reserved) = df_tuple(c.df().await.unwrap());
        assert_eq!((used, quota, files, reserved), (0, MIB, 0, 0));
        // Exactly the quota fits.
        let fits = env.local("fits");
        make_file(&fits, MIB as usize, 2);
        c.put(&fits, "fits", false, no_progress()).await.unwrap();
        let one = env.local("one");
        make_file(&one, 1, 3);
        assert_eq!(code_of(c.put(&one, "one", false, no_progress()).await), ErrorCode::QuotaExceeded);
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}

#[tokio::test]
async fn rejects_files_beyond_max_files() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, Some(2));
        let mut c = srv.connect("alice", PW).await;
        let local = env.local("f");
        make_file(&local, 100, 1);
        c.put(&local, "a", false, no_progress()).await.unwrap();
        c.put(&local, "b", false, no_progress()).await.unwrap();
        assert_eq!(code_of(c.put(&local, "c", false, no_progress()).await), ErrorCode::FileQuotaExceeded);
        assert!(!srv.home("alice").join("c").exists());
        // QUOTA-1: an overwrite's partial is an entry of its own until the rename, so at the
        // limit even replacing a file is refused.
        make_file(&local, 200, 2);
        assert_eq!(code_of(c.put(&local, "a", false, no_progress()).await), ErrorCode::FileQuotaExceeded);
        c.remove("b").await.unwrap();
        // With one entry free, replacing a file ends with the count it had.
        c.put(&local, "a", false, no_progress()).await.unwrap();
        let (_, _, files, max, _) = df_tuple(c.df().await.unwrap());
        assert_eq!((files, max), (1, Some(2)));
        c.put(&local, "c", false, no_progress()).await.unwrap();
        assert_eq!(dir_names(&srv.home("alice")), ["a", "c"]);
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}

#[tokio::test]
async fn never_exceeds_quota_under_parallel_uploads() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        let quota = 5 * MIB + MIB / 2;
        srv.add_user("alice", PW, quota, None);
        const N: usize = 12;
        let mut clients = Vec::new();
        for i in 0..N {
            let local = env.local(&format!("src{i}"));
            make_file(&local, MIB as usize, i as u64 + 10);
            clients.push((srv.connect("alice", PW).await, local));
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let mut tasks = Vec::new();
        for (i, (mut c, local)) in clients.into_iter().enumerate() {
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let r = c.put(&local, &format!("up{i}"), false, no_progress()).await;
                r.map(|s| s.size).map_err(|e| e.code())
            }));
        }
        let ok = count_uploads_refused_only_by_quota(tasks, MIB).await;
        assert!(ok * MIB <= quota, "{ok} uploads of 1 MiB succeeded under a {quota} byte quota");
        assert_eq!(ok, 5, "refusals must not leak quota: five 1 MiB files fit in 5.5 MiB");
        let mut c = srv.connect("alice", PW).await;
        let (used, _, files, _, reserved) = df_tuple(c.df().await.unwrap());
        assert!(used <= quota);
        assert_eq!((used, files, reserved), (ok * MIB, ok, 0));
        assert_eq!(disk_entries(&srv.home("alice")), (ok * MIB, ok), "{:?}", dir_names(&srv.home("alice")));
        assert_usage_matches_disk(&srv, "alice");
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn releases_usage_on_delete() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 3 * MIB, None);
        let mut c = srv.connect("alice", PW).await;
        let local = env.local("f");
        make_file(&local, 2 * MIB as usize, 1);
        c.put(&local, "f", false, no_progress()).await.unwrap();
        let (used, _, files, _, _) = df_tuple(c.df().await.unwrap());
        assert_eq!((used, files), (2 * MIB, 1));
        // A second 2 MiB file does not fit until the first is deleted.
        assert_eq!(code_of(c.put(&local, "g", false, no_progress()).await), ErrorCode::QuotaExceeded);
        c.remove("f").await.unwrap();
        let (used, _, files, _, _) = df_tuple(c.df().await.unwrap());
        assert_eq!((used, files), (0, 0));
        c.put(&local, "g", false, no_progress()).await.unwrap();
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}

#[tokio::test]
async fn accounts_overwrite_and_rename_over_by_replaced_size() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 4 * MIB, None);
        let mut c = srv.connect("alice", PW).await;
        let big = env.local("big");
        make_file(&big, 3 * MIB as usize, 1);
        let small = env.local("small");
        make_file(&small, MIB as usize, 2);
        c.put(&big, "f", false, no_progress()).await.unwrap();
        // 3 MiB used of 4: replacing it with 1 MiB must be allowed and leave 1 MiB used.
        c.put(&small, "f", false, no_progress()).await.unwrap();
        let (used, _, files, _, _) = df_tuple(c.df().await.unwrap());
        assert_eq!((used, files), (MIB, 1));
        assert_usage_matches_disk(&srv, "alice");
        // Growing an existing file only needs the difference: 1 MiB -> 3 MiB with 4 MiB quota.
        c.put(&big, "f", false, no_progress()).await.unwrap();
        let (used, _, _, _, _) = df_tuple(c.df().await.unwrap());
        assert_eq!(used, 3 * MIB);
        // Renaming a file over another frees the replaced one.
        c.put(&small, "g", false, no_progress()).await.unwrap();
        c.rename("g", "f").await.unwrap();
        let (used, _, files, _, _) = df_tuple(c.df().await.unwrap());
        assert_eq!((used, files), (MIB, 1));
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}

#[tokio::test]
async fn reconciles_usage_with_disk_after_restart() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        let mut c = srv.connect("alice", PW).await;
        let local = env.local("f");
        make_file(&local, MIB as usize, 1);
        c.put(&local, "f", false, no_progress()).await.unwrap();
        c.bye().await;
        srv.stop().await;

        // While the server is down: a file appears in the home behind its back, in a subdir.
        let home = env.home("alice");
        std::fs::create_dir(home.join("sub")).unwrap();
        std::fs::write(home.join("sub/dropped"), vec![7u8; 300_000]).unwrap();

        let srv = env.start();
        let mut c = srv.connect("alice", PW).await;
        let (used, _, files, _, reserved) = df_tuple(c.df().await.unwrap());
        // Two files and the directory (QUOTA-5).
        assert_eq!((used, files, reserved), (MIB + 300_000, 3, 0));
        // And the restored usage is enforced: 10 MiB - used is what is left.
        let rest = env.local("rest");
        make_file(&rest, (10 * MIB - MIB - 300_000 + 1) as usize, 2);
        assert_eq!(code_of(c.put(&rest, "rest", false, no_progress()).await), ErrorCode::QuotaExceeded);
        // Files that vanished while the server was down are released as well.
        c.bye().await;
        srv.stop().await;
        std::fs::remove_file(home.join("f")).unwrap();
        let srv = env.start();
        assert_eq!((srv.user("alice").used_bytes, srv.user("alice").used_files), (300_000, 2));
    })
    .await
}

#[tokio::test]
async fn applies_quota_change_from_cli_without_restart() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut c = srv.connect("alice", PW).await;
        let local = env.local("f");
        make_file(&local, 2 * MIB as usize, 1);
        assert_eq!(code_of(c.put(&local, "f", false, no_progress()).await), ErrorCode::QuotaExceeded);

        let quota = |args: &[&str]| {
            let mut cmd = xfer_cmd(&env.config_dir, &env.work);
            cmd.args(["user", "quota", "alice"]).args(args).arg("--root").arg(&env.root);
            run(cmd)
        };
        quota(&["--quota", "3MiB"]).assert_ok();
        // Same session, no restart: the new quota applies to the next upload.
        c.put(&local, "f", false, no_progress()).await.expect("upload under the raised quota");
        let (used, q, _, _, _) = df_tuple(c.df().await.unwrap());
        assert_eq!((used, q), (2 * MIB, 3 * MIB));

        quota(&["--quota", "3MiB", "--max-files", "1"]).assert_ok();
        let small = env.local("s");
        make_file(&small, 10, 2);
        assert_eq!(code_of(c.put(&small, "s", false, no_progress()).await), ErrorCode::FileQuotaExceeded);
        quota(&["--quota", "3MiB", "--max-files", "0"]).assert_ok(); // 0 removes the limit
        c.put(&small, "s", false, no_progress()).await.unwrap();
        let (_, _, files, max, _) = df_tuple(c.df().await.unwrap());
        assert_eq!((files, max), (2, None));
    })
    .await
}

#[tokio::test]
async fn releases_reservation_of_failed_and_interrupted_uploads() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 4 * MIB, None);
        let data = pseudo_random(3 * MIB as usize, 4);
        {
            let mut raw = srv.raw("alice", PW).await;
            raw.start_put("x", data.len() as u64, false).await;
            assert!(srv.user("alice").reserved_bytes >= 3 * MIB, "upload in flight holds a reservation");
            raw.send_range(&data, 0, MIB as usize).await;
            let part = srv.home("alice").join(".x.xfer-part");
            assert!(wait_until(STEP, || file_len(&part) == Some(MIB)).await);
        }
        // Dropped mid-upload: the kept partial is counted as used, nothing stays reserved.
        assert!(wait_until(STEP, || srv.user("alice").reserved_bytes == 0).await, "reservation never released");
        assert_usage_matches_disk(&srv, "alice");
        assert_eq!(srv.user("alice").used_bytes, MIB);
        // An upload explicitly aborted at once also leaves nothing reserved.
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("y", 100, false).await;
        raw.send(&Request::Abort).await;
        let r = raw.recv().await;
        assert!(matches!(r, Response::Ok), "{r:?}");
        assert_eq!(srv.user("alice").reserved_bytes, 0);
        assert_usage_matches_disk(&srv, "alice");
        // Starting "x" over without resume replaces its kept partial; usage follows the disk.
        let local = env.local("x");
        std::fs::write(&local, &data).unwrap();
        let mut c = srv.connect("alice", PW).await;
        c.put(&local, "x", false, no_progress()).await.unwrap();
        assert_eq!(md5_file(&srv.home("alice").join("x")), md5_bytes(&data));
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}

#[tokio::test]
async fn reconciles_without_following_symlinks_and_counts_partials() {
    guard(async {
        let env = TestEnv::new();
        let outside = tempfile::tempdir().unwrap();
        make_file(&outside.path().join("huge"), 3 * MIB as usize, 1);
        let home = env.home("alice");
        std::os::unix::fs::symlink(outside.path().join("huge"), home.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), home.join("dirlink")).unwrap();
        std::fs::write(home.join(".p.xfer-part"), vec![1u8; 1000]).unwrap();
        std::fs::write(home.join("real"), vec![2u8; 500]).unwrap();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        // The user did not exist at start; restart so the start-up scan measures the home.
        srv.stop().await;
        let srv = env.start();
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files), (1500, 2), "partials count, symlinks do not");
    })
    .await
}

#[tokio::test]
async fn rejects_absurd_sizes_without_overflow() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut raw = srv.raw("alice", PW).await;
        for size in [u64::MAX, i64::MAX as u64 + 1, i64::MAX as u64] {
            let req = Request::Put { path: "x".into(), size, resume: false, transport: Transport::Tcp };
            match raw.call(&req).await {
                Response::Error { code: ErrorCode::QuotaExceeded, .. } => {}
                other => panic!("size {size}: expected QuotaExceeded, got {other:?}"),
            }
        }
        assert!(dir_names(&srv.home("alice")).is_empty());
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.reserved_bytes), (0, 0));
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn reports_df_of_a_deleted_account_as_not_authenticated() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut c = srv.connect("alice", PW).await;
        df_tuple(c.df().await.unwrap());
        let mut del = xfer_cmd(&env.config_dir, &env.work);
        del.args(["user", "del", "alice", "--root"]).arg(&env.root);
        run(del).assert_ok();
        assert_eq!(code_of(c.df().await), ErrorCode::NotAuthenticated);
    })
    .await
}

/// Moving the directory of an upload in progress would leave the upload writing where it
/// cannot be settled and its bytes unaccounted; the server refuses the move until the upload
/// ends, and usage keeps matching the disk.
#[tokio::test]
async fn rejects_moving_a_directory_while_an_upload_writes_into_it() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 3 * MIB, None);
        let data = pseudo_random(2 * MIB as usize, 30);
        let mut c = srv.connect("alice", PW).await;
        c.mkdir("d").await.unwrap();
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("d/x", data.len() as u64, false).await;
        raw.send_range(&data, 0, data.len()).await;
        let part = srv.home("alice").join("d").join(".x.xfer-part");
        assert!(wait_until(STEP, || file_len(&part) == Some(data.len() as u64)).await);
        assert_eq!(code_of(c.rename("d", "e").await), ErrorCode::Busy);
        assert_eq!(code_of(c.rename("d/.x.xfer-part", "y").await), ErrorCode::InvalidPath);
        let reply = raw.call(&Request::PutEnd { md5: md5_bytes(&data) }).await;
        assert!(matches!(reply, Response::PutDone { .. }), "{reply:?}");
        assert_usage_matches_disk(&srv, "alice");
        c.rename("d", "e").await.expect("rename once the upload is done");
        assert_eq!(file_len(&srv.home("alice").join("e/x")), Some(data.len() as u64));
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// One test per way the quota was escaped (QUOTA-1 to QUOTA-7).

/// Sends a raw `Put`, returning the reply (PutReady or an error).
async fn put_request(raw: &mut Raw, path: &str, size: u64, resume: bool) -> Response {
    raw.call(&Request::Put { path: path.into(), size, resume, transport: Transport::Tcp }).await
}

/// Bytes and entries on disk stay within the quota, and the store accounts for at least that.
fn assert_within_quota(srv: &TestServer, user: &str) {
    let u = srv.user(user);
    let (bytes, entries) = disk_entries(&srv.home(user));
    assert!(bytes <= u.quota_bytes, "{bytes} bytes on disk over a quota of {}", u.quota_bytes);
    if let Some(max) = u.max_files {
        assert!(entries <= max, "{entries} entries on disk over a limit of {max}");
    }
    assert!(u.used_bytes + u.reserved_bytes >= bytes, "store {u:?} below disk bytes {bytes}");
    assert!(u.used_files + u.reserved_files >= entries, "store {u:?} below disk entries {entries}");
}

/// Overwrite, abort, then rename the partial to a new name: this used to grow a 50 MiB /
/// 3-file user past both limits. The overwrite reserves its full size (QUOTA-1) and partial
/// names cannot be renamed (QUOTA-4).
#[tokio::test]
async fn rejects_overwrite_abort_and_partial_rename_escape() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 3 * MIB, Some(3));
        let data = pseudo_random(2 * MIB as usize, 40);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("f", data.len() as u64, false).await;
        raw.send_range(&data, 0, data.len()).await;
        assert!(matches!(raw.call(&Request::PutEnd { md5: md5_bytes(&data) }).await, Response::PutDone { .. }));
        // A same-size overwrite needs the full 2 MiB beside the old file: refused.
        match put_request(&mut raw, "f", data.len() as u64, false).await {
            Response::Error { code: ErrorCode::QuotaExceeded, .. } => {}
            other => panic!("expected QuotaExceeded, got {other:?}"),
        }
        // A smaller overwrite fits; aborting it keeps a charged partial.
        for round in 0..4 {
            match put_request(&mut raw, "f", MIB, false).await {
                Response::PutReady { .. } => {
                    raw.send_range(&data, 0, MIB as usize).await;
                    assert!(matches!(raw.call(&Request::Abort).await, Response::Ok));
                }
                Response::Error { code: ErrorCode::QuotaExceeded, .. } => {}
                other => panic!("round {round}: {other:?}"),
            }
            let r = raw.call(&Request::Rename { from: ".f.xfer-part".into(), to: format!("copy{round}") }).await;
            assert!(matches!(r, Response::Error { code: ErrorCode::InvalidPath, .. }), "{r:?}");
            assert_within_quota(&srv, "alice");
        }
        assert_usage_matches_disk(&srv, "alice");
        srv.assert_no_panics();
    })
    .await
}

/// Overwrite, abort, then resume declaring a far larger size: this grew one file to 32 MiB on
/// a 2 MiB quota. The resume reserves the whole rest of the declared size (QUOTA-1).
#[tokio::test]
async fn rejects_resume_with_a_larger_declared_size_beyond_quota() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 2 * MIB, None);
        let data = pseudo_random(32 * MIB as usize, 41);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("f", 512 * KIB, false).await;
        raw.send_range(&data, 0, 512 * KIB as usize).await;
        assert!(matches!(
            raw.call(&Request::PutEnd { md5: md5_bytes(&data[..512 * KIB as usize]) }).await,
            Response::PutDone { .. }
        ));
        raw.start_put("f", MIB, false).await;
        raw.send_range(&data, 0, 256 * KIB as usize).await;
        assert!(matches!(raw.call(&Request::Abort).await, Response::Ok));
        match put_request(&mut raw, "f", data.len() as u64, true).await {
            Response::Error { code: ErrorCode::QuotaExceeded, .. } => {}
            other => panic!("expected QuotaExceeded, got {other:?}"),
        }
        assert_within_quota(&srv, "alice");
        // A resume to a size that fits goes through and ends exact.
        let size = (MIB + 256 * KIB) as usize;
        let offset = raw.start_put("f", size as u64, true).await;
        assert_eq!(offset, 256 * KIB);
        raw.send_range(&data, offset as usize, size).await;
        let r = raw.call(&Request::PutEnd { md5: md5_bytes(&data[..size]) }).await;
        assert!(matches!(r, Response::PutDone { .. }), "{r:?}");
        assert_usage_matches_disk(&srv, "alice");
        assert_eq!(srv.user("alice").used_bytes, size as u64);
    })
    .await
}

/// `rm` and `mv` of the target from a second session while its overwrite runs: the upload
/// used to commit its full size unchecked. Now the old file's charge goes only at the rename,
/// so whatever the other session does, disk stays within quota (QUOTA-1, QUOTA-3).
#[tokio::test]
async fn rejects_overrun_when_the_target_is_removed_or_moved_mid_overwrite() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 4 * MIB, None);
        let data = pseudo_random(4 * MIB as usize, 42);
        let mut raw = srv.raw("alice", PW).await;
        let mut other = srv.raw("alice", PW).await;
        raw.start_put("f", MIB, false).await;
        raw.send_range(&data, 0, MIB as usize).await;
        assert!(matches!(
            raw.call(&Request::PutEnd { md5: md5_bytes(&data[..MIB as usize]) }).await,
            Response::PutDone { .. }
        ));
        // Declaring 4 MiB over the 1 MiB file does not fit beside it.
        match put_request(&mut raw, "f", 4 * MIB, false).await {
            Response::Error { code: ErrorCode::QuotaExceeded, .. } => {}
            other => panic!("expected QuotaExceeded, got {other:?}"),
        }
        for (round, op) in ["rm", "mv"].into_iter().enumerate() {
            let size = 2 * MIB as usize;
            raw.start_put("f", size as u64, false).await;
            raw.send_range(&data, 0, MIB as usize).await;
            let r = match op {
                "rm" => other.call(&Request::Remove { path: "f".into() }).await,
                _ => other.call(&Request::Rename { from: "f".into(), to: format!("moved{round}") }).await,
            };
            assert!(matches!(r, Response::Ok), "{op}: {r:?}");
            // The second session fills what the first one's removal freed...
            let fill = MIB as usize;
            if let Response::PutReady { .. } = put_request(&mut other, &format!("g{round}"), fill as u64, false).await {
                other.send_range(&data, 0, fill).await;
                let r = other.call(&Request::PutEnd { md5: md5_bytes(&data[..fill]) }).await;
                assert!(matches!(r, Response::PutDone { .. }), "{r:?}");
            }
            assert_within_quota(&srv, "alice");
            // ...and the overwrite still commits within the quota.
            raw.send_range(&data, MIB as usize, size).await;
            let r = raw.call(&Request::PutEnd { md5: md5_bytes(&data[..size]) }).await;
            assert!(matches!(r, Response::PutDone { .. }), "{r:?}");
            assert_within_quota(&srv, "alice");
            assert_usage_matches_disk(&srv, "alice");
            for name in dir_names(&srv.home("alice")).into_iter().filter(|n| n != "f") {
                assert!(matches!(other.call(&Request::Remove { path: name }).await, Response::Ok));
            }
        }
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}

/// Directories count against the entry limit (QUOTA-5): a 5-entry user cannot make a sixth
/// directory, and `rmdir` gives the entry back.
#[tokio::test]
async fn rejects_directories_beyond_the_entry_limit() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, Some(5));
        let mut c = srv.connect("alice", PW).await;
        for i in 0..5 {
            c.mkdir(&format!("d{i}")).await.unwrap();
        }
        assert_eq!(code_of(c.mkdir("d5").await), ErrorCode::FileQuotaExceeded);
        assert_eq!(code_of(c.mkdir("d0/sub").await), ErrorCode::FileQuotaExceeded);
        let local = env.local("f");
        make_file(&local, 10, 1);
        assert_eq!(code_of(c.put(&local, "d0/f", false, no_progress()).await), ErrorCode::FileQuotaExceeded);
        assert_usage_matches_disk(&srv, "alice");
        c.rmdir("d4").await.unwrap();
        c.mkdir("d0/sub").await.unwrap();
        // At the limit even an existing name is refused before the file system is asked; with
        // an entry free, a refused mkdir (it exists) gives its reservation back.
        assert_eq!(code_of(c.mkdir("d0").await), ErrorCode::FileQuotaExceeded);
        c.rmdir("d3").await.unwrap();
        assert_eq!(code_of(c.mkdir("d0").await), ErrorCode::AlreadyExists);
        assert_eq!(srv.user("alice").reserved_files, 0);
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}

/// A user without a file-count limit still cannot exhaust the file system's inodes: the
/// server-wide `default_max_entries` applies (QUOTA-6), and other users go on.
#[tokio::test]
async fn rejects_unlimited_user_beyond_the_default_entry_limit() {
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("default_max_entries", "20")]);
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        srv.add_user("bob", PW, MIB, None);
        let mut c = srv.connect("alice", PW).await;
        let mut made = 0;
        for i in 0..100 {
            match c.mkdir(&format!("d{i}")).await {
                Ok(()) => made += 1,
                Err(e) => {
                    assert_eq!(e.code(), Some(ErrorCode::FileQuotaExceeded));
                    break;
                }
            }
        }
        assert_eq!(made, 20);
        let mut b = srv.connect("bob", PW).await;
        b.mkdir("mine").await.expect("another user is not affected");
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}

/// Partials untouched for longer than `partial_expiry_secs` are deleted with their charge,
/// both at start and while the server runs (QUOTA-7).
#[tokio::test]
async fn accepts_expiry_of_old_partials_and_releases_their_charge() {
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("partial_expiry_secs", "3")]);
        let srv = env.start();
        srv.add_user("alice", PW, 4 * MIB, None);
        let data = pseudo_random(2 * MIB as usize, 43);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("x", data.len() as u64, false).await;
        raw.send_range(&data, 0, MIB as usize).await;
        assert!(matches!(raw.call(&Request::Abort).await, Response::Ok));
        let part = srv.home("alice").join(".x.xfer-part");
        assert_eq!(file_len(&part), Some(MIB));
        assert_eq!(srv.user("alice").used_bytes, MIB);
        // An upload in progress is never swept, however long it runs.
        raw.start_put("y", data.len() as u64, false).await;
        raw.send_range(&data, 0, MIB as usize).await;
        assert!(wait_until(Duration::from_secs(20), || file_len(&part).is_none()).await, "partial never expired");
        // x's charge is released; y's whole declared size stays reserved while it runs.
        let released = wait_until(STEP, || srv.user("alice").used_bytes == 0).await;
        assert!(released, "{:?}", srv.user("alice"));
        assert_eq!(srv.user("alice").reserved_bytes, data.len() as u64);
        assert!(srv.home("alice").join(".y.xfer-part").exists(), "a running upload's partial was swept");
        raw.send_range(&data, MIB as usize, data.len()).await;
        let r = raw.call(&Request::PutEnd { md5: md5_bytes(&data) }).await;
        assert!(matches!(r, Response::PutDone { .. }), "{r:?}");
        assert_usage_matches_disk(&srv, "alice");
        srv.stop().await;

        // At start: a partial older than the limit goes before usage is measured.
        let old = env.home("alice").join(".old.xfer-part");
        std::fs::write(&old, vec![1u8; 1000]).unwrap();
        let week_ago = std::time::SystemTime::now() - Duration::from_secs(7 * 24 * 3600);
        std::fs::File::options().write(true).open(&old).unwrap().set_modified(week_ago).unwrap();
        let srv = env.start();
        assert!(!old.exists());
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}

/// `rm` of a partial that no upload is writing frees exactly what it held; `stat` of one is
/// read-only; moving a directory holding one keeps usage exact (QUOTA-4).
#[tokio::test]
async fn accepts_partial_removal_and_directory_moves_with_exact_accounting() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 4 * MIB, Some(10));
        let data = pseudo_random(2 * MIB as usize, 44);
        let mut raw = srv.raw("alice", PW).await;
        assert!(matches!(raw.call(&Request::Mkdir { path: "d".into() }).await, Response::Ok));
        for name in ["d/a", "d/b"] {
            raw.start_put(name, data.len() as u64, false).await;
            raw.send_range(&data, 0, MIB as usize).await;
            assert!(matches!(raw.call(&Request::Abort).await, Response::Ok));
        }
        assert!(matches!(raw.call(&Request::Stat { path: "d/.a.xfer-part".into() }).await, Response::Stat { .. }));
        assert_usage_matches_disk(&srv, "alice");
        assert!(matches!(raw.call(&Request::Remove { path: "d/.a.xfer-part".into() }).await, Response::Ok));
        assert_usage_matches_disk(&srv, "alice");
        assert!(matches!(raw.call(&Request::Rename { from: "d".into(), to: "e".into() }).await, Response::Ok));
        assert_usage_matches_disk(&srv, "alice");
        let r = raw.call(&Request::Mkdir { path: ".z.xfer-part".into() }).await;
        assert!(matches!(r, Response::Error { code: ErrorCode::InvalidPath, .. }), "{r:?}");
        // The moved partial still resumes under its new name and verifies.
        let offset = raw.start_put("e/b", data.len() as u64, true).await;
        assert_eq!(offset, MIB);
        raw.send_range(&data, MIB as usize, data.len()).await;
        let r = raw.call(&Request::PutEnd { md5: md5_bytes(&data) }).await;
        assert!(matches!(r, Response::PutDone { .. }), "{r:?}");
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}

/// `xfer user list` shows the bytes held by partial uploads in a column of their own.
#[tokio::test]
async fn accepts_user_list_showing_partial_bytes() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        let data = pseudo_random(3 * MIB as usize, 45);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("x", data.len() as u64, false).await;
        raw.send_range(&data, 0, MIB as usize).await;
        assert!(matches!(raw.call(&Request::Abort).await, Response::Ok));
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.args(["user", "list", "--root"]).arg(&env.root);
        let out = run(cmd);
        let text = &out.assert_ok().stdout;
        let header = text.lines().next().unwrap();
        assert!(header.contains("PARTIAL"), "{header}");
        let alice: Vec<&str> = text.lines().find(|l| l.starts_with("alice")).unwrap().split_whitespace().collect();
        // USER USED(2 words) PARTIAL(2 words) QUOTA(2 words) FILES MAX
        assert_eq!(&alice[1..5], ["1.00", "MiB", "1.00", "MiB"], "{alice:?}");
    })
    .await
}

#[path = "quota/model.rs"]
mod model;
