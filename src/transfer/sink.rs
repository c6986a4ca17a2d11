//! Receiving side: the network task checks each chunk's order, bounds and crc32 with
//! [`ChunkCheck`], then a blocking writer thread appends it to the partial file and feeds the
//! running md5.

use std::io::Write;

use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::TransferError;
use crate::proto::control::Md5Digest;
use crate::proto::DataChunk;

/// Chunks queued for the writer thread.
const QUEUE_DEPTH: usize = 8;

/// Order, bounds and checksum rules for arriving chunks (CTRL-XFER-2, CTRL-XFER-3,
/// CTRL-PUT-4). Pure; the caller owns the I/O.
#[derive(Debug, Clone)]
pub struct ChunkCheck {
    next: u64,
    size: u64,
}

impl ChunkCheck {
    /// Expects chunks from `offset` up to `size`.
    pub fn new(offset: u64, size: u64) -> ChunkCheck {
        ChunkCheck { next: offset, size }
    }

    /// Accepts the next chunk or says why not.
    pub fn accept(&mut self, chunk: &DataChunk) -> Result<(), TransferError> {
        if chunk.offset != self.next {
            return Err(TransferError::OutOfOrder { expected: self.next, got: chunk.offset });
        }
        if chunk.end() > self.size {
            return Err(TransferError::TooLarge { declared: self.size });
        }
        if !chunk.verify() {
            return Err(TransferError::ChunkCorrupt { offset: chunk.offset });
        }
        self.next = chunk.end();
        Ok(())
    }

    /// Offset of the next expected byte.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The declared size has been reached.
    pub fn is_complete(&self) -> bool {
        self.next == self.size
    }

    /// Errors unless complete.
    pub fn ensure_complete(&self) -> Result<(), TransferError> {
        if self.is_complete() {
            Ok(())
        } else {
            Err(TransferError::Incomplete { expected: self.size, got: self.next })
        }
    }
}

/// Result of a finished writer.
#[derive(Debug)]
pub struct Written {
    pub file: std::fs::File,
    pub md5: Md5Digest,
}

/// Handle on the writer thread.
pub struct WriterHandle {
    tx: mpsc::Sender<DataChunk>,
    /// `None` once a failed write has collected the thread's error: a `JoinHandle` must not
    /// be awaited twice.
    join: Option<JoinHandle<Result<Written, TransferError>>>,
}

/// Starts a writer appending to `file`, which must be positioned at its end with `hasher`
/// covering everything before it.
pub fn spawn_writer(file: std::fs::File, hasher: Md5) -> WriterHandle {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let join = tokio::task::spawn_blocking(move || write_loop(file, hasher, rx));
    WriterHandle { tx, join: Some(join) }
}

fn write_loop(
    mut file: std::fs::File,
    mut hasher: Md5,
    mut rx: mpsc::Receiver<DataChunk>,
) -> Result<Written, TransferError> {
    while let Some(chunk) = rx.blocking_recv() {
        file.write_all(&chunk.data).map_err(TransferError::from_io)?;
        hasher.update(&chunk.data);
    }
    file.sync_all().map_err(TransferError::from_io)?;
    Ok(Written { file, md5: hasher.finalize().into() })
}

impl WriterHandle {
    /// Queues a checked chunk. If the writer has failed, returns its error.
    pub async fn write(&mut self, chunk: DataChunk) -> Result<(), TransferError> {
        if self.tx.send(chunk).await.is_ok() {
            return Ok(());
        }
        // The receiver is gone only if the thread ended, which it does only on error.
        let (tx, _) = mpsc::channel(1);
        let old = std::mem::replace(&mut self.tx, tx);
        drop(old);
        match self.join.take() {
            Some(join) => Err(join_error(join).await),
            None => Err(stopped()),
        }
    }

    /// Waits for every queued chunk to be written, then fsyncs. Returns the file and the md5
    /// of everything in it.
    pub async fn finish(self) -> Result<Written, TransferError> {
        drop(self.tx);
        match self.join {
            Some(join) => join.await.unwrap_or_else(|e| Err(TransferError::Io(std::io::Error::other(e)))),
            None => Err(stopped()),
        }
    }
}

async fn join_error(join: JoinHandle<Result<Written, TransferError>>) -> TransferError {
    match join.await {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => stopped(),
        Err(e) => TransferError::Io(std::io::Error::other(e)),
    }
}

fn stopped() -> TransferError {
    TransferError::Io(std::io::Error::other("writer stopped early"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chunk(offset: u64, data: &'static [u8]) -> DataChunk {
        DataChunk::new(offset, Bytes::from_static(data))
    }

    #[test]
    fn accepts_in_order_chunks_up_to_size() {
        let mut c = ChunkCheck::new(0, 6);
        c.accept(&chunk(0, b"abc")).unwrap();
        c.accept(&chunk(3, b"def")).unwrap();
        assert!(c.is_complete());
    }

    #[test]
    fn rejects_gap_overrun_and_flipped_byte() {
        let mut c = ChunkCheck::new(0, 4);
        assert!(matches!(c.accept(&chunk(1, b"a")), Err(TransferError::OutOfOrder { .. })));
        assert!(matches!(c.accept(&chunk(0, b"abcde")), Err(TransferError::TooLarge { .. })));
        let mut bad = chunk(0, b"abcd");
        bad.crc32 ^= 1;
        assert!(matches!(c.accept(&bad), Err(TransferError::ChunkCorrupt { offset: 0 })));
        assert_eq!(c.position(), 0);
        assert!(c.ensure_complete().is_err());
    }

    /// A failed write collects the writer's error; finishing afterwards must not poll the
    /// finished thread again (it used to panic: "JoinHandle polled after completion").
    #[tokio::test]
    async fn finish_after_a_failed_write_reports_instead_of_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let read_only = std::fs::File::open(&path).unwrap();
        let mut w = spawn_writer(read_only, Md5::new());
        let mut failed = None;
        for i in 0..(QUEUE_DEPTH as u64 + 4) {
            if let Err(e) = w.write(chunk(i, b"a")).await {
                failed = Some(e);
                break;
            }
        }
        assert!(matches!(failed, Some(TransferError::Io(_))), "{failed:?}");
        assert!(w.finish().await.is_err());
    }

    #[tokio::test]
    async fn writer_appends_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create(&path).unwrap();
        let mut w = spawn_writer(file, Md5::new());
        w.write(chunk(0, b"hello ")).await.unwrap();
        w.write(chunk(6, b"world")).await.unwrap();
        let written = w.finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(written.md5, <[u8; 16]>::from(Md5::digest(b"hello world")));
    }
}
