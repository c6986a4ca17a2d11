//! The audit trail (OPS-AUDIT-1) and log hygiene (OPS-LOG-1, OPS-LOG-2).
//!
//! Every state change is one `tracing` event with the target `xfer::audit` and the fields
//! `event`, `user`, `peer`, `path` and `result`. Names and paths come from peers, so they are
//! logged through [`Clean`], which escapes anything that could forge a line or drive a
//! terminal. Events a peer can repeat at will without logging in (failed and throttled
//! logins, refused connections) pass a [`LineBudget`] first.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Longest text logged for one peer-supplied value; the rest is cut with `…`.
const MAX_LOGGED_CHARS: usize = 256;

/// Displays a peer-supplied string with control characters (C0, DEL, C1), backslashes and
/// Unicode line and bidi controls escaped, cut at 256 characters.
pub(crate) struct Clean<'a>(pub &'a str);

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, c) in self.0.chars().enumerate() {
            if n == MAX_LOGGED_CHARS {
                return f.write_str("…");
            }
            if needs_escape(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Characters that must not reach a log line or a terminal as they are.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Escapes `s` as [`Clean`] does, into a `String`.
pub fn clean(s: &str) -> String {
    Clean(s).to_string()
}

/// Per-kind budget of log lines: `burst` lines, then one more per `every`; lines over the
/// budget are counted and reported with the next line that passes. Pure: takes `now`.
#[derive(Debug)]
pub(crate) struct LineBudget {
    burst: u32,
    every: Duration,
    kinds: HashMap<&'static str, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    at: Instant,
    suppressed: u64,
}

impl LineBudget {
    pub fn new(burst: u32, every: Duration) -> LineBudget {
        LineBudget { burst: burst.max(1), every: every.max(Duration::from_millis(1)), kinds: HashMap::new() }
    }

    /// `Some(n)` if a line of `kind` may be written now, `n` being the lines of that kind
    /// dropped since the last one written; `None` if this line must be dropped.
    pub fn admit(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        let (burst, every) = (self.burst, self.every);
        let b = self.kinds.entry(kind).or_insert(Bucket { tokens: burst, at: now, suppressed: 0 });
        let earned = now.saturating_duration_since(b.at).as_nanos() / every.as_nanos();
        if earned > 0 {
            b.tokens = (u128::from(b.tokens) + earned).min(u128::from(burst)) as u32;
            b.at = now;
        }
        if b.tokens == 0 {
            b.suppressed += 1;
            return None;
        }
        b.tokens -= 1;
        Some(std::mem::take(&mut b.suppressed))
    }
}

impl Default for LineBudget {
    /// 20 lines at once, then 10 a second, per kind.
    fn default() -> Self {
        LineBudget::new(20, Duration::from_millis(100))
    }
}

/// One audit line: what changed, for whom, from where, and how it ended.
pub(crate) struct Audit<'a> {
    pub event: &'static str,
    /// The line's message; the event name unless set.
    pub message: &'static str,
    pub user: &'a str,
    pub peer: std::net::SocketAddr,
    pub path: &'a str,
    pub result: String,
    /// Second path of a rename.
    pub to: Option<&'a str>,
    pub bytes: Option<u64>,
    pub transport: Option<&'static str>,
}

impl<'a> Audit<'a> {
    pub fn new(event: &'static str, user: &'a str, peer: std::net::SocketAddr, path: &'a str) -> Audit<'a> {
        Audit { event, message: event, user, peer, path, result: "ok".into(), to: None, bytes: None, transport: None }
    }

    pub fn result(mut self, result: impl Into<String>) -> Self {
        self.result = result.into();
        self
    }

    pub fn message(mut self, message: &'static str) -> Self {
        self.message = message;
        self
    }

    /// Writes the line (target `xfer::audit`, level info).
    pub fn emit(&self) {
        tracing::info!(
            target: "xfer::audit",
            event = self.event,
            user = %Clean(self.user),
            peer = %self.peer,
            path = %Clean(self.path),
            to = self.to.map(clean).as_deref(),
            result = %self.result,
            bytes = self.bytes,
            transport = self.transport,
            "{}",
            self.message
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_newlines_ansi_and_c1_codes() {
        let forged = "bob\n2026-01-01T00:00:00Z  INFO logged in user=root\x1b[2J\u{9b}31m\u{7}\\";
        let out = clean(forged);
        assert!(!out.chars().any(|c| c.is_control()), "{out}");
        assert_eq!(out, "bob\\n2026-01-01T00:00:00Z  INFO logged in user=root\\u{1b}[2J\\u{9b}31m\\u{7}\\\\");
        assert_eq!(clean("ordinary/path é"), "ordinary/path é");
        assert_eq!(clean("a\u{202e}b"), "a\\u{202e}b");
    }

    #[test]
    fn cuts_long_values() {
        let long = "x".repeat(1000);
        assert_eq!(clean(&long).chars().count(), MAX_LOGGED_CHARS + 1);
    }

    #[test]
    fn budget_drops_floods_and_reports_the_count() {
        let mut b = LineBudget::new(3, Duration::from_secs(1));
        let now = Instant::now();
        let out: Vec<_> = (0..10).map(|_| b.admit("login", now)).collect();
        assert_eq!(out[..4], [Some(0), Some(0), Some(0), None]);
        assert_eq!(out.iter().filter(|o| o.is_none()).count(), 7);
        assert_eq!(b.admit("other", now), Some(0), "kinds have separate budgets");
        assert_eq!(b.admit("login", now + Duration::from_secs(1)), Some(7));
        assert_eq!(b.admit("login", now + Duration::from_secs(1)), None);
    }
}
