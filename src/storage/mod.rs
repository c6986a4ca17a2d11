//! Where a user's files live, behind one trait: the namespace (stat, list, mkdir, remove,
//! rename, usage, partial uploads) and byte access (a positioned reader for downloads, an
//! upload staging writer that accepts writes at offsets, says which ranges are durable for
//! resume, and ends by verifying the md5 and publishing the file atomically, or is discarded).
//!
//! Whole-tree reads and attributes (a walk in one call, a file's mtime and mode) are part of
//! the namespace too, so `Walk`, `Glob`, `SetAttrs` and `Copy` work in both profiles
//! (STORE-OBJ-11).
//!
//! Two implementations:
//! - [`LocalStorage`]: the home jail on local disk ([`crate::home::Home`], cap-std), the
//!   embedded profile's default. Its rules are those of `crate::home` unchanged (SEC-JAIL-*).
//! - [`object::ObjectStorage`]: the namespace in PostgreSQL, the bytes in immutable objects of
//!   an S3-compatible store reached through OpenDAL (STORE-OBJ-*).
//!
//! Every method blocks: call them from blocking threads (the server's `blocking`), never from
//! inside an async task. The object implementation drives its async clients on the runtime
//! handle it was made with.

#[cfg(feature = "cluster")]
pub mod object;

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use md5::{Digest, Md5};

use crate::home::{Entry, Home, HomeError, HomePath, PartialFile, TreeItem, Usage};
use crate::proto::control::Md5Digest;
use crate::udp::ranges::RangeSet;

/// Errors of storage operations, by whose fault they are.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The request itself (path, kind, existence): the user's to fix.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// A back end (PostgreSQL or the object store) did not answer or failed; nothing was lost,
    /// and the operation can be retried once it is back.
    #[error("{what} unavailable: {detail}")]
    Unavailable { what: &'static str, detail: String },
    /// Another writer took over this upload (a higher epoch); this one must stop (STORE-OBJ-4).
    #[error("upload of {0} was taken over by another writer")]
    Fenced(String),
    /// The bytes stored are not those the file had when the transfer began (a replaced object,
    /// a short blob).
    #[error("the stored file changed: {0}")]
    SourceChanged(String),
    /// The staged bytes do not hash to the md5 the client announced.
    #[error("md5 of the whole file does not match (expected {expected}, got {got})")]
    DigestMismatch { expected: String, got: String },
    /// A write outside what the upload may hold (past its size, too many open segments).
    #[error("invalid write: {0}")]
    InvalidWrite(String),
}

impl From<io::Error> for StorageError {
    fn from(e: io::Error) -> StorageError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StorageError::Home(HomeError::DiskFull),
            _ => StorageError::Home(HomeError::Io { path: String::new(), source: e }),
        }
    }
}

/// A user's files: namespace and bytes.
pub trait Storage: Send + Sync {
    /// Metadata of `p` itself (symlinks described, not followed).
    fn stat(&self, p: &HomePath) -> Result<Entry, StorageError>;
    /// Entries of a directory, sorted by name.
    fn list(&self, p: &HomePath) -> Result<Vec<Entry>, StorageError>;
    /// Ok if `p` is an existing directory.
    fn check_dir(&self, p: &HomePath) -> Result<(), StorageError>;
    fn mkdir(&self, p: &HomePath) -> Result<(), StorageError>;
    /// Removes a file; returns the bytes freed.
    fn remove_file(&self, p: &HomePath) -> Result<u64, StorageError>;
    /// Removes an empty directory.
    fn remove_dir(&self, p: &HomePath) -> Result<(), StorageError>;
    /// Renames; returns the size of a regular file that was replaced.
    fn rename(&self, from: &HomePath, to: &HomePath) -> Result<Option<u64>, StorageError>;
    /// What the home holds against its quota (QUOTA-5, OPS-USAGE-1).
    fn usage(&self) -> Result<Usage, StorageError>;
    /// Every unfinished upload.
    fn partials(&self) -> Result<Vec<PartialFile>, StorageError>;
    /// Opens a regular file for reading.
    fn open_reader(&self, p: &HomePath) -> Result<Box<dyn BlobReader>, StorageError>;
    /// Opens the staging of an upload to `p` of `size` bytes. With `resume` false, whatever
    /// an earlier upload staged is discarded first.
    fn open_staging(&self, p: &HomePath, size: u64, resume: bool) -> Result<Box<dyn Staging>, StorageError>;
    /// Discards the staging of `p`, if any; returns the bytes freed.
    fn discard_staging(&self, p: &HomePath) -> Result<u64, StorageError>;
    /// Bytes an unfinished upload to `p` holds from its start on (what a TCP resume can
    /// keep), or `None` if there is none (CTRL-RESUME-1).
    fn staged_len(&self, p: &HomePath) -> Result<Option<u64>, StorageError>;
    /// The entry at `p` itself, under its own name, with its mtime and mode.
    fn tree_item(&self, p: &HomePath) -> Result<TreeItem, StorageError>;
    /// Visits the entries beneath directory `top`, each directory before what it holds,
    /// siblings in bytewise name order, down to `max_depth` levels (1: the directory's own
    /// entries); a `top` that is not a directory is visited alone, under its own name.
    /// Returns false as soon as `keep` does, true once everything was visited. A walk visits
    /// at most [`MAX_WALK_ENTRIES`] entries (and names of at most [`MAX_WALK_BYTES`]); past
    /// that it may stop as if `keep` had returned false (CTRL-TREE-2, CTRL-GLOB-2).
    fn walk_tree(
        &self,
        top: &HomePath,
        max_depth: usize,
        keep: &mut dyn FnMut(TreeItem) -> bool,
    ) -> Result<bool, StorageError>;
    /// Sets the mtime of the regular file `p` and, with `mode`, its permission bits (masked to
    /// [`crate::home::SETTABLE_MODE`], with [`crate::home::KEPT_MODE`] always set) (CTRL-ATTR-1).
    fn set_attrs(&self, p: &HomePath, mtime: i64, mode: Option<u32>) -> Result<(), StorageError>;
    /// Writes a copy of the regular file `from`, of `size` bytes (what it had when the copy
    /// was charged), as `to`: staged, then published atomically like an upload (CTRL-COPY-1).
    /// A source of another size, or one that changes meanwhile, is
    /// [`StorageError::SourceChanged`]. Returns the size of a regular file that was replaced;
    /// on failure the caller discards the staging of `to`.
    fn copy_file(&self, from: &HomePath, to: &HomePath, size: u64) -> Result<Option<u64>, StorageError> {
        copy_through_staging(self, from, to, size)
    }
}

/// [`Storage::copy_file`] through [`Storage::open_reader`] and [`Storage::open_staging`]: the
/// bytes are read in order and written in order, and the staging's running md5 is the one
/// [`Staging::finish`] checks (object storage: a new blob, never one shared with the source).
pub fn copy_through_staging<S: Storage + ?Sized>(
    storage: &S,
    from: &HomePath,
    to: &HomePath,
    size: u64,
) -> Result<Option<u64>, StorageError> {
    const PIECE: u64 = 1 << 20;
    let source = storage.open_reader(from)?;
    if source.size() != size {
        return Err(StorageError::SourceChanged(format!("{from} has {} bytes, not {size}", source.size())));
    }
    let mut staging = storage.open_staging(to, size, false)?;
    let mut buf = vec![0u8; PIECE.min(size) as usize];
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(PIECE) as usize;
        source.read_exact_at(&mut buf[..n], pos)?;
        staging.write_at(pos, &buf[..n])?;
        pos += n as u64;
    }
    source.check_unchanged()?;
    let md5 = match staging.received_md5() {
        Some(md5) => md5,
        None => hash_blob(&*source)?.0,
    };
    staging.finish(&md5)
}

/// Entries one walk looks at, at most: above the bounds of one `Walk` or `Glob` reply, so a
/// walk cut short there is always one those requests refuse anyway.
pub const MAX_WALK_ENTRIES: usize = 100_001;
/// Bytes of paths one walk holds in memory, at most (a `Walk` reply is bounded by its frame,
/// 8 MiB, well below that).
pub const MAX_WALK_BYTES: usize = 64 << 20;

/// Positioned reads of one file as it was when opened.
pub trait BlobReader: Send + Sync {
    fn size(&self) -> u64;
    /// Fills `buf` from `pos`. A file that no longer has those bytes (replaced, shortened) is
    /// [`StorageError::SourceChanged`], never a mix of two versions.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result<(), StorageError>;
    /// [`StorageError::SourceChanged`] if the file no longer has the size it had when opened
    /// (a local file written to meanwhile). Immutable blobs never change: the default is Ok.
    fn check_unchanged(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// An upload being staged. Dropping it without [`Staging::finish`] leaves what is durable for
/// a later resume.
pub trait Staging: Send {
    /// Declared size of the file.
    fn size(&self) -> u64;
    /// Byte ranges that survive a crash of this server (what a resume may skip).
    fn durable(&self) -> RangeSet;
    /// Writes `data` at `pos`; it becomes durable at the latest by [`Staging::sync`].
    fn write_at(&mut self, pos: u64, data: &[u8]) -> Result<(), StorageError>;
    /// Makes everything written so far durable where the back end allows it (the object
    /// store can only persist whole segments and the file's last one); returns [`Self::durable`].
    fn sync(&mut self) -> Result<RangeSet, StorageError>;
    /// Verifies that the whole file is present and hashes to `md5`, then makes it visible at
    /// its path atomically. Returns the size of a regular file that was replaced.
    fn finish(self: Box<Self>, md5: &Md5Digest) -> Result<Option<u64>, StorageError>;
    /// Keeps only the durable bytes `[0, len)` (a resume that starts over part of the file).
    fn cut(&mut self, len: u64) -> Result<(), StorageError>;
    /// The md5 state over the durable prefix `[0, len)`. Writes that then continue at `len`
    /// in order keep a running md5, so [`Staging::finish`] need not read the file back.
    fn hash_prefix(&mut self, len: u64) -> Result<Md5, StorageError>;
    /// Bytes the staging holds against the quota now, or `None` if it is gone.
    fn held(&self) -> Option<u64>;
    /// The md5 of the whole file when this writer received every byte of it in order from
    /// its start (the running md5 [`Staging::finish`] checks), else `None`.
    fn received_md5(&self) -> Option<Md5Digest> {
        None
    }
}

/// The embedded profile: the cap-std home on local disk.
pub struct LocalStorage {
    home: Arc<Home>,
}

impl LocalStorage {
    pub fn new(home: Arc<Home>) -> LocalStorage {
        LocalStorage { home }
    }
}

impl Storage for LocalStorage {
    fn stat(&self, p: &HomePath) -> Result<Entry, StorageError> {
        Ok(self.home.stat(p)?)
    }
    fn list(&self, p: &HomePath) -> Result<Vec<Entry>, StorageError> {
        Ok(self.home.list(p)?)
    }
    fn check_dir(&self, p: &HomePath) -> Result<(), StorageError> {
        Ok(self.home.check_dir(p)?)
    }
    fn mkdir(&self, p: &HomePath) -> Result<(), StorageError> {
        Ok(self.home.mkdir(p)?)
    }
    fn remove_file(&self, p: &HomePath) -> Result<u64, StorageError> {
        Ok(self.home.remove_file(p)?)
    }
    fn remove_dir(&self, p: &HomePath) -> Result<(), StorageError> {
        Ok(self.home.remove_dir(p)?)
    }
    fn rename(&self, from: &HomePath, to: &HomePath) -> Result<Option<u64>, StorageError> {
        Ok(self.home.rename(from, to)?)
    }
    fn usage(&self) -> Result<Usage, StorageError> {
        Ok(self.home.usage()?)
    }
    fn partials(&self) -> Result<Vec<PartialFile>, StorageError> {
        Ok(self.home.partials()?)
    }
    fn open_reader(&self, p: &HomePath) -> Result<Box<dyn BlobReader>, StorageError> {
        let (file, size) = self.home.open_read(p)?;
        Ok(Box::new(LocalReader { file, size }))
    }
    fn open_staging(&self, p: &HomePath, size: u64, resume: bool) -> Result<Box<dyn Staging>, StorageError> {
        let (file, len) = self.home.open_partial(p, resume)?;
        if len > size {
            return Err(StorageError::SourceChanged(format!("{len} bytes staged for a file of {size}")));
        }
        let mut written = RangeSet::new();
        if len > 0 {
            written.insert(0, len);
        }
        let durable = written.clone();
        let hasher = (len == 0).then(|| (Md5::new(), 0));
        Ok(Box::new(LocalStaging { home: self.home.clone(), target: p.clone(), file, size, written, durable, hasher }))
    }
    fn discard_staging(&self, p: &HomePath) -> Result<u64, StorageError> {
        Ok(self.home.discard_partial(p)?)
    }
    fn staged_len(&self, p: &HomePath) -> Result<Option<u64>, StorageError> {
        Ok(self.home.partial_len(p)?)
    }
    fn tree_item(&self, p: &HomePath) -> Result<TreeItem, StorageError> {
        Ok(self.home.tree_item(p)?)
    }
    fn walk_tree(
        &self,
        top: &HomePath,
        max_depth: usize,
        keep: &mut dyn FnMut(TreeItem) -> bool,
    ) -> Result<bool, StorageError> {
        Ok(self.home.walk_tree(top, max_depth, keep)?)
    }
    fn set_attrs(&self, p: &HomePath, mtime: i64, mode: Option<u32>) -> Result<(), StorageError> {
        Ok(self.home.set_attrs(p, mtime, mode)?)
    }
    /// The partial file of `to` filled by the kernel (`copy_file_range` where it can), synced
    /// and renamed into place; no md5 is computed.
    fn copy_file(&self, from: &HomePath, to: &HomePath, size: u64) -> Result<Option<u64>, StorageError> {
        use std::io::{Read, Write};
        let (source, len) = self.home.open_read(from)?;
        if len != size {
            return Err(StorageError::SourceChanged(format!("{from} has {len} bytes, not {size}")));
        }
        let (mut partial, _) = self.home.open_partial(to, false)?;
        let copied = io::copy(&mut (&source).take(size), &mut partial)?;
        let mut extra = [0u8; 1];
        let more = (&source).read(&mut extra)?;
        if copied != size || more > 0 {
            return Err(StorageError::SourceChanged(format!("{from} changed while being copied")));
        }
        partial.flush()?;
        partial.sync_all()?;
        Ok(self.home.finish_partial(to)?)
    }
}

struct LocalReader {
    file: std::fs::File,
    size: u64,
}

impl BlobReader for LocalReader {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result<(), StorageError> {
        self.file.read_exact_at(buf, pos).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                StorageError::SourceChanged(format!("file ends before {}", pos + buf.len() as u64))
            }
            _ => e.into(),
        })
    }
    fn check_unchanged(&self) -> Result<(), StorageError> {
        let now = self.file.metadata()?.len();
        if now != self.size {
            return Err(StorageError::SourceChanged(format!("{} bytes when opened, {now} now", self.size)));
        }
        Ok(())
    }
}

/// The partial file of the target (`NAME.xfer-part`), renamed into place when verified.
struct LocalStaging {
    home: Arc<Home>,
    target: HomePath,
    file: std::fs::File,
    size: u64,
    written: RangeSet,
    durable: RangeSet,
    /// md5 over `[0, .1)`, while the file arrives in order from its start.
    hasher: Option<(Md5, u64)>,
}

impl Staging for LocalStaging {
    fn size(&self) -> u64 {
        self.size
    }
    fn durable(&self) -> RangeSet {
        self.durable.clone()
    }
    fn write_at(&mut self, pos: u64, data: &[u8]) -> Result<(), StorageError> {
        let end = pos + data.len() as u64;
        if end > self.size {
            return Err(StorageError::InvalidWrite(format!("bytes up to {end} for a file of {}", self.size)));
        }
        self.file.write_all_at(data, pos)?;
        self.written.insert(pos, end);
        if let Some((h, next)) = &mut self.hasher {
            if *next == pos {
                h.update(data);
                *next = end;
            } else if !data.is_empty() {
                // A gap, or bytes written again: the md5 is read back from what is stored.
                self.hasher = None;
            }
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<RangeSet, StorageError> {
        self.file.sync_data()?;
        self.durable = self.written.clone();
        Ok(self.durable.clone())
    }
    fn finish(mut self: Box<Self>, md5: &Md5Digest) -> Result<Option<u64>, StorageError> {
        if !self.written.contains(0, self.size) && self.size > 0 {
            return Err(StorageError::InvalidWrite(format!(
                "{} of {} bytes staged",
                self.written.covered(),
                self.size
            )));
        }
        self.sync()?;
        let got = match self.hasher.take() {
            Some((h, next)) if next == self.size => h.finalize().into(),
            _ => hash_reader(&self.file, self.size)?,
        };
        check_md5(md5, &got)?;
        Ok(self.home.finish_partial(&self.target)?)
    }
    fn cut(&mut self, len: u64) -> Result<(), StorageError> {
        self.file.set_len(len)?;
        self.file.sync_all()?;
        self.written = RangeSet::new();
        if len > 0 {
            self.written.insert(0, len);
        }
        self.durable = self.written.clone();
        self.hasher = (len == 0).then(|| (Md5::new(), 0));
        Ok(())
    }
    fn hash_prefix(&mut self, len: u64) -> Result<Md5, StorageError> {
        if !self.durable.contains(0, len) && len > 0 {
            return Err(StorageError::InvalidWrite(format!("{len} bytes are not staged")));
        }
        let h = hash_file_prefix(&self.file, len)?;
        self.hasher = Some((h.clone(), len));
        Ok(h)
    }
    fn held(&self) -> Option<u64> {
        // Measured through the open handle: a link count of 0 means the partial is gone.
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata().ok()?;
        (meta.nlink() > 0).then_some(meta.len())
    }
    fn received_md5(&self) -> Option<Md5Digest> {
        running_md5(&self.hasher, self.size)
    }
}

/// The digest of a running md5 that covers a whole file of `size` bytes.
pub(crate) fn running_md5(hasher: &Option<(Md5, u64)>, size: u64) -> Option<Md5Digest> {
    hasher.as_ref().filter(|(_, next)| *next == size).map(|(h, _)| h.clone().finalize().into())
}

/// A stored file is a download source like a local one.
impl crate::transfer::source::ReadAt for Box<dyn BlobReader> {
    fn fill_at(&self, buf: &mut [u8], pos: u64, _size: u64) -> Result<(), crate::transfer::TransferError> {
        self.read_exact_at(buf, pos).map_err(transfer_error)
    }
}

/// The transfer's view of a storage error.
pub(crate) fn transfer_error(e: StorageError) -> crate::transfer::TransferError {
    use crate::transfer::TransferError;
    match e {
        StorageError::SourceChanged(s) => TransferError::SourceChanged(s),
        StorageError::Home(HomeError::DiskFull) => TransferError::DiskFull,
        StorageError::Home(HomeError::Io { source, .. }) => TransferError::from_io(source),
        StorageError::Unavailable { what, detail } => {
            tracing::warn!("{what} unavailable: {detail}");
            TransferError::Unavailable(what.to_string())
        }
        other => TransferError::Io(io::Error::other(other.to_string())),
    }
}

/// The md5 state after the first `len` bytes of a stored file (a resumed download's prefix).
pub fn hash_blob_prefix(reader: &dyn BlobReader, len: u64) -> Result<Md5, StorageError> {
    if len > reader.size() {
        return Err(StorageError::SourceChanged(format!("expected at least {len} bytes, found {}", reader.size())));
    }
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        reader.read_exact_at(&mut buf[..n], pos)?;
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hasher)
}

/// md5 and size of a whole file, read in 1 MiB pieces.
pub fn hash_blob(reader: &dyn BlobReader) -> Result<(Md5Digest, u64), StorageError> {
    let size = reader.size();
    Ok((hash_blob_prefix(reader, size)?.finalize().into(), size))
}

/// md5 of the first `size` bytes of `file`.
fn hash_reader(file: &std::fs::File, size: u64) -> Result<Md5Digest, StorageError> {
    Ok(hash_file_prefix(file, size)?.finalize().into())
}

/// md5 state over the first `size` bytes of `file`.
fn hash_file_prefix(file: &std::fs::File, size: u64) -> Result<Md5, StorageError> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos)?;
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hasher)
}

/// Compares the announced md5 with the one computed.
pub(crate) fn check_md5(expected: &Md5Digest, got: &Md5Digest) -> Result<(), StorageError> {
    if expected == got {
        Ok(())
    } else {
        Err(StorageError::DigestMismatch { expected: hex::encode(expected), got: hex::encode(got) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn local() -> (tempfile::TempDir, LocalStorage) {
        let dir = tempfile::tempdir().unwrap();
        let home = Arc::new(Home::open(dir.path()).unwrap());
        (dir, LocalStorage::new(home))
    }

    fn path(p: &str) -> HomePath {
        HomePath::resolve(&HomePath::root(), p).unwrap()
    }

    #[test]
    fn local_staging_resumes_its_durable_prefix_and_publishes_only_a_verified_file() {
        let (_dir, s) = local();
        let body = b"hello, storage".to_vec();
        let md5: Md5Digest = Md5::digest(&body).into();
        let mut st = s.open_staging(&path("/f"), body.len() as u64, false).unwrap();
        st.write_at(0, &body[..5]).unwrap();
        assert_eq!(st.sync().unwrap().iter().collect::<Vec<_>>(), [(0, 5)]);
        assert!(matches!(st.write_at(10, b"too long!"), Err(StorageError::InvalidWrite(_))));
        drop(st);
        assert_eq!(s.partials().unwrap().len(), 1);

        let mut st = s.open_staging(&path("/f"), body.len() as u64, true).unwrap();
        assert_eq!(st.durable().iter().collect::<Vec<_>>(), [(0, 5)]);
        // The rest arrives out of order: the md5 is then read back from the partial.
        st.write_at(9, &body[9..]).unwrap();
        st.write_at(5, &body[5..9]).unwrap();
        assert!(matches!(st.finish(&[0; 16]), Err(StorageError::DigestMismatch { .. })));
        assert!(s.stat(&path("/f")).is_err(), "an unverified file became visible");

        let mut st = s.open_staging(&path("/f"), body.len() as u64, true).unwrap();
        assert_eq!(st.durable().covered(), body.len() as u64);
        st.write_at(0, &body).unwrap();
        assert_eq!(st.finish(&md5).unwrap(), None);
        let reader = s.open_reader(&path("/f")).unwrap();
        assert_eq!(hash_blob(&*reader).unwrap(), (md5, body.len() as u64));
        let mut past = [0u8; 4];
        assert!(matches!(reader.read_exact_at(&mut past, 12), Err(StorageError::SourceChanged(_))));
        assert_eq!(s.discard_staging(&path("/f")).unwrap(), 0);
    }

    #[test]
    fn local_staging_knows_the_md5_of_a_file_received_in_order_only() {
        let (_dir, s) = local();
        let body = b"0123456789".to_vec();
        let mut st = s.open_staging(&path("/f"), 10, false).unwrap();
        st.write_at(0, &body[..4]).unwrap();
        assert_eq!(st.received_md5(), None, "not whole yet");
        st.write_at(4, &body[4..]).unwrap();
        let md5: Md5Digest = Md5::digest(&body).into();
        assert_eq!(st.received_md5(), Some(md5));
        let mut st = s.open_staging(&path("/g"), 10, false).unwrap();
        st.write_at(5, &body[5..]).unwrap();
        st.write_at(0, &body[..5]).unwrap();
        assert_eq!(st.received_md5(), None, "out of order");
        let reader = s.open_reader(&path("/f")).err();
        assert!(reader.is_some(), "nothing is visible before finish");
    }

    #[test]
    fn a_local_reader_notices_its_file_changing_length() {
        let (dir, s) = local();
        std::fs::write(dir.path().join("f"), b"abc").unwrap();
        let reader = s.open_reader(&path("/f")).unwrap();
        reader.check_unchanged().unwrap();
        std::fs::OpenOptions::new().append(true).open(dir.path().join("f")).unwrap().write_all(b"d").unwrap();
        assert!(matches!(reader.check_unchanged(), Err(StorageError::SourceChanged(_))));
    }

    #[test]
    fn storage_errors_keep_their_meaning_for_transfers() {
        use crate::transfer::TransferError;
        assert!(matches!(transfer_error(StorageError::SourceChanged("x".into())), TransferError::SourceChanged(_)));
        assert!(matches!(transfer_error(HomeError::DiskFull.into()), TransferError::DiskFull));
        let outage = StorageError::Unavailable { what: "object storage", detail: "connection refused".into() };
        assert!(matches!(transfer_error(outage), TransferError::Unavailable(w) if w == "object storage"));
    }
}
