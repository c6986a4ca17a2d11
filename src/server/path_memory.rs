//! The path estimates of the server's downloads, the start hints of the next download to the
//! same user at the same client address (UDP-RATE-9). The server is the sender of a download,
//! so it is the side that learns the path; the client has nothing to hand it.
//!
//! Kept in memory only, bounded in entries overall and per user, and forgotten after
//! [`PathEstimate::MAX_AGE`]. The sender validates every hint as careful resume does
//! (UDP-RATE-7), so an entry for a path that has changed costs at most one round trip at half
//! its rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::udp::rate::PathEstimate;

/// Entries kept in all.
pub const MAX_ENTRIES: usize = 4096;
/// Entries kept per user, so that one account's many addresses cannot push out the others'.
pub const MAX_PER_USER: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    user: String,
    ip: IpAddr,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    estimate: PathEstimate,
    saved: Instant,
}

/// Download path estimates per user and client address.
#[derive(Debug, Default)]
pub struct DownloadPaths {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl DownloadPaths {
    /// The estimate remembered for `user` at `ip`, if it is fresh.
    pub fn recall(&self, now: Instant, user: &str, ip: IpAddr) -> Option<PathEstimate> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(&Key { user: user.to_string(), ip })?;
        (now.saturating_duration_since(e.saved) <= PathEstimate::MAX_AGE).then_some(e.estimate)
    }

    /// Remembers `estimate` for `user` at `ip`, replacing what was remembered for them; an
    /// implausible estimate is not kept. When full, the oldest entry of the user (if the user
    /// has [`MAX_PER_USER`]) or of all goes.
    pub fn remember(&self, now: Instant, user: &str, ip: IpAddr, estimate: PathEstimate) {
        if !estimate.is_plausible() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = Key { user: user.to_string(), ip };
        if !entries.contains_key(&key) {
            entries.retain(|_, e| now.saturating_duration_since(e.saved) <= PathEstimate::MAX_AGE);
            let users = entries.keys().filter(|k| k.user == user).count();
            let oldest = |mine: bool| {
                entries
                    .iter()
                    .filter(|(k, _)| !mine || k.user == user)
                    .min_by_key(|(_, e)| e.saved)
                    .map(|(k, _)| k.clone())
            };
            let evict = if users >= MAX_PER_USER {
                oldest(true)
            } else if entries.len() >= MAX_ENTRIES {
                oldest(false)
            } else {
                None
            };
            if let Some(k) = evict {
                entries.remove(&k);
            }
        }
        entries.insert(key, Entry { estimate, saved: now });
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn est(rate: u64, ms: u64) -> PathEstimate {
        PathEstimate { rate, min_rtt: Duration::from_millis(ms) }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn remembers_per_user_and_address_and_replaces_the_old_estimate() {
        let (m, t) = (DownloadPaths::default(), Instant::now());
        m.remember(t, "alice", ip(1), est(1_000_000, 20));
        m.remember(t, "alice", ip(1), est(3_000_000, 25));
        assert_eq!(m.recall(t, "alice", ip(1)), Some(est(3_000_000, 25)));
        assert_eq!(m.recall(t, "alice", ip(2)), None, "another address is another path");
        assert_eq!(m.recall(t, "bob", ip(1)), None, "another user gets nothing of alice's");
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn forgets_old_and_refuses_implausible_estimates() {
        let (m, t) = (DownloadPaths::default(), Instant::now());
        m.remember(t, "alice", ip(1), est(1_000_000, 20));
        assert_eq!(m.recall(t + PathEstimate::MAX_AGE + Duration::from_secs(1), "alice", ip(1)), None);
        m.remember(t, "bob", ip(1), est(1, 20));
        m.remember(t, "bob", ip(2), PathEstimate { rate: 1_000_000, min_rtt: Duration::from_secs(60) });
        m.remember(t, "bob", ip(3), PathEstimate { rate: u64::MAX, min_rtt: Duration::from_millis(5) });
        assert_eq!((1..=3).filter_map(|n| m.recall(t, "bob", ip(n))).count(), 0);
    }

    #[test]
    fn one_user_with_many_addresses_cannot_push_out_the_others() {
        let (m, t) = (DownloadPaths::default(), Instant::now());
        m.remember(t, "alice", ip(0), est(2_000_000, 10));
        for n in 0..10_000u32 {
            m.remember(t + Duration::from_millis(u64::from(n) + 1), "mallory", ip(n), est(1_000_000, 10));
        }
        assert_eq!(m.recall(t, "alice", ip(0)), Some(est(2_000_000, 10)));
        assert_eq!(m.len(), 1 + MAX_PER_USER);
        let last = t + Duration::from_millis(10_000);
        assert!(m.recall(last, "mallory", ip(9_999)).is_some(), "the newest are kept");
        assert_eq!(m.recall(last, "mallory", ip(0)), None);
    }

    #[test]
    fn stays_bounded_across_many_users() {
        let (m, t) = (DownloadPaths::default(), Instant::now());
        for n in 0..(MAX_ENTRIES as u32 + 500) {
            m.remember(t + Duration::from_millis(u64::from(n)), &format!("u{n}"), ip(n), est(1_000_000, 10));
        }
        assert_eq!(m.len(), MAX_ENTRIES);
        let last = t + Duration::from_secs(10);
        assert_eq!(m.recall(last, "u0", ip(0)), None, "the oldest went");
        let newest = MAX_ENTRIES as u32 + 499;
        assert!(m.recall(last, &format!("u{newest}"), ip(newest)).is_some());
    }
}
