//! The local partial file of a download: `.NAME.xfer-part` beside the target, its range map
//! (`.ranges`, UDP-RESUME-1) for resuming a UDP download, opening it for either transport, and
//! the single commit path that puts a verified file in place.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::files::local_err;
use super::ClientError;
use crate::flow::sink::PersistFn;
use crate::proto::control::{ByteRange, Md5Digest};
use crate::transfer::{self, TransferError};
use crate::udp::ranges::{RangeSet, MAX_RESUME_RANGES};

/// Where a download of `local` is written until verified.
pub fn partial_path(local: &Path) -> PathBuf {
    let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    local.with_file_name(format!(".{name}.xfer-part"))
}

/// Opens (or creates, or truncates) the local partial and hashes its prefix when resuming.
pub(super) async fn open_local_partial(partial: &Path, resume: bool) -> Result<(std::fs::File, u64, Md5), ClientError> {
    let path = partial.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if resume {
            trim_to_map_prefix(&path).map_err(local_err(&path))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!resume)
            .open(&path)
            .map_err(local_err(&path))?;
        let offset = file.metadata().map_err(local_err(&path))?.len();
        let hasher = if offset > 0 { transfer::hash_prefix(&file, offset)? } else { Md5::new() };
        file.seek(SeekFrom::Start(offset)).map_err(local_err(&path))?;
        Ok((file, offset, hasher))
    })
    .await
    .map_err(|e| ClientError::Transfer(TransferError::Io(std::io::Error::other(e))))?
}

/// The one commit path of a download, over TCP and UDP alike (CTRL-GET-4, UDP-END-2): checks
/// the whole-file md5 (a mismatch deletes the partial and its map), truncates the partial to
/// `size`, fsyncs it, renames it onto `local`, drops the range map and fsyncs the directory.
/// Nothing appears under `local` unless every check passed.
pub(super) fn commit(
    partial: &Path,
    local: &Path,
    size: u64,
    server_md5: &Md5Digest,
    ours: &Md5Digest,
) -> Result<(), ClientError> {
    let map_path = ranges_path(partial);
    if let Err(e) = transfer::check_digest(server_md5, ours) {
        let _ = std::fs::remove_file(partial);
        let _ = std::fs::remove_file(&map_path);
        return Err(e.into());
    }
    let file = std::fs::OpenOptions::new().write(true).open(partial).map_err(local_err(partial))?;
    file.set_len(size).map_err(local_err(partial))?;
    file.sync_all().map_err(local_err(partial))?;
    std::fs::rename(partial, local).map_err(local_err(local))?;
    let _ = std::fs::remove_file(&map_path);
    sync_parent(local);
    Ok(())
}

/// fsyncs the directory holding `path` so the rename survives a crash (best effort).
fn sync_parent(path: &Path) {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Where the range map of a partial download is kept (UDP-RESUME-1).
pub fn ranges_path(partial: &Path) -> PathBuf {
    let mut name = partial.as_os_str().to_os_string();
    name.push(".ranges");
    PathBuf::from(name)
}

/// Reads a range map file (see [`parse_range_map`]).
pub fn read_map(path: &Path) -> Option<(u64, Vec<ByteRange>)> {
    parse_range_map(&std::fs::read_to_string(path).ok()?)
}

/// Parses a range map: `xfer-ranges 1 SIZE`, then `START END` lines; `None` if any line is
/// malformed. Public for the decoder fuzz targets.
pub fn parse_range_map(text: &str) -> Option<(u64, Vec<ByteRange>)> {
    let mut lines = text.lines();
    let size = lines.next()?.strip_prefix("xfer-ranges 1 ")?.parse().ok()?;
    let mut ranges = Vec::new();
    for l in lines {
        let (s, e) = l.split_once(' ')?;
        ranges.push((s.parse().ok()?, e.parse().ok()?));
    }
    Some((size, ranges))
}

/// The text of a range map, as [`parse_range_map`] reads it.
pub fn format_range_map(size: u64, ranges: impl Iterator<Item = ByteRange>) -> String {
    let mut text = format!("xfer-ranges 1 {size}\n");
    for (s, e) in ranges {
        text.push_str(&format!("{s} {e}\n"));
    }
    text
}

/// Persists a download's range map atomically (write, fsync, rename).
pub(super) fn map_writer(path: PathBuf, size: u64) -> PersistFn {
    Box::new(move |held: &RangeSet| {
        use std::io::Write;
        // UDP-RESUME-7: a bounded subset of what is held, which is always safe.
        let text = format_range_map(size, held.lowest(MAX_RESUME_RANGES).iter());
        let tmp = path.with_extension("ranges.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
}

/// Opens the partial of a UDP download and what it holds: the saved map, or the whole partial
/// when it came from a TCP download.
pub(super) async fn open_partial_with_map(
    partial: &Path,
    map_path: &Path,
    resume: bool,
) -> Result<(std::fs::File, RangeSet), ClientError> {
    let (partial, map_path) = (partial.to_path_buf(), map_path.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!resume)
            .open(&partial)
            .map_err(local_err(&partial))?;
        if !resume {
            let _ = std::fs::remove_file(&map_path);
            return Ok((file, RangeSet::new()));
        }
        let len = file.metadata().map_err(local_err(&partial))?.len();
        let held = match read_map(&map_path) {
            // A map claiming bytes past the partial's end is stale: nothing counts (UDP-RESUME-4).
            Some((_, ranges)) if ranges.iter().all(|r| r.1 <= len) => RangeSet::from_ranges(ranges),
            Some(_) => RangeSet::new(),
            None => RangeSet::from_ranges([(0, len)]),
        };
        Ok((file, held))
    })
    .await
    .map_err(|e| ClientError::Transfer(TransferError::Io(std::io::Error::other(e))))?
}

/// Before a TCP download resumes a partial: keep only the map's contiguous prefix and drop the
/// map, so the partial's length is again what is held (UDP-RESUME-3).
pub fn trim_to_map_prefix(partial: &Path) -> std::io::Result<()> {
    let map_path = ranges_path(partial);
    let Some((_, ranges)) = read_map(&map_path) else { return Ok(()) };
    let prefix = RangeSet::from_ranges(ranges).contiguous_from(0);
    let f = std::fs::OpenOptions::new().write(true).open(partial)?;
    if f.metadata()?.len() > prefix {
        f.set_len(prefix)?;
    }
    f.sync_all()?;
    std::fs::remove_file(map_path)
}
