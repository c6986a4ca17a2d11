//! Exit codes of the `xfer` binary, one per class of failure, as in the README table.

/// How a run of `xfer` ended. The numbers are part of the scripting interface: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    /// Anything not classed below, including a server's internal error.
    General = 1,
    /// Bad arguments or an unknown shell command (clap also exits 2).
    Usage = 2,
    /// A local file could not be read or written, or a local destination was refused.
    Local = 3,
    /// A remote path does not exist or has the wrong type (not a directory, not empty...).
    RemotePath = 4,
    /// The server refused access: a path outside the home, permission denied.
    Denied = 5,
    /// Byte or file quota exceeded, or the server's disk is full.
    Quota = 6,
    /// Login failed or throttled.
    Auth = 7,
    /// The server's certificate is unknown, rejected or changed.
    HostKey = 8,
    /// No connection, TLS failure, or the connection was lost.
    Connection = 9,
    /// Verification failed: md5 or crc32 mismatch, or the source changed under a resume.
    Integrity = 10,
    /// The server sent something this client does not understand.
    Protocol = 11,
    /// The destination exists (remote, or local with `--no-clobber`).
    Exists = 12,
    /// The server is busy, shutting down, or timed the session out: try again.
    Busy = 13,
    /// A listing or glob matched more entries than one reply may carry.
    TooMany = 14,
    /// Some files of a run with `--keep-going` failed; the others were transferred.
    Partial = 15,
    /// Interrupted by Ctrl-C (SIGINT); partial transfers are kept.
    Interrupted = 130,
}

impl ExitCode {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.code())
    }
}
