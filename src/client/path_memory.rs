//! `CONFIG_DIR/udp_paths`: the last path estimate of an upload to each server, the start hint
//! of the next upload to it (UDP-RATE-8). The sender validates the hint as careful resume
//! does (UDP-RATE-7), so a wrong or stale line costs at most one round trip at half its rate.
//!
//! One line per server: `HOST:PORT RATE MIN_RTT_US SAVED_AT`, the rate in datagram bytes per
//! second and `SAVED_AT` in seconds since the Unix epoch. The file is a cache: lines that do
//! not parse, lie outside the bounds or are older than [`PathEstimate::MAX_AGE`] are ignored,
//! at most [`MAX_ENTRIES`] servers are kept (the newest), a file larger than [`MAX_FILE_BYTES`]
//! is not read, and it is replaced whole through a temporary file. Failing to read or write it
//! only means a cold start.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::udp::rate::PathEstimate;

/// The file's name inside the client's config directory.
pub const FILE_NAME: &str = "udp_paths";
/// Servers remembered.
pub const MAX_ENTRIES: usize = 64;
/// A larger file is not read (it cannot have been written by us).
pub const MAX_FILE_BYTES: u64 = 16 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    server: String,
    estimate: PathEstimate,
    saved_at: u64,
}

/// The remembered estimates, keyed by the server as connected to (`HOST:PORT`).
#[derive(Debug, Clone)]
pub struct PathMemory {
    path: PathBuf,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn parse_line(line: &str, now: u64) -> Option<Entry> {
    let mut f = line.split_ascii_whitespace();
    let server = f.next()?;
    let rate = f.next()?.parse().ok()?;
    let min_rtt = Duration::from_micros(f.next()?.parse().ok()?);
    let saved_at: u64 = f.next()?.parse().ok()?;
    let estimate = PathEstimate { rate, min_rtt };
    let fresh = saved_at <= now && now - saved_at <= PathEstimate::MAX_AGE.as_secs();
    (f.next().is_none() && fresh && estimate.is_plausible() && server.len() <= 300).then(|| Entry {
        server: server.to_string(),
        estimate,
        saved_at,
    })
}

fn parse(text: &str, now: u64) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for e in text.lines().filter_map(|l| parse_line(l, now)) {
        entries.retain(|old| old.server != e.server);
        entries.push(e);
    }
    entries
}

impl PathMemory {
    /// The memory in `config_dir`.
    pub fn new(config_dir: &Path) -> PathMemory {
        PathMemory { path: config_dir.join(FILE_NAME) }
    }

    fn load(&self, now: u64) -> Vec<Entry> {
        let big = std::fs::metadata(&self.path).map_or(true, |m| m.len() > MAX_FILE_BYTES);
        if big {
            return Vec::new();
        }
        std::fs::read_to_string(&self.path).map(|t| parse(&t, now)).unwrap_or_default()
    }

    /// The estimate remembered for `server`, if any is fresh and plausible.
    pub fn recall(&self, server: &str) -> Option<PathEstimate> {
        self.load(now_secs()).into_iter().find(|e| e.server == server).map(|e| e.estimate)
    }

    /// Remembers `estimate` for `server`, replacing what was remembered for it.
    pub fn remember(&self, server: &str, estimate: PathEstimate) -> std::io::Result<()> {
        if !estimate.is_plausible() || server.len() > 300 || server.contains(char::is_whitespace) {
            return Ok(());
        }
        let now = now_secs();
        let mut entries = self.load(now);
        entries.retain(|e| e.server != server);
        entries.push(Entry { server: server.to_string(), estimate, saved_at: now });
        let skip = entries.len().saturating_sub(MAX_ENTRIES);
        let mut text = String::new();
        for e in &entries[skip..] {
            let us = e.estimate.min_rtt.as_micros();
            text.push_str(&format!("{} {} {us} {}\n", e.server, e.estimate.rate, e.saved_at));
        }
        let tmp = self.path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(rate: u64, ms: u64) -> PathEstimate {
        PathEstimate { rate, min_rtt: Duration::from_millis(ms) }
    }

    #[test]
    fn remembers_per_server_and_replaces_the_old_estimate() {
        let dir = tempfile::tempdir().unwrap();
        let m = PathMemory::new(dir.path());
        assert_eq!(m.recall("a:1"), None);
        m.remember("a:1", est(1_000_000, 20)).unwrap();
        m.remember("b:2", est(2_000_000, 30)).unwrap();
        m.remember("a:1", est(3_000_000, 25)).unwrap();
        assert_eq!(m.recall("a:1"), Some(est(3_000_000, 25)));
        assert_eq!(m.recall("b:2"), Some(est(2_000_000, 30)));
        assert_eq!(std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap().lines().count(), 2);
    }

    #[test]
    fn keeps_only_the_newest_servers() {
        let dir = tempfile::tempdir().unwrap();
        let m = PathMemory::new(dir.path());
        for i in 0..MAX_ENTRIES + 10 {
            m.remember(&format!("host{i}:7070"), est(1_000_000, 10)).unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().count(), MAX_ENTRIES);
        assert_eq!(m.recall("host0:7070"), None);
        assert!(m.recall(&format!("host{}:7070", MAX_ENTRIES + 9)).is_some());
    }

    #[test]
    fn ignores_lines_that_are_malformed_implausible_or_old() {
        let now = 1_000_000_000;
        let old = now - PathEstimate::MAX_AGE.as_secs() - 1;
        let text = format!(
            "ok:1 1000000 20000 {now}\nshort:1 1000000 20000\nrate:1 1 20000 {now}\nrtt:1 1000000 99000000 {now}\n\
             old:1 1000000 20000 {old}\nfuture:1 1000000 20000 {}\nextra:1 1000000 20000 {now} x\nnum:1 -5 20000 {now}\n",
            now + 10
        );
        let parsed = parse(&text, now);
        assert_eq!(parsed.iter().map(|e| e.server.as_str()).collect::<Vec<_>>(), ["ok:1"]);
        assert_eq!(parsed[0].estimate, est(1_000_000, 20));
    }

    #[test]
    fn does_not_read_an_oversized_file_and_survives_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let m = PathMemory::new(dir.path());
        let line = format!("a:1 1000000 20000 {}\n", now_secs());
        std::fs::write(dir.path().join(FILE_NAME), line.repeat(MAX_FILE_BYTES as usize / line.len() + 1)).unwrap();
        assert_eq!(m.recall("a:1"), None);
        let gone = PathMemory::new(&dir.path().join("missing"));
        assert_eq!(gone.recall("a:1"), None);
        assert!(gone.remember("a:1", est(1_000_000, 20)).is_err());
    }
}
