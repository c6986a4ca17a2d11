//! End-to-end behaviour through the library client against a real in-process server.

use crate::support;

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
        // The file and the directory holding it are two entries (QUOTA-5).
        assert_eq!((used, quota, files, reserved), (1000, 10 * MIB, 2, 0));
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

/// Uploads half of a file over a raw connection, triggers server shutdown mid-upload and
/// checks what the client and the disk see. Returns the stopped environment, the data and the
/// number of bytes the partial holds.
async fn interrupt_upload_by_shutdown(env: &TestEnv) -> (Vec<u8>, usize) {
    let mut srv = env.start();
    srv.add_user("alice", PW, 50 * MIB, None);
    let home = srv.home("alice");
    let data = make_file(&env.local("big.bin"), 6 * CHUNK_SIZE + 4321, 77);
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
    assert_eq!(std::fs::read(&part).unwrap(), &data[..sent]);
    assert!(!home.join("big.bin").exists());
    (data, sent)
}

#[tokio::test]
async fn keeps_partial_with_its_bytes_on_graceful_shutdown() {
    guard(async {
        let env = TestEnv::new();
        let (_data, sent) = interrupt_upload_by_shutdown(&env).await;
        // After a restart the kept partial is counted as used, nothing is reserved.
        let srv = env.start();
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (sent as u64, 1, 0));
        let mut c = srv.connect("alice", PW).await;
        assert_eq!(code_of(c.stat("big.bin").await), ErrorCode::NotFound);
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn resumes_upload_after_graceful_shutdown_and_restart() {
    guard(async {
        let env = TestEnv::new();
        let (data, sent) = interrupt_upload_by_shutdown(&env).await;
        let srv = env.start();
        let home = srv.home("alice");
        let mut c = srv.connect("alice", PW).await;
        let summary = c.put(&env.local("big.bin"), "big.bin", true, no_progress()).await.expect("resume");
        assert_eq!(summary.resumed_from, sent as u64);
        assert_eq!(summary.md5, md5_bytes(&data));
        assert_eq!(md5_file(&home.join("big.bin")), md5_bytes(&data));
        assert!(!home.join(".big.bin.xfer-part").exists());
        let (used, _, files, _, reserved) = df_tuple(c.df().await.unwrap());
        assert_eq!((used, files, reserved), (data.len() as u64, 1, 0));
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn resumes_upload_through_library_client_after_dropped_connection() {
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
        let s = c.put(&local, "r.bin", true, no_progress()).await.expect("resume upload");
        assert_eq!(s.resumed_from, CHUNK_SIZE as u64);
        assert_eq!(md5_file(&home.join("r.bin")), md5_bytes(&data));
    })
    .await
}

#[tokio::test]
async fn resumes_download_through_library_client_from_local_partial() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 50 * MIB, None);
        let data = make_file(&srv.home("alice").join("r.bin"), 3 * CHUNK_SIZE + 17, 3);
        let mut c = srv.connect("alice", PW).await;
        let back = env.local("r.back");
        std::fs::write(partial_path(&back), &data[..1000]).unwrap();
        let s = c.get("r.bin", &back, true, no_progress()).await.unwrap();
        assert_eq!((s.resumed_from, s.size, s.md5), (1000, data.len() as u64, md5_bytes(&data)));
        assert_eq!(std::fs::read(&back).unwrap(), data);
        assert!(!partial_path(&back).exists());
        // Without resume the stale partial is ignored and replaced.
        std::fs::write(partial_path(&back), b"junk that is not a prefix").unwrap();
        let s = c.get("r.bin", &back, false, no_progress()).await.unwrap();
        assert_eq!(s.resumed_from, 0);
        assert_eq!(std::fs::read(&back).unwrap(), data);
    })
    .await
}

#[tokio::test]
async fn keeps_download_partial_when_server_shuts_down_and_resumes_after_restart() {
    guard(async {
        let env = TestEnv::new();
        let want = make_big_file(&env.home("alice").join("big.bin"), 64 * MIB, 21);
        let mut srv = env.start();
        srv.add_user("alice", PW, 100 * MIB, None);
        let local = env.local("big.bin");
        let mut c = srv.connect("alice", PW).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let progress: xfer::transfer::ProgressFn = std::sync::Arc::new(move |p| {
            if let xfer::transfer::Progress::Advance { done } = p {
                let _ = tx.send(done);
            }
        });
        let dl = {
            let local = local.clone();
            tokio::spawn(async move { c.get("big.bin", &local, false, progress).await })
        };
        // Shut down once a few MiB have arrived.
        loop {
            let done = rx.recv().await.expect("download ended before reaching 4 MiB");
            if done >= 4 * MIB {
                break;
            }
        }
        srv.trigger_shutdown();
        let r = dl.await.unwrap();
        assert!(r.is_err(), "download cut by shutdown reported success");
        srv.stop().await;
        assert!(!local.exists(), "final name appeared for an incomplete download");
        let kept = file_len(&partial_path(&local)).expect("client kept its partial");
        assert!((4 * MIB..64 * MIB).contains(&kept), "kept {kept}");

        let srv = env.start();
        let mut c = srv.connect("alice", PW).await;
        let s = c.get("big.bin", &local, true, no_progress()).await.expect("resumed download");
        assert_eq!((s.resumed_from, s.md5), (kept, want));
        assert_eq!(md5_file(&local), want);
    })
    .await
}

#[tokio::test]
async fn sends_shutting_down_between_download_frames() {
    guard(async {
        let env = TestEnv::new();
        make_big_file(&env.home("alice").join("big.bin"), 64 * MIB, 22);
        let mut srv = env.start();
        srv.add_user("alice", PW, 100 * MIB, None);
        let mut raw = srv.raw("alice", PW).await;
        raw.send_get("big.bin").await;
        // Let the server fill the socket buffers and block on a write, then shut down.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        srv.trigger_shutdown();
        // Whole frames, then exactly one Error { ShuttingDown } (CTRL-SESS-3, CTRL-GET-3).
        let mut next = 0u64;
        let end = loop {
            match raw.frame().await {
                Ok(xfer::proto::Frame::Data(c)) => {
                    assert_eq!(c.offset, next);
                    assert!(c.verify());
                    next = c.end();
                }
                Ok(xfer::proto::Frame::Control(p)) => {
                    match xfer::proto::Frame::decode_control::<Response>(&p).unwrap() {
                        Response::GetReady { .. } => {}
                        other => break Ok(other),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        match end {
            Ok(Response::Error { code: ErrorCode::ShuttingDown, .. }) => {}
            other => panic!("after {next} bytes: expected Error {{ ShuttingDown }}, got {other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn tells_idle_sessions_about_shutdown_and_refuses_new_connections() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let addr = srv.addr;
        let mut authed = srv.raw("alice", PW).await;
        let mut anon = Raw::connect(addr).await;
        srv.stop().await;
        authed.expect_error(ErrorCode::ShuttingDown).await;
        authed.expect_closed().await;
        anon.expect_error(ErrorCode::ShuttingDown).await;
        anon.expect_closed().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
    })
    .await
}

#[tokio::test]
async fn lists_sorted_bytewise_and_names_root_slash() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let home = srv.home("alice");
        for name in ["b", "B", "a", "é", "Z", "_", "10", "9"] {
            std::fs::write(home.join(name), name).unwrap();
        }
        std::fs::create_dir(home.join("dir")).unwrap();
        let mut c = srv.connect("alice", PW).await;
        let names: Vec<String> = c.list("/").await.unwrap().into_iter().map(|e| e.name).collect();
        let mut want: Vec<String> = ["b", "B", "a", "é", "Z", "_", "10", "9", "dir"].map(String::from).to_vec();
        want.sort(); // String order is bytewise UTF-8 order
        assert_eq!(names, want);
        let root = c.stat("/").await.unwrap();
        assert_eq!((root.name.as_str(), root.kind, root.size), ("/", EntryKind::Dir, 0));
        assert_eq!(c.stat("dir").await.unwrap().size, 0, "directories report size 0");
        assert_eq!(code_of(c.mkdir("/").await), ErrorCode::AlreadyExists);
    })
    .await
}

#[tokio::test]
async fn rejects_uploads_onto_directories_and_into_missing_parents() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut c = srv.connect("alice", PW).await;
        let local = env.local("f");
        make_file(&local, 10, 1);
        c.mkdir("d").await.unwrap();
        assert_eq!(code_of(c.put(&local, "d", false, no_progress()).await), ErrorCode::IsADirectory);
        assert_eq!(code_of(c.put(&local, "/", false, no_progress()).await), ErrorCode::IsADirectory);
        assert_eq!(code_of(c.put(&local, "missing/f", false, no_progress()).await), ErrorCode::NotFound);
        assert_eq!(code_of(c.get("d", &env.local("d"), false, no_progress()).await), ErrorCode::IsADirectory);
        assert_eq!(dir_names(&srv.home("alice")), ["d"]);
        assert!(dir_names(&srv.home("alice").join("d")).is_empty());
        let u = srv.user("alice");
        // The directory is the one entry (QUOTA-5); the refused uploads left nothing.
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes, u.reserved_files), (0, 1, 0, 0));
    })
    .await
}

#[tokio::test]
async fn refuses_fifos_without_hanging() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let home = srv.home("alice");
        for name in ["fifo", ".up.xfer-part"] {
            let st = std::process::Command::new("mkfifo").arg(home.join(name)).status().expect("mkfifo");
            assert!(st.success());
        }
        let mut c = srv.connect("alice", PW).await;
        assert_eq!(code_of(c.get("fifo", &env.local("fifo"), false, no_progress()).await), ErrorCode::PermissionDenied);
        assert_eq!(code_of(c.sum("fifo").await), ErrorCode::PermissionDenied);
        assert_eq!(c.stat("fifo").await.unwrap().kind, EntryKind::Other);
        let local = env.local("up");
        make_file(&local, 10, 1);
        for resume in [false, true] {
            assert_eq!(code_of(c.put(&local, "up", resume, no_progress()).await), ErrorCode::PermissionDenied);
        }
        assert_eq!(c.pwd().await.unwrap(), "/");
    })
    .await
}
