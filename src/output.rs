//! The only place that prints. Data (tables, JSON, `DEPLOYED_…=`) goes to stdout; steps,
//! progress and messages for people go to stderr, so `--json` and pipes stay clean.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

const RULE: &str = "════════════════════════════════════════════════════════════";

#[derive(Clone, Debug)]
pub struct Printer {
    tty: bool,
}

impl Printer {
    pub fn new() -> Printer {
        Printer {
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn banner(&self, title: &str) {
        eprintln!("{RULE}\n{title}\n{RULE}\n");
    }

    pub fn step(&self, n: usize, total: usize, what: &str) {
        eprintln!("[{n}/{total}] {what}...");
    }

    pub fn ok(&self, what: &str) {
        eprintln!("✓ {what}");
    }

    pub fn fail(&self, what: &str) {
        eprintln!("✗ {what}");
    }

    pub fn warn(&self, what: &str) {
        eprintln!("! {what}");
    }

    pub fn info(&self, what: &str) {
        eprintln!("   {what}");
    }

    /// A status line that replaces itself on a terminal; elsewhere (logs, cron mail) it is
    /// printed only when `log` is true, so a long watch writes a line every few seconds,
    /// not one a second.
    pub fn live_line(&self, line: &str, log: bool) {
        if self.tty {
            eprint!("\r\x1b[2K   {line}");
            let _ = std::io::stderr().flush();
        } else if log {
            eprintln!("   {line}");
        }
    }

    /// End a run of `live_line`s (on a terminal, move to a fresh line).
    pub fn end_live_line(&self) {
        if self.tty {
            eprintln!();
        }
    }

    pub fn blank(&self) {
        eprintln!();
    }

    /// Free text for people (e.g. a table of recent releases after a deploy) on stderr.
    pub fn text(&self, what: &str) {
        eprint!("{what}");
    }

    /// Data on stdout. A closed pipe is not an error worth a panic.
    pub fn out(&self, line: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// Data on stdout exactly as given (a completion script, the man page).
    pub fn raw(&self, data: &[u8]) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(data);
        let _ = stdout.flush();
    }

    pub fn json<T: serde::Serialize>(&self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(s) => self.out(&s),
            Err(e) => eprintln!("error: cannot encode JSON: {e}"),
        }
    }

    /// Show a long-running child's output: a spinner with the latest line on a terminal,
    /// every line indented otherwise (logs, CI, cron mail).
    pub fn progress(&self, label: &str) -> Progress {
        if self.tty {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("   {spinner} {elapsed:>3} {prefix}: {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            Progress { bar: Some(bar) }
        } else {
            Progress { bar: None }
        }
    }
}

impl Default for Printer {
    fn default() -> Printer {
        Printer::new()
    }
}

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(line.to_string()),
            None => eprintln!("   │ {line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `1.2 MB`, in decimal units as `docker images` shows them.
pub fn human_size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// `1.2s`, `850ms`, `2m03s`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// A plain left-aligned table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(cell);
            if i + 1 < n {
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The first 12 hex digits of an image or container id, as `docker` shows them.
pub fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}
