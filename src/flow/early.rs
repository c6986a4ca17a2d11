//! `Hello`s that arrive before their flow (UDP-CTRL-9). A client that chose its flow id sends
//! the first `Hello` beside the request that opens the flow, so the datagram usually reaches
//! the server before the request has been served. The demultiplexer keeps such datagrams,
//! unopened, for a short while; when the flow is registered its `Hello`s are handed to it,
//! and it opens and checks them as any other datagram. Nothing is answered from here, so a
//! held datagram cannot be turned against anyone before a flow with its keys exists.
//!
//! Bounded: at most [`MAX_EARLY_HELLOS`] datagrams of at most [`MAX_EARLY_HELLO_LEN`] bytes,
//! each kept for [`EARLY_HELLO_TTL`], the oldest dropped first. A flood of forged `Hello`s
//! only pushes real ones out, and a client whose `Hello` was pushed out repeats it as it
//! would after a loss (UDP-VALID-2).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most datagrams held at once.
pub const MAX_EARLY_HELLOS: usize = 256;
/// Longer datagrams are not held (a client's `Hello` is [`crate::udp::packet::MIN_DATAGRAM`]).
pub const MAX_EARLY_HELLO_LEN: usize = 1500;
/// How long a datagram is held.
pub const EARLY_HELLO_TTL: Duration = Duration::from_secs(3);

/// One held datagram.
#[derive(Debug)]
pub struct EarlyHello {
    pub flow: u64,
    pub from: SocketAddr,
    pub at: Instant,
    pub datagram: Vec<u8>,
}

/// The held datagrams, oldest first.
#[derive(Debug, Default)]
pub struct EarlyHellos {
    held: VecDeque<EarlyHello>,
}

impl EarlyHellos {
    /// Holds a `Hello` datagram for a flow that is not registered yet.
    pub fn hold(&mut self, now: Instant, flow: u64, from: SocketAddr, datagram: &[u8]) {
        if datagram.len() > MAX_EARLY_HELLO_LEN || datagram.len() < crate::udp::packet::MIN_DATAGRAM {
            return;
        }
        self.expire(now);
        if self.held.len() == MAX_EARLY_HELLOS {
            self.held.pop_front();
        }
        self.held.push_back(EarlyHello { flow, from, at: now, datagram: datagram.to_vec() });
    }

    /// Takes every datagram held for `flow`, oldest first.
    pub fn take(&mut self, now: Instant, flow: u64) -> Vec<EarlyHello> {
        self.expire(now);
        if !self.held.iter().any(|h| h.flow == flow) {
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
        while self.held.front().is_some_and(|h| now.saturating_duration_since(h.at) > EARLY_HELLO_TTL) {
            self.held.pop_front();
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
    fn a_held_hello_is_handed_to_its_flow_once() {
        let t0 = Instant::now();
        let mut h = EarlyHellos::default();
        h.hold(t0, 7, addr(1), &[1; 1200]);
        h.hold(t0, 8, addr(2), &[2; 1200]);
        h.hold(t0, 7, addr(3), &[3; 1200]);
        let got = h.take(t0, 7);
        assert_eq!(got.iter().map(|e| e.from).collect::<Vec<_>>(), vec![addr(1), addr(3)]);
        assert!(h.take(t0, 7).is_empty());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn held_hellos_are_bounded_in_count_size_and_time() {
        let t0 = Instant::now();
        let mut h = EarlyHellos::default();
        h.hold(t0, 1, addr(1), &[0; 1200]);
        // A flood pushes the oldest out and never grows the hold past its bound.
        for i in 0..10 * MAX_EARLY_HELLOS as u64 {
            h.hold(t0, 1000 + i, addr(2), &[0; 1200]);
        }
        assert_eq!(h.len(), MAX_EARLY_HELLOS);
        assert!(h.take(t0, 1).is_empty());
        // Oversized and undersized datagrams are not held.
        h.hold(t0, 2, addr(1), &[0; MAX_EARLY_HELLO_LEN + 1]);
        h.hold(t0, 2, addr(1), &[0; 1199]);
        assert!(h.take(t0, 2).is_empty());
        // Old ones expire.
        h.hold(t0, 3, addr(1), &[0; 1200]);
        assert!(h.take(t0 + EARLY_HELLO_TTL + Duration::from_millis(1), 3).is_empty());
        assert!(h.is_empty());
    }
}
