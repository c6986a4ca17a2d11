//! Terminal rendering: progress bars, listings, summaries.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use xfer::proto::{Entry, EntryKind, Transport};
use xfer::size::format_size;
use xfer::transfer::{Progress, ProgressFn};

/// A progress bar on stderr for one transfer; hidden when `quiet` or stderr is not a terminal.
pub fn progress_bar(label: &str, quiet: bool) -> (ProgressBar, ProgressFn) {
    let bar = if quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        b.set_style(style);
        b.enable_steady_tick(Duration::from_millis(200));
        b
    };
    bar.set_prefix(label.to_string());
    let b = bar.clone();
    let label = label.to_string();
    let f: ProgressFn = Arc::new(move |p| match p {
        Progress::Via(t) => {
            b.set_prefix(format!("{label} [{}]", transport_name(t)));
            tracing::info!("data goes over {}", transport_name(t));
        }
        Progress::Start { total, offset } => {
            b.set_length(total);
            b.set_position(offset);
            b.reset_eta();
            if offset > 0 {
                b.set_message(format!("(resumed at {})", format_size(offset)));
            }
        }
        Progress::Advance { done } => b.set_position(done),
        Progress::Verifying => b.set_message("verifying md5"),
        Progress::Finish => b.finish_and_clear(),
    });
    (bar, f)
}

/// Lower-case name of a transport, as on the command line.
pub fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Udp => "udp",
    }
}

/// Formats seconds since the epoch as `YYYY-MM-DD HH:MM` (UTC).
pub fn format_mtime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rem / 3600, rem % 3600 / 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn kind_char(kind: EntryKind) -> char {
    match kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Other => '?',
    }
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "other",
    }
}

/// Renders a listing: names (dirs with a trailing '/'), `-l` long lines, or JSON.
pub fn listing(entries: &[Entry], long: bool, json: bool) -> String {
    if json {
        let rows: Vec<_> = entries
            .iter()
            .map(|e| serde_json::json!({"name": e.name, "type": kind_name(e.kind), "size": e.size, "mtime": e.mtime}))
            .collect();
        return serde_json::Value::Array(rows).to_string();
    }
    let mut out = String::new();
    for e in entries {
        let slash = if e.kind == EntryKind::Dir { "/" } else { "" };
        if long {
            out.push_str(&format!(
                "{} {:>12} {} {}{slash}\n",
                kind_char(e.kind),
                e.size,
                format_mtime(e.mtime),
                terminal_safe(&e.name)
            ));
        } else {
            out.push_str(&format!("{}{slash}\n", terminal_safe(&e.name)));
        }
    }
    out.trim_end().to_string()
}

/// One `stat` line.
pub fn stat_line(e: &Entry) -> String {
    format!("{} {} {} bytes, modified {} UTC", terminal_safe(&e.name), kind_name(e.kind), e.size, format_mtime(e.mtime))
}

/// `s` with every character that could move the cursor, change colours, ring the bell or
/// break the line (C0 and C1 controls, DEL, Unicode line and bidi controls) and the backslash
/// escaped as Rust escapes, e.g. `\u{1b}`: names from the server are shown, never obeyed.
/// `--json` output keeps exact names instead.
pub fn terminal_safe(s: &str) -> String {
    if !s.chars().any(xfer::server::needs_escape) {
        return s.to_string();
    }
    s.chars()
        .map(|c| if xfer::server::needs_escape(c) { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters_in_listings_but_not_in_json() {
        let hostile = "a\x1b]0;owned\x07\nb\u{9b}2J\\";
        let e = Entry { name: hostile.into(), kind: EntryKind::File, size: 1, mtime: 0 };
        for shown in [listing(std::slice::from_ref(&e), false, false), listing(std::slice::from_ref(&e), true, false)] {
            assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
            assert!(shown.contains("a\\u{1b}]0;owned\\u{7}\\nb\\u{9b}2J\\\\"), "{shown:?}");
        }
        assert!(!stat_line(&e).chars().any(|c| c.is_control()));
        let json: serde_json::Value = serde_json::from_str(&listing(&[e], false, true)).unwrap();
        assert_eq!(json[0]["name"], hostile, "--json keeps the exact name");
        assert_eq!(terminal_safe("plain é/ü"), "plain é/ü");
    }

    #[test]
    fn formats_epoch_dates() {
        assert_eq!(format_mtime(0), "1970-01-01 00:00");
        assert_eq!(format_mtime(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_mtime(1_795_000_000), "2026-11-18 11:06");
    }
}
