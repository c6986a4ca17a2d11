//! Transfer progress on stderr (an indicatif bar in a terminal, or JSON lines), and a record of
//! how far the running transfer got, for the message after Ctrl-C or a lost connection.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{BinaryBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use xfer::transfer::{Progress, ProgressFn};

use crate::args::ProgressArg;
use crate::output::transport_name;

/// Where the transfer in flight stands: label, bytes in place, total.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    pub label: String,
    pub done: u64,
    pub total: u64,
}

/// Shared record of the transfer in flight (None between transfers).
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<Option<Kept>>>);

impl InFlight {
    fn update(&self, f: impl FnOnce(&mut Kept)) {
        if let Some(k) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            f(k);
        }
    }

    fn begin(&self, label: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Kept { label: label.into(), ..Kept::default() });
    }

    pub fn end(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// What was kept, as a sentence, if a transfer was under way.
    pub fn describe(&self) -> Option<String> {
        let k = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        Some(format!(
            "{}: {} of {} kept; run the same command again to resume",
            k.label,
            BinaryBytes(k.done),
            BinaryBytes(k.total)
        ))
    }
}

/// Starts showing one transfer; returns the bar (to clear) and the callback for the library.
pub fn start(label: &str, mode: ProgressArg, quiet: bool, in_flight: &InFlight) -> (ProgressBar, ProgressFn) {
    in_flight.begin(label);
    let bar = if quiet || mode != ProgressArg::Auto || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        terminal_bar(label)
    };
    let json = (mode == ProgressArg::Json && !quiet).then(|| JsonLines::new(label));
    let (b, label, record) = (bar.clone(), label.to_string(), in_flight.clone());
    let f: ProgressFn = Arc::new(move |p| {
        match p {
            Progress::Start { total, offset } => record.update(|k| (k.total, k.done) = (total, offset)),
            Progress::Advance { done } => record.update(|k| k.done = done),
            _ => {}
        }
        if let Some(j) = &json {
            j.emit(p);
        }
        show_on_bar(&b, &label, p);
    });
    (bar, f)
}

/// Progress of a transfer too short for a bar of its own (a small upload sent ahead,
/// CTRL-PUT-8): JSON lines with `--progress json`, else nothing; the total bar shows the rest.
pub fn lines_only(label: &str, mode: ProgressArg, quiet: bool) -> ProgressFn {
    let json = (mode == ProgressArg::Json && !quiet).then(|| JsonLines::new(label));
    Arc::new(move |p| {
        if let Some(j) = &json {
            j.emit(p);
        }
    })
}

fn terminal_bar(label: &str) -> ProgressBar {
    let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    b.set_style(style);
    b.enable_steady_tick(Duration::from_millis(200));
    b.set_prefix(label.to_string());
    b
}

fn show_on_bar(b: &ProgressBar, label: &str, p: Progress) {
    match p {
        Progress::Via(t) => {
            b.set_prefix(format!("{label} [{}]", transport_name(t)));
            tracing::info!("data goes over {}", transport_name(t));
        }
        Progress::Start { total, offset } => {
            b.set_length(total);
            b.set_position(offset);
            b.reset_eta();
            if offset > 0 {
                b.set_message(format!("(resumed at {})", BinaryBytes(offset)));
            }
        }
        Progress::Advance { done } => b.set_position(done),
        Progress::Verifying => b.set_message("verifying md5"),
        Progress::Finish => b.finish_and_clear(),
    }
}

/// `--progress json`: one JSON object per line on stderr; advances at most every 100 ms.
struct JsonLines {
    label: String,
    state: Mutex<(Instant, u64)>,
}

impl JsonLines {
    fn new(label: &str) -> JsonLines {
        JsonLines { label: label.into(), state: Mutex::new((Instant::now() - Duration::from_secs(1), 0)) }
    }

    fn emit(&self, p: Progress) {
        let name = &self.label;
        let v = match p {
            Progress::Via(t) => serde_json::json!({"event": "via", "name": name, "transport": transport_name(t)}),
            Progress::Start { total, offset } => {
                self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = total;
                serde_json::json!({"event": "start", "name": name, "total": total, "offset": offset})
            }
            Progress::Advance { done } => {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if st.0.elapsed() < Duration::from_millis(100) && done < st.1 {
                    return;
                }
                st.0 = Instant::now();
                serde_json::json!({"event": "progress", "name": name, "done": done, "total": st.1})
            }
            Progress::Verifying => serde_json::json!({"event": "verifying", "name": name}),
            Progress::Finish => serde_json::json!({"event": "done", "name": name}),
        };
        let _ = writeln!(std::io::stderr().lock(), "{v}");
    }
}
