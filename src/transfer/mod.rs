//! Transport-agnostic transfer machinery: chunking with crc32, whole-file md5, partial files
//! and resume checks. The server and client both drive these pieces; which transport carries
//! the chunks in between is decided elsewhere (see [`crate::proto::Transport`]).
//!
//! Reading and hashing run on a blocking thread and hand chunks over a bounded channel, so disk,
//! md5 and the network work in parallel rather than in turn.

pub mod progress;
pub mod sink;
pub mod source;

use std::io;

use md5::{Digest, Md5};

use crate::proto::control::Md5Digest;

pub use progress::{Progress, ProgressFn};
pub use sink::{spawn_writer, ChunkCheck, WriterHandle, Written};
pub use source::{spawn_reader, SourceItem};

/// Why a transfer failed at this end.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("i/o error: {0}")]
    Io(io::Error),
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
    /// A storage back end (the object store, PostgreSQL) is down; what was durable stays
    /// for a resume (STORE-OBJ-8).
    #[error("{0} unavailable")]
    Unavailable(String),
}

/// Every I/O error is classified, so a full disk is `DiskFull` wherever it happens.
impl From<io::Error> for TransferError {
    fn from(e: io::Error) -> TransferError {
        TransferError::from_io(e)
    }
}

impl TransferError {
    /// A copy for a second reader of the same failure (an I/O error keeps its kind and text).
    pub fn duplicate(&self) -> TransferError {
        match self {
            TransferError::Io(e) => TransferError::Io(io::Error::new(e.kind(), e.to_string())),
            TransferError::DiskFull => TransferError::DiskFull,
            TransferError::ChunkCorrupt { offset } => TransferError::ChunkCorrupt { offset: *offset },
            TransferError::OutOfOrder { expected, got } => TransferError::OutOfOrder { expected: *expected, got: *got },
            TransferError::TooLarge { declared } => TransferError::TooLarge { declared: *declared },
            TransferError::SourceChanged(s) => TransferError::SourceChanged(s.clone()),
            TransferError::DigestMismatch { expected, got } => {
                TransferError::DigestMismatch { expected: expected.clone(), got: got.clone() }
            }
            TransferError::Incomplete { expected, got } => TransferError::Incomplete { expected: *expected, got: *got },
            TransferError::Unavailable(what) => TransferError::Unavailable(what.clone()),
        }
    }

    /// Classifies an I/O error, singling out a full disk.
    pub fn from_io(e: io::Error) -> TransferError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => TransferError::DiskFull,
            _ => TransferError::Io(e),
        }
    }
}

/// Reads the first `len` bytes of `file` and returns the md5 state after them. Reads by
/// position, so the file's cursor is neither used nor moved. A file shorter than `len` means
/// the source changed.
pub fn hash_prefix(file: &std::fs::File, len: u64) -> Result<Md5, TransferError> {
    hash_ranges(file, std::iter::once((0, len)))
}

/// Hashes the bytes of `ranges` (ascending) one after another, as `held_md5` is defined
/// (UDP-CTRL-2). A file too short for them means the source changed.
pub fn hash_ranges(file: &std::fs::File, ranges: impl Iterator<Item = (u64, u64)>) -> Result<Md5, TransferError> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in ranges {
        let mut pos = start;
        while pos < end {
            let want = (end - pos).min(buf.len() as u64) as usize;
            match file.read_at(&mut buf[..want], pos) {
                Ok(0) => {
                    return Err(TransferError::SourceChanged(format!("expected at least {end} bytes, found {pos}")))
                }
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn hash_prefix_ignores_the_file_cursor() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"hello world").unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        let got: Md5Digest = hash_prefix(&f, 5).unwrap().finalize().into();
        assert_eq!(got, <Md5Digest>::from(Md5::digest(b"hello")));
        assert_eq!(f.stream_position().unwrap(), 11);
    }

    #[test]
    fn rejects_prefix_longer_than_the_file() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"abc").unwrap();
        assert!(matches!(hash_prefix(&f, 4), Err(TransferError::SourceChanged(_))));
    }
}
