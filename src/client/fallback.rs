//! When the client gives up on UDP, with no I/O: how long to wait for the server's first
//! reply (UDP-FALLBACK-2), and, for `--transport auto`, when to leave mid-transfer
//! (UDP-FALLBACK-3): the flow made no progress for a while, or its goodput collapsed while it
//! was losing heavily.

use std::time::{Duration, Instant};

pub use crate::udp::flow::first_reply_deadline;

/// Length of one measurement window.
pub const WINDOW: Duration = Duration::from_secs(3);

/// Watches a UDP transfer's acknowledged bytes and loss.
#[derive(Debug, Clone)]
pub struct DegradeMonitor {
    window_start: Instant,
    acked_at_start: u64,
    sent_at_start: u64,
    lost_at_start: u64,
    last_progress: Instant,
    last_acked: u64,
    best_rate: f64,
}

impl DegradeMonitor {
    pub fn new(now: Instant, acked: u64) -> DegradeMonitor {
        DegradeMonitor {
            window_start: now,
            acked_at_start: acked,
            sent_at_start: 0,
            lost_at_start: 0,
            last_progress: now,
            last_acked: acked,
            best_rate: 0.0,
        }
    }

    /// Feeds the current totals: bytes known delivered, packets sent and declared lost. Returns
    /// why to fall back, if it is time to.
    pub fn observe(&mut self, now: Instant, acked: u64, sent_packets: u64, lost_packets: u64) -> Option<String> {
        if acked > self.last_acked {
            self.last_acked = acked;
            self.last_progress = now;
        } else if now.duration_since(self.last_progress) >= WINDOW {
            return Some(format!("no progress over UDP for {} s", WINDOW.as_secs()));
        }
        let elapsed = now.duration_since(self.window_start);
        if elapsed < WINDOW {
            return None;
        }
        let rate = (acked - self.acked_at_start) as f64 / elapsed.as_secs_f64();
        let sent = sent_packets.saturating_sub(self.sent_at_start);
        let lost = lost_packets.saturating_sub(self.lost_at_start);
        let loss = if sent == 0 { 0.0 } else { lost as f64 / sent as f64 };
        let collapsed = self.best_rate > 0.0 && rate < self.best_rate / 4.0 && loss > 0.3;
        self.best_rate = self.best_rate.max(rate);
        self.window_start = now;
        self.acked_at_start = acked;
        self.sent_at_start = sent_packets;
        self.lost_at_start = lost_packets;
        collapsed.then(|| format!("UDP goodput fell to {:.0} KB/s with {:.0}% loss", rate / 1e3, loss * 100.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reply_deadline_follows_the_control_round_trip() {
        let ms = Duration::from_millis;
        assert_eq!(first_reply_deadline(ms(1), false), ms(504));
        assert_eq!(first_reply_deadline(ms(600), false), ms(2900));
        assert_eq!(first_reply_deadline(ms(5000), false), ms(10_000));
        assert_eq!(first_reply_deadline(ms(1), true), ms(10_000));
        assert_eq!(first_reply_deadline(ms(1000), true), ms(16_000));
    }

    #[test]
    fn falls_back_after_a_window_without_progress() {
        let t0 = Instant::now();
        let mut m = DegradeMonitor::new(t0, 0);
        assert_eq!(m.observe(t0 + Duration::from_secs(1), 100, 10, 0), None);
        assert_eq!(m.observe(t0 + Duration::from_secs(3), 100, 20, 10), None);
        assert!(m.observe(t0 + Duration::from_secs(4), 100, 30, 20).is_some());
    }

    #[test]
    fn falls_back_when_goodput_collapses_under_heavy_loss_but_not_under_light_loss() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut m = DegradeMonitor::new(t0, 0);
        assert_eq!(m.observe(t0 + 3 * s, 30_000_000, 30_000, 0), None);
        // Slower but clean: stay.
        assert_eq!(m.observe(t0 + 6 * s, 33_000_000, 40_000, 100), None);
        // A tenth of the best rate while losing half: leave.
        assert!(m.observe(t0 + 9 * s, 36_000_000, 80_000, 20_100).is_some());
    }
}
