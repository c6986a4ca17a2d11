//! Round trips: the login is pipelined with the first command (CTRL-HELLO-3, CTRL-AUTH-6), small
//! uploads send their data with the request (CTRL-PUT-7), and `auto` moves small files over the
//! control connection (UDP-FALLBACK-4, CTRL-GET-5). Counted, not timed: a relay counts the
//! client's flights (see `support::flights`).

use crate::support;

use std::time::Duration;

use support::flights::FlightProxy;
use support::*;
use xfer::client::{
    partial_path, Client, ClientError, TransferOptions, TransportChoice, AHEAD_MAX, SMALL_TRANSFER_MAX,
};
use xfer::conn::Batch;
use xfer::proto::{DataChunk, ErrorCode, Request, Response, Transport, PROTOCOL_VERSION};

const PW: &str = "rtt-pw";
/// How late server bytes reach the client through the relay: far above the gaps between writes
/// a client makes without waiting, so they are never split into two flights.
const HOLD: Duration = Duration::from_millis(200);

/// A server with alice, a relay in front of it, and the relay's certificate pinned (first
/// contact writes known_hosts, which is not what is being counted).
fn setup() -> (TestEnv, TestServer, FlightProxy) {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, 64 * MIB, None);
    let proxy = FlightProxy::start(srv.addr, HOLD);
    cli(&env, &proxy, &["pwd"]).assert_ok();
    (env, srv, proxy)
}

fn cli(env: &TestEnv, proxy: &FlightProxy, args: &[&str]) -> Out {
    run(client_cmd(&proxy.addr_string(), "alice", PW, &env.config_dir, &env.work, args))
}

/// Runs one CLI command through the relay; returns the round trips it waited for.
fn round_trips(env: &TestEnv, proxy: &FlightProxy, args: &[&str]) -> usize {
    let before = proxy.connections();
    cli(env, proxy, args).assert_ok();
    assert_eq!(proxy.connections(), before + 1, "one connection per command");
    let flights = proxy.last();
    eprintln!("{args:?}: {flights:?}");
    flights.round_trips()
}

/// CTRL-HELLO-3, CTRL-AUTH-6.
#[test]
fn ls_takes_at_most_three_round_trips() {
    let (env, srv, proxy) = setup();
    std::fs::write(srv.home("alice").join("a.txt"), b"x").unwrap();
    // TCP, TLS, then preamble + Auth + List together.
    let n = round_trips(&env, &proxy, &["ls"]);
    assert!(n <= 3, "ls took {n} round trips: {:?}", proxy.last());
}

/// CTRL-PUT-7, UDP-CTRL-7, UDP-FALLBACK-4: under `auto` a small get is `GetAuto`, answered
/// with the data, so it costs what it does with `tcp`.
#[test]
fn small_put_and_get_take_at_most_three_round_trips() {
    let (env, srv, proxy) = setup();
    for transport in ["auto", "tcp"] {
        let name = format!("six-{transport}.txt");
        std::fs::write(env.local(&name), b"hello\n").unwrap();
        let n = round_trips(&env, &proxy, &["put", &name, "--transport", transport]);
        assert!(n <= 3, "put --transport {transport} took {n} round trips: {:?}", proxy.last());
        assert_eq!(std::fs::read(srv.home("alice").join(&name)).unwrap(), b"hello\n");

        let back = format!("back-{transport}.txt");
        let n = round_trips(&env, &proxy, &["get", &name, &back, "--transport", transport]);
        assert!(n <= 3, "get --transport {transport} took {n} round trips: {:?}", proxy.last());
        assert_eq!(std::fs::read(env.local(&back)).unwrap(), b"hello\n");
    }
}

#[test]
fn shell_moves_each_small_file_in_one_round_trip() {
    let (env, srv, proxy) = setup();
    let files = 5;
    let mut script = String::new();
    for i in 0..files {
        make_file(&env.local(&format!("f{i}")), 4096, i as u64);
        script.push_str(&format!("put f{i}\n"));
    }
    for i in 0..files {
        script.push_str(&format!("get f{i} g{i}\n"));
    }
    let before = proxy.connections();
    let cmd = client_cmd(&proxy.addr_string(), "alice", PW, &env.config_dir, &env.work, &["shell"]);
    let out = run_with_stdin(cmd, Some(&script));
    out.assert_ok();
    assert_eq!(proxy.connections(), before + 1, "one session: {out:?}");
    for i in 0..files {
        let sent = std::fs::read(env.local(&format!("f{i}"))).unwrap();
        assert_eq!(std::fs::read(srv.home("alice").join(format!("f{i}"))).unwrap(), sent);
        assert_eq!(std::fs::read(env.local(&format!("g{i}"))).unwrap(), sent);
    }
    // TCP, TLS, login with the shell's pwd; then one round trip per put and one per get (the
    // server sends a small download over TCP at once, UDP-CTRL-7).
    let n = proxy.last().round_trips();
    eprintln!("shell: {n} round trips: {:?}", proxy.last());
    assert!(n <= 3 + files + files, "{n} round trips: {:?}", proxy.last());
}

/// CTRL-AUTH-6: the CLI prints the login failure, not the `NotAuthenticated` behind it.
#[test]
fn rejects_a_wrong_password_reporting_the_login_not_the_command() {
    let (env, _srv, proxy) = setup();
    let out = run(client_cmd(&proxy.addr_string(), "alice", "wrong", &env.config_dir, &env.work, &["ls"]));
    let line = out.assert_one_line_error();
    assert!(line.contains("login failed"), "{line}");
}

#[test]
fn put_into_a_directory_needs_no_stat() {
    let (env, srv, proxy) = setup();
    std::fs::create_dir(srv.home("alice").join("dir")).unwrap();
    std::fs::write(env.local("in.txt"), b"abc").unwrap();
    cli(&env, &proxy, &["put", "in.txt", "dir"]).assert_ok();
    assert_eq!(std::fs::read(srv.home("alice").join("dir/in.txt")).unwrap(), b"abc");
    cli(&env, &proxy, &["put", "in.txt", "other.txt"]).assert_ok();
    assert_eq!(std::fs::read(srv.home("alice").join("other.txt")).unwrap(), b"abc");
}

/// `put -r` walks the tree top down, so each directory below the root is made with one `Mkdir`
/// (its parent exists), not one per component of its path (plus a `Stat` for each one that
/// exists).
#[test]
fn put_r_makes_each_directory_in_one_round_trip() {
    let (env, srv, proxy) = setup();
    let dirs = ["t", "t/a", "t/a/b", "t/a/b/c", "t/a/b/c/d"];
    for (i, d) in dirs.iter().enumerate() {
        std::fs::create_dir(env.local(d)).unwrap();
        make_file(&env.local(&format!("{d}/f")), 100, i as u64);
    }
    // One session (-j 1): TCP, TLS, login with the root's Mkdir; then the Mkdirs of every
    // directory below it in a row (CTRL-SESS-8), then the small files ahead (CTRL-PUT-8).
    let n = round_trips(&env, &proxy, &["put", "-r", "-j", "1", "t"]);
    assert!(n <= 3 + 1 + 1, "put -r took {n} round trips: {:?}", proxy.last());
    for d in dirs {
        let f = format!("{d}/f");
        assert_eq!(std::fs::read(srv.home("alice").join(&f)).unwrap(), std::fs::read(env.local(&f)).unwrap());
    }
    // Again, onto what exists: the root's Mkdir and Stat, then the other Mkdirs refused as
    // existing, then their Stats, each in a row.
    let n = round_trips(&env, &proxy, &["put", "-r", "-j", "1", "t"]);
    assert!(n <= 3 + 1 + 2 + 1, "put -r again took {n} round trips: {:?}", proxy.last());
    // A file where a directory goes is an error naming it, with nothing written below it.
    std::fs::remove_dir_all(srv.home("alice").join("t/a/b/c")).unwrap();
    std::fs::write(srv.home("alice").join("t/a/b/c"), b"in the way").unwrap();
    let out = cli(&env, &proxy, &["put", "-r", "-j", "1", "t"]);
    let line = out.assert_one_line_error();
    assert!(line.contains("t/a/b/c: exists and is not a directory"), "{line}");
    assert_eq!(std::fs::read(srv.home("alice").join("t/a/b/c")).unwrap(), b"in the way");
}

/// CTRL-SESS-8: requests answered by one reply go in a row and are answered in order, each
/// as if alone: a refusal in the middle touches none of the others.
#[tokio::test]
async fn requests_in_a_row_are_answered_in_order_each_as_if_alone() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        let mut c = Client::connect_and_login(&srv.options(), "alice", PW).await.expect("connect");
        let mkdir = |p: &str| Request::Mkdir { path: p.into() };
        let reqs = [
            mkdir("a"),
            mkdir("a"),
            mkdir("a/b"),
            Request::Remove { path: "missing".into() },
            mkdir("../out"),
            Request::Cd { path: "a".into() },
            mkdir("c"),
            Request::Pwd,
        ];
        let replies = c.call_many(&reqs).await.unwrap();
        let codes: Vec<Option<ErrorCode>> = replies.iter().map(|r| r.as_ref().err().and_then(|e| e.code())).collect();
        assert_eq!(
            codes,
            [
                None,
                Some(ErrorCode::AlreadyExists),
                None,
                Some(ErrorCode::NotFound),
                Some(ErrorCode::PathEscapes),
                None,
                None,
                None
            ]
        );
        assert!(matches!(&replies[7], Ok(Response::Pwd { path }) if path == "/a"), "{:?}", replies[7]);
        assert!(srv.home("alice").join("a/b").is_dir() && srv.home("alice").join("a/c").is_dir());
        // Transfers do not go in a row: refused before anything is sent, the session usable.
        let put = Request::Put { path: "f".into(), size: 1, resume: false, transport: Transport::Tcp };
        assert!(matches!(c.call_many(&[Request::Pwd, put]).await, Err(ClientError::Protocol(_))));
        assert_eq!(c.pwd().await.unwrap(), "/a");
        // More than one write's worth: every reply, in order.
        let many: Vec<Request> = (0..300).map(|i| mkdir(&format!("m{i}"))).collect();
        let replies = c.call_many(&many).await.unwrap();
        assert_eq!(replies.len(), 300);
        assert!(replies.iter().all(|r| matches!(r, Ok(Response::Ok))));
        assert_eq!(dir_names(&srv.home("alice").join("a")).len(), 302);
        srv.assert_no_panics();
    })
    .await;
}

/// CTRL-PUT-8: the small files of one command go ahead of each other's replies, up to
/// `AHEAD_MAX` unanswered, so a hundred of them through one session cost a few
/// round trips in all, not one each.
#[test]
fn many_small_files_through_one_session_go_ahead_of_their_replies() {
    let (env, srv, proxy) = setup();
    let files = 100;
    std::fs::create_dir(env.local("many")).unwrap();
    for i in 0..files {
        make_file(&env.local(&format!("many/f{i:03}")), 1000 + i * 37, i as u64);
    }
    let n = round_trips(&env, &proxy, &["put", "-r", "-j", "1", "many"]);
    // TCP, TLS, login with the root's Mkdir and a full window of uploads, then a refill
    // each time half the window is answered. One each would be 100 more.
    let refills = (files - AHEAD_MAX).div_ceil(AHEAD_MAX / 2);
    assert!(n <= 3 + refills + 1, "{files} small files took {n} round trips: {:?}", proxy.last());
    for i in 0..files {
        let f = format!("many/f{i:03}");
        assert_eq!(md5_file(&srv.home("alice").join(&f)), md5_file(&env.local(&f)), "{f}");
    }
}

/// CTRL-GET-6: a tree of small files comes down the same way, the sizes known from the walk.
#[test]
fn many_small_downloads_through_one_session_go_ahead_of_their_replies() {
    let (env, srv, proxy) = setup();
    let files = 100;
    let home = srv.home("alice");
    std::fs::create_dir(home.join("many")).unwrap();
    for i in 0..files {
        make_file(&home.join(format!("many/f{i:03}")), 1000 + i * 37, i as u64);
    }
    for transport in ["auto", "tcp"] {
        let to = format!("back-{transport}");
        let n = round_trips(&env, &proxy, &["get", "-r", "-j", "1", "--transport", transport, "many", &to]);
        // TCP, TLS, login with the Stat and the Walk of the source, a full window of
        // downloads, then a refill each time half the window is answered.
        let refills = (files - AHEAD_MAX).div_ceil(AHEAD_MAX / 2);
        assert!(n <= 4 + refills + 1, "{transport}: {files} small files took {n} round trips: {:?}", proxy.last());
        for i in 0..files {
            let (there, here) = (home.join(format!("many/f{i:03}")), env.local(&format!("{to}/f{i:03}")));
            assert_eq!(md5_file(&here), md5_file(&there), "{transport}: f{i:03}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The same rules at the protocol level.

fn hello(user: &str, password: &str) -> Batch {
    let mut b = Batch::new();
    b.preamble(PROTOCOL_VERSION);
    b.control(&Request::Auth { user: user.into(), password: password.into() }).unwrap();
    b
}

/// Sends a batch as one write, exactly as queued.
async fn send(raw: &mut Raw, batch: Batch) {
    let mut w = xfer::conn::FrameWriter::new(&mut raw.writer);
    w.write_batch(batch).await.expect("send batch");
}

fn inline_put(b: &mut Batch, path: &str, data: &[u8]) {
    let put = Request::Put { path: path.into(), size: data.len() as u64, resume: false, transport: Transport::Tcp };
    b.control(&put).unwrap();
    if !data.is_empty() {
        b.data(&DataChunk::new(0, bytes::Bytes::copy_from_slice(data)));
    }
    b.control(&Request::PutEnd { md5: md5_bytes(data) }).unwrap();
}

#[tokio::test]
async fn accepts_requests_pipelined_behind_the_preamble_and_auth() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        std::fs::write(srv.home("alice").join("a"), b"1").unwrap();
        let mut raw = Raw::tls(srv.addr).await;
        // CTRL-HELLO-3, CTRL-AUTH-6: all of it in one write, before the server said anything.
        let mut b = hello("alice", PW);
        b.control(&Request::List { path: String::new() }).unwrap();
        b.control(&Request::Mkdir { path: "d".into() }).unwrap();
        inline_put(&mut b, "d/up", b"inline");
        b.control(&Request::Pwd).unwrap();
        send(&mut raw, b).await;
        assert_eq!(raw.reader.read_preamble().await.unwrap(), PROTOCOL_VERSION);
        assert!(matches!(raw.recv().await, Response::Authed { .. }));
        match raw.recv().await {
            Response::Listing { entries } => assert_eq!(entries.len(), 1),
            other => panic!("expected the listing, got {other:?}"),
        }
        assert_eq!(raw.recv().await, Response::Ok);
        assert_eq!(raw.recv().await, Response::PutReady { offset: 0, prefix_md5: None });
        assert!(matches!(raw.recv().await, Response::PutDone { size: 6, .. }));
        assert_eq!(raw.recv().await, Response::Pwd { path: "/".into() });
        assert_eq!(std::fs::read(srv.home("alice").join("d/up")).unwrap(), b"inline");
        srv.assert_no_panics();
    })
    .await;
}

#[tokio::test]
async fn rejects_every_request_pipelined_behind_a_failed_login() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        let mut raw = Raw::tls(srv.addr).await;
        let mut b = hello("alice", "wrong");
        b.control(&Request::Mkdir { path: "d".into() }).unwrap();
        inline_put(&mut b, "up", b"data");
        send(&mut raw, b).await;
        assert_eq!(raw.reader.read_preamble().await.unwrap(), PROTOCOL_VERSION);
        raw.expect_error(ErrorCode::AuthFailed).await;
        // Mkdir, Put, its data frame and PutEnd: one NotAuthenticated each, nothing done.
        for _ in 0..4 {
            raw.expect_error(ErrorCode::NotAuthenticated).await;
        }
        assert!(dir_names(&srv.home("alice")).is_empty(), "nothing was executed");
        // The session is still in AwaitAuth and in step.
        assert!(matches!(
            raw.call(&Request::Auth { user: "alice".into(), password: PW.into() }).await,
            Response::Authed { .. }
        ));
    })
    .await;
}

#[tokio::test]
async fn refused_inline_upload_gets_one_error_per_frame_and_the_session_goes_on() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        let mut raw = Raw::login(srv.addr, "alice", PW).await;
        // CTRL-PUT-7: onto "/" is refused; the data frame and PutEnd behind it are answered
        // as outside an upload.
        let mut b = Batch::new();
        inline_put(&mut b, "/", b"abc");
        send(&mut raw, b).await;
        raw.expect_error(ErrorCode::IsADirectory).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        assert_eq!(raw.call(&Request::Pwd).await, Response::Pwd { path: "/".into() });
        // An empty file has no data frame: Put and PutEnd only.
        let mut b = Batch::new();
        inline_put(&mut b, "empty", b"");
        send(&mut raw, b).await;
        assert_eq!(raw.recv().await, Response::PutReady { offset: 0, prefix_md5: None });
        assert!(matches!(raw.recv().await, Response::PutDone { size: 0, .. }));
        assert_eq!(std::fs::read(srv.home("alice").join("empty")).unwrap(), b"");
    })
    .await;
}

/// CTRL-PUT-8: inline uploads sent back to back are served in order, each as if alone: a
/// refused one in the middle gets its errors and the ones behind it still land, and a
/// `SetAttrs` behind each applies to its own upload only.
#[tokio::test]
async fn inline_uploads_in_a_row_are_answered_in_order_and_a_refusal_touches_none_behind_it() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        let mut raw = Raw::login(srv.addr, "alice", PW).await;
        let mut b = Batch::new();
        inline_put(&mut b, "one", b"first");
        let attrs = |path: &str, data: &[u8]| Request::SetAttrs {
            path: path.into(),
            mtime: 1_000_000_000,
            mode: None,
            upload_md5: Some(md5_bytes(data)),
        };
        b.control(&attrs("one", b"first")).unwrap();
        inline_put(&mut b, "/", b"refused");
        b.control(&attrs("/", b"refused")).unwrap();
        inline_put(&mut b, ".three.xfer-part", b"a partial's name");
        inline_put(&mut b, "three", b"third");
        b.control(&attrs("three", b"not these bytes")).unwrap();
        send(&mut raw, b).await;
        assert_eq!(raw.recv().await, Response::PutReady { offset: 0, prefix_md5: None });
        assert!(matches!(raw.recv().await, Response::PutDone { size: 5, .. }));
        assert_eq!(raw.recv().await, Response::Ok);
        raw.expect_error(ErrorCode::IsADirectory).await;
        raw.expect_error(ErrorCode::BadRequest).await; // its data frame
        raw.expect_error(ErrorCode::BadRequest).await; // its PutEnd
        raw.expect_error(ErrorCode::SourceChanged).await; // its SetAttrs: nothing committed
        raw.expect_error(ErrorCode::InvalidPath).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        assert_eq!(raw.recv().await, Response::PutReady { offset: 0, prefix_md5: None });
        assert!(matches!(raw.recv().await, Response::PutDone { size: 5, .. }));
        raw.expect_error(ErrorCode::SourceChanged).await; // the digest is not this upload's
        assert_eq!(raw.call(&Request::Pwd).await, Response::Pwd { path: "/".into() });
        let home = srv.home("alice");
        assert_eq!(std::fs::read(home.join("one")).unwrap(), b"first");
        assert_eq!(std::fs::read(home.join("three")).unwrap(), b"third");
        let mtime = |f: &str| std::fs::metadata(home.join(f)).unwrap().modified().unwrap();
        assert_eq!(mtime("one"), std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
        assert_ne!(mtime("three"), std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
        assert!(!home.join(".three.xfer-part").exists());
        srv.assert_no_panics();
    })
    .await;
}

/// CTRL-GET-6: downloads sent back to back are served one after the other, each whole, and a
/// refused one in the middle is one `Error` that touches none of the others.
#[tokio::test]
async fn downloads_in_a_row_are_answered_in_order_and_a_refusal_touches_none_behind_it() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        let home = srv.home("alice");
        let a = make_file(&home.join("a"), 300_000, 1);
        let b = make_file(&home.join("b"), 10, 2);
        let mut raw = Raw::login(srv.addr, "alice", PW).await;
        let mut batch = Batch::new();
        for path in ["a", "missing", "b", "a"] {
            batch
                .control(&Request::Get { path: path.into(), offset: 0, prefix_md5: None, transport: Transport::Tcp })
                .unwrap();
        }
        send(&mut raw, batch).await;
        for (n, expected) in [Some(&a), None, Some(&b), Some(&a)].into_iter().enumerate() {
            let Some(content) = expected else {
                raw.expect_error(ErrorCode::NotFound).await;
                continue;
            };
            assert_eq!(raw.recv().await, Response::GetReady { size: content.len() as u64, offset: 0 }, "get {n}");
            assert_eq!(&raw.recv_download().await, content, "get {n}");
        }
        assert_eq!(raw.call(&Request::Pwd).await, Response::Pwd { path: "/".into() });
        srv.assert_no_panics();
    })
    .await;
}

#[tokio::test]
async fn accepts_abort_and_get_together_after_udp_get_ready() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        std::fs::write(srv.home("alice").join("small"), b"tiny file").unwrap();
        let mut raw = Raw::login(srv.addr, "alice", PW).await;
        let req = Request::GetUdp { path: "small".into(), held: vec![], held_md5: None, rate_limit: None };
        assert!(matches!(raw.call(&req).await, Response::UdpGetReady { size: 9, .. }));
        // CTRL-GET-5: no datagram sent; Abort and Get leave together.
        let mut b = Batch::new();
        b.control(&Request::Abort).unwrap();
        b.control(&Request::Get { path: "small".into(), offset: 0, prefix_md5: None, transport: Transport::Tcp })
            .unwrap();
        send(&mut raw, b).await;
        assert_eq!(raw.recv().await, Response::Ok);
        assert_eq!(raw.recv().await, Response::GetReady { size: 9, offset: 0 });
        match raw.frame().await {
            Ok(xfer::proto::Frame::Data(c)) => assert_eq!(&c.data[..], b"tiny file"),
            other => panic!("expected the data, got {other:?}"),
        }
        assert!(matches!(raw.recv().await, Response::GetEnd { .. }));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The library client.

/// CTRL-AUTH-6: the client reports the refused login, then refuses to go on.
#[tokio::test]
async fn pipelined_login_failure_is_what_the_first_request_reports() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        let mut c = Client::connect_and_login(&srv.options(), "alice", "wrong").await.expect("connect");
        assert_eq!(code_of(c.list("").await), ErrorCode::AuthFailed);
        assert!(!c.is_usable());
        assert!(matches!(c.pwd().await, Err(ClientError::Broken)));
        let mut c = Client::connect_and_login(&srv.options(), "alice", PW).await.expect("connect");
        assert_eq!(c.pwd().await.unwrap(), "/");
        c.bye().await;
    })
    .await;
}

/// UDP-FALLBACK-4: the threshold is inclusive, and the larger file still goes over UDP.
#[tokio::test]
async fn auto_sends_small_files_over_tcp_and_larger_ones_over_udp() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let mut c = Client::connect_and_login(&srv.options(), "alice", PW).await.expect("connect");
        let auto = TransferOptions { transport: TransportChoice::Auto, ..Default::default() };
        for (name, size, via) in [
            ("empty", 0, Transport::Tcp),
            ("small", SMALL_TRANSFER_MAX, Transport::Tcp),
            ("large", SMALL_TRANSFER_MAX + 1, Transport::Udp),
        ] {
            let data = make_file(&env.local(name), size as usize, size);
            let up = c.put_with(&env.local(name), name, &auto, xfer::transfer::progress::no_progress()).await;
            assert_eq!(up.expect("put").transport, via, "{name} upload");
            let back = env.local(&format!("{name}.back"));
            let down = c.get_with(name, &back, &auto, xfer::transfer::progress::no_progress()).await;
            assert_eq!(down.expect("get").transport, via, "{name} download");
            assert_eq!(std::fs::read(&back).unwrap(), data, "{name} byte-exact");
        }
        // Forced UDP asks with GetUdp and never takes TCP, however small the file.
        let udp = TransferOptions { transport: TransportChoice::Udp, ..Default::default() };
        let back = env.local("small.udp");
        let down = c.get_with("small", &back, &udp, xfer::transfer::progress::no_progress()).await;
        assert_eq!(down.expect("get").transport, Transport::Udp, "forced udp");
        assert_eq!(std::fs::read(&back).unwrap().len() as u64, SMALL_TRANSFER_MAX);
        assert!(c.is_usable());
        c.bye().await;
        srv.assert_no_panics();
    })
    .await;
}

/// A no-change `sync` asks what the remote tree holds with `Stat` and `Walk` sent together
/// (CTRL-TREE-1), pipelined behind the login: TCP, TLS, then one flight, in both directions.
#[test]
fn no_change_sync_takes_three_round_trips() {
    let (env, srv, proxy) = setup();
    std::fs::create_dir_all(env.local("site/sub")).unwrap();
    for i in 0..50u64 {
        let dir = if i % 2 == 0 { "site" } else { "site/sub" };
        make_file(&env.local(&format!("{dir}/f{i}")), 100, i);
    }
    cli(&env, &proxy, &["sync", "site", ":www"]).assert_ok();
    assert!(srv.home("alice").join("www/sub/f1").is_file());
    let n = round_trips(&env, &proxy, &["sync", "site", ":www"]);
    assert!(n <= 3, "a no-change sync up took {n} round trips: {:?}", proxy.last());
    cli(&env, &proxy, &["sync", ":www", "back"]).assert_ok();
    let n = round_trips(&env, &proxy, &["sync", ":www", "back"]);
    assert!(n <= 3, "a no-change sync down took {n} round trips: {:?}", proxy.last());
    // A missing remote directory is still told apart (and then made) in that one flight.
    cli(&env, &proxy, &["sync", "site", ":fresh"]).assert_ok();
    assert!(srv.home("alice").join("fresh/sub/f1").is_file());
    // A remote file is not a directory to sync with.
    std::fs::write(srv.home("alice").join("plain"), b"x").unwrap();
    let out = cli(&env, &proxy, &["sync", ":plain", "back2"]);
    assert!(!out.status.success(), "sync from a remote file succeeded");
}

// ---------------------------------------------------------------------------------------------
// GetAuto: the server picks the transport by size (UDP-CTRL-7, UDP-CTRL-8, UDP-FALLBACK-5).

fn get_auto(path: &str, tcp_max: u64) -> Request {
    Request::GetAuto { path: path.into(), held: vec![], held_md5: None, rate_limit: None, tcp_max }
}

/// UDP-CTRL-7, UDP-CTRL-8, CTRL-ATTR-3: a small file is served at once as a TCP `Get`, and the
/// `Walk` in the same flight is answered after its `GetEnd`.
#[tokio::test]
async fn get_auto_serves_a_small_file_over_tcp_with_the_walk_behind_it() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        std::fs::write(srv.home("alice").join("small"), b"tiny file").unwrap();
        let mut raw = Raw::login(srv.addr, "alice", PW).await;
        let mut b = Batch::new();
        b.control(&get_auto("small", SMALL_TRANSFER_MAX)).unwrap();
        b.control(&Request::Walk { path: "small".into() }).unwrap();
        send(&mut raw, b).await;
        assert_eq!(raw.recv().await, Response::GetReady { size: 9, offset: 0 });
        assert_eq!(raw.recv_download().await, b"tiny file");
        match raw.recv().await {
            Response::Tree { entries } => assert_eq!((entries.len(), entries[0].size), (1, 9)),
            other => panic!("expected the Walk's reply, got {other:?}"),
        }
        // A file just over `tcp_max` goes over UDP; a missing one is one error, and the Walk
        // behind it is still answered.
        make_file(&srv.home("alice").join("over"), SMALL_TRANSFER_MAX as usize + 1, 1);
        assert!(matches!(
            raw.call(&get_auto("over", SMALL_TRANSFER_MAX)).await,
            Response::UdpGetReady { size, .. } if size == SMALL_TRANSFER_MAX + 1
        ));
        assert_eq!(raw.call(&Request::Abort).await, Response::Ok);
        let mut b = Batch::new();
        b.control(&get_auto("missing", SMALL_TRANSFER_MAX)).unwrap();
        b.control(&Request::Walk { path: "missing".into() }).unwrap();
        send(&mut raw, b).await;
        raw.expect_error(ErrorCode::NotFound).await;
        raw.expect_error(ErrorCode::NotFound).await;
        assert_eq!(raw.call(&Request::Pwd).await, Response::Pwd { path: "/".into() });
        srv.assert_no_panics();
    })
    .await;
}

/// UDP-CTRL-7: a `tcp_max` of u64::MAX is read as the server's own limit (4 MiB): a file
/// within it is an ordinary streamed TCP download, a larger one goes over UDP; the `Walk` behind
/// a UDP download is answered before the `Ok` of its `Abort` (UDP-CTRL-8).
#[tokio::test]
async fn get_auto_caps_a_huge_tcp_max_at_the_servers_limit() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let mid = make_file(&srv.home("alice").join("mid"), 3 * MIB as usize, 2);
        make_file(&srv.home("alice").join("big"), 5 * MIB as usize, 3);
        let mut raw = Raw::login(srv.addr, "alice", PW).await;
        assert_eq!(raw.call(&get_auto("mid", u64::MAX)).await, Response::GetReady { size: 3 * MIB, offset: 0 });
        assert_eq!(raw.recv_download().await, mid);
        let mut b = Batch::new();
        b.control(&get_auto("big", u64::MAX)).unwrap();
        b.control(&Request::Walk { path: "big".into() }).unwrap();
        send(&mut raw, b).await;
        assert!(matches!(raw.recv().await, Response::UdpGetReady { size, .. } if size == 5 * MIB));
        raw.send(&Request::Abort).await;
        assert!(matches!(raw.recv().await, Response::Tree { entries } if entries.len() == 1));
        assert_eq!(raw.recv().await, Response::Ok);
        // Rules of GetUdp hold: a zero rate limit is refused.
        let zero =
            Request::GetAuto { path: "mid".into(), held: vec![], held_md5: None, rate_limit: Some(0), tcp_max: 0 };
        raw.send(&zero).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        assert_eq!(raw.call(&Request::Pwd).await, Response::Pwd { path: "/".into() });
        srv.assert_no_panics();
    })
    .await;
}

/// A server whose UDP port is taken by someone else runs without UDP.
fn start_without_udp(env: &TestEnv) -> (TestServer, std::net::UdpSocket) {
    let squatter = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let srv = env.start_on(&squatter.local_addr().unwrap().to_string());
    (srv, squatter)
}

/// UDP-FALLBACK-5: without UDP the server sends any `GetAuto` of a whole file over TCP; a
/// resume from held ranges is refused as `GetUdp` would refuse it, and the client resumes over
/// TCP.
#[tokio::test]
async fn get_auto_without_udp_serves_any_size_over_tcp() {
    guard(async {
        let env = TestEnv::new();
        let (srv, _squatter) = start_without_udp(&env);
        srv.add_user("alice", PW, 64 * MIB, None);
        let big = make_file(&srv.home("alice").join("big"), 5 * MIB as usize, 4);
        let mut raw = Raw::login(srv.addr, "alice", PW).await;
        let plain = Request::GetUdp { path: "big".into(), held: vec![], held_md5: None, rate_limit: None };
        raw.send(&plain).await;
        raw.expect_error(ErrorCode::UnsupportedTransport).await;
        assert_eq!(
            raw.call(&get_auto("big", SMALL_TRANSFER_MAX)).await,
            Response::GetReady { size: 5 * MIB, offset: 0 }
        );
        assert_eq!(raw.recv_download().await, big);
        let held = Request::GetAuto {
            path: "big".into(),
            held: vec![(0, 5)],
            held_md5: Some(md5_bytes(&big[..5])),
            rate_limit: None,
            tcp_max: SMALL_TRANSFER_MAX,
        };
        raw.send(&held).await;
        raw.expect_error(ErrorCode::UnsupportedTransport).await;

        // The library client: whole files and a resumed partial arrive over TCP.
        let mut c = Client::connect_and_login(&srv.options(), "alice", PW).await.expect("connect");
        let auto = TransferOptions { transport: TransportChoice::Auto, ..Default::default() };
        let down = c.get_with("big", &env.local("big"), &auto, xfer::transfer::progress::no_progress()).await;
        assert_eq!(down.expect("get").transport, Transport::Tcp);
        assert_eq!(std::fs::read(env.local("big")).unwrap(), big);
        std::fs::write(partial_path(&env.local("again")), &big[..MIB as usize]).unwrap();
        let resume = TransferOptions { resume: true, ..auto };
        let down = c.get_with("big", &env.local("again"), &resume, xfer::transfer::progress::no_progress()).await;
        let down = down.expect("resumed get");
        assert_eq!((down.transport, down.resumed_from), (Transport::Tcp, MIB));
        assert_eq!(std::fs::read(env.local("again")).unwrap(), big);
        assert!(c.is_usable());
        c.bye().await;
        srv.assert_no_panics();
    })
    .await;
}

/// The client's way with a server that refuses `GetAuto` with `BadRequest`, as one that predates
/// it does: it asks again with `GetUdp` (UDP-FALLBACK-5). No server that predates `GetAuto` is
/// at hand, so a zero rate limit, which a current server refuses with `BadRequest` to both
/// requests, drives the same path: `GetAuto`, `GetUdp`, then TCP (UDP-FALLBACK-1).
#[tokio::test]
async fn client_takes_the_old_way_after_get_auto_is_refused() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        std::fs::write(srv.home("alice").join("empty"), b"").unwrap();
        std::fs::write(srv.home("alice").join("six"), b"hello\n").unwrap();
        let mut c = Client::connect_and_login(&srv.options(), "alice", PW).await.expect("connect");
        let zero = TransferOptions { transport: TransportChoice::Auto, rate_limit: Some(0), ..Default::default() };
        let down = c.get_with("empty", &env.local("empty"), &zero, xfer::transfer::progress::no_progress()).await;
        assert_eq!(down.expect("get").transport, Transport::Tcp);
        assert_eq!(std::fs::read(env.local("empty")).unwrap(), b"");
        // From now on this connection asks with GetUdp, then Abort + Get (CTRL-GET-5).
        let auto = TransferOptions { transport: TransportChoice::Auto, ..Default::default() };
        let down = c.get_with("six", &env.local("six"), &auto, xfer::transfer::progress::no_progress()).await;
        assert_eq!(down.expect("get").transport, Transport::Tcp);
        assert_eq!(std::fs::read(env.local("six")).unwrap(), b"hello\n");
        assert!(c.is_usable());
        c.bye().await;
        srv.assert_no_panics();
    })
    .await;
}
