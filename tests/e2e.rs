//! End-to-end behaviour through the library client against a real in-process server.

mod support;

use support::*;
use xfer::proto::{EntryKind, ErrorCode, Request, Response, CHUNK_SIZE};
use xfer::transfer::progress::no_progress;

const PW: &str = "correct horse";

#[tokio::test]
async fn round_trips_files_of_boundary_sizes_with_matching_md5() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 200 * MIB, None);
        let mut c = srv.connect("alice", PW).await;
        let m = MIB as usize;
        let sizes = [0, 1, m - 1, m, m + 1, 5 * m + 12345, 32 * m];
        for (i, &size) in sizes.iter().enumerate() {
            let name = format!("f{size}");
            let local = env.local(&name);
            let data = make_file(&local, size, i as u64 + 1);
            let want = md5_bytes(&data);
            let up = c.put(&local, &name, false, no_progress()).await.expect("put");
            assert_eq!((up.size, up.md5, up.resumed_from), (size as u64, want, 0), "put summary of {size}");
            // The server's copy is byte-identical.
            assert_eq!(md5_file(&srv.home("alice").join(&name)), want, "server copy of {size}");
            assert_eq!(c.sum(&name).await.unwrap(), (want, size as u64), "sum of {size}");
            let back = env.local(&format!("back{size}"));
            let down = c.get(&name, &back, false, no_progress()).await.expect("get");
            assert_eq!((down.size, down.md5), (size as u64, want), "get summary of {size}");
            assert_eq!(md5_file(&back), want, "downloaded copy of {size}");
            assert!(!partial_path(&back).exists(), "download partial left behind");
        }
        let entries = c.list("/").await.unwrap();
        assert_eq!(entries.len(), sizes.len(), "no partial files remain: {entries:?}");
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn accepts_names_with_spaces_and_non_ascii() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        let mut c = srv.connect("alice", PW).await;
        let name = "my file é😀.bin";
        let local = env.local(name);
        let data = make_file(&local, 70_000, 9);
        c.mkdir("dir with space ü").await.unwrap();
        let remote = format!("dir with space ü/{name}");
        c.put(&local, &remote, false, no_progress()).await.unwrap();
        assert!(srv.home("alice").join("dir with space ü").join(name).is_file());
        let names: Vec<String> = c.list("dir with space ü").await.unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, [name]);
        let back = env.local("back é😀");
        c.get(&remote, &back, false, no_progress()).await.unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), data);
        c.cd("dir with space ü").await.unwrap();
        assert_eq!(c.pwd().await.unwrap(), "/dir with space ü");
        assert_eq!(c.stat(name).await.unwrap().size, 70_000);
    })
    .await
}

#[tokio::test]
async fn accepts_file_commands_and_reports_their_errors() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        let mut c = srv.connect("alice", PW).await;
        let local = env.local("a.bin");
        let data = make_file(&local, 1000, 1);

        assert_eq!(c.pwd().await.unwrap(), "/");
        c.mkdir("d").await.unwrap();
        assert_eq!(code_of(c.mkdir("d").await), ErrorCode::AlreadyExists);
        assert_eq!(code_of(c.mkdir("nope/sub").await), ErrorCode::NotFound);
        assert_eq!(c.cd("d").await.unwrap(), "/d");
        assert_eq!(c.pwd().await.unwrap(), "/d");
        c.put(&local, "a.bin", false, no_progress()).await.unwrap();
        assert!(srv.home("alice").join("d/a.bin").is_file(), "relative put lands in the cwd");
        assert_eq!(c.cd("/").await.unwrap(), "/");
        assert_eq!(code_of(c.cd("d/a.bin").await), ErrorCode::NotADirectory);
        assert_eq!(code_of(c.cd("missing").await), ErrorCode::NotFound);
        assert_eq!(c.pwd().await.unwrap(), "/", "failed cd leaves the cwd");

        let listing = c.list("").await.unwrap();
        assert_eq!(listing.len(), 1);
        assert_eq!((listing[0].name.as_str(), listing[0].kind), ("d", EntryKind::Dir));
        let listing = c.list("d").await.unwrap();
        assert_eq!((listing[0].name.as_str(), listing[0].kind, listing[0].size), ("a.bin", EntryKind::File, 1000));
        // ls of a file describes just that file.
        let one = c.list("d/a.bin").await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, "a.bin");
        assert_eq!(code_of(c.list("missing").await), ErrorCode::NotFound);

        let st = c.stat("d/a.bin").await.unwrap();
        assert_eq!((st.kind, st.size), (EntryKind::File, 1000));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((now - st.mtime).abs() < 3600, "mtime {} is not recent", st.mtime);
        assert_eq!(c.stat("d").await.unwrap().kind, EntryKind::Dir);
        assert_eq!(code_of(c.stat("d/none").await), ErrorCode::NotFound);

        assert_eq!(c.sum("d/a.bin").await.unwrap(), (md5_bytes(&data), 1000));
        assert_eq!(code_of(c.sum("d").await), ErrorCode::IsADirectory);
        assert_eq!(code_of(c.sum("none").await), ErrorCode::NotFound);

        c.rename("d/a.bin", "b.bin").await.unwrap();
        assert!(srv.home("alice").join("b.bin").is_file());
        assert!(!srv.home("alice").join("d/a.bin").exists());
        assert_eq!(code_of(c.rename("none", "x").await), ErrorCode::NotFound);
        assert_eq!(code_of(c.rename("d", "d/inner").await), ErrorCode::InvalidPath);

        assert_eq!(code_of(c.remove("d").await), ErrorCode::IsADirectory);
        assert_eq!(code_of(c.remove("none").await), ErrorCode::NotFound);
        c.rename("b.bin", "d/b.bin").await.unwrap();
        assert_eq!(code_of(c.rmdir("d").await), ErrorCode::DirectoryNotEmpty);
        assert_eq!(code_of(c.rmdir("d/b.bin").await), ErrorCode::NotADirectory);
        assert_eq!(code_of(c.rmdir("/").await), ErrorCode::InvalidPath);
        let (used, quota, files, _, reserved) = df_tuple(c.df().await.unwrap());
        assert_eq!((used, quota, files, reserved), (1000, 10 * MIB, 1, 0));
        c.remove("d/b.bin").await.unwrap();
        c.rmdir("d").await.unwrap();
        assert!(dir_names(&srv.home("alice")).is_empty());
        let (used, _, files, _, _) = df_tuple(c.df().await.unwrap());
        assert_eq!((used, files), (0, 0));
        assert_eq!(code_of(c.get("none", &env.local("none"), false, no_progress()).await), ErrorCode::NotFound);
        assert!(!env.local("none").exists());
        assert!(!partial_path(&env.local("none")).exists());
    })
    .await
}

#[tokio::test]
async fn serves_many_users_at_once_each_in_their_own_home() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        let users: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
        for u in &users {
            srv.add_user(u, &format!("pw-{u}"), 20 * MIB, None);
        }
        let mut tasks = Vec::new();
        for (i, u) in users.iter().enumerate() {
            let u = u.clone();
            let local = env.local(&format!("src{i}"));
            let back = env.local(&format!("back{i}"));
            let data = make_file(&local, 2 * MIB as usize + i * 777, 100 + i as u64);
            let want = md5_bytes(&data);
            let mut c = srv.connect(&u, &format!("pw-{u}")).await;
            tasks.push(tokio::spawn(async move {
                c.put(&local, "same-name.bin", false, no_progress()).await.expect("put");
                c.get("same-name.bin", &back, false, no_progress()).await.expect("get");
                assert_eq!(md5_file(&back), want);
                let listing = c.list("/").await.unwrap();
                assert_eq!(listing.len(), 1, "{u} sees only its own file");
                c.bye().await;
                want
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let want = t.await.expect("user task");
            // Each home holds exactly that user's upload.
            let home = srv.home(&users[i]);
            assert_eq!(dir_names(&home), ["same-name.bin"]);
            assert_eq!(md5_file(&home.join("same-name.bin")), want);
        }
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn keeps_final_name_absent_until_upload_completes() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 20 * MIB, None);
        let home = srv.home("alice");
        let data = pseudo_random(4 * CHUNK_SIZE + 100, 5);
        let mut raw = srv.raw("alice", PW).await;
        assert_eq!(raw.start_put("doc.bin", data.len() as u64, false).await, 0);
        let half = 2 * CHUNK_SIZE;
        raw.send_range(&data, 0, half).await;
        let part = home.join(".doc.bin.xfer-part");
        assert!(wait_until(STEP, || file_len(&part) == Some(half as u64)).await, "partial never reached {half}");
        assert_eq!(dir_names(&home), [".doc.bin.xfer-part"], "only the partial exists mid-upload");
        // Another session does not see the final name either.
        let mut other = srv.connect("alice", PW).await;
        assert_eq!(code_of(other.stat("doc.bin").await), ErrorCode::NotFound);
        raw.send_range(&data, half, data.len()).await;
        let md5 = md5_bytes(&data);
        match raw.call(&Request::PutEnd { md5 }).await {
            Response::PutDone { size, md5: m } => assert_eq!((size, m), (data.len() as u64, md5)),
            other => panic!("expected PutDone, got {other:?}"),
        }
        assert_eq!(dir_names(&home), ["doc.bin"], "partial renamed into place");
        assert_eq!(md5_file(&home.join("doc.bin")), md5);
        assert_eq!(other.sum("doc.bin").await.unwrap(), (md5, data.len() as u64));
    })
    .await
}

#[tokio::test]
async fn keeps_partial_on_graceful_shutdown_and_resumes_after_restart() {
    guard(async {
        let env = TestEnv::new();
        let mut srv = env.start();
        srv.add_user("alice", PW, 50 * MIB, None);
        let home = srv.home("alice");
        let local = env.local("big.bin");
        let data = make_file(&local, 6 * CHUNK_SIZE + 4321, 77);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("big.bin", data.len() as u64, false).await;
        let sent = 3 * CHUNK_SIZE;
        raw.send_range(&data, 0, sent).await;
        let part = home.join(".big.bin.xfer-part");
        assert!(wait_until(STEP, || file_len(&part) == Some(sent as u64)).await, "server never wrote the chunks");

        srv.trigger_shutdown();
        // The client is told, or at least the connection ends.
        match raw.frame().await {
            Ok(xfer::proto::Frame::Control(p)) => {
                let r: Response = xfer::proto::Frame::decode_control(&p).unwrap();
                assert!(
                    matches!(r, Response::Error { code: ErrorCode::ShuttingDown, .. }),
                    "expected ShuttingDown, got {r:?}"
                );
            }
            Ok(other) => panic!("unexpected frame {other:?}"),
            Err(_) => {} // connection closed
        }
        srv.stop().await;
        assert_eq!(file_len(&part), Some(sent as u64), "partial kept with its bytes");
        assert!(!home.join("big.bin").exists());
        assert_eq!(std::fs::read(&part).unwrap(), &data[..sent]);

        let srv = env.start();
        // Usage after restart counts the kept partial.
        assert_eq!(srv.user("alice").used_bytes, sent as u64);
        let mut c = srv.connect("alice", PW).await;
        let summary = c.put(&local, "big.bin", true, no_progress()).await.expect("resume");
        assert_eq!(summary.resumed_from, sent as u64);
        assert_eq!(summary.md5, md5_bytes(&data));
        assert_eq!(md5_file(&home.join("big.bin")), md5_bytes(&data));
        assert!(!part.exists());
        let (used, _, files, _, reserved) = df_tuple(c.df().await.unwrap());
        assert_eq!((used, files, reserved), (data.len() as u64, 1, 0));
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn accepts_resume_through_library_client_after_dropped_connection() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 50 * MIB, None);
        let home = srv.home("alice");
        let local = env.local("r.bin");
        let data = make_file(&local, 3 * CHUNK_SIZE + 17, 3);
        {
            let mut raw = srv.raw("alice", PW).await;
            raw.start_put("r.bin", data.len() as u64, false).await;
            raw.send_range(&data, 0, CHUNK_SIZE).await;
            let part = home.join(".r.bin.xfer-part");
            assert!(wait_until(STEP, || file_len(&part) == Some(CHUNK_SIZE as u64)).await);
        } // connection dropped mid-upload
        // Wait until the server settled the interrupted upload (its reservation is gone).
        assert!(wait_until(STEP, || srv.user("alice").reserved_bytes == 0).await);
        let mut c = srv.connect("alice", PW).await;
        let s = c.put(&local, "r.bin", true, no_progress()).await.unwrap();
        assert_eq!(s.resumed_from, CHUNK_SIZE as u64);
        assert_eq!(md5_file(&home.join("r.bin")), md5_bytes(&data));
        // A download resumed from a local partial prefix also completes.
        let back = env.local("r.back");
        std::fs::write(partial_path(&back), &data[..1000]).unwrap();
        let s = c.get("r.bin", &back, true, no_progress()).await.unwrap();
        assert_eq!(s.resumed_from, 1000);
        assert_eq!(std::fs::read(&back).unwrap(), data);
    })
    .await
}
