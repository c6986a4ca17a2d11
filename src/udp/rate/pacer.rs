//! Pacing: spreading datagrams out at the pacing rate.

use std::time::{Duration, Instant};

/// Credit the pacer keeps while the sender wakes on time.
pub const MIN_CREDIT: Duration = Duration::from_millis(1);
/// Credit at most, however late the wake-ups come.
pub const MAX_CREDIT: Duration = Duration::from_millis(4);
/// Credit at most, in datagrams, unless [`MIN_CREDIT`] at the rate holds more: keeps a late
/// wake-up's burst within a LAN switch's queue at gigabit rates.
pub const MAX_CREDIT_DATAGRAMS: u64 = 64;
/// Credit at least, in datagrams.
pub const MIN_CREDIT_DATAGRAMS: u64 = 4;

/// A token-bucket pacer (UDP-RATE-1): datagrams leave no faster than the pacing rate, with
/// bursts of at most the credit it keeps.
///
/// The credit follows how late the sender wakes for its schedule: 1 ms while it wakes on
/// time, up to 1.25 times its recent lateness (at most 4 ms, and at most
/// [`MAX_CREDIT_DATAGRAMS`]) when it does not. A runtime's timers fire on millisecond ticks
/// and a busy worker later still; with a fixed 1 ms of credit, every wake-up later than
/// that lost the rest of its time from the rate (a quarter of a 100 Mbit/s, 1 ms path in
/// virtual time with timers up to 2 ms late). Only a wait on the schedule counts: a sender
/// that waited for its window or its data was not late.
#[derive(Debug, Default)]
pub struct Pacer {
    /// When the next datagram is due on a perfectly even schedule.
    next: Option<Instant>,
    /// The sender has waited on the schedule (not on its window) since its last datagram.
    waiting: bool,
    /// How late the sender has woken for its schedule lately (a decaying maximum).
    late: Duration,
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer::default()
    }

    /// Earliest time the next datagram may leave (`None`: now).
    pub fn next_send(&self) -> Option<Instant> {
        self.next
    }

    /// The sender could send but for the schedule: its next datagram's lateness counts.
    pub fn on_wait(&mut self) {
        self.waiting = true;
    }

    /// The sender waits for something else (its window, its data): its next datagram's
    /// delay is not lateness.
    pub fn on_other_wait(&mut self) {
        self.waiting = false;
    }

    /// The credit kept now, as time at the pacing rate.
    pub fn credit_time(&self) -> Duration {
        (self.late + self.late / 4).clamp(MIN_CREDIT, MAX_CREDIT)
    }

    /// A datagram of `bytes` left at `now`; `rate` in bytes per second.
    pub fn on_send(&mut self, now: Instant, bytes: usize, rate: u64, datagram: usize) {
        if std::mem::take(&mut self.waiting) {
            if let Some(due) = self.next {
                let late = now.saturating_duration_since(due);
                self.late = late.max(self.late - self.late / 16);
            }
        }
        let rate = rate.max(1);
        let burst = nanos_at(credit_bytes(rate, datagram as u64, self.credit_time()), rate);
        let floor = now.checked_sub(burst).unwrap_or(now);
        let start = self.next.map_or(floor, |n| n.max(floor));
        self.next = Some(start + nanos_at(bytes as u64, rate));
    }
}

/// The credit in bytes at `rate` (bytes per second) for `time`, within the datagram bounds.
fn credit_bytes(rate: u64, datagram: u64, time: Duration) -> u64 {
    let over_time = (u128::from(rate) * time.as_nanos() / 1_000_000_000) as u64;
    let cap = (MAX_CREDIT_DATAGRAMS * datagram).max(rate / 1000);
    over_time.min(cap).max(MIN_CREDIT_DATAGRAMS * datagram)
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

    const D: usize = 1472;
    /// 100 Mbit/s: one datagram every 117.76 µs.
    const RATE: u64 = 12_500_000;

    /// Sends on the schedule, waking `late` after each due time; returns the datagrams the
    /// last wake-up sent.
    fn wake_ups(p: &mut Pacer, t0: Instant, late: Duration, n: usize) -> usize {
        let mut now = t0;
        let mut sent = 0;
        for _ in 0..n {
            sent = 0;
            while p.next_send().is_none_or(|t| t <= now) {
                p.on_send(now, D, RATE, D);
                sent += 1;
            }
            p.on_wait();
            now = p.next_send().unwrap() + late;
        }
        sent
    }

    #[test]
    fn credit_stays_at_a_millisecond_while_wake_ups_are_on_time() {
        let (t0, mut p) = (Instant::now(), Pacer::new());
        wake_ups(&mut p, t0, Duration::ZERO, 100);
        assert_eq!(p.credit_time(), MIN_CREDIT);
        assert_eq!(credit_bytes(RATE, D as u64, MIN_CREDIT), 12_500);
    }

    #[test]
    fn credit_covers_late_wake_ups_so_they_lose_no_rate() {
        let (t0, mut p) = (Instant::now(), Pacer::new());
        let sent = wake_ups(&mut p, t0, Duration::from_millis(2), 50);
        assert_eq!(p.credit_time(), Duration::from_micros(2500));
        // 2 ms late: the one due and the 16 due since, as on time.
        assert_eq!(sent, 17);
    }

    #[test]
    fn waiting_for_the_window_is_not_lateness() {
        let (t0, mut p) = (Instant::now(), Pacer::new());
        p.on_send(t0, D, RATE, D);
        p.on_wait();
        p.on_other_wait();
        p.on_send(t0 + Duration::from_millis(50), D, RATE, D);
        assert_eq!(p.credit_time(), MIN_CREDIT);
    }

    #[test]
    fn credit_stays_within_a_switch_queue() {
        let d = D as u64;
        // 400 Mbit/s, 4 ms: 64 datagrams, not 136.
        assert_eq!(credit_bytes(50_000_000, d, MAX_CREDIT), 64 * d);
        // 1 Gbit/s: 1 ms (85 datagrams) is more than 64, and no more than that.
        assert_eq!(credit_bytes(125_000_000, d, MAX_CREDIT), 125_000);
        // 1 MB/s: 4 datagrams.
        assert_eq!(credit_bytes(1_000_000, d, MIN_CREDIT), 4 * d);
    }
}
