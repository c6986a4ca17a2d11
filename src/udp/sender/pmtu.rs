//! Path MTU discovery by probing (in the manner of RFC 8899, datagram PLPMTUD): the sender
//! starts at [`MIN_DATAGRAM`] and probes a ladder of larger sizes up to its configured
//! maximum; a size is confirmed when an ack reports a datagram at least that large, and
//! given up after three failed probes.

use std::time::{Duration, Instant};

use crate::udp::packet::{MAX_DATAGRAM, MIN_DATAGRAM};

/// Sizes probed, in order (each capped at the configured maximum): Ethernet's 1500-byte MTU
/// for IPv4, then jumbo frames, then larger steps to the UDP limit.
const LADDER: [usize; 5] = [1472, 8972, 16384, 32768, MAX_DATAGRAM];
/// Wait after a failed probe (and between probes in general).
const INTERVAL: Duration = Duration::from_secs(1);
/// Failed probes of one size before it is given up.
const MAX_FAILURES: u8 = 3;

#[derive(Debug)]
pub(super) struct Pmtu {
    ladder: [usize; LADDER.len()],
    /// Index of the next size to probe; `ladder.len()` when done.
    next: usize,
    current: usize,
    pub(super) failures: u8,
    /// The probe in flight: packet number and size.
    in_flight: Option<(u64, usize)>,
    /// When to probe next (if not in flight and not done).
    next_at: Instant,
}

impl Pmtu {
    pub(super) fn new(now: Instant, max_datagram: usize) -> Pmtu {
        let max = max_datagram.clamp(MIN_DATAGRAM, MAX_DATAGRAM);
        let ladder = LADDER.map(|s| s.min(max));
        let next = ladder.iter().position(|&s| s > MIN_DATAGRAM).unwrap_or(ladder.len());
        Pmtu { ladder, next, current: MIN_DATAGRAM, failures: 0, in_flight: None, next_at: now }
    }

    /// The peer accepts datagrams of at most `max` bytes (its `Hello`): nothing larger is
    /// probed, and the current size drops to it if above.
    pub(super) fn limit(&mut self, max: usize) {
        let max = max.clamp(MIN_DATAGRAM, MAX_DATAGRAM);
        for size in &mut self.ladder {
            *size = (*size).min(max);
        }
        self.current = self.current.min(max);
        while self.next < self.ladder.len() && self.ladder[self.next] <= self.current {
            self.next += 1;
        }
    }

    pub(super) fn current(&self) -> usize {
        self.current
    }

    /// When the next probe is due, if one is to be sent.
    pub(super) fn next_at(&self) -> Option<Instant> {
        (self.in_flight.is_none() && self.next < self.ladder.len()).then_some(self.next_at)
    }

    /// The size to probe at `now`, if due.
    pub(super) fn due(&self, now: Instant) -> Option<usize> {
        self.next_at().filter(|&t| t <= now).map(|_| self.ladder[self.next])
    }

    pub(super) fn on_sent(&mut self, pn: u64, size: usize) {
        self.in_flight = Some((pn, size));
    }

    pub(super) fn is_probe(&self, pn: u64) -> bool {
        self.in_flight.is_some_and(|(p, _)| p == pn)
    }

    /// The peer reports `max_datagram` as the largest datagram it received; returns the new
    /// datagram size when that confirms the probe in flight.
    pub(super) fn on_ack(&mut self, now: Instant, max_datagram: u16, rtt: Duration) -> Option<usize> {
        let (_, size) = self.in_flight?;
        if usize::from(max_datagram) < size {
            return None;
        }
        self.in_flight = None;
        self.current = size;
        self.failures = 0;
        // Skip sizes the ladder repeats (capped at the maximum).
        while self.next < self.ladder.len() && self.ladder[self.next] <= size {
            self.next += 1;
        }
        self.next_at = now + rtt;
        Some(size)
    }

    /// The probe `pn` was lost or could not be sent.
    pub(super) fn on_failed(&mut self, now: Instant, pn: u64) {
        if !self.is_probe(pn) {
            return;
        }
        self.in_flight = None;
        self.failures += 1;
        if self.failures >= MAX_FAILURES {
            // Larger sizes would fail as well: stop probing.
            self.next = self.ladder.len();
        }
        self.next_at = now + INTERVAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn climbs_the_ladder_and_gives_up_after_three_failures() {
        let t0 = Instant::now();
        let mut p = Pmtu::new(t0, 9000);
        assert_eq!(p.due(t0), Some(1472));
        p.on_sent(1, 1472);
        assert_eq!(p.due(t0), None);
        assert_eq!(p.on_ack(t0, 1400, Duration::ZERO), None);
        assert_eq!(p.on_ack(t0, 1472, Duration::ZERO), Some(1472));
        assert_eq!(p.due(t0), Some(8972));
        p.on_sent(2, 8972);
        assert_eq!(p.on_ack(t0, 8972, Duration::ZERO), Some(8972));
        for (i, pn) in (3..6).enumerate() {
            let now = t0 + INTERVAL * i as u32;
            assert_eq!(p.due(now), Some(9000));
            p.on_sent(pn, 9000);
            p.on_failed(now, pn);
        }
        assert_eq!(p.next_at(), None);
        assert_eq!(p.current(), 8972);
    }

    #[test]
    fn a_peer_limit_caps_the_ladder() {
        let t0 = Instant::now();
        let mut p = Pmtu::new(t0, MAX_DATAGRAM);
        p.limit(1472);
        assert_eq!(p.due(t0), Some(1472));
        p.on_sent(1, 1472);
        assert_eq!(p.on_ack(t0, 1472, Duration::ZERO), Some(1472));
        assert_eq!(p.next_at(), None, "nothing above the peer's limit is probed");
        let mut p = Pmtu::new(t0, MAX_DATAGRAM);
        p.limit(1000);
        assert_eq!(p.next_at(), None);
        assert_eq!(p.current(), MIN_DATAGRAM);
    }

    #[test]
    fn never_probes_with_a_minimal_maximum() {
        let p = Pmtu::new(Instant::now(), 1000);
        assert_eq!(p.next_at(), None);
        assert_eq!(p.current(), MIN_DATAGRAM);
    }
}
