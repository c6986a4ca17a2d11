//! Local sources of uploads, and the size rule that sends small transfers over the control
//! connection (UDP-FALLBACK-4, CTRL-PUT-7). Shared by the TCP and UDP paths.

use std::path::Path;

use super::{ClientError, TransferOptions, TransportChoice};

/// Files up to this size go over the control connection under `auto` (UDP-FALLBACK-4), and
/// their uploads send the data without waiting for `PutReady` (CTRL-PUT-7). Setting up a UDP
/// flow costs about three round trips more than the TCP path; in that time a fresh TCP
/// connection in slow start (10 segments, doubling) moves about 100 KB.
pub const SMALL_TRANSFER_MAX: u64 = 128 * 1024;

/// Whether `auto` sends a file of `size` bytes over TCP rather than UDP (UDP-FALLBACK-4).
pub(super) fn small_goes_over_tcp(opts: &TransferOptions, size: u64) -> bool {
    opts.transport == TransportChoice::Auto && size <= SMALL_TRANSFER_MAX
}

/// Whether `local` is a file that `auto` sends over TCP (UDP-FALLBACK-4). A file that cannot
/// be read is left to the transfer to report.
pub(super) fn small_upload(local: &Path, opts: &TransferOptions) -> bool {
    std::fs::metadata(local).is_ok_and(|m| m.is_file() && small_goes_over_tcp(opts, m.len()))
}

pub(super) fn local_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Local { path: path.to_path_buf(), source }
}

/// Opens a regular file to upload; returns it with its size.
pub(super) fn open_source(local: &Path) -> Result<(std::fs::File, u64), ClientError> {
    let file = std::fs::File::open(local).map_err(local_err(local))?;
    let meta = file.metadata().map_err(local_err(local))?;
    if !meta.is_file() {
        return Err(ClientError::Local {
            path: local.to_path_buf(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    Ok((file, meta.len()))
}
