//! `xfer shell`: an interactive prompt running the same commands as the CLI, plus `lcd`,
//! `lls`, `lpwd`, `help` and `exit`. History is kept in the config directory; Tab completes
//! commands and paths; Ctrl-C cancels the running command; a lost connection is made again and
//! the command run once more. Fed from a pipe, the shell stops at the first failure.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use clap::{CommandFactory, Parser};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::Editor;
use xfer::config::client_config_dir;

use crate::args::{Command, Global};
use crate::completion::ShellHelper;
use crate::error::CliError;
use crate::remote::{exec_interruptible, Ui};
use crate::session::{password, Session, Target};

/// One shell line, parsed with the same grammar as the command line.
#[derive(Parser, Debug)]
#[command(no_binary_name = true, disable_version_flag = true, name = "", override_usage = "COMMAND [ARGS]")]
struct Line {
    #[command(subcommand)]
    command: Command,
}

const LOCAL_HELP: &str = "  lcd DIR   change the local directory\n  lls [DIR] list a local directory\n  \
                          lpwd      print the local directory\n  exit      leave";

pub fn run(g: &Global, keep_going: bool) -> Result<(), CliError> {
    let target = Target::resolve(g, None)?;
    let password = password(&target.user)?;
    let ui = Ui::new(g);
    let rt = crate::runtime()?;
    let session = Arc::new(Mutex::new(Session::new(target.clone(), password)));
    {
        let mut s = lock(&session);
        rt.block_on(async { s.client().await.map(|_| ()) })?;
    }
    let mut editor: Editor<ShellHelper, FileHistory> =
        Editor::new().map_err(|e| CliError::general(format!("cannot start the line editor: {e}")))?;
    editor.set_helper(Some(ShellHelper::new(session.clone(), rt.handle().clone())));
    let history = client_config_dir().join("history");
    let _ = editor.load_history(&history);
    ui.note(format!("connected to {} as {}; type help for commands", target.server.addr(), target.user));
    let batch = !std::io::stdin().is_terminal();
    let mut first_failure: Option<CliError> = None;
    loop {
        let cwd = lock(&session).cwd.clone().unwrap_or_else(|| "/".into());
        let line = match editor.readline(&format!("xfer:{cwd}> ")) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(CliError::general(e.to_string())),
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
            let _ = editor.save_history(&history);
        }
        let result = match run_line(&rt, &session, &line, &ui) {
            Step::Exit => break,
            Step::Done(r) => r,
        };
        if let Err(e) = result {
            if e.broken_pipe {
                break;
            }
            diag!("xfer: {e}");
            if batch && !keep_going {
                first_failure = Some(e);
                break;
            }
            first_failure.get_or_insert(e);
        }
    }
    rt.block_on(lock(&session).close());
    match first_failure {
        Some(e) if batch => Err(CliError { message: String::new(), ..e }),
        _ => Ok(()),
    }
}

fn lock(s: &Arc<Mutex<Session>>) -> std::sync::MutexGuard<'_, Session> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

enum Step {
    Exit,
    Done(Result<(), CliError>),
}

/// Runs one line: a local command, or a remote one (run again once after a lost connection).
fn run_line(rt: &tokio::runtime::Runtime, session: &Arc<Mutex<Session>>, line: &str, ui: &Ui) -> Step {
    let Some(words) = shlex::split(line) else {
        return Step::Done(Err(CliError::usage("unbalanced quotes")));
    };
    let Some(first) = words.first() else { return Step::Done(Ok(())) };
    match first.as_str() {
        "exit" | "quit" | "bye" => return Step::Exit,
        "help" | "?" => {
            let text = format!("{}\n{LOCAL_HELP}", Line::command().render_help());
            return Step::Done(crate::output::line(text));
        }
        "lpwd" | "lcd" | "lls" => return Step::Done(local_command(&words)),
        _ => {}
    }
    let mut command = match Line::try_parse_from(&words) {
        Ok(l) => l.command,
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            return Step::Done(Err(CliError::usage(
                text.lines().next().unwrap_or("bad command").trim_start_matches("error: "),
            )));
        }
        Err(e) => return Step::Done(crate::output::line(e.render())),
    };
    match crate::transfers::take_login(&mut command) {
        Ok(None) => {}
        Ok(Some(_)) => return Step::Done(Err(CliError::usage("the shell is already connected; give a plain path"))),
        Err(e) => return Step::Done(Err(e)),
    }
    let mut s = lock(session);
    let result = rt.block_on(exec_interruptible(&mut s, command.clone(), ui));
    let result = match result {
        Err(e) if e.is_connection_loss() => {
            ui.note(format!("{e}; reconnecting"));
            rt.block_on(exec_interruptible(&mut s, command, ui))
        }
        other => other,
    };
    Step::Done(result)
}

/// `lcd`, `lls` and `lpwd`.
fn local_command(words: &[String]) -> Result<(), CliError> {
    let arg = words.get(1).map(String::as_str).unwrap_or(".");
    match words[0].as_str() {
        "lpwd" => {
            let dir = std::env::current_dir().map_err(|e| CliError::local(std::path::Path::new("."), e))?;
            crate::output::line(dir.display())
        }
        "lcd" => std::env::set_current_dir(arg).map_err(|e| CliError::local(std::path::Path::new(arg), e)),
        _ => {
            let dir = std::path::Path::new(arg);
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| CliError::local(dir, e))?
                .filter_map(|e| e.ok())
                .map(|e| {
                    let slash = if e.file_type().is_ok_and(|t| t.is_dir()) { "/" } else { "" };
                    format!("{}{slash}", crate::escape::terminal_safe(&e.file_name().to_string_lossy()))
                })
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            names.into_iter().try_for_each(crate::output::line)
        }
    }
}
