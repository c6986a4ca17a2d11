//! Real xfer servers in the S3 profile (PostgreSQL store, `[storage] kind = "s3"` on a real
//! SeaweedFS), driven by the real client: file operations, quotas across two servers, a
//! resume on server B after kill -9 of server A, and the object store stopped mid-upload
//! (STORE-OBJ-*, STORE-CLAIM-1).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::profile::{off, opts, path, s3_env, s3_env_with};
use crate::support::cluster::*;
use crate::support::*;
use xfer::client::TransportChoice;
use xfer::proto::{ErrorCode, Request, Response};
use xfer::storage::object::SEGMENT_SIZE;
use xfer::storage::Storage;
use xfer::transfer::progress::{no_progress, Progress};

use super::store_pg::admin_store;

const PW: &str = "objects-pw";
const MIB: u64 = 1 << 20;
const SEG: u64 = SEGMENT_SIZE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_ls_mv_rm_through_a_server_in_the_s3_profile() {
    // STORE-OBJ-1, -3, -5, -6, -9, -10.
    guard(async {
        let s3 = S3::shared();
        let (url, root) = (Postgres::shared().create_database(), s3.unique_root());
        let env = s3_env(&url, s3, &root);
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        let local = env.local("big");
        let data = make_file(&local, (2 * SEG + 12_345) as usize, 3);
        let mut c = srv.connect("alice", PW).await;
        // STORE-OBJ-9: auto carries the data over UDP in this profile too.
        let s = c.put_with(&local, "big", &opts(TransportChoice::Auto, false), no_progress()).await.unwrap();
        assert_eq!((s.size, s.md5), (data.len() as u64, md5_bytes(&data)));
        assert_eq!(s.transport, xfer::proto::Transport::Udp);
        // UDP asked for: it works, through the staging, with no byte on the server's disk.
        let s = c.put_with(&local, "udp", &opts(TransportChoice::Udp, false), no_progress()).await.unwrap();
        assert_eq!((s.md5, s.transport), (md5_bytes(&data), xfer::proto::Transport::Udp));
        c.remove("udp").await.unwrap();
        assert_eq!(disk_entries(&srv.home("alice")), (0, 0), "no byte on the server's disk");
        let names: Vec<(String, u64)> = c.list("/").await.unwrap().into_iter().map(|e| (e.name, e.size)).collect();
        assert_eq!(names, [("big".to_string(), data.len() as u64)]);
        // STORE-OBJ-11: the tree, attribute and copy requests are served from the namespace.
        let mut raw = srv.raw("alice", PW).await;
        match raw.call(&Request::Walk { path: "/".into() }).await {
            Response::Tree { entries } => assert_eq!(entries.len(), 1, "{entries:?}"),
            other => panic!("Walk answered {other:?}"),
        }
        match raw.call(&Request::Glob { pattern: "*".into() }).await {
            Response::Tree { entries } => assert_eq!(entries[0].path, "/big", "{entries:?}"),
            other => panic!("Glob answered {other:?}"),
        }
        let req = Request::SetAttrs { path: "big".into(), mtime: 1_000_000_000, mode: None, upload_md5: None };
        assert_eq!(raw.call(&req).await, Response::Ok);
        assert_eq!(c.stat("big").await.unwrap().mtime, 1_000_000_000);
        assert_eq!(raw.call(&Request::Copy { from: "big".into(), to: "copy".into() }).await, Response::Ok);
        assert_eq!(raw.call(&Request::Remove { path: "copy".into() }).await, Response::Ok);
        c.mkdir("d").await.unwrap();
        c.rename("big", "d/moved").await.unwrap();
        let back = env.local("back");
        c.get_with("d/moved", &back, &opts(TransportChoice::Auto, false), no_progress()).await.unwrap();
        assert_eq!(md5_file(&back), md5_bytes(&data));
        // A second upload replaces the file; the quota counts one copy.
        c.put_with(&local, "d/moved", &opts(TransportChoice::Tcp, false), no_progress()).await.unwrap();
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (data.len() as u64, 2, 0));
        c.remove("d/moved").await.unwrap();
        assert!(c.list("d").await.unwrap().is_empty());
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (0, 1, 0));
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_uploads_across_two_s3_servers_never_overrun_one_quota() {
    // QUOTA-1, STORE-RES-*: the namespace and the store are sampled throughout.
    guard(async {
        let s3 = S3::shared();
        let (url, root) = (Postgres::shared().create_database(), s3.unique_root());
        let env = s3_env(&url, s3, &root);
        let (a, b) = (env.start(), env.start());
        let quota = 6 * MIB + MIB / 2;
        a.add_user("alice", PW, quota, None);
        const N: usize = 16;
        let mut clients = Vec::new();
        for i in 0..N {
            let local = env.local(&format!("src{i}"));
            make_file(&local, MIB as usize, i as u64 + 1);
            let srv = if i % 2 == 0 { &a } else { &b };
            clients.push((srv.connect("alice", PW).await, local));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (stop, ns) = (stop.clone(), namespace(&url, s3, &root));
            let url = url.clone();
            std::thread::spawn(move || {
                let pg = admin_store(&url);
                let home = ns.backend().home("alice");
                let mut samples = 0;
                for _ in 0..10_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let usage = home.usage().unwrap();
                    let u = pg.get_user("alice").unwrap().unwrap();
                    assert!(usage.bytes <= quota, "{} bytes in the namespace over a {quota} byte quota", usage.bytes);
                    assert!(u.used_bytes + u.reserved_bytes <= quota, "store over quota: {u:?}");
                    samples += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                (samples, ns)
            })
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let mut tasks = Vec::new();
        for (i, (mut c, local)) in clients.into_iter().enumerate() {
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let r = c.put_with(&local, &format!("up{i}"), &opts(TransportChoice::Tcp, false), no_progress()).await;
                r.map(|s| s.size).map_err(|e| e.code())
            }));
        }
        let ok = count_uploads_refused_only_by_quota(tasks, MIB).await;
        stop.store(true, Ordering::SeqCst);
        let (samples, ns) = sampler.join().expect("sampler saw no overrun");
        assert!(samples > 0);
        assert_eq!(ok, 6, "six 1 MiB files fit in 6.5 MiB, and refusals leak nothing");
        let u = a.user("alice");
        assert_eq!((u.used_bytes, u.used_files, u.reserved_bytes), (6 * MIB, 6, 0));
        let usage = off(move || ns.backend().home("alice").usage().unwrap()).await;
        assert_eq!((usage.bytes, usage.entries, usage.partials), (6 * MIB, 6, 0));
        a.assert_no_panics();
        b.assert_no_panics();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_server_a_mid_upload_then_server_b_resumes_with_only_the_missing_bytes() {
    // STORE-OBJ-3, STORE-OBJ-4, STORE-OBJ-10, STORE-CLAIM-1: A is a child process.
    guard(async {
        let s3 = S3::shared();
        let (url, root) = (Postgres::shared().create_database(), s3.unique_root());
        let env = s3_env(&url, s3, &root);
        let b = env.start();
        b.add_user("alice", PW, 256 * MIB, None);
        let log = env.tmp.path().join("a.log");
        let mut a = ServerProcess::start(&env.root, "127.0.0.1:0", &log, &[]);
        let size = 3 * SEG + SEG / 2;
        let data = pseudo_random(size as usize, 9);
        let mut raw = Raw::login(a.socket_addr(), "alice", PW).await;
        assert_eq!(raw.start_put("/big", size, false).await, 0);
        raw.send_range(&data, 0, (2 * SEG + SEG / 2) as usize).await;
        let ns = Arc::new(namespace(&url, s3, &root));
        let staged = {
            let ns = ns.clone();
            move || ns.backend().home("alice").staged_len(&path("/big")).unwrap()
        };
        let probe = staged.clone();
        let recorded = off(move || wait_until_blocking(Duration::from_secs(30), || probe() == Some(2 * SEG))).await;
        assert!(recorded, "A recorded two segments: {:?}", off(staged.clone()).await);
        a.kill();
        drop(raw);
        // B takes the upload over once A's claim lease expired.
        let mut rb = Raw::login(b.addr, "alice", PW).await;
        let req = Request::Put { path: "/big".into(), size, resume: true, transport: xfer::proto::Transport::Tcp };
        let mut ready = None;
        for _ in 0..100 {
            match rb.call(&req).await {
                Response::PutReady { offset, prefix_md5 } => {
                    ready = Some((offset, prefix_md5));
                    break;
                }
                Response::Error { code: ErrorCode::Busy, .. } => tokio::time::sleep(Duration::from_millis(200)).await,
                other => panic!("resume on B: {other:?}"),
            }
        }
        let (offset, prefix_md5) = ready.expect("B accepted the resume within 20 s");
        assert_eq!(offset, 2 * SEG, "B keeps exactly the recorded segments");
        assert_eq!(prefix_md5, Some(md5_bytes(&data[..offset as usize])));
        // Only the missing bytes go on the wire.
        rb.send_range(&data, offset as usize, size as usize).await;
        match rb.call(&Request::PutEnd { md5: md5_bytes(&data) }).await {
            Response::PutDone { size: s, md5 } => assert_eq!((s, md5), (size, md5_bytes(&data))),
            other => panic!("finish on B: {other:?}"),
        }
        let mut c = b.connect("alice", PW).await;
        let back = env.local("back");
        c.get_with("big", &back, &opts(TransportChoice::Tcp, false), no_progress()).await.unwrap();
        assert_eq!(md5_file(&back), md5_bytes(&data));
        assert_eq!(off(staged).await, None, "the upload is finished");
        b.assert_no_panics();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_mid_upload_is_a_clear_error_ls_works_and_the_upload_resumes() {
    // STORE-OBJ-1, STORE-OBJ-8: a private S3 gateway, killed under a running upload.
    guard(async {
        let s3 = Arc::new(S3::start());
        let (url, root) = (Postgres::shared().create_database(), s3.unique_root());
        let env = s3_env(&url, &s3, &root);
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        let local = env.local("big");
        let data = make_file(&local, (3 * SEG + 777) as usize, 5);
        let mut c = srv.connect("alice", PW).await;
        c.put_with(&local, "before", &opts(TransportChoice::Tcp, false), no_progress()).await.unwrap();
        let killed = Arc::new(AtomicBool::new(false));
        let progress: xfer::transfer::progress::ProgressFn = {
            let (s3, killed) = (s3.clone(), killed.clone());
            Arc::new(move |p| {
                if let Progress::Advance { done } = p {
                    if done >= SEG + SEG / 2 && !killed.swap(true, Ordering::SeqCst) {
                        s3.kill();
                    }
                }
            })
        };
        let err = c.put_with(&local, "big", &opts(TransportChoice::Tcp, false), progress).await.unwrap_err();
        assert!(killed.load(Ordering::SeqCst), "S3 was stopped mid-upload");
        assert_eq!(err.code(), Some(ErrorCode::Busy), "{err}");
        assert!(err.to_string().contains("object storage unavailable"), "{err}");
        // The namespace is PostgreSQL's: listing works with S3 down.
        let mut c = srv.connect("alice", PW).await;
        let names: Vec<String> = c.list("/").await.unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["before"], "the unfinished upload is not visible");
        s3.restart();
        let mut done = None;
        for _ in 0..50 {
            match c.put_with(&local, "big", &opts(TransportChoice::Tcp, true), no_progress()).await {
                Ok(s) => {
                    done = Some(s);
                    break;
                }
                Err(e) if e.code() == Some(ErrorCode::Busy) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => panic!("resume after S3 came back: {e}"),
            }
        }
        let s = done.expect("the upload resumes once S3 is back");
        assert_eq!(s.md5, md5_bytes(&data));
        assert_eq!(s.resumed_from % SEG, 0, "a resume keeps whole recorded segments");
        let back = env.local("back");
        c.get_with("big", &back, &opts(TransportChoice::Tcp, false), no_progress()).await.unwrap();
        assert_eq!(md5_file(&back), md5_bytes(&data));
        let u = srv.user("alice");
        assert_eq!((u.used_bytes, u.reserved_bytes), (2 * data.len() as u64, 0));
        srv.assert_no_panics();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_sweep_collects_an_expired_s3_upload_and_releases_its_charge() {
    // QUOTA-7, STORE-OBJ-7: an upload left unfinished expires; its segments go, and so does
    // its charge, while a finished file stays.
    guard(async {
        let s3 = S3::shared();
        let (url, root) = (Postgres::shared().create_database(), s3.unique_root());
        let env = s3_env_with(&url, s3, &root, &[("partial_expiry_secs", "5")]);
        let srv = env.start();
        srv.add_user("alice", PW, 256 * MIB, None);
        let mut c = srv.connect("alice", PW).await;
        let local = env.local("small");
        let small = make_file(&local, MIB as usize, 4);
        c.put_with(&local, "kept", &opts(TransportChoice::Tcp, false), no_progress()).await.unwrap();
        let size = 2 * SEG;
        let data = pseudo_random(size as usize, 8);
        let mut raw = Raw::login(srv.addr, "alice", PW).await;
        assert_eq!(raw.start_put("/left", size, false).await, 0);
        raw.send_range(&data, 0, (SEG + SEG / 2) as usize).await;
        drop(raw);
        let charged = wait_until(Duration::from_secs(20), || srv.user("alice").used_bytes == MIB + SEG).await;
        assert!(charged, "the kept segment is charged: {:?}", srv.user("alice"));
        let ns = Arc::new(namespace(&url, s3, &root));
        let probe = ns.clone();
        let gone = off(move || {
            wait_until_blocking(Duration::from_secs(30), || {
                probe.backend().home("alice").staged_len(&path("/left")).unwrap().is_none()
            })
        })
        .await;
        assert!(gone, "the expired upload was swept");
        let released = wait_until(Duration::from_secs(10), || {
            let u = srv.user("alice");
            (u.used_bytes, u.used_files, u.reserved_bytes) == (MIB, 1, 0)
        })
        .await;
        assert!(released, "its charge was released: {:?}", srv.user("alice"));
        let back = env.local("back");
        c.get_with("kept", &back, &opts(TransportChoice::Tcp, false), no_progress()).await.unwrap();
        assert_eq!(md5_file(&back), md5_bytes(&small));
        srv.assert_no_panics();
    })
    .await
}
