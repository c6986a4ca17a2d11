//! Whole-tree reads and attributes in the object namespace (STORE-OBJ-11).
//!
//! A walk costs two queries whatever the shape of the tree: the walked entry itself, then every
//! row beneath it down to the depth asked, read from one cursor in batches until
//! [`MAX_WALK_ENTRIES`] rows or [`MAX_WALK_BYTES`] of paths, and visited in memory in the order
//! of [`crate::home::Home::walk_tree`]. `SetAttrs` is one `UPDATE` of the file's row.

use std::collections::HashMap;

use super::{pg_err, ObjectStorage, Row};
use crate::home::{EntryKind, HomeError, HomePath, TreeItem, KEPT_MODE, NEW_DIR_MODE, SETTABLE_MODE};
use crate::storage::{StorageError, MAX_WALK_BYTES, MAX_WALK_ENTRIES};

/// Rows fetched from the walk's cursor at a time.
const BATCH: i32 = 4096;
/// Bytes a found row is counted for besides its path.
const ROW_OVERHEAD: usize = 64;

/// A row found beneath the walked directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found {
    /// The home path as stored (`/a/b`).
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
    pub mtime: i64,
    pub mode: u32,
}

impl ObjectStorage {
    pub(super) fn object_tree_item(&self, p: &HomePath) -> Result<TreeItem, StorageError> {
        self.backend.block(async {
            let c = self.backend.client().await?;
            let row = self.row(&**c, p).await?.ok_or_else(|| HomeError::NotFound(p.to_string()))?;
            Ok(item_of_row(p.clone(), p.file_name().unwrap_or("/").to_string(), &row))
        })
    }

    pub(super) fn object_walk(
        &self,
        top: &HomePath,
        max_depth: usize,
        keep: &mut dyn FnMut(TreeItem) -> bool,
    ) -> Result<bool, StorageError> {
        let first = self.object_tree_item(top)?;
        if first.kind != EntryKind::Dir {
            return Ok(keep(first));
        }
        let (rows, complete) = self.rows_beneath(top, max_depth)?;
        let visited = visit(top, &rows, max_depth, keep);
        // A walk cut short by the bounds stops as if `keep` had said so.
        Ok(visited && complete)
    }

    /// Every row beneath directory `top`, at most `max_depth` levels down, and whether that is
    /// all of them (false when the bounds cut the read short).
    fn rows_beneath(&self, top: &HomePath, max_depth: usize) -> Result<(Vec<Found>, bool), StorageError> {
        let prefix = if top.is_root() { "/".to_string() } else { format!("{top}/") };
        // A row `depth` levels below `top` has as many '/' as `top` has components, plus `depth`.
        let slashes = i64::try_from(top.components().len().saturating_add(max_depth)).unwrap_or(i64::MAX);
        self.backend.block(async {
            let mut c = self.backend.client().await?;
            let tx = c.transaction().await.map_err(pg_err)?;
            let stmt = tx
                .prepare(
                    "SELECT path, is_dir, size, mtime, mode FROM ns_entries \
                     WHERE home = $1 AND starts_with(path, $2) \
                     AND length(path) - length(replace(path, '/', '')) <= $3::BIGINT",
                )
                .await
                .map_err(pg_err)?;
            let portal = tx.bind(&stmt, &[&self.home, &prefix, &slashes]).await.map_err(pg_err)?;
            let (mut rows, mut bytes) = (Vec::new(), 0usize);
            loop {
                let batch = tx.query_portal(&portal, BATCH).await.map_err(pg_err)?;
                let last = batch.len() < BATCH as usize;
                for r in batch {
                    let path: String = r.get(0);
                    bytes += path.len() + ROW_OVERHEAD;
                    if rows.len() >= MAX_WALK_ENTRIES || bytes > MAX_WALK_BYTES {
                        return Ok((rows, false));
                    }
                    rows.push(Found {
                        path,
                        is_dir: r.get(1),
                        size: r.get::<_, i64>(2).max(0) as u64,
                        mtime: r.get(3),
                        mode: r.get::<_, i32>(4) as u32,
                    });
                }
                if last {
                    return Ok((rows, true));
                }
            }
        })
    }

    pub(super) fn object_set_attrs(&self, p: &HomePath, mtime: i64, mode: Option<u32>) -> Result<(), StorageError> {
        let bits = mode.map(|m| ((m & SETTABLE_MODE) | KEPT_MODE) as i32);
        self.backend.block(async {
            let c = self.backend.client().await?;
            let n = c
                .execute(
                    "UPDATE ns_entries SET mtime = $3, mode = COALESCE($4, mode) \
                     WHERE home = $1 AND path = $2 AND NOT is_dir",
                    &[&self.home, &p.to_string(), &mtime, &bits],
                )
                .await
                .map_err(pg_err)?;
            if n == 1 {
                return Ok(());
            }
            match self.row(&**c, p).await? {
                Some(r) if r.is_dir => Err(HomeError::IsADirectory(p.to_string()).into()),
                _ => Err(HomeError::NotFound(p.to_string()).into()),
            }
        })
    }
}

/// The tree item of a namespace row.
pub(super) fn item_of_row(path: HomePath, rel: String, row: &Row) -> TreeItem {
    let (kind, size, mode) =
        if row.is_dir { (EntryKind::Dir, 0, NEW_DIR_MODE) } else { (EntryKind::File, row.size, row.mode) };
    TreeItem { path, rel, kind, size, mtime: row.mtime, mode }
}

/// Visits `rows` (everything found beneath directory `top`) as [`crate::home::Home::walk_tree`]
/// does: a directory's entries in bytewise name order, then each subdirectory's in turn, down
/// to `max_depth` levels. Returns false as soon as `keep` does.
pub(super) fn visit(top: &HomePath, rows: &[Found], max_depth: usize, keep: &mut dyn FnMut(TreeItem) -> bool) -> bool {
    let mut children: HashMap<&str, Vec<&Found>> = HashMap::new();
    for r in rows {
        children.entry(parent_of(&r.path)).or_default().push(r);
    }
    for kids in children.values_mut() {
        kids.sort_by(|a, b| name_of(&a.path).cmp(name_of(&b.path)));
    }
    let mut stack = vec![(top.clone(), top.to_string(), String::new(), 1usize)];
    while let Some((dir, key, rel, depth)) = stack.pop() {
        let Some(kids) = children.get(key.as_str()) else {
            continue;
        };
        let mut subdirs = Vec::new();
        for f in kids {
            let name = name_of(&f.path);
            let path = dir.join(name);
            let child_rel = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
            if f.is_dir && depth < max_depth {
                subdirs.push((path.clone(), f.path.clone(), child_rel.clone(), depth + 1));
            }
            let (kind, size, mode) =
                if f.is_dir { (EntryKind::Dir, 0, NEW_DIR_MODE) } else { (EntryKind::File, f.size, f.mode) };
            if !keep(TreeItem { path, rel: child_rel, kind, size, mtime: f.mtime, mode }) {
                return false;
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    true
}

/// `/a/b` -> `/a`, `/a` -> `/`.
fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// `/a/b` -> `b`.
fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::Home;

    fn found(path: &str, is_dir: bool) -> Found {
        Found {
            path: path.to_string(),
            is_dir,
            size: if is_dir { 0 } else { path.len() as u64 },
            mtime: 7,
            mode: 0o640,
        }
    }

    fn hp(p: &str) -> HomePath {
        HomePath::resolve(&HomePath::root(), p).unwrap()
    }

    /// The same tree on disk and as rows: both walks visit the same entries in the same order.
    #[test]
    fn visits_rows_in_the_order_of_the_local_walk() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        // Names around '/' in byte order ('-' and '.' sort before it, 'b' after).
        let tree = [
            ("/a", true),
            ("/a-x", false),
            ("/a.txt", false),
            ("/a/b", true),
            ("/a/b/deep", false),
            ("/a/c", false),
            ("/a/B", false),
            ("/b", true),
            ("/b/x", false),
            ("/\u{e9}t\u{e9}", false),
            ("/Z", false),
        ];
        let mut rows = Vec::new();
        for (p, is_dir) in tree {
            let rel = dir.path().join(&p[1..]);
            if is_dir {
                std::fs::create_dir(&rel).unwrap();
            } else {
                std::fs::write(&rel, p).unwrap();
            }
            rows.push(found(p, is_dir));
        }
        // The database returns rows in no particular order.
        rows.reverse();
        let seen = |top: &str, depth: usize, on_disk: bool| {
            let mut out = Vec::new();
            let mut keep = |i: TreeItem| {
                out.push((i.path.to_string(), i.rel, i.kind, i.size));
                true
            };
            let all = if on_disk {
                home.walk_tree(&hp(top), depth, &mut keep).unwrap()
            } else {
                let beneath: Vec<Found> =
                    rows.iter().filter(|r| top == "/" || r.path.starts_with(&format!("{top}/"))).cloned().collect();
                visit(&hp(top), &beneath, depth, &mut keep)
            };
            assert!(all);
            out
        };
        for (top, depth) in [("/", usize::MAX), ("/", 1), ("/a", usize::MAX), ("/a", 1), ("/a/b", 5)] {
            let local = seen(top, depth, true);
            assert!(!local.is_empty() || top == "/a/b");
            assert_eq!(seen(top, depth, false), local, "walk of {top} to depth {depth}");
        }
        assert_eq!(seen("/", usize::MAX, false).len(), tree.len());
        assert_eq!(seen("/", 1, false).len(), 6);
    }

    #[test]
    fn stops_when_keep_says_so_and_reports_the_namespace_mode() {
        let rows = [found("/d", true), found("/d/f", false), found("/e", false)];
        let mut seen = Vec::new();
        let all = visit(&HomePath::root(), &rows, usize::MAX, &mut |i| {
            seen.push((i.rel, i.mode, i.mtime));
            seen.len() < 2
        });
        assert!(!all);
        assert_eq!(seen, [("d".to_string(), NEW_DIR_MODE, 7), ("e".to_string(), 0o640, 7)]);
        assert_eq!((parent_of("/a"), parent_of("/a/b/c"), name_of("/a/b/c")), ("/", "/a/b", "c"));
    }
}
