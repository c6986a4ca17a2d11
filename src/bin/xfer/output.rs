//! Rendering results: listings, stat lines, JSON values, and writing them to stdout without
//! panicking when stdout goes away.

use std::io::Write;

use indicatif::BinaryBytes;
use xfer::proto::{Entry, EntryKind, Transport};

use crate::error::CliError;
use crate::escape::terminal_safe;

/// Writes `text` and a newline to stdout; a closed pipe becomes a quiet [`CliError`].
pub fn line(text: impl std::fmt::Display) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).map_err(CliError::stdout)
}

/// Writes one JSON value as a line on stdout.
pub fn json(v: serde_json::Value) -> Result<(), CliError> {
    line(v)
}

/// Lower-case name of a transport, as on the command line.
pub fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Udp => "udp",
    }
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM ZONE` in the local time zone (`TZ` honoured).
pub fn format_mtime(secs: i64) -> String {
    match jiff::Timestamp::from_second(secs) {
        Ok(ts) => ts.to_zoned_datetime(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M %Z").to_string(),
        Err(_) => format!("@{secs}"),
    }
}

fn kind_char(kind: EntryKind) -> char {
    match kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Other => '?',
    }
}

pub fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "other",
    }
}

/// How `ls` shows a listing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListStyle {
    pub long: bool,
    pub human: bool,
    pub by_time: bool,
    pub by_size: bool,
    pub reverse: bool,
    pub all: bool,
}

/// Filters (dotfiles and partials need `all`) and sorts entries: by name, or newest or largest
/// first, ties by name; `reverse` flips the result.
pub fn arrange(mut entries: Vec<Entry>, style: ListStyle) -> Vec<Entry> {
    if !style.all {
        entries.retain(|e| !e.name.starts_with('.'));
    }
    entries.sort_by(|a, b| {
        let key = if style.by_time {
            b.mtime.cmp(&a.mtime)
        } else if style.by_size {
            b.size.cmp(&a.size)
        } else {
            std::cmp::Ordering::Equal
        };
        key.then_with(|| a.name.cmp(&b.name))
    });
    if style.reverse {
        entries.reverse();
    }
    entries
}

/// One entry as JSON, with its exact name.
pub fn entry_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({"name": e.name, "type": kind_name(e.kind), "size": e.size, "mtime": e.mtime})
}

/// One listing line: the name (dirs with a trailing '/'), or a long line with `-l`.
pub fn listing_line(e: &Entry, style: ListStyle) -> String {
    let slash = if e.kind == EntryKind::Dir { "/" } else { "" };
    let name = terminal_safe(&e.name);
    if !style.long {
        return format!("{name}{slash}");
    }
    let size = if style.human { BinaryBytes(e.size).to_string() } else { e.size.to_string() };
    format!("{} {size:>12} {} {name}{slash}", kind_char(e.kind), format_mtime(e.mtime))
}

/// One `stat` line.
pub fn stat_line(e: &Entry) -> String {
    format!("{} {} {} bytes, modified {}", terminal_safe(&e.name), kind_name(e.kind), e.size, format_mtime(e.mtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, size: u64, mtime: i64) -> Entry {
        Entry { name: name.into(), kind: EntryKind::File, size, mtime }
    }

    #[test]
    fn sorts_by_name_time_and_size_and_reverses() {
        let es = vec![entry("b", 1, 30), entry("a", 3, 10), entry("c", 2, 20), entry(".h", 9, 99)];
        let names = |s: ListStyle| arrange(es.clone(), s).into_iter().map(|e| e.name).collect::<Vec<_>>();
        assert_eq!(names(ListStyle::default()), ["a", "b", "c"]);
        assert_eq!(names(ListStyle { by_time: true, ..Default::default() }), ["b", "c", "a"]);
        assert_eq!(names(ListStyle { by_size: true, ..Default::default() }), ["a", "c", "b"]);
        assert_eq!(names(ListStyle { by_size: true, reverse: true, ..Default::default() }), ["b", "c", "a"]);
        assert_eq!(names(ListStyle { all: true, ..Default::default() }), [".h", "a", "b", "c"]);
    }

    #[test]
    fn long_lines_show_human_sizes_and_escaped_names() {
        let style = ListStyle { long: true, human: true, ..Default::default() };
        let l = listing_line(&entry("x\x1b]0;pwned\x07", 1536, 0), style);
        assert!(l.contains("1.50 KiB"), "{l}");
        assert!(l.ends_with("x\\e]0;pwned\\a"), "{l}");
    }
}
