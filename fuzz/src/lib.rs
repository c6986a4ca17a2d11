//! What the fuzz targets run, kept free of libfuzzer so that `tests/udp_props.rs` can include
//! this file and run the same code under proptest on stable (CI has no nightly).

use xfer::udp::packet::{
    decode_challenge, decode_close, decode_hello, Ack, DataFields, Header, PacketKind, HEADER_LEN, TAG_LEN,
};
use xfer::udp::seal::{FlowKeys, EXPORT_LEN};

/// The keys of the datagram vectors (exported keying material 00 01 ... 37), so that the
/// vectors in `proto-spec/vectors/udp-*.hex` make a seed corpus that opens.
pub fn fixed_keys() -> FlowKeys {
    let mut m = [0u8; EXPORT_LEN];
    for (i, b) in m.iter_mut().enumerate() {
        *b = i as u8;
    }
    FlowKeys::from_exported(&m)
}

/// Treats `data` as a received datagram, as a receiver would up to the body (UDP-VALID-1):
/// decodes the header, opens it with both directions' fixed keys, and decodes what opened by
/// its kind. A mutated datagram never gets past the AEAD, so the body decoders also run on the
/// bytes between header and tag as if they had opened. Panics if a decoder panics or if a
/// decoded body does not re-encode to the same bytes.
pub fn datagram(data: &[u8]) {
    let Ok(header) = Header::decode(data) else { return };
    let mut again = Vec::with_capacity(HEADER_LEN);
    header.encode(&mut again);
    assert_eq!(&again[..], &data[..HEADER_LEN], "a decoded header re-encodes to its bytes");

    let keys = fixed_keys();
    for sealer in [&keys.client, &keys.server] {
        let mut d = data.to_vec();
        if let Ok(body) = sealer.open(header.pn, &mut d) {
            body_by_kind(header.kind, body);
        }
    }
    body_by_kind(header.kind, &data[HEADER_LEN..data.len() - TAG_LEN]);
}

/// Decodes `body` as a `kind` body; whatever decodes must re-encode to the same bytes (for
/// `Hello`, its leading u16; padding is not checked).
pub fn body_by_kind(kind: PacketKind, body: &[u8]) {
    match kind {
        PacketKind::Hello => {
            if let Ok(max) = decode_hello(body) {
                assert_eq!(max.to_be_bytes(), body[..2]);
            }
        }
        PacketKind::PathChallenge | PacketKind::PathResponse => {
            if let Ok(c) = decode_challenge(kind, body) {
                assert_eq!(&c[..], body);
            }
        }
        PacketKind::Data => {
            if let Ok((fields, payload)) = DataFields::decode(body) {
                assert_eq!(usize::from(fields.len), payload.len());
                let mut again = Vec::with_capacity(body.len());
                fields.encode(&mut again);
                again.extend_from_slice(payload);
                assert_eq!(again, body);
            }
        }
        PacketKind::Ack => {
            let mut ack = Ack::default();
            if ack.decode_into(body).is_ok() {
                assert_eq!(ack.encoded_len(), body.len());
                let mut again = Vec::with_capacity(body.len());
                ack.encode(&mut again);
                assert_eq!(again, body);
            }
        }
        PacketKind::Probe => {}
        PacketKind::Close => {
            if let Ok(reason) = decode_close(body) {
                assert_eq!(reason.to_be_bytes(), body);
            }
        }
    }
}

/// The flow id of the datagram vectors.
pub const VECTOR_FLOW: u64 = 0x0102_0304_0506_0708;

/// Drives the real flow machine (`udp::Flow`, UDP-VALID-1) with `data` read as a sequence of
/// received datagrams: each is a selector byte (which end receives it, upload or download,
/// and which of four source addresses it claims), a u16 BE length, then that many bytes.
/// After every datagram the ends run their timers, transmits and events. Panics if the flow
/// panics, if it sends data, probes or acks anywhere but its peer (UDP-VALID-5), or if a
/// server sends an address that is not validated more than 3 times what came from it
/// (UDP-AMP-1).
pub fn flow_datagram(data: &[u8]) {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    use xfer::udp::flow::{Direction, Flow, FlowConfig, FlowTiming, Side};
    use xfer::udp::ranges::RangeSet;
    use xfer::udp::receiver::ReceiverConfig;
    use xfer::udp::sender::SenderConfig;

    let server: SocketAddr = ([10, 0, 0, 2], 7070).into();
    let sources: [SocketAddr; 4] =
        [server, ([10, 0, 0, 1], 40000).into(), ([10, 0, 0, 1], 40001).into(), ([10, 0, 0, 9], 40000).into()];
    let base = Instant::now();
    let size = 1 << 20;
    let mk = |side, direction| {
        let cfg = FlowConfig {
            id: VECTOR_FLOW,
            side,
            direction,
            timing: FlowTiming::default(),
            max_segments: 4,
            seed: [1; 32],
        };
        Flow::new(cfg, fixed_keys(), base)
    };
    let send = || Direction::Send(SenderConfig::new(size, RangeSet::new()));
    let recv = || Direction::Recv(ReceiverConfig::new(size, RangeSet::new()));
    let mut ends = [
        (mk(Side::Server, recv()), true),
        (mk(Side::Server, send()), true),
        (mk(Side::Client { server }, send()), false),
        (mk(Side::Client { server }, recv()), false),
    ];
    let mut received: HashMap<(usize, SocketAddr), u64> = HashMap::new();
    let mut sent: HashMap<(usize, SocketAddr), u64> = HashMap::new();
    let (mut rest, mut step, mut buf) = (data, 0u64, Vec::new());
    while rest.len() >= 3 {
        let (sel, len) = (rest[0], usize::from(u16::from_be_bytes([rest[1], rest[2]])));
        let take = len.min(rest.len() - 3);
        let mut datagram = rest[3..3 + take].to_vec();
        rest = &rest[3 + take..];
        step += 1;
        let now = base + Duration::from_millis(step * 7);
        let (which, from) = (usize::from(sel & 3), sources[usize::from(sel >> 2) & 3]);
        let (flow, is_server) = &mut ends[which];
        if *is_server {
            *received.entry((which, from)).or_default() += datagram.len() as u64;
        }
        flow.handle_datagram(now, from, &mut datagram);
        if flow.poll_timeout().is_some_and(|t| t <= now) {
            flow.handle_timeout(now);
        }
        while flow.needs_data().is_some() {
            flow.push_block(0, size, Some(bytes::Bytes::from(vec![0u8; size as usize])));
        }
        for _ in 0..64 {
            let Some(t) = flow.poll_transmit(now, &mut buf) else { break };
            let kind = Header::decode(&buf[..t.size]).map(|h| h.kind);
            let path_kind =
                matches!(kind, Ok(PacketKind::Hello | PacketKind::PathChallenge | PacketKind::PathResponse));
            assert!(path_kind || Some(t.dest) == flow.peer(), "{kind:?} to {} which is not the peer", t.dest);
            if *is_server && Some(t.dest) != flow.peer() {
                let s = sent.entry((which, t.dest)).or_default();
                *s += t.size as u64;
                let r = received.get(&(which, t.dest)).copied().unwrap_or(0);
                assert!(*s <= 3 * r, "{s} bytes to {} which sent {r}", t.dest);
            }
        }
        while flow.poll_event().is_some() {}
    }
}
