//! Whole-tree reads and file attributes: the walks behind `Walk` and `Glob` (CTRL-TREE-1,
//! CTRL-GLOB-1) and the times and mode that `SetAttrs` writes (CTRL-ATTR-1). Every access goes
//! through the home's capability, so nothing here can reach outside the home; symlinks are
//! described, never followed.

use cap_std::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{kind_of, map_io, regular_len, vanished, EntryKind, Home, HomeError, HomePath};

/// Permission bits a client may set; the owner's read and write bits are always kept so the
/// server can go on serving the file (CTRL-ATTR-1).
pub const SETTABLE_MODE: u32 = 0o777;
pub const KEPT_MODE: u32 = 0o600;
/// Permission bits of a new file and a new directory (what the server's usual umask 022
/// leaves); the object namespace gives them to what it creates (STORE-OBJ-11).
pub const NEW_FILE_MODE: u32 = 0o644;
pub const NEW_DIR_MODE: u32 = 0o755;

/// One entry found by [`Home::walk_tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeItem {
    pub path: HomePath,
    /// `/`-separated path below the walked directory.
    pub rel: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

impl Home {
    /// Visits the entries beneath directory `top`, each directory before what it holds,
    /// siblings in bytewise name order, down to `max_depth` levels (1: the directory's own
    /// entries). A `top` that is not a directory is visited alone, under its own name.
    /// Returns false as soon as `keep` does (the walk stops there), true once everything was
    /// visited. Entries that vanish during the walk are skipped.
    pub fn walk_tree(
        &self,
        top: &HomePath,
        max_depth: usize,
        mut keep: impl FnMut(TreeItem) -> bool,
    ) -> Result<bool, HomeError> {
        let first = self.tree_item(top)?;
        if first.kind != EntryKind::Dir {
            return Ok(keep(first));
        }
        let mut stack = vec![(top.clone(), String::new(), 1usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let mut children = match self.read_sorted(&dir) {
                Ok(c) => c,
                Err(HomeError::NotFound(_) | HomeError::NotADirectory(_)) if dir != *top => continue,
                Err(e) => return Err(e),
            };
            let mut subdirs = Vec::new();
            for (name, meta) in children.drain(..) {
                let path = dir.join(&name);
                let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                if meta.is_dir() && depth < max_depth {
                    subdirs.push((path.clone(), child_rel.clone(), depth + 1));
                }
                if !keep(item(path, child_rel, &meta)) {
                    return Ok(false);
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(true)
    }

    /// The entry at `p` itself, under its own name (a symlink is described, not followed).
    pub fn tree_item(&self, p: &HomePath) -> Result<TreeItem, HomeError> {
        let meta = self.lstat(p)?;
        Ok(item(p.clone(), p.file_name().unwrap_or("/").to_string(), &meta))
    }

    /// Sets the modification time of the regular file `p` and, with `mode`, its permission
    /// bits (masked to [`SETTABLE_MODE`], with [`KEPT_MODE`] always set). Refuses what
    /// [`Home::open_read`] refuses: anything but a singly-linked regular file.
    pub fn set_attrs(&self, p: &HomePath, mtime: i64, mode: Option<u32>) -> Result<(), HomeError> {
        let (file, _) = self.open_read(p)?;
        let at = if mtime >= 0 {
            UNIX_EPOCH + Duration::from_secs(mtime as u64)
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(mtime.unsigned_abs())).unwrap_or(UNIX_EPOCH)
        };
        file.set_times(std::fs::FileTimes::new().set_modified(at).set_accessed(SystemTime::now()))
            .map_err(|e| map_io(e, p))?;
        if let Some(mode) = mode {
            let bits = (mode & SETTABLE_MODE) | KEPT_MODE;
            file.set_permissions(std::fs::Permissions::from_mode(bits)).map_err(|e| map_io(e, p))?;
        }
        Ok(())
    }

    /// A directory's entries with their lstat metadata, sorted by name.
    fn read_sorted(&self, dir: &HomePath) -> Result<Vec<(String, cap_std::fs::Metadata)>, HomeError> {
        let err = |e| map_io(e, dir);
        let mut out = Vec::new();
        for entry in self.dir.read_dir(dir.to_rel_path()).map_err(err)? {
            let entry = entry.map_err(err)?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(err(e)),
            };
            out.push((entry.file_name().to_string_lossy().into_owned(), meta));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn item(path: HomePath, rel: String, meta: &cap_std::fs::Metadata) -> TreeItem {
    TreeItem {
        path,
        rel,
        kind: kind_of(meta.file_type()),
        size: regular_len(meta),
        mtime: meta.mtime(),
        mode: meta.mode() & 0o7777,
    }
}
