//! Object storage against a real PostgreSQL and a real SeaweedFS S3 gateway (STORE-OBJ-*).
//! Two backends with pools and object clients of their own stand for two servers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use xfer::home::{EntryKind, HomePath};
use xfer::storage::object::{ObjectBackend, ObjectConfig, ObjectStorage};
use xfer::storage::{LocalStorage, Staging, Storage, StorageError};

use crate::support::cluster::*;

/// The smallest segment S3 multipart allows; keeps the test files small.
const SEG: u64 = 5 << 20;

/// A runtime for the backends; storage calls block, so tests call them from their own thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// One "server": its own pool and object client on the shared database and bucket root.
fn server(rt: &tokio::runtime::Runtime, s3: &S3, root: &str, db: &str, id: &str) -> Arc<ObjectBackend> {
    let pool = xfer::pg::connect(db).unwrap();
    rt.block_on(ObjectBackend::with_segment_size(&object_config(s3, root), pool, id, SEG)).unwrap()
}

/// A raw OpenDAL client on the same bucket root, to look at and tamper with the objects.
fn raw(rt: &tokio::runtime::Runtime, s3: &S3, root: &str) -> opendal::Operator {
    let _g = rt.enter();
    raw_objects(s3, root)
}

fn keys(rt: &tokio::runtime::Runtime, op: &opendal::Operator, prefix: &str) -> Vec<String> {
    let list = rt.block_on(async { op.list_with(prefix).recursive(true).await }).unwrap_or_default();
    list.into_iter().map(|e| e.path().to_string()).filter(|p| !p.ends_with('/')).collect()
}

fn path(p: &str) -> HomePath {
    HomePath::resolve(&HomePath::root(), p).unwrap()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[i % 4] ^ seed).collect()
}

fn md5(b: &[u8]) -> [u8; 16] {
    Md5::digest(b).into()
}

/// Writes `bytes` into `staging` from `from`, in 1 MiB writes; returns the bytes written.
fn write_from(staging: &mut dyn Staging, bytes: &[u8], from: usize) -> Result<u64, StorageError> {
    let mut written = 0;
    for (i, chunk) in bytes[from..].chunks(1 << 20).enumerate() {
        staging.write_at((from + i * (1 << 20)) as u64, chunk)?;
        written += chunk.len() as u64;
    }
    Ok(written)
}

/// Writes only the bytes outside `staging.durable()`; returns how many that was.
fn write_missing(staging: &mut dyn Staging, bytes: &[u8]) -> u64 {
    let mut sent = 0;
    for (start, end) in staging.durable().gaps(bytes.len() as u64) {
        for at in (start..end).step_by(1 << 20) {
            let stop = (at + (1 << 20)).min(end);
            staging.write_at(at, &bytes[at as usize..stop as usize]).unwrap();
            sent += stop - at;
        }
    }
    sent
}

fn read_all(storage: &dyn Storage, p: &HomePath) -> Vec<u8> {
    let reader = storage.open_reader(p).unwrap();
    let mut out = vec![0u8; reader.size() as usize];
    for (i, chunk) in out.chunks_mut(3 << 20).enumerate() {
        reader.read_exact_at(chunk, (i * (3 << 20)) as u64).unwrap();
    }
    out
}

fn put(storage: &dyn Storage, p: &str, bytes: &[u8]) -> Option<u64> {
    let mut staging = storage.open_staging(&path(p), bytes.len() as u64, false).unwrap();
    write_from(&mut *staging, bytes, 0).unwrap();
    staging.finish(&md5(bytes)).unwrap()
}

/// STORE-OBJ-1, -2, -5: the namespace operations and a round trip of a multi-segment file,
/// md5 verified, with mv of a file and of a directory, replace, rm and rmdir.
#[test]
fn namespace_and_round_trip_in_the_s3_profile() {
    let (pg, s3, rt) = (Postgres::shared(), S3::shared(), runtime());
    let root = s3.unique_root();
    let db = pg.create_database();
    let b = server(&rt, s3, &root, &db, "a");
    let home = b.home("ann");
    {
        home.mkdir(&path("/docs")).unwrap();
        assert!(matches!(home.mkdir(&path("/docs")), Err(StorageError::Home(xfer::home::HomeError::AlreadyExists(_)))));
        assert!(matches!(home.mkdir(&path("/no/such")), Err(StorageError::Home(xfer::home::HomeError::NotFound(_)))));
        let file = data((2 * SEG + 123_457) as usize, 1);
        assert_eq!(put(&home, "/docs/big.bin", &file), None);
        let e = home.stat(&path("/docs/big.bin")).unwrap();
        assert_eq!((e.kind, e.size), (EntryKind::File, file.len() as u64));
        assert_eq!(md5(&read_all(&home, &path("/docs/big.bin"))), md5(&file));
        // One blob, composed from the segments, which are gone; its md5 is in its metadata.
        let op = raw(&rt, s3, &root);
        let blobs = keys(&rt, &op, "blobs/");
        assert_eq!(blobs.len(), 1, "{blobs:?}");
        assert!(keys(&rt, &op, "staging/").is_empty());
        let meta = rt.block_on(op.stat(&blobs[0])).unwrap();
        let kept = meta.user_metadata().and_then(|m| m.get("md5")).map(str::to_string);
        assert_eq!(kept, Some(hex::encode(md5(&file))));
        // A ranged read across a segment boundary is byte-exact.
        let reader = home.open_reader(&path("/docs/big.bin")).unwrap();
        let mut mid = vec![0u8; 1000];
        reader.read_exact_at(&mut mid, SEG - 500).unwrap();
        assert_eq!(mid, file[(SEG - 500) as usize..(SEG + 500) as usize]);

        // A wrong md5 publishes nothing.
        let mut bad = home.open_staging(&path("/bad"), 10, false).unwrap();
        bad.write_at(0, b"0123456789").unwrap();
        assert!(matches!(bad.finish(&[0; 16]), Err(StorageError::DigestMismatch { .. })));
        assert!(home.stat(&path("/bad")).is_err());

        let small = b"small file".to_vec();
        put(&home, "/docs/small", &small);
        let names: Vec<_> = home.list(&path("/docs")).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["big.bin", "small"]);
        // Replacing a file reports what it held.
        assert_eq!(put(&home, "/docs/small", b"v2"), Some(small.len() as u64));
        assert_eq!(read_all(&home, &path("/docs/small")), b"v2");

        home.rename(&path("/docs"), &path("/papers")).unwrap();
        assert_eq!(md5(&read_all(&home, &path("/papers/big.bin"))), md5(&file));
        assert!(home.stat(&path("/docs")).is_err());
        assert_eq!(home.rename(&path("/papers/small"), &path("/papers/big.bin")).unwrap(), Some(file.len() as u64));
        assert!(home.rename(&path("/papers"), &path("/papers/in")).is_err());
        assert!(matches!(
            home.remove_dir(&path("/papers")),
            Err(StorageError::Home(xfer::home::HomeError::DirectoryNotEmpty(_)))
        ));
        assert_eq!(home.remove_file(&path("/papers/big.bin")).unwrap(), 2);
        home.remove_dir(&path("/papers")).unwrap();
        assert!(home.list(&HomePath::root()).unwrap().is_empty());
        // Another user's home is another namespace.
        assert!(b.home("bob").list(&HomePath::root()).unwrap().is_empty());
    }
}

/// STORE-OBJ-3, -4: an upload interrupted on server A (its spool lost, as with kill -9)
/// resumes on server B, which reports the stored segments so only the rest is sent; A, which
/// lost its claim, can record nothing more; the md5 verifies.
#[test]
fn an_upload_cut_on_one_server_resumes_on_another_with_only_the_missing_bytes() {
    let (pg, s3, rt) = (Postgres::shared(), S3::shared(), runtime());
    let root = s3.unique_root();
    let db = pg.create_database();
    let (a, b) = (server(&rt, s3, &root, &db, "a"), server(&rt, s3, &root, &db, "b"));
    let file = data((3 * SEG + 4321) as usize, 2);
    let target = path("/movie.bin");

    let mut on_a = a.home("ann").open_staging(&target, file.len() as u64, false).unwrap();
    // Two whole segments and half of the third reach A; the half is only in A's spool.
    write_from(&mut *on_a, &file[..(2 * SEG + SEG / 2) as usize], 0).unwrap();
    on_a.sync().unwrap();
    assert_eq!(on_a.durable().iter().collect::<Vec<_>>(), [(0, 2 * SEG)]);

    let mut on_b = b.home("ann").open_staging(&target, file.len() as u64, true).unwrap();
    assert_eq!(on_b.durable().iter().collect::<Vec<_>>(), [(0, 2 * SEG)]);
    // A still runs but has lost the upload: completing a segment is refused.
    let rest = (2 * SEG + SEG / 2) as usize;
    let fenced = write_from(&mut *on_a, &file[..(3 * SEG) as usize], rest).and_then(|_| on_a.sync());
    assert!(matches!(fenced, Err(StorageError::Fenced(_))), "{fenced:?}");
    drop(on_a);

    let sent = write_missing(&mut *on_b, &file);
    assert_eq!(sent, file.len() as u64 - 2 * SEG, "B received bytes it already had");
    assert_eq!(on_b.finish(&md5(&file)).unwrap(), None);
    assert_eq!(md5(&read_all(&a.home("ann"), &target)), md5(&file));
    assert!(a.home("ann").partials().unwrap().is_empty());
}

/// STORE-OBJ-1, -3: with S3 stopped mid-upload, the write fails with a clear error, `ls` and
/// `stat` still answer, nothing recorded is lost, and the upload resumes once S3 is back.
#[test]
fn s3_down_mid_upload_keeps_ls_working_and_the_upload_resumes() {
    let (pg, s3, rt) = (Postgres::shared(), S3::start(), runtime());
    let root = s3.unique_root();
    let db = pg.create_database();
    let b = server(&rt, &s3, &root, &db, "a");
    let home = b.home("ann");
    put(&home, "/kept", b"kept before the outage");
    let file = data((2 * SEG + 99) as usize, 3);
    let target = path("/up.bin");
    let mut staging = home.open_staging(&target, file.len() as u64, false).unwrap();
    write_from(&mut *staging, &file[..SEG as usize], 0).unwrap();
    staging.sync().unwrap();

    s3.kill();
    let failed = write_from(&mut *staging, &file[..(2 * SEG) as usize], SEG as usize).and_then(|_| staging.sync());
    let err = failed.expect_err("a segment PUT with S3 down must fail");
    assert!(matches!(err, StorageError::Unavailable { what: "object storage", .. }), "{err:?}");
    assert!(err.to_string().contains("object storage unavailable"), "{err}");
    drop(staging);
    let names: Vec<_> = home.list(&HomePath::root()).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["kept"]);
    assert_eq!(home.stat(&path("/kept")).unwrap().size, 22);
    assert_eq!(home.partials().unwrap().iter().map(|p| p.len).collect::<Vec<_>>(), [SEG]);

    s3.restart();
    let mut again = home.open_staging(&target, file.len() as u64, true).unwrap();
    assert_eq!(write_missing(&mut *again, &file), file.len() as u64 - SEG);
    again.finish(&md5(&file)).unwrap();
    assert_eq!(md5(&read_all(&home, &target)), md5(&file));
    assert_eq!(read_all(&home, &path("/kept")), b"kept before the outage");
}

/// STORE-OBJ-6: ranged reads are guarded by the ETag the blob had when opened; an object
/// replaced underneath fails the next range fetched, and is never mixed in.
#[test]
fn a_replaced_object_is_never_mixed_into_a_ranged_read() {
    let (pg, s3, rt) = (Postgres::shared(), S3::shared(), runtime());
    let root = s3.unique_root();
    let db = pg.create_database();
    let b = server(&rt, s3, &root, &db, "a");
    let home = b.home("ann");
    // Three read windows of 8 MiB and a bit.
    let file = data((24 << 20) + 1, 4);
    put(&home, "/f", &file);
    let reader = home.open_reader(&path("/f")).unwrap();
    let mut first = vec![0u8; 1 << 20];
    reader.read_exact_at(&mut first, 0).unwrap();
    assert_eq!(first, file[..1 << 20]);

    let op = raw(&rt, s3, &root);
    let blobs = keys(&rt, &op, "blobs/");
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    rt.block_on(op.write(&blobs[0], data(file.len(), 5))).unwrap();
    let mut later = vec![0u8; 1 << 20];
    let got = reader.read_exact_at(&mut later, 16 << 20);
    assert!(matches!(got, Err(StorageError::SourceChanged(_))), "{got:?}");
    // A reader opened now still expects the ETag PostgreSQL recorded: the tampered object is refused.
    let fresh = home.open_reader(&path("/f")).unwrap();
    assert!(matches!(fresh.read_exact_at(&mut later, 0), Err(StorageError::SourceChanged(_))));
}

/// STORE-OBJ-7: expired uploads, removed and replaced blobs, finished segments and orphaned
/// objects are deleted from the bucket; live files stay.
#[test]
fn the_sweep_collects_expired_uploads_garbage_and_orphans() {
    let (pg, s3, rt) = (Postgres::shared(), S3::shared(), runtime());
    let root = s3.unique_root();
    let db = pg.create_database();
    let b = server(&rt, s3, &root, &db, "a");
    let home = b.home("ann");
    let op = raw(&rt, s3, &root);
    put(&home, "/live", b"live");
    put(&home, "/gone", b"gone");
    put(&home, "/gone", b"replaced");
    home.remove_file(&path("/gone")).unwrap();
    let file = data((SEG + 10) as usize, 6);
    let mut left = home.open_staging(&path("/abandoned"), file.len() as u64, false).unwrap();
    write_from(&mut *left, &file[..SEG as usize], 0).unwrap();
    left.sync().unwrap();
    drop(left);
    rt.block_on(op.write("staging/orphan/00000000.1", vec![1u8; 10])).unwrap();
    rt.block_on(op.write("blobs/orphan", vec![2u8; 10])).unwrap();
    assert_eq!(keys(&rt, &op, "staging/").len(), 2);

    // Nothing is old enough yet: the grace period protects running transfers.
    let none = b.sweep(Duration::from_secs(3600), Duration::from_secs(3600)).unwrap();
    assert_eq!((none.uploads, none.orphans), (0, 0));
    assert_eq!(home.partials().unwrap().len(), 1);

    // Object times have a resolution of a second.
    std::thread::sleep(Duration::from_millis(1100));
    let swept = b.sweep(Duration::ZERO, Duration::ZERO).unwrap();
    assert_eq!((swept.uploads, swept.upload_bytes), (1, SEG));
    assert!(swept.garbage >= 3, "{swept:?}");
    assert_eq!(swept.orphans, 2, "{swept:?}");
    assert!(keys(&rt, &op, "staging/").is_empty());
    assert_eq!(keys(&rt, &op, "blobs/").len(), 1);
    assert!(home.partials().unwrap().is_empty());
    assert_eq!(read_all(&home, &path("/live")), b"live");
}

/// QUOTA-5, OPS-USAGE-1: the same operations are charged the same in both profiles.
#[test]
fn usage_is_charged_as_in_the_embedded_profile() {
    let (pg, s3, rt) = (Postgres::shared(), S3::shared(), runtime());
    let root = s3.unique_root();
    let db = pg.create_database();
    let b = server(&rt, s3, &root, &db, "a");
    let object: ObjectStorage = b.home("ann");
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStorage::new(Arc::new(xfer::home::Home::open(dir.path()).unwrap()));
    let file = data((SEG + 7) as usize, 7);
    let start = Instant::now();
    for s in [&object as &dyn Storage, &local] {
        s.mkdir(&path("/d")).unwrap();
        s.mkdir(&path("/d/e")).unwrap();
        put(s, "/d/a", &file);
        put(s, "/b", b"bee");
        put(s, "/b", b"bee two");
        s.rename(&path("/b"), &path("/d/e/b")).unwrap();
        put(s, "/c", b"sea");
        s.remove_file(&path("/c")).unwrap();
        let mut partial = s.open_staging(&path("/p"), file.len() as u64, false).unwrap();
        write_from(&mut *partial, &file[..SEG as usize], 0).unwrap();
        partial.sync().unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(600));
    let (o, l) = (object.usage().unwrap(), local.usage().unwrap());
    assert_eq!(o, l);
    assert_eq!((o.bytes, o.entries, o.partials), (2 * SEG + 7 + 7, 5, 1));
}

/// STORE-OBJ-1: `[storage] kind = "s3"` without the PostgreSQL store is a config error.
#[test]
fn s3_storage_without_the_postgres_store_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let config = format!("{}\n", xfer::config::DEFAULT_SERVER_CONFIG).replace(
        "kind = \"local\"",
        "kind = \"s3\"\nendpoint = \"http://127.0.0.1:1\"\nbucket = \"b\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"",
    );
    std::fs::write(root.path().join("xfer.toml"), config).unwrap();
    let err = xfer::server::Server::open(root.path()).err().expect("s3 without a postgres store must be refused");
    assert!(err.to_string().contains("[store] url"), "{err}");
}

/// STORE-OBJ-4: a writer that lost its claim cannot publish, even with every segment stored.
#[test]
fn a_writer_that_lost_its_claim_cannot_publish() {
    let (pg, s3, rt) = (Postgres::shared(), S3::shared(), runtime());
    let root = s3.unique_root();
    let db = pg.create_database();
    let (a, b) = (server(&rt, s3, &root, &db, "a"), server(&rt, s3, &root, &db, "b"));
    let file = data((SEG + 5) as usize, 8);
    let target = path("/f");
    let mut on_a = a.home("ann").open_staging(&target, file.len() as u64, false).unwrap();
    write_from(&mut *on_a, &file, 0).unwrap();
    on_a.sync().unwrap();
    let on_b = b.home("ann").open_staging(&target, file.len() as u64, true).unwrap();
    assert_eq!(on_b.durable().covered(), file.len() as u64);
    let lost = on_a.finish(&md5(&file));
    assert!(matches!(lost, Err(StorageError::Fenced(_))), "{lost:?}");
    assert!(a.home("ann").stat(&target).is_err(), "a fenced writer published");
    on_b.finish(&md5(&file)).unwrap();
    assert_eq!(md5(&read_all(&b.home("ann"), &target)), md5(&file));
}

/// STORE-OBJ-3: writes in any order (as a UDP flow delivers them) are spooled per segment up to
/// a bound, and the md5 of a file received out of order is computed from the stored segments.
#[test]
fn out_of_order_writes_are_spooled_within_a_bound_and_verified() {
    let (pg, s3, rt) = (Postgres::shared(), S3::shared(), runtime());
    let root = s3.unique_root();
    let db = pg.create_database();
    let b = server(&rt, s3, &root, &db, "a");
    let home = b.home("ann");
    let file = data((2 * SEG + 777) as usize, 9);
    let mut staging = home.open_staging(&path("/r"), file.len() as u64, false).unwrap();
    let chunks: Vec<(usize, &[u8])> = file.chunks(1 << 20).enumerate().map(|(i, c)| (i << 20, c)).collect();
    for (at, c) in chunks.iter().rev() {
        staging.write_at(*at as u64, c).unwrap();
    }
    assert!(matches!(staging.write_at(file.len() as u64 - 1, b"xy"), Err(StorageError::InvalidWrite(_))));
    staging.finish(&md5(&file)).unwrap();
    assert_eq!(md5(&read_all(&home, &path("/r"))), md5(&file));

    // One byte in each of more segments than the spool holds: refused, not buffered.
    let big = 8 * SEG;
    let mut sparse = home.open_staging(&path("/s"), big, false).unwrap();
    let refused = (0..8).map(|i| sparse.write_at(i * SEG + 1, b"x")).find(|r| r.is_err());
    assert!(matches!(refused, Some(Err(StorageError::InvalidWrite(_)))), "{refused:?}");
}

/// The file the killed writer uploads: four segments and a bit.
fn killed_file() -> Vec<u8> {
    data((4 * SEG + 77) as usize, 10)
}

/// Not a test: the writer process that `an_upload_survives_kill_9_of_its_server` kills. It
/// stores two segments and a half of [`killed_file`] as server "a", then waits to be killed
/// (at most 60 s). Does nothing unless started by that test.
#[test]
#[ignore]
fn killed_writer_process() {
    let (Ok(db), Ok(endpoint), Ok(root)) =
        (std::env::var("XFER_KILLED_DB"), std::env::var("XFER_KILLED_S3"), std::env::var("XFER_KILLED_ROOT"))
    else {
        return;
    };
    let rt = runtime();
    let c = ObjectConfig {
        endpoint,
        bucket: S3_BUCKET.into(),
        region: "us-east-1".into(),
        root,
        access_key_id: S3_ACCESS_KEY.into(),
        secret_access_key: S3_SECRET_KEY.into(),
    };
    let pool = xfer::pg::connect(&db).unwrap();
    let b = rt.block_on(ObjectBackend::with_segment_size(&c, pool, "a", SEG)).unwrap();
    let file = killed_file();
    let mut staging = b.home("ann").open_staging(&path("/killed.bin"), file.len() as u64, false).unwrap();
    write_from(&mut *staging, &file[..(2 * SEG + SEG / 2) as usize], 0).unwrap();
    staging.sync().unwrap();
    println!("xfer-killed-writer-ready");
    std::thread::sleep(Duration::from_secs(60));
}

/// STORE-OBJ-3, -4: kill -9 of the process writing an upload; another server resumes it from
/// the recorded segments, receives only the missing bytes, and the md5 verifies.
#[test]
fn an_upload_survives_kill_9_of_its_server() {
    use std::io::BufRead;
    let (pg, s3, rt) = (Postgres::shared(), S3::shared(), runtime());
    let root = s3.unique_root();
    let db = pg.create_database();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "cluster::object_storage::killed_writer_process", "--nocapture"])
        .env("XFER_KILLED_DB", &db)
        .env("XFER_KILLED_S3", s3.endpoint())
        .env("XFER_KILLED_ROOT", &root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let ready = out.lines().take(100).map_while(Result::ok).any(|l| l.contains("xfer-killed-writer-ready"));
    assert!(ready, "the writer process did not get its segments stored");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let b = server(&rt, s3, &root, &db, "b");
    let file = killed_file();
    let mut staging = b.home("ann").open_staging(&path("/killed.bin"), file.len() as u64, true).unwrap();
    assert_eq!(staging.durable().iter().collect::<Vec<_>>(), [(0, 2 * SEG)]);
    let sent = write_missing(&mut *staging, &file);
    assert_eq!(sent, file.len() as u64 - 2 * SEG);
    staging.finish(&md5(&file)).unwrap();
    assert_eq!(md5(&read_all(&b.home("ann"), &path("/killed.bin"))), md5(&file));
}
