//! Transport-agnostic transfer machinery: chunking with crc32, whole-file md5, partial files
//! and resume checks. The server and client both drive these pieces; which transport carries
//! the chunks in between is decided elsewhere (see [`crate::proto::Transport`]).
//!
//! Reading and hashing run on a blocking thread and hand chunks over a bounded channel, so disk,
//! md5 and the network work in parallel rather than in turn.

pub mod progress;
pub mod sink;
pub mod source;

use std::io::{self, Read};

use md5::{Digest, Md5};

use crate::proto::control::Md5Digest;

pub use progress::{Progress, ProgressFn};
pub use sink::{spawn_writer, ChunkCheck, WriterHandle, Written};
pub use source::{spawn_reader, SourceItem};

/// Why a transfer failed at this end.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("no space left on disk")]
    DiskFull,
    #[error("chunk at offset {offset} failed its crc32 check")]
    ChunkCorrupt { offset: u64 },
    #[error("chunk at offset {got}, expected {expected}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("data goes past the declared size of {declared} bytes")]
    TooLarge { declared: u64 },
    #[error("the source changed: {0}")]
    SourceChanged(String),
    #[error("md5 of the whole file does not match (expected {expected}, got {got})")]
    DigestMismatch { expected: String, got: String },
    #[error("transfer ended at {got} of {expected} bytes")]
    Incomplete { expected: u64, got: u64 },
}

impl TransferError {
    /// Classifies an I/O error, singling out a full disk.
    pub fn from_io(e: io::Error) -> TransferError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => TransferError::DiskFull,
            _ => TransferError::Io(e),
        }
    }
}

/// Reads the first `len` bytes of `file` from its start and returns the md5 state after them.
/// A file shorter than `len` means the source changed.
pub fn hash_prefix(file: &std::fs::File, len: u64) -> Result<Md5, TransferError> {
    let mut hasher = Md5::new();
    let mut reader = io::BufReader::with_capacity(1 << 20, file).take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != len {
        return Err(TransferError::SourceChanged(format!("expected at least {len} bytes, found {total}")));
    }
    Ok(hasher)
}

/// md5 of a whole file, with its size.
pub fn hash_file(file: &std::fs::File) -> Result<(Md5Digest, u64), TransferError> {
    let size = file.metadata()?.len();
    let hasher = hash_prefix(file, size)?;
    Ok((hasher.finalize().into(), size))
}

/// Lower-case hex of a digest.
pub fn hex_digest(d: &Md5Digest) -> String {
    hex::encode(d)
}

/// Compares two digests, describing a mismatch.
pub fn check_digest(expected: &Md5Digest, got: &Md5Digest) -> Result<(), TransferError> {
    if expected == got {
        Ok(())
    } else {
        Err(TransferError::DigestMismatch { expected: hex_digest(expected), got: hex_digest(got) })
    }
}
