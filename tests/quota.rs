//! Byte and file-count quotas: enforcement before data moves, under concurrency, and usage
//! accounting through deletes, overwrites, restarts and admin changes.

mod support;

use std::sync::Arc;

use support::*;
use xfer::proto::{ErrorCode, Request, Response, Transport};
use xfer::transfer::progress::no_progress;

const PW: &str = "quota-pw";

/// Asserts the store's usage equals what is on disk and nothing is reserved.
fn assert_usage_matches_disk(srv: &TestServer, user: &str) {
    let u = srv.user(user);
    let (bytes, files) = disk_usage(&srv.home(user));
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
        // Replacing an existing file does not add a file.
        make_file(&local, 200, 2);
        c.put(&local, "a", false, no_progress()).await.unwrap();
        let (_, _, files, max, _) = df_tuple(c.df().await.unwrap());
        assert_eq!((files, max), (2, Some(2)));
        c.remove("b").await.unwrap();
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
        let mut ok = 0u64;
        for t in tasks {
            match t.await.unwrap() {
                Ok(size) => {
                    assert_eq!(size, MIB);
                    ok += 1;
                }
                Err(code) => assert_eq!(code, Some(ErrorCode::QuotaExceeded), "only quota refusals expected"),
            }
        }
        assert!(ok * MIB <= quota, "{ok} uploads of 1 MiB succeeded under a {quota} byte quota");
        assert_eq!(ok, 5, "refusals must not leak quota: five 1 MiB files fit in 5.5 MiB");
        let mut c = srv.connect("alice", PW).await;
        let (used, _, files, _, reserved) = df_tuple(c.df().await.unwrap());
        assert!(used <= quota);
        assert_eq!((used, files, reserved), (ok * MIB, ok, 0));
        assert_eq!(disk_usage(&srv.home("alice")), (ok * MIB, ok), "{:?}", dir_names(&srv.home("alice")));
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
        assert_eq!((used, files, reserved), (MIB + 300_000, 2, 0));
        // And the restored usage is enforced: 10 MiB - used is what is left.
        let rest = env.local("rest");
        make_file(&rest, (10 * MIB - MIB - 300_000 + 1) as usize, 2);
        assert_eq!(code_of(c.put(&rest, "rest", false, no_progress()).await), ErrorCode::QuotaExceeded);
        // Files that vanished while the server was down are released as well.
        c.bye().await;
        srv.stop().await;
        std::fs::remove_file(home.join("f")).unwrap();
        let srv = env.start();
        assert_eq!((srv.user("alice").used_bytes, srv.user("alice").used_files), (300_000, 1));
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
        assert_eq!(code_of(c.rename("d/.x.xfer-part", "y").await), ErrorCode::Busy);
        let reply = raw.call(&Request::PutEnd { md5: md5_bytes(&data) }).await;
        assert!(matches!(reply, Response::PutDone { .. }), "{reply:?}");
        assert_usage_matches_disk(&srv, "alice");
        c.rename("d", "e").await.expect("rename once the upload is done");
        assert_eq!(file_len(&srv.home("alice").join("e/x")), Some(data.len() as u64));
        assert_usage_matches_disk(&srv, "alice");
    })
    .await
}
