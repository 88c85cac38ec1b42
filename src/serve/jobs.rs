//! The actions a page asks for, run as the CLI runs them: this same binary, with the
//! serve process's own app flags, the action's command line, and `--actor web` (so the
//! lock and the history say `web`). Nothing about an action is re-implemented here: a
//! deploy from the page *is* `dockmaster deploy`, and takes the CLI's lock the same way.
//!
//! A job's output (the command's stdout and stderr, line by line) is kept in memory for
//! the job page and its event stream; the last [`KEPT`] jobs are kept. One job runs at a
//! time; the lock says no to everyone else.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::rc::Rc;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use crate::cli::GlobalArgs;

/// Finished jobs kept for their pages.
const KEPT: usize = 20;

/// A job's output lines kept (a deploy prints a few dozen; a runaway build log is cut).
const MAX_LINES: usize = 5000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Succeeded,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
        }
    }
}

/// One action and what it printed.
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: u64,
    /// `deploy`, `rollback`, `prune` or `mark`.
    pub command: String,
    /// The command line after the app flags, e.g. `["rollback", "2026.01.09-def4567", "--yes"]`.
    pub args: Vec<String>,
    pub started_at: String,
    pub state: State,
    /// The command's exit code, once it ended (3: another operation held the lock).
    pub exit_code: Option<i32>,
    pub output: Vec<String>,
    /// Output lines dropped from the front past [`MAX_LINES`].
    #[serde(skip)]
    pub dropped: usize,
}

pub type Shared = Rc<RefCell<Job>>;

/// A running job: its record and a counter bumped on every change (new line, end).
struct Entry {
    job: Shared,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
pub struct Jobs {
    next: u64,
    entries: VecDeque<Entry>,
    /// The process group of the running job's command, for shutdown.
    running_pid: Option<u32>,
}

/// How to start this binary for the serve process's app.
pub struct Launcher {
    pub exe: PathBuf,
    /// `-f`, `--service`, `--state-dir`, `--runtime`, as serve was given them.
    pub app_flags: Vec<String>,
}

impl Launcher {
    pub fn new(global: &GlobalArgs) -> std::io::Result<Launcher> {
        let mut app_flags = vec![];
        for f in &global.files {
            app_flags.push("--file".to_string());
            app_flags.push(f.display().to_string());
        }
        if let Some(s) = &global.service {
            app_flags.extend(["--service".to_string(), s.clone()]);
        }
        if let Some(d) = &global.state_dir {
            app_flags.extend(["--state-dir".to_string(), d.display().to_string()]);
        }
        if let Some(r) = global.runtime {
            app_flags.extend(["--runtime".to_string(), r.as_str().to_string()]);
        }
        Ok(Launcher {
            exe: std::env::current_exe()?,
            app_flags,
        })
    }

    /// The command for `args` (`["logs", "-f"]`, …), acting as `web`, output piped.
    pub fn command(&self, args: &[String]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.exe);
        c.args(&self.app_flags)
            .args(["--actor", "web"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // No colour, no progress bars: the page shows plain lines.
            .env("NO_COLOR", "1")
            .env_remove("CLICOLOR_FORCE");
        c
    }
}

impl Jobs {
    /// The running job, if any.
    pub fn running(&self) -> Option<Shared> {
        self.entries
            .iter()
            .find(|e| e.job.borrow().state == State::Running)
            .map(|e| e.job.clone())
    }

    /// Every kept job, newest first.
    pub fn all(&self) -> Vec<Shared> {
        self.entries.iter().rev().map(|e| e.job.clone()).collect()
    }

    pub fn get(&self, id: u64) -> Option<(Shared, watch::Receiver<u64>)> {
        self.entries
            .iter()
            .find(|e| e.job.borrow().id == id)
            .map(|e| (e.job.clone(), e.changed.subscribe()))
    }

    pub fn running_pid(&self) -> Option<u32> {
        self.running_pid
    }
}

/// Start `args` as a job; returns it at once (its output arrives as it runs). Err: the
/// command could not be started at all.
pub fn start(
    jobs: &Rc<RefCell<Jobs>>,
    launcher: &Launcher,
    args: Vec<String>,
) -> std::io::Result<Shared> {
    let mut cmd = launcher.command(&args);
    // Its own process group: a Ctrl-C meant for the server's terminal reaches the job
    // only through the server, which lets it finish (see `shutdown`).
    cmd.process_group(0);
    let mut child = cmd.spawn()?;
    let (tx, _) = watch::channel(0u64);
    let job = Rc::new(RefCell::new(Job {
        id: 0,
        command: args.first().cloned().unwrap_or_default(),
        args,
        started_at: now(),
        state: State::Running,
        exit_code: None,
        output: vec![],
        dropped: 0,
    }));
    {
        let mut j = jobs.borrow_mut();
        j.next += 1;
        job.borrow_mut().id = j.next;
        j.running_pid = child.id();
        j.entries.push_back(Entry {
            job: job.clone(),
            changed: tx.clone(),
        });
        while j.entries.len() > KEPT {
            // Never the running one: it is the newest.
            j.entries.pop_front();
        }
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let record = job.clone();
    let jobs = jobs.clone();
    tokio::task::spawn_local(async move {
        let push = |line: String| {
            let mut j = record.borrow_mut();
            j.output.push(line);
            if j.output.len() > MAX_LINES {
                j.output.remove(0);
                j.dropped += 1;
            }
            drop(j);
            tx.send_modify(|n| *n += 1);
        };
        let mut out = stdout.map(|s| BufReader::new(s).lines());
        let mut err = stderr.map(|s| BufReader::new(s).lines());
        // Both pipes to their ends, in the order lines arrive.
        while out.is_some() || err.is_some() {
            tokio::select! {
                l = next_line(&mut out) => match l {
                    Some(l) => push(l),
                    None => out = None,
                },
                l = next_line(&mut err) => match l {
                    Some(l) => push(l),
                    None => err = None,
                },
            }
        }
        let code = match child.wait().await {
            Ok(s) => s.code().unwrap_or(128 + signal_of(&s)),
            Err(e) => {
                push(format!("error: cannot wait for the command: {e}"));
                1
            }
        };
        {
            let mut j = record.borrow_mut();
            j.exit_code = Some(code);
            j.state = if code == 0 {
                State::Succeeded
            } else {
                State::Failed
            };
        }
        jobs.borrow_mut().running_pid = None;
        tx.send_modify(|n| *n += 1);
    });
    Ok(job)
}

/// The next line of a pipe that is still open; pending forever once it is closed (None),
/// so a `select!` over two pipes waits on the other.
pub(super) async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut Option<tokio::io::Lines<R>>,
) -> Option<String> {
    match lines {
        Some(l) => l.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

fn signal_of(s: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.signal().unwrap_or(0)
}

/// Now, as the history writes times.
pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or(jiff::Timestamp::now())
        .to_string()
}
