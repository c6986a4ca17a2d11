//! Per-user home jail.
//!
//! Every path a client names is first normalized by [`HomePath::resolve`] (pure string rules:
//! no escaping `..`, no backslash, no NUL, bounded lengths), then opened through a cap-std
//! [`cap_std::fs::Dir`] handle on the home, which refuses at the OS level any resolution that
//! would leave the home (symlinks pointing outside included). Files with more than one hard
//! link are refused for reading and writing, since their other name may live outside.

mod path;
#[cfg(test)]
mod tests;
mod tree;

pub use path::{HomePath, PathError};
pub use tree::{TreeItem, KEPT_MODE, NEW_DIR_MODE, NEW_FILE_MODE, SETTABLE_MODE};

use cap_std::fs::{Dir, FileType, Metadata, MetadataExt, OpenOptions, OpenOptionsExt};
use std::ffi::OsString;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::rc::Rc;

/// Errors from home operations.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("no such file or directory: {0}")]
    NotFound(String),
    #[error("not a directory: {0}")]
    NotADirectory(String),
    #[error("is a directory: {0}")]
    IsADirectory(String),
    #[error("not a regular file: {0}")]
    NotARegularFile(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("directory not empty: {0}")]
    DirectoryNotEmpty(String),
    #[error("path leads outside the home: {0}")]
    Escapes(String),
    #[error("refusing file with multiple hard links: {0}")]
    HardLinked(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("no space left on the server's disk")]
    DiskFull,
    #[error("i/o error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One directory entry or stat result. Symlinks are reported, never followed, in listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
}

/// What a home holds against its quota (QUOTA-5, OPS-USAGE-1): `bytes` of regular files,
/// `entries` = regular files plus directories (the home itself not counted), and of those the
/// partial upload files separately. Symlinks and other kinds hold nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub entries: u64,
    pub partial_bytes: u64,
    pub partials: u64,
}

/// One partial upload file found in a home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialFile {
    /// The upload target the partial belongs to.
    pub target: HomePath,
    pub len: u64,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
}

/// A user's home directory, opened as a capability.
pub struct Home {
    /// Every access goes through this handle with a relative path, so the kernel (openat2 with
    /// `RESOLVE_BENEATH`) or cap-std's manual resolver refuses anything that would leave it.
    dir: Dir,
}

impl Home {
    /// Opens the home at `path`, creating it (and missing parents) if needed.
    pub fn open(path: &Path) -> Result<Home, HomeError> {
        let io_err = |source| HomeError::Io { path: path.display().to_string(), source };
        std::fs::create_dir_all(path).map_err(io_err)?;
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority()).map_err(io_err)?;
        Ok(Home { dir })
    }

    /// Metadata of `p` itself: a symlink is reported as [`EntryKind::Symlink`], not followed.
    /// The root is named "/"; sizes are reported for regular files only (0 otherwise).
    pub fn stat(&self, p: &HomePath) -> Result<Entry, HomeError> {
        let meta = self.lstat(p)?;
        Ok(entry(p.file_name().unwrap_or("/").to_string(), &meta))
    }

    /// Entries of a directory sorted by name, without "." and "..".
    pub fn list(&self, p: &HomePath) -> Result<Vec<Entry>, HomeError> {
        let err = |e| map_io(e, p);
        let mut out = Vec::new();
        for item in self.dir.read_dir(p.to_rel_path()).map_err(err)? {
            let item = item.map_err(err)?;
            // DirEntry::metadata is an lstat: symlinks are described, never followed.
            let meta = match item.metadata() {
                Ok(meta) => meta,
                // Removed since readdir returned it: it is simply no longer listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(e)),
            };
            let name = item.file_name().to_string_lossy().into_owned();
            out.push(entry(name, &meta));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Ok if `p` is an existing directory (used by `cd`).
    pub fn check_dir(&self, p: &HomePath) -> Result<(), HomeError> {
        // Following a symlink is fine here: cap-std keeps the resolution inside the home.
        let meta = self.dir.metadata(p.to_rel_path()).map_err(|e| map_io(e, p))?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(HomeError::NotADirectory(p.to_string()))
        }
    }

    pub fn mkdir(&self, p: &HomePath) -> Result<(), HomeError> {
        if p.is_root() {
            return Err(HomeError::AlreadyExists(p.to_string()));
        }
        self.dir.create_dir(p.to_rel_path()).map_err(|e| map_io(e, p))
    }

    /// Removes a file (or symlink); returns the bytes freed (0 for a symlink).
    pub fn remove_file(&self, p: &HomePath) -> Result<u64, HomeError> {
        refuse_root(p, "cannot remove the home directory")?;
        let meta = self.lstat(p)?;
        if meta.is_dir() {
            return Err(HomeError::IsADirectory(p.to_string()));
        }
        self.dir.remove_file(p.to_rel_path()).map_err(|e| map_io(e, p))?;
        Ok(regular_len(&meta))
    }

    /// Removes an empty directory.
    pub fn remove_dir(&self, p: &HomePath) -> Result<(), HomeError> {
        refuse_root(p, "cannot remove the home directory")?;
        // lstat so that a symlink to a directory is refused rather than looked through.
        if !self.lstat(p)?.is_dir() {
            return Err(HomeError::NotADirectory(p.to_string()));
        }
        self.dir.remove_dir(p.to_rel_path()).map_err(|e| map_io(e, p))
    }

    /// Renames within the home. Returns the size of a regular file that was replaced.
    pub fn rename(&self, from: &HomePath, to: &HomePath) -> Result<Option<u64>, HomeError> {
        refuse_root(from, "cannot rename the home directory")?;
        refuse_root(to, "cannot replace the home directory")?;
        let src = self.lstat(from)?;
        if from != to && to.components().starts_with(from.components()) {
            // The kernel would say EINVAL; say why instead.
            return Err(PathError::Invalid(to.to_string(), "cannot move a directory into itself").into());
        }
        if from != to && src.is_dir() && self.lstat_opt(to)?.is_some_and(|m| m.is_dir()) {
            // The kernel would replace an empty directory; xfer's Rename replaces files only.
            return Err(HomeError::AlreadyExists(to.to_string()));
        }
        let replaced = self.replaced_size(to, &src)?;
        self.dir.rename(from.to_rel_path(), &self.dir, to.to_rel_path()).map_err(|e| map_io(e, to))?;
        Ok(replaced)
    }

    /// Opens a regular, singly-linked file for reading; returns it with its size.
    pub fn open_read(&self, p: &HomePath) -> Result<(std::fs::File, u64), HomeError> {
        let mut opts = OpenOptions::new();
        // O_NONBLOCK: opening a planted FIFO must not hang; it has no effect on regular files.
        opts.read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
        let file = self.dir.open_with(p.to_rel_path(), &opts).map_err(|e| map_io(e, p))?;
        let file = file.into_std();
        // Checked on the open descriptor, so nothing can be swapped in between check and use.
        let meta = file.metadata().map_err(|e| map_io(e, p))?;
        check_single_file(&meta, p)?;
        Ok((file, meta.len()))
    }

    /// Opens the partial file of upload target `p` for writing, creating it if missing. With
    /// `resume` false an existing partial is truncated. Returns the file and its current length.
    /// Refuses symlinks and hard-linked partials. The parent directory must exist.
    ///
    /// The file is opened read-write (so a resume can re-hash what is already there) and is
    /// positioned at the returned length.
    pub fn open_partial(&self, p: &HomePath, resume: bool) -> Result<(std::fs::File, u64), HomeError> {
        let part = partial_of(p)?;
        self.check_upload_target(p)?;
        // Refuses a planted symlink (or other non-file) with a clear error; O_NOFOLLOW below
        // closes the race where one appears after this check.
        self.partial_len(p)?;
        let (mut file, meta) = self.open_partial_file(&part)?;
        let len = if resume { meta.len() } else { 0 };
        if !resume {
            file.set_len(0).map_err(|e| map_io(e, &part))?;
        }
        file.seek(SeekFrom::Start(len)).map_err(|e| map_io(e, &part))?;
        Ok((file, len))
    }

    /// Length of the partial file of `p`, if one exists.
    pub fn partial_len(&self, p: &HomePath) -> Result<Option<u64>, HomeError> {
        let Some(part) = p.partial() else {
            return Ok(None);
        };
        match self.lstat_opt(&part)? {
            None => Ok(None),
            Some(meta) if meta.is_file() => Ok(Some(meta.len())),
            // A symlink, directory or device under the partial's name was not made by us.
            Some(_) => Err(HomeError::NotARegularFile(part.to_string())),
        }
    }

    /// Renames the (already fsynced) partial of `p` onto `p` and fsyncs the directory.
    /// Returns the size of a regular file that was replaced.
    pub fn finish_partial(&self, p: &HomePath) -> Result<Option<u64>, HomeError> {
        let part = partial_of(p)?;
        if self.partial_len(p)?.is_none() {
            return Err(HomeError::NotFound(part.to_string()));
        }
        let replaced = match self.lstat_opt(p)? {
            Some(meta) if meta.is_dir() => return Err(HomeError::IsADirectory(p.to_string())),
            Some(meta) if meta.is_file() => Some(meta.len()),
            // A symlink (or other non-file) is replaced as a name; it held no quota bytes.
            _ => None,
        };
        self.dir.rename(part.to_rel_path(), &self.dir, p.to_rel_path()).map_err(|e| map_io(e, p))?;
        // The rename is only durable once the directory entry itself is on disk.
        self.sync_dir(&p.parent().unwrap_or_default())?;
        Ok(replaced)
    }

    /// Deletes the partial of `p` if present; returns the bytes freed.
    pub fn discard_partial(&self, p: &HomePath) -> Result<u64, HomeError> {
        let Some(part) = p.partial() else {
            return Ok(0);
        };
        let Some(meta) = self.lstat_opt(&part)? else {
            return Ok(0);
        };
        if meta.is_dir() {
            return Err(HomeError::IsADirectory(part.to_string()));
        }
        // Removing a planted symlink only removes the link, never its target.
        match self.dir.remove_file(part.to_rel_path()) {
            Ok(()) => Ok(regular_len(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(map_io(e, &part)),
        }
    }

    /// What the home holds (symlinks not followed, partials and directories counted).
    pub fn usage(&self) -> Result<Usage, HomeError> {
        let mut usage = Usage::default();
        self.walk(|path, meta| {
            if meta.is_dir() {
                usage.entries += 1;
            } else if meta.is_file() {
                usage.bytes += meta.len();
                usage.entries += 1;
                if path.partial_target().is_some() {
                    usage.partial_bytes += meta.len();
                    usage.partials += 1;
                }
            }
        })?;
        Ok(usage)
    }

    /// Every partial upload file in the home.
    pub fn partials(&self) -> Result<Vec<PartialFile>, HomeError> {
        let mut out = Vec::new();
        self.walk(|path, meta| {
            if let Some(target) = path.partial_target().filter(|_| meta.is_file()) {
                out.push(PartialFile { target, len: meta.len(), mtime: meta.mtime() });
            }
        })?;
        Ok(out)
    }

    /// Calls `visit` with every entry below the root and its lstat metadata. Names that are not
    /// UTF-8 are visited under a lossy name (they hold quota all the same).
    fn walk(&self, mut visit: impl FnMut(&HomePath, &Metadata)) -> Result<(), HomeError> {
        let err = |e| map_io(e, &HomePath::root());
        // Explicit stack instead of recursion, so depth is bounded by memory, not the call
        // stack. Children are opened lazily from a shared parent handle, so at most one
        // descriptor per level of the current branch is open, however wide the tree.
        let mut pending: Vec<(Rc<Dir>, OsString, HomePath)> = Vec::new();
        let root = Rc::new(self.dir.try_clone().map_err(err)?);
        scan_dir(&root, &HomePath::root(), &mut visit, &mut pending).map_err(err)?;
        while let Some((parent, name, path)) = pending.pop() {
            let dir = match parent.open_dir(&name) {
                Ok(dir) => Rc::new(dir),
                // Removed or replaced while walking: not part of the usage any more.
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(err(e)),
            };
            drop(parent);
            scan_dir(&dir, &path, &mut visit, &mut pending).map_err(err)?;
        }
        Ok(())
    }

    /// Opens (creating if missing) the partial file `part` read-write, never through a symlink
    /// at its final component, and only if it is a regular file with a single link.
    fn open_partial_file(&self, part: &HomePath) -> Result<(std::fs::File, std::fs::Metadata), HomeError> {
        let mut opts = OpenOptions::new();
        // No O_TRUNC: truncating before the link-count check could clobber a file outside the
        // home that was hard-linked in under the partial's name. O_NONBLOCK keeps a planted
        // FIFO from hanging the open; it has no effect on regular files.
        opts.read(true).write(true).create(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY);
        let file = match self.dir.open_with(part.to_rel_path(), &opts) {
            Ok(file) => file.into_std(),
            // O_NOFOLLOW met a symlink: it was planted, since we never create one.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(HomeError::NotARegularFile(part.to_string()))
            }
            Err(e) => return Err(map_io(e, part)),
        };
        // Checked on the open descriptor, so nothing can be swapped in between check and use.
        let meta = file.metadata().map_err(|e| map_io(e, part))?;
        check_single_file(&meta, part)?;
        Ok((file, meta))
    }

    /// lstat of `p` through the capability.
    fn lstat(&self, p: &HomePath) -> Result<Metadata, HomeError> {
        self.dir.symlink_metadata(p.to_rel_path()).map_err(|e| map_io(e, p))
    }

    /// lstat of `p`, with "does not exist" as None.
    fn lstat_opt(&self, p: &HomePath) -> Result<Option<Metadata>, HomeError> {
        match self.dir.symlink_metadata(p.to_rel_path()) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(map_io(e, p)),
        }
    }

    /// Size of the regular file at `to` that a rename of `src` would replace. Renaming onto
    /// another name of the same inode is a no-op for the kernel and frees nothing.
    fn replaced_size(&self, to: &HomePath, src: &Metadata) -> Result<Option<u64>, HomeError> {
        Ok(self.lstat_opt(to)?.filter(|m| m.is_file() && (m.dev(), m.ino()) != (src.dev(), src.ino())).map(|m| m.len()))
    }

    /// An upload target must not be a directory, and its parent must be an existing directory.
    fn check_upload_target(&self, p: &HomePath) -> Result<(), HomeError> {
        if self.lstat_opt(p)?.is_some_and(|m| m.is_dir()) {
            return Err(HomeError::IsADirectory(p.to_string()));
        }
        self.check_dir(&p.parent().unwrap_or_default())
    }

    /// fsyncs directory `d`. Dir handles are O_PATH descriptors, which cannot be synced, so
    /// the directory is opened read-only for this.
    fn sync_dir(&self, d: &HomePath) -> Result<(), HomeError> {
        let dir = self.dir.open(d.to_rel_path()).map_err(|e| map_io(e, d))?;
        dir.sync_all().map_err(|e| map_io(e, d))
    }
}

/// The partial of an upload target; the root cannot be one.
fn partial_of(p: &HomePath) -> Result<HomePath, HomeError> {
    p.partial().ok_or_else(|| HomeError::IsADirectory(p.to_string()))
}

/// Refuses operations that make no sense on the home root itself.
fn refuse_root(p: &HomePath, reason: &'static str) -> Result<(), HomeError> {
    if p.is_root() {
        return Err(PathError::Invalid(p.to_string(), reason).into());
    }
    Ok(())
}

/// Accepts only a regular file with a single link: another name of a multiply-linked file may
/// live outside the home, and reading or writing through ours would reach it.
fn check_single_file(meta: &std::fs::Metadata, p: &HomePath) -> Result<(), HomeError> {
    if meta.is_dir() {
        return Err(HomeError::IsADirectory(p.to_string()));
    }
    if !meta.is_file() {
        return Err(HomeError::NotARegularFile(p.to_string()));
    }
    if meta.nlink() > 1 {
        return Err(HomeError::HardLinked(p.to_string()));
    }
    Ok(())
}

/// Visits the entries of `dir` (at `path`) and queues its subdirectories.
fn scan_dir(
    dir: &Rc<Dir>,
    path: &HomePath,
    visit: &mut impl FnMut(&HomePath, &Metadata),
    pending: &mut Vec<(Rc<Dir>, OsString, HomePath)>,
) -> io::Result<()> {
    for item in dir.entries()? {
        let item = item?;
        // metadata describes the entry itself: symlinks are never followed.
        let meta = match item.metadata() {
            Ok(meta) => meta,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        let name = item.file_name();
        let child = path.join(&name.to_string_lossy());
        visit(&child, &meta);
        if meta.is_dir() {
            pending.push((Rc::clone(dir), name, child));
        }
    }
    Ok(())
}

/// True for errors meaning an entry disappeared or changed type under a concurrent walk.
fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

fn kind_of(ft: FileType) -> EntryKind {
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

/// Bytes a name holds against the quota: the length of a regular file, 0 for anything else
/// (a symlink's "size" is its target's length, a directory's is filesystem bookkeeping).
fn regular_len(meta: &Metadata) -> u64 {
    if meta.is_file() {
        meta.len()
    } else {
        0
    }
}

fn entry(name: String, meta: &Metadata) -> Entry {
    Entry { name, kind: kind_of(meta.file_type()), size: regular_len(meta), mtime: meta.mtime() }
}

/// The single translation from OS errors to home errors, naming `p` as the user sees it.
fn map_io(e: io::Error, p: &HomePath) -> HomeError {
    let shown = p.to_string();
    match e.raw_os_error() {
        // cap-std reports an escape (absolute symlink, `..` or symlink leading outside) as a
        // synthesized PermissionDenied error without an errno; a real EACCES carries one.
        None if is_escape(&e) => HomeError::Escapes(shown),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => HomeError::DiskFull,
        Some(libc::ENOTDIR) => HomeError::NotADirectory(shown),
        Some(libc::EISDIR) => HomeError::IsADirectory(shown),
        Some(libc::EEXIST) => HomeError::AlreadyExists(shown),
        Some(libc::ENOTEMPTY) => HomeError::DirectoryNotEmpty(shown),
        Some(libc::ENAMETOOLONG) => PathError::TooLong.into(),
        // Opening a socket, or a FIFO for writing without a reader under O_NONBLOCK.
        Some(libc::ENXIO) => HomeError::NotARegularFile(shown),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => HomeError::PermissionDenied(shown),
        _ if e.kind() == io::ErrorKind::NotFound => HomeError::NotFound(shown),
        _ => HomeError::Io { path: shown, source: e },
    }
}

fn is_escape(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied || e.to_string().contains("a path led outside of the filesystem")
}
