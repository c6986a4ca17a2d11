//! Modification time and mode kept across a transfer (CTRL-ATTR-1): the source's mtime always,
//! its permission bits with `-p`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use xfer::client::FileAttrs;

use crate::error::CliError;

/// The permission bits kept with `-p`.
const MODE_BITS: u32 = 0o777;

/// What an upload of `local` gives the remote file: its mtime, and its mode with `preserve`.
pub fn of_local(local: &Path, preserve: bool) -> Result<FileAttrs, CliError> {
    let meta = std::fs::metadata(local).map_err(|e| CliError::local(local, e))?;
    Ok(FileAttrs { mtime: meta.mtime(), mode: preserve.then_some(meta.mode() & MODE_BITS) })
}

/// Sets the local file's mtime to `mtime` and, when given, its permission bits.
pub fn keep_local(path: &Path, mtime: i64, mode: Option<u32>) -> Result<(), CliError> {
    let file = std::fs::File::open(path).map_err(|e| CliError::local(path, e))?;
    let at = if mtime >= 0 {
        UNIX_EPOCH + Duration::from_secs(mtime as u64)
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(mtime.unsigned_abs())).unwrap_or(UNIX_EPOCH)
    };
    file.set_modified(at).map_err(|e| CliError::local(path, e))?;
    if let Some(mode) = mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode & MODE_BITS))
            .map_err(|e| CliError::local(path, e))?;
    }
    Ok(())
}
