//! Reservation throughput on PostgreSQL (run by benches/store_reserve.sh; ignored in the
//! suite). Prints figures, asserts only correctness: never over quota, nothing left reserved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::support::cluster::Postgres;
use crate::support::wait_until_blocking;
use xfer::store::{Store, StoreError, UserStore};

use super::store_pg::server_store;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Every store handle runs `threads` threads, each reserving 1 KiB and ending it (half
/// commit with no usage change, half release) for `secs`.
fn run(stores: &[Arc<dyn UserStore>], threads: usize, secs: u64) -> (u64, u64, f64) {
    let (done, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let barrier = Arc::new(Barrier::new(stores.len() * threads));
    let start = Instant::now();
    let handles: Vec<_> = stores
        .iter()
        .flat_map(|s| (0..threads).map(move |t| (s.clone(), t)))
        .map(|(s, t)| {
            let (done, refused, barrier) = (done.clone(), refused.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let end = Instant::now() + Duration::from_secs(secs);
                let mut n = 0u64;
                while Instant::now() < end {
                    match s.reserve("bench", 1024, 0) {
                        Ok(r) if (n + t as u64).is_multiple_of(2) => r.commit(0, 0),
                        Ok(r) => r.release(),
                        Err(StoreError::QuotaBytes { .. }) => drop(refused.fetch_add(1, Ordering::Relaxed)),
                        Err(e) => panic!("{e}"),
                    }
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    (done.load(Ordering::Relaxed), refused.load(Ordering::Relaxed), start.elapsed().as_secs_f64())
}

#[test]
#[ignore = "benchmark: benches/store_reserve.sh"]
fn bench_reservations() {
    let secs = env_or("SECS", 5);
    let threads = env_or("THREADS", 8) as usize;
    let fit = 64;
    println!("| store | servers x threads | reservations/s | refused (quota) |");
    println!("|---|---|---|---|");
    for servers in [1usize, 2] {
        let url = Postgres::shared().create_database();
        let stores: Vec<Arc<dyn UserStore>> =
            (0..servers).map(|_| Arc::new(server_store(&url, Duration::from_secs(30))) as Arc<dyn UserStore>).collect();
        stores[0].add_user("bench", "pw", fit * 1024, None).unwrap();
        let (n, refused, s) = run(&stores, threads, secs);
        println!("| PostgreSQL | {servers} x {threads} | {:.0} | {refused} |", n as f64 / s);
        let clear = wait_until_blocking(Duration::from_secs(10), || {
            stores[0].get_user("bench").unwrap().unwrap().reserved_bytes == 0
        });
        assert!(clear, "reservations left behind");
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn UserStore> = Arc::new(Store::open(&dir.path().join("x.db")).unwrap());
    sqlite.add_user("bench", "pw", fit * 1024, None).unwrap();
    let (n, refused, s) = run(std::slice::from_ref(&sqlite), threads, secs);
    println!("| SQLite (embedded) | 1 x {threads} | {:.0} | {refused} |", n as f64 / s);
    assert_eq!(sqlite.get_user("bench").unwrap().unwrap().reserved_bytes, 0);
}
