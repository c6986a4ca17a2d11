//! Virtual paths inside a home: pure normalization, no I/O.

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
        let _ = (cwd, input);
        todo!()
    }
}
