//! Virtual paths inside a home: pure normalization, no I/O.

use std::fmt;
use std::path::PathBuf;

/// Longest single component, in bytes (the usual `NAME_MAX`).
const MAX_COMPONENT: usize = 255;
/// Longest path, in bytes, counting one '/' per component (the usual `PATH_MAX`).
const MAX_TOTAL: usize = 4096;
/// Most components in a path; bounds directory depth reachable through the protocol.
const MAX_COMPONENTS: usize = 256;
/// Suffix of the hidden sibling an upload is written to before the final rename.
const PARTIAL_SUFFIX: &str = ".xfer-part";

/// Why a client-supplied path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path escapes the home directory: {0}")]
    Escapes(String),
    #[error("invalid path {0:?}: {1}")]
    Invalid(String, &'static str),
    #[error("path too long")]
    TooLong,
}

/// A normalized path below a home root: a list of plain components, never "." or "..".
/// Displayed to users as an absolute path where "/" is the home itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct HomePath(Vec<String>);

impl HomePath {
    /// The home root, "/".
    pub fn root() -> HomePath {
        HomePath(Vec::new())
    }

    /// Resolves `input` against `cwd`. A leading '/' means the home root.
    pub fn resolve(cwd: &HomePath, input: &str) -> Result<HomePath, PathError> {
        check_chars(input)?;
        // Reject absurd inputs before doing any work; no valid path is longer than this.
        if input.len() > MAX_TOTAL {
            return Err(PathError::TooLong);
        }
        let mut parts = if input.starts_with('/') { Vec::new() } else { cwd.0.clone() };
        for comp in input.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(PathError::Escapes(input.to_string()));
                    }
                }
                name if name.len() > MAX_COMPONENT => return Err(PathError::TooLong),
                name => parts.push(name.to_string()),
            }
        }
        let path = HomePath(parts);
        path.check_bounds()?;
        Ok(path)
    }

    /// True for the home root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The plain components, outermost first; empty for the root.
    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// The last component; None for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.0.last().map(String::as_str)
    }

    /// The containing directory; None for the root.
    pub fn parent(&self) -> Option<HomePath> {
        let (_, rest) = self.0.split_last()?;
        Some(HomePath(rest.to_vec()))
    }

    /// The path relative to the home directory, for capability-based opens: "." for the root,
    /// "a/b" otherwise. Never absolute, never containing "..".
    pub fn to_rel_path(&self) -> PathBuf {
        if self.is_root() {
            PathBuf::from(".")
        } else {
            self.0.iter().collect()
        }
    }

    /// The hidden sibling ".NAME.xfer-part" an upload to `self` is written to before the final
    /// rename; None for the root. The name may exceed the component limit when NAME is near
    /// it; the filesystem then refuses it with `ENAMETOOLONG`.
    pub fn partial(&self) -> Option<HomePath> {
        let (name, rest) = self.0.split_last()?;
        let mut parts = rest.to_vec();
        parts.push(format!(".{name}{PARTIAL_SUFFIX}"));
        Some(HomePath(parts))
    }

    /// This path with one more component, taken as given (a name read from the disk).
    pub fn join(&self, name: &str) -> HomePath {
        let mut parts = self.0.clone();
        parts.push(name.to_string());
        HomePath(parts)
    }

    /// True if `ancestor` is this path or one of its parent directories.
    pub fn starts_with(&self, ancestor: &HomePath) -> bool {
        self.0.starts_with(&ancestor.0)
    }

    /// For a partial-file name `.NAME.xfer-part`, the upload target `NAME` it belongs to.
    pub fn partial_target(&self) -> Option<HomePath> {
        let (name, rest) = self.0.split_last()?;
        let target = name.strip_prefix('.')?.strip_suffix(PARTIAL_SUFFIX)?;
        if target.is_empty() {
            return None;
        }
        let mut parts = rest.to_vec();
        parts.push(target.to_string());
        Some(HomePath(parts))
    }

    /// Enforces the component-count and total-length limits on a normalized path.
    fn check_bounds(&self) -> Result<(), PathError> {
        let total: usize = self.0.iter().map(|c| c.len() + 1).sum();
        if self.0.len() > MAX_COMPONENTS || total > MAX_TOTAL {
            return Err(PathError::TooLong);
        }
        Ok(())
    }
}

/// Refuses characters that are either path syntax on other systems (backslash), impossible in
/// Unix names (NUL), or a terminal/log-injection hazard (other ASCII controls).
fn check_chars(input: &str) -> Result<(), PathError> {
    let invalid = |reason| Err(PathError::Invalid(input.to_string(), reason));
    if input.contains('\0') {
        return invalid("contains NUL");
    }
    if input.contains('\\') {
        return invalid("contains a backslash");
    }
    if input.chars().any(|c| c.is_ascii_control()) {
        return invalid("contains a control character");
    }
    Ok(())
}

impl fmt::Display for HomePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str("/");
        }
        for comp in &self.0 {
            write!(f, "/{comp}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn res(cwd: &str, input: &str) -> Result<HomePath, PathError> {
        let cwd = HomePath::resolve(&HomePath::root(), cwd)?;
        HomePath::resolve(&cwd, input)
    }

    fn shown(cwd: &str, input: &str) -> String {
        match res(cwd, input) {
            Ok(p) => p.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn accepts_relative_paths_against_cwd() {
        assert_eq!(shown("/a", "b/c"), "/a/b/c");
        assert_eq!(shown("/a/b", "../c"), "/a/c");
        assert_eq!(shown("/a", "./b/./c/"), "/a/b/c");
        assert_eq!(shown("/a", "b//c"), "/a/b/c");
    }

    #[test]
    fn accepts_leading_slash_as_home_root() {
        assert_eq!(shown("/a/b", "/c"), "/c");
        assert_eq!(shown("/a", "/etc/passwd"), "/etc/passwd");
        assert_eq!(shown("/a", "//"), "/");
        assert_eq!(shown("/a", "/"), "/");
    }

    #[test]
    fn accepts_empty_input_as_cwd() {
        assert_eq!(shown("/a/b", ""), "/a/b");
        assert_eq!(shown("/", ""), "/");
        assert_eq!(shown("/a", "."), "/a");
    }

    #[test]
    fn accepts_dotdot_back_to_root() {
        assert_eq!(shown("/a/b", "../.."), "/");
        assert_eq!(shown("/", "a/.."), "/");
        assert_eq!(shown("/", "a/../b"), "/b");
    }

    #[test]
    fn accepts_dotted_names_that_are_not_dot_or_dotdot() {
        assert_eq!(shown("/", "...").as_str(), "/...");
        assert_eq!(shown("/", ".hidden/..x").as_str(), "/.hidden/..x");
    }

    #[test]
    fn accepts_non_ascii_names() {
        assert_eq!(shown("/", "répertoire/ファイル"), "/répertoire/ファイル");
    }

    #[test]
    fn rejects_dotdot_beyond_root() {
        assert_eq!(res("/", ".."), Err(PathError::Escapes("..".into())));
        assert!(matches!(res("/a", "../.."), Err(PathError::Escapes(_))));
        assert!(matches!(res("/a", "/../a"), Err(PathError::Escapes(_))));
        // Escaping and coming back is still an escape attempt, not a round trip.
        assert!(matches!(res("/", "../home/a"), Err(PathError::Escapes(_))));
    }

    #[test]
    fn rejects_backslash() {
        assert!(matches!(res("/", "a\\..\\..\\etc"), Err(PathError::Invalid(_, _))));
        assert!(matches!(res("/", "..\\x"), Err(PathError::Invalid(_, _))));
    }

    #[test]
    fn rejects_nul_and_control_characters() {
        assert!(matches!(res("/", "a\0b"), Err(PathError::Invalid(_, _))));
        assert!(matches!(res("/", "a\nb"), Err(PathError::Invalid(_, _))));
        assert!(matches!(res("/", "a\x1b[2Jb"), Err(PathError::Invalid(_, _))));
        assert!(matches!(res("/", "a\x7fb"), Err(PathError::Invalid(_, _))));
    }

    #[test]
    fn rejects_component_over_255_bytes() {
        assert_eq!(res("/", &"x".repeat(256)), Err(PathError::TooLong));
        assert!(res("/", &"x".repeat(255)).is_ok());
        // Checked even when a later ".." would drop it.
        let input = format!("{}/..", "x".repeat(300));
        assert_eq!(res("/", &input), Err(PathError::TooLong));
    }

    #[test]
    fn rejects_too_many_components() {
        let ok = vec!["d"; MAX_COMPONENTS].join("/");
        assert!(res("/", &ok).is_ok());
        let deep = vec!["d"; MAX_COMPONENTS + 1].join("/");
        assert_eq!(res("/", &deep), Err(PathError::TooLong));
    }

    #[test]
    fn rejects_total_over_4096_bytes() {
        let name = "n".repeat(200);
        let long = vec![name.as_str(); 21].join("/"); // 21 * 201 = 4221 bytes with slashes
        assert_eq!(res("/", &long), Err(PathError::TooLong));
        // Also when cwd plus a short relative input exceeds the bound.
        let cwd = vec![name.as_str(); 20].join("/");
        assert_eq!(res(&cwd, &name), Err(PathError::TooLong));
    }

    #[test]
    fn accepts_helpers_on_root_and_nested_paths() {
        let root = HomePath::root();
        assert!(root.is_root());
        assert_eq!(root.file_name(), None);
        assert_eq!(root.parent(), None);
        assert_eq!(root.partial(), None);
        assert_eq!(root.to_rel_path(), PathBuf::from("."));
        assert_eq!(root.to_string(), "/");

        let p = HomePath::resolve(&root, "a/b").expect("valid path");
        assert!(!p.is_root());
        assert_eq!(p.components(), ["a", "b"]);
        assert_eq!(p.file_name(), Some("b"));
        assert_eq!(p.parent().map(|q| q.to_string()), Some("/a".to_string()));
        assert_eq!(p.to_rel_path(), PathBuf::from("a/b"));
        assert_eq!(p.to_string(), "/a/b");
        let part = p.partial().expect("non-root has a partial");
        assert_eq!(part.to_string(), "/a/.b.xfer-part");
        assert_eq!(part.parent(), p.parent());
    }

    fn assert_clean(p: &HomePath) {
        assert!(p.components().len() <= MAX_COMPONENTS);
        assert!(p.to_string().len() <= MAX_TOTAL);
        for c in p.components() {
            assert!(!c.is_empty());
            assert!(c != "." && c != "..");
            assert!(!c.contains(['/', '\\', '\0']));
            assert!(c.len() <= MAX_COMPONENT);
            assert!(!c.chars().any(|ch| ch.is_ascii_control()));
        }
        assert!(!p.to_rel_path().is_absolute());
    }

    proptest! {
        #[test]
        fn accepts_only_clean_components_for_arbitrary_strings(cwd in ".*", input in ".*") {
            let cwd = HomePath::resolve(&HomePath::root(), &cwd).unwrap_or_default();
            if let Ok(p) = HomePath::resolve(&cwd, &input) {
                assert_clean(&p);
            }
        }

        #[test]
        fn accepts_only_clean_components_for_path_like_strings(
            cwd in "[a./]{0,20}",
            input in r"[a./\\\x00\n]{0,60}",
        ) {
            let cwd = HomePath::resolve(&HomePath::root(), &cwd).unwrap_or_default();
            if let Ok(p) = HomePath::resolve(&cwd, &input) {
                assert_clean(&p);
                if let Some(part) = p.partial() {
                    assert_clean(&part);
                }
            }
        }
    }
}
