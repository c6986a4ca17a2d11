//! Transfers over a flow the client opens (UDP-CTRL-9, UDP-CTRL-11, UDP-END-8), played by hand
//! against a real server on loopback: the `Hello` that goes before the request is held and
//! answered once the flow exists, a first flight sent with it is read and acked before
//! validation (UDP-CTRL-10), a `PutEnd` sent before every byte arrived waits for them, a
//! download starts from its early `Hello` or goes over TCP when small, and the attacker's moves:
//! ids already used or live elsewhere, floods of `Hello`s and `Data` for no flow, and a `Hello`
//! or a first flight sent from a victim's address.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use md5::Digest;
use support::*;
use tokio::net::UdpSocket;
use xfer::proto::{ErrorCode, Request, Response, Transport};
use xfer::udp::packet::{DataFields, Header, PacketKind, HEADER_LEN, MIN_DATAGRAM, TAG_LEN};
use xfer::udp::seal::{FlowKeys, SessionSecret};

const PW: &str = "flow-pw";

/// One client end of a flow, sealed by hand.
struct RawFlow {
    keys: FlowKeys,
    id: u64,
    pn: u64,
    sock: UdpSocket,
    server: SocketAddr,
}

impl RawFlow {
    async fn new(secret: &SessionSecret, id: u64, bind: &str, server: SocketAddr) -> RawFlow {
        let sock = UdpSocket::bind(bind).await.expect("bind");
        RawFlow { keys: FlowKeys::derive(secret, id), id, pn: 0, sock, server }
    }

    fn seal(&mut self, kind: PacketKind, body: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        Header { kind, flow: self.id, pn: self.pn }.encode(&mut d);
        d.extend_from_slice(body);
        d.resize(d.len() + TAG_LEN, 0);
        self.keys.client.seal(self.pn, &mut d);
        self.pn += 1;
        d
    }

    async fn send(&mut self, kind: PacketKind, body: &[u8]) -> usize {
        let d = self.seal(kind, body);
        self.sock.send_to(&d, self.server).await.expect("send");
        d.len()
    }

    async fn hello(&mut self) -> usize {
        let mut body = 1472u16.to_be_bytes().to_vec();
        body.resize(MIN_DATAGRAM - HEADER_LEN - TAG_LEN, 0);
        self.send(PacketKind::Hello, &body).await
    }

    async fn data(&mut self, offset: u64, payload: &[u8]) {
        let mut body = Vec::new();
        DataFields { offset, len: payload.len() as u16, crc32: crc32fast::hash(payload) }.encode(&mut body);
        body.extend_from_slice(payload);
        self.send(PacketKind::Data, &body).await;
    }

    /// The next datagram of `kind` from the server within `wait`, opened.
    async fn recv(&mut self, kind: PacketKind, wait: Duration) -> Option<Vec<u8>> {
        let until = tokio::time::Instant::now() + wait;
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok(Ok(n)) = tokio::time::timeout_at(until, self.sock.recv(&mut buf)).await else { return None };
            let h = Header::decode(&buf[..n]).expect("header");
            if h.kind == kind {
                return Some(self.keys.server.open(h.pn, &mut buf[..n]).expect("authentic").to_vec());
            }
        }
    }

    /// Answers the server's challenge, so that data may follow.
    async fn answer_challenge(&mut self) {
        let ch = self.recv(PacketKind::PathChallenge, STEP).await.expect("a PathChallenge");
        self.send(PacketKind::PathResponse, &ch).await;
    }
}

/// Sends 5000 unsealed datagrams of `kind` and `len` bytes for flows that do not exist from a
/// victim's address, and checks that nothing at all comes back (UDP-CTRL-9, -10).
async fn flood_for_no_flow(server: SocketAddr, kind: PacketKind, len: usize) {
    let victim = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let mut junk = vec![0u8; len];
    for i in 0..5_000u64 {
        Header { kind, flow: 0xdead_0000 + i, pn: 1 }.encode(&mut &mut junk[..HEADER_LEN]);
        victim.send_to(&junk, server).await.unwrap();
    }
    let mut buf = vec![0u8; 65_536];
    let quiet = tokio::time::timeout(Duration::from_millis(300), victim.recv(&mut buf)).await;
    assert!(quiet.is_err(), "a {kind:?} for no flow is never answered");
}

fn put_flow(path: &str, size: u64, flow: u64) -> Request {
    Request::PutFlow { path: path.into(), size, resume: false, flow }
}

fn is_error(r: &Response, code: ErrorCode) -> bool {
    matches!(r, Response::Error { code: c, .. } if *c == code)
}

/// UDP-CTRL-9, UDP-END-8: the `Hello` sent before the request is answered once the flow
/// exists, with no `Hello` after it; a `PutEnd` sent before the last datagram waits for it,
/// and the file is committed whole.
#[tokio::test]
async fn an_early_hello_is_answered_and_an_early_put_end_waits_for_every_byte() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let (mut raw, secret) = Raw::login_exporting(srv.addr, "alice", PW).await;
        let data = pseudo_random(3000, 9);
        let mut flow = RawFlow::new(&secret, 0x5eed_0001, "127.0.0.1:0", srv.addr).await;
        flow.hello().await;
        // Long enough that the Hello is there before the flow is.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ready = raw.call(&put_flow("f", data.len() as u64, flow.id)).await;
        assert!(matches!(ready, Response::UdpPutReady { flow: id, .. } if id == flow.id), "{ready:?}");
        flow.answer_challenge().await;
        flow.data(0, &data[..1000]).await;
        let md5: [u8; 16] = md5::Md5::digest(&data).into();
        raw.send(&Request::PutEnd { md5 }).await;
        // The server holds a third of the file: it waits, it does not fail the upload.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!srv.home("alice").join("f").exists(), "nothing is committed before every byte is held");
        flow.data(1000, &data[1000..2000]).await;
        flow.data(2000, &data[2000..]).await;
        let done = raw.recv().await;
        assert!(matches!(done, Response::PutDone { size: 3000, md5: m } if m == md5), "{done:?}");
        assert_eq!(std::fs::read(srv.home("alice").join("f")).unwrap(), data);
        srv.assert_no_panics();
    })
    .await
}

/// UDP-END-8: only a flow the client opened may end early; on one opened by `Put`, a `PutEnd`
/// before every byte is held fails the upload, and the partial stays to resume.
#[tokio::test]
async fn an_early_put_end_on_a_flow_the_server_opened_fails_the_upload() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let (mut raw, secret) = Raw::login_exporting(srv.addr, "alice", PW).await;
        let data = pseudo_random(3000, 10);
        let req = Request::Put { path: "f".into(), size: 3000, resume: false, transport: Transport::Udp };
        let Response::UdpPutReady { flow: id, .. } = raw.call(&req).await else { panic!("no UdpPutReady") };
        let mut flow = RawFlow::new(&secret, id, "127.0.0.1:0", srv.addr).await;
        flow.hello().await;
        flow.answer_challenge().await;
        flow.data(0, &data[..1000]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        raw.send(&Request::PutEnd { md5: md5::Md5::digest(&data).into() }).await;
        let r = raw.recv().await;
        assert!(is_error(&r, ErrorCode::BadRequest), "{r:?}");
        assert!(!srv.home("alice").join("f").exists());
        srv.assert_no_panics();
    })
    .await
}

/// UDP-CTRL-9, the attacker's view: an id that another connection's live flow has (it is in
/// the clear on the wire), one this connection already had a flow under, and 0 are refused
/// before anything is charged, and the owner's upload goes on untouched.
#[tokio::test]
async fn a_chosen_flow_id_that_is_live_or_was_used_is_refused() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        srv.add_user("mallory", PW, 64 * MIB, None);
        let (mut alice, secret) = Raw::login_exporting(srv.addr, "alice", PW).await;
        let (mut mallory, _) = Raw::login_exporting(srv.addr, "mallory", PW).await;
        let data = pseudo_random(2000, 11);
        let id = 0x0a11_ce00_0000_0001;
        let ready = alice.call(&put_flow("f", 2000, id)).await;
        assert!(matches!(ready, Response::UdpPutReady { .. }), "{ready:?}");

        // Mallory saw the id on the wire and asks for a flow under it.
        let r = mallory.call(&put_flow("g", 2000, id)).await;
        assert!(is_error(&r, ErrorCode::BadRequest), "{r:?}");
        let r = mallory.call(&put_flow("g", 2000, 0)).await;
        assert!(is_error(&r, ErrorCode::BadRequest), "{r:?}");
        let df = mallory.call(&Request::Df).await;
        assert!(
            matches!(df, Response::Df { used_bytes: 0, reserved_bytes: 0, used_files: 0, .. }),
            "nothing charged: {df:?}"
        );
        assert_eq!(std::fs::read_dir(srv.home("mallory")).unwrap().count(), 0, "no partial file");

        // Alice's upload is hers still.
        let mut flow = RawFlow::new(&secret, id, "127.0.0.1:0", srv.addr).await;
        flow.hello().await;
        flow.answer_challenge().await;
        flow.data(0, &data).await;
        let md5: [u8; 16] = md5::Md5::digest(&data).into();
        raw_put_end(&mut alice, md5).await;
        assert_eq!(std::fs::read(srv.home("alice").join("f")).unwrap(), data);

        // The same id again on Alice's connection would repeat the flow's keys.
        let r = alice.call(&put_flow("f2", 2000, id)).await;
        assert!(is_error(&r, ErrorCode::BadRequest), "{r:?}");
        assert!(!srv.home("alice").join(".f2.xfer-part").exists());
        srv.assert_no_panics();
    })
    .await
}

async fn raw_put_end(raw: &mut Raw, md5: [u8; 16]) {
    let done = raw.call(&Request::PutEnd { md5 }).await;
    assert!(matches!(done, Response::PutDone { md5: m, .. } if m == md5), "{done:?}");
}

/// UDP-CTRL-9, UDP-AMP-1: a flood of `Hello`s for flows that do not exist gets no answer at
/// all; a `Hello` held for a real flow but sent from a victim's address earns that address
/// only challenges, within three times what came from it; and after the flood the server
/// still holds a real client's early `Hello`.
#[tokio::test]
async fn held_hellos_answer_nothing_alone_and_a_spoofed_one_gets_three_times_at_most() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let (mut raw, secret) = Raw::login_exporting(srv.addr, "alice", PW).await;
        flood_for_no_flow(srv.addr, PacketKind::Hello, MIN_DATAGRAM).await;

        // The attacker's own flow, its Hello sent from the victim's address.
        let mut spoofed = RawFlow::new(&secret, 0x5eed_0002, "127.0.0.2:0", srv.addr).await;
        let sent = spoofed.hello().await as u64;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ready = raw.call(&put_flow("f", 5000, spoofed.id)).await;
        assert!(matches!(ready, Response::UdpPutReady { .. }), "{ready:?}");
        let (kinds, got) = drain(&spoofed.sock, Duration::from_secs(2)).await;
        assert!(kinds.iter().all(|k| *k == PacketKind::PathChallenge), "{kinds:?}");
        assert!(got > 0, "the held Hello reached its flow");
        assert!(got <= 3 * sent, "{got} bytes to the victim for {sent}");
        raw.send(&Request::Abort).await;
        assert!(matches!(raw.recv().await, Response::Ok));

        // A real client's early Hello, after the flood, is still held and answered.
        let mut real = RawFlow::new(&secret, 0x5eed_0003, "127.0.0.1:0", srv.addr).await;
        real.hello().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ready = raw.call(&put_flow("h", 10, real.id)).await;
        assert!(matches!(ready, Response::UdpPutReady { .. }), "{ready:?}");
        assert!(
            real.recv(PacketKind::PathChallenge, Duration::from_millis(150)).await.is_some(),
            "answered without a second Hello"
        );
        srv.assert_no_panics();
    })
    .await
}

/// UDP-CTRL-10: a first flight sent before the request is held with the `Hello`, read and
/// acked before the client's address is validated (the client has not answered the challenge
/// yet), and a forged datagram among it writes nothing; the upload then completes whole.
#[tokio::test]
async fn a_first_flight_before_the_request_is_read_and_acked_before_validation() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let (mut raw, secret) = Raw::login_exporting(srv.addr, "alice", PW).await;
        let data = pseudo_random(3000, 21);
        let mut flow = RawFlow::new(&secret, 0x5eed_0101, "127.0.0.1:0", srv.addr).await;
        flow.hello().await;
        flow.data(0, &data[..1000]).await;
        flow.data(1000, &data[1000..2000]).await;
        // Garbage at 2000, its tag broken: the flow drops it when it opens it.
        let mut body = Vec::new();
        let junk = vec![0xAA; 1000];
        DataFields { offset: 2000, len: 1000, crc32: crc32fast::hash(&junk) }.encode(&mut body);
        body.extend_from_slice(&junk);
        let mut forged = flow.seal(PacketKind::Data, &body);
        forged[HEADER_LEN + 20] ^= 1;
        flow.sock.send_to(&forged, srv.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ready = raw.call(&put_flow("f", data.len() as u64, flow.id)).await;
        assert!(matches!(ready, Response::UdpPutReady { .. }), "{ready:?}");
        let mut ack = xfer::udp::packet::Ack::default();
        while ack.cumulative < 2000 {
            let body = flow.recv(PacketKind::Ack, STEP).await.expect("the held flight is acked before validation");
            ack.decode_into(&body).expect("an ack");
        }
        assert_eq!(ack.cumulative, 2000, "both authentic datagrams held, the forged one not");
        flow.answer_challenge().await;
        flow.data(2000, &data[2000..]).await;
        let md5: [u8; 16] = md5::Md5::digest(&data).into();
        raw_put_end(&mut raw, md5).await;
        assert_eq!(std::fs::read(srv.home("alice").join("f")).unwrap(), data);
        srv.assert_no_panics();
    })
    .await
}

/// UDP-CTRL-10, UDP-AMP-1, UDP-AMP-2: the attacker's own first flight, sent with its `Hello`
/// from a victim's address and never answered, earns the victim only challenges and acks,
/// within three times what came from that address; and a flood of `Data` for flows that do
/// not exist gets no answer at all.
#[tokio::test]
async fn a_spoofed_first_flight_earns_the_victim_three_times_at_most() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let (mut raw, secret) = Raw::login_exporting(srv.addr, "alice", PW).await;
        flood_for_no_flow(srv.addr, PacketKind::Data, 1472).await;

        let mut spoofed = RawFlow::new(&secret, 0x5eed_0102, "127.0.0.2:0", srv.addr).await;
        let mut sent = spoofed.hello().await as u64;
        let chunk = pseudo_random(1400, 5);
        for i in 0..40u64 {
            spoofed.data(i * 1400, &chunk).await;
            sent += (HEADER_LEN + xfer::udp::packet::DATA_FIELDS_LEN + 1400 + TAG_LEN) as u64;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ready = raw.call(&put_flow("f", 1 << 20, spoofed.id)).await;
        assert!(matches!(ready, Response::UdpPutReady { .. }), "{ready:?}");
        let (kinds, got) = drain(&spoofed.sock, Duration::from_secs(2)).await;
        let to_victim = |k: &PacketKind| matches!(k, PacketKind::PathChallenge | PacketKind::Ack);
        assert!(kinds.iter().all(to_victim), "{kinds:?} to the victim");
        assert!(kinds.contains(&PacketKind::Ack), "the held flight was read");
        assert!(got <= 3 * sent, "{got} bytes to the victim for {sent}");
        raw.send(&Request::Abort).await;
        assert!(matches!(raw.recv().await, Response::Ok));
        srv.assert_no_panics();
    })
    .await
}

fn get_flow(path: &str, tcp_max: Option<u64>, flow: u64) -> Request {
    Request::GetFlow { path: path.into(), held: vec![], held_md5: None, rate_limit: None, tcp_max, flow }
}

/// Receives from `sock` for `wait` and returns the kinds and the bytes of what came.
async fn drain(sock: &UdpSocket, wait: Duration) -> (Vec<PacketKind>, u64) {
    let (mut kinds, mut bytes) = (Vec::new(), 0u64);
    let mut buf = vec![0u8; 65_536];
    let until = tokio::time::Instant::now() + wait;
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
        kinds.push(Header::decode(&buf[..n]).expect("header").kind);
        bytes += n as u64;
    }
    (kinds, bytes)
}

/// UDP-CTRL-11: a download over a flow the client chose starts from the `Hello` sent before
/// the request: the challenge comes with no second `Hello`, and data follows the answer. The id
/// is checked before anything else: 0, one live on another connection, and one this connection
/// used are refused with `BadRequest`, even for a path that does not exist.
#[tokio::test]
async fn a_download_over_a_chosen_flow_starts_from_its_early_hello_and_its_id_is_checked_first() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        srv.add_user("mallory", PW, 64 * MIB, None);
        let data = make_file(&srv.home("alice").join("big"), 600_000, 21);
        let (mut alice, secret) = Raw::login_exporting(srv.addr, "alice", PW).await;
        let (mut mallory, _) = Raw::login_exporting(srv.addr, "mallory", PW).await;

        for id in [0, 0x0b0b_0000_0000_0001] {
            let r = mallory.call(&get_flow("no-such-file", None, id)).await;
            let want = if id == 0 { ErrorCode::BadRequest } else { ErrorCode::NotFound };
            assert!(is_error(&r, want), "{id:#x}: {r:?}");
        }

        let mut flow = RawFlow::new(&secret, 0x0a11_ce00_0000_0011, "127.0.0.1:0", srv.addr).await;
        flow.hello().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ready = alice.call(&get_flow("big", Some(128 * 1024), flow.id)).await;
        assert!(matches!(ready, Response::UdpGetReady { flow: f, size: 600_000 } if f == flow.id), "{ready:?}");
        let ch = flow.recv(PacketKind::PathChallenge, Duration::from_millis(150)).await;
        let ch = ch.expect("challenged without a second Hello");
        flow.send(PacketKind::PathResponse, &ch).await;
        let body = flow.recv(PacketKind::Data, STEP).await.expect("data after the answer");
        let (fields, payload) = DataFields::decode(&body).unwrap();
        let at = fields.offset as usize;
        assert_eq!(payload, &data[at..at + payload.len()]);

        // Mallory saw the id on the wire: the live flow is not hers to take.
        let r = mallory.call(&get_flow("no-such-file", None, flow.id)).await;
        assert!(is_error(&r, ErrorCode::BadRequest), "{r:?}");
        alice.send(&Request::Abort).await;
        assert!(matches!(alice.recv().await, Response::Ok));

        // The same id again on Alice's connection would repeat the flow's keys.
        let r = alice.call(&get_flow("big", None, flow.id)).await;
        assert!(is_error(&r, ErrorCode::BadRequest), "{r:?}");
        let df = mallory.call(&Request::Df).await;
        assert!(matches!(df, Response::Df { used_bytes: 0, reserved_bytes: 0, .. }), "{df:?}");
        srv.assert_no_panics();
    })
    .await
}

/// UDP-CTRL-11, UDP-VALID-5, UDP-AMP-1: an early `Hello` for a download sent from a victim's
/// address earns the victim only challenges, within three times what came from it, and never
/// the file's data.
#[tokio::test]
async fn a_spoofed_early_hello_for_a_download_gets_the_victim_challenges_alone() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        make_file(&srv.home("alice").join("big"), 2_000_000, 22);
        let (mut raw, secret) = Raw::login_exporting(srv.addr, "alice", PW).await;
        let mut spoofed = RawFlow::new(&secret, 0x5eed_0012, "127.0.0.2:0", srv.addr).await;
        let sent = spoofed.hello().await as u64;
        let ready = raw.call(&get_flow("big", None, spoofed.id)).await;
        assert!(matches!(ready, Response::UdpGetReady { .. }), "{ready:?}");
        let (kinds, got) = drain(&spoofed.sock, Duration::from_secs(2)).await;
        assert!(!kinds.is_empty(), "the held Hello reached its flow");
        assert!(kinds.iter().all(|k| *k == PacketKind::PathChallenge), "{kinds:?}");
        assert!(got <= 3 * sent, "{got} bytes to the victim for {sent}");
        raw.send(&Request::Abort).await;
        assert!(matches!(raw.recv().await, Response::Ok));
        srv.assert_no_panics();
    })
    .await
}

/// UDP-CTRL-11, UDP-CTRL-7: a small file asked for with `GetFlow` and `tcp_max` comes over TCP
/// at once; the `Hello` held for the id is dropped unanswered, and the id counts as used.
#[tokio::test]
async fn a_small_file_asked_over_a_chosen_flow_comes_over_tcp_and_its_hello_is_dropped() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 64 * MIB, None);
        let data = make_file(&srv.home("alice").join("small"), 5_000, 23);
        let (mut raw, secret) = Raw::login_exporting(srv.addr, "alice", PW).await;
        let mut flow = RawFlow::new(&secret, 0x5eed_0013, "127.0.0.1:0", srv.addr).await;
        flow.hello().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ready = raw.call(&get_flow("small", Some(128 * 1024), flow.id)).await;
        assert!(matches!(ready, Response::GetReady { size: 5_000, offset: 0 }), "{ready:?}");
        assert_eq!(raw.recv_download().await, data);
        let (kinds, _) = drain(&flow.sock, Duration::from_millis(300)).await;
        assert!(kinds.is_empty(), "no flow answered the Hello: {kinds:?}");
        let r = raw.call(&put_flow("f", 10, flow.id)).await;
        assert!(is_error(&r, ErrorCode::BadRequest), "{r:?}");
        srv.assert_no_panics();
    })
    .await
}
