//! kill -9 of the server during 20 concurrent uploads (OPS-USAGE-1, CTRL-PUT-5, QUOTA-2):
//! after the restart no visible file is corrupt, usage equals the disk, and every upload
//! resumes (over TCP and UDP) and verifies.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::*;
use xfer::client::{Client, TransferOptions, TransportChoice};
use xfer::conn::FrameWriter;
use xfer::proto::{DataChunk, Request, Transport, CHUNK_SIZE};
use xfer::store::Store;
use xfer::transfer::progress::no_progress;

const PW: &str = "crash-pw";
const UPLOADS: usize = 20;
const SIZE: usize = 4 * MIB as usize;

fn assert_usage_matches_disk(root: &Path) {
    let u = Store::open(&root.join("xfer.db")).unwrap().get_user("alice").unwrap().unwrap();
    let disk = disk_entries(&root.join("homes/alice"));
    assert_eq!((u.used_bytes, u.used_files), disk, "store vs disk");
    assert_eq!(u.reserved_bytes, 0, "reservations survived the restart");
}

/// Sends one upload's data a chunk at a time (with a pause, so uploads are mid-flight when the
/// server dies), then `PutEnd`; stops quietly at the first error.
async fn upload(addr: std::net::SocketAddr, name: String, data: Arc<Vec<u8>>) {
    let mut raw = Raw::login(addr, "alice", PW).await;
    let req = Request::Put { path: name, size: data.len() as u64, resume: false, transport: Transport::Tcp };
    if raw.try_send(&req).await.is_err() || raw.frame().await.is_err() {
        return;
    }
    for start in (0..data.len()).step_by(CHUNK_SIZE / 4) {
        let end = (start + CHUNK_SIZE / 4).min(data.len());
        let chunk = DataChunk::new(start as u64, Bytes::copy_from_slice(&data[start..end]));
        let mut w = FrameWriter::new(&mut raw.writer);
        if w.write_data(&chunk).await.is_err() || w.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let _ = raw.try_send(&Request::PutEnd { md5: md5_bytes(&data) }).await;
    let _ = tokio::time::timeout(STEP, raw.reader.read_frame()).await;
}

#[tokio::test]
async fn kill_during_uploads_leaves_no_corrupt_file_and_exact_usage() {
    guard(async {
        let env = TestEnv::new();
        // All 20 log in at once from 127.0.0.1: room for them in the per-address pre-login pool.
        env.configure(&[("max_pending_logins_per_ip", "32")]);
        let mut add = xfer_cmd(&env.config_dir, &env.work);
        add.args(["user", "add", "alice", "--quota", "1GiB", "--root"]).arg(&env.root).env("XFER_PASSWORD", PW);
        run(add).assert_ok();
        let log = env.tmp.path().join("server.log");
        let mut srv = ServerProcess::start(&env.root, "127.0.0.1:0", &log, &[]);
        let datas: Vec<Arc<Vec<u8>>> = (0..UPLOADS).map(|i| Arc::new(pseudo_random(SIZE, 100 + i as u64))).collect();
        let mut tasks = Vec::new();
        for (i, data) in datas.iter().enumerate() {
            tasks.push(tokio::spawn(upload(srv.socket_addr(), format!("u{i}"), data.clone())));
        }
        // Kill once every upload has written something, while most are still sending.
        let home = env.root.join("homes/alice");
        let started = |i: usize| {
            file_len(&home.join(format!(".u{i}.xfer-part"))).is_some_and(|n| n > 0)
                || home.join(format!("u{i}")).exists()
        };
        let deadline = Instant::now() + STEP;
        while !(0..UPLOADS).all(started) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!((0..UPLOADS).all(started), "uploads did not all start");
        srv.kill();
        for t in tasks {
            let _ = t.await;
        }
        let in_flight = (0..UPLOADS).filter(|i| !home.join(format!("u{i}")).exists()).count();
        assert!(in_flight > 0, "every upload finished before the kill; the test proves nothing");

        let srv = ServerProcess::start(&env.root, "127.0.0.1:0", &log, &[]);
        // No visible file is corrupt: whatever carries a final name verifies.
        for (i, data) in datas.iter().enumerate() {
            let path = home.join(format!("u{i}"));
            if path.exists() {
                assert_eq!(md5_file(&path), md5_bytes(data), "u{i} is visible but corrupt");
            }
        }
        assert_usage_matches_disk(&env.root);
        // Every upload resumes and verifies, half of them over UDP.
        let mut c = Client::connect(&options_for(&srv.addr, &env.config_dir)).await.unwrap();
        c.login("alice", PW).await.unwrap();
        for (i, data) in datas.iter().enumerate() {
            let local = env.local(&format!("u{i}"));
            std::fs::write(&local, data.as_slice()).unwrap();
            let transport = if i % 2 == 0 { TransportChoice::Tcp } else { TransportChoice::Udp };
            let opts = TransferOptions { resume: true, transport, rate_limit: None };
            c.put_with(&local, &format!("u{i}"), &opts, no_progress()).await.unwrap_or_else(|e| panic!("u{i}: {e}"));
            assert_eq!(md5_file(&home.join(format!("u{i}"))), md5_bytes(data));
        }
        let names = dir_names(&home);
        assert_eq!(names.len(), UPLOADS, "partials left behind: {names:?}");
        assert_usage_matches_disk(&env.root);
        drop(srv);
    })
    .await
}
