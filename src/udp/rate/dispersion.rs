//! The bottleneck rate read from how the first flight spread out on its way (`UDP-RATE-10`).
//!
//! Delivery-rate samples need a round trip of data each, so a cold Startup only doubles its
//! rate per round trip from the initial window. The first flight says more: its datagrams
//! leave paced faster than most links carry them, and arrive spaced by the bottleneck. The
//! receiver acknowledges the first datagram at once (`UDP-ACK-1`), and every `Ack` says how
//! long after its largest packet's arrival it was sent (`ack_delay_us`), so two acks of the
//! flight give the arrival times of two of its packets, and the bytes between them.
//!
//! The reading is an upper bound only as good as the timestamps, so it is capped at the rate
//! the flight was sent at (arrivals squeezed together by a late receiver cannot read above
//! it), and the controller uses it only as careful resume uses a remembered rate: half of it
//! for a round trip, kept if the path shows no queue ([`super::resume`]).

use std::time::{Duration, Instant};

/// Datagrams between the two arrivals below which the spacing says too little.
const MIN_DATAGRAMS: u64 = 8;
/// A reading below this share of the rate the flight was sent at is the bottleneck's (above
/// it, the flight was too slow to tell).
const BELOW_SENT: f64 = 0.9;

/// What the first flight's spacing says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Dispersion {
    /// Bytes per second at which the flight arrived (at most the rate it was sent at).
    pub rate: u64,
    /// Whether that is clearly below the rate it was sent at: the bottleneck's rate, not the
    /// sender's.
    pub at_bottleneck: bool,
}

/// The first flight: the datagrams sent before the first RTT sample.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct FirstFlight {
    /// Bytes sent in the flight, and when its first and last datagrams left.
    sent: u64,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    /// The first RTT sample came: later datagrams are not the flight's.
    closed: bool,
    /// The first ack's largest packet: when it arrived (receiver's time, offset by the
    /// one-way delay) and the bytes sent up to it.
    first_arrival: Option<(Instant, u64)>,
    /// Measured, or given up.
    done: bool,
}

impl FirstFlight {
    /// A datagram of `bytes` leaves at `now`.
    pub(super) fn on_send(&mut self, now: Instant, bytes: u64) {
        if self.closed {
            return;
        }
        self.sent += bytes;
        self.first_sent.get_or_insert(now);
        self.last_sent = Some(now);
    }

    /// An ack at `now` reports a new largest packet, sent when `delivered` bytes in all had
    /// been sent (that packet included), which the receiver opened `ack_delay` before sending
    /// the ack. Returns the flight's dispersion once two acks of it are in, at most once per
    /// flow.
    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        ack_delay: Duration,
        delivered: u64,
        datagram: u64,
    ) -> Option<Dispersion> {
        self.closed = true;
        if self.done {
            return None;
        }
        let arrived = now.checked_sub(ack_delay).unwrap_or(now);
        let Some((first_at, first_through)) = self.first_arrival else {
            self.first_arrival = Some((arrived, delivered));
            return None;
        };
        if delivered > self.sent {
            // Past the flight: its tail was lost, or its acks merged with later ones.
            self.done = true;
            return None;
        }
        let bytes = delivered.saturating_sub(first_through);
        if delivered < self.sent && bytes < MIN_DATAGRAMS * datagram {
            return None; // more of the flight to come
        }
        self.done = true;
        let arrival_span = arrived.saturating_duration_since(first_at);
        let send_span = match (self.first_sent, self.last_sent) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        if bytes < MIN_DATAGRAMS * datagram || arrival_span.is_zero() || send_span.is_zero() {
            return None;
        }
        let spread = bytes as f64 / arrival_span.as_secs_f64();
        let sent_at = self.sent as f64 / send_span.as_secs_f64();
        Some(Dispersion { rate: spread.min(sent_at) as u64, at_bottleneck: spread < BELOW_SENT * sent_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: u64 = 1_000;
    const US: Duration = Duration::from_micros(1);

    /// A flight of `n` datagrams of `D` bytes sent `gap` apart from `t0`.
    fn flight(t0: Instant, n: u64, gap: Duration) -> FirstFlight {
        let mut f = FirstFlight::default();
        for i in 0..n {
            f.on_send(t0 + gap * i as u32, D);
        }
        f
    }

    #[test]
    fn reads_the_bottleneck_from_the_spacing_of_two_acks() {
        let t0 = Instant::now();
        // Sent 100 us apart (10 MB/s), arriving 1 ms apart (a 1 MB/s bottleneck).
        let mut f = flight(t0, 32, 100 * US);
        let rtt = Duration::from_millis(50);
        assert_eq!(f.on_ack(t0 + rtt, Duration::ZERO, D, D), None, "one arrival is no spacing");
        // The ack of the last one is sent 10 ms after packet 2 arrived: its delay says so.
        let last_arrival = t0 + rtt + 31 * 1000 * US;
        let d = f.on_ack(last_arrival + 4 * 1000 * US, 4 * 1000 * US, 32 * D, D).unwrap();
        assert!((d.rate as f64 - 1e6).abs() < 1e3, "rate {d:?}");
        assert!(d.at_bottleneck);
        assert_eq!(f.on_ack(last_arrival + rtt, Duration::ZERO, 40 * D, D), None, "once only");
    }

    #[test]
    fn never_reads_above_the_rate_the_flight_was_sent_at() {
        let t0 = Instant::now();
        // Sent at 10 MB/s; a late receiver opened them all within 10 us.
        let mut f = flight(t0, 32, 100 * US);
        f.on_ack(t0, Duration::ZERO, D, D);
        let d = f.on_ack(t0 + 10 * US, Duration::ZERO, 32 * D, D).unwrap();
        let sent_at = 32.0 * D as f64 / (31.0 * 100e-6);
        assert!((d.rate as f64 - sent_at).abs() < 1.0, "rate {d:?}, sent at {sent_at}");
        assert!(!d.at_bottleneck, "the sender's own rate says nothing of the bottleneck");
    }

    /// A receiver that lies in `ack_delay_us` (it is the peer's to fill in) moves the arrival
    /// times it reports, but the reading stays within the rate the flight was sent at.
    #[test]
    fn forged_ack_delays_cannot_raise_the_reading_above_the_send_rate() {
        let t0 = Instant::now();
        let sent_at = 32.0 * D as f64 / (31.0 * 100e-6);
        let huge = Duration::from_secs(4_000);
        for (first_delay, last_delay) in [
            (Duration::ZERO, Duration::from_millis(9)), // claims the last arrived with the first
            (Duration::ZERO, huge),                     // claims it arrived before the first
            (huge, Duration::ZERO),                     // claims the first arrived long before
            (Duration::from_millis(3), Duration::ZERO), // stretches the span: only lowers it
        ] {
            let mut f = flight(t0, 32, 100 * US);
            let rtt = Duration::from_millis(50);
            f.on_ack(t0 + rtt, first_delay, D, D);
            if let Some(d) = f.on_ack(t0 + rtt + Duration::from_millis(10), last_delay, 32 * D, D) {
                assert!(d.rate as f64 <= sent_at + 1.0, "{first_delay:?}/{last_delay:?}: {d:?}");
            }
        }
    }

    #[test]
    fn gives_up_on_too_little_or_on_a_flight_that_merged_with_the_next() {
        let t0 = Instant::now();
        let mut f = flight(t0, 32, 100 * US);
        f.on_ack(t0, Duration::ZERO, D, D);
        assert_eq!(f.on_ack(t0 + 100 * US, Duration::ZERO, 3 * D, D), None, "wait for more");
        assert_eq!(f.on_ack(t0 + 200 * US, Duration::ZERO, 40 * D, D), None, "beyond the flight");
        assert_eq!(f.on_ack(t0 + 300 * US, Duration::ZERO, 32 * D, D), None, "given up for good");

        // A flight of four: the last ack comes, but four datagrams say too little.
        let mut f = flight(t0, 4, 100 * US);
        f.on_ack(t0, Duration::ZERO, D, D);
        assert_eq!(f.on_ack(t0 + 300 * US, Duration::ZERO, 4 * D, D), None);

        // Everything sent at one instant: no send rate to cap the reading with.
        let mut f = flight(t0, 32, Duration::ZERO);
        f.on_ack(t0, Duration::ZERO, D, D);
        assert_eq!(f.on_ack(t0 + 300 * US, Duration::ZERO, 32 * D, D), None);
    }

    #[test]
    fn datagrams_after_the_first_ack_are_not_the_flights() {
        let t0 = Instant::now();
        let mut f = flight(t0, 16, 100 * US);
        f.on_ack(t0 + 10_000 * US, Duration::ZERO, D, D);
        f.on_send(t0 + 10_001 * US, D); // the second flight
        assert_eq!(f.on_ack(t0 + 12_000 * US, Duration::ZERO, 17 * D, D), None, "past the flight");
    }
}
