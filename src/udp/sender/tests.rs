use super::*;

const MS: Duration = Duration::from_millis(1);

/// A sender that does not probe the path MTU (its maximum is the minimum).
fn sender(size: u64, held: RangeSet) -> (Sender, Instant) {
    let now = Instant::now();
    let mut cfg = SenderConfig::new(size, held);
    cfg.max_datagram = MIN_DATAGRAM;
    (Sender::new(cfg, now), now)
}

fn data(t: Option<Transmit>) -> (u64, u64, u16) {
    match t {
        Some(Transmit::Data { pn, offset, len }) => (pn, offset, len),
        other => panic!("expected data, got {other:?}"),
    }
}

fn ack(largest_pn: u64, cumulative: u64, ranges: &[(u64, u64)]) -> Ack {
    Ack { largest_pn, ack_delay_us: 0, max_datagram: 1200, cumulative, ranges: ranges.to_vec() }
}

/// Sends up to `n` datagrams at `now`, ignoring pacing (by moving time along to each slot).
fn send_n(s: &mut Sender, now: &mut Instant, n: usize) -> Vec<(u64, u64, u16)> {
    let mut out = Vec::new();
    while out.len() < n {
        match s.poll_transmit(*now) {
            Some(t) => out.push(data(Some(t))),
            // Wait for pacing, not for a probe timeout.
            None => match s.poll_timeout() {
                Some(t) if t > *now && t - *now < 5 * MS => *now = t,
                _ => break,
            },
        }
    }
    out
}

#[test]
fn sends_new_data_in_order_in_full_datagrams() {
    let (mut s, mut now) = sender(10_000, RangeSet::new());
    let sent = send_n(&mut s, &mut now, 20);
    let payload = (MIN_DATAGRAM - DATA_OVERHEAD) as u16;
    assert_eq!(sent.len(), 9, "10 000 bytes in 1152-byte chunks");
    for (i, &(pn, offset, len)) in sent.iter().enumerate() {
        assert_eq!(pn, i as u64);
        assert_eq!(offset, i as u64 * u64::from(payload));
        assert_eq!(len, if i < 8 { payload } else { (10_000 - 8 * u64::from(payload)) as u16 });
    }
    assert_eq!(s.poll_transmit(now), None, "nothing more until acks or timeouts");
}

#[test]
fn resume_sends_only_missing_bytes() {
    let held = RangeSet::from_ranges([(0, 100), (500, 2000), (2100, 5000)]);
    let (mut s, mut now) = sender(5000, held);
    let sent = send_n(&mut s, &mut now, 10);
    let chunks: Vec<_> = sent.iter().map(|&(_, o, l)| (o, o + u64::from(l))).collect();
    assert_eq!(chunks, vec![(100, 500), (2000, 2100)]);
    assert_eq!(s.cumulative(), 100);
}

#[test]
fn retransmits_after_three_later_packets_under_a_new_number() {
    let (mut s, mut now) = sender(1 << 20, RangeSet::new());
    let sent = send_n(&mut s, &mut now, 6);
    // Packet 1 is missing; 2..=5 arrived.
    let (_, o1, l1) = sent[1];
    let (_, o2, _) = sent[2];
    now += 50 * MS;
    s.handle_ack(now, &ack(5, o1, &[(o2, sent[5].1 + u64::from(sent[5].2))]));
    assert_eq!(s.stats().lost_packets, 1);
    let (pn, offset, len) = data(s.poll_transmit(now));
    assert_eq!((offset, len), (o1, l1));
    assert!(pn > 5);
    assert_eq!(s.stats().retransmitted_bytes, u64::from(l1));
}

#[test]
fn never_resends_bytes_known_held() {
    let (mut s, mut now) = sender(1 << 20, RangeSet::new());
    let sent = send_n(&mut s, &mut now, 8);
    let end = |i: usize| sent[i].1 + u64::from(sent[i].2);
    now += 50 * MS;
    // 1 and 2 missing, the rest arrived.
    s.handle_ack(now, &ack(7, end(0), &[(end(2), end(7))]));
    assert_eq!(s.stats().lost_packets, 2);
    // Before resending, an ack shows packet 1 arrived after all (late, from a duplicate).
    s.handle_ack(now, &ack(7, end(1), &[(end(2), end(7))]));
    let (_, offset, _) = data(s.poll_transmit(now));
    assert_eq!(offset, sent[2].1, "only packet 2's bytes are resent");
    let (_, offset, _) = data(s.poll_transmit(now));
    assert_eq!(offset, end(7), "then new data");
}

#[test]
fn probe_timeout_resends_the_lowest_unacked_data() {
    let (mut s, mut now) = sender(3000, RangeSet::new());
    let sent = send_n(&mut s, &mut now, 5);
    assert_eq!(sent.len(), 3);
    let pto = s.poll_timeout().expect("a PTO is armed");
    assert!(pto > now);
    s.handle_timeout(pto);
    let (pn, offset, _) = data(s.poll_transmit(pto));
    assert_eq!((pn, offset), (3, 0));
    let (_, offset, _) = data(s.poll_transmit(pto));
    assert_eq!(offset, sent[1].1, "the second probe continues after the first");
    // Without an RTT sample the timeout is already at its 1 s cap: no further back-off.
    let next = s.poll_timeout().unwrap();
    assert!(next - pto >= pto - now);
    now = next;
    s.handle_ack(now, &ack(4, 3000, &[]));
    assert!(s.is_done());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.poll_transmit(now), None);
}

#[test]
fn keeps_within_the_span() {
    let now = Instant::now();
    let mut cfg = SenderConfig::new(1 << 20, RangeSet::new());
    cfg.max_span = 3000;
    cfg.max_datagram = MIN_DATAGRAM;
    let mut s = Sender::new(cfg, now);
    let mut t = now;
    let sent = send_n(&mut s, &mut t, 10);
    let last = sent.last().unwrap();
    assert_eq!(last.1 + u64::from(last.2), 3000);
    s.handle_ack(t, &ack(0, 1152, &[]));
    let (_, offset, len) = data(s.poll_transmit(t + 10 * MS));
    assert_eq!((offset, u64::from(len)), (3000, 1152));
}

#[test]
fn bytes_beyond_a_full_ack_are_unknown_not_lost() {
    let (mut s, mut now) = sender(1 << 20, RangeSet::new());
    // Open the window with a few round trips.
    let mut base = 0;
    for _ in 0..3 {
        let sent = send_n(&mut s, &mut now, 1000);
        let &(pn, offset, len) = sent.last().unwrap();
        base = offset + u64::from(len);
        now += 20 * MS;
        s.handle_ack(now, &ack(pn, base, &[]));
    }
    let sent = send_n(&mut s, &mut now, 1000);
    assert!(sent.len() > 2 * MAX_ACK_RANGES, "window of {} packets", sent.len());
    let end = |i: usize| sent[i].1 + u64::from(sent[i].2);
    // Every other packet lost: the ack lists 64 ranges, the odd packets up to 127.
    let ranges: Vec<_> = (0..MAX_ACK_RANGES).map(|k| (sent[2 * k + 1].1, end(2 * k + 1))).collect();
    let largest = sent.last().unwrap().0;
    now += 20 * MS;
    s.handle_ack(now, &ack(largest, base, &ranges));
    // The even packets up to 126 are lost, except packet 64 between the ack's two halves
    // (a receiver may list the lowest and the highest ranges); those above packet 127 are
    // not known to be lost either.
    assert_eq!(s.stats().lost_packets, MAX_ACK_RANGES as u64 - 1);
    assert!(!s.lost.contains(sent[64].1, end(64)));
    assert!(s.lost.contains(sent[62].1, end(62)) && s.lost.contains(sent[66].1, end(66)));
    assert!(s.in_flight() > 0);
}

#[test]
fn reordering_raises_the_packet_threshold() {
    let (mut s, mut now) = sender(1 << 20, RangeSet::new());
    let sent = send_n(&mut s, &mut now, 10);
    let end = |i: usize| sent[i].1 + u64::from(sent[i].2);
    now += 50 * MS;
    s.handle_ack(now, &ack(9, end(0), &[(sent[2].1, end(9))]));
    assert_eq!(s.stats().lost_packets, 1);
    // Packet 1 shows up before anything sent after the declaration.
    s.handle_ack(now + MS, &ack(9, end(9), &[]));
    assert_eq!(s.stats().spurious_losses, 1);
    assert_eq!(s.packet_threshold, 9);
    assert!(s.lost.is_empty(), "nothing left to resend");
}

#[test]
fn a_failed_probe_send_counts_against_the_size() {
    let mut now = Instant::now();
    let mut s = Sender::new(SenderConfig::new(1 << 30, RangeSet::new()), now);
    let sent = send_n(&mut s, &mut now, 4);
    now += 20 * MS;
    let end = sent[3].1 + u64::from(sent[3].2);
    s.handle_ack(now, &ack(3, end, &[]));
    let mut probe = None;
    for _ in 0..100 {
        match s.poll_transmit(now) {
            Some(Transmit::Probe { pn, size }) => {
                probe = Some((pn, size));
                break;
            }
            Some(_) => {}
            None => now = s.poll_timeout().unwrap().max(now),
        }
    }
    let (pn, size) = probe.expect("a probe soon after the first RTT sample");
    assert_eq!(size, 1472);
    s.handle_send_error(pn);
    assert_eq!(s.datagram_size(), MIN_DATAGRAM);
    assert_eq!(s.pmtu.failures, 1);
}

#[test]
fn ignores_acks_of_packets_never_sent() {
    let (mut s, mut now) = sender(1000, RangeSet::new());
    send_n(&mut s, &mut now, 1);
    s.handle_ack(now, &ack(5, 1000, &[]));
    assert!(!s.is_done());
    s.handle_ack(now, &ack(0, 1000, &[]));
    assert!(s.is_done());
}
