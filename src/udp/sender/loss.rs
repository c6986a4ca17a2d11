//! What the acks say about each packet: acknowledged, lost (RFC 9002 packet and time
//! thresholds, widened when a loss turns out spurious), or not known yet; and the probe
//! timeout.

use std::time::{Duration, Instant};

use super::{min_opt, Sender, SentPacket, State, GRANULARITY, MAX_PACKET_THRESHOLD, MAX_PTO};
use crate::udp::packet::Ack;
use crate::udp::ranges::MAX_HELD_RANGES;
use crate::udp::sender::rtt::MAX_ACK_DELAY;

/// A loss declared recently, kept to notice when it was spurious.
#[derive(Debug, Clone, Copy)]
pub(super) struct LostRecord {
    pn: u64,
    offset: u64,
    end: u64,
    sent_time: Instant,
    /// The first packet number allocated after the declaration: an ack whose largest packet
    /// is below it cannot have seen a retransmission.
    next_pn: u64,
    declared: Instant,
}

/// Classification of an in-flight packet against what the acks said.
pub(super) enum Fate {
    Acked,
    Lost,
    /// Missing, but not long enough: lost at this time unless acked first.
    Pending(Instant),
    /// Nothing known yet (above the ranges the ack listed).
    Unknown,
}

impl Sender {
    /// Folds the ack's cumulative offset and ranges into what is known held.
    pub(super) fn absorb_ranges(&mut self, ack: &Ack) {
        let size = self.size;
        let cumulative = ack.cumulative.min(size);
        self.acked.insert(0, cumulative);
        self.lost.remove(0, cumulative);
        for &(s, e) in &ack.ranges {
            let (s, e) = (s.min(size), e.min(size));
            // A receiver never holds more than MAX_HELD_RANGES ranges (UDP-DATA-5); ranges
            // beyond that are ignored, which at worst resends bytes.
            if self.acked.insert_bounded(s, e, MAX_HELD_RANGES).is_some_and(|n| n > 0) {
                self.lost.remove(s, e);
            }
        }
    }

    /// The ack reports a new largest packet number: everything sent up to it has passed, it
    /// gives an RTT and a rate sample, and its bytes are held even if they lie beyond the
    /// listed ranges.
    pub(super) fn on_largest_acked(&mut self, now: Instant, ack: &Ack) {
        let i = match self.sent.binary_search_by_key(&ack.largest_pn, |p| p.pn) {
            Ok(i) => i,
            Err(i) => {
                // Not a packet we track (a driver's datagram, or one forgotten): what was
                // sent before it has passed all the same.
                let through = if i == self.sent.len() {
                    Some(self.sent_total)
                } else {
                    i.checked_sub(1).map(|j| self.sent[j].through)
                };
                if let Some(through) = through {
                    self.passed = self.passed.max(through);
                }
                return;
            }
        };
        let p = self.sent[i];
        self.passed = self.passed.max(p.through);
        let ack_delay = Duration::from_micros(u64::from(ack.ack_delay_us));
        self.rate.on_delivered(now, p.through, &p.rs, ack_delay);
        let rtt = now.saturating_duration_since(p.rs.sent_time);
        // The first flight: what was sent before the first ack came (UDP-CTRL-10).
        let first_flight = *self.first_flight_end.get_or_insert(self.next_pn);
        let adjusted = if p.pn < first_flight {
            self.rtt.update_first_flight(rtt, ack_delay)
        } else {
            self.rtt.update(rtt, ack_delay)
        };
        self.rate.on_rtt(now, adjusted);
        if !p.probe && self.acked.insert(p.offset, p.end()) > 0 {
            self.lost.remove(p.offset, p.end());
        }
    }

    /// Walks the packets up to the largest acknowledged: marks acked and lost ones, sets the
    /// loss timer for the rest.
    pub(super) fn detect(&mut self, now: Instant) {
        self.loss_time = None;
        let Some(largest) = self.largest_acked else { return };
        let delay = self.loss_delay();
        for i in 0..self.sent.len() {
            let p = self.sent[i];
            if p.pn > largest {
                break;
            }
            if p.state != State::InFlight {
                continue;
            }
            match self.fate(now, &p, largest, delay) {
                Fate::Acked => {
                    self.sent[i].state = State::Acked;
                    self.in_flight -= u64::from(p.size);
                    if !p.probe {
                        self.rate.on_resolved(u64::from(p.size), false, &p.rs);
                    }
                }
                Fate::Lost => {
                    self.sent[i].state = State::Lost;
                    self.in_flight -= u64::from(p.size);
                    self.on_lost(now, &p);
                }
                Fate::Pending(at) => self.loss_time = min_opt(self.loss_time, Some(at)),
                Fate::Unknown => {}
            }
        }
        self.pop_decided();
    }

    pub(super) fn fate(&self, now: Instant, p: &SentPacket, largest: u64, delay: Duration) -> Fate {
        if p.probe {
            if self.peer_max_datagram as usize >= p.size as usize {
                return Fate::Acked;
            }
        } else if self.acked.contains(p.offset, p.end()) {
            return Fate::Acked;
        }
        let unlisted = self.unlisted.is_some_and(|(a, b)| p.end() > a && p.offset < b);
        if !p.probe && (p.end() > self.coverage_end || unlisted) {
            return Fate::Unknown;
        }
        let lost_at = p.rs.sent_time + delay;
        if p.pn + self.packet_threshold <= largest || lost_at <= now {
            Fate::Lost
        } else {
            Fate::Pending(lost_at)
        }
    }

    pub(super) fn on_lost(&mut self, now: Instant, p: &SentPacket) {
        if p.probe {
            self.pmtu.on_failed(now, p.pn);
            return;
        }
        self.stats.lost_packets += 1;
        self.rate.on_resolved(u64::from(p.size), true, &p.rs);
        self.mark_unheld_lost(p.offset, p.end());
        self.recent_lost.push_back(LostRecord {
            pn: p.pn,
            offset: p.offset,
            end: p.end(),
            sent_time: p.rs.sent_time,
            next_pn: self.next_pn,
            declared: now,
        });
    }

    /// Queues the bytes of `[start, end)` not known held for retransmission.
    pub(super) fn mark_unheld_lost(&mut self, start: u64, end: u64) {
        let mut from = start;
        while let Some((s, e)) = self.acked.first_gap(from, end) {
            self.lost.insert(s, e);
            from = e;
        }
    }

    /// Notices losses declared for packets that arrived after all (reordering) and widens
    /// the thresholds so that the same reordering is not taken for loss again.
    pub(super) fn check_spurious(&mut self, now: Instant, largest: u64) {
        let srtt = self.rtt.smoothed();
        let keep = (srtt * 4).max(Duration::from_millis(100));
        while self.recent_lost.front().is_some_and(|r| now.saturating_duration_since(r.declared) > keep) {
            self.recent_lost.pop_front();
        }
        let mut i = 0;
        while i < self.recent_lost.len() {
            let r = self.recent_lost[i];
            if !self.acked.contains(r.offset, r.end) {
                i += 1;
                continue;
            }
            self.recent_lost.remove(i);
            if largest >= r.next_pn {
                continue;
            }
            // Held, and nothing sent since the declaration has arrived: the original did.
            self.stats.spurious_losses += 1;
            let distance = largest.saturating_sub(r.pn) + 1;
            self.packet_threshold = self.packet_threshold.max(distance).min(MAX_PACKET_THRESHOLD);
            let late = now.saturating_duration_since(r.sent_time).saturating_sub(srtt);
            self.reorder_slack = self.reorder_slack.max(late).min(srtt / 2);
        }
    }

    /// How long after sending a missing packet is declared lost.
    pub(super) fn loss_delay(&self) -> Duration {
        let rtt = self.rtt.smoothed().max(self.rtt.latest());
        (rtt * 9 / 8).max(rtt + self.reorder_slack).max(GRANULARITY)
    }

    pub(super) fn pto_time(&self) -> Option<Instant> {
        if self.in_flight == 0 {
            return None;
        }
        let base = self.rtt.smoothed() + (self.rtt.var() * 4).max(GRANULARITY) + MAX_ACK_DELAY;
        let backed_off = base.saturating_mul(1 << self.pto_count.min(20));
        Some(self.last_sent? + backed_off.min(base.max(MAX_PTO)))
    }

    /// Forgets decided packets at the front of the record.
    pub(super) fn pop_decided(&mut self) {
        while self.sent.front().is_some_and(|p| p.state != State::InFlight) {
            self.sent.pop_front();
        }
    }
}
