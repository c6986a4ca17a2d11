//! Remote globs (`get '*.log' DIR/`, `rm 'a*'`, `ls 'x*'`): expanded by the server inside the
//! home with one `Glob` request (CTRL-GLOB-1); a pattern that matches nothing is an error, as in
//! a shell without `nullglob`.

use xfer::client::Client;
use xfer::proto::{Entry, TreeEntry};

use crate::error::CliError;
use crate::exit_codes::ExitCode;

/// True for an argument holding a wildcard or a class.
pub fn is_pattern(arg: &str) -> bool {
    arg.contains(['*', '?', '['])
}

/// The entries `pattern` matches, sorted by path; none is an error.
pub async fn expand(client: &mut Client, pattern: &str) -> Result<Vec<TreeEntry>, CliError> {
    let found = client.glob(pattern).await.map_err(|e| CliError::from(e).context(pattern))?;
    if found.is_empty() {
        return Err(CliError::new(ExitCode::RemotePath, format!("{pattern}: no match")));
    }
    Ok(found)
}

/// Remote sources with each pattern replaced by the paths it matches.
pub async fn expand_all(client: &mut Client, sources: Vec<String>) -> Result<Vec<String>, CliError> {
    let mut out = Vec::with_capacity(sources.len());
    for s in sources {
        if is_pattern(&s) {
            out.extend(expand(client, &s).await?.into_iter().map(|e| e.path));
        } else {
            out.push(s);
        }
    }
    Ok(out)
}

/// Matches as listing entries named by their home paths.
pub fn as_entries(found: Vec<TreeEntry>) -> Vec<Entry> {
    found.into_iter().map(|e| Entry { name: e.path, kind: e.kind, size: e.size, mtime: e.mtime }).collect()
}
