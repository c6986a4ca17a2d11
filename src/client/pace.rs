//! Pacing of TCP transfers under a rate limit (CTRL-XFER-9): a sans-I/O pacer that says how
//! long to wait before (uploads) or after (downloads) moving each data frame, so that moving
//! `n` bytes never takes less than `n / rate` seconds. No burst allowance: the bound is strict.

use std::time::{Duration, Instant};

/// Spreads bytes over time at `rate` bytes per second.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: u64,
    /// When the bytes handed in so far have been paid for.
    paid_until: Option<Instant>,
}

impl Pacer {
    /// A pacer for `rate` bytes per second (at least 1).
    pub fn new(rate: u64) -> Pacer {
        Pacer { rate: rate.max(1), paid_until: None }
    }

    /// Accounts `bytes` more and returns how long to wait from `now` until they are paid for.
    /// The waits add up: after handing in `total` bytes starting at `t0`, the last wait ends no
    /// earlier than `t0 + total / rate`.
    pub fn handle_bytes(&mut self, now: Instant, bytes: u64) -> Duration {
        let start = self.paid_until.map_or(now, |t| t.max(now));
        let cost = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        let end = start + cost;
        self.paid_until = Some(end);
        end.saturating_duration_since(now)
    }
}

/// Waits as `pacer` says for `bytes` (no pacer: no wait).
pub(super) async fn pace(pacer: &mut Option<Pacer>, bytes: u64) {
    if let Some(p) = pacer {
        let wait = p.handle_bytes(Instant::now(), bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_add_up_to_size_over_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000);
        let mut now = t0;
        for _ in 0..10 {
            now += p.handle_bytes(now, 100);
        }
        assert_eq!(now - t0, Duration::from_secs(1));
    }

    #[test]
    fn time_spent_elsewhere_counts_but_never_buys_a_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000);
        assert_eq!(p.handle_bytes(t0, 500), Duration::from_millis(500));
        // The caller was late by a second: the next bytes still cost their own time.
        let late = t0 + Duration::from_millis(1500);
        assert_eq!(p.handle_bytes(late, 500), Duration::from_millis(500));
        // Handed in early, before the previous bytes are paid for: the wait includes them.
        let mut q = Pacer::new(1000);
        assert_eq!(q.handle_bytes(t0, 1000), Duration::from_secs(1));
        assert_eq!(q.handle_bytes(t0, 1000), Duration::from_secs(2));
    }

    #[test]
    fn a_zero_rate_is_taken_as_one_byte_a_second() {
        let t0 = Instant::now();
        assert_eq!(Pacer::new(0).handle_bytes(t0, 2), Duration::from_secs(2));
    }
}
