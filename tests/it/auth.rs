//! Login, brute-force throttling, credential hygiene and certificate pinning.

use crate::support;

use std::time::{Duration, Instant};

use support::*;
use xfer::client::{Client, ClientError};
use xfer::proto::{ErrorCode, Request, Response};
use xfer::transfer::progress::no_progress;

const PW: &str = "s3cret-pw";

/// The server error of a login attempt.
async fn login_error(srv: &TestServer, user: &str, pw: &str) -> (ErrorCode, String) {
    let mut c = Client::connect(&srv.options()).await.expect("connect");
    match c.login(user, pw).await {
        Err(ClientError::Server { code, message }) => (code, message),
        other => panic!("expected a refused login, got {other:?}"),
    }
}

#[tokio::test]
async fn accepts_right_password_and_starts_at_home_root() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut c = Client::connect(&srv.options()).await.unwrap();
        assert_eq!(c.login("alice", PW).await.unwrap(), "/");
        assert_eq!(c.pwd().await.unwrap(), "/");
    })
    .await
}

#[tokio::test]
async fn rejects_wrong_password_and_unknown_user_identically() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let wrong = login_error(&srv, "alice", "not-the-password").await;
        let unknown = login_error(&srv, "mallory", PW).await;
        assert_eq!(wrong.0, ErrorCode::AuthFailed);
        assert_eq!(wrong, unknown, "wrong password and unknown user must be indistinguishable");
        // A failed login on a connection leaves it in the login state: retrying works.
        let mut c = Client::connect(&srv.options()).await.unwrap();
        assert_eq!(code_of(c.login("alice", "nope").await), ErrorCode::AuthFailed);
        assert_eq!(code_of(c.pwd().await), ErrorCode::NotAuthenticated);
        c.login("alice", PW).await.unwrap();
        assert_eq!(c.pwd().await.unwrap(), "/");
    })
    .await
}

#[tokio::test]
async fn rejects_correct_password_while_throttled_then_accepts_after_delay() {
    guard(async {
        let env = TestEnv::new();
        // 1 s rather than 0.5 s: the check right after the last failure must land inside the
        // lockout even on a loaded machine.
        env.configure(&[("free_failures", "2"), ("base_delay_ms", "1000"), ("max_delay_ms", "1000")]);
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut c = Client::connect(&srv.options()).await.unwrap();
        for _ in 0..3 {
            assert_eq!(code_of(c.login("alice", "guess").await), ErrorCode::AuthFailed);
        }
        let locked_at = Instant::now();
        match c.login("alice", PW).await {
            Err(ClientError::Server { code: ErrorCode::Throttled, message }) => {
                assert!(message.contains("try again"), "throttle message: {message}")
            }
            other => panic!("expected Throttled for the right password during lockout, got {other:?}"),
        }
        // Keep trying (bounded); every refusal is Throttled, then the right password works.
        let mut attempts = 0;
        let cwd = loop {
            attempts += 1;
            assert!(attempts < 100, "still throttled after {:?}", locked_at.elapsed());
            match c.login("alice", PW).await {
                Ok(cwd) => break cwd,
                Err(e) => assert_eq!(e.code(), Some(ErrorCode::Throttled), "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(cwd, "/");
        assert!(locked_at.elapsed() >= Duration::from_millis(900), "lockout ended early");
    })
    .await
}

#[tokio::test]
async fn rejects_logins_from_an_ip_that_sprayed_several_user_names() {
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("free_failures", "2"), ("base_delay_ms", "20000"), ("max_delay_ms", "20000")]);
        let srv = env.start();
        srv.add_user("dave", PW, MIB, None);
        // One failure each for three different names: no single user is over the free limit,
        // but the IP is.
        for name in ["u1", "u2", "u3"] {
            assert_eq!(login_error(&srv, name, "x").await.0, ErrorCode::AuthFailed);
        }
        let (code, _) = login_error(&srv, "dave", PW).await;
        assert_eq!(code, ErrorCode::Throttled, "a fresh user from the same IP is throttled");
    })
    .await
}

#[tokio::test]
async fn rejects_requests_before_login() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        std::fs::write(srv.home("alice").join("f"), b"data").unwrap();
        let mut c = Client::connect(&srv.options()).await.unwrap();
        assert_eq!(code_of(c.pwd().await), ErrorCode::NotAuthenticated);
        assert_eq!(code_of(c.list("/").await), ErrorCode::NotAuthenticated);
        assert_eq!(code_of(c.mkdir("d").await), ErrorCode::NotAuthenticated);
        assert_eq!(code_of(c.remove("f").await), ErrorCode::NotAuthenticated);
        assert_eq!(code_of(c.df().await), ErrorCode::NotAuthenticated);
        let local = env.local("up");
        make_file(&local, 10, 1);
        assert_eq!(code_of(c.put(&local, "up", false, no_progress()).await), ErrorCode::NotAuthenticated);
        let out = env.local("down");
        assert_eq!(code_of(c.get("f", &out, false, no_progress()).await), ErrorCode::NotAuthenticated);
        assert!(!out.exists());
        assert_eq!(dir_names(&srv.home("alice")), ["f"], "nothing changed in the home");

        // A data frame before login is refused too, and the session still allows a login.
        let mut raw = Raw::connect(srv.addr).await;
        raw.send_chunk(&xfer::proto::DataChunk::new(0, bytes::Bytes::from_static(b"abc"))).await;
        raw.expect_error(ErrorCode::NotAuthenticated).await;
        let r = raw.call(&Request::Auth { user: "alice".into(), password: PW.into() }).await;
        assert!(matches!(r, Response::Authed { .. }), "{r:?}");
    })
    .await
}

#[test]
fn never_logs_the_password() {
    let env = TestEnv::new();
    env.configure(&[]);
    let secret = "Zebra-Quartz-9931-topsecret";
    let wrong = "Wrong-Kumquat-7788-guess";
    run({
        let mut c = xfer_cmd(&env.config_dir, &env.work);
        c.args(["user", "add", "carol", "--quota", "1MiB", "--root"]).arg(&env.root).env("XFER_PASSWORD", secret);
        c
    })
    .assert_ok();
    let log = env.tmp.path().join("server.log");
    let mut srv = ServerProcess::start(&env.root, "127.0.0.1:0", &log, &[("XFER_LOG", "debug")]);
    let bad = run(client_cmd(&srv.addr, "carol", wrong, &env.config_dir, &env.work, &["ls"]));
    bad.assert_one_line_error();
    let good = run(client_cmd(&srv.addr, "carol", secret, &env.config_dir, &env.work, &["pwd"]));
    good.assert_ok();
    assert_eq!(good.stdout.trim(), "/");
    assert!(srv.terminate().is_some(), "server did not stop on SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap();
    // The log is really on and covers both logins, so the absence below means something.
    assert!(text.contains("login failed"), "no failed-login line in the debug log:\n{text}");
    assert!(text.contains("logged in"), "no successful-login line in the debug log:\n{text}");
    assert!(!text.contains(secret), "the password appears in the server log:\n{text}");
    assert!(!text.contains(wrong), "the wrong password appears in the server log:\n{text}");
    assert!(!bad.stderr.contains(wrong) && !bad.stdout.contains(wrong), "client echoed the password");
}

#[tokio::test]
async fn rejects_changed_server_certificate() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let addr = srv.addr_string();
        let c = srv.connect("alice", PW).await; // pins the certificate
        c.bye().await;
        let known = std::fs::read_to_string(env.config_dir.join("known_hosts")).unwrap();
        assert!(known.contains(&addr), "first contact pinned the server: {known}");
        srv.stop().await;

        std::fs::remove_dir_all(env.root.join("tls")).unwrap();
        let srv = env.start_on(&addr);
        assert_eq!(srv.addr_string(), addr);
        match Client::connect(&srv.options()).await {
            Err(ClientError::HostKeyChanged { host, expected, got, .. }) => {
                assert_eq!(host, addr);
                assert_ne!(expected, got);
            }
            Err(e) => panic!("expected HostKeyChanged, got {e:?}"),
            Ok(_) => panic!("a changed certificate was accepted"),
        }
        // The pin was not silently replaced, even with --accept-new-host.
        assert_eq!(std::fs::read_to_string(env.config_dir.join("known_hosts")).unwrap(), known);
        let out = run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, &["ls"]));
        let line = out.assert_one_line_error();
        assert!(line.to_lowercase().contains("certificate changed"), "message: {line}");
    })
    .await
}

#[tokio::test]
async fn rejects_first_contact_without_accept_new_host_when_not_interactive() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        let mut cmd = xfer_cmd(&env.config_dir, &env.work);
        cmd.args(["--server", &srv.addr_string(), "--user", "alice", "ls"]).env("XFER_PASSWORD", PW);
        let out = run(cmd); // stdin is /dev/null, not a terminal
        let line = out.assert_one_line_error();
        assert!(line.contains("--accept-new-host"), "message should say how to trust the server: {line}");
        let pinned = std::fs::read_to_string(env.config_dir.join("known_hosts")).unwrap_or_default();
        assert!(!pinned.contains(&srv.addr_string()), "an unconfirmed server was pinned");
        // The library refuses the same way.
        let mut opts = srv.options();
        opts.accept_new_host = false;
        assert!(matches!(Client::connect(&opts).await, Err(ClientError::UnknownHost { .. })));
    })
    .await
}

#[tokio::test]
async fn rejects_a_second_login_on_an_authenticated_session() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        srv.add_user("bob", "bobpw", MIB, None);
        let mut raw = srv.raw("alice", PW).await;
        raw.send(&Request::Auth { user: "bob".into(), password: "bobpw".into() }).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        std::fs::write(srv.home("bob").join("bobfile"), b"x").unwrap();
        match raw.call(&Request::List { path: "/".into() }).await {
            Response::Listing { entries } => assert!(entries.is_empty(), "still alice's home: {entries:?}"),
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn keeps_ip_failures_after_a_successful_login() {
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("free_failures", "2"), ("base_delay_ms", "20000"), ("max_delay_ms", "20000")]);
        let srv = env.start();
        srv.add_user("alice", PW, MIB, None);
        srv.add_user("bob", "bob-pw", MIB, None);
        // Two failures from this IP (free), then a success: it clears alice's record only.
        assert_eq!(login_error(&srv, "alice", "x").await.0, ErrorCode::AuthFailed);
        assert_eq!(login_error(&srv, "alice", "y").await.0, ErrorCode::AuthFailed);
        srv.connect("alice", PW).await.bye().await;
        // The IP counter kept counting through the success: the third failure from this IP
        // locks it, for every user name.
        assert_eq!(login_error(&srv, "mallory", "z").await.0, ErrorCode::AuthFailed);
        assert_eq!(login_error(&srv, "bob", "bob-pw").await.0, ErrorCode::Throttled);
    })
    .await
}
