//! The writer thread of a TCP upload: checked chunks go, in order, to the upload's
//! [`Staging`] (the partial file, or segment objects) on a blocking thread, so the network
//! task never waits on the disk or the object store beyond a short queue.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::proto::DataChunk;
use crate::storage::{transfer_error, Staging};
use crate::transfer::TransferError;

/// Chunks queued for the writer thread.
const QUEUE_DEPTH: usize = 8;

/// What the thread hands back: the staging, and the first write error if any.
type Done = (Box<dyn Staging>, Result<(), TransferError>);

/// Handle on the writer thread.
pub(super) struct StagingWriter {
    tx: Option<mpsc::Sender<DataChunk>>,
    join: Option<JoinHandle<Done>>,
    /// The thread's result, once a failed write collected it.
    done: Option<Done>,
}

impl StagingWriter {
    pub(super) fn spawn(staging: Box<dyn Staging>) -> StagingWriter {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let join = tokio::task::spawn_blocking(move || write_loop(staging, rx));
        StagingWriter { tx: Some(tx), join: Some(join), done: None }
    }

    /// Queues a checked chunk. If the writer has failed, returns its error.
    pub(super) async fn write(&mut self, chunk: DataChunk) -> Result<(), TransferError> {
        if let Some(tx) = &self.tx {
            if tx.send(chunk).await.is_ok() {
                return Ok(());
            }
        }
        // The receiver is gone only if the thread ended, which it does only on error.
        self.tx = None;
        if let Some(join) = self.join.take() {
            self.done = join.await.ok();
        }
        match &self.done {
            Some((_, Err(e))) => Err(e.duplicate()),
            _ => Err(stopped()),
        }
    }

    /// Waits for every queued chunk to be written and makes them durable. Returns the staging
    /// (unless its thread panicked) and the first error.
    pub(super) async fn finish(mut self) -> (Option<Box<dyn Staging>>, Result<(), TransferError>) {
        self.tx = None;
        let done = match self.join.take() {
            Some(join) => join.await.ok(),
            None => self.done.take(),
        };
        match done {
            Some((staging, r)) => (Some(staging), r),
            None => (None, Err(stopped())),
        }
    }
}

fn write_loop(mut staging: Box<dyn Staging>, mut rx: mpsc::Receiver<DataChunk>) -> Done {
    while let Some(chunk) = rx.blocking_recv() {
        if let Err(e) = staging.write_at(chunk.offset, &chunk.data) {
            return (staging, Err(transfer_error(e)));
        }
    }
    let r = staging.sync().map(|_| ()).map_err(transfer_error);
    (staging, r)
}

fn stopped() -> TransferError {
    TransferError::Io(std::io::Error::other("writer stopped early"))
}
