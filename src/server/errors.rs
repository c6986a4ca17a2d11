//! Mapping of library errors onto wire error codes (CTRL-ERR-1).

use crate::home::{HomeError, PathError};
use crate::proto::{ErrorCode, Response};
use crate::storage::StorageError;
use crate::store::StoreError;
use crate::transfer::TransferError;

/// An error to report to the client as one `Response::Error`.
#[derive(Debug)]
pub(crate) struct Reply {
    pub code: ErrorCode,
    pub message: String,
}

impl Reply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply { code, message: message.into() }
    }

    pub fn into_response(self) -> Response {
        Response::Error { code: self.code, message: self.message }
    }

    pub fn internal(what: impl std::fmt::Display) -> Reply {
        tracing::error!("internal error: {what}");
        Reply::new(ErrorCode::Internal, "internal server error")
    }
}

impl From<HomeError> for Reply {
    fn from(e: HomeError) -> Reply {
        let code = match &e {
            HomeError::Path(PathError::Escapes(_)) | HomeError::Escapes(_) => ErrorCode::PathEscapes,
            HomeError::Path(_) => ErrorCode::InvalidPath,
            HomeError::NotFound(_) => ErrorCode::NotFound,
            HomeError::NotADirectory(_) => ErrorCode::NotADirectory,
            HomeError::IsADirectory(_) => ErrorCode::IsADirectory,
            HomeError::NotARegularFile(_) | HomeError::HardLinked(_) | HomeError::PermissionDenied(_) => {
                ErrorCode::PermissionDenied
            }
            HomeError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            HomeError::DirectoryNotEmpty(_) => ErrorCode::DirectoryNotEmpty,
            HomeError::DiskFull => ErrorCode::DiskFull,
            HomeError::Io { .. } => return Reply::internal(e),
        };
        Reply::new(code, e.to_string())
    }
}

impl From<PathError> for Reply {
    fn from(e: PathError) -> Reply {
        Reply::from(HomeError::Path(e))
    }
}

impl From<StorageError> for Reply {
    fn from(e: StorageError) -> Reply {
        match e {
            StorageError::Home(e) => Reply::from(e),
            // STORE-OBJ-8: an outage is named, its details stay in the log.
            StorageError::Unavailable { what, ref detail } => {
                tracing::warn!("{what} unavailable: {detail}");
                Reply::new(ErrorCode::Busy, format!("{what} unavailable; try again later"))
            }
            StorageError::Fenced(_) => Reply::new(ErrorCode::Busy, e.to_string()),
            StorageError::SourceChanged(_) => Reply::new(ErrorCode::SourceChanged, e.to_string()),
            StorageError::DigestMismatch { .. } => Reply::new(ErrorCode::DigestMismatch, e.to_string()),
            StorageError::InvalidWrite(_) => Reply::new(ErrorCode::BadRequest, e.to_string()),
        }
    }
}

impl From<StoreError> for Reply {
    fn from(e: StoreError) -> Reply {
        match e {
            StoreError::QuotaBytes { .. } => Reply::new(ErrorCode::QuotaExceeded, e.to_string()),
            StoreError::QuotaFiles { .. } => Reply::new(ErrorCode::FileQuotaExceeded, e.to_string()),
            // QUOTA-9: the store's own disk is full; the client learns that, not `Internal`.
            ref full if full.is_disk_full() => {
                tracing::warn!("user store: {e}");
                Reply::new(ErrorCode::DiskFull, "no space left on the server's disk")
            }
            // STORE-PG-6: the shared store is down; the client may retry later.
            StoreError::Unavailable(_) => {
                tracing::warn!("{e}");
                Reply::new(ErrorCode::Busy, "the user store is unavailable; try again later")
            }
            other => Reply::internal(other),
        }
    }
}

impl From<TransferError> for Reply {
    fn from(e: TransferError) -> Reply {
        Reply::from(&e)
    }
}

impl From<&TransferError> for Reply {
    fn from(e: &TransferError) -> Reply {
        let code = match e {
            TransferError::Io(_) => return Reply::internal(e),
            // STORE-OBJ-8: an outage is named; the upload resumes once it is back.
            TransferError::Unavailable(what) => {
                return Reply::new(ErrorCode::Busy, format!("{what} unavailable; try again later"))
            }
            TransferError::DiskFull => ErrorCode::DiskFull,
            TransferError::ChunkCorrupt { .. } => ErrorCode::ChunkCorrupt,
            TransferError::OutOfOrder { .. } | TransferError::Incomplete { .. } => ErrorCode::BadRequest,
            TransferError::TooLarge { .. } => ErrorCode::TooLarge,
            TransferError::SourceChanged(_) => ErrorCode::SourceChanged,
            TransferError::DigestMismatch { .. } => ErrorCode::DigestMismatch,
        };
        Reply::new(code, e.to_string())
    }
}

/// Runs blocking work (file system, store, hashing) off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Reply>
where
    F: FnOnce() -> Result<T, Reply> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(Reply::internal(e)))
}
