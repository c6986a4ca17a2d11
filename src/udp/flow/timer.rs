//! A flow's timers: one enum naming them, one table of deadlines.

use std::time::Instant;

/// Every timer a flow has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Client: repeat `Hello` (UDP-VALID-2).
    Hello,
    /// Client: give up when no `PathChallenge` came (UDP-FALLBACK-2).
    NoPath,
    /// Server: repeat the `PathChallenge` to addresses being validated (UDP-VALID-3).
    Challenge,
    /// Nothing authentic arrived for the idle timeout.
    Idle,
    /// The data machine's own deadline: the sender's pacing, loss and probe timers, or the
    /// receiver's ack delay (UDP-ACK-1).
    Machine,
    /// Receiver: look again at acks held while the disk is behind (UDP-ACK-1).
    AckHold,
}

impl Timer {
    const ALL: [Timer; 6] =
        [Timer::Hello, Timer::NoPath, Timer::Challenge, Timer::Idle, Timer::Machine, Timer::AckHold];

    fn index(self) -> usize {
        self as usize
    }
}

/// Deadlines by timer; `None` is stopped.
#[derive(Debug, Clone, Default)]
pub struct TimerTable {
    at: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer.index()] = Some(at);
    }

    /// Sets `timer` to `at`, or stops it for `None`.
    pub fn set_opt(&mut self, timer: Timer, at: Option<Instant>) {
        self.at[timer.index()] = at;
    }

    pub fn stop(&mut self, timer: Timer) {
        self.at[timer.index()] = None;
    }

    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer.index()]
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Timers due at `now`, stopped as they are returned.
    pub fn expired(&mut self, now: Instant) -> impl Iterator<Item = Timer> {
        let mut due = Vec::new();
        for t in Timer::ALL {
            if self.at[t.index()].is_some_and(|at| at <= now) {
                self.at[t.index()] = None;
                due.push(t);
            }
        }
        due.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn returns_the_earliest_and_stops_what_expired() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Idle, t0 + Duration::from_secs(15));
        t.set(Timer::Hello, t0 + Duration::from_millis(200));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(200)));
        let due: Vec<_> = t.expired(t0 + Duration::from_secs(1)).collect();
        assert_eq!(due, vec![Timer::Hello]);
        assert_eq!(t.get(Timer::Hello), None);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(15)));
    }
}
