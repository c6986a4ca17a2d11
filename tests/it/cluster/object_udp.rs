//! UDP transfers in the S3 profile (STORE-OBJ-9): real xfer servers on a real PostgreSQL and
//! SeaweedFS, driven by the real client and CLI over real UDP flows on loopback. Uploads go to
//! the staging's segment objects, downloads come from the blob through its ETag-guarded reader.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::profile::{off, opts, path, s3_env};
use crate::support::cluster::*;
use crate::support::*;
use xfer::client::{TransferOptions, TransportChoice};
use xfer::proto::{ErrorCode, Transport};
use xfer::storage::object::SEGMENT_SIZE;
use xfer::storage::Storage;
use xfer::transfer::progress::{no_progress, Progress};

const PW: &str = "objects-udp-pw";
const MIB: u64 = 1 << 20;
const SEG: u64 = SEGMENT_SIZE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_of_a_multi_segment_file_over_udp_in_the_s3_profile() {
    // STORE-OBJ-9: UDP and auto (which picks UDP) both ways, byte exact, nothing on local disk.
    guard(async {
        let s3 = S3::shared();
        let (url, root) = (Postgres::shared().create_database(), s3.unique_root());
        let env = s3_env(&url, s3, &root);
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        let local = env.local("big");
        let data = make_file(&local, (20 * MIB + 12_345) as usize, 21);
        let want = md5_bytes(&data);
        let mut c = srv.connect("alice", PW).await;
        let up = c.put_with(&local, "big", &opts(TransportChoice::Udp, false), no_progress()).await.unwrap();
        assert_eq!((up.size, up.md5, up.transport), (data.len() as u64, want, Transport::Udp));
        let auto = c.put_with(&local, "auto", &opts(TransportChoice::Auto, false), no_progress()).await.unwrap();
        assert_eq!((auto.md5, auto.transport), (want, Transport::Udp), "auto carries the data over UDP");
        assert_eq!(disk_entries(&srv.home("alice")), (0, 0), "no byte on the server's disk");
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (2 * data.len() as u64, 2, 0));
        let ns = namespace(&url, s3, &root);
        let usage = off(move || ns.backend().home("alice").usage().unwrap()).await;
        assert_eq!((usage.bytes, usage.entries, usage.partials), (2 * data.len() as u64, 2, 0));

        let back = env.local("back");
        let down = c.get_with("big", &back, &opts(TransportChoice::Udp, false), no_progress()).await.unwrap();
        assert_eq!((down.md5, down.transport), (want, Transport::Udp));
        assert_eq!(md5_file(&back), want);
        let back_auto = env.local("back-auto");
        let down = c.get_with("auto", &back_auto, &opts(TransportChoice::Auto, false), no_progress()).await.unwrap();
        assert_eq!(down.transport, Transport::Udp, "auto downloads over UDP");
        assert_eq!(md5_file(&back_auto), want);
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_udp_upload_resumes_over_udp_on_the_other_server_with_only_the_missing_bytes() {
    // STORE-OBJ-9, UDP-RESUME-3: the CLI is killed mid-upload on A; what A made durable is
    // whole segments, and B's resume sends only the rest.
    guard(async {
        let s3 = S3::shared();
        let (url, root) = (Postgres::shared().create_database(), s3.unique_root());
        let env = s3_env(&url, s3, &root);
        let (a, b) = (env.start(), env.start());
        a.add_user("alice", PW, 256 * MIB, None);
        let local = env.local("big");
        let data = make_file(&local, (4 * SEG + 4321) as usize, 22);
        let ns = Arc::new(namespace(&url, s3, &root));
        let staged = {
            let ns = ns.clone();
            move || ns.backend().home("alice").staged_len(&path("/big")).unwrap()
        };
        let args = ["put", "big", "--transport", "udp", "--rate-limit", "4M"];
        let mut put = client_cmd(&a.addr_string(), "alice", PW, &env.config_dir, &env.work, &args);
        put.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut child = ChildGuard::spawn(put);
        let probe = staged.clone();
        let grown =
            off(move || wait_until_blocking(Duration::from_secs(60), || probe().is_some_and(|n| n >= SEG))).await;
        assert!(grown, "A recorded a segment: {:?}", off(staged.clone()).await);
        assert!(child.try_wait().is_none(), "test setup: the upload ended on its own");
        child.kill();
        // A notices the lost connection and keeps what is durable, charged to the user.
        assert!(wait_until(Duration::from_secs(20), || a.user("alice").reserved_bytes == 0).await, "A never settled");
        let kept = off(staged.clone()).await.expect("the upload is kept for a resume");
        assert!(kept >= SEG && kept % SEG == 0 && kept < data.len() as u64, "kept {kept}");
        assert_eq!(a.user("alice").used_bytes, kept, "what is kept is charged");

        let mut c = b.connect("alice", PW).await;
        let up = c.put_with(&local, "big", &opts(TransportChoice::Udp, true), no_progress()).await.unwrap();
        assert_eq!(up.transport, Transport::Udp);
        assert!(up.resumed_from >= kept && up.resumed_from % SEG == 0, "resumed from {}", up.resumed_from);
        // Only the missing bytes went on the wire (each once; resends aside), and the first
        // flight that went before the server said what it holds (UDP-CTRL-10).
        let st = up.udp_stats.expect("the client sent over UDP");
        let missing = data.len() as u64 - up.resumed_from;
        let first_flight = xfer::udp::sender::FIRST_FLIGHT_DATAGRAMS * 1472;
        let new_bytes = st.sent_bytes - st.retransmitted_bytes;
        assert!(
            (missing..=missing + first_flight).contains(&new_bytes),
            "a resume from {}: {new_bytes} bytes sent for {missing} missing",
            up.resumed_from
        );
        assert_eq!(up.md5, md5_bytes(&data));
        assert_eq!(off(staged).await, None, "the upload is finished");
        let back = env.local("back");
        c.get_with("big", &back, &opts(TransportChoice::Udp, false), no_progress()).await.unwrap();
        assert_eq!(md5_file(&back), md5_bytes(&data));
        let u = b.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (data.len() as u64, 1, 0));
        a.assert_no_panics();
        b.assert_no_panics();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_upload_past_the_quota_is_refused_before_anything_is_staged() {
    // QUOTA-1, STORE-OBJ-9.
    guard(async {
        let s3 = S3::shared();
        let (url, root) = (Postgres::shared().create_database(), s3.unique_root());
        let env = s3_env(&url, s3, &root);
        let srv = env.start();
        srv.add_user("alice", PW, 10 * MIB, None);
        let local = env.local("big");
        make_file(&local, (20 * MIB) as usize, 23);
        let mut c = srv.connect("alice", PW).await;
        let err = c.put_with(&local, "big", &opts(TransportChoice::Udp, false), no_progress()).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::QuotaExceeded), "{err}");
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (0, 0, 0));
        let ns = namespace(&url, s3, &root);
        assert_eq!(off(move || ns.backend().home("alice").staged_len(&path("/big")).unwrap()).await, None);
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_replaced_mid_udp_download_ends_with_source_changed() {
    // STORE-OBJ-6, STORE-OBJ-9: the flow's reader is ETag guarded; never a mix of two versions.
    guard(async {
        let s3 = S3::shared();
        let (url, root) = (Postgres::shared().create_database(), s3.unique_root());
        let env = s3_env(&url, s3, &root);
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        let local = env.local("big");
        let data = make_file(&local, (48 * MIB) as usize, 24);
        let mut c = srv.connect("alice", PW).await;
        c.put_with(&local, "big", &opts(TransportChoice::Tcp, false), no_progress()).await.unwrap();
        let op = raw_objects(s3, &root);
        let blobs: Vec<String> = op
            .list_with("blobs/")
            .recursive(true)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.path().to_string())
            .filter(|p| !p.ends_with('/'))
            .collect();
        assert_eq!(blobs.len(), 1, "{blobs:?}");
        let started = Arc::new(tokio::sync::Notify::new());
        let progress: xfer::transfer::progress::ProgressFn = {
            let (started, once) = (started.clone(), AtomicBool::new(false));
            Arc::new(move |p| {
                if let Progress::Advance { done } = p {
                    if done >= MIB && !once.swap(true, Ordering::SeqCst) {
                        started.notify_one();
                    }
                }
            })
        };
        let tamper = {
            let (op, key, len) = (op.clone(), blobs[0].clone(), data.len());
            tokio::spawn(async move {
                started.notified().await;
                op.write(&key, pseudo_random(len, 25)).await.unwrap();
            })
        };
        let back = env.local("back");
        let slow = TransferOptions { rate_limit: Some(4 * MIB), ..opts(TransportChoice::Udp, false) };
        let err = c.get_with("big", &back, &slow, progress).await.unwrap_err();
        tokio::time::timeout(Duration::from_secs(30), tamper).await.expect("the blob was replaced").unwrap();
        assert_eq!(err.code(), Some(ErrorCode::SourceChanged), "{err}");
        assert!(!back.exists(), "a download of mixed bytes was presented as complete");
        srv.assert_no_panics();
    })
    .await
}
