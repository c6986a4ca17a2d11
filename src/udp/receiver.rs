//! Sans-I/O receiver: what is held and when to ack (UDP-ACK-*).

use std::time::{Duration, Instant};

use super::packet::{Ack, MAX_ACK_RANGES};
use super::ranges::RangeSet;

pub struct ReceiverConfig {
    pub size: u64,
    pub held: RangeSet,
    pub ack_interval: Duration,
    pub ack_every: u32,
}

impl ReceiverConfig {
    pub fn new(size: u64, held: RangeSet) -> Self {
        ReceiverConfig { size, held, ack_interval: Duration::from_millis(10), ack_every: 32 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataVerdict {
    New,
    Duplicate,
    OutOfBounds,
}

pub struct Receiver {
    cfg: ReceiverConfig,
    held: RangeSet,
    largest: Option<(u64, Instant)>,
    max_datagram: usize,
    unacked: u32,
    first_unacked: Option<Instant>,
    ack_now: bool,
    next_pn: u64,
}

impl Receiver {
    pub fn new(cfg: ReceiverConfig, _now: Instant) -> Receiver {
        let held = cfg.held.clone();
        Receiver {
            cfg,
            held,
            largest: None,
            max_datagram: 0,
            unacked: 0,
            first_unacked: None,
            ack_now: false,
            next_pn: 0,
        }
    }

    fn note(&mut self, now: Instant, pn: u64, datagram_len: usize) {
        if self.largest.is_none_or(|(l, _)| pn > l) {
            self.largest = Some((pn, now));
        }
        self.max_datagram = self.max_datagram.max(datagram_len);
        self.unacked += 1;
        self.first_unacked.get_or_insert(now);
    }

    pub fn handle_data(&mut self, now: Instant, pn: u64, offset: u64, len: u16, datagram_len: usize) -> DataVerdict {
        let end = offset.saturating_add(u64::from(len));
        if end > self.cfg.size {
            return DataVerdict::OutOfBounds;
        }
        self.note(now, pn, datagram_len);
        let was_complete = self.is_complete();
        if self.held.contains(offset, end) {
            return DataVerdict::Duplicate;
        }
        self.held.insert(offset, end);
        if !was_complete && self.is_complete() {
            self.ack_now = true;
        }
        DataVerdict::New
    }

    pub fn handle_probe(&mut self, now: Instant, pn: u64, datagram_len: usize) {
        self.note(now, pn, datagram_len);
    }

    pub fn poll_ack(&mut self, now: Instant, out: &mut Ack) -> bool {
        let Some(first) = self.first_unacked else { return false };
        let due = self.ack_now || self.unacked >= self.cfg.ack_every || now >= first + self.cfg.ack_interval;
        if !due {
            return false;
        }
        let (largest, at) = self.largest.unwrap_or((0, now));
        out.largest_pn = largest;
        out.ack_delay_us = now.saturating_duration_since(at).as_micros().min(u32::MAX as u128) as u32;
        out.max_datagram = self.max_datagram.min(u16::MAX as usize) as u16;
        out.cumulative = self.held.contiguous_from(0);
        out.ranges.clear();
        out.ranges.extend(self.held.iter_from(out.cumulative + 1).take(MAX_ACK_RANGES));
        self.unacked = 0;
        self.first_unacked = None;
        self.ack_now = false;
        true
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.first_unacked.map(|f| f + self.cfg.ack_interval)
    }

    pub fn is_complete(&self) -> bool {
        self.held.contiguous_from(0) >= self.cfg.size
    }

    pub fn held(&self) -> &RangeSet {
        &self.held
    }

    pub fn next_pn(&mut self) -> u64 {
        self.next_pn += 1;
        self.next_pn - 1
    }
}
