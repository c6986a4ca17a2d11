//! Per-user home jail.
//!
//! Every path a client names is first normalized by [`HomePath::resolve`] (pure string rules:
//! no escaping `..`, no backslash, no NUL, bounded lengths), then opened through a cap-std
//! [`cap_std::fs::Dir`] handle on the home, which refuses at the OS level any resolution that
//! would leave the home (symlinks pointing outside included). Files with more than one hard
//! link are refused for reading and writing, since their other name may live outside.

mod path;

pub use path::{HomePath, PathError};

use std::path::Path;

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

/// A user's home directory, opened as a capability.
pub struct Home {
    _private: (),
}

impl Home {
    /// Opens the home at `path`, creating it (and missing parents) if needed.
    pub fn open(path: &Path) -> Result<Home, HomeError> {
        let _ = path;
        todo!()
    }

    pub fn stat(&self, p: &HomePath) -> Result<Entry, HomeError> {
        let _ = p;
        todo!()
    }

    /// Entries of a directory sorted by name, without "." and "..".
    pub fn list(&self, p: &HomePath) -> Result<Vec<Entry>, HomeError> {
        let _ = p;
        todo!()
    }

    /// Ok if `p` is an existing directory (used by `cd`).
    pub fn check_dir(&self, p: &HomePath) -> Result<(), HomeError> {
        let _ = p;
        todo!()
    }

    pub fn mkdir(&self, p: &HomePath) -> Result<(), HomeError> {
        let _ = p;
        todo!()
    }

    /// Removes a file (or symlink); returns the bytes freed (0 for a symlink).
    pub fn remove_file(&self, p: &HomePath) -> Result<u64, HomeError> {
        let _ = p;
        todo!()
    }

    /// Removes an empty directory.
    pub fn remove_dir(&self, p: &HomePath) -> Result<(), HomeError> {
        let _ = p;
        todo!()
    }

    /// Renames within the home. Returns the size of a regular file that was replaced.
    pub fn rename(&self, from: &HomePath, to: &HomePath) -> Result<Option<u64>, HomeError> {
        let _ = (from, to);
        todo!()
    }

    /// Opens a regular, singly-linked file for reading; returns it with its size.
    pub fn open_read(&self, p: &HomePath) -> Result<(std::fs::File, u64), HomeError> {
        let _ = p;
        todo!()
    }

    /// Opens the partial file of upload target `p` for writing, creating it if missing. With
    /// `resume` false an existing partial is truncated. Returns the file and its current length.
    /// Refuses symlinks and hard-linked partials. The parent directory must exist.
    pub fn open_partial(&self, p: &HomePath, resume: bool) -> Result<(std::fs::File, u64), HomeError> {
        let _ = (p, resume);
        todo!()
    }

    /// Length of the partial file of `p`, if one exists.
    pub fn partial_len(&self, p: &HomePath) -> Result<Option<u64>, HomeError> {
        let _ = p;
        todo!()
    }

    /// Renames the (already fsynced) partial of `p` onto `p` and fsyncs the directory.
    /// Returns the size of a regular file that was replaced.
    pub fn finish_partial(&self, p: &HomePath) -> Result<Option<u64>, HomeError> {
        let _ = p;
        todo!()
    }

    /// Deletes the partial of `p` if present; returns the bytes freed.
    pub fn discard_partial(&self, p: &HomePath) -> Result<u64, HomeError> {
        let _ = p;
        todo!()
    }

    /// Bytes and regular-file count under the home (symlinks not followed, partials counted).
    pub fn usage(&self) -> Result<(u64, u64), HomeError> {
        todo!()
    }
}
