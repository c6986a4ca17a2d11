//! Safe local destinations for downloads, checked before any byte is written.
//!
//! The rule: a download never replaces a device, FIFO, socket or directory. A symlink at the
//! destination is followed, as `cp` does: the verified file replaces the link's target, which
//! must itself be a regular file or missing beneath an existing directory; a dangling or looping
//! link is refused. The partial file beside the destination (and its range map) must be a
//! regular file or absent, so a planted link cannot redirect the bytes. The checks run before
//! the transfer starts; a destination swapped while the transfer runs is not detected.

use std::fs::FileType;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::partial_path;

/// Why a local destination was refused.
#[derive(Debug, thiserror::Error)]
pub enum LocalTargetError {
    #[error("{0}: exists (refusing to overwrite)")]
    Exists(PathBuf),
    #[error("{path}: is a {kind}; a download only replaces regular files")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{0}: is a symlink that leads nowhere (or loops)")]
    Dangling(PathBuf),
    #[error("{0}: the partial download is not a regular file; remove it first")]
    BadPartial(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Checks `local` as a download destination; returns the path the file will be committed to
/// (the link's target when `local` is a symlink). With `no_clobber` an existing file is refused.
pub fn download_target(local: &Path, no_clobber: bool) -> Result<PathBuf, LocalTargetError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LocalTargetError::Io { path, source }
    };
    let target = match std::fs::symlink_metadata(local) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return check_partials(local.to_path_buf()),
        Err(e) => return Err(io(local)(e)),
        Ok(m) if m.file_type().is_symlink() => follow_link(local)?,
        Ok(_) => local.to_path_buf(),
    };
    match std::fs::symlink_metadata(&target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&target)(e)),
        Ok(m) if m.is_file() && no_clobber => return Err(LocalTargetError::Exists(local.to_path_buf())),
        Ok(m) if m.is_file() => {}
        Ok(m) => return Err(LocalTargetError::NotRegular { path: local.to_path_buf(), kind: kind(m.file_type()) }),
    }
    check_partials(target)
}

/// The final target of a symlink; its parent directory must exist.
fn follow_link(link: &Path) -> Result<PathBuf, LocalTargetError> {
    match std::fs::canonicalize(link) {
        Ok(p) => Ok(p),
        Err(_) => Err(LocalTargetError::Dangling(link.to_path_buf())),
    }
}

/// The partial and its range map must be regular files or absent.
fn check_partials(target: PathBuf) -> Result<PathBuf, LocalTargetError> {
    let partial = partial_path(&target);
    let mut map = partial.as_os_str().to_os_string();
    map.push(".ranges");
    for p in [partial.clone(), PathBuf::from(map)] {
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            if !m.is_file() {
                return Err(LocalTargetError::BadPartial(p));
            }
        }
    }
    Ok(target)
}

fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn accepts_missing_and_regular_destinations() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        assert_eq!(download_target(&f, false).unwrap(), f);
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(download_target(&f, false).unwrap(), f);
        assert!(matches!(download_target(&f, true), Err(LocalTargetError::Exists(_))));
    }

    #[test]
    fn rejects_devices_directories_and_bad_partials() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            download_target(Path::new("/dev/null"), false),
            Err(LocalTargetError::NotRegular { kind: "device", .. })
        ));
        assert!(matches!(download_target(d.path(), false), Err(LocalTargetError::NotRegular { .. })));
        let f = d.path().join("g");
        symlink("/etc/passwd", d.path().join(".g.xfer-part")).unwrap();
        assert!(matches!(download_target(&f, false), Err(LocalTargetError::BadPartial(_))));
    }

    #[test]
    fn follows_a_symlink_to_a_regular_file_and_refuses_a_dangling_one() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::write(&real, b"x").unwrap();
        symlink(&real, d.path().join("link")).unwrap();
        assert_eq!(download_target(&d.path().join("link"), false).unwrap(), real.canonicalize().unwrap());
        symlink(d.path().join("nowhere"), d.path().join("dangling")).unwrap();
        assert!(matches!(download_target(&d.path().join("dangling"), false), Err(LocalTargetError::Dangling(_))));
        symlink("/dev/null", d.path().join("null")).unwrap();
        assert!(matches!(download_target(&d.path().join("null"), false), Err(LocalTargetError::NotRegular { .. })));
    }
}
