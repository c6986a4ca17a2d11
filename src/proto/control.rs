//! Control messages (CTRL-MSG-*). Both enums are append-only: bincode writes the variant index,
//! so reordering or removing a variant changes the bytes on the wire. The vectors in
//! `proto-spec/vectors/` catch such a change.

use serde::{Deserialize, Serialize};

/// An MD5 digest.
pub type Md5Digest = [u8; 16];

/// Which transport carries a transfer's data chunks (CTRL-XFER-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    /// Chunks travel as data frames on the control connection itself.
    Tcp,
    /// Chunks travel in sealed datagrams of a UDP flow bound to this session (UDP-CTRL-1).
    Udp,
}

/// A half-open byte range `[start, end)` of a file.
pub type ByteRange = (u64, u64);

/// Client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Log in (CTRL-AUTH-1). Must be the first request.
    Auth {
        user: String,
        password: String,
    },
    Pwd,
    Cd {
        path: String,
    },
    List {
        path: String,
    },
    Stat {
        path: String,
    },
    Mkdir {
        path: String,
    },
    Remove {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Df,
    Sum {
        path: String,
    },
    /// Start an upload of `size` bytes to `path` (CTRL-PUT-1).
    Put {
        path: String,
        size: u64,
        resume: bool,
        transport: Transport,
    },
    /// All data frames of the upload are sent; `md5` is the digest of the whole file.
    PutEnd {
        md5: Md5Digest,
    },
    /// Start a download at `offset`; `prefix_md5` is the digest of the bytes before it
    /// (required when `offset > 0`, CTRL-RESUME-3).
    Get {
        path: String,
        offset: u64,
        prefix_md5: Option<Md5Digest>,
        transport: Transport,
    },
    /// Give up the upload in progress; the server keeps the verified prefix for resume.
    Abort,
    /// Polite goodbye; the server closes the connection.
    Bye,
    /// Start a download over a UDP flow (UDP-CTRL-3). `held` lists the byte ranges the
    /// client already holds from an interrupted download, ascending and disjoint; `held_md5` is
    /// the md5 of those bytes concatenated in order (required when `held` is not empty).
    /// `rate_limit` caps the server's sending rate in bytes per second.
    GetUdp {
        path: String,
        held: Vec<ByteRange>,
        held_md5: Option<Md5Digest>,
        rate_limit: Option<u64>,
    },
    /// Sets a regular file's modification time and, with `mode`, its permission bits
    /// (CTRL-MSG-34, CTRL-ATTR-1). With `upload_md5`, only if this session's latest upload
    /// committed `path` with that digest (CTRL-ATTR-2), so it can be sent behind `PutEnd`.
    SetAttrs {
        path: String,
        mtime: i64,
        mode: Option<u32>,
        upload_md5: Option<Md5Digest>,
    },
    /// Every entry beneath a directory in one reply (CTRL-MSG-35, CTRL-TREE-1).
    Walk {
        path: String,
    },
    /// The entries whose paths match a glob pattern, expanded in the home (CTRL-MSG-36,
    /// CTRL-GLOB-1).
    Glob {
        pattern: String,
    },
    /// Copies a regular file inside the home, charged like an upload (CTRL-MSG-39,
    /// CTRL-COPY-1).
    Copy {
        from: String,
        to: String,
    },
    /// Start a download whose transport the server picks by size (CTRL-MSG-40, UDP-CTRL-7):
    /// with nothing `held` and a file of at most `tcp_max` bytes (capped by the server), it is
    /// served as `Get { offset: 0, transport: Tcp }`; otherwise as `GetUdp` with the same
    /// `held`, `held_md5` and `rate_limit`.
    GetAuto {
        path: String,
        held: Vec<ByteRange>,
        held_md5: Option<Md5Digest>,
        rate_limit: Option<u64>,
        tcp_max: u64,
    },
    /// Start an upload over a UDP flow whose id the client chose (CTRL-MSG-41, UDP-CTRL-9),
    /// so that its `Hello` can travel beside this request; the flow may then end with an early
    /// `PutEnd` (UDP-END-8). Otherwise as `Put { transport: Udp }`.
    PutFlow {
        path: String,
        size: u64,
        resume: bool,
        flow: u64,
    },
    /// Start a download over a UDP flow whose id the client chose (CTRL-MSG-42, UDP-CTRL-11),
    /// so that its `Hello` can travel beside this request. With `tcp_max`, as `GetAuto` with
    /// that `tcp_max`; without, as `GetUdp`. A download over UDP runs on that `flow`.
    GetFlow {
        path: String,
        held: Vec<ByteRange>,
        held_md5: Option<Md5Digest>,
        rate_limit: Option<u64>,
        tcp_max: Option<u64>,
        flow: u64,
    },
}

/// Server to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    /// Login accepted; the session's working directory is the home root.
    Authed {
        cwd: String,
    },
    Pwd {
        path: String,
    },
    Listing {
        entries: Vec<Entry>,
    },
    Stat {
        entry: Entry,
    },
    Df {
        used_bytes: u64,
        quota_bytes: u64,
        used_files: u64,
        max_files: Option<u64>,
        reserved_bytes: u64,
    },
    Sum {
        md5: Md5Digest,
        size: u64,
    },
    /// Upload accepted; send data frames from `offset`. When resuming, `prefix_md5` is the
    /// digest of the server's first `offset` bytes (CTRL-RESUME-1).
    PutReady {
        offset: u64,
        prefix_md5: Option<Md5Digest>,
    },
    /// Upload verified, synced and renamed into place.
    PutDone {
        size: u64,
        md5: Md5Digest,
    },
    /// Download accepted; data frames from `offset` to `size` follow, then `GetEnd`.
    GetReady {
        size: u64,
        offset: u64,
    },
    GetEnd {
        md5: Md5Digest,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Upload over UDP accepted (UDP-CTRL-2): send the bytes outside `held` on flow `flow`.
    /// `held` are the ranges the server already holds from an interrupted upload; `held_md5`
    /// is the md5 of those bytes concatenated in order.
    UdpPutReady {
        flow: u64,
        held: Vec<ByteRange>,
        held_md5: Option<Md5Digest>,
    },
    /// Download over UDP accepted (UDP-CTRL-3): datagrams of flow `flow` carry the file of
    /// `size` bytes, except the ranges the client said it holds; `GetEnd` follows.
    UdpGetReady {
        flow: u64,
        size: u64,
    },
    /// Reply to `Walk` and `Glob` (CTRL-MSG-37).
    Tree {
        entries: Vec<TreeEntry>,
    },
}

/// Error codes (CTRL-ERR-1). Append-only; the index is the wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    BadRequest,
    NotAuthenticated,
    AuthFailed,
    Throttled,
    NotFound,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    DirectoryNotEmpty,
    InvalidPath,
    PathEscapes,
    PermissionDenied,
    QuotaExceeded,
    FileQuotaExceeded,
    ChunkCorrupt,
    DigestMismatch,
    SourceChanged,
    TooLarge,
    Busy,
    DiskFull,
    Internal,
    UnsupportedVersion,
    IdleTimeout,
    ShuttingDown,
    UnsupportedTransport,
    /// A `Walk` or `Glob` reply would exceed its bound (CTRL-TREE-2, CTRL-GLOB-2).
    TooManyEntries,
}

/// Kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// A directory entry as sent in `Listing` and `Stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
}

/// One entry of a `Tree` reply (CTRL-MSG-38): `path` is relative to the walked directory for
/// `Walk` and a home path (starting with `/`) for `Glob`; `mode` holds the permission bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    pub mode: u32,
}
