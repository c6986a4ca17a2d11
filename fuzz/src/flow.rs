//! The flow target: received datagrams driving the real flow machine (`udp::Flow`) of both ends
//! of an upload and a download.

use xfer::udp::packet::{Header, PacketKind};

use super::fixed_keys;

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
