//! The sending side of a UDP flow as a state machine (no I/O; every call takes `now`).
//!
//! Call order, as in quinn-proto: drain [`poll_transmit`](Sender::poll_transmit) into the
//! socket (reading each `Data` chunk from the file); feed every ack to
//! [`handle_ack`](Sender::handle_ack) and every failed send to
//! [`handle_send_error`](Sender::handle_send_error); sleep until
//! [`poll_timeout`](Sender::poll_timeout), call [`handle_timeout`](Sender::handle_timeout),
//! and drain `poll_transmit` again. The flow is over when [`is_done`](Sender::is_done).
//!
//! What it sends: retransmissions first (lowest offset first, each under a new packet
//! number), then new data in offset order, never bytes the receiver is known to hold, and
//! never at or beyond `cumulative + max_span`; paced and capped in flight by
//! [`RateControl`]. Path MTU probes go out about once a second until the ladder is done.
//!
//! Loss detection follows RFC 9002: an unacknowledged packet is lost once a packet sent
//! [`PACKET_THRESHOLD`] packet numbers later has arrived, or 9/8 RTT after it was sent. Both
//! thresholds grow when a loss turns out spurious (reordering). An ack lists at most
//! [`MAX_ACK_RANGES`] ranges, so when it is full, bytes above its last range are unknown, not
//! missing, and so are those between its two halves (a receiver may list the lowest and the
//! highest ranges, see [`AckRanges`](super::receiver::AckRanges)): packets there wait for a
//! later ack. When acks stop, a probe timeout (PTO, backed off up to 1 s)
//! resends the lowest unacknowledged data.

mod loss;
mod pmtu;
mod rtt;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::packet::{Ack, DATA_OVERHEAD, MAX_ACK_RANGES, MAX_DATAGRAM, MIN_DATAGRAM};
use super::ranges::RangeSet;
use super::rate::{Pacer, PathEstimate, RateControl, SendState, StartHint};
use loss::LostRecord;
use pmtu::Pmtu;
use rtt::RttEstimator;

/// Packets that must arrive after an unacknowledged one before it is declared lost.
pub const PACKET_THRESHOLD: u64 = 3;
/// The packet threshold never grows beyond this, however far packets were reordered.
const MAX_PACKET_THRESHOLD: u64 = 10_000;
/// Datagrams of new data a first flight sent before the server answers may carry
/// (UDP-CTRL-10): the window a sender starts with.
pub const FIRST_FLIGHT_DATAGRAMS: u64 = 32;
/// Timer granularity: no loss delay is shorter.
const GRANULARITY: Duration = Duration::from_millis(1);
/// The backed-off probe timeout never exceeds this (unless one RTT is longer), so that a
/// flow resumes within about a second of an outage ending.
const MAX_PTO: Duration = Duration::from_secs(1);
/// Datagrams sent on each probe timeout.
const PTO_PACKETS: u8 = 2;
/// Failed data sends above the minimum size, with no ack progress in between, that fall
/// back to the minimum size.
const MAX_SEND_ERRORS: u32 = 3;

/// Sender settings.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// File size in bytes.
    pub size: u64,
    /// Bytes the receiver already holds (resume); never sent.
    pub held: RangeSet,
    /// Never pace above this many bytes per second.
    pub rate_limit: Option<u64>,
    /// Largest datagram path MTU probing tries (at most [`MAX_DATAGRAM`]).
    pub max_datagram: usize,
    /// Never send data at or beyond the cumulative ack plus this (bounds the driver's
    /// buffers).
    pub max_span: u64,
    /// What is known about the path before the first datagram (`UDP-RATE-7`).
    pub start_hint: StartHint,
}

impl SenderConfig {
    /// Defaults: no rate limit, probing up to 1472 bytes (IPv4 on a 1500-byte MTU), 64 MiB
    /// span.
    pub fn new(size: u64, held: RangeSet) -> Self {
        SenderConfig {
            size,
            held,
            rate_limit: None,
            max_datagram: 1472,
            max_span: 64 << 20,
            start_hint: StartHint::default(),
        }
    }
}

/// A datagram to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// File bytes `[offset, offset + len)`.
    Data { pn: u64, offset: u64, len: u16 },
    /// A path MTU probe: a datagram of exactly `size` bytes.
    Probe { pn: u64, size: usize },
}

/// Counters and estimates, for progress displays and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Data and probe datagrams sent.
    pub sent_packets: u64,
    /// Payload bytes sent, retransmissions included.
    pub sent_bytes: u64,
    /// Payload bytes sent more than once.
    pub retransmitted_bytes: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    pub srtt: Duration,
    pub min_rtt: Duration,
    /// Bottleneck rate estimate, bytes (of datagrams) per second.
    pub bottleneck_rate: u64,
    /// Current pacing rate, bytes per second.
    pub pacing_rate: u64,
    pub datagram_size: usize,
    /// Payload bytes newly known held by the receiver (what it held at the start excluded).
    pub delivered: u64,
    /// Losses declared that turned out spurious (the original arrived).
    pub spurious_losses: u64,
    /// Probe timeouts that fired.
    pub ptos: u64,
    /// The in-flight cap, bytes.
    pub window: u64,
    /// Estimated random (non-congestion) loss rate, in parts per million.
    pub loss_ppm: u64,
    /// Whether the flow started from a remembered rate the path agreed with (UDP-RATE-7).
    pub resumed_start: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Acked,
    Lost,
}

/// A packet sent and not yet forgotten.
#[derive(Debug, Clone, Copy)]
struct SentPacket {
    pn: u64,
    offset: u64,
    len: u16,
    /// Datagram bytes.
    size: u32,
    probe: bool,
    state: State,
    /// Datagram bytes sent up to and including this packet.
    through: u64,
    rs: SendState,
}

impl SentPacket {
    fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// Sender of one flow (see the module docs).
#[derive(Debug)]
pub struct Sender {
    size: u64,
    max_span: u64,
    epoch: Instant,
    /// Bytes known held by the receiver.
    acked: RangeSet,
    initially_held: u64,
    /// Bytes declared lost and not yet resent; never overlaps `acked`.
    lost: RangeSet,
    /// Every byte below this has been sent at least once (or was held).
    next_offset: u64,
    sent: VecDeque<SentPacket>,
    /// Datagram bytes of packets neither acknowledged nor declared lost.
    in_flight: u64,
    /// Datagram bytes sent in all, and of those, up to the largest packet the receiver
    /// reported: the difference is what is in the pipe.
    sent_total: u64,
    passed: u64,
    next_pn: u64,
    /// Packets numbered below this went before the first ack came: the first flight.
    first_flight_end: Option<u64>,
    /// No new data at or past this offset until the server has said what it holds
    /// (UDP-CTRL-10).
    early_limit: Option<u64>,
    /// Largest packet number the receiver reported.
    largest_acked: Option<u64>,
    /// Bytes at or above this were beyond the last ack's ranges (unknown).
    coverage_end: u64,
    /// Bytes in this stretch lay between the two halves of the last (full) ack (unknown).
    unlisted: Option<(u64, u64)>,
    peer_max_datagram: u16,
    rtt: RttEstimator,
    rate: RateControl,
    pacer: Pacer,
    pmtu: Pmtu,
    datagram_size: usize,
    loss_time: Option<Instant>,
    pto_count: u32,
    last_sent: Option<Instant>,
    /// Datagrams still to send for the probe timeout that fired, when, and where the
    /// resent data continues.
    pto_due: u8,
    pto_fired: Option<Instant>,
    pto_cursor: u64,
    packet_threshold: u64,
    reorder_slack: Duration,
    recent_lost: VecDeque<LostRecord>,
    send_errors: u32,
    stats: SenderStats,
}

impl Sender {
    pub fn new(cfg: SenderConfig, now: Instant) -> Sender {
        let mut acked = RangeSet::new();
        for (s, e) in cfg.held.iter() {
            acked.insert(s.min(cfg.size), e.min(cfg.size));
        }
        let pmtu = Pmtu::new(now, cfg.max_datagram);
        let datagram_size = pmtu.current();
        Sender {
            size: cfg.size,
            max_span: cfg.max_span.max(1),
            epoch: now,
            initially_held: acked.covered(),
            acked,
            lost: RangeSet::new(),
            next_offset: 0,
            sent: VecDeque::new(),
            in_flight: 0,
            sent_total: 0,
            passed: 0,
            next_pn: 0,
            first_flight_end: None,
            early_limit: None,
            largest_acked: None,
            coverage_end: u64::MAX,
            unlisted: None,
            peer_max_datagram: 0,
            rtt: RttEstimator::new(),
            rate: RateControl::with_hint(now, datagram_size, cfg.rate_limit, &cfg.start_hint),
            pacer: Pacer::new(),
            pmtu,
            datagram_size,
            loss_time: None,
            pto_count: 0,
            last_sent: None,
            pto_due: 0,
            pto_fired: None,
            pto_cursor: 0,
            packet_threshold: PACKET_THRESHOLD,
            reorder_slack: Duration::ZERO,
            recent_lost: VecDeque::new(),
            send_errors: 0,
            stats: SenderStats::default(),
        }
    }

    /// The next datagram to send now, or `None` when pacing, the window or having nothing
    /// to send says wait ([`poll_timeout`](Self::poll_timeout) says until when).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.is_done() {
            return None;
        }
        if self.pto_due > 0 {
            self.pto_due -= 1;
            if let Some(t) = self.send_pto_probe(now) {
                return Some(t);
            }
            self.pto_due = 0;
        }
        if self.pipe() >= self.rate.window() {
            self.pacer.on_other_wait();
            return None;
        }
        if self.pacer.next_send().is_some_and(|t| t > now) {
            self.pacer.on_wait();
            return None;
        }
        if let Some(t) = self.send_mtu_probe(now) {
            return Some(t);
        }
        if let Some((s, e)) = self.take_retransmission() {
            return Some(self.send_data(now, s, e, true));
        }
        if let Some((s, e)) = self.new_data() {
            self.next_offset = e;
            return Some(self.send_data(now, s, e, false));
        }
        self.rate.on_app_limited(self.pipe());
        self.pacer.on_other_wait();
        None
    }

    /// An ack arrived (already authenticated and decoded).
    pub fn handle_ack(&mut self, now: Instant, ack: &Ack) {
        if ack.largest_pn >= self.next_pn || self.is_done() {
            // Acknowledges a packet never sent: not from our peer's receiver.
            return;
        }
        let before = self.acked.covered();
        self.absorb_ranges(ack);
        self.peer_max_datagram = self.peer_max_datagram.max(ack.max_datagram);
        let newly_largest = self.largest_acked.is_none_or(|l| ack.largest_pn > l);
        if newly_largest {
            self.largest_acked = Some(ack.largest_pn);
            self.on_largest_acked(now, ack);
        }
        let full = ack.ranges.len() >= MAX_ACK_RANGES;
        self.coverage_end = match ack.ranges.last() {
            Some(&(_, end)) if full => end,
            _ => u64::MAX,
        };
        let half = MAX_ACK_RANGES / 2;
        self.unlisted = full.then(|| (ack.ranges[half - 1].1, ack.ranges[half].0));
        if let Some(size) = self.pmtu.on_ack(now, ack.max_datagram, self.rtt.smoothed()) {
            self.set_datagram_size(size);
        }
        self.detect(now);
        self.check_spurious(now, ack.largest_pn);
        if newly_largest || self.acked.covered() > before {
            self.pto_count = 0;
            self.send_errors = 0;
        }
        self.rate.on_ack_end(now, self.pipe());
    }

    /// A round-trip time measured outside the data (the path handshake), used until acks
    /// give samples of their own, so that the first probe timeout fits the path.
    pub fn handle_rtt_sample(&mut self, rtt: std::time::Duration) {
        if !self.rtt.has_sample() {
            self.rtt.update(rtt.max(GRANULARITY), std::time::Duration::ZERO);
        }
    }

    /// Sending packet `pn` failed locally (e.g. `EMSGSIZE` for a probe above the path MTU).
    pub fn handle_send_error(&mut self, pn: u64) {
        let Ok(i) = self.sent.binary_search_by_key(&pn, |p| p.pn) else { return };
        let p = self.sent[i];
        if p.state != State::InFlight {
            return;
        }
        self.sent[i].state = State::Lost;
        self.in_flight -= u64::from(p.size);
        let now = p.rs.sent_time;
        if p.probe {
            self.pmtu.on_failed(now, pn);
        } else {
            // Never left: resend it, without counting a network loss.
            self.mark_unheld_lost(p.offset, p.end());
            if p.size as usize > MIN_DATAGRAM {
                self.send_errors += 1;
                if self.send_errors >= MAX_SEND_ERRORS {
                    self.set_datagram_size(MIN_DATAGRAM);
                }
            }
        }
        self.pop_decided();
    }

    /// Runs what is due at `now`: loss detection by time, or the probe timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_done() {
            return;
        }
        if self.loss_time.is_some_and(|t| t <= now) {
            self.detect(now);
            return;
        }
        if self.pto_time().is_some_and(|t| t <= now) {
            self.pto_count += 1;
            self.stats.ptos += 1;
            self.pto_due = PTO_PACKETS;
            self.pto_fired = Some(now);
            self.pto_cursor = 0;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) (then `poll_transmit`) is next due;
    /// `None` when only an ack can move things on (or the flow is done).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_done() {
            return None;
        }
        if self.pto_due > 0 {
            return self.pto_fired;
        }
        let mut next = min_opt(self.loss_time, self.pto_time());
        if self.pipe() < self.rate.window() {
            let pace = self.pacer.next_send().unwrap_or(self.epoch);
            if !self.lost.is_empty() || self.new_data_available() {
                next = min_opt(next, Some(pace));
            } else if let Some(t) = self.pmtu.next_at().filter(|_| self.rtt.has_sample()) {
                next = min_opt(next, Some(t.max(pace)));
            }
        }
        next
    }

    /// Sends no more new data than a first flight of [`FIRST_FLIGHT_DATAGRAMS`] until
    /// [`absorb_held`](Self::absorb_held): the flight goes before the server has said what it
    /// holds (UDP-CTRL-10).
    pub fn limit_to_first_flight(&mut self) {
        self.early_limit = Some(FIRST_FLIGHT_DATAGRAMS * self.payload());
    }

    /// The server said it holds `held` of the file: a first flight went out before it did
    /// (UDP-CTRL-10). Those bytes count as held from the start, and the first flight's limit
    /// is lifted.
    pub fn absorb_held(&mut self, held: &RangeSet) {
        self.early_limit = None;
        for (s, e) in held.iter() {
            let (s, e) = (s.min(self.size), e.min(self.size));
            self.initially_held += self.acked.insert(s, e);
            self.lost.remove(s, e);
        }
    }

    /// Every byte of the file is known held by the receiver.
    pub fn is_done(&self) -> bool {
        self.acked.contains(0, self.size)
    }

    /// Every byte has been sent at least once, or is held.
    pub fn all_sent(&self) -> bool {
        self.acked.first_gap(self.next_offset, self.size).is_none()
    }

    /// Bytes known held by the receiver.
    pub fn acked(&self) -> u64 {
        self.acked.covered()
    }

    /// The lowest offset not known held: the driver may free buffers below it.
    pub fn cumulative(&self) -> u64 {
        self.acked.contiguous_from(0)
    }

    /// The receiver accepts datagrams of at most `max` bytes (`UDP-PMTU-2`).
    pub fn limit_datagram(&mut self, max: usize) {
        self.pmtu.limit(max);
        if self.pmtu.current() != self.datagram_size {
            self.set_datagram_size(self.pmtu.current());
        }
    }

    /// Current datagram size (path MTU discovery).
    pub fn datagram_size(&self) -> usize {
        self.datagram_size
    }

    pub fn stats(&self) -> SenderStats {
        SenderStats {
            srtt: self.rtt.smoothed(),
            min_rtt: self.rate.min_rtt().unwrap_or(self.rtt.min()),
            bottleneck_rate: self.rate.bottleneck_rate(),
            pacing_rate: self.rate.pacing_rate(),
            datagram_size: self.datagram_size,
            delivered: self.acked.covered() - self.initially_held,
            window: self.rate.window(),
            loss_ppm: (self.rate.loss_rate().unwrap_or(0.0) * 1e6) as u64,
            resumed_start: self.rate.jumped(),
            ..self.stats
        }
    }

    /// A packet number for a non-data datagram the driver sends (Hello, ...), from the same
    /// counter as data.
    pub fn next_pn(&mut self) -> u64 {
        let pn = self.next_pn;
        self.next_pn += 1;
        pn
    }

    /// Datagram bytes of packets neither acknowledged nor declared lost.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Datagram bytes sent after the largest packet the receiver reported: what the window
    /// caps.
    pub fn pipe(&self) -> u64 {
        self.sent_total - self.passed
    }

    /// What to remember about the path for the next flow to the same peer (`UDP-RATE-7`).
    pub fn path_estimate(&self) -> Option<PathEstimate> {
        self.rate.path_estimate()
    }

    /// The rate controller, for inspection.
    pub fn rate_control(&self) -> &RateControl {
        &self.rate
    }

    fn payload(&self) -> u64 {
        (self.datagram_size - DATA_OVERHEAD).min(usize::from(u16::MAX)) as u64
    }

    fn set_datagram_size(&mut self, size: usize) {
        self.datagram_size = size.clamp(MIN_DATAGRAM, MAX_DATAGRAM);
        self.rate.set_datagram(self.datagram_size);
    }

    /// The lowest declared-lost chunk, taken out of the lost set.
    fn take_retransmission(&mut self) -> Option<(u64, u64)> {
        let (s, e) = self.lost.first()?;
        let e = e.min(s + self.payload());
        self.lost.remove(s, e);
        Some((s, e))
    }

    /// The next chunk never sent, within the span.
    fn new_data(&mut self) -> Option<(u64, u64)> {
        self.next_offset = self.acked.contiguous_from(self.next_offset);
        let limit = self.new_data_limit();
        let (s, e) = self.acked.first_gap(self.next_offset, limit)?;
        Some((s, e.min(s + self.payload())))
    }

    fn new_data_available(&self) -> bool {
        let from = self.acked.contiguous_from(self.next_offset);
        from < self.new_data_limit()
    }

    /// New data goes below this offset: within the file, the span and a first flight's limit.
    fn new_data_limit(&self) -> u64 {
        let span = self.size.min(self.cumulative().saturating_add(self.max_span));
        span.min(self.early_limit.unwrap_or(u64::MAX))
    }

    fn send_data(&mut self, now: Instant, offset: u64, end: u64, retransmit: bool) -> Transmit {
        let len = (end - offset) as u16;
        let pn = self.track(now, offset, len, len as usize + DATA_OVERHEAD, false);
        self.stats.sent_bytes += u64::from(len);
        if retransmit {
            self.stats.retransmitted_bytes += u64::from(len);
        }
        Transmit::Data { pn, offset, len }
    }

    fn send_mtu_probe(&mut self, now: Instant) -> Option<Transmit> {
        if !self.rtt.has_sample() {
            return None;
        }
        let size = self.pmtu.due(now)?;
        let pn = self.track(now, 0, 0, size, true);
        self.pmtu.on_sent(pn, size);
        Some(Transmit::Probe { pn, size })
    }

    /// On a probe timeout: resend the lowest unacknowledged data (declared lost or not),
    /// else new data; ignores pacing and the window.
    fn send_pto_probe(&mut self, now: Instant) -> Option<Transmit> {
        if let Some((s, e)) = self.take_retransmission() {
            return Some(self.send_data(now, s, e, true));
        }
        let from = self.pto_cursor.max(self.cumulative());
        if let Some((s, e)) = self.acked.first_gap(from, self.next_offset) {
            let e = e.min(s + self.payload());
            self.pto_cursor = e;
            return Some(self.send_data(now, s, e, true));
        }
        let (s, e) = self.new_data()?;
        self.next_offset = e;
        Some(self.send_data(now, s, e, false))
    }

    /// Records a packet as sent and in flight; returns its packet number.
    fn track(&mut self, now: Instant, offset: u64, len: u16, size: usize, probe: bool) -> u64 {
        let pn = self.next_pn();
        let rs = self.rate.on_send(now, self.pipe(), size as u64);
        self.sent_total += size as u64;
        let through = self.sent_total;
        self.sent.push_back(SentPacket {
            pn,
            offset,
            len,
            size: size as u32,
            probe,
            state: State::InFlight,
            through,
            rs,
        });
        self.in_flight += size as u64;
        self.pacer.on_send(now, size, self.rate.pacing_rate(), self.datagram_size);
        self.last_sent = Some(now);
        self.stats.sent_packets += 1;
        pn
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
