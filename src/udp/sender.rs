//! Sans-I/O sender (interim: fixed window, timeout-driven retransmission).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::packet::{Ack, DATA_OVERHEAD, MIN_DATAGRAM};
use super::ranges::RangeSet;

pub struct SenderConfig {
    pub size: u64,
    pub held: RangeSet,
    pub rate_limit: Option<u64>,
    pub max_datagram: usize,
    pub max_span: u64,
}

impl SenderConfig {
    pub fn new(size: u64, held: RangeSet) -> Self {
        SenderConfig { size, held, rate_limit: None, max_datagram: 1472, max_span: 64 << 20 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    Data { pn: u64, offset: u64, len: u16 },
    Probe { pn: u64, size: usize },
}

#[derive(Debug, Clone, Default)]
pub struct SenderStats {
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub retransmitted_bytes: u64,
    pub lost_packets: u64,
    pub srtt: Duration,
    pub min_rtt: Duration,
    pub bottleneck_rate: u64,
    pub pacing_rate: u64,
    pub datagram_size: usize,
    pub delivered: u64,
}

struct InFlight {
    pn: u64,
    offset: u64,
    len: u64,
    sent: Instant,
}

pub struct Sender {
    cfg: SenderConfig,
    acked: RangeSet,
    next_new: u64,
    retransmit: RangeSet,
    in_flight: VecDeque<InFlight>,
    next_pn: u64,
    stats: SenderStats,
    rto: Duration,
}

const WINDOW: u64 = 8 << 20;

impl Sender {
    pub fn new(cfg: SenderConfig, _now: Instant) -> Sender {
        let acked = cfg.held.clone();
        Sender {
            acked,
            next_new: 0,
            retransmit: RangeSet::new(),
            in_flight: VecDeque::new(),
            next_pn: 0,
            stats: SenderStats { datagram_size: MIN_DATAGRAM, ..Default::default() },
            rto: Duration::from_millis(200),
            cfg,
        }
    }

    fn bytes_in_flight(&self) -> u64 {
        self.in_flight.iter().map(|p| p.len).sum()
    }

    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.bytes_in_flight() >= WINDOW {
            return None;
        }
        let max = (self.stats.datagram_size - DATA_OVERHEAD) as u64;
        let (offset, len, retx) = if let Some((s, e)) = self.retransmit.iter().next() {
            (s, (e - s).min(max), true)
        } else {
            let mut pos = self.next_new;
            while pos < self.cfg.size && self.acked.contiguous_from(pos) > pos {
                pos = self.acked.contiguous_from(pos);
            }
            if pos >= self.cfg.size || pos >= self.cumulative() + self.cfg.max_span {
                return None;
            }
            let stop = self.acked.iter_from(pos).next().map_or(self.cfg.size, |(s, _)| s).min(self.cfg.size);
            (pos, (stop - pos).min(max), false)
        };
        if retx {
            let mut rest = std::mem::take(&mut self.retransmit);
            let mut fresh = RangeSet::new();
            for (s, e) in rest.iter() {
                let s = s.max(offset + len);
                fresh.insert(s, e);
            }
            rest = fresh;
            self.retransmit = rest;
            self.stats.retransmitted_bytes += len;
        } else {
            self.next_new = offset + len;
        }
        let pn = self.next_pn();
        self.in_flight.push_back(InFlight { pn, offset, len, sent: now });
        self.stats.sent_packets += 1;
        self.stats.sent_bytes += len;
        Some(Transmit::Data { pn, offset, len: len as u16 })
    }

    pub fn handle_ack(&mut self, now: Instant, ack: &Ack) {
        self.acked.insert(0, ack.cumulative);
        for &(s, e) in &ack.ranges {
            self.acked.insert(s, e);
        }
        let largest = ack.largest_pn;
        let pending = std::mem::take(&mut self.retransmit);
        for (s, e) in pending.iter() {
            self.queue_retransmit(s, e);
        }
        let mut lost = Vec::new();
        self.in_flight.retain(|p| {
            if self.acked.contains(p.offset, p.offset + p.len) {
                if p.pn == largest {
                    let rtt = now.saturating_duration_since(p.sent);
                    self.rto = (rtt * 2).max(Duration::from_millis(20));
                }
                return false;
            }
            if p.pn + 3 < largest {
                lost.push((p.offset, p.offset + p.len));
                return false;
            }
            true
        });
        for (s, e) in lost {
            self.stats.lost_packets += 1;
            self.queue_retransmit(s, e);
        }
    }

    fn queue_retransmit(&mut self, s: u64, e: u64) {
        let mut pos = s;
        while pos < e {
            let held_end = self.acked.contiguous_from(pos);
            if held_end > pos {
                pos = held_end;
                continue;
            }
            let next_held = self.acked.iter_from(pos).next().map_or(e, |(hs, _)| hs).min(e);
            self.retransmit.insert(pos, next_held);
            pos = next_held;
        }
    }

    pub fn handle_send_error(&mut self, _pn: u64) {}

    pub fn handle_timeout(&mut self, now: Instant) {
        let rto = self.rto;
        let mut lost = Vec::new();
        self.in_flight.retain(|p| {
            if now >= p.sent + rto {
                lost.push((p.offset, p.offset + p.len));
                false
            } else {
                true
            }
        });
        for (s, e) in lost {
            self.stats.lost_packets += 1;
            self.queue_retransmit(s, e);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.front().map(|p| p.sent + self.rto)
    }

    pub fn is_done(&self) -> bool {
        self.acked.contiguous_from(0) >= self.cfg.size
    }

    pub fn acked(&self) -> u64 {
        self.acked.covered()
    }

    pub fn cumulative(&self) -> u64 {
        self.acked.contiguous_from(0)
    }

    pub fn datagram_size(&self) -> usize {
        self.stats.datagram_size
    }

    pub fn stats(&self) -> SenderStats {
        self.stats.clone()
    }

    pub fn next_pn(&mut self) -> u64 {
        self.next_pn += 1;
        self.next_pn - 1
    }
}
