//! Address validation per address and the amplification limit of a flow's server side
//! (UDP-VALID-3, -5, -7, UDP-AMP-1, -2), with no I/O, in the manner of RFC 9000 sections 8.2
//! and 9.
//!
//! A flow's datagrams prove, by their AEAD tag, that they come from the holder of the TLS
//! session. They do not prove that the source address is the holder's: the holder (or anyone
//! replaying its datagrams) can put any source address on them. So every address gets its own
//! challenge, sent only to that address; only a `PathResponse` from that address carrying
//! that address's challenge validates it; data goes only to the validated address; and until
//! an address is validated, what is sent to it never exceeds three times what came from it.

use std::net::SocketAddr;

/// Amplification factor before validation (UDP-AMP-1).
pub const AMPLIFICATION_FACTOR: u64 = 3;

/// Addresses being validated at once; a new one evicts the least recently heard
/// (UDP-VALID-7).
pub const MAX_CANDIDATES: usize = 4;

/// One address that is not (or not yet) the flow's validated address.
#[derive(Debug, Clone)]
struct Candidate {
    addr: SocketAddr,
    /// The challenge sent to this address and no other.
    challenge: [u8; 8],
    /// Bytes of authentic datagrams received from it, and bytes sent to it.
    received: u64,
    sent: u64,
    /// Order of the last datagram from it, for eviction.
    heard: u64,
}

/// Validation state of one flow, server side.
#[derive(Debug, Clone, Default)]
pub struct PathValidator {
    validated: Option<SocketAddr>,
    candidates: Vec<Candidate>,
    clock: u64,
}

impl PathValidator {
    pub fn new() -> PathValidator {
        PathValidator::default()
    }

    /// The validated peer address, if any: the only one data goes to (UDP-VALID-5).
    pub fn validated(&self) -> Option<SocketAddr> {
        self.validated
    }

    /// True while some address waits for validation.
    pub fn validating(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// An authentic datagram of `len` bytes arrived from `from`, which is not the validated
    /// address. Counts it toward `from`'s budget (UDP-AMP-1); `fresh` draws the challenge of
    /// an address seen for the first time. Returns true if the address is new.
    pub fn handle_unvalidated(&mut self, from: SocketAddr, len: usize, fresh: impl FnOnce() -> [u8; 8]) -> bool {
        self.clock += 1;
        let clock = self.clock;
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == from) {
            c.received = c.received.saturating_add(len as u64);
            c.heard = clock;
            return false;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            let oldest = self.candidates.iter().enumerate().min_by_key(|(_, c)| c.heard).map(|(i, _)| i);
            if let Some(i) = oldest {
                self.candidates.swap_remove(i);
            }
        }
        self.candidates.push(Candidate { addr: from, challenge: fresh(), received: len as u64, sent: 0, heard: clock });
        true
    }

    /// The challenge for `to`, if `to` is being validated and a `len`-byte datagram to it stays
    /// within its amplification budget; the bytes are charged to the budget.
    pub fn take_challenge(&mut self, to: SocketAddr, len: usize) -> Option<[u8; 8]> {
        self.charge(to, len)?;
        self.candidates.iter().find(|c| c.addr == to).map(|c| c.challenge)
    }

    /// Charges a `len`-byte datagram to `to`'s budget if `to` is being validated and the
    /// datagram stays within it (UDP-AMP-1); `None` (and nothing charged) otherwise.
    pub fn charge(&mut self, to: SocketAddr, len: usize) -> Option<()> {
        let c = self.candidates.iter_mut().find(|c| c.addr == to)?;
        if c.sent + len as u64 > AMPLIFICATION_FACTOR * c.received {
            return None;
        }
        c.sent += len as u64;
        Some(())
    }

    /// True if some address being validated can still afford a `len`-byte challenge.
    pub fn can_challenge(&self, len: usize) -> bool {
        self.candidates.iter().any(|c| c.sent + len as u64 <= AMPLIFICATION_FACTOR * c.received)
    }

    /// Addresses being validated, for challenge retries (UDP-VALID-3).
    pub fn candidates(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.candidates.iter().map(|c| c.addr)
    }

    /// Bytes sent to and received from `addr` while it was a candidate.
    pub fn budget(&self, addr: SocketAddr) -> Option<(u64, u64)> {
        self.candidates.iter().find(|c| c.addr == addr).map(|c| (c.sent, c.received))
    }

    /// A `PathResponse` echoing `echo` arrived from `from`. Validates `from` if `echo` is the
    /// challenge sent to `from` (UDP-VALID-5); a validated address replaces the previous one
    /// (UDP-VALID-7). Returns true if it validated `from`.
    pub fn handle_response(&mut self, from: SocketAddr, echo: [u8; 8]) -> bool {
        let Some(i) = self.candidates.iter().position(|c| c.addr == from) else { return false };
        if self.candidates[i].challenge != echo {
            return false;
        }
        self.candidates.swap_remove(i);
        self.validated = Some(from);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn never_sends_more_than_three_times_what_it_received() {
        let mut p = PathValidator::new();
        let mut sent = 0;
        for _ in 0..10 {
            p.handle_unvalidated(addr(1), 100, || [7; 8]);
            while p.take_challenge(addr(1), 250).is_some() {
                sent += 250;
            }
        }
        assert!(sent <= 3 * 1000, "sent {sent}");
        assert!(sent >= 2500);
    }

    #[test]
    fn rejects_a_challenge_echoed_from_another_address() {
        let mut p = PathValidator::new();
        let mut n = 0u8;
        let mut fresh = || {
            n += 1;
            [n; 8]
        };
        p.handle_unvalidated(addr(1), 1200, &mut fresh);
        p.handle_unvalidated(addr(2), 1200, &mut fresh);
        let one = p.take_challenge(addr(1), 42).unwrap();
        let two = p.take_challenge(addr(2), 42).unwrap();
        assert_ne!(one, two, "each address has its own challenge");
        assert!(!p.handle_response(addr(2), one), "UDP-VALID-5: bound to the address it went to");
        assert!(!p.handle_response(addr(3), one), "unknown address");
        assert!(p.validated().is_none());
        assert!(p.handle_response(addr(1), one));
        assert_eq!(p.validated(), Some(addr(1)));
        // A rebinding validates the new address, which then replaces the old (UDP-VALID-7).
        assert!(p.handle_response(addr(2), two));
        assert_eq!(p.validated(), Some(addr(2)));
    }

    #[test]
    fn rejects_challenges_to_an_address_never_heard_from() {
        let mut p = PathValidator::new();
        assert_eq!(p.take_challenge(addr(1), 42), None);
    }

    #[test]
    fn bounds_the_addresses_it_validates_at_once() {
        let mut p = PathValidator::new();
        for port in 0..100 {
            p.handle_unvalidated(addr(port), 1200, || [0; 8]);
        }
        assert_eq!(p.candidates().count(), MAX_CANDIDATES);
        assert!(p.candidates().all(|a| a.port() >= 96), "the most recently heard stay");
    }
}
