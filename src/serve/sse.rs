//! Server-sent event streams: a job's output, the status facts, the live release's log.
//! Each stream is a task that writes events into a small channel that the response body
//! reads; when the client goes away the body is dropped, the next write fails, and the
//! task (and any command it started) ends. A comment line every few seconds finds out.

use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::StatusCode;
use hyper::body::Frame;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

use super::jobs::{self, Launcher};
use super::{Resp, Server, pages, respond};

/// How often the status stream looks again.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// A stream with nothing to say says so this often (a comment), to find a gone client.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// One event: `event:`, `id:` when given, the data line by line.
pub fn event(name: &str, id: Option<usize>, data: &str) -> Bytes {
    let mut s = format!("event: {name}\n");
    if let Some(id) = id {
        s.push_str(&format!("id: {id}\n"));
    }
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line.trim_end_matches('\r'));
        s.push('\n');
    }
    s.push('\n');
    Bytes::from(s)
}

const COMMENT: &[u8] = b": still here\n\n";

/// A reconnect after a stream ends (a log that ended with its container) waits this long.
const RETRY: &[u8] = b"retry: 3000\n\n";

/// A stream's response, and the sender its task writes events into.
fn stream() -> (Resp, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let resp = respond(
        StatusCode::OK,
        "text/event-stream",
        StreamBody::new(body).boxed(),
    );
    (resp, tx)
}

/// A job's output from line `from` on (`line` events, ids = line numbers), then `end`
/// with its state and exit code.
pub fn job_events(job: jobs::Shared, mut changed: watch::Receiver<u64>, from: usize) -> Resp {
    let (resp, tx) = stream();
    tokio::task::spawn_local(async move {
        if tx.send(Bytes::from_static(RETRY)).await.is_err() {
            return;
        }
        let mut next = from;
        loop {
            let (lines, end) = {
                let j = job.borrow();
                let first = j.dropped;
                let start = next.max(first);
                let lines: Vec<(usize, String)> = j
                    .output
                    .iter()
                    .enumerate()
                    .skip(start - first)
                    .map(|(i, l)| (first + i, l.clone()))
                    .collect();
                next = first + j.output.len();
                let end = (j.state != jobs::State::Running).then(|| {
                    serde_json::json!({ "state": j.state, "exit_code": j.exit_code }).to_string()
                });
                (lines, end)
            };
            for (i, line) in lines {
                if tx.send(event("line", Some(i), &line)).await.is_err() {
                    return;
                }
            }
            if let Some(end) = end {
                let _ = tx.send(event("end", None, &end)).await;
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() {
                    // The job's record went (evicted): nothing more will come.
                    return;
                },
                () = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Bytes::from_static(COMMENT)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    resp
}

/// The status facts (`status` events: the inner HTML of the page's `#status`), sent when
/// they change.
pub fn status_events(server: Rc<Server>) -> Resp {
    let (resp, tx) = stream();
    tokio::task::spawn_local(async move {
        if tx.send(Bytes::from_static(RETRY)).await.is_err() {
            return;
        }
        let mut last = String::new();
        let mut quiet = Duration::ZERO;
        loop {
            let facts = match crate::commands::status::report(&server.ctx).await {
                Ok(r) => pages::status_facts(&r, server.running().as_ref()),
                Err(e) => format!(
                    "<dt>error</dt><dd class=\"bad\">{}</dd>",
                    pages::escape(&e.to_string())
                ),
            };
            if facts != last {
                if tx.send(event("status", None, &facts)).await.is_err() {
                    return;
                }
                last = facts;
                quiet = Duration::ZERO;
            } else if quiet >= KEEPALIVE {
                if tx.send(Bytes::from_static(COMMENT)).await.is_err() {
                    return;
                }
                quiet = Duration::ZERO;
            }
            tokio::time::sleep(STATUS_EVERY).await;
            quiet += STATUS_EVERY;
            if tx.is_closed() {
                return;
            }
        }
    });
    resp
}

/// The live release's new log lines (`line` events), through `dockmaster logs -f`: the
/// same command the CLI runs, for compose and Swarm alike. It ends when the container
/// does (a rollback replaced it); the browser reconnects and follows the new one.
pub fn log_events(launcher: &Launcher) -> Resp {
    let (resp, tx) = stream();
    let mut cmd = launcher.command(&["logs".into(), "--tail".into(), "0".into(), "-f".into()]);
    cmd.kill_on_drop(true);
    tokio::task::spawn_local(async move {
        if tx.send(Bytes::from_static(RETRY)).await.is_err() {
            return;
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = tx
                    .send(event("line", None, &format!("cannot follow the logs: {e}")))
                    .await;
                return;
            }
        };
        let mut out = child.stdout.take().map(|s| BufReader::new(s).lines());
        let mut err = child.stderr.take().map(|s| BufReader::new(s).lines());
        while out.is_some() || err.is_some() {
            let line = tokio::select! {
                l = jobs::next_line(&mut out) => match l { Some(l) => l, None => { out = None; continue } },
                l = jobs::next_line(&mut err) => match l { Some(l) => l, None => { err = None; continue } },
                () = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Bytes::from_static(COMMENT)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            if tx.send(event("line", None, &line)).await.is_err() {
                return;
            }
        }
        // Dropping `child` kills a command that is somehow still running.
    });
    resp
}

/// The live release's last `n` log lines, for the logs page (bounded in time: a page
/// must not hang on a stuck engine).
pub async fn last_log_lines(launcher: &Launcher, n: usize) -> Vec<String> {
    let mut cmd = launcher.command(&["logs".into(), "--tail".into(), n.to_string()]);
    cmd.kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(15), cmd.output()).await {
        Ok(Ok(out)) => {
            let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !out.status.success() {
                lines.extend(
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .map(str::to_string),
                );
            }
            lines
        }
        Ok(Err(e)) => vec![format!("cannot run `dockmaster logs`: {e}")],
        Err(_) => vec!["`dockmaster logs` did not answer within 15 s".into()],
    }
}
