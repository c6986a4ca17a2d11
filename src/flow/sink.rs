//! The receiving side's file writes: a blocking thread writes each chunk at its offset, feeds
//! the md5 with the contiguous prefix as it grows (from the chunk itself when it arrives in
//! order, else by reading back what was written earlier), and every second syncs the file and
//! persists the map of held ranges for resume (UDP-RESUME-*).

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::proto::control::Md5Digest;
use crate::transfer::TransferError;
use crate::udp::ranges::RangeSet;

/// How often the held-range map is made durable while data flows: at least every second, and
/// early in a transfer after every [`PERSIST_MIN_BYTES`] or quarter of what is written, so a
/// crash soon after the start still leaves something to resume while a long transfer syncs
/// rarely.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
const PERSIST_MIN_BYTES: u64 = 4 << 20;

/// Stores a range map that describes synced data; called from the writer thread.
pub type PersistFn = Box<dyn FnMut(&RangeSet) -> std::io::Result<()> + Send>;

/// What the writer thread ends with.
#[derive(Debug)]
pub struct SinkDone {
    pub file: std::fs::File,
    /// Ranges written and synced.
    pub written: RangeSet,
    /// md5 of the whole file if every byte of it was written.
    pub md5: Option<Md5Digest>,
}

/// The writer's failure, set the moment a write fails (before the thread syncs and saves the
/// map), so the packet path stops the flow at once instead of acking data it cannot store.
type Failure = Arc<OnceLock<TransferError>>;

/// Sending end of the writer thread; dropping it (or `finish`) ends the thread.
pub struct SinkHandle {
    tx: Option<mpsc::Sender<(u64, Bytes)>>,
    queued: Arc<AtomicU64>,
    failed: Failure,
    join: tokio::task::JoinHandle<Result<SinkDone, TransferError>>,
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

/// Starts the writer for `file` of final size `size`, which already holds `held`.
pub fn spawn_sink(file: std::fs::File, size: u64, held: RangeSet, persist: PersistFn) -> SinkHandle {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicU64::new(0));
    let failed = Failure::default();
    let (q, f) = (queued.clone(), failed.clone());
    let join = tokio::task::spawn_blocking(move || Writer::new(file, size, held, persist, q).run(rx, &f));
    SinkHandle { tx: Some(tx), queued, failed, join }
}

fn stopped() -> TransferError {
    TransferError::Io(std::io::Error::other("the file writer stopped"))
}

impl SinkHandle {
    pub fn queue(&self) -> SinkQueue {
        SinkQueue { tx: self.tx.clone().expect("sink open"), queued: self.queued.clone(), failed: self.failed.clone() }
    }

    /// Waits for every queued write, syncs, persists the final map and returns.
    pub async fn finish(mut self) -> Result<SinkDone, TransferError> {
        self.tx = None;
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(TransferError::Io(std::io::Error::other(e))),
        }
    }
}

struct Writer {
    file: std::fs::File,
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
}

impl Writer {
    fn new(file: std::fs::File, size: u64, held: RangeSet, persist: PersistFn, queued: Arc<AtomicU64>) -> Writer {
        Writer {
            file,
            size,
            written: held,
            hasher: Md5::new(),
            hashed: 0,
            persist,
            queued,
            dirty: false,
            last_persist: Instant::now(),
            unsynced: 0,
            total: 0,
            scratch: Vec::new(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<(u64, Bytes)>, failed: &Failure) -> Result<SinkDone, TransferError> {
        let result = self.drain(&rx);
        if let Err(e) = &result {
            let _ = failed.set(e.duplicate());
        }
        // Whatever happened, make what was written durable and describe it for resume.
        let synced = self.file.sync_all().map_err(TransferError::from_io);
        if let Err(e) = (self.persist)(&self.written) {
            tracing::warn!("cannot save the resume map: {e}");
        }
        result?;
        synced?;
        self.hash_contiguous()?;
        let md5 = (self.hashed == self.size).then(|| self.hasher.clone().finalize().into());
        Ok(SinkDone { file: self.file, written: self.written, md5 })
    }

    fn drain(&mut self, rx: &mpsc::Receiver<(u64, Bytes)>) -> Result<(), TransferError> {
        // UDP-RESUME-3: the map exists before the first byte lands, so a crash can never
        // leave a partial with holes that reads as one contiguous prefix.
        (self.persist)(&self.written).map_err(TransferError::from_io)?;
        self.hash_contiguous()?;
        loop {
            match rx.recv_timeout(PERSIST_EVERY) {
                Ok((offset, data)) => {
                    self.queued.fetch_sub(data.len() as u64, Ordering::Relaxed);
                    self.write(offset, &data)?;
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
        self.file.write_all_at(data, offset).map_err(TransferError::from_io)?;
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

    /// Hashes written bytes that became contiguous with the hashed prefix by reading them back.
    fn hash_contiguous(&mut self) -> Result<(), TransferError> {
        let end = self.written.contiguous_from(self.hashed);
        while self.hashed < end {
            let n = (end - self.hashed).min(1 << 20) as usize;
            self.scratch.resize(n, 0);
            self.file.read_exact_at(&mut self.scratch, self.hashed)?;
            self.hasher.update(&self.scratch);
            self.hashed += n as u64;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), TransferError> {
        self.file.sync_data().map_err(TransferError::from_io)?;
        if let Err(e) = (self.persist)(&self.written) {
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
}
