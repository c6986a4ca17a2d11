//! Two xfer servers on different ports sharing one PostgreSQL database and one local root
//! (the PostgreSQL + local storage profile): quotas, the throttle, session revocation and the
//! admin commands hold across both (STORE-*).

use std::sync::Arc;
use std::time::Duration;

use crate::support::cluster::{free_port, Postgres};
use crate::support::*;
use xfer::client::{TransferOptions, TransportChoice};
use xfer::proto::{ErrorCode, Request, Response};
use xfer::store::UserStore;
use xfer::transfer::progress::no_progress;

use super::store_pg::admin_store;

const PW: &str = "cluster-pw";
const MIB: u64 = 1 << 20;

/// A root whose config names the shared store `url`, with short leases.
fn cluster_env(url: &str) -> TestEnv {
    let env = TestEnv::new();
    std::fs::create_dir_all(&env.root).unwrap();
    let config = config_with(&[("shutdown_grace_secs", "3")]).replacen(
        "[store]\n",
        &format!("[store]\nurl = \"{url}\"\nlease_secs = 2\n"),
        1,
    );
    assert!(config.contains(url), "the default config has a [store] table");
    std::fs::write(env.root.join("xfer.toml"), config).unwrap();
    env
}

fn admin(env: &TestEnv, url: &str, args: &[&str], password: Option<&str>) -> Out {
    let mut cmd = xfer_cmd(&env.config_dir, &env.work);
    // No --root: the command reaches the store alone, as from another machine.
    cmd.args(["user"]).args(args).arg("--store").arg(url);
    if let Some(pw) = password {
        cmd.env("XFER_PASSWORD", pw);
    }
    run(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_uploads_across_two_servers_never_overrun_one_quota() {
    guard(async {
        let url = Postgres::shared().create_database();
        let env = cluster_env(&url);
        let (a, b) = (env.start(), env.start());
        let quota = 6 * MIB + MIB / 2;
        a.add_user("alice", PW, quota, None);
        const N: usize = 16;
        let mut clients = Vec::new();
        for i in 0..N {
            let local = env.local(&format!("src{i}"));
            make_file(&local, MIB as usize, i as u64 + 1);
            let srv = if i % 2 == 0 { &a } else { &b };
            clients.push((srv.connect("alice", PW).await, local));
        }
        // Sample disk and PostgreSQL throughout.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (stop, home, url) = (stop.clone(), a.home("alice"), url.clone());
            std::thread::spawn(move || {
                let pg = admin_store(&url);
                let mut samples = 0;
                for _ in 0..10_000 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let (disk, _) = disk_entries(&home);
                    let u = pg.get_user("alice").unwrap().unwrap();
                    assert!(disk <= quota, "{disk} bytes on disk over a {quota} byte quota");
                    assert!(u.used_bytes + u.reserved_bytes <= quota, "store over quota: {u:?}");
                    samples += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                samples
            })
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let mut tasks = Vec::new();
        for (i, (mut c, local)) in clients.into_iter().enumerate() {
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let opts = TransferOptions { resume: false, transport: TransportChoice::Tcp, rate_limit: None };
                let r = c.put_with(&local, &format!("up{i}"), &opts, no_progress()).await;
                r.map(|s| s.size).map_err(|e| e.code())
            }));
        }
        let ok = count_uploads_refused_only_by_quota(tasks, MIB).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let samples = sampler.join().expect("sampler saw no overrun");
        assert!(samples > 0);
        assert_eq!(ok, 6, "six 1 MiB files fit in 6.5 MiB, and refusals leak nothing");
        let u = a.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (6 * MIB, 6, 0));
        assert_eq!(disk_entries(&a.home("alice")), (6 * MIB, 6));
        a.assert_no_panics();
        b.assert_no_panics();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_on_one_server_throttle_the_other() {
    // STORE-THROTTLE-1: three free failures on A, the fourth on B, then both refuse.
    guard(async {
        let url = Postgres::shared().create_database();
        let env = cluster_env(&url);
        let (a, b) = (env.start(), env.start());
        a.add_user("alice", PW, MIB, None);
        let try_login = |srv: std::net::SocketAddr, pw: &'static str| async move {
            let mut raw = Raw::connect(srv).await;
            raw.call(&Request::Auth { user: "alice".into(), password: pw.into() }).await
        };
        for _ in 0..3 {
            assert!(matches!(try_login(a.addr, "wrong").await, Response::Error { code: ErrorCode::AuthFailed, .. }));
        }
        assert!(matches!(try_login(b.addr, "wrong").await, Response::Error { code: ErrorCode::AuthFailed, .. }));
        // B has seen one failure itself; its refusal comes from the failures counted on A.
        let r = try_login(b.addr, PW).await;
        assert!(matches!(r, Response::Error { code: ErrorCode::Throttled, .. }), "{r:?}");
        let r = try_login(a.addr, PW).await;
        assert!(matches!(r, Response::Error { code: ErrorCode::Throttled, .. }), "{r:?}");
    })
    .await
}

/// Waits for the server to end `raw`'s session; returns its last reply, if any.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_del_and_passwd_through_the_store_end_sessions_on_every_server() {
    // CTRL-SESS-7, STORE-REVOKE-1: the admin command talks to PostgreSQL only.
    guard(async {
        let url = Postgres::shared().create_database();
        let env = cluster_env(&url);
        let (a, b) = (env.start(), env.start());
        a.add_user("alice", PW, MIB, None);
        a.add_user("bob", PW, MIB, None);
        let mut alice_b = Raw::login(b.addr, "alice", PW).await;
        let mut bob_a = Raw::login(a.addr, "bob", PW).await;
        let mut bob_b = Raw::login(b.addr, "bob", PW).await;
        admin(&env, &url, &["passwd", "alice"], Some("new-pw")).assert_ok();
        let last = ended(&mut alice_b).await;
        assert!(matches!(last, Some(Response::Error { code: ErrorCode::NotAuthenticated, .. })), "{last:?}");
        assert!(matches!(bob_b.call(&Request::Pwd).await, Response::Pwd { .. }), "other users stay");
        admin(&env, &url, &["del", "bob"], None).assert_ok();
        for raw in [&mut bob_a, &mut bob_b] {
            let last = ended(raw).await;
            assert!(matches!(last, Some(Response::Error { code: ErrorCode::NotAuthenticated, .. })), "{last:?}");
        }
        let mut c = a.connect("alice", "new-pw").await;
        assert!(c.df().await.is_ok());
    })
    .await
}

#[test]
fn user_commands_work_against_the_store_url_alone() {
    let url = Postgres::shared().create_database();
    let env = TestEnv::new();
    admin(&env, &url, &["add", "carol", "--quota", "2MiB"], Some(PW)).assert_ok();
    let out = admin(&env, &url, &["list"], None);
    out.assert_ok();
    assert!(out.stdout.contains("carol"), "{}", out.stdout);
    let dup = admin(&env, &url, &["add", "carol", "--quota", "2MiB"], Some(PW));
    assert!(dup.assert_one_line_error().contains("already exists"));
    admin(&env, &url, &["quota", "carol", "--quota", "5MiB"], None).assert_ok();
    assert_eq!(admin_store(&url).get_user("carol").unwrap().unwrap().quota_bytes, 5 * MIB);
    admin(&env, &url, &["del", "carol"], None).assert_ok();
    assert!(admin_store(&url).list_users().unwrap().is_empty());
    assert!(!env.root.exists(), "no server root was touched");
    // PostgreSQL not there: one clear line, no panic.
    let down = format!("postgres://xfer@127.0.0.1:{}/none", free_port());
    let mut cmd = xfer_cmd(&env.config_dir, &env.work);
    cmd.args(["user", "list", "--store", &down]);
    let msg = run(cmd).assert_one_line_error();
    assert!(msg.contains("unavailable"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_restarting_while_uploads_run_lose_and_leak_no_reservation() {
    // STORE-LEASE-2, STORE-LEASE-3: A restarts while uploads run on both; B's reservations
    // survive A's start, B's uploads finish; then B restarts too, and nothing stays reserved.
    guard(async {
        let url = Postgres::shared().create_database();
        let env = cluster_env(&url);
        let a = env.start();
        let b = env.start();
        let size = 2 * MIB as usize;
        a.add_user("alice", PW, 64 * MIB, None);
        let mut on_a = Vec::new();
        let mut on_b = Vec::new();
        for i in 0..4 {
            let data = pseudo_random(size, 200 + i);
            let srv = if i % 2 == 0 { &a } else { &b };
            let mut raw = Raw::login(srv.addr, "alice", PW).await;
            assert_eq!(raw.start_put(&format!("/f{i}"), size as u64, false).await, 0);
            raw.send_range(&data, 0, size / 2).await;
            if i % 2 == 0 {
                on_a.push(raw)
            } else {
                on_b.push((raw, data))
            }
        }
        let pg = admin_store(&url);
        let held = wait_until(Duration::from_secs(10), || pg.reservations_of("alice").unwrap().len() == 4).await;
        assert!(held, "{:?}", pg.reservations_of("alice").unwrap());
        // A stops (its uploads break) and starts again on the same port, reconciling.
        let addr = a.addr_string();
        drop(a);
        drop(on_a);
        let a = env.start_on(&addr);
        let rows = pg.reservations_of("alice").unwrap();
        let b_bytes: u64 = rows.iter().map(|r| r.1).sum();
        assert!(rows.len() >= 2, "B's two live reservations survive A's start: {rows:?}");
        assert!(pg.get_user("alice").unwrap().unwrap().reserved_bytes >= b_bytes);
        // B's uploads finish.
        for (mut raw, data) in on_b {
            raw.send_range(&data, size / 2, size).await;
            match raw.call(&Request::PutEnd { md5: md5_bytes(&data) }).await {
                Response::PutDone { .. } => {}
                other => panic!("upload on B after A's restart: {other:?}"),
            }
        }
        let addr = b.addr_string();
        drop(b);
        let b = env.start_on(&addr);
        // Every reservation ended: committed, released, or its lease expired and was reclaimed.
        let settled = wait_until(Duration::from_secs(20), || {
            let u = pg.get_user("alice").unwrap().unwrap();
            u.reserved_bytes == 0 && u.reserved_files == 0 && pg.reservations_of("alice").unwrap().is_empty()
        })
        .await;
        assert!(settled, "leaked: {:?}", pg.reservations_of("alice").unwrap());
        // Usage matches the disk (two finished files, two kept partials) after a restart.
        drop(a);
        drop(b);
        let a = env.start();
        let (disk, entries) = disk_entries(&a.home("alice"));
        let u = a.user("alice");
        assert_eq!((u.used_bytes, u.used_files), (disk, entries));
        assert!(disk >= 2 * size as u64);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_session_is_a_clear_error_and_service_comes_back() {
    // STORE-PG-6: a private PostgreSQL, killed under a running server.
    guard(async {
        let pg = Postgres::start();
        let url = pg.create_database();
        let env = cluster_env(&url);
        let srv = env.start();
        srv.add_user("alice", PW, 8 * MIB, None);
        let local = env.local("f");
        make_file(&local, MIB as usize, 7);
        let mut c = srv.connect("alice", PW).await;
        c.put(&local, "before", false, no_progress()).await.unwrap();
        // synchronous_commit=off in tests: let the WAL writer write those commits first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        pg.kill();
        let err = c.put(&local, "during", false, no_progress()).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Busy), "{err}");
        assert!(err.to_string().contains("unavailable"), "{err}");
        assert!(!srv.home("alice").join("during").exists(), "nothing half-written shown as complete");
        pg.restart();
        let mut back = false;
        for _ in 0..50 {
            if c.put(&local, "after", false, no_progress()).await.is_ok() {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(back, "uploads work again once PostgreSQL is back");
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.reserved_bytes), (2 * MIB, 0));
        srv.assert_no_panics();
    })
    .await
}
