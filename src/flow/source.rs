//! The sending side's file bytes: a blocking thread reads the file (a local file, or a stored
//! one through its [`crate::storage::BlobReader`], STORE-OBJ-9) in order, hashes every byte
//! for the whole-file md5, and hands 1 MiB blocks ahead of the network to the flow, which
//! keeps those the receiver does not hold yet, so retransmissions never touch the disk.

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use tokio::sync::mpsc;

use crate::proto::control::Md5Digest;
use crate::transfer::source::ReadAt;
use crate::transfer::TransferError;
use crate::udp::ranges::RangeSet;

const BLOCK: u64 = 1 << 20;
/// Blocks read ahead of the network.
const READ_AHEAD: usize = 16;

enum Item {
    /// A block's start and length, with its bytes or `None` when the receiver holds it all.
    Block(u64, u64, Option<Bytes>),
    Done(Md5Digest),
}

/// The file's blocks as they are read.
pub struct BlockSource {
    rx: mpsc::Receiver<Result<Item, TransferError>>,
    blocks: Vec<(u64, u64, Option<Bytes>)>,
    loaded_end: u64,
    md5: Option<Md5Digest>,
}

impl BlockSource {
    /// Starts reading `file` of `size` bytes; blocks inside `held` are hashed but not kept. A
    /// file that changes under the reader ends the flow with `SourceChanged`.
    pub fn spawn<R: ReadAt>(file: R, size: u64, held: RangeSet) -> BlockSource {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = read_loop(&file, size, &held, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        BlockSource { rx, blocks: Vec::new(), loaded_end: 0, md5: None }
    }

    /// Waits until bytes below `end` are loaded.
    pub async fn ensure(&mut self, end: u64) -> Result<(), TransferError> {
        while self.loaded_end < end {
            if self.md5.is_some() {
                return Err(TransferError::SourceChanged("file shrank while sending".into()));
            }
            self.pull().await?;
        }
        Ok(())
    }

    /// Takes the reader's next item: a block, or the md5 after the last one.
    async fn pull(&mut self) -> Result<(), TransferError> {
        match self.rx.recv().await {
            Some(Ok(Item::Block(start, len, data))) => {
                self.blocks.push((start, len, data));
                self.loaded_end = start + len;
                Ok(())
            }
            Some(Ok(Item::Done(md5))) => {
                self.md5 = Some(md5);
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Err(TransferError::Io(std::io::Error::other("file reader stopped"))),
        }
    }

    /// The blocks loaded since the last call, ascending: start, length, and the bytes or
    /// `None` when the receiver holds the whole block.
    pub fn take_loaded(&mut self) -> Vec<(u64, u64, Option<Bytes>)> {
        std::mem::take(&mut self.blocks)
    }

    /// The md5 of the whole file, reading on to its end; the blocks read meanwhile stay to
    /// be taken by [`take_loaded`](Self::take_loaded).
    pub async fn md5(&mut self) -> Result<Md5Digest, TransferError> {
        loop {
            if let Some(m) = self.md5 {
                return Ok(m);
            }
            self.pull().await?;
        }
    }
}

fn read_loop<R: ReadAt>(
    file: &R,
    size: u64,
    held: &RangeSet,
    tx: &mpsc::Sender<Result<Item, TransferError>>,
) -> Result<(), TransferError> {
    let mut hasher = Md5::new();
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(BLOCK) as usize;
        let mut buf = BytesMut::zeroed(n);
        file.fill_at(&mut buf, pos, size)?;
        hasher.update(&buf);
        let keep = !held.contains(pos, pos + n as u64);
        let item = Item::Block(pos, n as u64, keep.then(|| buf.freeze()));
        pos += n as u64;
        if tx.blocking_send(Ok(item)).is_err() {
            return Ok(()); // the flow ended
        }
    }
    let _ = tx.blocking_send(Ok(Item::Done(hasher.finalize().into())));
    Ok(())
}
