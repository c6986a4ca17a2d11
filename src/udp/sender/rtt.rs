//! RTT estimation as in RFC 9002 section 5.

use std::time::Duration;

/// RTT assumed before the first sample (RFC 9002's initial RTT).
pub(super) const INITIAL_RTT: Duration = Duration::from_millis(333);
/// The largest ack delay believed (our receiver acks within 10 ms; the peer's word is capped).
pub(super) const MAX_ACK_DELAY: Duration = Duration::from_millis(25);

#[derive(Debug, Clone)]
pub(super) struct RttEstimator {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
}

impl RttEstimator {
    pub(super) fn new() -> RttEstimator {
        RttEstimator { latest: INITIAL_RTT, smoothed: None, var: INITIAL_RTT / 2, min: INITIAL_RTT }
    }

    /// Takes a sample of `rtt` for a packet the peer acknowledged `ack_delay` after receiving
    /// it; returns the sample with the ack delay taken out where that stays above the minimum.
    pub(super) fn update(&mut self, rtt: Duration, ack_delay: Duration) -> Duration {
        self.update_with(rtt, ack_delay.min(MAX_ACK_DELAY))
    }

    /// Takes a sample for a packet of the first flight, which the server may have held until
    /// the flow existed (UDP-CTRL-10): the receiver's ack delay covers the hold and is taken
    /// out whole, leaving at least an eighth of the sample.
    pub(super) fn update_first_flight(&mut self, rtt: Duration, ack_delay: Duration) -> Duration {
        let adjusted = rtt.saturating_sub(ack_delay).max(rtt / 8);
        self.update_with(adjusted, Duration::ZERO)
    }

    fn update_with(&mut self, rtt: Duration, ack_delay: Duration) -> Duration {
        self.latest = rtt;
        let Some(smoothed) = self.smoothed else {
            self.min = rtt;
            self.smoothed = Some(rtt);
            self.var = rtt / 2;
            return rtt;
        };
        self.min = self.min.min(rtt);
        let adjusted = if rtt >= self.min + ack_delay { rtt - ack_delay } else { rtt };
        let diff = smoothed.abs_diff(adjusted);
        self.var = (self.var * 3 + diff) / 4;
        self.smoothed = Some((smoothed * 7 + adjusted) / 8);
        adjusted
    }

    pub(super) fn has_sample(&self) -> bool {
        self.smoothed.is_some()
    }

    pub(super) fn smoothed(&self) -> Duration {
        self.smoothed.unwrap_or(INITIAL_RTT)
    }

    pub(super) fn var(&self) -> Duration {
        self.var
    }

    pub(super) fn latest(&self) -> Duration {
        self.latest
    }

    pub(super) fn min(&self) -> Duration {
        self.min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooths_and_subtracts_ack_delay() {
        let mut r = RttEstimator::new();
        assert_eq!(r.update(Duration::from_millis(100), Duration::from_millis(5)), Duration::from_millis(100));
        assert_eq!(r.smoothed(), Duration::from_millis(100));
        let adj = r.update(Duration::from_millis(110), Duration::from_millis(10));
        assert_eq!(adj, Duration::from_millis(100));
        assert_eq!(r.min(), Duration::from_millis(100));
        // An ack delay that would take the sample below the minimum is not believed.
        assert_eq!(r.update(Duration::from_millis(104), Duration::from_millis(10)), Duration::from_millis(104));
    }

    /// UDP-CTRL-10: a first flight held 300 ms before the flow existed gives the path's RTT,
    /// and an ack delay claimed larger than the sample leaves an eighth of it.
    #[test]
    fn a_held_first_flight_gives_the_paths_rtt() {
        let ms = Duration::from_millis;
        let mut r = RttEstimator::new();
        assert_eq!(r.update_first_flight(ms(350), ms(300)), ms(50));
        assert_eq!(r.update_first_flight(ms(351), ms(299)), ms(52));
        assert_eq!((r.min(), r.latest()), (ms(50), ms(52)));
        assert_eq!(r.update_first_flight(ms(80), ms(1000)), ms(10));
        // After the first flight the peer's word on its delay is capped again.
        assert_eq!(r.update(ms(400), ms(300)), ms(375));
    }
}
