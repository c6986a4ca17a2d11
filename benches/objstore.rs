//! 1 GiB through the storage layer: the object profile (PostgreSQL namespace, SeaweedFS S3
//! bytes) against the embedded one (local home), with plain S3 clients uploading the same file
//! to the same SeaweedFS as the yardstick. Starts its own PostgreSQL and SeaweedFS on loopback
//! (as the cluster tests do). Not run by `cargo test`.
//!
//! ```sh
//! cargo bench --bench objstore                 # RUNS=3 MIB=1024 by default
//! RUNS=1 MIB=256 cargo bench --bench objstore
//! ```
//!
//! The boto3 row needs `python3 -m venv V && V/bin/pip install boto3`; set `BOTO3_PYTHON=V/bin/python`.

#[path = "../tests/it/support/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use xfer::home::HomePath;
use xfer::storage::object::ObjectBackend;
use xfer::storage::{LocalStorage, Storage};

use cluster::{object_config, raw_objects, Postgres, S3, S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY};

/// Bytes per write, as a TCP upload hands them over.
const CHUNK: usize = 1 << 20;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let runs = env_or("RUNS", 3);
    let mib = env_or("MIB", 1024);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (pg, s3) = (Postgres::start(), S3::start());
    let root = s3.unique_root();
    let config = object_config(&s3, &root);
    let pool = xfer::pg::connect(&pg.create_database()).unwrap();
    let backend = rt.block_on(ObjectBackend::connect(&config, pool, "bench")).unwrap();
    let object = backend.home("bench");
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStorage::new(Arc::new(xfer::home::Home::open(dir.path()).unwrap()));

    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("src.bin");
    let block: Vec<u8> = (0..CHUNK).map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()[7]).collect();
    let mut data = Vec::with_capacity(mib * CHUNK);
    for i in 0..mib {
        data.extend_from_slice(&block);
        // No two chunks alike.
        data[i * CHUNK] = i as u8;
        data[i * CHUNK + 1] = (i >> 8) as u8;
    }
    std::fs::write(&src, &data).unwrap();
    let digest: [u8; 16] = Md5::digest(&data).into();
    let op = {
        let _g = rt.enter();
        raw_objects(&s3, &root)
    };

    let mut rows: Vec<(&str, Vec<Duration>)> = Vec::new();
    let mut time = |name: &'static str, f: &mut dyn FnMut()| {
        let mut times = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            f();
            times.push(start.elapsed());
        }
        rows.push((name, times));
    };
    let p = HomePath::resolve(&HomePath::root(), "/f.bin").unwrap();
    time("local put (write, fsync, md5, rename)", &mut || put(&local, &p, &data, &digest));
    time("local get (1 MiB positioned reads, md5)", &mut || get(&local, &p, &digest));
    time("s3 profile put (8 MiB segments, md5, compose)", &mut || put(&object, &p, &data, &digest));
    time("s3 profile get (1 MiB reads from 8 MiB If-Match windows, one ahead, md5)", &mut || get(&object, &p, &digest));
    time("plain S3: OpenDAL writer, 8 MiB parts, 2 concurrent", &mut || {
        rt.block_on(async {
            let mut w = op.writer_with("yardstick.bin").chunk(8 << 20).concurrent(2).await.unwrap();
            for c in data.chunks(8 << 20) {
                w.write(c.to_vec()).await.unwrap();
            }
            w.close().await.unwrap();
        })
    });
    time("plain S3: OpenDAL read", &mut || {
        let got = rt.block_on(op.read("yardstick.bin")).unwrap();
        assert_eq!(got.len(), data.len());
    });
    if let Ok(python) = std::env::var("BOTO3_PYTHON") {
        let script = format!(
            "import boto3,sys\nfrom boto3.s3.transfer import TransferConfig\n\
             c=boto3.client('s3',endpoint_url='{}',aws_access_key_id='{S3_ACCESS_KEY}',aws_secret_access_key='{S3_SECRET_KEY}',region_name='us-east-1')\n\
             t=TransferConfig(multipart_chunksize=8*1024*1024)\n\
             if sys.argv[1]=='put': c.upload_file(sys.argv[2],'{S3_BUCKET}','boto3.bin',Config=t)\n\
             else: c.download_file('{S3_BUCKET}','boto3.bin',sys.argv[2],Config=t)\n",
            s3.endpoint()
        );
        let out = src_dir.path().join("boto3.out");
        let boto = |what: &str, file: &std::path::Path| {
            let ok = std::process::Command::new(&python).args(["-c", &script, what]).arg(file).status().unwrap();
            assert!(ok.success());
        };
        time("plain S3: boto3 upload_file (8 MiB parts)", &mut || boto("put", &src));
        time("plain S3: boto3 download_file", &mut || boto("get", &out));
    }
    println!("| contender ({mib} MiB, loopback) | median s | MiB/s | runs |");
    println!("|---|---|---|---|");
    for (name, mut times) in rows {
        times.sort();
        let median = times[times.len() / 2].as_secs_f64();
        println!("| {name} | {median:.2} | {:.0} | {} |", mib as f64 / median, times.len());
    }
}

fn put(storage: &dyn Storage, p: &HomePath, data: &[u8], digest: &[u8; 16]) {
    let mut staging = storage.open_staging(p, data.len() as u64, false).unwrap();
    for (i, c) in data.chunks(CHUNK).enumerate() {
        staging.write_at((i * CHUNK) as u64, c).unwrap();
    }
    staging.finish(digest).unwrap();
}

fn get(storage: &dyn Storage, p: &HomePath, digest: &[u8; 16]) {
    let reader = storage.open_reader(p).unwrap();
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0;
    while pos < reader.size() {
        let n = (reader.size() - pos).min(buf.len() as u64) as usize;
        reader.read_exact_at(&mut buf[..n], pos).unwrap();
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    assert_eq!(<[u8; 16]>::from(hasher.finalize()), *digest);
}
