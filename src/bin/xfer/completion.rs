//! Tab completion for the shell: command names, local paths for the local side of a command,
//! remote paths (a listing of the typed directory) for the rest.

use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};
use xfer::proto::EntryKind;

use crate::session::Session;

/// Words the shell understands, for completing the first word.
pub const COMMANDS: &[&str] = &[
    "cd", "cp", "df", "exit", "get", "help", "lcd", "lls", "lpwd", "ls", "mkdir", "mv", "put", "pwd", "quit", "rm",
    "rmdir", "stat", "sum", "sync",
];

pub struct ShellHelper {
    pub session: Arc<Mutex<Session>>,
    pub runtime: tokio::runtime::Handle,
    files: FilenameCompleter,
}

impl ShellHelper {
    pub fn new(session: Arc<Mutex<Session>>, runtime: tokio::runtime::Handle) -> ShellHelper {
        ShellHelper { session, runtime, files: FilenameCompleter::new() }
    }

    /// Remote names in the directory part of `word` that start with its last part.
    fn remote(&self, word: &str) -> Vec<Pair> {
        let (dir, prefix) = match word.rfind('/') {
            Some(i) => (&word[..=i], &word[i + 1..]),
            None => ("", word),
        };
        let Ok(mut session) = self.session.try_lock() else { return Vec::new() };
        if !session.is_connected() {
            return Vec::new();
        }
        let listing = self.runtime.block_on(async {
            match session.client().await {
                Ok(c) => c.list(dir).await.ok(),
                Err(_) => None,
            }
        });
        let mut out: Vec<Pair> = listing
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.name.starts_with(prefix) && !e.name.chars().any(char::is_control))
            .map(|e| {
                let slash = if e.kind == EntryKind::Dir { "/" } else { "" };
                let name = e.name.replace('\\', "\\\\").replace(' ', "\\ ");
                Pair { display: format!("{}{slash}", e.name), replacement: format!("{name}{slash}") }
            })
            .collect();
        out.sort_by(|a, b| a.display.cmp(&b.display));
        out
    }
}

/// Whether argument `index` (1-based) of `command` is a local path: the sources of put, the
/// target of get, and the arguments of the local commands.
fn is_local_arg(command: &str, index: usize) -> bool {
    match command {
        "lcd" | "lls" => true,
        "put" => index == 1,
        "get" => index >= 2,
        _ => false,
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        let start = head.rfind(' ').map_or(0, |i| i + 1);
        let word = &head[start..];
        let words: Vec<&str> = head.split_whitespace().collect();
        if start == 0 {
            let cands = COMMANDS
                .iter()
                .filter(|c| c.starts_with(word))
                .map(|c| Pair { display: c.to_string(), replacement: format!("{c} ") })
                .collect();
            return Ok((0, cands));
        }
        let index = if word.is_empty() { words.len() } else { words.len() - 1 };
        if word.starts_with('-') {
            return Ok((start, Vec::new()));
        }
        if is_local_arg(words[0], index) {
            return self.files.complete(line, pos, ctx);
        }
        let prefix_len = word.rfind('/').map_or(0, |i| i + 1);
        Ok((start + prefix_len, self.remote(word)))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}
