//! Names made safe for a terminal: control characters (C0, DEL, C1) and backslashes are written
//! as escapes, so a remote name can neither move the cursor nor inject a terminal sequence.

use std::fmt::Write;

/// `name` with `\\`, `\n`, `\t`, `\r`, `\e`, `\a` and `\xNN` / `\u{NN}` escapes for the rest.
pub fn terminal_safe(name: &str) -> String {
    if !name.chars().any(needs_escape) {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            '\x07' => out.push_str("\\a"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The same characters the server escapes in its log (controls, backslash, line and bidi
/// controls).
fn needs_escape(c: char) -> bool {
    xfer::server::needs_escape(c)
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn escapes_control_characters_and_keeps_the_rest() {
        assert_eq!(terminal_safe("plain name.txt"), "plain name.txt");
        assert_eq!(terminal_safe("a\x1b[31mred"), "a\\e[31mred");
        assert_eq!(terminal_safe("bell\x07"), "bell\\a");
        assert_eq!(terminal_safe("two\nlines"), "two\\nlines");
        assert_eq!(terminal_safe("c1\u{9b}2J"), "c1\\u{9b}2J");
        assert_eq!(terminal_safe("del\x7f"), "del\\x7f");
        assert_eq!(terminal_safe("back\\slash"), "back\\\\slash");
        assert_eq!(terminal_safe("ünïcödé"), "ünïcödé");
    }
}
