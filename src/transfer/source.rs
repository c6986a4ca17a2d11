//! Sending side: a blocking thread reads the file, computes each chunk's crc32 and the running
//! md5, and hands chunks to the network over a bounded channel.

use bytes::BytesMut;
use md5::{Digest, Md5};
use tokio::sync::mpsc;

use super::TransferError;
use crate::proto::control::Md5Digest;
use crate::proto::{DataChunk, CHUNK_SIZE};

/// Chunks in flight between the reader thread and the network (bounds memory to
/// `QUEUE_DEPTH * CHUNK_SIZE`).
const QUEUE_DEPTH: usize = 8;

/// What the reader thread produces.
#[derive(Debug)]
pub enum SourceItem {
    Chunk(DataChunk),
    /// Every chunk has been produced; `md5` covers the whole file.
    Done {
        md5: Md5Digest,
    },
}

/// Starts reading `file` (positioned anywhere) from `offset` to `size`. `hasher` must already
/// cover bytes `[0, offset)`. A file that turns out shorter than `size` yields
/// `TransferError::SourceChanged`.
pub fn spawn_reader<R: ReadAt>(
    file: R,
    offset: u64,
    size: u64,
    hasher: Md5,
) -> mpsc::Receiver<Result<SourceItem, TransferError>> {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = read_loop(file, offset, size, hasher, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

fn read_loop<R: ReadAt>(
    file: R,
    offset: u64,
    size: u64,
    mut hasher: Md5,
    tx: &mpsc::Sender<Result<SourceItem, TransferError>>,
) -> Result<(), TransferError> {
    let mut pos = offset;
    while pos < size {
        let n = (size - pos).min(CHUNK_SIZE as u64) as usize;
        let mut buf = BytesMut::zeroed(n);
        file.fill_at(&mut buf, pos, size)?;
        hasher.update(&buf);
        let chunk = DataChunk::new(pos, buf.freeze());
        pos += n as u64;
        if tx.blocking_send(Ok(SourceItem::Chunk(chunk))).is_err() {
            return Ok(()); // the consumer gave up; nothing left to do
        }
    }
    let _ = tx.blocking_send(Ok(SourceItem::Done { md5: hasher.finalize().into() }));
    Ok(())
}

/// Positioned reads of what is sent: a local file, or a stored file of any storage.
pub trait ReadAt: Send + 'static {
    /// Fills `buf` from `pos`; running out of source before `size` means it changed.
    fn fill_at(&self, buf: &mut [u8], pos: u64, size: u64) -> Result<(), TransferError>;
}

impl ReadAt for std::fs::File {
    fn fill_at(&self, buf: &mut [u8], pos: u64, size: u64) -> Result<(), TransferError> {
        read_source_at(self, buf, pos, size)
    }
}

/// Fills `buf` from `file` at `pos` (by position; the cursor is not used). Running out of file
/// before `size` means the source changed while it was being sent.
pub fn read_source_at(file: &std::fs::File, buf: &mut [u8], pos: u64, size: u64) -> Result<(), TransferError> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => {
                let at = pos + filled as u64;
                return Err(TransferError::SourceChanged(format!("file shrank to {at} bytes while reading {size}")));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
