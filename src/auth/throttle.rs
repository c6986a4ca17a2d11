//! Brute-force throttle for logins (CTRL-AUTH-2, CTRL-AUTH-4, CTRL-AUTH-5).
//!
//! Pure and clock-injected: every method takes `now`, nothing reads the clock or does I/O.
//!
//! Call order: [`Throttle::begin`] before the password is checked (it counts the attempt as
//! in flight, so parallel guesses are limited before any of them reaches argon2), then exactly
//! one of [`Throttle::succeed`] or [`Throttle::fail`] with the returned [`Ticket`].
//!
//! Keys, where a *source* is an IPv4 address or an IPv6 /64 prefix:
//! - (user, source): exponential backoff after `free_failures`; guards one account against
//!   one client, and is the only key a *trusted* source is subject to;
//! - source: the same backoff across user names; stops one client spraying many names;
//! - user: a token bucket of `user_budget` failures, refilled one per `user_refill_secs`,
//!   spent only by sources that are not trusted for that user. It caps a distributed attack
//!   on one account without locking out its owner: a source where the user logged in
//!   successfully within `trust_secs` is trusted and never waits for the bucket.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Above this many records a map is swept for forgotten records (amortized, see `Table`).
const PRUNE_AT: usize = 10_000;
/// Hard bound per map; beyond it the records with the oldest failures are evicted.
const MAX_ENTRIES: usize = 100_000;
/// The "wait" [`Throttle::begin`] returns while other attempts on the same key are in flight:
/// nothing is locked, the caller retries when one of them has ended.
pub const IN_FLIGHT: Duration = Duration::ZERO;

/// Throttling policy (`[auth]` in the server config).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottlePolicy {
    /// Consecutive failures of a key before backoff starts.
    pub free_failures: u32,
    /// First lockout; each further failure doubles it.
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// A key's record is forgotten this long after its last failure.
    pub forget_after_secs: u64,
    /// Failures per user name that untrusted sources may spend at once.
    pub user_budget: u32,
    /// One failure of the user budget comes back every this many seconds.
    pub user_refill_secs: u64,
    /// A source stays trusted for a user this long after a successful login there.
    pub trust_secs: u64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            free_failures: 3,
            base_delay_ms: 1000,
            max_delay_ms: 60_000,
            forget_after_secs: 900,
            user_budget: 20,
            user_refill_secs: 30,
            trust_secs: 30 * 86_400,
        }
    }
}

impl ThrottlePolicy {
    /// Lockout after the `failures`-th consecutive failure.
    pub(crate) fn lockout(&self, failures: u32) -> Duration {
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

    pub(crate) fn forget_after(&self) -> Duration {
        Duration::from_secs(self.forget_after_secs)
    }
}

/// The throttling key of a client address: IPv4 as is (also when mapped into IPv6), IPv6
/// reduced to its /64, since one host usually holds a whole /64.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Failure history of one key. Times are kept as an offset from `last_failure` rather than as
/// absolute instants so that huge configured delays cannot overflow `Instant` arithmetic.
#[derive(Debug, Clone)]
struct Record {
    failures: u32,
    in_flight: u32,
    last_failure: Instant,
    lockout: Duration,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record { failures: 0, in_flight: 0, last_failure: now, lockout: Duration::ZERO }
    }

    fn retry_after(&self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last_failure);
        self.lockout.checked_sub(elapsed).filter(|d| !d.is_zero())
    }

    /// A new attempt may start while the ones in flight, if all fail, stay within the free
    /// failures; past them, one at a time (CTRL-AUTH-4).
    fn admits(&self, now: Instant, policy: &ThrottlePolicy) -> Result<(), Duration> {
        if let Some(wait) = self.retry_after(now) {
            return Err(wait);
        }
        let failures = if self.is_forgotten(now, policy) { 0 } else { self.failures };
        if self.in_flight == 0 || failures.saturating_add(self.in_flight) <= policy.free_failures {
            Ok(())
        } else {
            Err(IN_FLIGHT)
        }
    }

    fn is_forgotten(&self, now: Instant, policy: &ThrottlePolicy) -> bool {
        let elapsed = now.saturating_duration_since(self.last_failure);
        self.in_flight == 0 && elapsed >= policy.forget_after().max(self.lockout)
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

    fn admits<Q>(&self, key: &Q, now: Instant, policy: &ThrottlePolicy) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.records.get(key).map_or(Ok(()), |r| r.admits(now, policy))
    }

    fn start(&mut self, key: K, now: Instant, policy: &ThrottlePolicy) {
        let record = self.records.entry(key).or_insert_with(|| Record::new(now));
        record.in_flight = record.in_flight.saturating_add(1);
        if self.records.len() > self.sweep_at {
            self.sweep(now, policy);
        }
    }

    /// Ends an attempt counted by `start`. A record evicted meanwhile is not recreated for a
    /// success; a failure starts a fresh one.
    fn end(&mut self, key: K, failed: bool, now: Instant, policy: &ThrottlePolicy) {
        let record = match (self.records.get_mut(&key), failed) {
            (Some(r), _) => r,
            (None, false) => return,
            (None, true) => self.records.entry(key).or_insert_with(|| Record::new(now)),
        };
        record.in_flight = record.in_flight.saturating_sub(1);
        if !failed {
            return;
        }
        let elapsed = now.saturating_duration_since(record.last_failure);
        if elapsed >= policy.forget_after().max(record.lockout) {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        record.lockout = policy.lockout(record.failures);
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

/// A per-user token bucket of failures allowed from untrusted sources.
#[derive(Debug, Clone)]
struct Budget {
    /// Whole tokens left as of `at`.
    tokens: u32,
    at: Instant,
}

impl Budget {
    fn refill(&mut self, now: Instant, policy: &ThrottlePolicy) {
        let step = Duration::from_secs(policy.user_refill_secs.max(1));
        let elapsed = now.saturating_duration_since(self.at);
        let earned = (elapsed.as_secs() / step.as_secs()).min(u64::from(u32::MAX)) as u32;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(policy.user_budget);
            self.at += step * earned;
        }
        if self.tokens >= policy.user_budget {
            self.at = now;
        }
    }

    fn wait(&self, now: Instant, policy: &ThrottlePolicy) -> Duration {
        let step = Duration::from_secs(policy.user_refill_secs.max(1));
        match self.at.checked_add(step) {
            Some(next) => next.saturating_duration_since(now).max(Duration::from_millis(1)),
            None => Duration::MAX,
        }
    }
}

/// Proof that an attempt was admitted; hand it back to `succeed` or `fail`.
#[derive(Debug)]
#[must_use]
pub struct Ticket {
    user: String,
    source: IpAddr,
    trusted: bool,
}

/// All throttling state. Not synchronized: wrap it in a mutex to share it.
#[derive(Debug)]
pub struct Throttle {
    policy: ThrottlePolicy,
    pairs: Table<(String, IpAddr)>,
    sources: Table<IpAddr>,
    budgets: HashMap<String, Budget>,
    /// (user, source) → time of the last successful login there.
    trusted: HashMap<(String, IpAddr), Instant>,
    max_entries: usize,
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self::with_limits(policy, PRUNE_AT, MAX_ENTRIES)
    }

    fn with_limits(policy: ThrottlePolicy, prune_at: usize, max_entries: usize) -> Self {
        Throttle {
            policy,
            pairs: Table::new(prune_at, max_entries),
            sources: Table::new(prune_at, max_entries),
            budgets: HashMap::new(),
            trusted: HashMap::new(),
            max_entries,
        }
    }

    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// Admits a login attempt for `user` from `ip`, counting it as in flight, or returns how
    /// long to wait ([`IN_FLIGHT`]: until an attempt in flight ends). Nothing is counted for a
    /// refused attempt.
    pub fn begin(&mut self, user: &str, ip: IpAddr, now: Instant) -> Result<Ticket, Duration> {
        let source = source_of(ip);
        let trusted = self.is_trusted(user, source, now);
        let pair = (user.to_owned(), source);
        self.pairs.admits(&pair, now, &self.policy)?;
        if !trusted {
            self.sources.admits(&source, now, &self.policy)?;
            self.take_budget(user, now)?;
        }
        self.pairs.start(pair, now, &self.policy);
        if !trusted {
            self.sources.start(source, now, &self.policy);
        }
        Ok(Ticket { user: user.to_owned(), source, trusted })
    }

    /// The password was right: clears the (user, source) record, returns the budget token and
    /// trusts the source for this user. The source's own record keeps its failures, so owning
    /// one account does not reset a client's counter while it guesses at others.
    pub fn succeed(&mut self, ticket: Ticket, now: Instant) {
        self.pairs.records.remove(&(ticket.user.clone(), ticket.source));
        if !ticket.trusted {
            self.sources.end(ticket.source, false, now, &self.policy);
            if let Some(b) = self.budgets.get_mut(&ticket.user) {
                b.tokens = b.tokens.saturating_add(1).min(self.policy.user_budget);
            }
        }
        if self.trusted.len() >= self.max_entries {
            self.evict_trusted();
        }
        self.trusted.insert((ticket.user, ticket.source), now);
    }

    /// The password was wrong (or the attempt was abandoned).
    pub fn fail(&mut self, ticket: Ticket, now: Instant) {
        self.pairs.end((ticket.user, ticket.source), true, now, &self.policy);
        if !ticket.trusted {
            self.sources.end(ticket.source, true, now, &self.policy);
        }
    }

    fn is_trusted(&self, user: &str, source: IpAddr, now: Instant) -> bool {
        let trust = Duration::from_secs(self.policy.trust_secs);
        // A key of borrowed parts cannot be looked up in a map of owned tuples without a clone.
        self.trusted.get(&(user.to_owned(), source)).is_some_and(|at| now.saturating_duration_since(*at) < trust)
    }

    fn take_budget(&mut self, user: &str, now: Instant) -> Result<(), Duration> {
        let policy = &self.policy;
        if !self.budgets.contains_key(user) {
            if self.budgets.len() >= self.max_entries {
                evict_budgets(&mut self.budgets, self.max_entries);
            }
            self.budgets.insert(user.to_owned(), Budget { tokens: policy.user_budget, at: now });
        }
        let Some(budget) = self.budgets.get_mut(user) else { return Ok(()) };
        budget.refill(now, policy);
        if budget.tokens == 0 {
            return Err(budget.wait(now, policy));
        }
        budget.tokens -= 1;
        Ok(())
    }

    fn evict_trusted(&mut self) {
        let mut ages: Vec<Instant> = self.trusted.values().copied().collect();
        let cut = self.max_entries / 10;
        if cut < ages.len() {
            let (_, nth, _) = ages.select_nth_unstable(cut);
            let nth = *nth;
            self.trusted.retain(|_, at| *at > nth);
        }
    }
}

/// Drops the tenth of the budgets that changed longest ago (most of them refilled by now).
fn evict_budgets(budgets: &mut HashMap<String, Budget>, max_entries: usize) {
    let mut ages: Vec<Instant> = budgets.values().map(|b| b.at).collect();
    let cut = max_entries / 10;
    if cut < ages.len() {
        let (_, nth, _) = ages.select_nth_unstable(cut);
        let nth = *nth;
        budgets.retain(|_, b| b.at > nth);
    }
}

#[cfg(test)]
#[path = "throttle_tests.rs"]
mod tests;
