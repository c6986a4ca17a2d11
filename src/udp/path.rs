//! Address validation and the amplification limit of a flow's server side (UDP-VALID-*,
//! UDP-AMP-1), with no I/O.
//!
//! A flow's datagrams already prove, by their AEAD tag, that they come from the holder of the
//! TLS session. They do not prove that the source address is the holder's: a spoofed copy of a
//! captured `Hello` could point the server at a victim. So the server answers an unvalidated
//! address only with a `PathChallenge`, sends it at most three times the bytes received from
//! there, and sends data only to the address that echoed the challenge.

use std::net::SocketAddr;

/// Validation state of one flow, server side.
#[derive(Debug, Clone)]
pub struct PathValidation {
    challenge: [u8; 8],
    validated: Option<SocketAddr>,
    /// Address the latest challenge went to, with the bytes received from and sent to it.
    candidate: Option<(SocketAddr, u64, u64)>,
}

/// Amplification factor before validation (UDP-AMP-1).
pub const AMPLIFICATION_FACTOR: u64 = 3;

impl PathValidation {
    /// `challenge` must be unpredictable (the caller draws it from a CSPRNG).
    pub fn new(challenge: [u8; 8]) -> PathValidation {
        PathValidation { challenge, validated: None, candidate: None }
    }

    /// The challenge the peer must echo.
    pub fn challenge(&self) -> [u8; 8] {
        self.challenge
    }

    /// The validated peer address, if any.
    pub fn validated(&self) -> Option<SocketAddr> {
        self.validated
    }

    /// An authenticated datagram of `len` bytes arrived from `from`. Returns the challenge to
    /// send back if `from` is not validated and the amplification budget allows a
    /// `challenge_len`-byte reply.
    pub fn handle_datagram(&mut self, from: SocketAddr, len: usize, challenge_len: usize) -> Option<[u8; 8]> {
        if self.validated == Some(from) {
            return None;
        }
        let cand = match &mut self.candidate {
            Some(c) if c.0 == from => c,
            slot => slot.insert((from, 0, 0)),
        };
        cand.1 += len as u64;
        if cand.2 + challenge_len as u64 > AMPLIFICATION_FACTOR * cand.1 {
            return None;
        }
        cand.2 += challenge_len as u64;
        Some(self.challenge)
    }

    /// Time to repeat the challenge (UDP-VALID-3): returns the address to send it to if the
    /// flow is not validated and the amplification budget allows a `challenge_len`-byte
    /// datagram.
    pub fn retry(&mut self, challenge_len: usize) -> Option<SocketAddr> {
        if self.validated.is_some() {
            return None;
        }
        let cand = self.candidate.as_mut()?;
        if cand.2 + challenge_len as u64 > AMPLIFICATION_FACTOR * cand.1 {
            return None;
        }
        cand.2 += challenge_len as u64;
        Some(cand.0)
    }

    /// A `PathResponse` echoing `echo` arrived from `from`; true if it validated `from`.
    pub fn handle_response(&mut self, from: SocketAddr, echo: [u8; 8]) -> bool {
        if echo != self.challenge {
            return false;
        }
        if self.validated.is_none() {
            self.validated = Some(from);
        }
        self.validated == Some(from)
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
        let mut p = PathValidation::new([7; 8]);
        let mut sent = 0;
        for _ in 0..10 {
            if p.handle_datagram(addr(1), 100, 250).is_some() {
                sent += 250;
            }
        }
        assert!(sent <= 3 * 1000, "sent {sent}");
        assert!(sent >= 2000);
    }

    #[test]
    fn repeats_the_challenge_only_within_the_budget() {
        let mut p = PathValidation::new([7; 8]);
        assert_eq!(p.retry(60), None, "nothing to repeat before a Hello");
        assert!(p.handle_datagram(addr(1), 100, 60).is_some());
        for _ in 0..4 {
            assert_eq!(p.retry(60), Some(addr(1)));
        }
        assert_eq!(p.retry(60), None, "6 x 60 > 3 x 100");
        assert!(p.handle_response(addr(1), [7; 8]));
        assert_eq!(p.retry(60), None);
    }

    #[test]
    fn validates_only_the_echoing_address_with_the_right_bytes() {
        let mut p = PathValidation::new([7; 8]);
        assert_eq!(p.handle_datagram(addr(1), 1200, 60), Some([7; 8]));
        assert!(!p.handle_response(addr(1), [8; 8]));
        assert!(p.validated().is_none());
        assert!(p.handle_response(addr(1), [7; 8]));
        assert_eq!(p.validated(), Some(addr(1)));
        assert!(!p.handle_response(addr(2), [7; 8]), "first validated address stays");
        assert_eq!(p.handle_datagram(addr(1), 1200, 60), None);
    }
}
