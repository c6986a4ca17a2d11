//! The throttle in virtual time (CTRL-AUTH-2, CTRL-AUTH-4, CTRL-AUTH-5).

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const SEC: Duration = Duration::from_secs(1);

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xC000_0200 + n))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One complete failed attempt; panics if it was refused.
fn fail(t: &mut Throttle, user: &str, from: IpAddr, now: Instant) {
    let ticket = t.begin(user, from, now).expect("attempt admitted");
    t.fail(ticket, now);
}

fn succeed(t: &mut Throttle, user: &str, from: IpAddr, now: Instant) {
    let ticket = t.begin(user, from, now).expect("attempt admitted");
    t.succeed(ticket, now);
}

fn admitted(t: &mut Throttle, user: &str, from: IpAddr, now: Instant) -> Result<(), Duration> {
    t.begin(user, from, now).map(|ticket| t.succeed(ticket, now))
}

#[test]
fn default_policy_matches_documented_values() {
    let p = ThrottlePolicy::default();
    assert_eq!((p.free_failures, p.base_delay_ms, p.max_delay_ms, p.forget_after_secs), (3, 1000, 60_000, 900));
    assert_eq!((p.user_budget, p.user_refill_secs, p.trust_secs), (20, 30, 30 * 86_400));
}

#[test]
fn policy_deserializes_with_defaults_for_missing_fields() {
    let p: ThrottlePolicy = toml::from_str("free_failures = 5").unwrap();
    assert_eq!(p.free_failures, 5);
    assert_eq!(p.max_delay_ms, 60_000);
    assert!(toml::from_str::<ThrottlePolicy>("no_such_key = 1").is_err());
}

#[test]
fn free_failures_do_not_lock() {
    let mut t = Throttle::new(ThrottlePolicy::default());
    let now = Instant::now();
    for _ in 0..3 {
        fail(&mut t, "alice", ip(1), now);
    }
    assert!(t.begin("alice", ip(1), now).is_ok());
}

#[test]
fn backoff_doubles_after_free_failures() {
    let mut t = Throttle::new(ThrottlePolicy::default());
    let mut now = Instant::now();
    for _ in 0..3 {
        fail(&mut t, "alice", ip(1), now);
    }
    for expected in [1000, 2000, 4000, 8000, 16_000, 32_000] {
        fail(&mut t, "alice", ip(1), now);
        assert_eq!(t.begin("alice", ip(1), now).unwrap_err(), ms(expected));
        assert_eq!(t.begin("alice", ip(1), now + ms(expected - 1)).unwrap_err(), ms(1));
        now += ms(expected);
    }
}

#[test]
fn rejects_parallel_guesses_beyond_the_free_failures_before_any_is_verified() {
    // CTRL-AUTH-4: 64 simultaneous attempts from one source; only free_failures + 1 get in.
    let mut t = Throttle::new(ThrottlePolicy::default());
    let now = Instant::now();
    let tickets: Vec<Ticket> = (0..64).filter_map(|_| t.begin("alice", ip(1), now).ok()).collect();
    assert_eq!(tickets.len(), 4);
    for ticket in tickets {
        t.fail(ticket, now);
    }
    assert_eq!(t.begin("alice", ip(1), now).unwrap_err(), SEC, "the 4 failures lock as if sequential");
}

#[test]
fn rejects_parallel_guesses_across_names_from_one_source() {
    let mut t = Throttle::new(ThrottlePolicy::default());
    let now = Instant::now();
    let admitted = (0..64).filter(|n| t.begin(&format!("user{n}"), ip(1), now).is_ok()).count();
    assert_eq!(admitted, 4, "the source key counts attempts in flight too");
}

#[test]
fn accepts_one_attempt_at_a_time_after_the_free_failures() {
    let policy = ThrottlePolicy { base_delay_ms: 10, max_delay_ms: 10, ..ThrottlePolicy::default() };
    let mut t = Throttle::new(policy);
    let now = Instant::now();
    for _ in 0..4 {
        fail(&mut t, "alice", ip(1), now);
    }
    let later = now + ms(10);
    let first = t.begin("alice", ip(1), later).expect("lockout over");
    assert_eq!(t.begin("alice", ip(1), later).unwrap_err(), IN_FLIGHT, "a second one waits for the first");
    t.succeed(first, later);
    assert!(t.begin("alice", ip(1), later).is_ok());
}

#[test]
fn user_lockout_from_rotating_sources_spares_a_trusted_source() {
    // CTRL-AUTH-5: the attack of the audit, in virtual time. Alice logged in from ip(0)
    // before; an attacker rotates through 200 sources for two minutes.
    let mut t = Throttle::new(ThrottlePolicy::default());
    let start = Instant::now();
    succeed(&mut t, "alice", ip(0), start);
    let mut checked = 0;
    for step in 0..1200u32 {
        let now = start + ms(100 * u64::from(step));
        if let Ok(ticket) = t.begin("alice", ip(1 + step % 200), now) {
            checked += 1;
            t.fail(ticket, now);
        }
        if step % 20 == 0 {
            assert_eq!(admitted(&mut t, "alice", ip(0), now), Ok(()), "owner locked out at step {step}");
        }
    }
    // The budget (20) plus one refill per 30 s over 120 s.
    assert!(checked <= 20 + 4, "the attacker got {checked} password checks");
}

#[test]
fn rejects_untrusted_sources_once_the_user_budget_is_spent_and_refills_it() {
    let policy = ThrottlePolicy { user_budget: 3, user_refill_secs: 10, ..ThrottlePolicy::default() };
    let mut t = Throttle::new(policy);
    let now = Instant::now();
    for n in 0..3 {
        fail(&mut t, "alice", ip(n), now);
    }
    assert_eq!(t.begin("alice", ip(50), now).unwrap_err(), Duration::from_secs(10));
    assert!(t.begin("bob", ip(50), now).is_ok(), "other users are not affected");
    let later = now + Duration::from_secs(10);
    fail(&mut t, "alice", ip(51), later);
    assert!(t.begin("alice", ip(52), later).is_err(), "one token per refill step");
}

#[test]
fn success_returns_the_budget_token() {
    let policy = ThrottlePolicy { user_budget: 1, ..ThrottlePolicy::default() };
    let mut t = Throttle::new(policy);
    let now = Instant::now();
    succeed(&mut t, "alice", ip(1), now);
    succeed(&mut t, "alice", ip(2), now);
    assert!(t.begin("alice", ip(3), now).is_ok());
}

#[test]
fn trust_expires_after_trust_secs() {
    let policy = ThrottlePolicy { user_budget: 1, trust_secs: 100, ..ThrottlePolicy::default() };
    let mut t = Throttle::new(policy);
    let now = Instant::now();
    succeed(&mut t, "alice", ip(0), now);
    let later = now + Duration::from_secs(100);
    fail(&mut t, "alice", ip(9), later); // spends the budget
    assert!(t.begin("alice", ip(0), later).is_err(), "no longer trusted: waits for the budget");
}

#[test]
fn trusted_source_is_still_slowed_by_its_own_failures() {
    let mut t = Throttle::new(ThrottlePolicy::default());
    let now = Instant::now();
    succeed(&mut t, "alice", ip(0), now);
    for _ in 0..4 {
        fail(&mut t, "alice", ip(0), now);
    }
    assert_eq!(t.begin("alice", ip(0), now).unwrap_err(), SEC);
}

#[test]
fn source_lockout_applies_across_user_names() {
    let mut t = Throttle::new(ThrottlePolicy::default());
    let now = Instant::now();
    for user in ["a", "b", "c", "d"] {
        fail(&mut t, user, ip(7), now);
    }
    assert_eq!(t.begin("fresh-user", ip(7), now).unwrap_err(), SEC);
    assert!(t.begin("fresh-user", ip(8), now).is_ok());
    assert!(t.begin("a", ip(8), now).is_ok(), "one failure per user stays free");
}

#[test]
fn success_clears_the_pair_but_not_the_source() {
    let mut t = Throttle::new(ThrottlePolicy::default());
    let now = Instant::now();
    for _ in 0..3 {
        fail(&mut t, "alice", ip(1), now);
    }
    succeed(&mut t, "alice", ip(1), now);
    fail(&mut t, "mallory", ip(1), now);
    assert_eq!(t.begin("bob", ip(1), now).unwrap_err(), SEC, "source counter kept counting");
    assert!(t.begin("alice", ip(1), now).is_ok(), "alice is trusted there now");
}

#[test]
fn ipv6_sources_are_grouped_by_64_prefix() {
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(source_of(a), source_of(b));
    assert_ne!(source_of(a), source_of(c));
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
    assert_eq!(source_of(mapped), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    assert_eq!(source_of(IpAddr::V6(Ipv6Addr::LOCALHOST)), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
}

#[test]
fn delay_is_capped_and_never_overflows() {
    let policy =
        ThrottlePolicy { free_failures: 0, max_delay_ms: 5000, user_budget: u32::MAX, ..ThrottlePolicy::default() };
    let mut t = Throttle::new(policy);
    let mut now = Instant::now();
    let mut seen = Vec::new();
    for _ in 0..40 {
        fail(&mut t, "alice", ip(0), now);
        let wait = t.begin("alice", ip(0), now).unwrap_err();
        seen.push(wait);
        now += wait;
    }
    assert_eq!(seen[..5], [ms(1000), ms(2000), ms(4000), ms(5000), ms(5000)]);
    assert!(seen.iter().all(|d| *d <= ms(5000)));
}

#[test]
fn huge_policy_values_do_not_panic() {
    let policy = ThrottlePolicy {
        free_failures: 0,
        base_delay_ms: u64::MAX,
        max_delay_ms: u64::MAX,
        forget_after_secs: u64::MAX,
        user_budget: u32::MAX,
        user_refill_secs: u64::MAX,
        trust_secs: u64::MAX,
    };
    let mut t = Throttle::new(policy);
    let now = Instant::now();
    fail(&mut t, "alice", ip(1), now);
    assert_eq!(t.begin("alice", ip(1), now).unwrap_err(), ms(u64::MAX));
    succeed(&mut t, "bob", ip(2), now);
    assert!(t.begin("bob", ip(2), now + Duration::from_secs(1 << 40)).is_ok());
}

#[test]
fn failures_are_forgotten_after_forget_after() {
    let mut t = Throttle::new(ThrottlePolicy::default());
    let start = Instant::now();
    for _ in 0..3 {
        fail(&mut t, "alice", ip(1), start);
    }
    let later = start + Duration::from_secs(900);
    fail(&mut t, "alice", ip(1), later);
    assert!(t.begin("alice", ip(1), later).is_ok(), "counter restarted");
}

#[test]
fn forgotten_records_are_pruned_when_map_grows() {
    let mut t = Throttle::with_limits(ThrottlePolicy::default(), 10, 1000);
    let start = Instant::now();
    for n in 0..10 {
        fail(&mut t, &format!("old{n}"), ip(n), start);
    }
    assert_eq!(t.pairs.records.len(), 10);
    let later = start + Duration::from_secs(901);
    fail(&mut t, "new", ip(100), later);
    assert_eq!(t.pairs.records.len(), 1);
    assert_eq!(t.sources.records.len(), 1);
}

#[test]
fn live_records_are_capped_by_evicting_oldest() {
    let policy = ThrottlePolicy { free_failures: 0, ..ThrottlePolicy::default() };
    let mut t = Throttle::with_limits(policy, 10, 100);
    let start = Instant::now();
    for n in 0..1000u32 {
        let now = start + ms(u64::from(n));
        fail(&mut t, &format!("u{n}"), ip(n), now);
        assert!(t.pairs.records.len() <= 100);
        assert!(t.sources.records.len() <= 100);
        assert!(t.budgets.len() <= 100);
    }
    let now = start + ms(999);
    assert!(t.begin("x", ip(999), now).is_err(), "newest source kept");
}

#[test]
fn trusted_map_is_capped() {
    let mut t = Throttle::with_limits(ThrottlePolicy::default(), 10, 100);
    let start = Instant::now();
    for n in 0..1000u32 {
        succeed(&mut t, &format!("u{n}"), ip(n), start + ms(u64::from(n)));
        assert!(t.trusted.len() <= 100);
    }
}
