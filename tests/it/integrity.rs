//! Protocol-level integrity and robustness, driven by a raw client over real TLS: corrupt
//! chunks, wrong digests, overruns, malformed frames, vanishing peers, versions, idle timeouts.

use crate::support;

use bytes::Bytes;
use support::*;
use xfer::proto::codec::{encode_control, FRAME_CONTROL, FRAME_DATA, MAX_FRAME_LEN};
use xfer::proto::{DataChunk, ErrorCode, Frame, Request, Response, CHUNK_SIZE, PROTOCOL_VERSION};

const PW: &str = "integrity-pw";

fn server() -> (TestEnv, TestServer) {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, 64 * MIB, None);
    (env, srv)
}

/// A fresh client can still log in and work, and no server thread panicked.
async fn assert_server_healthy(srv: &TestServer) {
    assert!(srv.is_serving(), "the accept loop stopped");
    let mut raw = srv.raw("alice", PW).await;
    match raw.call(&Request::Pwd).await {
        Response::Pwd { path } => assert_eq!(path, "/"),
        other => panic!("{other:?}"),
    }
    srv.assert_no_panics();
}

/// The session is still in step: a request gets its own reply.
async fn assert_session_usable(raw: &mut Raw) {
    match raw.call(&Request::Pwd).await {
        Response::Pwd { .. } => {}
        other => panic!("session out of step: {other:?}"),
    }
}

fn frame_with(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(kind);
    v.extend_from_slice(body);
    v
}

#[tokio::test]
async fn rejects_chunk_with_bad_crc_and_never_publishes_the_file() {
    guard(async {
        let (_env, srv) = server();
        let home = srv.home("alice");
        let data = pseudo_random(3 * CHUNK_SIZE, 1);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("f.bin", data.len() as u64, false).await;
        raw.send_range(&data, 0, CHUNK_SIZE).await;
        // Second chunk: crc of the real bytes, one byte flipped in transit.
        let mut chunk = DataChunk::new(CHUNK_SIZE as u64, Bytes::copy_from_slice(&data[CHUNK_SIZE..2 * CHUNK_SIZE]));
        let mut bad = chunk.data.to_vec();
        bad[12345] ^= 0x40;
        chunk.data = Bytes::from(bad);
        raw.send_chunk(&chunk).await;
        let msg = raw.expect_error(ErrorCode::ChunkCorrupt).await;
        assert!(msg.contains(&CHUNK_SIZE.to_string()), "message names the offset: {msg}");
        raw.send(&Request::Abort).await;
        assert_session_usable(&mut raw).await;
        assert!(!home.join("f.bin").exists(), "final name published after a corrupt chunk");
        // Only the verified prefix is kept, never the corrupt bytes.
        let part = home.join(".f.bin.xfer-part");
        if let Ok(kept) = std::fs::read(&part) {
            assert!(kept.len() <= CHUNK_SIZE, "kept {} bytes, more than the verified prefix", kept.len());
            assert_eq!(&kept[..], &data[..kept.len()]);
        }
        assert_server_healthy(&srv).await;
    })
    .await
}

#[tokio::test]
async fn rejects_wrong_whole_file_md5_and_discards_partial() {
    guard(async {
        let (_env, srv) = server();
        let home = srv.home("alice");
        let data = pseudo_random(2 * CHUNK_SIZE + 99, 2);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("f.bin", data.len() as u64, false).await;
        raw.send_range(&data, 0, data.len()).await;
        let mut md5 = md5_bytes(&data);
        md5[0] ^= 1;
        raw.send(&Request::PutEnd { md5 }).await;
        raw.expect_error(ErrorCode::DigestMismatch).await;
        assert_session_usable(&mut raw).await;
        assert!(dir_names(&home).is_empty(), "no final and no partial: {:?}", dir_names(&home));
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes, u.reserved_files), (0, 0, 0, 0));
        assert_server_healthy(&srv).await;
    })
    .await
}

#[tokio::test]
async fn rejects_bytes_beyond_declared_size_and_releases_usage() {
    guard(async {
        let (_env, srv) = server();
        let home = srv.home("alice");
        let data = pseudo_random(1200, 3);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("f.bin", 1000, false).await;
        raw.send_chunk(&DataChunk::new(0, Bytes::copy_from_slice(&data[..600]))).await;
        raw.send_chunk(&DataChunk::new(600, Bytes::copy_from_slice(&data[600..1200]))).await;
        raw.expect_error(ErrorCode::TooLarge).await;
        raw.send(&Request::PutEnd { md5: md5_bytes(&data) }).await;
        assert_session_usable(&mut raw).await;
        assert!(dir_names(&home).is_empty(), "partial not deleted: {:?}", dir_names(&home));
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes, u.reserved_files), (0, 0, 0, 0));

        // One chunk that alone overruns the declared size.
        raw.start_put("g.bin", 10, false).await;
        raw.send_chunk(&DataChunk::new(0, Bytes::copy_from_slice(&data[..11]))).await;
        raw.expect_error(ErrorCode::TooLarge).await;
        raw.send(&Request::Abort).await;
        assert_session_usable(&mut raw).await;
        assert!(dir_names(&home).is_empty(), "partial not deleted: {:?}", dir_names(&home));
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (0, 0, 0));
    })
    .await
}

#[tokio::test]
async fn rejects_out_of_order_and_repeated_chunks() {
    guard(async {
        let (_env, srv) = server();
        let home = srv.home("alice");
        let data = pseudo_random(3 * CHUNK_SIZE, 4);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("f.bin", data.len() as u64, false).await;
        // Skipping ahead.
        let ahead = DataChunk::new(CHUNK_SIZE as u64, Bytes::copy_from_slice(&data[CHUNK_SIZE..2 * CHUNK_SIZE]));
        raw.send_chunk(&ahead).await;
        let msg = raw.expect_error(ErrorCode::BadRequest).await;
        assert!(msg.contains("expected 0"), "{msg}");
        raw.send(&Request::Abort).await;
        assert_session_usable(&mut raw).await;
        assert!(!home.join("f.bin").exists());

        // Repeating a chunk.
        raw.start_put("g.bin", data.len() as u64, false).await;
        raw.send_range(&data, 0, CHUNK_SIZE).await;
        raw.send_range(&data, 0, CHUNK_SIZE).await;
        let msg = raw.expect_error(ErrorCode::BadRequest).await;
        assert!(msg.contains(&format!("expected {CHUNK_SIZE}")), "{msg}");
        raw.send(&Request::Abort).await;
        assert_session_usable(&mut raw).await;
        assert!(!home.join("g.bin").exists());
        assert_server_healthy(&srv).await;
    })
    .await
}

#[tokio::test]
async fn rejects_put_end_before_all_data_and_keeps_prefix_for_resume() {
    guard(async {
        let (_env, srv) = server();
        let home = srv.home("alice");
        let data = pseudo_random(2 * CHUNK_SIZE, 5);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("f.bin", data.len() as u64, false).await;
        raw.send_range(&data, 0, CHUNK_SIZE).await;
        raw.send(&Request::PutEnd { md5: md5_bytes(&data) }).await;
        let msg = raw.expect_error(ErrorCode::BadRequest).await;
        assert!(msg.contains(&CHUNK_SIZE.to_string()), "says how far it got: {msg}");
        assert_session_usable(&mut raw).await;
        assert!(!home.join("f.bin").exists());
        assert_eq!(std::fs::read(home.join(".f.bin.xfer-part")).unwrap(), &data[..CHUNK_SIZE]);
    })
    .await
}

#[tokio::test]
async fn survives_garbage_control_payloads() {
    guard(async {
        let (_env, srv) = server();
        let mut raw = srv.raw("alice", PW).await;
        // Random bytes as a control message.
        raw.send_bytes(&frame_with(FRAME_CONTROL, &pseudo_random(200, 6))).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        assert_session_usable(&mut raw).await;
        // An unknown Request variant index.
        raw.send_bytes(&frame_with(FRAME_CONTROL, &[0, 0, 0, 99])).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        assert_session_usable(&mut raw).await;
        // A valid message followed by trailing bytes.
        let mut pwd = encode_control(&Request::Pwd)[5..].to_vec();
        pwd.push(0);
        raw.send_bytes(&frame_with(FRAME_CONTROL, &pwd)).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        // A string length far larger than the frame.
        let mut stat = encode_control(&Request::Stat { path: "ab".into() })[5..].to_vec();
        let n = stat.len();
        stat[n - 10..n - 2].copy_from_slice(&u64::MAX.to_be_bytes());
        raw.send_bytes(&frame_with(FRAME_CONTROL, &stat)).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        assert_session_usable(&mut raw).await;
        // Garbage before login is refused the same way.
        let mut anon = Raw::connect(srv.addr).await;
        anon.send_bytes(&frame_with(FRAME_CONTROL, &[0xff; 17])).await;
        anon.expect_error(ErrorCode::BadRequest).await;
        assert_server_healthy(&srv).await;
    })
    .await
}

#[tokio::test]
async fn rejects_non_utf8_in_path_strings() {
    guard(async {
        let (_env, srv) = server();
        std::fs::write(srv.home("alice").join("ab"), b"x").unwrap();
        let mut raw = srv.raw("alice", PW).await;
        // Request::Stat { path: "ab" } with the two path bytes replaced by invalid UTF-8.
        let mut frame = encode_control(&Request::Stat { path: "ab".into() });
        let n = frame.len();
        assert_eq!(&frame[n - 2..], b"ab", "test setup: the path is the frame's tail");
        frame[n - 2] = 0xff;
        frame[n - 1] = 0xfe;
        raw.send_bytes(&frame).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        assert_session_usable(&mut raw).await;
        assert_server_healthy(&srv).await;
    })
    .await
}

#[tokio::test]
async fn closes_connection_on_malformed_frames_and_keeps_serving() {
    guard(async {
        let (_env, srv) = server();
        let bad_frames: Vec<(&str, Vec<u8>)> = vec![
            ("oversized length", (MAX_FRAME_LEN + 1).to_be_bytes().to_vec()),
            ("huge length", u32::MAX.to_be_bytes().to_vec()),
            ("empty frame", 0u32.to_be_bytes().to_vec()),
            ("unknown frame type", frame_with(0x07, b"hello")),
            ("short data header", frame_with(FRAME_DATA, &[1, 2, 3])),
            ("data chunk over CHUNK_SIZE", {
                let mut body = vec![0u8; 12];
                body.extend(std::iter::repeat_n(0u8, CHUNK_SIZE + 1));
                frame_with(FRAME_DATA, &body)
            }),
        ];
        for (what, bytes) in bad_frames {
            let mut raw = srv.raw("alice", PW).await;
            raw.send_bytes(&bytes).await;
            // The server may say nothing; it must close rather than wait for more bytes.
            loop {
                match raw.frame().await {
                    Err(_) => break,
                    Ok(Frame::Control(p)) => {
                        let r: Response = Frame::decode_control(&p).unwrap();
                        assert!(matches!(r, Response::Error { .. }), "{what}: unexpected reply {r:?}");
                    }
                    Ok(Frame::Data(_)) => panic!("{what}: data frame from server"),
                }
            }
            assert_server_healthy(&srv).await;
        }
    })
    .await
}

#[tokio::test]
async fn keeps_serving_others_when_a_client_vanishes_mid_frame() {
    guard(async {
        let (env, srv) = server();
        let mut other = srv.connect("alice", PW).await;
        // Half a control frame, then gone.
        {
            let mut raw = srv.raw("alice", PW).await;
            let frame = encode_control(&Request::Mkdir { path: "never-created".into() });
            raw.send_bytes(&frame[..frame.len() / 2]).await;
        }
        // Half a data frame in the middle of an upload, then gone.
        {
            let mut raw = srv.raw("alice", PW).await;
            raw.start_put("half.bin", 2 * CHUNK_SIZE as u64, false).await;
            let chunk = DataChunk::new(0, Bytes::from(pseudo_random(CHUNK_SIZE, 8)));
            let mut bytes = chunk.header().to_vec();
            bytes.extend_from_slice(&chunk.data[..CHUNK_SIZE / 2]);
            raw.send_bytes(&bytes).await;
        }
        // Half a TLS handshake: a bare TCP connection that sends junk and leaves.
        {
            use tokio::io::AsyncWriteExt;
            let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
            tcp.write_all(b"\x16\x03\x01\x00\xffgarbage").await.unwrap();
        }
        // The established session works throughout, including a transfer.
        let local = env.local("ok.bin");
        let data = make_file(&local, CHUNK_SIZE + 5, 9);
        other.put(&local, "ok.bin", false, xfer::transfer::progress::no_progress()).await.unwrap();
        assert_eq!(other.sum("ok.bin").await.unwrap(), (md5_bytes(&data), data.len() as u64));
        assert_eq!(code_of(other.stat("never-created").await), ErrorCode::NotFound);
        // The half-sent upload kept no half chunk and no reservation.
        assert!(wait_until(STEP, || srv.user("alice").reserved_bytes == 0).await);
        assert_eq!(file_len(&srv.home("alice").join(".half.bin.xfer-part")).unwrap_or(0), 0);
        assert!(!srv.home("alice").join("half.bin").exists());
        assert_server_healthy(&srv).await;
    })
    .await
}

#[tokio::test]
async fn rejects_unsupported_protocol_version() {
    guard(async {
        let (_env, srv) = server();
        let mut raw = Raw::tls(srv.addr).await;
        raw.send_bytes(&xfer::proto::encode_preamble(PROTOCOL_VERSION + 98)).await;
        let v = raw.reader.read_preamble().await.expect("server preamble");
        assert_eq!(v, PROTOCOL_VERSION);
        let msg = raw.expect_error(ErrorCode::UnsupportedVersion).await;
        assert!(msg.contains(&(PROTOCOL_VERSION + 98).to_string()), "{msg}");
        raw.expect_closed().await;
        // Bad magic (CTRL-HELLO-2): the server's preamble, one UnsupportedVersion error, close.
        let mut raw = Raw::tls(srv.addr).await;
        raw.send_bytes(b"HTTP/1").await;
        let v = raw.reader.read_preamble().await.expect("server preamble after bad magic");
        assert_eq!(v, PROTOCOL_VERSION);
        let msg = raw.expect_error(ErrorCode::UnsupportedVersion).await;
        assert!(msg.contains(&PROTOCOL_VERSION.to_string()), "{msg}");
        raw.expect_closed().await;
        assert_server_healthy(&srv).await;
    })
    .await
}

#[tokio::test]
async fn closes_idle_session_with_idle_timeout() {
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("idle_timeout_secs", "1"), ("handshake_timeout_secs", "1")]);
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);

        // Idle after login.
        let mut raw = srv.raw("alice", PW).await;
        raw.expect_error(ErrorCode::IdleTimeout).await;
        raw.expect_closed().await;

        // Idle before login (the login deadline).
        let mut anon = Raw::connect(srv.addr).await;
        anon.expect_error(ErrorCode::IdleTimeout).await;
        anon.expect_closed().await;

        // Idle in the middle of an upload: told to resume later, the prefix is kept.
        let data = pseudo_random(2 * CHUNK_SIZE, 10);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("f.bin", data.len() as u64, false).await;
        raw.send_range(&data, 0, CHUNK_SIZE).await;
        let msg = raw.expect_error(ErrorCode::IdleTimeout).await;
        assert!(msg.contains("resume"), "{msg}");
        raw.expect_closed().await;
        let home = srv.home("alice");
        assert_eq!(std::fs::read(home.join(".f.bin.xfer-part")).unwrap(), &data[..CHUNK_SIZE]);
        assert!(!home.join("f.bin").exists());
        assert_eq!(srv.user("alice").reserved_bytes, 0);
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn closes_silently_when_preamble_or_login_misses_the_handshake_deadline() {
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("handshake_timeout_secs", "1"), ("free_failures", "100")]);
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);

        // TLS done, no preamble: closed without a word (CTRL-HELLO-1).
        let mut raw = Raw::tls(srv.addr).await;
        match tokio::time::timeout(STEP, raw.reader.read_preamble()).await.expect("server never closed") {
            Err(_) => {}
            Ok(v) => panic!("server sent a preamble ({v}) to a client that sent none"),
        }
        // Plain TCP that never starts TLS: closed too.
        {
            use tokio::io::AsyncReadExt;
            let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(STEP, tcp.read(&mut buf)).await.expect("server never closed");
            assert!(matches!(n, Ok(0) | Err(_)), "server sent {n:?} before any TLS handshake");
        }
        // Failed logins one after another: the whole login phase is bounded, not each attempt
        // (CTRL-SESS-2), so retrying forever does not keep the session alive.
        let mut raw = Raw::connect(srv.addr).await;
        let mut timed_out = false;
        for _ in 0..200 {
            raw.send(&Request::Auth { user: "alice".into(), password: "wrong".into() }).await;
            match raw.recv().await {
                Response::Error { code: ErrorCode::AuthFailed | ErrorCode::Throttled, .. } => {}
                Response::Error { code: ErrorCode::IdleTimeout, .. } => {
                    timed_out = true;
                    break;
                }
                other => panic!("unexpected reply {other:?}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(timed_out, "login attempts kept the unauthenticated session alive");
        raw.expect_closed().await;
        assert_server_healthy(&srv).await;
    })
    .await
}

#[tokio::test]
async fn answers_misplaced_requests_and_frames_with_bad_request() {
    guard(async {
        let (_env, srv) = server();
        let mut raw = srv.raw("alice", PW).await;
        // A data frame outside a transfer.
        raw.send_chunk(&DataChunk::new(0, Bytes::from_static(b"stray"))).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        // PutEnd and Abort without an upload.
        raw.send(&Request::PutEnd { md5: [0; 16] }).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        raw.send(&Request::Abort).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        assert_session_usable(&mut raw).await;
        assert!(dir_names(&srv.home("alice")).is_empty());
        // Bye: the server closes without a reply (CTRL-SESS-4).
        raw.send(&Request::Bye).await;
        raw.expect_closed().await;
        assert_server_healthy(&srv).await;
    })
    .await
}

#[tokio::test]
async fn closes_connection_on_other_request_during_upload_and_keeps_partial() {
    guard(async {
        let (_env, srv) = server();
        let home = srv.home("alice");
        let data = pseudo_random(3 * CHUNK_SIZE, 11);
        let mut raw = srv.raw("alice", PW).await;
        raw.start_put("f.bin", data.len() as u64, false).await;
        raw.send_range(&data, 0, CHUNK_SIZE).await;
        // A lockstep request in the middle of the data phase is a protocol violation
        // (CTRL-PUT-3): no reply, the connection closes, the partial stays.
        raw.send(&Request::Pwd).await;
        raw.expect_closed().await;
        assert!(wait_until(STEP, || srv.user("alice").reserved_bytes == 0).await, "upload never settled");
        assert_eq!(std::fs::read(home.join(".f.bin.xfer-part")).unwrap(), &data[..CHUNK_SIZE]);
        assert!(!home.join("f.bin").exists());
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files), (CHUNK_SIZE as u64, 1));
        assert_server_healthy(&srv).await;
    })
    .await
}

#[tokio::test]
async fn rejects_second_upload_to_same_target_and_touching_its_partial() {
    guard(async {
        let (env, srv) = server();
        let home = srv.home("alice");
        let data = pseudo_random(2 * CHUNK_SIZE, 12);
        let mut first = srv.raw("alice", PW).await;
        first.start_put("t.bin", data.len() as u64, false).await;
        first.send_range(&data, 0, CHUNK_SIZE).await;
        assert!(wait_until(STEP, || file_len(&home.join(".t.bin.xfer-part")) == Some(CHUNK_SIZE as u64)).await);

        let mut c = srv.connect("alice", PW).await;
        let local = env.local("other");
        make_file(&local, 100, 13);
        let np = xfer::transfer::progress::no_progress;
        // One upload per (user, path) (CTRL-PUT-1).
        assert_eq!(code_of(c.put(&local, "t.bin", false, np()).await), ErrorCode::Busy);
        assert_eq!(code_of(c.put(&local, "/t.bin", true, np()).await), ErrorCode::Busy);
        // The partial of a running upload cannot be removed (CTRL-PUT-2); no partial name can
        // be renamed from or onto (QUOTA-4).
        assert_eq!(code_of(c.remove(".t.bin.xfer-part").await), ErrorCode::Busy);
        assert_eq!(code_of(c.rename(".t.bin.xfer-part", "stolen").await), ErrorCode::InvalidPath);
        assert_eq!(code_of(c.rename("x", ".t.bin.xfer-part").await), ErrorCode::InvalidPath);
        // Partial names are reserved as upload targets.
        assert_eq!(code_of(c.put(&local, ".t.bin.xfer-part", false, np()).await), ErrorCode::InvalidPath);
        assert_eq!(code_of(c.put(&local, ".other.xfer-part", false, np()).await), ErrorCode::InvalidPath);
        // A different target is not affected.
        c.put(&local, "u.bin", false, np()).await.unwrap();

        first.send_range(&data, CHUNK_SIZE, data.len()).await;
        let r = first.call(&Request::PutEnd { md5: md5_bytes(&data) }).await;
        assert!(matches!(r, Response::PutDone { .. }), "{r:?}");
        assert_eq!(std::fs::read(home.join("t.bin")).unwrap(), data);
        // Once it finished, the name is free again.
        c.put(&local, "t.bin", false, np()).await.unwrap();
        assert_eq!(dir_names(&home), ["t.bin", "u.bin"]);
    })
    .await
}

#[tokio::test]
async fn rejects_bad_download_offsets() {
    guard(async {
        let (_env, srv) = server();
        let data = make_file(&srv.home("alice").join("f.bin"), 5000, 14);
        let mut raw = srv.raw("alice", PW).await;
        let get = |offset, prefix_md5| Request::Get {
            path: "f.bin".into(),
            offset,
            prefix_md5,
            transport: xfer::proto::Transport::Tcp,
        };
        // offset > 0 without a prefix digest (CTRL-RESUME-3).
        raw.send(&get(100, None)).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        // offset beyond the file.
        raw.send(&get(5001, Some([0; 16]))).await;
        raw.expect_error(ErrorCode::SourceChanged).await;
        // A prefix digest that does not match.
        raw.send(&get(100, Some(md5_bytes(&data[..99])))).await;
        raw.expect_error(ErrorCode::SourceChanged).await;
        // A matching one: only the rest is sent, then the whole-file md5.
        raw.send(&get(4000, Some(md5_bytes(&data[..4000])))).await;
        match raw.recv().await {
            Response::GetReady { size, offset } => assert_eq!((size, offset), (5000, 4000)),
            other => panic!("{other:?}"),
        }
        match raw.frame().await.unwrap() {
            Frame::Data(c) => {
                assert_eq!((c.offset, &c.data[..]), (4000, &data[4000..]));
                assert!(c.verify());
            }
            other => panic!("{other:?}"),
        }
        match raw.recv().await {
            Response::GetEnd { md5 } => assert_eq!(md5, md5_bytes(&data)),
            other => panic!("{other:?}"),
        }
        assert_session_usable(&mut raw).await;
    })
    .await
}

#[tokio::test]
async fn cuts_download_to_a_client_that_stops_reading() {
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("idle_timeout_secs", "1")]);
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let size = 64 * MIB;
        make_big_file(&srv.home("alice").join("big.bin"), size, 15);
        let mut raw = srv.raw("alice", PW).await;
        raw.send_get("big.bin").await;
        // Stop reading long enough for the server's write timeout to expire several times over.
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        // Drain what was buffered: the download must have been cut, never completed.
        let mut got = 0u64;
        loop {
            match raw.frame().await {
                Ok(Frame::Data(c)) => got += c.data.len() as u64,
                Ok(Frame::Control(p)) => match Frame::decode_control::<Response>(&p).unwrap() {
                    Response::GetReady { .. } => {}
                    Response::Error { code, .. } => assert_eq!(code, ErrorCode::IdleTimeout),
                    other => panic!("download to a stalled client was not cut: {other:?}"),
                },
                Err(_) => break,
            }
        }
        assert!(got < size, "all {got} bytes arrived: the stalled download was not cut");
        assert_server_healthy(&srv).await;
    })
    .await
}

#[tokio::test]
async fn limits_concurrent_sessions_to_max_sessions() {
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("max_sessions", "1")]);
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let first = srv.connect("alice", PW).await;
        let opts = srv.options();
        let second = tokio::spawn(async move {
            let mut c = xfer::client::Client::connect(&opts).await.expect("connect");
            c.login("alice", PW).await.expect("login");
            c.pwd().await.expect("pwd")
        });
        // While the only slot is taken, the second session is not served.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!second.is_finished(), "a second session was served beyond max_sessions = 1");
        first.bye().await;
        assert_eq!(second.await.unwrap(), "/");
    })
    .await
}
