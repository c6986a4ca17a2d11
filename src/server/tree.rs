//! Whole-tree requests: `Walk` lists a directory tree in one reply (CTRL-TREE-1, -2), `Glob`
//! expands a pattern inside the home (CTRL-GLOB-1, -2), `SetAttrs` keeps a file's mtime and
//! mode (CTRL-ATTR-1). Replies are bounded in entries and in encoded bytes, so one always fits
//! in a frame. All three go through the session's [`Storage`], so they are served in both the
//! local and the object-storage profile (STORE-OBJ-11).

use globset::{GlobBuilder, GlobMatcher};

use super::errors::{blocking, Reply};
use super::session::Session;
use crate::home::{EntryKind as HomeKind, HomeError, HomePath, TreeItem};
use crate::proto::{ErrorCode, Response, TreeEntry, MAX_FRAME_LEN};
use crate::storage::{Storage, StorageError, MAX_WALK_ENTRIES};

/// Entries one `Walk` reply carries at most, and entries one `Glob` visits at most
/// (CTRL-TREE-2, CTRL-GLOB-2).
pub const MAX_TREE_ENTRIES: usize = 100_000;
/// Matches one `Glob` reply carries at most (CTRL-GLOB-2).
pub const MAX_GLOB_MATCHES: usize = 10_000;
/// Encoded bytes of the entries of one reply at most: the frame limit less room for the
/// reply's own header.
const MAX_TREE_BYTES: usize = MAX_FRAME_LEN as usize - 4096;
/// Bytes of a `TreeEntry` besides its path: path length, kind, size, mtime, mode.
const ENTRY_OVERHEAD: usize = 8 + 4 + 8 + 8 + 4;

// A storage walk cut short by its own bound is always one these requests refuse anyway.
const _: () = assert!(MAX_WALK_ENTRIES > MAX_TREE_ENTRIES);

impl Session {
    /// CTRL-ATTR-1: sets the mtime (and mode) of a regular file; partial names are refused.
    pub(crate) async fn set_attrs(&mut self, path: &str, mtime: i64, mode: Option<u32>) -> Result<Response, Reply> {
        let target = self.resolve(path)?;
        if target.partial_target().is_some() {
            return Err(Reply::new(ErrorCode::InvalidPath, format!("{target}: partial uploads belong to the server")));
        }
        let storage = self.storage.clone();
        blocking(move || storage.set_attrs(&target, mtime, mode).map_err(Reply::from)).await?;
        Ok(Response::Ok)
    }

    /// CTRL-TREE-1: every entry beneath `path`, or `TooManyEntries` past the bound.
    pub(crate) async fn walk(&mut self, path: &str) -> Result<Response, Reply> {
        let top = self.resolve(path)?;
        let storage = self.storage.clone();
        blocking(move || {
            let mut budget = Budget::new(MAX_TREE_ENTRIES);
            let mut entries = Vec::new();
            let complete = storage.walk_tree(&top, usize::MAX, &mut |item| {
                let keep = budget.take(&item.rel);
                if keep {
                    entries.push(wire(item.rel.clone(), &item));
                }
                keep
            })?;
            if !complete {
                return Err(too_many(format!("{top}: more than {} entries, or too long a reply", budget.max)));
            }
            Ok(Response::Tree { entries })
        })
        .await
    }

    /// CTRL-GLOB-1: the entries whose home paths match `pattern`, sorted by path.
    pub(crate) async fn glob(&mut self, pattern: &str) -> Result<Response, Reply> {
        let pattern = Pattern::parse(&self.cwd, pattern)?;
        let storage = self.storage.clone();
        blocking(move || {
            let entries = pattern.expand(&*storage)?;
            Ok(Response::Tree { entries })
        })
        .await
    }
}

fn too_many(message: String) -> Reply {
    Reply::new(ErrorCode::TooManyEntries, message)
}

fn wire(path: String, item: &TreeItem) -> TreeEntry {
    let kind = match item.kind {
        HomeKind::File => crate::proto::EntryKind::File,
        HomeKind::Dir => crate::proto::EntryKind::Dir,
        HomeKind::Symlink => crate::proto::EntryKind::Symlink,
        HomeKind::Other => crate::proto::EntryKind::Other,
    };
    TreeEntry { path, kind, size: item.size, mtime: item.mtime, mode: item.mode }
}

/// Counts entries and their encoded bytes against the bounds of one reply.
struct Budget {
    max: usize,
    entries: usize,
    bytes: usize,
}

impl Budget {
    fn new(max: usize) -> Budget {
        Budget { max, entries: 0, bytes: 0 }
    }

    /// Takes room for one entry with `path`; false once either bound would be passed.
    fn take(&mut self, path: &str) -> bool {
        self.entries += 1;
        self.bytes += ENTRY_OVERHEAD + path.len();
        self.entries <= self.max && self.bytes <= MAX_TREE_BYTES
    }
}

/// A parsed glob: the literal directory it starts from, how deep it reaches, and the matcher
/// for whole home paths.
#[derive(Debug)]
struct Pattern {
    base: HomePath,
    /// Levels below `base` the pattern reaches; `usize::MAX` with `**`.
    depth: usize,
    matcher: Option<GlobMatcher>,
    /// True when a pattern component starts with `.`: only then do names starting with `.`
    /// match (as in a shell).
    dotted: bool,
}

impl Pattern {
    fn parse(cwd: &HomePath, pattern: &str) -> Result<Pattern, Reply> {
        // The same character and length rules as any path (CTRL-PATH-3).
        HomePath::resolve(cwd, pattern)?;
        let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        let literal = parts.iter().take_while(|p| !is_glob(p)).count();
        let rest = &parts[literal..];
        if rest.contains(&"..") {
            return Err(Reply::new(ErrorCode::InvalidPath, format!("{pattern}: '..' after a wildcard")));
        }
        let prefix = if pattern.starts_with('/') { "/" } else { "" };
        let base = HomePath::resolve(cwd, &format!("{prefix}{}", parts[..literal].join("/")))?;
        if rest.is_empty() {
            return Ok(Pattern { base, depth: 0, matcher: None, dotted: true });
        }
        let depth = if rest.contains(&"**") { usize::MAX } else { rest.len() };
        let full = format!("{}/{}", base.to_string().trim_end_matches('/'), rest.join("/"));
        let glob = GlobBuilder::new(&full)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Reply::new(ErrorCode::InvalidPath, format!("{pattern}: {}", e.kind())))?;
        let dotted = rest.iter().any(|p| p.starts_with('.'));
        Ok(Pattern { base, depth, matcher: Some(glob.compile_matcher()), dotted })
    }

    /// Walks from `base` and keeps the matches (CTRL-GLOB-2 bounds both).
    fn expand(&self, storage: &dyn Storage) -> Result<Vec<TreeEntry>, Reply> {
        let Some(matcher) = &self.matcher else {
            // No wildcard: the path itself, if it exists.
            return match storage.tree_item(&self.base) {
                Ok(item) => Ok(vec![wire(self.base.to_string(), &item)]),
                Err(StorageError::Home(HomeError::NotFound(_))) => Ok(Vec::new()),
                Err(e) => Err(e.into()),
            };
        };
        match storage.stat(&self.base) {
            Ok(e) if e.kind == HomeKind::Dir => {}
            Ok(_) | Err(StorageError::Home(HomeError::NotFound(_))) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
        let mut visited = Budget::new(MAX_TREE_ENTRIES);
        let mut kept = Budget::new(MAX_GLOB_MATCHES);
        let mut out = Vec::new();
        let mut overflow = false;
        let complete = storage.walk_tree(&self.base, self.depth, &mut |item| {
            if !visited.take("") {
                return false;
            }
            let hidden = item.rel.split('/').any(|c| c.starts_with('.'));
            if item.path.partial_target().is_some() || (hidden && !self.dotted) {
                return true;
            }
            let shown = item.path.to_string();
            if !matcher.is_match(&shown) {
                return true;
            }
            if !kept.take(&shown) {
                overflow = true;
                return false;
            }
            out.push(wire(shown, &item));
            true
        })?;
        if !complete {
            let what = if overflow {
                format!("more than {MAX_GLOB_MATCHES} matches")
            } else {
                format!("more than {MAX_TREE_ENTRIES} entries to look at")
            };
            return Err(too_many(format!("{}: {what}; use a narrower pattern", self.base)));
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// True for a path component holding a wildcard or a class.
fn is_glob(component: &str) -> bool {
    component.contains(['*', '?', '[', '{', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(cwd: &str, p: &str) -> Pattern {
        let cwd = HomePath::resolve(&HomePath::root(), cwd).unwrap();
        Pattern::parse(&cwd, p).unwrap()
    }

    #[test]
    fn splits_the_literal_directory_from_the_wildcards() {
        let p = parse("/d", "logs/*.log");
        assert_eq!(p.base.to_string(), "/d/logs");
        assert_eq!(p.depth, 1);
        let m = p.matcher.unwrap();
        assert!(m.is_match("/d/logs/a.log"));
        assert!(!m.is_match("/d/logs/sub/a.log"), "* stops at /");
        let p = parse("/", "/a/**/x");
        assert_eq!((p.base.to_string().as_str(), p.depth), ("/a", usize::MAX));
        assert!(p.matcher.unwrap().is_match("/a/b/c/x"));
        assert!(!parse("/", "*").dotted);
        assert!(parse("/", ".*").dotted);
    }

    #[test]
    fn rejects_escapes_and_dotdot_after_a_wildcard() {
        let root = HomePath::root();
        assert_eq!(Pattern::parse(&root, "../*").unwrap_err().code, ErrorCode::PathEscapes);
        assert_eq!(Pattern::parse(&root, "a*/../x").unwrap_err().code, ErrorCode::InvalidPath);
        assert_eq!(Pattern::parse(&root, "a\nb*").unwrap_err().code, ErrorCode::InvalidPath);
    }

    #[test]
    fn budget_counts_entries_and_bytes() {
        let mut b = Budget::new(2);
        assert!(b.take("a"));
        assert!(b.take("b"));
        assert!(!b.take("c"));
        let mut b = Budget::new(usize::MAX);
        let long = "x".repeat(MAX_TREE_BYTES);
        assert!(!b.take(&long));
    }
}
