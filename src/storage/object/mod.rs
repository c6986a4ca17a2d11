//! Object storage (STORE-OBJ-*): the namespace of every home in PostgreSQL, the bytes in
//! immutable blob objects of an S3-compatible store reached through OpenDAL.
//!
//! - `mv`, `rm`, `ls`, `stat`, `mkdir` and usage are PostgreSQL transactions only, so they keep
//!   working while the object store is down (STORE-OBJ-1).
//! - A file is an immutable blob `blobs/ID`; replacing a file names a new blob, and the old one
//!   goes to the garbage list (STORE-OBJ-2).
//! - An upload is staged as segment objects of a fixed size, buffered in a bounded spool until
//!   complete, each recorded in PostgreSQL only after its PUT succeeded, so any server can
//!   resume it and needs only the missing segments ([`staging`], STORE-OBJ-3).
//! - One writer per upload, fenced by an epoch (STORE-OBJ-4).
//! - At the end the segments are composed server-side (multipart upload-part-copy) into the
//!   blob, whose md5 was verified and is kept as object metadata and in PostgreSQL; only then is
//!   the file visible (STORE-OBJ-5).
//! - A ranged read is guarded by the blob's ETag (STORE-OBJ-6).
//! - Expired uploads, garbage and orphaned objects are collected by [`sweep`] (STORE-OBJ-7).
//! - Walks, globs, attributes and copies are served from the namespace too: a walk is a
//!   bounded read of the rows beneath a directory, a file's mtime and mode are columns of its
//!   row, and a copy is a new blob ([`tree`], STORE-OBJ-11).
//!
//! OpenDAL's `append` is never used: on some S3 implementations it replaces the object.

mod schema;
mod staging;
pub mod sweep;
mod tree;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opendal::Operator;
use tokio::runtime::Handle;

use super::{BlobReader, Staging, Storage, StorageError};
use crate::home::{
    Entry, EntryKind, HomeError, HomePath, PartialFile, PathError, TreeItem, Usage, NEW_DIR_MODE, NEW_FILE_MODE,
};

pub use staging::SEGMENT_SIZE;

/// Where the object store is (`[storage]` with `kind = "s3"`).
#[derive(Debug, Clone)]
pub struct ObjectConfig {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Key prefix inside the bucket under which xfer keeps everything.
    pub root: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// What every home of one server shares: the pool, the object store and the runtime.
pub struct ObjectBackend {
    pool: deadpool_postgres::Pool,
    op: Operator,
    rt: Handle,
    /// Names this server as the owner of the uploads it writes.
    server_id: String,
    segment_size: u64,
}

impl ObjectBackend {
    /// Connects to the object store and creates the namespace tables. Must run inside the
    /// tokio runtime that later drives the clients.
    pub async fn connect(
        config: &ObjectConfig,
        pool: deadpool_postgres::Pool,
        server_id: &str,
    ) -> Result<Arc<ObjectBackend>, StorageError> {
        Self::with_segment_size(config, pool, server_id, SEGMENT_SIZE).await
    }

    /// As [`Self::connect`], with another segment size (at least 5 MiB, the S3 part minimum).
    pub async fn with_segment_size(
        config: &ObjectConfig,
        pool: deadpool_postgres::Pool,
        server_id: &str,
        segment_size: u64,
    ) -> Result<Arc<ObjectBackend>, StorageError> {
        install_transport();
        let segment_size = segment_size.max(staging::MIN_SEGMENT_SIZE);
        let builder = opendal::services::S3::default()
            .endpoint(&config.endpoint)
            .bucket(&config.bucket)
            .region(&config.region)
            .root(&config.root)
            .access_key_id(&config.access_key_id)
            .secret_access_key(&config.secret_access_key);
        let op = Operator::new(builder)
            .map_err(s3_err)?
            .layer(opendal::layers::TimeoutLayer::new().with_timeout(std::time::Duration::from_secs(60)))
            .layer(opendal::layers::RetryLayer::new().with_max_times(3));
        let mut client = pool.get().await.map_err(pool_err)?;
        schema::ensure(&mut client).await.map_err(pg_err)?;
        Ok(Arc::new(ObjectBackend { pool, op, rt: Handle::current(), server_id: server_id.to_string(), segment_size }))
    }

    /// The storage of one user's home.
    pub fn home(self: &Arc<Self>, user: &str) -> ObjectStorage {
        ObjectStorage { backend: self.clone(), home: user.to_string() }
    }

    /// Runs `f` to completion on the backend's runtime, from a blocking thread.
    fn block<F: std::future::IntoFuture>(&self, f: F) -> F::Output {
        self.rt.block_on(f.into_future())
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StorageError> {
        self.pool.get().await.map_err(pool_err)
    }
}

/// An [`ObjectBackend`] on a runtime of its own, for a server whose setup is synchronous and
/// whose sessions call the storage from blocking threads.
pub struct ObjectService {
    backend: Arc<ObjectBackend>,
    rt: Option<tokio::runtime::Runtime>,
}

impl ObjectService {
    /// Starts the runtime, connects to PostgreSQL at `url` and to the object store. Safe to
    /// call from any thread, also inside another runtime.
    pub fn start(config: &ObjectConfig, url: &str, server_id: &str) -> Result<ObjectService, StorageError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("xfer-objects")
            .enable_all()
            .build()
            .map_err(|e| StorageError::Unavailable { what: "object storage", detail: format!("no runtime: {e}") })?;
        let pool = {
            let _in = rt.enter();
            crate::pg::connect(url)
                .map_err(|e| StorageError::Unavailable { what: "PostgreSQL", detail: e.to_string() })?
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (config, id) = (config.clone(), server_id.to_string());
        rt.spawn(async move {
            let _ = tx.send(ObjectBackend::connect(&config, pool, &id).await);
        });
        let backend = rx.recv().unwrap_or_else(|_| {
            Err(StorageError::Unavailable { what: "object storage", detail: "setup stopped".into() })
        })?;
        Ok(ObjectService { backend, rt: Some(rt) })
    }

    pub fn backend(&self) -> &Arc<ObjectBackend> {
        &self.backend
    }
}

impl Drop for ObjectService {
    fn drop(&mut self) {
        // Safe on any thread, also inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The HTTP client OpenDAL uses: reqwest on rustls with the ring provider (no aws-lc).
fn install_transport() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if a provider is installed already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal_http_transport_reqwest::install_default();
    });
}

/// One user's home in the object store.
pub struct ObjectStorage {
    backend: Arc<ObjectBackend>,
    home: String,
}

/// A namespace row.
struct Row {
    is_dir: bool,
    blob: Option<String>,
    size: u64,
    mtime: i64,
    /// Permission bits (meaningful for files; directories are always [`NEW_DIR_MODE`]).
    mode: u32,
}

impl ObjectStorage {
    async fn row(&self, c: &impl tokio_postgres::GenericClient, p: &HomePath) -> Result<Option<Row>, StorageError> {
        if p.is_root() {
            return Ok(Some(Row { is_dir: true, blob: None, size: 0, mtime: 0, mode: NEW_DIR_MODE }));
        }
        let row = c
            .query_opt(
                "SELECT is_dir, blob, size, mtime, mode FROM ns_entries WHERE home = $1 AND path = $2",
                &[&self.home, &p.to_string()],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| Row {
            is_dir: r.get(0),
            blob: r.get(1),
            size: r.get::<_, i64>(2) as u64,
            mtime: r.get(3),
            mode: r.get::<_, i32>(4) as u32,
        }))
    }

    /// The row of an existing directory `p`, or why it is not one.
    async fn dir_row(&self, c: &impl tokio_postgres::GenericClient, p: &HomePath) -> Result<(), StorageError> {
        match self.row(c, p).await? {
            Some(r) if r.is_dir => Ok(()),
            Some(_) => Err(HomeError::NotADirectory(p.to_string()).into()),
            None => Err(HomeError::NotFound(p.to_string()).into()),
        }
    }

    /// Serialises the namespace changes of this home inside `tx`.
    async fn lock(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), StorageError> {
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('ns:' || $1))", &[&self.home]).await.map_err(pg_err)?;
        Ok(())
    }

    async fn blob_etag(&self, c: &impl tokio_postgres::GenericClient, blob: &str) -> Result<String, StorageError> {
        let row = c.query_opt("SELECT etag FROM ns_blobs WHERE id = $1", &[&blob]).await.map_err(pg_err)?;
        row.map(|r| r.get(0)).ok_or_else(|| StorageError::SourceChanged(format!("blob {blob} is gone")))
    }
}

impl Storage for ObjectStorage {
    fn stat(&self, p: &HomePath) -> Result<Entry, StorageError> {
        self.backend.block(async {
            let c = self.backend.client().await?;
            let row = self.row(&**c, p).await?.ok_or_else(|| HomeError::NotFound(p.to_string()))?;
            Ok(entry(p.file_name().unwrap_or("/").to_string(), &row))
        })
    }

    fn list(&self, p: &HomePath) -> Result<Vec<Entry>, StorageError> {
        self.backend.block(async {
            let c = self.backend.client().await?;
            self.dir_row(&**c, p).await?;
            let rows = c
                .query(
                    "SELECT name, is_dir, blob, size, mtime, mode FROM ns_entries WHERE home = $1 AND parent = $2",
                    &[&self.home, &p.to_string()],
                )
                .await
                .map_err(pg_err)?;
            let mut out: Vec<Entry> = rows
                .iter()
                .map(|r| {
                    let row = Row {
                        is_dir: r.get(1),
                        blob: r.get(2),
                        size: r.get::<_, i64>(3) as u64,
                        mtime: r.get(4),
                        mode: r.get::<_, i32>(5) as u32,
                    };
                    entry(r.get(0), &row)
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn check_dir(&self, p: &HomePath) -> Result<(), StorageError> {
        self.backend.block(async {
            let c = self.backend.client().await?;
            self.dir_row(&**c, p).await
        })
    }

    fn mkdir(&self, p: &HomePath) -> Result<(), StorageError> {
        if p.is_root() {
            return Err(HomeError::AlreadyExists(p.to_string()).into());
        }
        self.backend.block(async {
            let mut c = self.backend.client().await?;
            let tx = c.transaction().await.map_err(pg_err)?;
            self.lock(&tx).await?;
            self.dir_row(&*tx, &p.parent().unwrap_or_default()).await?;
            if self.row(&*tx, p).await?.is_some() {
                return Err(HomeError::AlreadyExists(p.to_string()).into());
            }
            insert_entry(&tx, &self.home, p, true, None, 0).await?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn remove_file(&self, p: &HomePath) -> Result<u64, StorageError> {
        refuse_root(p, "cannot remove the home directory")?;
        let removed = self.backend.block(async {
            let mut c = self.backend.client().await?;
            let tx = c.transaction().await.map_err(pg_err)?;
            self.lock(&tx).await?;
            let Some(row) = self.row(&*tx, p).await? else {
                return Ok::<_, StorageError>(None);
            };
            if row.is_dir {
                return Err(HomeError::IsADirectory(p.to_string()).into());
            }
            tx.execute("DELETE FROM ns_entries WHERE home = $1 AND path = $2", &[&self.home, &p.to_string()])
                .await
                .map_err(pg_err)?;
            if let Some(blob) = &row.blob {
                drop_blob(&tx, blob).await?;
            }
            tx.commit().await.map_err(pg_err)?;
            Ok(Some(row.size))
        })?;
        match (removed, p.partial_target()) {
            (Some(size), _) => Ok(size),
            // The partial name of an upload stands for its staging.
            (None, Some(target)) if self.staging_exists(&target)? => self.discard_staging(&target),
            (None, _) => Err(HomeError::NotFound(p.to_string()).into()),
        }
    }

    fn remove_dir(&self, p: &HomePath) -> Result<(), StorageError> {
        refuse_root(p, "cannot remove the home directory")?;
        self.backend.block(async {
            let mut c = self.backend.client().await?;
            let tx = c.transaction().await.map_err(pg_err)?;
            self.lock(&tx).await?;
            self.dir_row(&*tx, p).await?;
            let children = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM ns_entries WHERE home = $1 AND parent = $2)",
                    &[&self.home, &p.to_string()],
                )
                .await
                .map_err(pg_err)?;
            if children.get::<_, bool>(0) {
                return Err(HomeError::DirectoryNotEmpty(p.to_string()).into());
            }
            tx.execute("DELETE FROM ns_entries WHERE home = $1 AND path = $2", &[&self.home, &p.to_string()])
                .await
                .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn rename(&self, from: &HomePath, to: &HomePath) -> Result<Option<u64>, StorageError> {
        refuse_root(from, "cannot rename the home directory")?;
        refuse_root(to, "cannot replace the home directory")?;
        self.backend.block(async {
            let mut c = self.backend.client().await?;
            let tx = c.transaction().await.map_err(pg_err)?;
            self.lock(&tx).await?;
            let src = self.row(&*tx, from).await?.ok_or_else(|| HomeError::NotFound(from.to_string()))?;
            if from == to {
                return Ok(None);
            }
            if to.starts_with(from) {
                return Err(
                    HomeError::from(PathError::Invalid(to.to_string(), "cannot move a directory into itself")).into()
                );
            }
            self.dir_row(&*tx, &to.parent().unwrap_or_default()).await?;
            let mut replaced = None;
            match self.row(&*tx, to).await? {
                Some(dst) if dst.is_dir => {
                    let err = if src.is_dir {
                        HomeError::AlreadyExists(to.to_string())
                    } else {
                        HomeError::IsADirectory(to.to_string())
                    };
                    return Err(err.into());
                }
                Some(dst) => {
                    tx.execute("DELETE FROM ns_entries WHERE home = $1 AND path = $2", &[&self.home, &to.to_string()])
                        .await
                        .map_err(pg_err)?;
                    if let Some(blob) = &dst.blob {
                        drop_blob(&tx, blob).await?;
                    }
                    replaced = Some(dst.size);
                }
                None => {}
            }
            let (f, t) = (from.to_string(), to.to_string());
            let (parent, name) =
                (to.parent().unwrap_or_default().to_string(), to.file_name().unwrap_or("").to_string());
            tx.execute(
                "UPDATE ns_entries SET path = $3, parent = $4, name = $5 WHERE home = $1 AND path = $2",
                &[&self.home, &f, &t, &parent, &name],
            )
            .await
            .map_err(pg_err)?;
            if src.is_dir {
                // Everything below moves with it: both path and parent start with `from/`.
                let prefix = format!("{f}/");
                tx.execute(
                    "UPDATE ns_entries SET path = $3 || substr(path, length($2) + 1), \
                     parent = $3 || substr(parent, length($2) + 1) \
                     WHERE home = $1 AND starts_with(path, $4)",
                    &[&self.home, &f, &t, &prefix],
                )
                .await
                .map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)?;
            Ok(replaced)
        })
    }

    fn usage(&self) -> Result<Usage, StorageError> {
        self.backend.block(async {
            let c = self.backend.client().await?;
            let files = c
                .query_one(
                    "SELECT COALESCE(SUM(size), 0)::BIGINT, COUNT(*) FROM ns_entries WHERE home = $1",
                    &[&self.home],
                )
                .await
                .map_err(pg_err)?;
            let partials = c
                .query_one(
                    "SELECT COALESCE((SELECT SUM(s.len) FROM ns_segments s JOIN ns_uploads u ON s.upload = u.id \
                     WHERE u.home = $1), 0)::BIGINT, (SELECT COUNT(*) FROM ns_uploads WHERE home = $1)",
                    &[&self.home],
                )
                .await
                .map_err(pg_err)?;
            let (partial_bytes, partial_count) = (partials.get::<_, i64>(0) as u64, partials.get::<_, i64>(1) as u64);
            Ok(Usage {
                bytes: files.get::<_, i64>(0) as u64 + partial_bytes,
                entries: files.get::<_, i64>(1) as u64 + partial_count,
                partial_bytes,
                partials: partial_count,
            })
        })
    }

    fn partials(&self) -> Result<Vec<PartialFile>, StorageError> {
        self.backend.block(async {
            let c = self.backend.client().await?;
            let rows = c
                .query(
                    "SELECT u.target, COALESCE((SELECT SUM(len) FROM ns_segments WHERE upload = u.id), 0)::BIGINT, \
                     u.updated FROM ns_uploads u WHERE u.home = $1 ORDER BY u.target",
                    &[&self.home],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let target = HomePath::resolve(&HomePath::root(), r.get::<_, &str>(0)).ok()?;
                    Some(PartialFile { target, len: r.get::<_, i64>(1) as u64, mtime: r.get(2) })
                })
                .collect())
        })
    }

    fn open_reader(&self, p: &HomePath) -> Result<Box<dyn BlobReader>, StorageError> {
        self.backend.block(async {
            let c = self.backend.client().await?;
            let row = self.row(&**c, p).await?.ok_or_else(|| HomeError::NotFound(p.to_string()))?;
            let Some(blob) = row.blob.filter(|_| !row.is_dir) else {
                return Err(HomeError::IsADirectory(p.to_string()).into());
            };
            let etag = self.blob_etag(&**c, &blob).await?;
            Ok(Box::new(ObjectReader::new(self.backend.clone(), blob_key(&blob), etag, row.size))
                as Box<dyn BlobReader>)
        })
    }

    fn open_staging(&self, p: &HomePath, size: u64, resume: bool) -> Result<Box<dyn Staging>, StorageError> {
        let staging = staging::ObjectStaging::open(self.backend.clone(), &self.home, p, size, resume)?;
        Ok(Box::new(staging))
    }

    fn discard_staging(&self, p: &HomePath) -> Result<u64, StorageError> {
        self.backend.block(async {
            let mut c = self.backend.client().await?;
            let tx = c.transaction().await.map_err(pg_err)?;
            self.lock(&tx).await?;
            let freed = staging::drop_upload(&tx, &self.home, &p.to_string()).await?;
            tx.commit().await.map_err(pg_err)?;
            Ok(freed)
        })
    }

    /// The recorded segments from the file's start on, without a gap.
    fn staged_len(&self, p: &HomePath) -> Result<Option<u64>, StorageError> {
        self.backend.block(async {
            let c = self.backend.client().await?;
            let Some(up) = c
                .query_opt(
                    "SELECT id, size FROM ns_uploads WHERE home = $1 AND target = $2",
                    &[&self.home, &p.to_string()],
                )
                .await
                .map_err(pg_err)?
            else {
                return Ok(None);
            };
            let (id, size): (String, i64) = (up.get(0), up.get(1));
            let segs = c
                .query("SELECT idx, len FROM ns_segments WHERE upload = $1 ORDER BY idx", &[&id])
                .await
                .map_err(pg_err)?;
            let seg = self.backend.segment_size;
            let mut held = crate::udp::ranges::RangeSet::new();
            for s in segs {
                let (idx, len) = (s.get::<_, i32>(0) as u64, s.get::<_, i64>(1) as u64);
                if len == (size.max(0) as u64).saturating_sub(idx * seg).min(seg) {
                    held.insert(idx * seg, idx * seg + len);
                }
            }
            Ok(Some(held.contiguous_from(0)))
        })
    }

    fn tree_item(&self, p: &HomePath) -> Result<TreeItem, StorageError> {
        self.object_tree_item(p)
    }

    fn walk_tree(
        &self,
        top: &HomePath,
        max_depth: usize,
        keep: &mut dyn FnMut(TreeItem) -> bool,
    ) -> Result<bool, StorageError> {
        self.object_walk(top, max_depth, keep)
    }

    fn set_attrs(&self, p: &HomePath, mtime: i64, mode: Option<u32>) -> Result<(), StorageError> {
        self.object_set_attrs(p, mtime, mode)
    }
}

impl ObjectStorage {
    /// True if an unfinished upload to `target` exists.
    pub fn staging_exists(&self, target: &HomePath) -> Result<bool, StorageError> {
        self.backend.block(async {
            let c = self.backend.client().await?;
            let row = c
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM ns_uploads WHERE home = $1 AND target = $2)",
                    &[&self.home, &target.to_string()],
                )
                .await
                .map_err(pg_err)?;
            Ok(row.get(0))
        })
    }
}

/// Bytes fetched per ranged read; the next window is fetched while this one is consumed.
const READ_WINDOW: u64 = 8 << 20;

/// Reads one immutable blob, each ranged read guarded by the ETag it had when opened
/// (STORE-OBJ-6). Sequential reads are served from a window of [`READ_WINDOW`] bytes, with the
/// next window already being fetched.
struct ObjectReader {
    backend: Arc<ObjectBackend>,
    key: String,
    etag: String,
    size: u64,
    ahead: std::sync::Mutex<ReadAhead>,
}

type Fetch = tokio::task::JoinHandle<Result<Vec<u8>, StorageError>>;

#[derive(Default)]
struct ReadAhead {
    /// The window in hand: its start and bytes.
    window: Option<(u64, Vec<u8>)>,
    /// The next window being fetched: its start and the task.
    next: Option<(u64, Fetch)>,
}

impl ObjectReader {
    fn new(backend: Arc<ObjectBackend>, key: String, etag: String, size: u64) -> ObjectReader {
        ObjectReader { backend, key, etag, size, ahead: Default::default() }
    }

    /// Starts fetching the window at `start`.
    fn fetch(&self, start: u64) -> Fetch {
        let end = (start + READ_WINDOW).min(self.size);
        let (op, key, etag) = (self.backend.op.clone(), self.key.clone(), self.etag.clone());
        self.backend.rt.spawn(async move {
            let data = op.read_with(&key).range(start..end).if_match(&etag).await.map_err(read_err)?;
            if data.len() as u64 != end - start {
                return Err(StorageError::SourceChanged(format!(
                    "read {} of {} bytes at {start}",
                    data.len(),
                    end - start
                )));
            }
            Ok(data.to_vec())
        })
    }

    /// The window starting at `start`, from the prefetch if it is that one.
    fn window_at(&self, ahead: &mut ReadAhead, start: u64) -> Result<(), StorageError> {
        if ahead.window.as_ref().is_some_and(|(s, _)| *s == start) {
            return Ok(());
        }
        let job = match ahead.next.take() {
            Some((s, job)) if s == start => job,
            other => {
                if let Some((_, stale)) = other {
                    stale.abort();
                }
                self.fetch(start)
            }
        };
        let data = self.backend.block(job).unwrap_or_else(|e| {
            Err(StorageError::Unavailable { what: "object storage", detail: format!("read stopped: {e}") })
        })?;
        ahead.window = Some((start, data));
        let next = start + READ_WINDOW;
        if next < self.size {
            ahead.next = Some((next, self.fetch(next)));
        }
        Ok(())
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        if let Some((_, job)) = self.ahead.get_mut().ok().and_then(|a| a.next.take()) {
            job.abort();
        }
    }
}

impl BlobReader for ObjectReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result<(), StorageError> {
        let end = pos + buf.len() as u64;
        if end > self.size {
            return Err(StorageError::SourceChanged(format!("file has {} bytes, not {end}", self.size)));
        }
        let mut ahead = self.ahead.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut at = pos;
        while at < end {
            let start = at / READ_WINDOW * READ_WINDOW;
            self.window_at(&mut ahead, start)?;
            let Some((_, data)) = &ahead.window else {
                return Err(StorageError::SourceChanged(format!("no bytes at {at}")));
            };
            let piece_end = end.min(start + data.len() as u64);
            let from = (at - start) as usize;
            let to = (piece_end - start) as usize;
            if to <= from {
                return Err(StorageError::SourceChanged(format!("no bytes at {at}")));
            }
            buf[(at - pos) as usize..(piece_end - pos) as usize].copy_from_slice(&data[from..to]);
            at = piece_end;
        }
        Ok(())
    }
}

async fn insert_entry(
    tx: &tokio_postgres::Transaction<'_>,
    home: &str,
    p: &HomePath,
    is_dir: bool,
    blob: Option<&str>,
    size: u64,
) -> Result<(), StorageError> {
    let (parent, name) = (p.parent().unwrap_or_default().to_string(), p.file_name().unwrap_or("").to_string());
    // A new entry has the mode the local home gives a new file or directory.
    let mode = if is_dir { NEW_DIR_MODE } else { NEW_FILE_MODE } as i32;
    tx.execute(
        "INSERT INTO ns_entries (home, path, parent, name, is_dir, blob, size, mtime, mode) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[&home, &p.to_string(), &parent, &name, &is_dir, &blob, &(size as i64), &now(), &mode],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// A blob no name refers to any more: forgotten, and its object queued for deletion.
async fn drop_blob(tx: &tokio_postgres::Transaction<'_>, blob: &str) -> Result<(), StorageError> {
    tx.execute("DELETE FROM ns_blobs WHERE id = $1", &[&blob]).await.map_err(pg_err)?;
    garbage(tx, &blob_key(blob), now()).await
}

/// Queues object `key` for deletion by the sweep, not before `since` plus the grace period.
async fn garbage(tx: &tokio_postgres::Transaction<'_>, key: &str, since: i64) -> Result<(), StorageError> {
    tx.execute("INSERT INTO ns_garbage (key, since) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", &[&key, &since])
        .await
        .map_err(pg_err)?;
    Ok(())
}

fn blob_key(blob: &str) -> String {
    format!("blobs/{blob}")
}

fn entry(name: String, row: &Row) -> Entry {
    let kind = if row.is_dir { EntryKind::Dir } else { EntryKind::File };
    Entry { name, kind, size: if row.is_dir { 0 } else { row.size }, mtime: row.mtime }
}

fn refuse_root(p: &HomePath, reason: &'static str) -> Result<(), StorageError> {
    if p.is_root() {
        return Err(HomeError::from(PathError::Invalid(p.to_string(), reason)).into());
    }
    Ok(())
}

/// Seconds since the Unix epoch.
fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A random id of 128 bits, in hex.
fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn pg_err(e: tokio_postgres::Error) -> StorageError {
    StorageError::Unavailable { what: "PostgreSQL", detail: e.to_string() }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StorageError {
    StorageError::Unavailable { what: "PostgreSQL", detail: e.to_string() }
}

fn s3_err(e: opendal::Error) -> StorageError {
    StorageError::Unavailable { what: "object storage", detail: e.to_string() }
}

/// A read of a blob: a changed or vanished object is the file changing, not an outage.
fn read_err(e: opendal::Error) -> StorageError {
    match e.kind() {
        opendal::ErrorKind::ConditionNotMatch | opendal::ErrorKind::NotFound => {
            StorageError::SourceChanged(format!("the stored object changed: {e}"))
        }
        _ => s3_err(e),
    }
}
