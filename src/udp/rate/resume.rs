//! Starting from what is already known about the path (`UDP-RATE-7`), validated as QUIC's
//! careful resume does (draft-ietf-tsvwg-careful-resume): a remembered bottleneck rate is used
//! only once an RTT measured now (the control connection's, or the flow's first sample) agrees
//! with the RTT it was measured at; then the sender jumps to half of it for one round trip,
//! and keeps what the path confirms. A jump round that shows congestion (a standing queue, or
//! loss clearly above the random loss of the round before) retreats to what was delivered.

use std::time::Duration;

/// What the sender knows about the path before it sends its first datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartHint {
    /// RTT measured on the control connection to the same peer, if any.
    pub rtt: Option<Duration>,
    /// An estimate remembered from an earlier flow to the same peer, if any.
    pub remembered: Option<PathEstimate>,
}

/// A flow's estimate of its path, to remember for the next flow to the same peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathEstimate {
    /// Bottleneck rate, bytes (of datagrams) per second.
    pub rate: u64,
    /// The minimum RTT it was measured at.
    pub min_rtt: Duration,
}

impl PathEstimate {
    /// Rates (bytes per second) outside these bounds are not believed of any path.
    pub const RATE_BOUNDS: (u64, u64) = (1_000, 20_000_000_000);
    /// Nor are minimum RTTs outside these.
    pub const RTT_BOUNDS: (Duration, Duration) = (Duration::from_micros(10), Duration::from_secs(10));
    /// A remembered estimate older than this describes another day's path.
    pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

    /// Whether the estimate is one a path could have: remembered estimates outside the
    /// bounds are dropped, not clamped.
    pub fn is_plausible(&self) -> bool {
        let (rate, rtt) = (Self::RATE_BOUNDS, Self::RTT_BOUNDS);
        (rate.0..=rate.1).contains(&self.rate) && (rtt.0..=rtt.1).contains(&self.min_rtt)
    }
}

/// The share of the remembered rate the jump paces at (careful resume's half).
const JUMP_SHARE: f64 = 0.5;
/// A current RTT outside `[saved / RTT_AGREE, saved * RTT_AGREE]` means another path.
const RTT_AGREE: f64 = 2.0;

/// Where careful resume stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resume {
    /// Nothing remembered, or the path did not agree, or done: plain Startup.
    Off,
    /// A remembered estimate waits for an RTT to validate it against.
    Reconnaissance(PathEstimate),
    /// Pacing at the jump rate since the given round; validated once the round after it
    /// ends without congestion.
    Jumping { rate: u64, since_round: u64 },
}

impl Resume {
    /// The state for a hint: jumps at once when the control connection's RTT agrees with the
    /// remembered one (`round` is the controller's current round).
    pub(super) fn new(hint: &StartHint, round: u64) -> Resume {
        match (hint.remembered, hint.rtt) {
            (None, _) => Resume::Off,
            (Some(est), None) => Resume::Reconnaissance(est),
            (Some(est), Some(rtt)) => Resume::jump_if_agrees(est, rtt, round),
        }
    }

    fn jump_if_agrees(est: PathEstimate, rtt: Duration, round: u64) -> Resume {
        let saved = est.min_rtt.as_secs_f64().max(1e-6);
        let now = rtt.as_secs_f64();
        if est.rate == 0 || now < saved / RTT_AGREE || now > saved * RTT_AGREE {
            return Resume::Off;
        }
        Resume::jump(est.rate, round)
    }

    /// A jump to half of `rate`, measured on this path now (`UDP-RATE-10`), whose packets go
    /// out in `round`.
    pub(super) fn jump(rate: u64, round: u64) -> Resume {
        Resume::Jumping { rate: (rate as f64 * JUMP_SHARE) as u64, since_round: round }
    }

    /// The flow's first RTT sample: validates a remembered estimate still waiting for one.
    pub(super) fn on_first_rtt(&mut self, rtt: Duration, round: u64) {
        if let Resume::Reconnaissance(est) = *self {
            *self = Resume::jump_if_agrees(est, rtt, round);
        }
    }

    /// The rate Startup must not pace below while jumping.
    pub(super) fn floor(&self) -> Option<u64> {
        match *self {
            Resume::Jumping { rate, .. } => Some(rate),
            _ => None,
        }
    }

    /// A round ended. Returns `true` when the jump showed congestion (safe retreat: the
    /// caller ends Startup on what was delivered); ends the jump either way once validated.
    pub(super) fn on_round_end(&mut self, round: u64, congested: bool) -> bool {
        let Resume::Jumping { since_round, .. } = *self else { return false };
        if congested {
            *self = Resume::Off;
            return true;
        }
        if round > since_round + 1 {
            *self = Resume::Off;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn hint(rtt: Option<Duration>, saved_rtt: Duration) -> StartHint {
        StartHint { rtt, remembered: Some(PathEstimate { rate: 10_000_000, min_rtt: saved_rtt }) }
    }

    #[test]
    fn accepts_a_remembered_rate_when_the_control_rtt_agrees() {
        let r = Resume::new(&hint(Some(60 * MS), 50 * MS), 0);
        assert_eq!(r.floor(), Some(5_000_000), "jumps to half at once");
    }

    #[test]
    fn rejects_a_remembered_rate_from_another_path() {
        assert_eq!(Resume::new(&hint(Some(5 * MS), 50 * MS), 0).floor(), None, "RTT much lower");
        assert_eq!(Resume::new(&hint(Some(300 * MS), 50 * MS), 0).floor(), None, "RTT much higher");
        let mut r = Resume::new(&hint(None, 50 * MS), 0);
        assert_eq!(r.floor(), None, "no jump before an RTT is known");
        r.on_first_rtt(400 * MS, 1);
        assert_eq!(r, Resume::Off);
    }

    #[test]
    fn validates_with_the_first_rtt_sample_without_a_control_rtt() {
        let mut r = Resume::new(&hint(None, 50 * MS), 0);
        r.on_first_rtt(45 * MS, 1);
        assert_eq!(r.floor(), Some(5_000_000));
        // A later sample changes nothing: only the first one decides.
        r.on_first_rtt(500 * MS, 2);
        assert_eq!(r.floor(), Some(5_000_000));
    }

    #[test]
    fn keeps_the_jump_for_the_round_after_it_then_ends() {
        let mut r = Resume::new(&hint(Some(50 * MS), 50 * MS), 3);
        assert!(!r.on_round_end(4, false));
        assert_eq!(r.floor(), Some(5_000_000), "the jump's own round is not yet acked");
        assert!(!r.on_round_end(5, false));
        assert_eq!(r, Resume::Off, "validated: the filter holds what the path confirmed");
    }

    #[test]
    fn retreats_when_the_jump_congests() {
        let mut r = Resume::new(&hint(Some(50 * MS), 50 * MS), 0);
        assert!(r.on_round_end(1, true));
        assert_eq!(r, Resume::Off);
        assert!(!r.on_round_end(2, true), "only once");
    }

    #[test]
    fn ignores_an_empty_memory() {
        let h = StartHint { rtt: Some(50 * MS), remembered: None };
        assert_eq!(Resume::new(&h, 0), Resume::Off);
        let h = StartHint { rtt: Some(50 * MS), remembered: Some(PathEstimate { rate: 0, min_rtt: 50 * MS }) };
        assert_eq!(Resume::new(&h, 0), Resume::Off);
    }
}
