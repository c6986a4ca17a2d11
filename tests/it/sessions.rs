//! Logins and sessions under attack: parallel guesses, silent connections, one account's many
//! sessions, guessing from rotating addresses, revocation by the admin commands, hostile names
//! in the log, the audit trail and the metrics page. Real servers on loopback throughout;
//! several source addresses come from 127.0.0.0/8.

use crate::support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use xfer::conn::{FrameReader, FrameWriter};
use xfer::proto::{ErrorCode, Request, Response, PROTOCOL_VERSION};
use xfer::tls::{client_config, PinnedVerifier, SERVER_NAME};

const PW: &str = "s3cret-pw";

/// A TCP connection to `to` from 127.0.0.`n`.
async fn tcp_from(n: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)), 0)).unwrap();
    socket.connect(to).await.expect("tcp connect")
}

/// TLS and preambles from 127.0.0.`n`.
async fn raw_from(n: u8, to: SocketAddr) -> Raw {
    let tcp = tcp_from(n, to).await;
    let config = client_config(Arc::new(PinnedVerifier::new(None))).unwrap();
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("tls handshake");
    let (r, w) = tokio::io::split(tls);
    let mut raw = Raw { reader: FrameReader::new(r), writer: w };
    FrameWriter::new(&mut raw.writer).write_preamble(PROTOCOL_VERSION).await.unwrap();
    assert_eq!(raw.reader.read_preamble().await.unwrap(), PROTOCOL_VERSION);
    raw
}

fn auth(user: &str, password: &str) -> Request {
    Request::Auth { user: user.into(), password: password.into() }
}

/// The reply to one login from 127.0.0.`n` on a fresh connection.
async fn login_from(n: u8, srv: &TestServer, user: &str, password: &str) -> (Response, Raw) {
    let mut raw = raw_from(n, srv.addr).await;
    let r = raw.call(&auth(user, password)).await;
    (r, raw)
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn rejects_parallel_guesses_from_one_address_before_they_reach_argon2() {
    // CTRL-AUTH-4: 64 simultaneous wrong passwords from one address; only the free failures
    // plus one are verified, every other attempt is refused as Throttled without a check.
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("max_pending_logins_per_ip", "100")]);
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut conns = Vec::new();
        for _ in 0..64 {
            conns.push(raw_from(2, srv.addr).await);
        }
        for c in conns.iter_mut() {
            c.send(&auth("alice", "guess")).await;
        }
        let mut codes = Vec::new();
        for c in conns.iter_mut() {
            codes.push(code(&c.recv().await));
        }
        let failed = codes.iter().filter(|c| **c == Some(ErrorCode::AuthFailed)).count();
        let throttled = codes.iter().filter(|c| **c == Some(ErrorCode::Throttled)).count();
        assert_eq!(failed + throttled, 64, "{codes:?}");
        assert!(failed <= 4, "{failed} guesses were verified");
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn accepts_simultaneous_correct_logins_from_one_address() {
    // CTRL-AUTH-4: attempts beyond those in flight wait their turn instead of being refused.
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut conns = Vec::new();
        for _ in 0..12 {
            conns.push(raw_from(6, srv.addr).await);
        }
        for c in conns.iter_mut() {
            c.send(&auth("alice", PW)).await;
        }
        for c in conns.iter_mut() {
            let r = c.recv().await;
            assert!(matches!(r, Response::Authed { .. }), "{r:?}");
        }
    })
    .await
}

#[tokio::test]
async fn accepts_logins_while_many_connections_sit_silent() {
    // CTRL-SESS-5: 200 silent TCP connections from one address fill only that address's
    // share of the pre-login pool; others log in at once, and logged-in sessions go on.
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("max_pending_logins_per_ip", "8"), ("max_pending_logins", "64")]);
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut before = Raw::login(srv.addr, "alice", PW).await;
        let mut silent = Vec::new();
        for _ in 0..200 {
            silent.push(tcp_from(3, srv.addr).await);
        }
        let (r, mut after) = login_from(1, &srv, "alice", PW).await;
        assert!(matches!(r, Response::Authed { .. }), "{r:?}");
        assert!(matches!(after.call(&Request::Pwd).await, Response::Pwd { .. }));
        assert!(matches!(before.call(&Request::Pwd).await, Response::Pwd { .. }));
        // The connections over the address's share were closed at once, not queued.
        let mut closed = 0;
        for s in silent.iter_mut() {
            let mut b = [0u8; 1];
            if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await {
                closed += 1;
            }
        }
        assert!(closed >= 200 - 8, "only {closed} of the connections over the cap were closed");
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn rejects_sessions_over_the_per_user_cap_but_lets_other_users_in() {
    // CTRL-SESS-6
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("max_sessions_per_user", "3")]);
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        srv.add_user("bob", PW, MIB, None);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(Raw::login(srv.addr, "alice", PW).await);
        }
        let (r, _) = login_from(1, &srv, "alice", PW).await;
        assert_eq!(code(&r), Some(ErrorCode::Busy), "{r:?}");
        let (r, _) = login_from(1, &srv, "bob", PW).await;
        assert!(matches!(r, Response::Authed { .. }), "{r:?}");
        held.pop().unwrap().send(&Request::Bye).await;
        // The slot of the session that ended comes back (bounded retries: it is freed when
        // the server has seen the goodbye).
        let mut again = None;
        for _ in 0..100 {
            let (r, _) = login_from(1, &srv, "alice", PW).await;
            if matches!(r, Response::Authed { .. }) {
                again = Some(r);
                break;
            }
            assert_eq!(code(&r), Some(ErrorCode::Busy));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(again.is_some(), "the freed slot was never given back");
    })
    .await
}

#[tokio::test]
async fn rejects_sessions_over_the_per_address_cap() {
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("max_sessions_per_ip", "2")]);
        let srv = env.start();
        for u in ["a1", "a2", "a3"] {
            srv.add_user(u, PW, MIB, None);
        }
        let _one = login_from(4, &srv, "a1", PW).await;
        let _two = login_from(4, &srv, "a2", PW).await;
        assert_eq!(code(&login_from(4, &srv, "a3", PW).await.0), Some(ErrorCode::Busy));
        assert!(matches!(login_from(5, &srv, "a3", PW).await.0, Response::Authed { .. }));
    })
    .await
}

#[tokio::test]
async fn accepts_the_owner_while_an_attacker_rotates_source_addresses() {
    // CTRL-AUTH-5: guesses at alice from ten addresses spend her budget for unknown sources,
    // but her own address, where she logged in before, is never refused.
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("user_budget", "5"), ("user_refill_secs", "600")]);
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let (r, _) = login_from(1, &srv, "alice", PW).await;
        assert!(matches!(r, Response::Authed { .. }));
        let mut verified = 0;
        for round in 0..4u8 {
            for n in 10..20u8 {
                let (r, _) = login_from(n, &srv, "alice", "guess").await;
                match code(&r) {
                    Some(ErrorCode::AuthFailed) => verified += 1,
                    Some(ErrorCode::Throttled) => {}
                    other => panic!("unexpected reply {other:?}"),
                }
            }
            let (r, _) = login_from(1, &srv, "alice", PW).await;
            assert!(matches!(r, Response::Authed { .. }), "owner refused in round {round}: {r:?}");
        }
        assert_eq!(verified, 5, "the attacker got exactly the user budget of password checks");
        // A new address of the owner's waits for the budget: the trade-off CTRL-AUTH-5 names.
        let (r, _) = login_from(30, &srv, "alice", PW).await;
        assert_eq!(code(&r), Some(ErrorCode::Throttled));
    })
    .await
}

#[tokio::test]
async fn rejects_a_silent_client_at_the_one_pre_login_deadline() {
    // CTRL-SESS-2: TLS, preamble and login share one deadline. A client that spends 60% of it
    // before the preamble and 60% more before its Auth is cut, though neither wait alone is
    // over the limit.
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("handshake_timeout_secs", "2")]);
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut raw = Raw::tls(srv.addr).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        FrameWriter::new(&mut raw.writer).write_preamble(PROTOCOL_VERSION).await.unwrap();
        assert_eq!(raw.reader.read_preamble().await.unwrap(), PROTOCOL_VERSION);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let _ = raw.try_send(&auth("alice", PW)).await;
        match raw.frame().await {
            Ok(xfer::proto::Frame::Control(p)) => {
                let r = xfer::proto::Frame::decode_control::<Response>(&p).unwrap();
                assert_eq!(code(&r), Some(ErrorCode::IdleTimeout), "{r:?}");
            }
            Ok(other) => panic!("{other:?}"),
            Err(_) => {} // closed
        }
    })
    .await
}

#[tokio::test]
async fn rejects_a_large_frame_before_login_without_buffering_it() {
    // CTRL-FRAME-6: before login a length over 16 KiB closes the connection.
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut raw = Raw::connect(srv.addr).await;
        let mut frame = (1024u32 * 1024).to_be_bytes().to_vec();
        frame.push(0x01);
        frame.extend(std::iter::repeat_n(0u8, 64 * 1024));
        let _ = raw.writer.write_all(&frame).await;
        raw.expect_closed().await;
        // Just under the limit is a frame like any other: answered, not fatal.
        let mut raw = Raw::connect(srv.addr).await;
        let user = "u".repeat(16 * 1024 - 64);
        let r = raw.call(&auth(&user, "x")).await;
        assert_eq!(code(&r), Some(ErrorCode::AuthFailed));
    })
    .await
}

fn run_admin(env: &TestEnv, args: &[&str], password: Option<&str>) {
    let mut cmd = xfer_cmd(&env.config_dir, &env.work);
    cmd.args(["user"]).args(args).arg("--root").arg(&env.root);
    if let Some(pw) = password {
        cmd.env("XFER_PASSWORD", pw);
    }
    run(cmd).assert_ok();
}

/// Waits for the server to end `raw`'s session on its own; returns its last reply, if any.
async fn ended(raw: &mut Raw) -> Option<Response> {
    match raw.frame().await {
        Ok(xfer::proto::Frame::Control(p)) => {
            let r = xfer::proto::Frame::decode_control::<Response>(&p).unwrap();
            raw.expect_closed().await;
            Some(r)
        }
        Ok(other) => panic!("{other:?}"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn ends_live_sessions_after_user_del_and_user_passwd() {
    // CTRL-SESS-7: the admin commands run as another process; the server notices.
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        srv.add_user("bob", PW, MIB, None);
        let mut alice = Raw::login(srv.addr, "alice", PW).await;
        let mut bob = Raw::login(srv.addr, "bob", PW).await;
        run_admin(&env, &["passwd", "alice"], Some("new-pw"));
        let last = ended(&mut alice).await;
        assert_eq!(last.as_ref().and_then(code), Some(ErrorCode::NotAuthenticated), "{last:?}");
        assert!(matches!(bob.call(&Request::Pwd).await, Response::Pwd { .. }), "other users stay");
        let (r, _) = login_from(1, &srv, "alice", PW).await;
        assert_eq!(code(&r), Some(ErrorCode::AuthFailed), "the old password is gone");
        let (r, _) = login_from(1, &srv, "alice", "new-pw").await;
        assert!(matches!(r, Response::Authed { .. }));

        run_admin(&env, &["del", "bob"], None);
        let last = ended(&mut bob).await;
        assert_eq!(last.as_ref().and_then(code), Some(ErrorCode::NotAuthenticated), "{last:?}");
    })
    .await
}

/// One transfer of each kind, started on a raw connection and left in its data phase.
#[derive(Debug, Clone, Copy)]
enum Cut {
    TcpPut,
    UdpPut,
    TcpGet,
    UdpGet,
}

/// Starts `cut` on `raw`; returns once the server is inside the transfer.
async fn start_transfer(raw: &mut Raw, cut: Cut) {
    use xfer::proto::{DataChunk, Transport};
    match cut {
        Cut::TcpPut => {
            assert_eq!(raw.start_put("up-tcp", 4 * MIB, false).await, 0);
            raw.send_chunk(&DataChunk::new(0, bytes::Bytes::from(vec![5u8; 64 * 1024]))).await;
        }
        Cut::UdpPut => {
            let req = Request::Put { path: "up-udp".into(), size: 4 * MIB, resume: false, transport: Transport::Udp };
            let r = raw.call(&req).await;
            assert!(matches!(r, Response::UdpPutReady { .. }), "{r:?}");
        }
        Cut::TcpGet => {
            raw.send_get("big").await;
            let r = raw.recv().await;
            assert!(matches!(r, Response::GetReady { .. }), "{r:?}");
        }
        Cut::UdpGet => {
            let req = Request::GetUdp { path: "big".into(), held: vec![], held_md5: None, rate_limit: None };
            let r = raw.call(&req).await;
            assert!(matches!(r, Response::UdpGetReady { .. }), "{r:?}");
        }
    }
}

/// Reads what the server sends after a revocation until its final control reply: a TCP
/// download's data frames are read slowly (bounded in count), so the download is still running
/// when the revocation lands.
async fn final_reply(raw: &mut Raw) -> Response {
    for _ in 0..200 {
        match raw.frame().await {
            Ok(xfer::proto::Frame::Data(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(xfer::proto::Frame::Control(p)) => return xfer::proto::Frame::decode_control::<Response>(&p).unwrap(),
            Err(e) => panic!("connection ended without a final reply: {e}"),
        }
    }
    panic!("no final reply after 200 data frames");
}

#[tokio::test]
async fn ends_transfers_with_not_authenticated_when_the_user_changes() {
    // CTRL-SESS-7 during a transfer: TCP and UDP, upload and download, by `user passwd` and
    // `user del`. The reply is NotAuthenticated (not ShuttingDown), the connection closes,
    // and an upload's partial stays, charged, with nothing left reserved.
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 200 * MIB, None);
        make_big_file(&srv.home("alice").join("big"), 64 * MIB, 9);
        let cuts = [Cut::TcpPut, Cut::UdpPut, Cut::TcpGet, Cut::UdpGet];
        for (n, cut) in cuts.into_iter().enumerate() {
            let (old, new) = (format!("pw-{n}"), format!("pw-{}", n + 1));
            let old = if n == 0 { PW.to_string() } else { old };
            let mut raw = Raw::login(srv.addr, "alice", &old).await;
            start_transfer(&mut raw, cut).await;
            run_admin(&env, &["passwd", "alice"], Some(&new));
            let last = final_reply(&mut raw).await;
            assert_eq!(code(&last), Some(ErrorCode::NotAuthenticated), "{cut:?}: {last:?}");
            if let Response::Error { message, .. } = &last {
                assert!(message.contains("account was changed or deleted"), "{cut:?}: {message}");
            }
            raw.expect_closed().await;
        }
        assert!(wait_until(STEP, || srv.user("alice").reserved_bytes == 0).await, "reservations released");
        let part = srv.home("alice").join(".up-tcp.xfer-part");
        assert_eq!(file_len(&part), Some(64 * 1024), "the TCP upload's partial is kept");
        assert!(srv.home("alice").join(".up-udp.xfer-part").exists(), "the UDP upload's partial is kept");
        // `big` was planted beside the server, so it is on disk but not charged.
        let (bytes, _) = disk_usage(&srv.home("alice"));
        assert_eq!(srv.user("alice").used_bytes + 64 * MIB, bytes, "partials are charged");

        // `user del` cuts a running upload the same way.
        srv.add_user("bob", PW, 200 * MIB, None);
        for cut in [Cut::TcpPut, Cut::UdpPut] {
            let mut raw = Raw::login(srv.addr, "bob", PW).await;
            start_transfer(&mut raw, cut).await;
            run_admin(&env, &["del", "bob"], None);
            let last = final_reply(&mut raw).await;
            assert_eq!(code(&last), Some(ErrorCode::NotAuthenticated), "{cut:?}: {last:?}");
            raw.expect_closed().await;
            srv.add_user("bob", PW, 200 * MIB, None);
        }
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn rejects_inheriting_files_when_a_deleted_name_is_added_again() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        run_admin(&env, &["add", "carol", "--quota", "1MiB"], Some(PW));
        let mut c = srv.connect("carol", PW).await;
        let local = env.local("f");
        make_file(&local, 5000, 1);
        c.put(&local, "secret.txt", false, xfer::transfer::progress::no_progress()).await.unwrap();
        c.bye().await;
        run_admin(&env, &["del", "carol"], None);
        run_admin(&env, &["add", "carol", "--quota", "1MiB"], Some("other-pw"));
        let mut c = srv.connect("carol", "other-pw").await;
        assert!(c.list("/").await.unwrap().is_empty(), "the new carol sees none of the old files");
        assert_eq!(srv.user("carol").used_bytes, 0);
        let archived: Vec<_> = std::fs::read_dir(env.root.join("deleted")).unwrap().flatten().collect();
        assert_eq!(archived.len(), 1);
        assert!(archived[0].path().join("secret.txt").exists(), "the old files were kept aside");
        // Leftovers in homes/ (e.g. from an older version) are moved aside on add, too.
        std::fs::create_dir_all(env.root.join("homes/dave")).unwrap();
        std::fs::write(env.root.join("homes/dave/old"), b"x").unwrap();
        run_admin(&env, &["add", "dave", "--quota", "1MiB"], Some(PW));
        assert!(dir_names(&env.root.join("homes/dave")).is_empty());
    })
    .await
}
