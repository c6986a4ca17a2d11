//! The binary's one error type: every failure becomes an exit code and a one-line message.
//! Library and server messages never name command-line flags; hints about flags are added here,
//! from the error's class.

use std::path::Path;

use xfer::client::local::LocalTargetError;
use xfer::client::ClientError;
use xfer::conn::ConnError;
use xfer::proto::ErrorCode;
use xfer::transfer::TransferError;

use crate::exit_codes::ExitCode;

/// A failure as the user sees it.
#[derive(Debug)]
pub struct CliError {
    pub code: ExitCode,
    pub message: String,
    /// The server's code, when the server refused.
    pub server_code: Option<ErrorCode>,
    /// stdout went away (`xfer ls | head`): stop quietly.
    pub broken_pipe: bool,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl CliError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> CliError {
        CliError { code, message: message.into(), server_code: None, broken_pipe: false }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(ExitCode::Usage, message)
    }

    pub fn general(message: impl Into<String>) -> CliError {
        CliError::new(ExitCode::General, message)
    }

    pub fn local(path: &Path, e: impl std::fmt::Display) -> CliError {
        CliError::new(ExitCode::Local, format!("{}: {e}", path.display()))
    }

    /// A write to stdout failed; a closed pipe is not reported.
    pub fn stdout(e: std::io::Error) -> CliError {
        let mut err = CliError::new(ExitCode::Local, format!("standard output: {e}"));
        err.broken_pipe = e.kind() == std::io::ErrorKind::BrokenPipe;
        err
    }

    /// The connection died or the server ended the session: reconnecting may help.
    pub fn is_connection_loss(&self) -> bool {
        self.code == ExitCode::Connection
            || matches!(self.server_code, Some(ErrorCode::IdleTimeout | ErrorCode::ShuttingDown))
    }

    /// Appends a sentence after a `; `.
    pub fn with_note(mut self, note: impl AsRef<str>) -> CliError {
        self.message.push_str("; ");
        self.message.push_str(note.as_ref());
        self
    }

    /// `prefix: message`.
    pub fn context(mut self, prefix: impl std::fmt::Display) -> CliError {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        tracing::debug!("client error: {e:?}");
        match e {
            ClientError::Connect { .. } => CliError::new(ExitCode::Connection, e.to_string()),
            ClientError::Tls { addr, .. } => {
                CliError::new(ExitCode::Connection, format!("TLS handshake with {addr} failed"))
            }
            ClientError::HostKeyChanged { .. } | ClientError::HostRejected(_) => {
                CliError::new(ExitCode::HostKey, e.to_string())
            }
            ClientError::UnknownHost { host, fingerprint } => CliError::new(
                ExitCode::HostKey,
                format!("unknown server {host} with certificate {fingerprint}; pass --accept-new-host to trust it"),
            ),
            ClientError::UnsupportedVersion(_) | ClientError::Protocol(_) => {
                CliError::new(ExitCode::Protocol, e.to_string())
            }
            ClientError::Server { code, message } => from_server(code, &message),
            ClientError::Local { path, source } => CliError::local(&path, source),
            ClientError::KnownHosts { .. } => CliError::new(ExitCode::Local, e.to_string()),
            ClientError::Transfer(t) => from_transfer(t),
            ClientError::Conn(c) => from_conn(&c),
            ClientError::Broken => CliError::new(ExitCode::Connection, "the connection is no longer usable"),
            ClientError::Udp(reason) => CliError::new(ExitCode::Connection, format!("UDP transfer failed: {reason}"))
                .with_note("try --transport tcp"),
        }
    }
}

impl From<LocalTargetError> for CliError {
    fn from(e: LocalTargetError) -> CliError {
        let code = match e {
            LocalTargetError::Exists(_) => ExitCode::Exists,
            _ => ExitCode::Local,
        };
        CliError::new(code, e.to_string())
    }
}

fn from_conn(e: &ConnError) -> CliError {
    match e {
        ConnError::Decode(d) => CliError::new(ExitCode::Protocol, format!("bad data from the server: {d}")),
        _ => CliError::new(ExitCode::Connection, "the connection to the server was lost"),
    }
}

fn from_transfer(e: TransferError) -> CliError {
    match e {
        TransferError::Io(_) | TransferError::DiskFull => CliError::new(ExitCode::Local, e.to_string()),
        TransferError::SourceChanged(_) => {
            CliError::new(ExitCode::Integrity, e.to_string()).with_note("run with --no-resume to start over")
        }
        other => CliError::new(ExitCode::Integrity, other.to_string()),
    }
}

/// Maps a server refusal to its class, dropping any hint the server wrote and adding ours.
fn from_server(code: ErrorCode, message: &str) -> CliError {
    use ErrorCode::*;
    let exit = match code {
        NotAuthenticated | AuthFailed | Throttled => ExitCode::Auth,
        NotFound | NotADirectory | IsADirectory | DirectoryNotEmpty | InvalidPath => ExitCode::RemotePath,
        AlreadyExists => ExitCode::Exists,
        PathEscapes | PermissionDenied => ExitCode::Denied,
        QuotaExceeded | FileQuotaExceeded | TooLarge | DiskFull => ExitCode::Quota,
        TooManyEntries => ExitCode::TooMany,
        ChunkCorrupt | DigestMismatch | SourceChanged => ExitCode::Integrity,
        Busy | IdleTimeout | ShuttingDown => ExitCode::Busy,
        BadRequest | UnsupportedVersion | UnsupportedTransport => ExitCode::Protocol,
        Internal => ExitCode::General,
    };
    let mut err = CliError::new(exit, without_flag_hints(message));
    err.server_code = Some(code);
    match code {
        SourceChanged => err.with_note("run with --no-resume to start over"),
        UnsupportedTransport => err.with_note("try --transport tcp"),
        IdleTimeout | ShuttingDown => err.with_note("run the same command again to resume"),
        _ => err,
    }
}

/// Drops `; ...` clauses that name a command-line flag: those belong to the CLI, not the server.
pub fn without_flag_hints(message: &str) -> String {
    message.split("; ").filter(|clause| !clause.contains(" --")).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_server_codes_to_classes_and_replaces_flag_hints() {
        let e = CliError::from(ClientError::Server {
            code: ErrorCode::IdleTimeout,
            message: "upload idle too long; resume it with --resume".into(),
        });
        assert_eq!(e.code, ExitCode::Busy);
        assert_eq!(e.message, "upload idle too long; run the same command again to resume");
        let e = CliError::from(ClientError::Server { code: ErrorCode::QuotaExceeded, message: "over quota".into() });
        assert_eq!((e.code, e.message.as_str()), (ExitCode::Quota, "over quota"));
        let e = CliError::from(ClientError::Server { code: ErrorCode::PathEscapes, message: "x".into() });
        assert_eq!(e.code, ExitCode::Denied);
    }

    #[test]
    fn a_lost_connection_is_one_clear_line() {
        let e = CliError::from(ClientError::Conn(ConnError::Io(std::io::Error::other(
            "peer closed connection without sending TLS close_notify",
        ))));
        assert_eq!(e.code, ExitCode::Connection);
        assert!(!e.message.contains("close_notify"), "{}", e.message);
        assert!(e.is_connection_loss());
    }
}
