//! Datagrams that arrive before their flow (UDP-CTRL-9, UDP-CTRL-10). A client that chose its
//! flow id sends the first `Hello`, and then its first flight of `Data`, beside the
//! request that opens the flow, so these datagrams usually reach the server before the request
//! has been served. The demultiplexer keeps them, unopened, for a short while; when the flow
//! is registered its datagrams are handed to it with the time they arrived, and it opens and
//! checks them as any other datagram. Nothing is answered from here, so a held datagram cannot
//! be turned against anyone before a flow with its keys exists.
//!
//! Bounded: at most [`MAX_EARLY_DATAGRAMS`] datagrams in all and [`MAX_EARLY_PER_FLOW`] per
//! flow id, each of at most [`MAX_EARLY_LEN`] bytes and kept for [`EARLY_TTL`], the oldest
//! dropped first. A flood of forged datagrams only pushes real ones out, and a client whose
//! datagrams were pushed out repeats them as it would after a loss (UDP-VALID-2, UDP-LOSS-*).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::udp::packet::{PacketKind, HEADER_LEN, MIN_DATAGRAM, TAG_LEN};

/// Most datagrams held at once.
pub const MAX_EARLY_DATAGRAMS: usize = 1024;
/// Most datagrams held for one flow id: a `Hello`, its repetitions and a first flight of 32.
pub const MAX_EARLY_PER_FLOW: usize = 48;
/// Longer datagrams are not held (a client's `Hello` is [`MIN_DATAGRAM`] bytes, and its first
/// flight goes in datagrams of the path's starting size, UDP-PMTU-1).
pub const MAX_EARLY_LEN: usize = 1500;
/// How long a datagram is held.
pub const EARLY_TTL: Duration = Duration::from_secs(3);

/// One held datagram.
#[derive(Debug)]
pub struct EarlyDatagram {
    pub flow: u64,
    pub from: SocketAddr,
    /// When it arrived.
    pub at: Instant,
    pub datagram: Vec<u8>,
}

/// The held datagrams, oldest first, and how many each flow id has.
#[derive(Debug, Default)]
pub struct EarlyDatagrams {
    held: VecDeque<EarlyDatagram>,
    per_flow: HashMap<u64, usize>,
}

impl EarlyDatagrams {
    /// Holds a datagram of `kind` for a flow that is not registered yet: a `Hello` (padded,
    /// UDP-PKT-4) or `Data`; anything else is dropped.
    pub fn hold(&mut self, now: Instant, flow: u64, kind: PacketKind, from: SocketAddr, datagram: &[u8]) {
        let min = match kind {
            PacketKind::Hello => MIN_DATAGRAM,
            PacketKind::Data => HEADER_LEN + TAG_LEN,
            _ => return,
        };
        if datagram.len() > MAX_EARLY_LEN || datagram.len() < min {
            return;
        }
        self.expire(now);
        if self.per_flow.get(&flow).is_some_and(|n| *n >= MAX_EARLY_PER_FLOW) {
            return;
        }
        if self.held.len() == MAX_EARLY_DATAGRAMS {
            self.pop_oldest();
        }
        *self.per_flow.entry(flow).or_default() += 1;
        self.held.push_back(EarlyDatagram { flow, from, at: now, datagram: datagram.to_vec() });
    }

    /// Takes every datagram held for `flow`, oldest first.
    pub fn take(&mut self, now: Instant, flow: u64) -> Vec<EarlyDatagram> {
        self.expire(now);
        if self.per_flow.remove(&flow).is_none() {
            return Vec::new();
        }
        let (mine, rest): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|h| h.flow == flow);
        self.held = rest.into();
        mine
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while self.held.front().is_some_and(|h| now.saturating_duration_since(h.at) > EARLY_TTL) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some(old) = self.held.pop_front() else { return };
        if let Some(n) = self.per_flow.get_mut(&old.flow) {
            *n -= 1;
            if *n == 0 {
                self.per_flow.remove(&old.flow);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        ([127, 0, 0, 1], port).into()
    }

    #[test]
    fn held_datagrams_are_handed_to_their_flow_once_in_order() {
        let t0 = Instant::now();
        let mut h = EarlyDatagrams::default();
        h.hold(t0, 7, PacketKind::Hello, addr(1), &[1; 1200]);
        h.hold(t0, 8, PacketKind::Hello, addr(2), &[2; 1200]);
        h.hold(t0, 7, PacketKind::Data, addr(3), &[3; 1472]);
        let got = h.take(t0, 7);
        assert_eq!(got.iter().map(|e| e.from).collect::<Vec<_>>(), vec![addr(1), addr(3)]);
        assert!(h.take(t0, 7).is_empty());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn held_datagrams_are_bounded_in_count_kind_size_and_time() {
        let t0 = Instant::now();
        let mut h = EarlyDatagrams::default();
        h.hold(t0, 1, PacketKind::Hello, addr(1), &[0; 1200]);
        // A flood pushes the oldest out and never grows the hold past its bound.
        for i in 0..10 * MAX_EARLY_DATAGRAMS as u64 {
            h.hold(t0, 1000 + i, PacketKind::Data, addr(2), &[0; 1472]);
        }
        assert_eq!(h.len(), MAX_EARLY_DATAGRAMS);
        assert_eq!(h.per_flow.len(), MAX_EARLY_DATAGRAMS, "the count per flow follows the evictions");
        assert!(h.take(t0, 1).is_empty());
        // One flow id cannot take the whole hold.
        for _ in 0..10 * MAX_EARLY_PER_FLOW {
            h.hold(t0, 5, PacketKind::Data, addr(1), &[0; 1472]);
        }
        assert_eq!(h.take(t0, 5).len(), MAX_EARLY_PER_FLOW);
        // Oversized datagrams, short `Hello`s and other kinds are not held.
        h.hold(t0, 2, PacketKind::Data, addr(1), &[0; MAX_EARLY_LEN + 1]);
        h.hold(t0, 2, PacketKind::Hello, addr(1), &[0; 1199]);
        h.hold(t0, 2, PacketKind::Ack, addr(1), &[0; 1200]);
        h.hold(t0, 2, PacketKind::PathResponse, addr(1), &[0; 1200]);
        assert!(h.take(t0, 2).is_empty());
        // Old ones expire.
        let mut h = EarlyDatagrams::default();
        h.hold(t0, 3, PacketKind::Hello, addr(1), &[0; 1200]);
        assert!(h.take(t0 + EARLY_TTL + Duration::from_millis(1), 3).is_empty());
        assert!(h.is_empty() && h.per_flow.is_empty());
    }
}
