//! `xfer shell`: an interactive prompt with history running the same commands as the CLI,
//! plus `lcd`, `lpwd`, `help` and `exit`.

use clap::{CommandFactory, Parser};
use rustyline::error::ReadlineError;
use xfer::client::Client;
use xfer::config::client_config_dir;

use crate::args::{Command, Global};
use crate::remote::{exec, password, Target, Ui};

/// One shell line, parsed with the same grammar as the command line.
#[derive(Parser, Debug)]
#[command(no_binary_name = true, disable_version_flag = true, name = "", override_usage = "COMMAND [ARGS]")]
struct Line {
    #[command(subcommand)]
    command: Command,
}

pub fn run(g: &Global) -> Result<(), String> {
    let target = Target::resolve(g)?;
    let password = password(&target.user)?;
    let ui = Ui { quiet: g.quiet, verbose: g.verbose };
    let rt = crate::runtime()?;
    let mut client = rt.block_on(target.login(&password))?;
    let mut cwd = rt.block_on(client.pwd()).map_err(|e| e.to_string())?;
    let mut editor = rustyline::DefaultEditor::new().map_err(|e| e.to_string())?;
    let history = client_config_dir().join("history");
    let _ = editor.load_history(&history);
    println!("connected to {} as {}; type help for commands", target.server, target.user);
    loop {
        let line = match editor.readline(&format!("xfer:{cwd}> ")) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.to_string()),
        };
        let words = match split_words(&line) {
            Ok(w) if w.is_empty() => continue,
            Ok(w) => w,
            Err(e) => {
                eprintln!("xfer: {e}");
                continue;
            }
        };
        let _ = editor.add_history_entry(line.as_str());
        match words[0].as_str() {
            "exit" | "quit" | "bye" => break,
            "help" | "?" => {
                println!("{}\n  lcd DIR   change the local directory\n  lpwd      print the local directory\n  exit      leave", Line::command().render_help());
                continue;
            }
            "lpwd" => {
                println!("{}", std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default());
                continue;
            }
            "lcd" => {
                if let Err(e) = std::env::set_current_dir(words.get(1).map(String::as_str).unwrap_or(".")) {
                    eprintln!("xfer: lcd: {e}");
                }
                continue;
            }
            _ => {}
        }
        let command = match Line::try_parse_from(&words) {
            Ok(l) => l.command,
            Err(e) => {
                let _ = e.print();
                continue;
            }
        };
        if !client.is_usable() {
            client = reconnect(&rt, &target, &password, &cwd)?;
        }
        let is_cd = matches!(command, Command::Cd { .. });
        match rt.block_on(exec(&mut client, command, ui)) {
            Ok(()) if is_cd => cwd = rt.block_on(client.pwd()).unwrap_or(cwd),
            Ok(()) => {}
            Err(e) => eprintln!("xfer: {e}"),
        }
    }
    let _ = editor.save_history(&history);
    rt.block_on(client.bye());
    Ok(())
}

/// Logs in again after a transfer left the connection unusable, restoring the directory.
fn reconnect(rt: &tokio::runtime::Runtime, target: &Target, password: &str, cwd: &str) -> Result<Client, String> {
    let mut client = rt.block_on(target.login(password))?;
    rt.block_on(client.cd(cwd)).map_err(|e| e.to_string())?;
    Ok(client)
}

/// Splits a line into words, honouring single quotes, double quotes and backslash escapes.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                cur.push(chars.next().ok_or("trailing backslash")?);
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn splits_quoted_and_escaped_words() {
        assert_eq!(
            split_words(r#"put "my file.txt" 'dir/x y' a\ b"#).unwrap(),
            ["put", "my file.txt", "dir/x y", "a b"]
        );
        assert_eq!(split_words("  ls   -l ").unwrap(), ["ls", "-l"]);
        assert_eq!(split_words(r#"get """#).unwrap(), ["get", ""]);
        assert!(split_words("get 'open").is_err());
    }
}
