//! The receiving side's writes: a blocking thread writes each chunk to the upload's
//! [`SinkTarget`], feeds the md5 with the contiguous prefix as it grows, and every second
//! makes what was written durable and persists the map of held ranges for resume
//! (UDP-RESUME-*).
//!
//! Two kinds of target: a local partial file takes each chunk at its offset, and the md5 reads
//! back what arrived ahead of a hole once the hole fills; a storage [`Staging`] (segment
//! objects, STORE-OBJ-9) takes bytes in order only, so the sink holds chunks that arrive ahead
//! of the first missing byte, at most [`MAX_AHEAD`] of them, until their turn.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::proto::control::Md5Digest;
use crate::storage::{transfer_error, Staging};
use crate::transfer::TransferError;
use crate::udp::ranges::RangeSet;

/// How often the held-range map is made durable while data flows: at least every second, and
/// early in a transfer after every [`PERSIST_MIN_BYTES`] or quarter of what is written, so a
/// crash soon after the start still leaves something to resume while a long transfer syncs
/// rarely.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
const PERSIST_MIN_BYTES: u64 = 4 << 20;
/// Bytes an in-order target's sink holds ahead of the first missing byte (STORE-OBJ-9). A
/// sender has at most its window in flight past a hole until the hole is repaired, and the
/// flow itself drops data past [`crate::udp::flow::MAX_SINK_BACKLOG`] waiting for the disk;
/// this is the same bound. A client that sends data further ahead ends its upload with an
/// error instead of growing the buffer.
pub const MAX_AHEAD: u64 = 64 << 20;

/// Stores a range map that describes durable data; called from the writer thread.
pub type PersistFn = Box<dyn FnMut(&RangeSet) -> std::io::Result<()> + Send>;

/// Where a sink's bytes go.
pub trait SinkTarget: Send + 'static {
    /// The target takes bytes only in ascending order, from the end of the held prefix on; the
    /// sink then never reads back and holds early chunks until their turn.
    const IN_ORDER: bool;
    /// Writes `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), TransferError>;
    /// Reads back bytes written earlier; only called on a target that is not [`Self::IN_ORDER`].
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), TransferError>;
    /// Makes what was written durable and returns the ranges that now survive a crash: all of
    /// `written`, or a subset of it (UDP-RESUME-3). `last` is the sync after the last write.
    fn sync(&mut self, written: &RangeSet, last: bool) -> Result<RangeSet, TransferError>;
}

/// A local partial file: written at any offset, everything written is durable once synced.
impl SinkTarget for std::fs::File {
    const IN_ORDER: bool = false;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        self.write_all_at(data, offset).map_err(TransferError::from_io)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), TransferError> {
        Ok(self.read_exact_at(buf, offset)?)
    }
    fn sync(&mut self, written: &RangeSet, last: bool) -> Result<RangeSet, TransferError> {
        if last { self.sync_all() } else { self.sync_data() }.map_err(TransferError::from_io)?;
        Ok(written.clone())
    }
}

/// An upload's storage staging (STORE-OBJ-9): in order, so the object staging keeps a single
/// open segment and a running md5; durable is what [`Staging::sync`] says (whole segments and
/// the file's last one in object storage), never more.
pub struct StagingTarget(pub Box<dyn Staging>);

impl SinkTarget for StagingTarget {
    const IN_ORDER: bool = true;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        self.0.write_at(offset, data).map_err(transfer_error)
    }
    fn read_at(&self, _: &mut [u8], offset: u64) -> Result<(), TransferError> {
        Err(TransferError::Io(std::io::Error::other(format!("a staging cannot read back offset {offset}"))))
    }
    fn sync(&mut self, _: &RangeSet, _: bool) -> Result<RangeSet, TransferError> {
        self.0.sync().map_err(transfer_error)
    }
}

/// What the writer thread ends with.
#[derive(Debug)]
pub struct SinkDone<T> {
    pub target: T,
    /// Ranges written and synced.
    pub written: RangeSet,
    /// md5 of the whole file if every byte of it was written.
    pub md5: Option<Md5Digest>,
}

/// The writer's failure, set the moment a write fails (before the thread syncs and saves the
/// map), so the packet path stops the flow at once instead of acking data it cannot store.
type Failure = Arc<OnceLock<TransferError>>;

/// What the thread hands back: the target, unless it was lost, and how it ended.
type Ended<T> = (Option<T>, Result<SinkDone<()>, TransferError>);

/// Sending end of the writer thread; dropping it (or `finish`) ends the thread.
pub struct SinkHandle<T> {
    tx: Option<mpsc::Sender<(u64, Bytes)>>,
    queued: Arc<AtomicU64>,
    failed: Failure,
    join: tokio::task::JoinHandle<Ended<T>>,
}

/// Cheap clonable handle to queue writes from the packet path.
#[derive(Clone)]
pub struct SinkQueue {
    tx: mpsc::Sender<(u64, Bytes)>,
    queued: Arc<AtomicU64>,
    failed: Failure,
}

impl SinkQueue {
    /// Bytes waiting for the disk.
    pub fn backlog(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues `data` for offset `offset`. Once the writer has failed (a full disk, say),
    /// returns its error instead, so the flow ends promptly (UDP-END-7).
    pub fn write(&self, offset: u64, data: Bytes) -> Result<(), TransferError> {
        if let Some(e) = self.failed.get() {
            return Err(e.duplicate());
        }
        self.queued.fetch_add(data.len() as u64, Ordering::Relaxed);
        match self.tx.send((offset, data)) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failed.get().map_or_else(stopped, TransferError::duplicate)),
        }
    }
}

/// Starts the writer for the local `file` of final size `size`, which already holds `held`.
pub fn spawn_sink(file: std::fs::File, size: u64, held: RangeSet, persist: PersistFn) -> SinkHandle<std::fs::File> {
    spawn_sink_to(file, size, held, (Md5::new(), 0), persist)
}

/// Starts the writer for `target` of final size `size`, which already holds `held`; `prefix`
/// is the md5 state over the first `prefix.1` bytes. A target that is [`SinkTarget::IN_ORDER`]
/// must hold exactly that prefix, since it cannot read back what it holds.
pub fn spawn_sink_to<T: SinkTarget>(
    target: T,
    size: u64,
    held: RangeSet,
    prefix: (Md5, u64),
    persist: PersistFn,
) -> SinkHandle<T> {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicU64::new(0));
    let failed = Failure::default();
    let (q, f) = (queued.clone(), failed.clone());
    let join = tokio::task::spawn_blocking(move || Writer::new(target, size, held, prefix, persist, q).run(rx, &f));
    SinkHandle { tx: Some(tx), queued, failed, join }
}

fn stopped() -> TransferError {
    TransferError::Io(std::io::Error::other("the file writer stopped"))
}

impl<T> SinkHandle<T> {
    pub fn queue(&self) -> SinkQueue {
        SinkQueue { tx: self.tx.clone().expect("sink open"), queued: self.queued.clone(), failed: self.failed.clone() }
    }

    /// Waits for every queued write, syncs, persists the final map and returns.
    pub async fn finish(self) -> Result<SinkDone<T>, TransferError> {
        match self.finish_parts().await {
            (Some(target), Ok(d)) => Ok(SinkDone { target, written: d.written, md5: d.md5 }),
            (None, Ok(_)) => Err(stopped()),
            (_, Err(e)) => Err(e),
        }
    }

    /// Like [`Self::finish`], but hands back the target also when writing failed (an upload
    /// settles its staging either way).
    pub async fn finish_parts(mut self) -> Ended<T> {
        self.tx = None;
        match (&mut self.join).await {
            Ok(r) => r,
            Err(e) => (None, Err(TransferError::Io(std::io::Error::other(e)))),
        }
    }
}

struct Writer<T> {
    target: T,
    size: u64,
    written: RangeSet,
    hasher: Md5,
    hashed: u64,
    persist: PersistFn,
    queued: Arc<AtomicU64>,
    dirty: bool,
    last_persist: Instant,
    /// Bytes written since the last checkpoint, and in all.
    unsynced: u64,
    total: u64,
    scratch: Vec<u8>,
    /// An in-order target's chunks that arrived past `hashed`, by offset, and their bytes.
    ahead: BTreeMap<u64, Bytes>,
    ahead_bytes: u64,
}

impl<T: SinkTarget> Writer<T> {
    fn new(
        target: T,
        size: u64,
        held: RangeSet,
        prefix: (Md5, u64),
        persist: PersistFn,
        queued: Arc<AtomicU64>,
    ) -> Writer<T> {
        Writer {
            target,
            size,
            written: held,
            hasher: prefix.0,
            hashed: prefix.1,
            persist,
            queued,
            dirty: false,
            last_persist: Instant::now(),
            unsynced: 0,
            total: 0,
            scratch: Vec::new(),
            ahead: BTreeMap::new(),
            ahead_bytes: 0,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<(u64, Bytes)>, failed: &Failure) -> Ended<T> {
        let result = self.drain(&rx);
        if let Err(e) = &result {
            let _ = failed.set(e.duplicate());
        }
        // Whatever happened, make what was written durable and describe it for resume.
        let synced = self.target.sync(&self.written, true);
        if let Ok(durable) = &synced {
            if let Err(e) = (self.persist)(durable) {
                tracing::warn!("cannot save the resume map: {e}");
            }
        }
        let end = result.and(synced).and_then(|_| self.hash_contiguous());
        let md5 = (self.hashed == self.size).then(|| self.hasher.clone().finalize().into());
        let done = end.map(|()| SinkDone { target: (), written: self.written.clone(), md5 });
        (Some(self.target), done)
    }

    fn drain(&mut self, rx: &mpsc::Receiver<(u64, Bytes)>) -> Result<(), TransferError> {
        // UDP-RESUME-3: the map exists before the first byte lands, so a crash can never
        // leave a partial with holes that reads as one contiguous prefix.
        // What is held is durable already.
        (self.persist)(&self.written).map_err(TransferError::from_io)?;
        self.hash_contiguous()?;
        loop {
            match rx.recv_timeout(PERSIST_EVERY) {
                Ok((offset, data)) => {
                    self.queued.fetch_sub(data.len() as u64, Ordering::Relaxed);
                    if T::IN_ORDER {
                        self.write_in_order(offset, data)?;
                    } else {
                        self.write(offset, &data)?;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let early = self.unsynced >= PERSIST_MIN_BYTES.max(self.total / 4);
            if self.dirty && (early || self.last_persist.elapsed() >= PERSIST_EVERY) {
                self.checkpoint()?;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        let end = offset + data.len() as u64;
        if end > self.size {
            return Err(TransferError::TooLarge { declared: self.size });
        }
        self.target.write_at(offset, data)?;
        self.written.insert(offset, end);
        self.dirty = true;
        self.unsynced += data.len() as u64;
        self.total += data.len() as u64;
        if offset <= self.hashed && self.hashed < end {
            self.hasher.update(&data[(self.hashed - offset) as usize..]);
            self.hashed = end;
        }
        self.hash_contiguous()
    }

    /// An in-order target: writes what continues the prefix, with whatever it makes
    /// contiguous, and holds the rest (STORE-OBJ-9).
    fn write_in_order(&mut self, offset: u64, data: Bytes) -> Result<(), TransferError> {
        let end = offset + data.len() as u64;
        if end > self.size {
            return Err(TransferError::TooLarge { declared: self.size });
        }
        if offset > self.hashed {
            if self.ahead.get(&offset).is_some_and(|d| d.len() >= data.len()) {
                return Ok(());
            }
            self.ahead_bytes += data.len() as u64;
            if let Some(old) = self.ahead.insert(offset, data) {
                self.ahead_bytes -= old.len() as u64;
            }
            if self.ahead_bytes > MAX_AHEAD {
                // Not what a sender does: bounded memory over a client spraying offsets.
                return Err(TransferError::OutOfOrder { expected: self.hashed, got: offset });
            }
            return Ok(());
        }
        self.append(offset, &data)?;
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() > self.hashed {
                break;
            }
            let (at, data) = entry.remove_entry();
            self.ahead_bytes -= data.len() as u64;
            self.append(at, &data)?;
        }
        Ok(())
    }

    /// Writes the part of `data` (at `offset <= hashed`) past the hashed prefix.
    fn append(&mut self, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        let end = offset + data.len() as u64;
        if end <= self.hashed {
            return Ok(());
        }
        let piece = &data[(self.hashed - offset) as usize..];
        self.target.write_at(self.hashed, piece)?;
        self.hasher.update(piece);
        self.written.insert(self.hashed, end);
        self.hashed = end;
        self.dirty = true;
        self.unsynced += piece.len() as u64;
        self.total += piece.len() as u64;
        Ok(())
    }

    /// Hashes written bytes that became contiguous with the hashed prefix by reading them back.
    fn hash_contiguous(&mut self) -> Result<(), TransferError> {
        let end = self.written.contiguous_from(self.hashed);
        while self.hashed < end {
            let n = (end - self.hashed).min(1 << 20) as usize;
            self.scratch.resize(n, 0);
            self.target.read_at(&mut self.scratch, self.hashed)?;
            self.hasher.update(&self.scratch);
            self.hashed += n as u64;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), TransferError> {
        let durable = self.target.sync(&self.written, false)?;
        if let Err(e) = (self.persist)(&durable) {
            tracing::warn!("cannot save the resume map: {e}");
        }
        self.dirty = false;
        self.unsynced = 0;
        self.last_persist = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn writes_out_of_order_and_hashes_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hel").unwrap();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let saved = Arc::new(Mutex::new(RangeSet::new()));
        let s2 = saved.clone();
        let persist: PersistFn = Box::new(move |r| {
            *s2.lock().unwrap() = r.clone();
            Ok(())
        });
        let sink = spawn_sink(file, 11, RangeSet::from_ranges([(0, 3)]), persist);
        let q = sink.queue();
        assert!(q.write(6, Bytes::from_static(b"world")).is_ok());
        assert!(q.write(3, Bytes::from_static(b"lo ")).is_ok());
        drop(q);
        let done = sink.finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(done.md5, Some(<[u8; 16]>::from(Md5::digest(b"hello world"))));
        assert_eq!(saved.lock().unwrap().iter().collect::<Vec<_>>(), vec![(0, 11)]);
    }

    #[tokio::test]
    async fn a_failed_writer_refuses_further_writes_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let sink = spawn_sink(file, 4, RangeSet::new(), Box::new(|_| Ok(())));
        let q = sink.queue();
        q.write(2, Bytes::from_static(b"xyz")).unwrap(); // past the size: the writer fails
        let mut refused = None;
        for _ in 0..500 {
            if let Err(e) = q.write(0, Bytes::from_static(b"a")) {
                refused = Some(e);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(refused, Some(TransferError::TooLarge { declared: 4 })), "{refused:?}");
        assert!(matches!(sink.finish().await, Err(TransferError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn an_incomplete_file_has_no_digest_and_keeps_its_map() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let sink = spawn_sink(file, 10, RangeSet::new(), Box::new(|_| Ok(())));
        sink.queue().write(4, Bytes::from_static(b"xy")).unwrap();
        let done = sink.finish().await.unwrap();
        assert_eq!(done.md5, None);
        assert_eq!(done.written.iter().collect::<Vec<_>>(), vec![(4, 6)]);
    }

    /// A real staging (the local one) behind the in-order target.
    fn staging(dir: &std::path::Path, size: u64) -> (crate::storage::LocalStorage, StagingTarget) {
        use crate::storage::Storage;
        let home = Arc::new(crate::home::Home::open(dir).unwrap());
        let storage = crate::storage::LocalStorage::new(home);
        let p = crate::home::HomePath::resolve(&crate::home::HomePath::root(), "f").unwrap();
        let st = storage.open_staging(&p, size, false).unwrap();
        (storage, StagingTarget(st))
    }

    /// The real staging target, with the offsets it was written at seen from outside.
    struct Watched(StagingTarget, Arc<Mutex<Vec<(u64, u64)>>>);

    impl SinkTarget for Watched {
        const IN_ORDER: bool = StagingTarget::IN_ORDER;
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), TransferError> {
            self.1.lock().unwrap().push((offset, offset + data.len() as u64));
            self.0.write_at(offset, data)
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), TransferError> {
            self.0.read_at(buf, offset)
        }
        fn sync(&mut self, written: &RangeSet, last: bool) -> Result<RangeSet, TransferError> {
            self.0.sync(written, last)
        }
    }

    #[tokio::test]
    async fn an_in_order_target_gets_its_bytes_in_order_and_the_whole_digest() {
        // STORE-OBJ-9: chunks ahead of a hole wait in the sink; the staging sees one stream.
        let dir = tempfile::tempdir().unwrap();
        let body = b"hello, in-order world".to_vec();
        let (_storage, target) = staging(dir.path(), body.len() as u64);
        let saved = Arc::new(Mutex::new(Vec::new()));
        let s2 = saved.clone();
        let persist: PersistFn = Box::new(move |r| {
            s2.lock().unwrap().push(r.clone());
            Ok(())
        });
        let writes = Arc::new(Mutex::new(Vec::new()));
        let target = Watched(target, writes.clone());
        let sink = spawn_sink_to(target, body.len() as u64, RangeSet::new(), (Md5::new(), 0), persist);
        let q = sink.queue();
        let b = Bytes::from(body.clone());
        for (s, e) in [(12, 21), (5, 9), (7, 14), (0, 5), (9, 12)] {
            q.write(s, b.slice(s as usize..e as usize)).unwrap();
        }
        drop(q);
        let done = sink.finish().await.unwrap();
        assert_eq!(done.md5, Some(<[u8; 16]>::from(Md5::digest(&body))));
        assert_eq!(done.written.iter().collect::<Vec<_>>(), vec![(0, body.len() as u64)]);
        assert_eq!(std::fs::read(dir.path().join(".f.xfer-part")).unwrap(), body);
        let writes = writes.lock().unwrap().clone();
        assert!(writes.windows(2).all(|w| w[0].1 == w[1].0), "not one stream: {writes:?}");
        assert_eq!((writes[0].0, writes.last().unwrap().1), (0, body.len() as u64));
        let last = saved.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.iter().collect::<Vec<_>>(), vec![(0, body.len() as u64)], "the final map is what is durable");
    }

    #[tokio::test]
    async fn a_client_spraying_offsets_ends_its_upload_instead_of_growing_memory() {
        // STORE-OBJ-9: at most MAX_AHEAD bytes wait ahead of the first missing byte.
        let dir = tempfile::tempdir().unwrap();
        let size = 4 * MAX_AHEAD;
        let (_storage, target) = staging(dir.path(), size);
        let sink = spawn_sink_to(target, size, RangeSet::new(), (Md5::new(), 0), Box::new(|_| Ok(())));
        let q = sink.queue();
        let piece = Bytes::from(vec![7u8; 1 << 20]);
        let mut refused = None;
        for i in 1..=(MAX_AHEAD >> 20) + 1 {
            if let Err(e) = q.write(i << 21, piece.clone()) {
                refused = Some(e);
                break;
            }
        }
        drop(q);
        let (target, end) = sink.finish_parts().await;
        assert!(matches!(end, Err(TransferError::OutOfOrder { expected: 0, .. })), "{end:?}");
        assert!(refused.is_none() || matches!(refused, Some(TransferError::OutOfOrder { .. })), "{refused:?}");
        let held = target.expect("the staging comes back to settle").0.held();
        assert_eq!(held, Some(0), "nothing was written past the hole");
    }
}
