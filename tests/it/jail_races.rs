//! Time-of-check/time-of-use races against the home jail: while `get`, `put`, `mv` and `ls` run
//! in a loop against a real server, another thread swaps a directory inside the home for a
//! symlink to a directory outside it (absolute and relative links, alternately) and back.
//! Nothing outside may ever be read, created, modified or listed. Bounded in swaps, operations
//! and time.

use crate::support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use support::*;
use xfer::client::ClientError;
use xfer::transfer::progress::no_progress;

const PW: &str = "race-pw";
const INSIDE: &[u8] = b"inside bytes, the user's own\n";
const CANARY: &[u8] = b"CANARY OUTSIDE THE HOME: never to be served\n";
/// Names that exist only outside: seeing one in a listing means the jail listed outside.
const OUTSIDE_ONLY: [&str; 2] = ["canary-only.txt", "outsub"];
/// Upper bounds of the race.
const MAX_ROUNDS: usize = 150;
const MAX_SWAPS: u64 = 2_000_000;
const MAX_TIME: Duration = Duration::from_secs(20);

/// What outside looks like, by stat only (no read, so access times stay as they are).
#[derive(Debug, PartialEq)]
struct Snapshot {
    entries: Vec<(PathBuf, u64, SystemTime, Option<SystemTime>)>,
}

/// Every entry under `dir` (not following links) with length, mtime and, when `atime` is
/// true, access time. The directories are walked with `read_dir`, which reads them: call
/// this before and after the race only, and compare access times of the directories from a
/// snapshot taken without walking (see `stat_only`).
fn snapshot(dir: &Path, atime: bool) -> Snapshot {
    let mut entries = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            entries.push((p, m.len(), m.modified().unwrap(), atime.then(|| m.accessed().unwrap())));
        }
    }
    Snapshot { entries }
}

/// Length, mtime and access time of `paths`, by `lstat` alone.
fn stat_only(paths: &[PathBuf]) -> Vec<(u64, SystemTime, SystemTime)> {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.len(), m.modified().unwrap(), m.accessed().unwrap())
        })
        .collect()
}

/// Sets the access time of `p` to one day before its modification time, so that the next read
/// (of a file) or listing (of a directory) moves it, under `relatime` as under `strictatime`.
fn age_atime(p: &Path) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let old = m.modified().unwrap() - Duration::from_secs(86_400);
    std::fs::File::open(p).unwrap().set_times(std::fs::FileTimes::new().set_accessed(old)).unwrap();
}

/// True if this file system records reads in access times (not `noatime`), checked on a probe
/// file and a probe directory; if not, the read and list checks rest on contents alone.
fn atime_is_recorded(scratch: &Path) -> bool {
    let dir = scratch.join("atime-probe");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("f");
    std::fs::write(&file, b"probe").unwrap();
    age_atime(&file);
    age_atime(&dir);
    let before = stat_only(&[file.clone(), dir.clone()]);
    std::fs::read(&file).unwrap();
    std::fs::read_dir(&dir).unwrap().for_each(drop);
    let after = stat_only(&[file, dir]);
    before[0].2 != after[0].2 && before[1].2 != after[1].2
}

/// The swapping thread: `home/d` is a real directory, then a symlink to `outside`, and back.
fn swap_loop(home: PathBuf, outside: PathBuf, stop: Arc<AtomicBool>, swaps: Arc<AtomicU64>) {
    let (d, parked, link) = (home.join("d"), home.join("parked"), home.join("dlink"));
    let depth = home.components().count();
    let relative: PathBuf =
        std::iter::repeat_n("..", depth).collect::<PathBuf>().join(outside.strip_prefix("/").unwrap());
    let started = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && n < MAX_SWAPS && started.elapsed() < MAX_TIME * 2 {
        let target = if n.is_multiple_of(2) { outside.clone() } else { relative.clone() };
        symlink(&target, &link).unwrap();
        std::fs::rename(&d, &parked).unwrap();
        std::fs::rename(&link, &d).unwrap();
        std::thread::yield_now();
        std::fs::rename(&d, &link).unwrap();
        std::fs::remove_file(&link).unwrap();
        std::fs::rename(&parked, &d).unwrap();
        if n.is_multiple_of(8) {
            // Now and then the real directory stays a little longer, so operations get through.
            std::thread::sleep(Duration::from_millis(1));
        }
        n += 1;
        swaps.store(n, Ordering::Relaxed);
    }
}

/// A refusal is fine; a broken connection or a local failure is not.
fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, ClientError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(ClientError::Server { .. }) => None,
        Err(e) => panic!("{what}: not a server refusal: {e:?}"),
    }
}

#[tokio::test]
async fn keeps_the_jail_while_a_directory_is_swapped_for_a_link_to_outside() {
    guard(async {
        let env = TestEnv::new();
        let srv = env.start();
        srv.add_user("alice", PW, 100 * MIB, None);
        let home = srv.home("alice");
        // Inside: d/f.txt and d/m-a. Outside: the same names with the canary, plus names that
        // exist only outside.
        std::fs::create_dir(home.join("d")).unwrap();
        let mut c = srv.connect("alice", PW).await;
        let inside = env.local("inside");
        std::fs::write(&inside, INSIDE).unwrap();
        c.put(&inside, "d/f.txt", false, no_progress()).await.unwrap();
        c.put(&inside, "d/m-a", false, no_progress()).await.unwrap();
        let outside_tmp = tempfile::tempdir().unwrap();
        let outside = outside_tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        for name in ["f.txt", "m-a", "canary-only.txt"] {
            std::fs::write(outside.join(name), CANARY).unwrap();
        }
        std::fs::create_dir(outside.join("outsub")).unwrap();
        std::fs::write(outside.join("outsub/deep.txt"), CANARY).unwrap();
        let watch_atime = atime_is_recorded(outside_tmp.path());
        let watched: Vec<PathBuf> = ["", "f.txt", "m-a", "canary-only.txt", "outsub", "outsub/deep.txt"]
            .iter()
            .map(|n| if n.is_empty() { outside.clone() } else { outside.join(n) })
            .collect();
        let before = snapshot(&outside, false);
        for p in &watched {
            age_atime(p);
        }
        let before_stat = stat_only(&watched);

        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let swapper = {
            let (home, outside, stop, swaps) = (home.clone(), outside.clone(), stop.clone(), swaps.clone());
            std::thread::spawn(move || swap_loop(home, outside, stop, swaps))
        };

        let upload = env.local("upload");
        std::fs::write(&upload, b"uploaded during the race\n").unwrap();
        let started = Instant::now();
        let (mut got, mut listed, mut put, mut moved) = (0, 0, 0, 0);
        let mut mv_from = "d/m-a";
        for round in 0..MAX_ROUNDS {
            if started.elapsed() > MAX_TIME {
                break;
            }
            let local = env.local("got");
            let _ = std::fs::remove_file(&local);
            if refused("get", c.get("d/f.txt", &local, false, no_progress()).await).is_some() {
                assert_eq!(std::fs::read(&local).unwrap(), INSIDE, "get served bytes from outside");
                got += 1;
            }
            for p in [local.clone(), partial_path(&local)] {
                if let Ok(bytes) = std::fs::read(&p) {
                    assert!(!bytes.windows(CANARY.len()).any(|w| w == CANARY), "canary in {}", p.display());
                }
            }
            let stolen = env.local("stolen");
            assert!(
                refused("get outside-only", c.get("d/canary-only.txt", &stolen, false, no_progress()).await).is_none()
            );
            if let Some(entries) = refused("ls", c.list("d").await) {
                let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
                assert!(!names.iter().any(|n| OUTSIDE_ONLY.contains(n)), "ls listed outside: {names:?}");
                listed += 1;
            }
            assert!(refused("ls outside-only", c.list("d/outsub").await).is_none(), "listed a directory outside");
            if refused("put", c.put(&upload, &format!("d/up-{round}"), false, no_progress()).await).is_some() {
                put += 1;
            }
            let mv_to = if mv_from == "d/m-a" { "d/m-b" } else { "d/m-a" };
            if refused("mv", c.rename(mv_from, mv_to).await).is_some() {
                mv_from = mv_to;
                moved += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().expect("swapper thread");
        let swaps = swaps.load(Ordering::Relaxed);

        // Outside: nothing read or listed (access times), nothing created, changed or removed.
        let after_stat = stat_only(&watched);
        for ((p, b), a) in watched.iter().zip(&before_stat).zip(&after_stat) {
            assert_eq!((b.0, b.1), (a.0, a.1), "{} was modified", p.display());
            if watch_atime {
                assert_eq!(b.2, a.2, "{} was read or listed", p.display());
            }
        }
        assert_eq!(snapshot(&outside, false), before, "entries appeared or changed outside");
        for name in ["f.txt", "m-a", "canary-only.txt", "outsub/deep.txt"] {
            assert_eq!(std::fs::read(outside.join(name)).unwrap(), CANARY);
        }
        // The race ran: swaps happened and every kind of operation also got through.
        assert!(swaps > 10, "only {swaps} swaps");
        assert!(got > 0 && listed > 0 && put > 0 && moved > 0, "get {got}, ls {listed}, put {put}, mv {moved}");
        // What the user did stayed inside, in the real directory.
        assert!(home.join("d").is_dir() && !home.join("parked").exists());
        assert!(home.join("d/m-a").exists() || home.join("d/m-b").exists());
        srv.assert_no_panics();
    })
    .await
}
