//! A full disk (QUOTA-9): the server's root lives on a small tmpfs the test mounts. ENOSPC
//! becomes `DiskFull` for the uploading client; the partial is kept, charged and resumable;
//! nothing panics; other users' reads and listings go on; usage equals the disk afterwards;
//! a disk that fills with an upload's last byte still commits it.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use support::*;
use xfer::client::{TransferOptions, TransportChoice};
use xfer::proto::ErrorCode;
use xfer::transfer::progress::{no_progress, Progress, ProgressFn};

const PW: &str = "full-pw";

/// A tmpfs mounted for one test; unmounted (lazily, so a busy file cannot keep it) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot mount a tmpfs (the suite runs as root)");
        Tmpfs { dir: dir.to_path_buf() }
    }

    /// Free bytes on the file system.
    fn avail(&self) -> u64 {
        let out = Command::new("df").args(["-B1", "--output=avail"]).arg(&self.dir).output().expect("df");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("df said {text:?}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A test environment whose server root is on a fresh tmpfs of `size` bytes.
fn env_on_tmpfs(size: u64) -> (TestEnv, Tmpfs) {
    let mut env = TestEnv::new();
    let mnt = Tmpfs::mount(&env.tmp.path().join("mnt"), size);
    env.root = mnt.dir.join("root");
    (env, mnt)
}

fn assert_usage_matches_disk(srv: &TestServer, user: &str) {
    let u = srv.user(user);
    let (mut bytes, mut entries) = (0, 0);
    let mut stack = vec![srv.home(user)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                entries += 1;
                stack.push(e.path());
            } else if ft.is_file() {
                bytes += e.metadata().unwrap().len();
                entries += 1;
            }
        }
    }
    assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (bytes, entries, 0), "store vs disk for {user}");
    assert_eq!(srv.state.store.pending_changes(), 0, "usage changes not written");
}

fn transfer(transport: TransportChoice, resume: bool) -> TransferOptions {
    TransferOptions { resume, transport, rate_limit: None }
}

/// Fills the disk during an upload of `size` bytes, checks every promise, frees space and
/// resumes.
async fn upload_hits_full_disk(transport: TransportChoice, size: u64) {
    let (env, mnt) = env_on_tmpfs(size + 16 * MIB);
    let srv = env.start();
    srv.add_user("alice", PW, 100 * MIB, None);
    srv.add_user("bob", PW, 100 * MIB, None);
    let mut bob = srv.connect("bob", PW).await;
    let small = env.local("small");
    let small_data = make_file(&small, MIB as usize, 1);
    bob.put(&small, "b", false, no_progress()).await.unwrap();
    // Leave 4 MiB free, then upload more.
    let filler = mnt.dir.join("filler");
    std::fs::write(&filler, vec![0u8; (mnt.avail() - 4 * MIB) as usize]).unwrap();
    let big = env.local("big");
    let big_md5 = make_big_file(&big, size, 2);
    let mut alice = srv.connect("alice", PW).await;
    let acked = Arc::new(AtomicU64::new(0));
    let seen = acked.clone();
    let progress: ProgressFn = Arc::new(move |p| {
        if let Progress::Advance { done } = p {
            seen.fetch_max(done, Ordering::Relaxed);
        }
    });
    let err = alice.put_with(&big, "big", &transfer(transport, false), progress).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::DiskFull), "{err}");
    // UDP-END-7: the server ends the flow when the write fails, instead of acking the rest of
    // the file and refusing only its PutEnd (a client that got every ack reports all of it).
    if matches!(transport, TransportChoice::Udp) {
        assert!(acked.load(Ordering::Relaxed) < size, "the whole file was acked before DiskFull");
    }
    assert!(!err.to_string().contains("--"), "library message names a flag: {err}");
    srv.assert_no_panics();
    // The partial is kept and charged; nothing stays reserved.
    let part = srv.home("alice").join(".big.xfer-part");
    assert!(file_len(&part).is_some_and(|n| n > 0), "partial not kept");
    assert!(wait_until(STEP, || srv.user("alice").reserved_bytes == 0).await);
    assert_usage_matches_disk(&srv, "alice");
    // Other users read and list; a new upload is told the disk is full, not `Internal`.
    let copy = env.local("copy");
    bob.get("b", &copy, false, no_progress()).await.expect("read while the disk is full");
    assert_eq!(std::fs::read(&copy).unwrap(), small_data);
    assert_eq!(bob.list("").await.unwrap().len(), 1);
    let two = env.local("two");
    make_file(&two, 2 * MIB as usize, 3);
    let code = code_of(bob.put_with(&two, "two", &transfer(transport, false), no_progress()).await);
    assert_eq!(code, ErrorCode::DiskFull);
    assert!(wait_until(STEP, || srv.user("bob").reserved_bytes == 0).await);
    assert_usage_matches_disk(&srv, "bob");
    // Space comes back: the upload resumes and verifies.
    std::fs::remove_file(&filler).unwrap();
    alice.put_with(&big, "big", &transfer(transport, true), no_progress()).await.expect("resume");
    assert_eq!(md5_file(&srv.home("alice").join("big")), big_md5);
    assert_usage_matches_disk(&srv, "alice");
    srv.assert_no_panics();
}

#[tokio::test]
async fn reports_disk_full_over_tcp_and_resumes_after() {
    guard(upload_hits_full_disk(TransportChoice::Tcp, 8 * MIB)).await
}

/// Over UDP the file is much larger than the free space, so a flow that kept acking after
/// the failed write would show: the client would get to the end before hearing of it.
#[tokio::test]
async fn reports_disk_full_over_udp_promptly_and_resumes_after() {
    guard(upload_hits_full_disk(TransportChoice::Udp, 48 * MIB)).await
}

/// The upload's last byte takes the disk's last free page: the rename and the accounting
/// still go through, the client gets `PutDone`, not `Internal`, and usage equals the disk.
#[tokio::test]
async fn accepts_an_upload_that_fills_the_disk_exactly() {
    guard(async {
        let (env, mnt) = env_on_tmpfs(16 * MIB);
        let srv = env.start();
        srv.add_user("alice", PW, 100 * MIB, None);
        let mut c = srv.connect("alice", PW).await;
        c.mkdir("d").await.unwrap();
        let filler = mnt.dir.join("filler");
        std::fs::write(&filler, vec![0u8; (mnt.avail() - 3 * MIB) as usize]).unwrap();
        let size = mnt.avail();
        let local = env.local("exact");
        let md5 = make_big_file(&local, size, 4);
        let done = c.put(&local, "d/exact", false, no_progress()).await.expect("upload filling the disk");
        assert_eq!(done.size, size);
        assert_eq!(mnt.avail(), 0, "the disk is full");
        assert_eq!(md5_file(&srv.home("alice").join("d/exact")), md5);
        assert_usage_matches_disk(&srv, "alice");
        // Deleting on the full disk is accounted too.
        c.remove("d/exact").await.unwrap();
        assert_usage_matches_disk(&srv, "alice");
        srv.assert_no_panics();
    })
    .await
}
