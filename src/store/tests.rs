use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use tempfile::TempDir;

use super::*;

const GIB: u64 = 1 << 30;

fn temp_store() -> (TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("users.db")).unwrap());
    (dir, store)
}

/// Adds a user without paying for argon2: usage tests do not need a real hash.
fn add_fast(store: &Store, name: &str, quota: u64, max_files: Option<u64>) {
    store
        .conn()
        .execute(
            "INSERT INTO users (name, hash, quota_bytes, max_files, created_at) VALUES (?1, 'x', ?2, ?3, 0)",
            params![name, to_db(quota), max_files.map(to_db)],
        )
        .unwrap();
}

fn user(store: &Store, name: &str) -> User {
    store.get_user(name).unwrap().unwrap()
}

#[test]
fn open_sets_wal_schema_version_and_pragmas() {
    let (dir, store) = temp_store();
    let conn = store.conn();
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
    let busy: i64 = conn.pragma_query_value(None, "busy_timeout", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(version, schema::SCHEMA_VERSION);
    assert_eq!(sync, 1, "NORMAL");
    assert_eq!(busy, 5000);
    drop(conn);
    assert!(dir.path().join("users.db").exists());
}

#[test]
fn reopening_keeps_users() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    add_fast(&Store::open(&path).unwrap(), "alice", 10, None);
    let again = Store::open(&path).unwrap();
    assert_eq!(user(&again, "alice").quota_bytes, 10);
}

#[test]
fn open_refuses_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let err = Store::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::Db(_)));
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn add_user_then_get_and_list() {
    let (_dir, store) = temp_store();
    store.add_user("bob", "pw-b", 5 * GIB, Some(100)).unwrap();
    store.add_user("alice", "pw-a", GIB, None).unwrap();
    let alice = user(&store, "alice");
    assert_eq!(
        alice,
        User {
            name: "alice".into(),
            quota_bytes: GIB,
            max_files: None,
            used_bytes: 0,
            used_files: 0,
            reserved_bytes: 0,
            reserved_files: 0,
        }
    );
    let names: Vec<_> = store.list_users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(user(&store, "bob").max_files, Some(100));
    assert_eq!(store.get_user("carol").unwrap(), None);
}

#[test]
fn add_user_stores_argon2id_hash_and_created_at() {
    let (_dir, store) = temp_store();
    store.add_user("alice", "hunter2", 1, None).unwrap();
    let (hash, created): (String, i64) = store
        .conn()
        .query_row("SELECT hash, created_at FROM users WHERE name = 'alice'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert!(!hash.contains("hunter2"));
    assert!(created > 1_600_000_000);
}

#[test]
fn duplicate_user_is_rejected() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1, None);
    let err = store.add_user("alice", "pw", 2, None).unwrap_err();
    assert!(matches!(err, StoreError::UserExists(ref n) if n == "alice"), "{err:?}");
    assert_eq!(user(&store, "alice").quota_bytes, 1);
}

#[test]
fn user_names_are_validated() {
    let (_dir, store) = temp_store();
    let too_long = "a".repeat(33);
    for bad in ["", "Alice", "_x", "-x", ".x", "a b", "a/b", "é", "a\u{0}", too_long.as_str()] {
        let err = store.add_user(bad, "pw", 1, None).unwrap_err();
        assert!(matches!(err, StoreError::InvalidName(_)), "{bad:?}: {err:?}");
    }
    let max_len = "b".repeat(32);
    for good in ["a", "0", "a.b-c_d", "9lives", max_len.as_str()] {
        assert!(validate_name(good).is_ok(), "{good:?}");
    }
    assert!(store.list_users().unwrap().is_empty());
}

#[test]
fn verify_password_right_wrong_and_unknown() {
    let (_dir, store) = temp_store();
    store.add_user("alice", "correct", 1, None).unwrap();
    assert!(store.verify_password("alice", "correct").unwrap());
    assert!(!store.verify_password("alice", "wrong").unwrap());
    assert!(!store.verify_password("nobody", "correct").unwrap());
    assert!(!store.verify_password("", "").unwrap());
}

#[test]
fn set_password_replaces_old_one() {
    let (_dir, store) = temp_store();
    store.add_user("alice", "old", 1, None).unwrap();
    store.set_password("alice", "new").unwrap();
    assert!(store.verify_password("alice", "new").unwrap());
    assert!(!store.verify_password("alice", "old").unwrap());
    let err = store.set_password("nobody", "x").unwrap_err();
    assert!(matches!(err, StoreError::NoSuchUser(_)));
}

#[test]
fn set_quota_and_delete_user() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1, None);
    store.set_quota("alice", 2 * GIB, Some(7)).unwrap();
    let alice = user(&store, "alice");
    assert_eq!((alice.quota_bytes, alice.max_files), (2 * GIB, Some(7)));
    store.set_quota("alice", GIB, None).unwrap();
    assert_eq!(user(&store, "alice").max_files, None);
    assert!(matches!(store.set_quota("bob", 1, None), Err(StoreError::NoSuchUser(_))));

    store.delete_user("alice").unwrap();
    assert_eq!(store.get_user("alice").unwrap(), None);
    assert!(matches!(store.delete_user("alice"), Err(StoreError::NoSuchUser(_))));
}

#[test]
fn quota_above_i64_max_is_clamped() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", u64::MAX, Some(u64::MAX));
    let alice = user(&store, "alice");
    assert_eq!(alice.quota_bytes, i64::MAX as u64);
    assert_eq!(alice.max_files, Some(i64::MAX as u64));
    let r = store.reserve("alice", 1 << 62, 1).unwrap();
    let err = store.reserve("alice", 1 << 62, 1).unwrap_err();
    assert!(matches!(err, StoreError::QuotaBytes { .. }), "{err:?}");
    r.release();
}

#[test]
fn reserve_within_quota_and_refuse_beyond() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1000, None);
    store.adjust_usage("alice", 300, 1);
    let r = store.reserve("alice", 500, 1).unwrap();
    assert_eq!((r.bytes(), r.files()), (500, 1));
    let err = store.reserve("alice", 201, 1).unwrap_err();
    match err {
        StoreError::QuotaBytes { needed, available, quota } => {
            assert_eq!((needed, available, quota), (201, 200, 1000));
        }
        other => panic!("unexpected {other:?}"),
    }
    let exact = store.reserve("alice", 200, 0).unwrap();
    let alice = user(&store, "alice");
    assert_eq!((alice.reserved_bytes, alice.reserved_files), (700, 1));
    r.release();
    exact.release();
}

#[test]
fn reserve_respects_file_count_limit() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", GIB, Some(3));
    store.adjust_usage("alice", 0, 1);
    let a = store.reserve("alice", 1, 1).unwrap();
    let b = store.reserve("alice", 1, 1).unwrap();
    let err = store.reserve("alice", 1, 1).unwrap_err();
    assert!(matches!(err, StoreError::QuotaFiles { limit: 3 }), "{err:?}");
    // Overwriting an existing file needs no new file slot.
    let c = store.reserve("alice", 1, 0).unwrap();
    for r in [a, b, c] {
        r.release();
    }
    assert_eq!(user(&store, "alice").reserved_files, 0);
}

#[test]
fn failed_reserve_changes_nothing() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 100, Some(1));
    assert!(store.reserve("alice", 50, 2).is_err());
    assert!(store.reserve("alice", 101, 0).is_err());
    let alice = user(&store, "alice");
    assert_eq!((alice.reserved_bytes, alice.reserved_files), (0, 0));
}

#[test]
fn reserve_for_unknown_user_fails() {
    let (_dir, store) = temp_store();
    let err = store.reserve("ghost", 1, 1).unwrap_err();
    assert!(matches!(err, StoreError::NoSuchUser(ref n) if n == "ghost"), "{err:?}");
}

#[test]
fn lowered_quota_refuses_new_reservations_without_underflow() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1000, None);
    store.adjust_usage("alice", 800, 0);
    store.set_quota("alice", 500, None).unwrap();
    match store.reserve("alice", 1, 0).unwrap_err() {
        StoreError::QuotaBytes { available, .. } => assert_eq!(available, 0),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn commit_moves_reservation_into_usage() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1000, Some(10));
    let r = store.reserve("alice", 600, 1).unwrap();
    r.commit(550, 1);
    let alice = user(&store, "alice");
    assert_eq!((alice.used_bytes, alice.used_files), (550, 1));
    assert_eq!((alice.reserved_bytes, alice.reserved_files), (0, 0));
    // The unused 50 bytes are available again.
    store.reserve("alice", 450, 0).unwrap().release();
}

#[test]
fn commit_with_negative_delta_clamps_at_zero() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1000, None);
    store.adjust_usage("alice", 100, 2);
    let r = store.reserve("alice", 10, 0).unwrap();
    r.commit(-500, -5);
    let alice = user(&store, "alice");
    assert_eq!((alice.used_bytes, alice.used_files, alice.reserved_bytes), (0, 0, 0));
}

#[test]
fn release_after_reconcile_does_not_underflow() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1000, Some(5));
    let r = store.reserve("alice", 400, 1).unwrap();
    store.reconcile_usage("alice", 70, 2).unwrap();
    r.release();
    let alice = user(&store, "alice");
    assert_eq!((alice.used_bytes, alice.used_files), (70, 2));
    assert_eq!((alice.reserved_bytes, alice.reserved_files), (0, 0));
}

#[test]
fn commit_for_deleted_user_is_ok() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1000, None);
    let r = store.reserve("alice", 10, 1).unwrap();
    store.delete_user("alice").unwrap();
    r.commit(10, 1);
    assert_eq!(store.get_user("alice").unwrap(), None);
}

#[test]
fn adjust_usage_applies_deltas_and_clamps() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1000, None);
    store.adjust_usage("alice", 300, 3);
    store.adjust_usage("alice", -100, -1);
    let alice = user(&store, "alice");
    assert_eq!((alice.used_bytes, alice.used_files), (200, 2));
    store.adjust_usage("alice", i64::MIN, i64::MIN);
    let alice = user(&store, "alice");
    assert_eq!((alice.used_bytes, alice.used_files), (0, 0));
    store.adjust_usage("alice", i64::MAX, 0);
    store.adjust_usage("alice", i64::MAX, 0);
    assert_eq!(user(&store, "alice").used_bytes, i64::MAX as u64);
    store.adjust_usage("ghost", 5, 5);
    assert_eq!(store.get_user("ghost").unwrap(), None);
}

#[test]
fn reconcile_sets_usage_and_clears_reservations() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1000, Some(9));
    let _leaked = store.reserve("alice", 900, 5).unwrap();
    store.reconcile_usage("alice", 123, 4).unwrap();
    let alice = user(&store, "alice");
    assert_eq!((alice.used_bytes, alice.used_files), (123, 4));
    assert_eq!((alice.reserved_bytes, alice.reserved_files), (0, 0));
    store.reconcile_usage("ghost", 1, 1).unwrap();
}

/// 16 threads race for one quota; grants must add up to at most the quota, and since demand
/// exceeds it, exactly to it.
#[test]
fn concurrent_reservations_never_exceed_quota() {
    const THREADS: usize = 16;
    const QUOTA: u64 = 1000;
    const CHUNK: u64 = 10;
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", QUOTA, None);
    let granted = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (store, granted, barrier) = (store.clone(), granted.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..20 {
                    match store.reserve("alice", CHUNK, 0) {
                        Ok(r) => {
                            granted.fetch_add(r.bytes(), Ordering::SeqCst);
                            std::mem::forget(r);
                        }
                        Err(StoreError::QuotaBytes { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total = granted.load(Ordering::SeqCst);
    assert!(total <= QUOTA, "granted {total} of {QUOTA}");
    assert_eq!(total, QUOTA);
    assert_eq!(user(&store, "alice").reserved_bytes, total);
}

/// Same race, but each thread has its own `Store` (own connection), as the server and an
/// admin command would: exclusion then rests on SQLite locking, not on the mutex.
#[test]
fn reservations_through_separate_handles_never_exceed_quota() {
    const THREADS: usize = 8;
    const QUOTA: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    add_fast(&Store::open(&path).unwrap(), "alice", QUOTA, Some(1000));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            thread::spawn(move || {
                let store = Arc::new(Store::open(&path).unwrap());
                barrier.wait();
                let mut granted = 0;
                for _ in 0..20 {
                    match store.reserve("alice", 5, 1) {
                        Ok(r) => {
                            granted += r.bytes();
                            // Churn: give some back so commits interleave with reserves.
                            if granted % 20 == 0 {
                                r.commit(5, 1);
                            } else {
                                std::mem::forget(r);
                            }
                        }
                        Err(StoreError::QuotaBytes { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                granted
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let alice = user(&Store::open(&path).unwrap(), "alice");
    assert!(total <= QUOTA, "granted {total} of {QUOTA}");
    assert_eq!(total, QUOTA);
    assert_eq!(alice.used_bytes + alice.reserved_bytes, QUOTA);
    assert_eq!(alice.used_files + alice.reserved_files, QUOTA / 5);
}

#[test]
fn two_handles_see_each_others_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    let server = Arc::new(Store::open(&path).unwrap());
    let admin = Store::open(&path).unwrap();

    admin.add_user("alice", "pw", 100, None).unwrap();
    assert_eq!(user(&server, "alice").quota_bytes, 100);

    admin.set_quota("alice", 5000, Some(2)).unwrap();
    let seen = user(&server, "alice");
    assert_eq!((seen.quota_bytes, seen.max_files), (5000, Some(2)));

    let r = server.reserve("alice", 4000, 1).unwrap();
    assert_eq!(user(&admin, "alice").reserved_bytes, 4000);
    admin.set_password("alice", "new").unwrap();
    assert!(server.verify_password("alice", "new").unwrap());

    admin.delete_user("alice").unwrap();
    assert_eq!(server.get_user("alice").unwrap(), None);
    r.commit(4000, 1);
}

/// QUOTA-2: a reservation dropped on any path releases itself, exactly once.
#[test]
fn dropped_reservation_releases_exactly_once() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1000, Some(10));
    let a = store.reserve("alice", 600, 2).unwrap();
    let b = store.reserve("alice", 300, 1).unwrap();
    drop(a);
    let alice = user(&store, "alice");
    assert_eq!((alice.reserved_bytes, alice.reserved_files), (300, 1), "only the dropped one ended");
    b.release();
    let alice = user(&store, "alice");
    assert_eq!((alice.reserved_bytes, alice.reserved_files, alice.used_bytes), (0, 0, 0));
    // The whole quota is free again: nothing leaked, nothing released twice.
    store.reserve("alice", 1000, 10).unwrap().release();
}

/// QUOTA-2: commit consumes the reservation; its drop must not release a second time (which
/// would lower `reserved_*` held by another upload).
#[test]
fn committed_reservation_is_not_released_again() {
    let (_dir, store) = temp_store();
    add_fast(&store, "alice", 1000, None);
    let other = store.reserve("alice", 400, 1).unwrap();
    let r = store.reserve("alice", 500, 1).unwrap();
    r.commit(450, 1);
    let alice = user(&store, "alice");
    assert_eq!((alice.used_bytes, alice.used_files), (450, 1));
    assert_eq!((alice.reserved_bytes, alice.reserved_files), (400, 1), "the other upload keeps its hold");
    drop(other);
    assert_eq!(user(&store, "alice").reserved_bytes, 0);
}

/// QUOTA-6: without `max_files` the server-wide entry limit applies; the user's own wins.
#[test]
fn default_entry_limit_applies_to_users_without_max_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("users.db")).unwrap().with_default_entry_limit(Some(2)));
    add_fast(&store, "alice", 1000, None);
    add_fast(&store, "bob", 1000, Some(5));
    let _a = store.reserve("alice", 0, 2).unwrap();
    assert!(matches!(store.reserve("alice", 0, 1), Err(StoreError::QuotaFiles { limit: 2 })));
    let _b = store.reserve("bob", 0, 5).unwrap();
}

/// QUOTA-8: a resume map over the limit is refused, one at the limit kept.
#[test]
fn rejects_range_maps_over_the_limit() {
    let (_dir, store) = temp_store();
    let ranges: Vec<(u64, u64)> = (0..=MAX_SAVED_RANGES as u64).map(|i| (2 * i, 2 * i + 1)).collect();
    let err = store.save_ranges("alice", "/f", 1 << 20, &ranges).unwrap_err();
    assert!(matches!(err, StoreError::TooManyRanges { .. }), "{err:?}");
    assert_eq!(store.load_ranges("alice", "/f").unwrap(), None);
    store.save_ranges("alice", "/f", 1 << 20, &ranges[..MAX_SAVED_RANGES]).unwrap();
    assert_eq!(store.load_ranges("alice", "/f").unwrap().unwrap().1.len(), MAX_SAVED_RANGES);
    assert_eq!(store.range_map_paths("alice").unwrap(), ["/f"]);
}

/// QUOTA-9: the store keeps free pages so that accounting updates find room on a full disk.
#[test]
fn open_keeps_free_pages_as_headroom() {
    let (_dir, store) = temp_store();
    let free: i64 = store.conn().pragma_query_value(None, "freelist_count", |r| r.get(0)).unwrap();
    assert!(free >= 256, "free pages {free}");
}
