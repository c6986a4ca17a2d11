//! The audit trail, log hygiene and the metrics page (OPS-AUDIT-1, OPS-LOG-1, OPS-LOG-2,
//! OPS-METRICS-1), against `xfer serve` processes and an in-process server on loopback.

use crate::support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xfer::proto::{ErrorCode, Request, Response};

const PW: &str = "s3cret-pw";

fn add_user(env: &TestEnv, name: &str, quota: &str) {
    let mut cmd = xfer_cmd(&env.config_dir, &env.work);
    cmd.args(["user", "add", name, "--quota", quota, "--root"]).arg(&env.root).env("XFER_PASSWORD", PW);
    run(cmd).assert_ok();
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l:?}")))
        .collect()
}

/// The `fields` of every audit event named `event`.
fn audit_events<'a>(lines: &'a [serde_json::Value], event: &str) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["target"] == "xfer::audit" && l["fields"]["event"] == event)
        .map(|l| &l["fields"])
        .collect()
}

#[test]
fn writes_one_json_audit_line_per_state_change() {
    let env = TestEnv::new();
    env.configure(&[]);
    add_user(&env, "alice", "10MiB");
    let log = env.tmp.path().join("server.log");
    let mut srv = ServerProcess::start(&env.root, "127.0.0.1:0", &log, &[("XFER_LOG_FORMAT", "json")]);
    let cli = |args: &[&str]| run(client_cmd(&srv.addr, "alice", PW, &env.config_dir, &env.work, args));
    make_file(&env.local("f"), 100_000, 3);
    cli(&["put", "--transport", "tcp", "f", "f"]).assert_ok();
    cli(&["get", "--transport", "tcp", "f", "copy"]).assert_ok();
    // UDP-CTRL-7: under auto the line names the transport the server picked.
    make_file(&env.local("big"), 300_000, 4);
    cli(&["put", "--transport", "tcp", "big", "big"]).assert_ok();
    cli(&["get", "--transport", "auto", "f", "copy2"]).assert_ok();
    cli(&["get", "--transport", "auto", "big", "big2"]).assert_ok();
    cli(&["mkdir", "d"]).assert_ok();
    cli(&["mv", "f", "d/g"]).assert_ok();
    cli(&["rm", "d/g"]).assert_ok();
    cli(&["rmdir", "d"]).assert_ok();
    cli(&["rmdir", "nothing-here"]).assert_one_line_error();
    run(client_cmd(&srv.addr, "alice", "wrong", &env.config_dir, &env.work, &["pwd"])).assert_one_line_error();
    assert!(srv.terminate().is_some());
    let lines = json_lines(&std::fs::read_to_string(&log).unwrap());

    for event in ["put", "get", "mkdir", "mv", "rm", "login"] {
        let found = audit_events(&lines, event);
        assert!(!found.is_empty(), "no {event} line in {lines:#?}");
        for f in found {
            assert_eq!(f["user"], "alice", "{f}");
            assert!(f["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{f}");
            assert!(f["path"].is_string() && f["result"].is_string(), "{f}");
        }
    }
    let put = audit_events(&lines, "put")[0];
    assert_eq!((put["path"].as_str(), put["result"].as_str()), (Some("/f"), Some("ok")));
    assert_eq!((put["bytes"].as_u64(), put["transport"].as_str()), (Some(100_000), Some("tcp")));
    let gets: Vec<_> = audit_events(&lines, "get")
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["bytes"].as_u64().unwrap(), f["transport"].as_str().unwrap()))
        .collect();
    assert_eq!(gets, [("/f", 100_000, "tcp"), ("/f", 100_000, "tcp"), ("/big", 300_000, "udp")]);
    assert_eq!(audit_events(&lines, "mv")[0]["to"], "/d/g");
    let rmdirs: Vec<_> = audit_events(&lines, "rmdir").iter().map(|f| f["result"].as_str().unwrap()).collect();
    assert_eq!(rmdirs, ["ok", "NotFound"]);
    let logins: Vec<_> = audit_events(&lines, "login").iter().map(|f| f["result"].as_str().unwrap()).collect();
    assert!(logins.contains(&"failed") && logins.contains(&"ok"), "{logins:?}");
}

#[tokio::test]
async fn rejects_forged_log_lines_and_terminal_codes_in_user_names() {
    // OPS-LOG-1: a name with a newline, a fake log line and ANSI codes, sent before login.
    let env = TestEnv::new();
    env.configure(&[]);
    let log = env.tmp.path().join("server.log");
    let mut srv = ServerProcess::start(&env.root, "127.0.0.1:0", &log, &[]);
    let forged = "x\n2030-01-01T00:00:00.000000Z  INFO logged in user=root\x1b[2J\x1b]0;pwned\x07\u{9b}1m";
    let mut raw = Raw::connect(srv.socket_addr()).await;
    let r = raw.call(&Request::Auth { user: forged.into(), password: "p".into() }).await;
    assert!(matches!(r, Response::Error { code: ErrorCode::AuthFailed, .. }), "{r:?}");
    drop(raw);
    assert!(srv.terminate().is_some());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("login failed"), "{text}");
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "control characters reached the log: {text:?}");
    assert!(!text.lines().any(|l| l.starts_with("2030-01-01")), "a forged line: {text}");
    assert!(text.contains(r"x\n2030-01-01"), "the name is there, escaped: {text}");
}

#[tokio::test]
async fn rejects_log_floods_from_throttled_logins() {
    // OPS-LOG-2: hundreds of throttled attempts write a bounded number of lines.
    let env = TestEnv::new();
    env.configure(&[("free_failures", "0"), ("base_delay_ms", "60000"), ("max_delay_ms", "60000")]);
    let log = env.tmp.path().join("server.log");
    let mut srv = ServerProcess::start(&env.root, "127.0.0.1:0", &log, &[]);
    let mut raw = Raw::connect(srv.socket_addr()).await;
    let attempts = 400;
    let mut throttled = 0;
    for _ in 0..attempts {
        let r = raw.call(&Request::Auth { user: "mallory".into(), password: "p".into() }).await;
        if matches!(r, Response::Error { code: ErrorCode::Throttled, .. }) {
            throttled += 1;
        }
    }
    assert_eq!(throttled, attempts - 1, "all but the first are throttled");
    drop(raw);
    assert!(srv.terminate().is_some());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().filter(|l| l.contains("login throttled")).count();
    assert!(lines >= 1, "{text}");
    assert!(lines < throttled / 2, "{lines} lines for {throttled} throttled attempts");
    assert!(text.contains("suppressed="), "dropped lines are counted: {text}");
}

/// `GET path` over plain HTTP; returns the status line and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(STEP, tcp.read_to_string(&mut text)).await.unwrap().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// The value of the sample `name{labels}` in a Prometheus text page (0 if absent).
fn sample(page: &str, series: &str) -> f64 {
    page.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn serves_prometheus_metrics_on_the_admin_address() {
    // OPS-METRICS-1
    guard(async {
        let env = TestEnv::new();
        env.configure(&[("metrics_listen", "\"127.0.0.1:0\"")]);
        let srv = env.start();
        srv.add_user("alice", PW, 200 * KIB, None);
        assert!(wait_until(STEP, || srv.state.metrics_addr.get().is_some()).await, "no metrics listener");
        let addr = *srv.state.metrics_addr.get().unwrap();

        let mut c = srv.connect("alice", PW).await;
        let local = env.local("f");
        make_file(&local, 50_000, 1);
        c.put(&local, "f", false, xfer::transfer::progress::no_progress()).await.unwrap();
        let big = env.local("big");
        make_file(&big, 300_000, 2);
        assert_eq!(
            code_of(c.put(&big, "big", false, xfer::transfer::progress::no_progress()).await),
            ErrorCode::QuotaExceeded
        );
        let mut wrong = xfer::client::Client::connect(&srv.options()).await.unwrap();
        assert_eq!(code_of(wrong.login("alice", "nope").await), ErrorCode::AuthFailed);

        let (status, page) = http_get(addr, "/metrics").await;
        assert!(status.contains("200"), "{status}");
        assert!(sample(&page, "xfer_logins_total{outcome=\"ok\"}") >= 1.0, "{page}");
        assert!(sample(&page, "xfer_logins_total{outcome=\"failed\"}") >= 1.0, "{page}");
        assert!(sample(&page, "xfer_sessions") >= 1.0, "{page}");
        let up = page.lines().find(|l| l.starts_with("xfer_transfer_bytes_total") && l.contains("direction=\"up\""));
        assert!(up.is_some_and(|l| l.split_whitespace().last().unwrap().parse::<f64>().unwrap() >= 50_000.0), "{page}");
        assert!(sample(&page, "xfer_quota_refusals_total") >= 1.0, "{page}");
        assert!(sample(&page, "xfer_error_replies_total{code=\"QuotaExceeded\"}") >= 1.0, "{page}");
        assert!(page.contains("xfer_active_transfers"), "{page}");
        let (status, _) = http_get(addr, "/other").await;
        assert!(status.contains("404"), "{status}");
        c.bye().await;
    })
    .await
}
