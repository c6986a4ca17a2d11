//! Transfers over the UDP data path against a real server on 127.0.0.1: byte-exact results,
//! the same quota, jail and resume rules as TCP, fallback to TCP when UDP is blocked, dies or
//! degrades mid-transfer, and datagrams that are replayed, corrupted or forged.

use crate::support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use support::proxy::{Action, Dir, Policy, Proxy};
use support::*;
use xfer::client::{partial_path, Client, TransferOptions, TransferSummary, TransportChoice};
use xfer::proto::{ErrorCode, Transport};
use xfer::transfer::progress::no_progress;

const PW: &str = "udp-pw";

fn opts(transport: TransportChoice, resume: bool) -> TransferOptions {
    TransferOptions { resume, transport, rate_limit: None }
}

fn udp() -> TransferOptions {
    opts(TransportChoice::Udp, false)
}

async fn put(c: &mut Client, local: &Path, remote: &str, o: &TransferOptions) -> TransferSummary {
    c.put_with(local, remote, o, no_progress()).await.unwrap_or_else(|e| panic!("put {remote}: {e}"))
}

async fn get(c: &mut Client, remote: &str, local: &Path, o: &TransferOptions) -> TransferSummary {
    c.get_with(remote, local, o, no_progress()).await.unwrap_or_else(|e| panic!("get {remote}: {e}"))
}

async fn connect_via(proxy: &Proxy, env: &TestEnv) -> Client {
    let mut c = Client::connect(&options_for(&proxy.addr_string(), &env.config_dir)).await.expect("connect");
    c.login("alice", PW).await.expect("login");
    c
}

#[tokio::test]
async fn put_and_get_over_udp_are_byte_exact() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        let mut c = srv.connect("alice", PW).await;
        let sizes = [0usize, 1, 1151, 1152, 1153, 65_536, 1 << 20, (1 << 20) + 7, 5 * MIB as usize + 123];
        for (i, &n) in sizes.iter().enumerate() {
            let name = format!("f{i}");
            let data = make_file(&env.local(&name), n, i as u64 + 1);
            let up = put(&mut c, &env.local(&name), &name, &udp()).await;
            assert_eq!(up.transport, Transport::Udp);
            assert_eq!(up.md5, md5_bytes(&data), "size {n}");
            assert_eq!(std::fs::read(srv.home("alice").join(&name)).unwrap(), data, "size {n} on the server");
            let back = env.local(&format!("{name}.back"));
            let down = get(&mut c, &name, &back, &udp()).await;
            assert_eq!(down.transport, Transport::Udp);
            assert_eq!(std::fs::read(&back).unwrap(), data, "size {n} downloaded");
            assert!(!partial_path(&back).exists());
        }
        // Usage matches what is on disk.
        let (bytes, _) = disk_usage(&srv.home("alice"));
        assert_eq!(srv.user("alice").used_bytes, bytes);
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn udp_uploads_obey_jail_and_quota_even_in_parallel() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        make_file(&env.local("three"), 3 * MIB as usize, 1);
        let mut c = srv.connect("alice", PW).await;
        for bad in ["../escape", "/../../etc/x"] {
            let r = c.put_with(&env.local("three"), bad, &udp(), no_progress()).await;
            assert!(matches!(code_of(r), ErrorCode::PathEscapes | ErrorCode::InvalidPath), "{bad}");
        }
        make_file(&env.local("eleven"), 11 * MIB as usize, 2);
        assert_eq!(
            code_of(c.put_with(&env.local("eleven"), "eleven", &udp(), no_progress()).await),
            ErrorCode::QuotaExceeded
        );

        // Six parallel 3 MiB uploads into a 10 MiB quota: at most three fit.
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (opts, local) = (srv.options(), env.local("three"));
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(&opts).await.unwrap();
                c.login("alice", PW).await.unwrap();
                c.put_with(&local, &format!("p{i}"), &udp(), no_progress()).await.map(|_| ())
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(e) => assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "{e}"),
            }
        }
        assert!((1..=3).contains(&ok), "{ok} uploads succeeded");
        assert!(wait_until(STEP, || srv.user("alice").reserved_bytes == 0).await);
        let (bytes, _) = disk_usage(&srv.home("alice"));
        assert!(bytes <= 10 * MIB);
        assert_eq!(srv.user("alice").used_bytes, bytes);
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn auto_falls_back_to_tcp_when_udp_is_blocked() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let blocked: Policy = Arc::new(|_, _, _| Action::Drop);
        let proxy = Proxy::start(srv.addr, blocked).await;
        let data = make_file(&env.local("a"), 2 * MIB as usize, 3);
        let mut c = connect_via(&proxy, &env).await;

        let up = put(&mut c, &env.local("a"), "a", &opts(TransportChoice::Auto, false)).await;
        assert_eq!(up.transport, Transport::Tcp);
        assert_eq!(std::fs::read(srv.home("alice").join("a")).unwrap(), data);
        let down = get(&mut c, "a", &env.local("a.back"), &opts(TransportChoice::Auto, false)).await;
        assert_eq!(down.transport, Transport::Tcp);
        assert_eq!(std::fs::read(env.local("a.back")).unwrap(), data);

        // Forcing UDP fails with a clear error instead of falling back.
        let err = c.put_with(&env.local("a"), "b", &udp(), no_progress()).await.unwrap_err();
        assert!(err.to_string().contains("UDP"), "{err}");
        assert!(!srv.home("alice").join("b").exists());
        assert!(proxy.seen[0].load(std::sync::atomic::Ordering::Relaxed) > 0, "the client did try UDP");
        srv.assert_no_panics();
    })
    .await
}

/// UDP-CTRL-8, CTRL-ATTR-3: under `auto` the `Walk` of a get that keeps attributes rides behind
/// `GetAuto`; its reply is read after `GetEnd`, or before the `Ok` of the `Abort` that hands a
/// blocked download over to TCP.
#[tokio::test]
async fn the_walk_behind_get_auto_is_answered_over_udp_and_after_a_fallback() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let data = make_file(&srv.home("alice").join("a"), 2 * MIB as usize, 5);
        let auto = opts(TransportChoice::Auto, false);
        let mut c = srv.connect("alice", PW).await;
        let (down, entry) = c.get_keeping("a", &env.local("a"), &auto, no_progress()).await.expect("get over UDP");
        assert_eq!(down.transport, Transport::Udp);
        assert_eq!(entry.map(|e| e.size), Some(2 * MIB));
        assert_eq!(std::fs::read(env.local("a")).unwrap(), data);
        assert!(c.is_usable());

        let blocked: Policy = Arc::new(|_, _, _| Action::Drop);
        let proxy = Proxy::start(srv.addr, blocked).await;
        let mut c = connect_via(&proxy, &env).await;
        let (down, entry) = c.get_keeping("a", &env.local("b"), &auto, no_progress()).await.expect("get via TCP");
        assert_eq!(down.transport, Transport::Tcp);
        assert_eq!(entry.map(|e| e.size), Some(2 * MIB));
        assert_eq!(std::fs::read(env.local("b")).unwrap(), data);
        assert_eq!(c.pwd().await.expect("still in step"), "/");
        srv.assert_no_panics();
    })
    .await
}

/// Forwards datagrams until `limit` bytes have passed (both directions), then drops them all.
fn dies_after(limit: u64) -> Policy {
    let passed = std::sync::atomic::AtomicU64::new(0);
    Arc::new(move |_, _, len| {
        if passed.fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed) < limit {
            Action::Forward
        } else {
            Action::Drop
        }
    })
}

#[tokio::test]
async fn auto_falls_back_to_tcp_when_udp_dies_mid_transfer_and_keeps_what_arrived() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        // UDP works for the first 4 MiB, then the path goes dark (a middlebox timeout).
        let proxy = Proxy::start(srv.addr, dies_after(4 * MIB)).await;
        let want = make_big_file(&env.local("big"), 24 * MIB, 4);
        let mut c = connect_via(&proxy, &env).await;
        let up = put(&mut c, &env.local("big"), "big", &opts(TransportChoice::Auto, false)).await;
        assert_eq!(up.transport, Transport::Tcp, "the upload finished over TCP");
        assert!(up.resumed_from > 0, "TCP resumed after the bytes UDP delivered");
        assert_eq!(md5_file(&srv.home("alice").join("big")), want);

        let proxy2 = Proxy::start(srv.addr, dies_after(4 * MIB)).await;
        let mut c2 = connect_via(&proxy2, &env).await;
        let down = get(&mut c2, "big", &env.local("big.back"), &opts(TransportChoice::Auto, false)).await;
        assert_eq!(down.transport, Transport::Tcp);
        assert_eq!(md5_file(&env.local("big.back")), want);
        srv.assert_no_panics();
    })
    .await
}

/// Forwards datagrams until `limit` bytes have passed (both directions), then only one in
/// `keep_one_in`: a path that still works, far worse than TCP would.
fn degrades_after(limit: u64, keep_one_in: u64) -> Policy {
    let passed = std::sync::atomic::AtomicU64::new(0);
    let after = std::sync::atomic::AtomicU64::new(0);
    Arc::new(move |_, _, len| {
        if passed.fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed) < limit {
            return Action::Forward;
        }
        match after.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % keep_one_in {
            0 => Action::Forward,
            _ => Action::Drop,
        }
    })
}

#[tokio::test]
async fn auto_falls_back_to_tcp_when_udp_degrades_mid_transfer() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        // UDP carries the first 2 MiB, then loses 95% of the datagrams both ways.
        let want = make_big_file(&env.local("big"), 48 * MIB, 5);
        let proxy = Proxy::start(srv.addr, degrades_after(2 * MIB, 20)).await;
        let mut c = connect_via(&proxy, &env).await;
        let up = put(&mut c, &env.local("big"), "big", &opts(TransportChoice::Auto, false)).await;
        assert_eq!(up.transport, Transport::Tcp, "the upload finished over TCP");
        assert!(up.resumed_from > 0, "TCP resumed after the bytes UDP delivered");
        assert_eq!(md5_file(&srv.home("alice").join("big")), want);

        let proxy2 = Proxy::start(srv.addr, degrades_after(2 * MIB, 20)).await;
        let mut c2 = connect_via(&proxy2, &env).await;
        let down = get(&mut c2, "big", &env.local("big.back"), &opts(TransportChoice::Auto, false)).await;
        assert_eq!(down.transport, Transport::Tcp, "the download finished over TCP");
        assert_eq!(md5_file(&env.local("big.back")), want);
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn replayed_corrupted_and_forged_datagrams_change_nothing() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        // Every 3rd datagram is replayed, every 7th has a flipped bit, in both directions.
        let hostile: Policy = Arc::new(|_, i, len| match i % 21 {
            0 | 3 | 6 | 9 | 12 | 15 | 18 => Action::Duplicate,
            7 | 14 => Action::Corrupt(i as usize * 31 % len.max(1)),
            _ => Action::Forward,
        });
        let proxy = Proxy::start(srv.addr, hostile).await;
        // Forged datagrams straight at the server's UDP port while transfers run.
        let forger = tokio::spawn({
            let target = srv.addr;
            async move {
                let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                for i in 0..3000u64 {
                    let mut d = pseudo_random(64 + (i as usize % 1400), i);
                    d[0] = (i % 9) as u8; // every kind, and unknown ones
                    d[1] = 0;
                    let _ = s.send_to(&d, target).await;
                    if i % 100 == 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                }
            }
        });
        let data = make_file(&env.local("h"), 6 * MIB as usize, 5);
        let mut c = connect_via(&proxy, &env).await;
        put(&mut c, &env.local("h"), "h", &udp()).await;
        assert_eq!(std::fs::read(srv.home("alice").join("h")).unwrap(), data);
        get(&mut c, "h", &env.local("h.back"), &udp()).await;
        assert_eq!(std::fs::read(env.local("h.back")).unwrap(), data);
        forger.await.unwrap();
        srv.assert_no_panics();
    })
    .await
}

/// Plants a server-side partial upload holding `ranges` of `data`, with its saved range map.
fn plant_server_partial(srv: &TestServer, name: &str, data: &[u8], ranges: &[(u64, u64)]) {
    use std::os::unix::fs::FileExt;
    let part = srv.home("alice").join(format!(".{name}.xfer-part"));
    let f = std::fs::File::create(&part).unwrap();
    for &(s, e) in ranges {
        f.write_all_at(&data[s as usize..e as usize], s).unwrap();
    }
    f.sync_all().unwrap();
    srv.state.store.save_ranges("alice", &format!("/{name}"), data.len() as u64, ranges).unwrap();
}

#[tokio::test]
async fn udp_resume_sends_only_the_holes_of_an_upload() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let data = make_file(&env.local("r"), 4 * MIB as usize, 6);
        let held = [(0, MIB), (2 * MIB, 3 * MIB)];
        plant_server_partial(&srv, "r", &data, &held);
        let mut c = srv.connect("alice", PW).await;
        let up = put(&mut c, &env.local("r"), "r", &opts(TransportChoice::Udp, true)).await;
        assert_eq!(up.resumed_from, 2 * MIB, "the held ranges were not sent again");
        assert_eq!(std::fs::read(srv.home("alice").join("r")).unwrap(), data);
        assert!(srv.state.store.load_ranges("alice", "/r").unwrap().is_none(), "map dropped once complete");

        // A partial whose held bytes differ from the local file is refused, not merged.
        let mut other = data.clone();
        other[10] ^= 0xff;
        plant_server_partial(&srv, "s", &other, &held);
        let r = c.put_with(&env.local("r"), "s", &opts(TransportChoice::Udp, true), no_progress()).await;
        assert!(r.unwrap_err().to_string().contains("does not match"));
        assert!(!srv.home("alice").join("s").exists());

        // A TCP resume of a partial with holes keeps only the contiguous prefix.
        plant_server_partial(&srv, "t", &data, &held);
        let up = put(&mut c, &env.local("r"), "t", &opts(TransportChoice::Tcp, true)).await;
        assert_eq!(up.resumed_from, MIB);
        assert_eq!(std::fs::read(srv.home("alice").join("t")).unwrap(), data);
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn udp_resume_fills_the_holes_of_a_download() {
    guard(async {
        use std::os::unix::fs::FileExt;
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let data = make_file(&srv.home("alice").join("d"), 4 * MIB as usize, 7);
        let local = env.local("d");
        let plant = || {
            let part = partial_path(&local);
            let f = std::fs::File::create(&part).unwrap();
            f.write_all_at(&data[..MIB as usize], 0).unwrap();
            f.write_all_at(&data[3 * MIB as usize..], 3 * MIB).unwrap();
            let map = format!("xfer-ranges 1 {}\n0 {}\n{} {}\n", data.len(), MIB, 3 * MIB, 4 * MIB);
            std::fs::write(format!("{}.ranges", part.display()), map).unwrap();
        };
        plant();
        let mut c = srv.connect("alice", PW).await;
        let down = get(&mut c, "d", &local, &opts(TransportChoice::Udp, true)).await;
        assert_eq!(down.resumed_from, 2 * MIB);
        assert_eq!(std::fs::read(&local).unwrap(), data);
        assert!(!Path::new(&format!("{}.ranges", partial_path(&local).display())).exists());

        // Under auto the request is GetAuto (UDP-CTRL-7): holding ranges, it goes over UDP.
        std::fs::remove_file(&local).unwrap();
        plant();
        let down = get(&mut c, "d", &local, &opts(TransportChoice::Auto, true)).await;
        assert_eq!((down.transport, down.resumed_from), (Transport::Udp, 2 * MIB));
        assert_eq!(std::fs::read(&local).unwrap(), data);

        // The same partial resumed over TCP keeps only its first MiB.
        std::fs::remove_file(&local).unwrap();
        plant();
        let down = get(&mut c, "d", &local, &opts(TransportChoice::Tcp, true)).await;
        assert_eq!(down.resumed_from, MIB);
        assert_eq!(std::fs::read(&local).unwrap(), data);
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn interrupted_udp_upload_resumes_from_what_was_synced() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 512 * MIB, None);
        let want = make_big_file(&env.local("big"), 96 * MIB, 8);
        // A slow path, so the upload is still running when it is cut.
        let mut o = udp();
        o.rate_limit = Some(8 * MIB);
        let mut c = srv.connect("alice", PW).await;
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(2500),
            c.put_with(&env.local("big"), "big", &o, no_progress()),
        )
        .await;
        assert!(cut.is_err(), "test setup: the upload finished before it was cut");
        drop(c);
        assert!(wait_until(STEP, || srv.user("alice").reserved_bytes == 0).await, "upload never settled");
        let (_, held) = srv.state.store.load_ranges("alice", "/big").unwrap().expect("range map kept");
        let kept: u64 = held.iter().map(|(s, e)| e - s).sum();
        assert!(kept > 0 && kept < 96 * MIB, "kept {kept}");

        let mut c = srv.connect("alice", PW).await;
        let up = put(&mut c, &env.local("big"), "big", &opts(TransportChoice::Udp, true)).await;
        assert_eq!(up.resumed_from, kept);
        assert_eq!(md5_file(&srv.home("alice").join("big")), want);
        let (bytes, _) = disk_usage(&srv.home("alice"));
        assert_eq!(srv.user("alice").used_bytes, bytes);
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn server_shutdown_ends_udp_transfers_with_a_clear_error_and_they_resume() {
    guard(async {
        let env = TestEnv::new();
        let mut srv = env.start();
        srv.add_user("alice", PW, 512 * MIB, None);
        let addr = srv.addr_string();
        let want = make_big_file(&srv.home("alice").join("big"), 64 * MIB, 9);
        let mut slow = udp();
        slow.rate_limit = Some(8 * MIB);
        let mut c = srv.connect("alice", PW).await;
        let local = env.local("big");
        let download = c.get_with("big", &local, &slow, no_progress());
        let stop_soon = async {
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            srv.trigger_shutdown();
        };
        let (r, ()) = tokio::join!(download, stop_soon);
        assert_eq!(code_of(r), ErrorCode::ShuttingDown);
        assert!(!local.exists());
        drop(c);
        srv.stop().await;

        let srv = env.start_on(&addr);
        let mut c = srv.connect("alice", PW).await;
        let down = get(&mut c, "big", &local, &opts(TransportChoice::Udp, true)).await;
        assert!(down.resumed_from > 0, "nothing kept from the first attempt");
        assert_eq!(md5_file(&local), want);
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn cli_says_which_transport_carried_the_data() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let addr = srv.addr_string();
        make_file(&env.local("c"), 3 * MIB as usize, 10);
        let cli = |args: &[&str]| run(client_cmd(&addr, "alice", PW, &env.config_dir, &env.work, args));
        let out = cli(&["-v", "put", "c", "--transport", "udp"]);
        let text = &out.assert_ok().stderr;
        assert!(text.contains("over udp") && text.contains("udp: "), "{text}");
        let out = cli(&["-v", "get", "c", "c.tcp", "--transport", "tcp"]);
        assert!(out.assert_ok().stderr.contains("over tcp"), "{}", out.stderr);
        let out = cli(&["get", "c", "c.auto", "--rate-limit", "10M"]);
        assert!(out.assert_ok().stderr.contains("over udp"), "{}", out.stderr);
        assert_eq!(std::fs::read(env.local("c.auto")).unwrap(), std::fs::read(env.local("c")).unwrap());
        let out = cli(&["put", "c", "--rate-limit", "0"]);
        assert!(!out.status.success() && out.stderr.contains("above zero"), "{}", out.stderr);
    })
    .await
}

/// The spoofing user of UDP-VALID-5 and UDP-AMP-2 on loopback: a logged-in attacker asks for
/// a UDP download, learns its own challenge at its own address, and then sends from the
/// victim's address (127.0.0.2, a socket the test binds, which also counts what arrives
/// there) `Hello`s, the answer to its own challenge, and acks forged to claim progress. The
/// victim gets only challenges, at most 3 times the bytes sent from its address.
#[tokio::test]
async fn rejects_a_download_aimed_at_a_spoofed_victim_address() {
    use xfer::udp::packet::{Ack, Header, PacketKind, HEADER_LEN, MIN_DATAGRAM, TAG_LEN};
    use xfer::udp::seal::{FlowKeys, EXPORTER_LABEL, SECRET_LEN};
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        std::fs::write(srv.home("alice").join("big"), pseudo_random(8 * MIB as usize, 3)).unwrap();
        // A session whose TLS secret the attacker holds.
        let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let config = xfer::tls::client_config(Arc::new(xfer::tls::PinnedVerifier::new(None))).unwrap();
        let name = rustls::pki_types::ServerName::try_from(xfer::tls::SERVER_NAME).unwrap();
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
        let mut secret = [0u8; SECRET_LEN];
        tls.get_ref().1.export_keying_material(&mut secret, EXPORTER_LABEL, None).unwrap();
        let (r, w) = tokio::io::split(tls);
        let mut raw = Raw { reader: xfer::conn::FrameReader::new(r), writer: w };
        xfer::conn::FrameWriter::new(&mut raw.writer).write_preamble(xfer::proto::PROTOCOL_VERSION).await.unwrap();
        raw.reader.read_preamble().await.unwrap();
        let authed = raw.call(&xfer::proto::Request::Auth { user: "alice".into(), password: PW.into() }).await;
        assert!(matches!(authed, xfer::proto::Response::Authed { .. }));
        let req = xfer::proto::Request::GetUdp { path: "big".into(), held: vec![], held_md5: None, rate_limit: None };
        let xfer::proto::Response::UdpGetReady { flow, .. } = raw.call(&req).await else { panic!("no UdpGetReady") };
        let keys = FlowKeys::derive(&secret, flow);
        let mut pn = 0u64;
        let mut seal = |kind: PacketKind, body: &[u8]| {
            let mut d = Vec::new();
            Header { kind, flow, pn }.encode(&mut d);
            d.extend_from_slice(body);
            d.resize(d.len() + TAG_LEN, 0);
            keys.client.seal(pn, &mut d);
            pn += 1;
            d
        };
        let mut hello = 1472u16.to_be_bytes().to_vec();
        hello.resize(MIN_DATAGRAM - HEADER_LEN - TAG_LEN, 0);
        let own = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let victim = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
        // The attacker's own challenge, at its own address.
        own.send_to(&seal(PacketKind::Hello, &hello), srv.addr).await.unwrap();
        let mut buf = vec![0u8; 65_536];
        let n = tokio::time::timeout(STEP, own.recv(&mut buf)).await.unwrap().unwrap();
        let h = Header::decode(&buf[..n]).unwrap();
        assert_eq!(h.kind, PacketKind::PathChallenge);
        let challenge = keys.server.open(h.pn, &mut buf[..n]).unwrap().to_vec();
        let (mut sent, mut got, mut data) = (0u64, 0u64, 0u64);
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut i = 0u64;
        while tokio::time::Instant::now() < until {
            let mut out = vec![seal(PacketKind::PathResponse, &challenge)];
            if i.is_multiple_of(20) {
                out.push(seal(PacketKind::Hello, &hello));
            }
            let ack =
                Ack { largest_pn: i * 4, ack_delay_us: 0, max_datagram: 1472, cumulative: i * 50_000, ranges: vec![] };
            let mut body = Vec::new();
            ack.encode(&mut body);
            out.push(seal(PacketKind::Ack, &body));
            for d in out {
                sent += d.len() as u64;
                victim.send_to(&d, srv.addr).await.unwrap();
            }
            i += 1;
            // Count everything that reaches the victim for 10 ms.
            let tick = tokio::time::Instant::now() + std::time::Duration::from_millis(10);
            while let Ok(Ok((n, _))) = tokio::time::timeout_at(tick, victim.recv_from(&mut buf)).await {
                got += n as u64;
                if Header::decode(&buf[..n]).is_ok_and(|h| h.kind != PacketKind::PathChallenge) {
                    data += n as u64;
                }
            }
        }
        eprintln!("spoofed victim: sent {sent} bytes from its address, it received {got}");
        assert_eq!(data, 0, "only challenges reach the victim");
        assert!(got <= 3 * sent, "{got} bytes to the victim for {sent}");
        raw.send(&xfer::proto::Request::Abort).await;
        assert!(matches!(raw.recv().await, xfer::proto::Response::Ok));
        srv.assert_no_panics();
    })
    .await
}

/// UDP-RESUME-7: a `GetUdp` may name at most MAX_RESUME_RANGES held ranges.
#[tokio::test]
async fn rejects_a_download_request_with_too_many_held_ranges() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        std::fs::write(srv.home("alice").join("f"), pseudo_random(64 * KIB as usize, 4)).unwrap();
        let mut raw = Raw::login(srv.addr, "alice", PW).await;
        let n = xfer::udp::ranges::MAX_RESUME_RANGES as u64 + 1;
        let held = (0..n).map(|i| (2 * i, 2 * i + 1)).collect();
        let req = xfer::proto::Request::GetUdp { path: "f".into(), held, held_md5: Some([0; 16]), rate_limit: None };
        raw.send(&req).await;
        raw.expect_error(ErrorCode::BadRequest).await;
        srv.assert_no_panics();
    })
    .await
}

/// UDP-RATE-8: an upload leaves its path estimate in `CONFIG_DIR/udp_paths` under the server
/// it went to; the next upload starts from it (validated by the sender, UDP-RATE-7) and is
/// byte-exact; a file of garbage in its place only means a cold start.
#[tokio::test]
async fn uploads_remember_the_path_per_server_and_start_the_next_from_it() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        let memory = env.config_dir.join(xfer::client::path_memory::FILE_NAME);
        let mut c = srv.connect("alice", PW).await;
        let data = make_file(&env.local("big"), 32 * MIB as usize, 11);
        put(&mut c, &env.local("big"), "first", &udp()).await;
        let text = std::fs::read_to_string(&memory).expect("the estimate was remembered");
        let line = text.lines().find(|l| l.starts_with(&format!("{} ", srv.addr_string())));
        let fields: Vec<u64> =
            line.expect("a line for this server").split(' ').skip(1).map(|f| f.parse().unwrap()).collect();
        assert!(fields[0] > 0 && fields[1] > 0, "{text}");
        let remembered = xfer::client::path_memory::PathMemory::new(&env.config_dir).recall(&srv.addr_string());
        assert!(remembered.is_some(), "{text}");
        let second = put(&mut c, &env.local("big"), "second", &udp()).await;
        assert_eq!(second.md5, md5_bytes(&data));
        std::fs::write(&memory, b"\xff\xfe garbage\nnot a line at all\n").unwrap();
        let third = put(&mut c, &env.local("big"), "third", &udp()).await;
        assert_eq!(third.md5, md5_bytes(&data));
        assert_eq!(std::fs::read(srv.home("alice").join("third")).unwrap(), data);
    })
    .await;
}

/// UDP-RATE-9: a UDP download leaves its path estimate in the server's memory under the user
/// and the client's address, and only there; the next download to them starts from it
/// (validated by the sender, UDP-RATE-7) and is byte-exact. Downloads over TCP remember
/// nothing.
#[tokio::test]
async fn downloads_remember_the_path_per_user_and_address_on_the_server() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        srv.add_user("bob", PW, 256 * MIB, None);
        let data = pseudo_random(32 * MIB as usize, 12);
        std::fs::write(srv.home("alice").join("big"), &data).unwrap();
        std::fs::write(srv.home("bob").join("big"), &data).unwrap();
        let paths = &srv.state.download_paths;
        let here = std::net::IpAddr::from([127, 0, 0, 1]);
        let now = std::time::Instant::now;
        let mut bob = srv.connect("bob", PW).await;
        get(&mut bob, "big", &env.local("bob-tcp"), &opts(TransportChoice::Tcp, false)).await;
        assert!(paths.is_empty(), "a TCP download has no flow to learn from");

        let mut alice = srv.connect("alice", PW).await;
        get(&mut alice, "big", &env.local("first"), &udp()).await;
        let first = paths.recall(now(), "alice", here).expect("the first download's estimate was kept");
        assert!(first.rate > 0 && !first.min_rtt.is_zero(), "{first:?}");
        assert_eq!(paths.recall(now(), "bob", here), None, "bob gets nothing of alice's path");
        assert_eq!(paths.recall(now(), "alice", std::net::IpAddr::from([127, 0, 0, 2])), None);

        let second = get(&mut alice, "big", &env.local("second"), &udp()).await;
        assert_eq!(second.md5, md5_bytes(&data));
        assert_eq!(std::fs::read(env.local("second")).unwrap(), data);
        assert!(paths.recall(now(), "alice", here).is_some());
        get(&mut bob, "big", &env.local("bob-udp"), &udp()).await;
        assert_eq!(paths.len(), 2, "one entry per user at this address");
        srv.assert_no_panics();
    })
    .await;
}

/// A relay policy that drops every datagram to the client for `window` after the first
/// datagram to the server, and counts the datagrams to the server in that time: what the
/// client sends before it has heard anything on UDP.
fn counting_before_any_answer(window: Duration) -> (Policy, Arc<AtomicU64>) {
    let before = Arc::new(AtomicU64::new(0));
    let first: std::sync::Mutex<Option<std::time::Instant>> = Default::default();
    let count = before.clone();
    let policy: Policy = Arc::new(move |dir, _, _| {
        let start = *first.lock().unwrap().get_or_insert_with(std::time::Instant::now);
        let within = start.elapsed() < window;
        match dir {
            Dir::ToClient if within => Action::Drop,
            Dir::ToServer if within => {
                count.fetch_add(1, Relaxed);
                Action::Forward
            }
            _ => Action::Forward,
        }
    });
    (policy, before)
}

/// UDP-CTRL-10: an upload sends its first flight before it has heard anything from the server
/// on UDP, and the file arrives whole: a new one, and one that resumes a partial the server
/// holds, whose first flight falls in what is held and is not written again.
#[tokio::test]
async fn an_upload_sends_its_first_flight_before_the_server_answers() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let data = make_file(&env.local("a"), 4 * MIB as usize, 11);
        plant_server_partial(&srv, "b", &data, &[(0, MIB)]);
        for (name, resumed_from) in [("a", 0), ("b", MIB)] {
            let (policy, before) = counting_before_any_answer(Duration::from_millis(500));
            let proxy = Proxy::start(srv.addr, policy).await;
            let mut c = connect_via(&proxy, &env).await;
            let up = put(&mut c, &env.local("a"), name, &opts(TransportChoice::Udp, true)).await;
            assert_eq!((up.transport, up.resumed_from), (Transport::Udp, resumed_from));
            assert_eq!(std::fs::read(srv.home("alice").join(name)).unwrap(), data);
            let before = before.load(Relaxed);
            assert!(before >= 32, "{name}: {before} datagrams before any answer: the first flight and a Hello");
        }
        srv.assert_no_panics();
    })
    .await
}
