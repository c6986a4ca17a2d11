//! The PostgreSQL store itself against a real PostgreSQL (STORE-*): two handles on one
//! database stand for two servers.

use std::net::IpAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::support::cluster::Postgres;
use crate::support::wait_until_blocking;
use xfer::store::postgres::{PgOptions, PgStore};
use xfer::store::{StoreError, UserStore};

const MIB: u64 = 1 << 20;

pub fn server_store(url: &str, lease: Duration) -> PgStore {
    let opts = PgOptions { lease, heartbeat: true, ..PgOptions::default() };
    PgStore::connect(url, opts).expect("connect to PostgreSQL")
}

pub fn admin_store(url: &str) -> PgStore {
    PgStore::connect(url, PgOptions::default()).expect("connect to PostgreSQL")
}

fn reserved(s: &dyn UserStore, name: &str) -> (u64, u64) {
    let u = s.get_user(name).unwrap().unwrap();
    (u.reserved_bytes, u.reserved_files)
}

#[test]
fn pg_store_keeps_accounts_passwords_and_generations() {
    let url = Postgres::shared().create_database();
    let s = admin_store(&url);
    assert_eq!(s.latest_auth_generation().unwrap(), 0);
    s.add_user("alice", "pw", 10 * MIB, Some(5)).unwrap();
    assert!(matches!(s.add_user("alice", "pw", 1, None), Err(StoreError::UserExists(_))));
    assert!(matches!(s.add_user("Bad/Name", "pw", 1, None), Err(StoreError::InvalidName(_))));
    s.add_user("bob", "pw", MIB, None).unwrap();
    let names: Vec<_> = s.list_users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(s.verify_password("alice", "pw").unwrap());
    assert!(!s.verify_password("alice", "nope").unwrap());
    assert!(!s.verify_password("nobody", "pw").unwrap());
    let first = s.login_record("alice").unwrap().unwrap().generation;
    s.set_quota("alice", 20 * MIB, None).unwrap();
    let alice = s.get_user("alice").unwrap().unwrap();
    assert_eq!((alice.quota_bytes, alice.max_files), (20 * MIB, None));
    assert_eq!(s.login_record("alice").unwrap().unwrap().generation, first, "quota is no credential");
    s.set_password("alice", "new").unwrap();
    let second = s.login_record("alice").unwrap().unwrap().generation;
    assert!(second > first);
    assert!(s.verify_password("alice", "new").unwrap());
    // A second handle (another server) sees every change since `first`, in order.
    let other = admin_store(&url);
    let changes = other.auth_changes_since(first).unwrap();
    assert_eq!(changes.last(), Some(&("alice".to_string(), second)), "{changes:?}");
    s.delete_user("alice").unwrap();
    assert!(matches!(s.delete_user("alice"), Err(StoreError::NoSuchUser(_))));
    assert!(other.auth_changes_since(second).unwrap().iter().any(|(n, g)| n == "alice" && *g > second));
    assert_eq!(other.login_record("alice").unwrap(), None);
    // Resume maps.
    s.save_ranges("bob", "/f", 100, &[(0, 10), (20, 30)]).unwrap();
    assert_eq!(other.load_ranges("bob", "/f").unwrap(), Some((100, vec![(0, 10), (20, 30)])));
    assert_eq!(other.range_map_paths("bob").unwrap(), ["/f"]);
    other.delete_ranges("bob", "/f").unwrap();
    assert_eq!(s.load_ranges("bob", "/f").unwrap(), None);
}

#[test]
fn pg_reservations_never_overrun_a_quota_reserved_from_two_servers() {
    // STORE-LEASE-1: 2 handles x 8 threads race for 1 MiB pieces of a 10.5 MiB quota.
    let url = Postgres::shared().create_database();
    let a = Arc::new(server_store(&url, Duration::from_secs(30)));
    let b = Arc::new(server_store(&url, Duration::from_secs(30)));
    a.add_user("alice", "pw", 10 * MIB + MIB / 2, Some(8)).unwrap();
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let (s, barrier) = (if i % 2 == 0 { a.clone() } else { b.clone() }, barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut held = Vec::new();
                for _ in 0..5 {
                    match s.reserve("alice", MIB, 0) {
                        Ok(r) => held.push(r),
                        Err(StoreError::QuotaBytes { .. }) => {}
                        Err(e) => panic!("unexpected: {e}"),
                    }
                }
                held
            })
        })
        .collect();
    let held: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(held.len(), 10, "exactly ten 1 MiB reservations fit");
    assert_eq!(reserved(&*a, "alice"), (10 * MIB, 0));
    assert_eq!(a.reservations_of("alice").unwrap().len(), 10);
    // Files: at most 8 entries, the ninth is refused.
    let files: Vec<_> = (0..8).map(|_| b.reserve("alice", 0, 1).unwrap()).collect();
    assert!(matches!(b.reserve("alice", 0, 1), Err(StoreError::QuotaFiles { limit: 8 })));
    drop(files);
    // Commit two, release the rest: usage gets the commits only, nothing stays reserved.
    let mut held = held.into_iter();
    held.next().unwrap().commit(MIB as i64, 1);
    held.next().unwrap().commit(MIB as i64, 1);
    drop(held);
    let settled = wait_until_blocking(Duration::from_secs(10), || reserved(&*a, "alice") == (0, 0));
    assert!(settled, "releases did not arrive: {:?}", reserved(&*a, "alice"));
    let u = a.get_user("alice").unwrap().unwrap();
    assert_eq!((u.used_bytes, u.used_files), (2 * MIB, 2));
    assert!(a.reservations_of("alice").unwrap().is_empty());
}

#[test]
fn pg_reservations_of_a_dead_server_end_once_their_lease_expires() {
    // STORE-LEASE-2, STORE-LEASE-3.
    let url = Postgres::shared().create_database();
    let lease = Duration::from_millis(1500);
    let a = server_store(&url, lease);
    a.add_user("alice", "pw", 10 * MIB, None).unwrap();
    let dead = a.reserve("alice", 3 * MIB, 1).unwrap();
    let b = server_store(&url, lease);
    let alive = b.reserve("alice", 2 * MIB, 0).unwrap();
    // A dies: its runtime stops, its reservation is neither committed nor released.
    std::mem::forget(dead);
    drop(a);
    // A restarting server C reconciles: B's and A's leases are both still live, both kept.
    let c = server_store(&url, lease);
    c.reconcile_usage("alice", 0, 0).unwrap();
    assert_eq!(reserved(&c, "alice"), (5 * MIB, 1), "a live lease must survive another server's start");
    // After A's lease expires, a heartbeat (B's or C's) gives its quota back; B's stays.
    let reclaimed = wait_until_blocking(Duration::from_secs(15), || reserved(&c, "alice") == (2 * MIB, 0));
    assert!(reclaimed, "{:?}", reserved(&c, "alice"));
    // B's lease is renewed by its heartbeat well past one lease.
    std::thread::sleep(lease * 2);
    assert_eq!(reserved(&c, "alice"), (2 * MIB, 0));
    alive.commit(2 * MIB as i64, 0);
    assert_eq!(reserved(&c, "alice"), (0, 0));
    assert_eq!(c.get_user("alice").unwrap().unwrap().used_bytes, 2 * MIB);
    assert_eq!(c.reclaim_expired().unwrap(), 0, "nothing ends twice");
}

#[test]
fn pg_upload_claims_admit_one_writer_across_servers() {
    // STORE-CLAIM-1, STORE-CLAIM-2.
    let url = Postgres::shared().create_database();
    let lease = Duration::from_millis(1500);
    let a = server_store(&url, lease);
    let b = server_store(&url, lease);
    let first = a.claim_upload("alice", "/f").unwrap().expect("free");
    assert!(b.claim_upload("alice", "/f").unwrap().is_none(), "taken on the other server");
    assert_eq!(b.claimed_paths("alice").unwrap(), ["/f"]);
    assert!(b.claim_upload("alice", "/g").unwrap().is_some(), "other paths are free");
    let e1 = first.epoch();
    drop(first);
    let mut second = None;
    wait_until_blocking(Duration::from_secs(10), || {
        second = b.claim_upload("alice", "/f").unwrap();
        second.is_some()
    });
    let second = second.expect("released claim taken again");
    assert!(second.epoch() > e1);
    // A claim of a server that died ends with its lease.
    std::mem::forget(second);
    drop(b);
    let mut third = None;
    let taken = wait_until_blocking(Duration::from_secs(15), || {
        third = a.claim_upload("alice", "/f").unwrap();
        third.is_some()
    });
    assert!(taken, "a dead server's claim must expire");
}

#[test]
fn pg_login_failures_count_on_every_server() {
    // STORE-THROTTLE-1: failures recorded through A lock the key on B.
    let url = Postgres::shared().create_database();
    let (a, b) = (admin_store(&url), admin_store(&url));
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    for _ in 0..3 {
        a.record_login("alice", ip, false).unwrap();
        assert_eq!(b.shared_lockout("alice", ip).unwrap(), None, "free failures lock nothing");
    }
    a.record_login("alice", ip, false).unwrap();
    let wait = b.shared_lockout("alice", ip).unwrap().expect("locked after the free failures");
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    assert!(b.shared_lockout("alice", "192.0.2.8".parse().unwrap()).unwrap().is_none(), "other sources");
    // The source key also locks other user names from that address.
    assert!(b.shared_lockout("bob", ip).unwrap().is_some());
}

#[test]
fn pg_down_is_a_clear_error_and_the_store_recovers() {
    // STORE-PG-6: a private server, killed and restarted.
    let pg = Postgres::start();
    let url = pg.create_database();
    let s = server_store(&url, Duration::from_secs(30));
    s.add_user("alice", "pw", 10 * MIB, None).unwrap();
    let held = s.reserve("alice", MIB, 0).unwrap();
    // The test server runs with synchronous_commit=off: let its WAL writer (every 200 ms)
    // write the commits above before the crash, as a durable server would have at commit.
    std::thread::sleep(Duration::from_secs(1));
    pg.kill();
    let start = Instant::now();
    let err = s.reserve("alice", MIB, 0).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(matches!(s.get_user("alice"), Err(StoreError::Unavailable(_))));
    assert!(start.elapsed() < Duration::from_secs(60), "bounded retries");
    pg.restart();
    let mut last = None;
    for _ in 0..50 {
        match s.get_user("alice") {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(last.is_none(), "the store recovers once PostgreSQL is back: {last:?}");
    assert_eq!(reserved(&s, "alice"), (MIB, 0), "nothing lost or doubled across the outage");
    held.commit(MIB as i64, 1);
    let u = s.get_user("alice").unwrap().unwrap();
    assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (MIB, 1, 0));
}

#[test]
fn pg_credential_changes_are_announced_to_other_servers() {
    // STORE-REVOKE-1: B's listener wakes on a change A makes; no poll is involved here.
    let url = Postgres::shared().create_database();
    let a = admin_store(&url);
    let b = server_store(&url, Duration::from_secs(30));
    let signal = b.change_signal().expect("a PostgreSQL server store listens");
    a.add_user("alice", "pw", MIB, None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    // The listener may connect after the first change: repeat the change until one arrives.
    let heard = rt.block_on(async {
        for _ in 0..20 {
            a.set_password("alice", "again").unwrap();
            if tokio::time::timeout(Duration::from_millis(500), signal.notified()).await.is_ok() {
                return true;
            }
        }
        false
    });
    assert!(heard, "no announcement reached the other server");
}
