//! Pacing: spreading datagrams out at the pacing rate.

use std::time::{Duration, Instant};

/// A token-bucket pacer: datagrams leave no faster than the pacing rate, with bursts of at
/// most 4 datagrams or 1 ms worth, whichever is larger.
#[derive(Debug, Default)]
pub struct Pacer {
    /// When the next datagram is due on a perfectly even schedule.
    next: Option<Instant>,
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer::default()
    }

    /// Earliest time the next datagram may leave (`None`: now).
    pub fn next_send(&self) -> Option<Instant> {
        self.next
    }

    /// A datagram of `bytes` left at `now`; `rate` in bytes per second.
    pub fn on_send(&mut self, now: Instant, bytes: usize, rate: u64, datagram: usize) {
        let rate = rate.max(1);
        let burst_bytes = (4 * datagram as u64).max(rate / 1000);
        let burst = nanos_at(burst_bytes, rate);
        let floor = now.checked_sub(burst).unwrap_or(now);
        let start = self.next.map_or(floor, |n| n.max(floor));
        self.next = Some(start + nanos_at(bytes as u64, rate));
    }
}

/// How long `bytes` take at `rate` bytes per second.
pub(super) fn nanos_at(bytes: u64, rate: u64) -> Duration {
    Duration::from_nanos((u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1))) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_allows_a_small_burst_then_spaces_datagrams() {
        let t0 = Instant::now();
        let mut p = Pacer::new();
        let rate = 1_000_000; // 1 MB/s: 1 ms is 1000 bytes, less than 4 datagrams
        let mut sent = 0;
        while p.next_send().is_none_or(|t| t <= t0) {
            p.on_send(t0, 1200, rate, 1200);
            sent += 1;
        }
        assert_eq!(sent, 5, "4 datagrams of credit plus the one that starts the schedule");
        let next = p.next_send().unwrap();
        assert_eq!(next - t0, Duration::from_micros(1200));
    }
}
