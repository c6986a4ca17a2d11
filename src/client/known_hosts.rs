//! Pinned server fingerprints, one `HOST:PORT SHA256:<hex>` line per server, in
//! `CONFIG_DIR/known_hosts` (the client's trust-on-first-use store, like ssh's).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::tls::{format_fingerprint, parse_fingerprint, Fingerprint};

/// The known-hosts file.
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<(String, Fingerprint)>,
}

impl KnownHosts {
    /// Loads `path`; a missing file has no entries. Malformed lines are skipped.
    pub fn load(path: &Path) -> std::io::Result<KnownHosts> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        Ok(KnownHosts { path: path.to_path_buf(), entries: parse_known_hosts(&text) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pinned fingerprint of `host` (as `HOST:PORT`).
    pub fn get(&self, host: &str) -> Option<Fingerprint> {
        self.entries.iter().find(|(h, _)| h == host).map(|(_, fp)| *fp)
    }

    /// Pins `host` to `fp`, appending to the file (creating it and its directory).
    pub fn add(&mut self, host: &str, fp: Fingerprint) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        writeln!(f, "{host} {}", format_fingerprint(&fp))?;
        self.entries.push((host.to_string(), fp));
        Ok(())
    }
}

/// Parses the text of a known-hosts file into `(HOST:PORT, fingerprint)` pins, skipping
/// malformed lines. Public for the decoder fuzz targets.
pub fn parse_known_hosts(text: &str) -> Vec<(String, Fingerprint)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let host = parts.next()?;
            let fp = parse_fingerprint(parts.next()?)?;
            Some((host.to_string(), fp))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn can_round_trip_pins_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        let mut kh = KnownHosts::load(&path).unwrap();
        assert_eq!(kh.get("h:1"), None);
        kh.add("h:1", [7; 32]).unwrap();
        let again = KnownHosts::load(&path).unwrap();
        assert_eq!(again.get("h:1"), Some([7; 32]));
        assert_eq!(again.get("h:2"), None);
    }

    #[test]
    fn skips_malformed_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, "garbage\nh:1 SHA256:zz\n\n").unwrap();
        assert_eq!(KnownHosts::load(&path).unwrap().entries.len(), 0);
    }
}
