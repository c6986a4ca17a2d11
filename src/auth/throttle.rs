//! Brute-force throttle for logins, keyed by user name and by client IP.
//!
//! Pure and clock-injected: every method takes `now`, nothing reads the clock or does I/O.
//! A user key protects one account against a distributed attack; an IP key stops one client
//! from spraying many user names. A login is refused while either key is locked.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Above this many records a map is swept for forgotten records (amortized, see `Table`).
const PRUNE_AT: usize = 10_000;
/// Hard bound per map; beyond it the records with the oldest failures are evicted.
const MAX_ENTRIES: usize = 100_000;

/// Lockout policy. After `free_failures` consecutive failures, every further failure locks the
/// key for `base_delay_ms * 2^k` capped at `max_delay_ms`, where `k` counts the failures
/// already beyond the free ones (so the first lockout lasts exactly `base_delay_ms`).
/// A key's record is forgotten `forget_after_secs` after its last failure (or when its
/// lockout ends, if later).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct ThrottlePolicy {
    pub free_failures: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    pub forget_after_secs: u64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy { free_failures: 3, base_delay_ms: 1000, max_delay_ms: 60_000, forget_after_secs: 900 }
    }
}

impl ThrottlePolicy {
    /// Lockout after the `failures`-th consecutive failure.
    fn lockout(&self, failures: u32) -> Duration {
        if failures <= self.free_failures {
            return Duration::ZERO;
        }
        let k = failures - self.free_failures - 1;
        let ms = 2u64
            .checked_pow(k)
            .and_then(|factor| self.base_delay_ms.checked_mul(factor))
            .unwrap_or(u64::MAX)
            .min(self.max_delay_ms);
        Duration::from_millis(ms)
    }

    fn forget_after(&self) -> Duration {
        Duration::from_secs(self.forget_after_secs)
    }
}

/// Failure history of one key. Times are kept as an offset from `last_failure` rather than as
/// absolute instants so that huge configured delays cannot overflow `Instant` arithmetic.
#[derive(Debug, Clone)]
struct Record {
    failures: u32,
    last_failure: Instant,
    lockout: Duration,
}

impl Record {
    fn retry_after(&self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last_failure);
        self.lockout.checked_sub(elapsed).filter(|d| !d.is_zero())
    }

    fn is_forgotten(&self, now: Instant, policy: &ThrottlePolicy) -> bool {
        let elapsed = now.saturating_duration_since(self.last_failure);
        elapsed >= policy.forget_after().max(self.lockout)
    }
}

/// One bounded map of records.
#[derive(Debug)]
struct Table<K> {
    records: HashMap<K, Record>,
    /// Size that triggers the next sweep. Raised after each sweep so a map full of live
    /// records is not rescanned on every insertion.
    sweep_at: usize,
    prune_at: usize,
    max_entries: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(prune_at: usize, max_entries: usize) -> Self {
        Table { records: HashMap::new(), sweep_at: prune_at, prune_at, max_entries }
    }

    fn retry_after<Q>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.records.get(key).and_then(|r| r.retry_after(now))
    }

    fn record_failure(&mut self, key: K, now: Instant, policy: &ThrottlePolicy) {
        let record =
            self.records.entry(key).or_insert(Record { failures: 0, last_failure: now, lockout: Duration::ZERO });
        if record.is_forgotten(now, policy) {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        record.lockout = policy.lockout(record.failures);
        if self.records.len() > self.sweep_at {
            self.sweep(now, policy);
        }
    }

    fn sweep(&mut self, now: Instant, policy: &ThrottlePolicy) {
        self.records.retain(|_, r| !r.is_forgotten(now, policy));
        if self.records.len() > self.max_entries {
            // Evict down to 90% so the next eviction is some insertions away.
            let keep = self.max_entries - self.max_entries / 10;
            self.evict_oldest(self.records.len() - keep);
        }
        self.sweep_at = self.records.len().saturating_mul(2).clamp(self.prune_at, self.max_entries);
    }

    fn evict_oldest(&mut self, count: usize) {
        let mut ages: Vec<(Instant, K)> = self.records.iter().map(|(k, r)| (r.last_failure, k.clone())).collect();
        if count < ages.len() {
            ages.select_nth_unstable_by_key(count, |(t, _)| *t);
        }
        for (_, key) in ages.into_iter().take(count) {
            self.records.remove(&key);
        }
    }
}

/// Per-user and per-IP failure records. Not synchronized: wrap it in a mutex to share it.
#[derive(Debug)]
pub struct Throttle {
    policy: ThrottlePolicy,
    users: Table<String>,
    ips: Table<IpAddr>,
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self::with_limits(policy, PRUNE_AT, MAX_ENTRIES)
    }

    fn with_limits(policy: ThrottlePolicy, prune_at: usize, max_entries: usize) -> Self {
        Throttle { policy, users: Table::new(prune_at, max_entries), ips: Table::new(prune_at, max_entries) }
    }

    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// Err(retry_after) if either the user or the IP is currently locked out.
    pub fn check(&self, user: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let by_user = self.users.retry_after(user, now);
        let by_ip = self.ips.retry_after(&ip, now);
        match by_user.max(by_ip) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    pub fn record_failure(&mut self, user: &str, ip: IpAddr, now: Instant) {
        self.users.record_failure(user.to_owned(), now, &self.policy);
        self.ips.record_failure(ip, now, &self.policy);
    }

    /// Clears the user's record but not the IP's: a client that owns one account must not be
    /// able to reset its IP counter while guessing at others.
    pub fn record_success(&mut self, user: &str, _ip: IpAddr) {
        self.users.records.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const SEC: Duration = Duration::from_secs(1);

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xC000_0200 + n))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn default_policy_matches_documented_values() {
        let p = ThrottlePolicy::default();
        assert_eq!((p.free_failures, p.base_delay_ms, p.max_delay_ms, p.forget_after_secs), (3, 1000, 60_000, 900));
    }

    #[test]
    fn policy_deserializes_with_defaults_for_missing_fields() {
        let p: ThrottlePolicy = toml::from_str("free_failures = 5").unwrap();
        assert_eq!(p.free_failures, 5);
        assert_eq!(p.max_delay_ms, 60_000);
    }

    #[test]
    fn free_failures_do_not_lock() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.check("alice", ip(1), now), Ok(()));
            t.record_failure("alice", ip(1), now);
        }
        assert_eq!(t.check("alice", ip(1), now), Ok(()));
    }

    #[test]
    fn backoff_doubles_after_free_failures() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        let mut now = Instant::now();
        for _ in 0..3 {
            t.record_failure("alice", ip(1), now);
        }
        for expected in [1000, 2000, 4000, 8000, 16_000, 32_000] {
            t.record_failure("alice", ip(1), now);
            assert_eq!(t.check("alice", ip(1), now), Err(ms(expected)));
            assert_eq!(t.check("alice", ip(1), now + ms(expected - 1)), Err(ms(1)));
            now += ms(expected);
            assert_eq!(t.check("alice", ip(1), now), Ok(()));
        }
    }

    #[test]
    fn user_lockout_applies_from_any_ip() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        let now = Instant::now();
        for n in 0..4 {
            t.record_failure("alice", ip(n), now);
        }
        assert_eq!(t.check("alice", ip(99), now), Err(SEC));
        assert_eq!(t.check("bob", ip(99), now), Ok(()));
    }

    #[test]
    fn ip_lockout_applies_across_user_names() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        let now = Instant::now();
        for user in ["a", "b", "c", "d"] {
            t.record_failure(user, ip(7), now);
        }
        assert_eq!(t.check("fresh-user", ip(7), now), Err(SEC));
        assert_eq!(t.check("fresh-user", ip(8), now), Ok(()));
        assert_eq!(t.check("a", ip(8), now), Ok(()), "one failure per user stays free");
    }

    #[test]
    fn check_reports_the_longer_of_user_and_ip_lockouts() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        let now = Instant::now();
        for _ in 0..5 {
            t.record_failure("alice", ip(1), now); // ip(1) and alice: 2 s
        }
        t.record_failure("bob", ip(1), now); // ip(1): 4 s
        assert_eq!(t.check("alice", ip(1), now), Err(ms(4000)));
        assert_eq!(t.check("alice", ip(2), now), Err(ms(2000)));
    }

    #[test]
    fn delay_is_capped_and_never_overflows() {
        let policy =
            ThrottlePolicy { free_failures: 0, base_delay_ms: 1000, max_delay_ms: 5000, forget_after_secs: 900 };
        let mut t = Throttle::new(policy);
        let now = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..200 {
            t.record_failure("alice", ip(1), now);
            seen.push(t.check("alice", ip(1), now).unwrap_err());
        }
        assert_eq!(seen[..5], [ms(1000), ms(2000), ms(4000), ms(5000), ms(5000)]);
        assert!(seen.iter().all(|d| *d <= ms(5000)));
        assert_eq!(seen[199], ms(5000));
    }

    #[test]
    fn huge_policy_values_do_not_panic() {
        let policy = ThrottlePolicy {
            free_failures: u32::MAX,
            base_delay_ms: u64::MAX,
            max_delay_ms: u64::MAX,
            forget_after_secs: u64::MAX,
        };
        let mut t = Throttle::new(policy);
        let now = Instant::now();
        t.record_failure("alice", ip(1), now);
        assert_eq!(t.check("alice", ip(1), now), Ok(()));

        let policy = ThrottlePolicy { free_failures: 0, ..t.policy().clone() };
        let mut t = Throttle::new(policy);
        t.record_failure("alice", ip(1), now);
        assert_eq!(t.check("alice", ip(1), now), Err(ms(u64::MAX)));
    }

    #[test]
    fn failures_are_forgotten_after_forget_after() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        let start = Instant::now();
        for _ in 0..3 {
            t.record_failure("alice", ip(1), start);
        }
        let later = start + Duration::from_secs(900);
        t.record_failure("alice", ip(1), later);
        assert_eq!(t.check("alice", ip(1), later), Ok(()), "counter restarted");

        let just_before = later + Duration::from_secs(899);
        t.record_failure("alice", ip(1), just_before);
        t.record_failure("alice", ip(1), just_before);
        t.record_failure("alice", ip(1), just_before);
        assert_eq!(t.check("alice", ip(1), just_before), Err(SEC), "4th within window locks");
    }

    #[test]
    fn long_lockout_outlives_forget_window() {
        let policy =
            ThrottlePolicy { free_failures: 0, base_delay_ms: 120_000, max_delay_ms: 120_000, forget_after_secs: 60 };
        let mut t = Throttle::new(policy);
        let now = Instant::now();
        t.record_failure("alice", ip(1), now);
        let after_forget = now + Duration::from_secs(90);
        assert_eq!(t.check("alice", ip(1), after_forget), Err(Duration::from_secs(30)));
        t.record_failure("alice", ip(1), after_forget);
        assert_eq!(t.check("alice", ip(1), after_forget), Err(Duration::from_secs(120)));
    }

    #[test]
    fn success_clears_user_record_but_not_ip_record() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        let now = Instant::now();
        for _ in 0..3 {
            t.record_failure("alice", ip(1), now);
        }
        t.record_success("alice", ip(1));
        t.record_failure("alice", ip(1), now);
        assert_eq!(t.check("alice", ip(2), now), Ok(()), "user counter was reset");
        assert_eq!(t.check("alice", ip(1), now), Err(SEC), "ip counter kept counting");
    }

    #[test]
    fn success_unlocks_a_locked_user() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        let now = Instant::now();
        for n in 0..4 {
            t.record_failure("alice", ip(n), now);
        }
        assert!(t.check("alice", ip(50), now).is_err());
        t.record_success("alice", ip(50));
        assert_eq!(t.check("alice", ip(50), now), Ok(()));
    }

    #[test]
    fn forgotten_records_are_pruned_when_map_grows() {
        let mut t = Throttle::with_limits(ThrottlePolicy::default(), 10, 1000);
        let start = Instant::now();
        for n in 0..10 {
            t.record_failure(&format!("old{n}"), ip(n), start);
        }
        assert_eq!(t.users.records.len(), 10);
        let later = start + Duration::from_secs(901);
        t.record_failure("new", ip(100), later);
        assert_eq!(t.users.records.len(), 1);
        assert_eq!(t.ips.records.len(), 1);
        assert!(t.users.records.contains_key("new"));
    }

    #[test]
    fn live_records_are_capped_by_evicting_oldest() {
        let policy = ThrottlePolicy { free_failures: 0, ..ThrottlePolicy::default() };
        let mut t = Throttle::with_limits(policy, 10, 100);
        let start = Instant::now();
        for n in 0..1000u32 {
            let now = start + ms(u64::from(n));
            t.record_failure(&format!("u{n}"), ip(n), now);
            assert!(t.users.records.len() <= 100);
            assert!(t.ips.records.len() <= 100);
        }
        let now = start + ms(999);
        assert!(t.check("u999", ip(5000), now).is_err(), "newest kept");
        assert!(t.check("x", ip(999), now).is_err(), "newest ip kept");
        assert!(!t.users.records.contains_key("u0"), "oldest evicted");
    }

    #[test]
    fn default_limits_hold_under_many_distinct_ips() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        let now = Instant::now();
        for n in 0..(MAX_ENTRIES as u32 + 5000) {
            t.record_failure("alice", ip(n), now);
        }
        assert!(t.ips.records.len() <= MAX_ENTRIES);
        assert_eq!(t.users.records.len(), 1);
    }
}
