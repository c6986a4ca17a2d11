//! The receiving side of a UDP flow as a state machine (no I/O; every call takes `now`).
//!
//! Call order, as in quinn-proto: feed each authenticated datagram to
//! [`handle_data`](Receiver::handle_data) (writing the bytes when it says
//! [`DataVerdict::New`]) or [`handle_probe`](Receiver::handle_probe); then drain
//! [`poll_ack`](Receiver::poll_ack), sealing each ack under a packet number from
//! [`next_pn`](Receiver::next_pn); then sleep until [`poll_timeout`](Receiver::poll_timeout)
//! and call `poll_ack` again.
//!
//! Acks are sent at once for the first packet, `ack_interval` after the first unacknowledged
//! packet, after `ack_every` packets, at once when the last missing byte arrives, and at once after a duplicate (the
//! sender has not heard of what it is resending, so an ack was probably lost).
//!
//! An ack lists at most [`MAX_ACK_RANGES`] held ranges. When more are held, the protocol's rule
//! (UDP-ACK-2, [`AckRanges::LowestAndHighest`]) lists the lowest half and the highest half, so
//! the newest holes are always reported. Listing only the lowest ones ([`AckRanges::Lowest`],
//! kept for comparison in `tests/it/udp_flow_sim.rs`) lets a sender learn of at most 64 holes per round
//! trip, which caps goodput on lossy paths with a large bandwidth-delay product.

use std::time::{Duration, Instant};

use super::packet::{Ack, MAX_ACK_RANGES};
use super::ranges::{RangeSet, MAX_HELD_RANGES};

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// File size in bytes.
    pub size: u64,
    /// Bytes already held (resume).
    pub held: RangeSet,
    /// Longest an ack waits after the first packet it acknowledges.
    pub ack_interval: Duration,
    /// Packets that make an ack due at once.
    pub ack_every: u32,
    /// Which ranges an ack lists when more are held than fit.
    pub ack_ranges: AckRanges,
}

/// Which held ranges an ack lists when there are more than [`MAX_ACK_RANGES`] above the
/// cumulative offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckRanges {
    /// The lowest ones only (not what the protocol specifies; for comparison).
    Lowest,
    /// The lowest half and the highest half, so that the newest holes are always reported
    /// (UDP-ACK-2). The sender treats the stretch between the two halves as unknown.
    #[default]
    LowestAndHighest,
}

/// Ack-eliciting datagrams that make an ack due at once (`UDP-ACK-1`).
pub const ACK_EVERY: u32 = 32;

impl ReceiverConfig {
    /// Defaults: ack within 10 ms or every [`ACK_EVERY`] packets.
    pub fn new(size: u64, held: RangeSet) -> Self {
        ReceiverConfig {
            size,
            held,
            ack_interval: Duration::from_millis(10),
            ack_every: ACK_EVERY,
            ack_ranges: AckRanges::LowestAndHighest,
        }
    }
}

/// What to do with a data datagram's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataVerdict {
    /// Write it at its offset (some or all of it was missing).
    New,
    /// Every byte of it is already held: drop it.
    Duplicate,
    /// It reaches past the end of the file: drop it.
    OutOfBounds,
    /// It would add a held range beyond [`MAX_HELD_RANGES`] (UDP-DATA-5): drop it; the sender
    /// resends it.
    Refused,
}

/// Receiver of one flow: what is held and when to acknowledge.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    held: RangeSet,
    complete: bool,
    /// Largest packet number received and when it arrived.
    largest: Option<(u64, Instant)>,
    max_datagram: usize,
    /// Packets received since the last ack.
    unacked: u32,
    /// Arrival of the first packet since the last ack.
    first_unacked: Option<Instant>,
    /// An ack is due at once (completion or duplicate), since this time.
    ack_now: Option<Instant>,
    next_pn: u64,
    /// Acks sent so far.
    acks_sent: u64,
    /// Authenticated datagrams received on the flow.
    received: u64,
}

impl Receiver {
    pub fn new(cfg: ReceiverConfig, _now: Instant) -> Receiver {
        let held = cfg.held.clone();
        let complete = held.contains(0, cfg.size);
        Receiver {
            cfg,
            held,
            complete,
            largest: None,
            max_datagram: 0,
            unacked: 0,
            first_unacked: None,
            ack_now: None,
            next_pn: 0,
            acks_sent: 0,
            received: 0,
        }
    }

    /// A data datagram arrived (already authenticated). [`DataVerdict::New`]: the caller
    /// writes the payload at `offset` (rewriting bytes already held is harmless).
    pub fn handle_data(&mut self, now: Instant, pn: u64, offset: u64, len: u16, datagram_len: usize) -> DataVerdict {
        let end = match offset.checked_add(u64::from(len)) {
            Some(end) if end <= self.cfg.size => end,
            _ => return DataVerdict::OutOfBounds,
        };
        if self.held.contains(offset, end) {
            self.on_packet(now, pn, datagram_len);
            self.ack_now.get_or_insert(now);
            return DataVerdict::Duplicate;
        }
        // UDP-DATA-5: the peer does not get to fragment what we hold without bound.
        if self.held.insert_bounded(offset, end, MAX_HELD_RANGES).is_none() {
            return DataVerdict::Refused;
        }
        self.on_packet(now, pn, datagram_len);
        if !self.complete && self.held.contains(0, self.cfg.size) {
            self.complete = true;
            self.ack_now.get_or_insert(now);
        }
        DataVerdict::New
    }

    /// A probe (path MTU) or any other authenticated datagram of `datagram_len` bytes.
    pub fn handle_probe(&mut self, now: Instant, pn: u64, datagram_len: usize) {
        self.on_packet(now, pn, datagram_len);
    }

    /// Fills `out` and returns true when an ack is due.
    pub fn poll_ack(&mut self, now: Instant, out: &mut Ack) -> bool {
        if self.poll_timeout().is_none_or(|t| t > now) {
            return false;
        }
        let Some((largest, arrived)) = self.largest else { return false };
        out.largest_pn = largest;
        let delay = now.saturating_duration_since(arrived).as_micros();
        out.ack_delay_us = u32::try_from(delay).unwrap_or(u32::MAX);
        out.max_datagram = u16::try_from(self.max_datagram).unwrap_or(u16::MAX);
        out.cumulative = self.held.contiguous_from(0);
        out.ranges.clear();
        // Ranges above the cumulative offset never touch it, so they start above it.
        let above = self.held.len() - usize::from(out.cumulative > 0);
        if self.cfg.ack_ranges == AckRanges::LowestAndHighest && above > MAX_ACK_RANGES {
            let half = MAX_ACK_RANGES / 2;
            out.ranges.extend(self.held.iter_from(out.cumulative).take(half));
            out.ranges.extend(self.held.iter_from(out.cumulative).skip(above - half));
        } else {
            out.ranges.extend(self.held.iter_from(out.cumulative).take(MAX_ACK_RANGES));
        }
        self.unacked = 0;
        self.first_unacked = None;
        self.ack_now = None;
        self.acks_sent += 1;
        true
    }

    /// When the next ack is due (in the past: due now), if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.unacked == 0 {
            return None;
        }
        let first = self.first_unacked?;
        if let Some(t) = self.ack_now {
            return Some(t);
        }
        if self.unacked >= self.cfg.ack_every {
            return Some(first);
        }
        Some(first + self.cfg.ack_interval)
    }

    /// Every byte of the file is held.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    pub fn held(&self) -> &RangeSet {
        &self.held
    }

    /// A packet number for a datagram this side sends (acks); strictly increasing from 0.
    pub fn next_pn(&mut self) -> u64 {
        let pn = self.next_pn;
        self.next_pn += 1;
        pn
    }

    /// Acks produced so far.
    pub fn acks_sent(&self) -> u64 {
        self.acks_sent
    }

    /// Packet numbers the sender has used so far as far as seen here (the largest received
    /// plus one), and how many of those are missing: the loss on the way, from the gaps
    /// (`UDP-FALLBACK-3`; duplicates can only make it read low).
    pub fn numbered_and_missing(&self) -> (u64, u64) {
        let numbered = self.largest.map_or(0, |(l, _)| l.saturating_add(1));
        (numbered, numbered.saturating_sub(self.received))
    }

    fn on_packet(&mut self, now: Instant, pn: u64, datagram_len: usize) {
        if self.largest.is_none_or(|(l, _)| pn > l) {
            self.largest = Some((pn, now));
        }
        self.max_datagram = self.max_datagram.max(datagram_len);
        if self.received == 0 {
            // UDP-ACK-1: the first one at once, so that the next ack of the first flight
            // gives the sender its spacing (UDP-RATE-10).
            self.ack_now.get_or_insert(now);
        }
        self.received += 1;
        self.unacked = self.unacked.saturating_add(1);
        self.first_unacked.get_or_insert(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(size: u64) -> (Receiver, Instant) {
        let now = Instant::now();
        (Receiver::new(ReceiverConfig::new(size, RangeSet::new()), now), now)
    }

    #[test]
    fn counts_missing_packet_numbers() {
        let (mut r, now) = receiver(10_000);
        assert_eq!(r.numbered_and_missing(), (0, 0));
        // 0, 1, 4, 5 of 0..=5 arrive (and 4 twice): 2 and 3 are missing.
        for (pn, off) in [(0, 0), (1, 100), (4, 400), (4, 400), (5, 500)] {
            r.handle_data(now, pn, off, 100, 148);
        }
        assert_eq!(r.numbered_and_missing(), (6, 1), "a duplicate hides one gap");
        r.handle_data(now, 9, 900, 100, 148);
        assert_eq!(r.numbered_and_missing(), (10, 4));
    }

    #[test]
    fn classifies_new_duplicate_and_out_of_bounds() {
        let (mut r, now) = receiver(100);
        assert_eq!(r.handle_data(now, 0, 0, 50, 98), DataVerdict::New);
        assert_eq!(r.handle_data(now, 1, 10, 20, 68), DataVerdict::Duplicate);
        assert_eq!(r.handle_data(now, 2, 40, 20, 68), DataVerdict::New, "partly held is new");
        assert_eq!(r.handle_data(now, 3, 90, 11, 59), DataVerdict::OutOfBounds);
        assert_eq!(r.handle_data(now, 4, u64::MAX, 2, 50), DataVerdict::OutOfBounds);
        assert!(!r.is_complete());
        assert_eq!(r.handle_data(now, 5, 60, 40, 88), DataVerdict::New);
        assert!(r.is_complete());
    }

    /// UDP-ACK-1: the first datagram at once, then after 10 ms or 32 datagrams.
    #[test]
    fn acks_the_first_at_once_then_after_interval_or_count() {
        let (mut r, t0) = receiver(1 << 20);
        let mut ack = Ack::default();
        assert!(!r.poll_ack(t0, &mut ack));
        assert_eq!(r.handle_data(t0, 0, 0, 100, 148), DataVerdict::New);
        assert_eq!(r.poll_timeout(), Some(t0), "the first datagram: at once");
        let t = t0 + Duration::from_micros(300);
        assert!(r.poll_ack(t, &mut ack));
        assert_eq!((ack.largest_pn, ack.cumulative, ack.ack_delay_us, ack.max_datagram), (0, 100, 300, 148));
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.handle_data(t0, 1, 100, 100, 148), DataVerdict::New);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_millis(10)));
        assert!(!r.poll_ack(t0 + Duration::from_millis(9), &mut ack));
        let t1 = t0 + Duration::from_millis(10);
        assert!(r.poll_ack(t1, &mut ack));
        assert_eq!((ack.largest_pn, ack.cumulative, ack.ack_delay_us), (1, 200, 10_000));
        assert_eq!(r.poll_timeout(), None);
        for pn in 2..=33 {
            r.handle_data(t1, pn, 100 * pn + 100, 100, 148);
        }
        assert_eq!(r.poll_timeout(), Some(t1));
        assert!(r.poll_ack(t1, &mut ack));
        assert_eq!(ack.cumulative, 200);
        assert_eq!(ack.ranges, vec![(300, 3500)]);
    }

    #[test]
    fn acks_at_once_on_completion_and_duplicates() {
        let (mut r, t0) = receiver(300);
        let mut ack = Ack::default();
        r.handle_data(t0, 0, 0, 100, 148);
        assert!(r.poll_ack(t0, &mut ack), "the first: at once");
        r.handle_data(t0, 1, 100, 100, 148);
        assert!(!r.poll_ack(t0, &mut ack));
        r.handle_data(t0, 3, 200, 100, 148);
        assert!(r.poll_ack(t0, &mut ack), "complete: ack at once");
        assert_eq!(ack.cumulative, 300);
        assert_eq!(r.handle_data(t0, 4, 0, 100, 148), DataVerdict::Duplicate);
        assert!(r.poll_ack(t0, &mut ack), "duplicate: ack at once");
        assert_eq!(ack.largest_pn, 4);
    }

    #[test]
    fn can_list_only_the_lowest_ranges_above_cumulative() {
        let t0 = Instant::now();
        let mut cfg = ReceiverConfig::new(1 << 20, RangeSet::new());
        cfg.ack_ranges = AckRanges::Lowest;
        let mut r = Receiver::new(cfg, t0);
        let mut ack = Ack::default();
        for i in 0..100u64 {
            r.handle_data(t0, i, 10 + 20 * i, 10, 58);
        }
        assert!(r.poll_ack(t0, &mut ack));
        assert_eq!(ack.cumulative, 0);
        assert_eq!(ack.ranges.len(), MAX_ACK_RANGES);
        assert_eq!(ack.ranges[0], (10, 20));
        assert_eq!(ack.ranges[63], (10 + 20 * 63, 20 + 20 * 63));
        let mut wire = Vec::new();
        ack.encode(&mut wire);
        let mut back = Ack::default();
        back.decode_into(&wire).unwrap();
        assert_eq!(back, ack);
    }

    #[test]
    fn lists_the_lowest_and_highest_ranges_by_default() {
        let now = Instant::now();
        let mut r = Receiver::new(ReceiverConfig::new(1 << 20, RangeSet::new()), now);
        let mut ack = Ack::default();
        for i in 0..100u64 {
            r.handle_data(now, i, 10 + 20 * i, 10, 58);
        }
        assert!(r.poll_ack(now, &mut ack));
        assert_eq!(ack.ranges.len(), MAX_ACK_RANGES);
        assert_eq!(ack.ranges[31], (10 + 20 * 31, 20 + 20 * 31));
        assert_eq!(ack.ranges[32], (10 + 20 * 68, 20 + 20 * 68));
        assert_eq!(ack.ranges[63], (10 + 20 * 99, 20 + 20 * 99));
        let mut wire = Vec::new();
        ack.encode(&mut wire);
        assert!(Ack::default().decode_into(&wire).is_ok());
        // With few ranges, both policies list them all.
        let mut r = Receiver::new(
            ReceiverConfig { ack_ranges: AckRanges::LowestAndHighest, ..ReceiverConfig::new(100, RangeSet::new()) },
            now,
        );
        r.handle_data(now, 0, 0, 10, 58);
        r.handle_data(now, 1, 20, 10, 58);
        r.handle_data(now, 2, 90, 10, 58);
        r.ack_now = Some(now);
        assert!(r.poll_ack(now, &mut ack));
        assert_eq!((ack.cumulative, ack.ranges.clone()), (10, vec![(20, 30), (90, 100)]));
    }

    #[test]
    fn rejects_data_that_would_fragment_the_held_set_beyond_the_bound() {
        let (mut r, now) = receiver(1 << 40);
        // 1 byte at every other offset: the hostile pattern.
        for i in 0..MAX_HELD_RANGES as u64 {
            assert_eq!(r.handle_data(now, i, 2 * i, 1, 35), DataVerdict::New);
        }
        let n = MAX_HELD_RANGES as u64;
        assert_eq!(r.handle_data(now, n, 2 * n, 1, 35), DataVerdict::Refused);
        assert_eq!(r.held().len(), MAX_HELD_RANGES);
        // Filling a hole is always accepted (it merges two ranges).
        assert_eq!(r.handle_data(now, n + 1, 1, 1, 35), DataVerdict::New);
        assert_eq!(r.held().len(), MAX_HELD_RANGES - 1);
    }

    #[test]
    fn resumes_from_held_ranges() {
        let now = Instant::now();
        let held = RangeSet::from_ranges([(0, 10), (20, 30)]);
        let mut r = Receiver::new(ReceiverConfig::new(30, held), now);
        assert_eq!(r.handle_data(now, 0, 20, 10, 58), DataVerdict::Duplicate);
        assert_eq!(r.handle_data(now, 1, 10, 10, 58), DataVerdict::New);
        assert!(r.is_complete());
        assert_eq!(r.next_pn(), 0);
        assert_eq!(r.next_pn(), 1);
    }
}
