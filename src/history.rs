//! The durable record of every deploy, rollback and prune, in SQLite.
//!
//! An event row is written when an operation starts (outcome `running`) and completed when
//! it ends. A process killed in between leaves `running`, which the next operation (holding
//! the lock, so certain that nobody runs) turns into `abandoned`: the history says that it
//! did not see how the operation ended, never an outcome that did not happen.
//!
//! SQLite in WAL mode with a busy timeout survives crashes (every write is a committed
//! transaction) and concurrent readers (`status`, `history`) during a deploy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::Kind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with the history database. `Display` is the message alone;
/// [`Error::hint`] is the fix, which the conversion into [`crate::error::Error`] puts on its
/// own `hint:` line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot open the history {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error("history database error in {}: {source}", path.display())]
    Database {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

impl Error {
    /// What the user can do about it: the last line of every message dockmaster prints.
    pub fn hint(&self) -> String {
        match self {
            Error::StateDir { .. } | Error::Open { .. } => {
                "pick a writable place with --state-dir".into()
            }
            Error::Database { .. } => {
                "check the state directory's disk and permissions (--state-dir)".into()
            }
        }
    }

    /// The history failing is the operation failing: nothing the user typed was wrong.
    pub fn kind(&self) -> Kind {
        Kind::Failed
    }
}

impl From<Error> for crate::error::Error {
    fn from(e: Error) -> crate::error::Error {
        crate::error::Error::typed(e.kind(), e.to_string(), e.hint())
    }
}

pub struct History {
    conn: Connection,
    app: String,
    /// The database file, for errors.
    path: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Running,
    Succeeded,
    /// The new release failed and the previous one was put back.
    RolledBack,
    Failed,
    Interrupted,
    Abandoned,
    /// Live, and watched by `deploy --watch` (which no longer holds the lock).
    Watching,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
            Outcome::Abandoned => "abandoned",
            Outcome::Watching => "watching",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mark {
    KnownGood,
    Failed,
}

impl Mark {
    fn as_str(self) -> &'static str {
        match self {
            Mark::KnownGood => "known-good",
            Mark::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub id: i64,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub user: String,
    pub host: String,
    pub command: String,
    pub from_release: Option<String>,
    pub to_release: Option<String>,
    pub outcome: String,
    pub duration_ms: Option<i64>,
    pub reason: Option<String>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    app          TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    ended_at     TEXT,
    user         TEXT NOT NULL,
    host         TEXT NOT NULL,
    command      TEXT NOT NULL,
    from_release TEXT,
    to_release   TEXT,
    outcome      TEXT NOT NULL,
    duration_ms  INTEGER,
    reason       TEXT
);
CREATE INDEX IF NOT EXISTS events_app ON events (app, id);
CREATE TABLE IF NOT EXISTS marks (
    app  TEXT NOT NULL,
    tag  TEXT NOT NULL,
    mark TEXT NOT NULL,
    at   TEXT NOT NULL,
    PRIMARY KEY (app, tag)
);
";

impl History {
    pub fn open(state_dir: &Path, app: &str) -> Result<History> {
        std::fs::create_dir_all(state_dir).map_err(|source| Error::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join("history.db");
        let err = |source: rusqlite::Error| Error::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(History {
            conn,
            app: app.to_string(),
            path,
        })
    }

    fn db(&self, source: rusqlite::Error) -> Error {
        Error::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// Record that an operation starts; returns its id.
    pub fn begin(&self, command: &str, from: Option<&str>, to: Option<&str>) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO events (app, started_at, user, host, command, from_release, to_release, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running')",
                params![
                    self.app,
                    now(),
                    whoami::username(),
                    whoami::fallible::hostname().unwrap_or_else(|_| "unknown".into()),
                    command,
                    from,
                    to
                ],
            )
            .map_err(|e| self.db(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn set_target(&self, id: i64, to: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE events SET to_release = ?2 WHERE id = ?1",
                params![id, to],
            )
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Record how an operation ended.
    pub fn end(&self, id: i64, outcome: Outcome, reason: Option<&str>) -> Result<()> {
        let started: String = self
            .conn
            .query_row("SELECT started_at FROM events WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(|e| self.db(e))?;
        let ended = Timestamp::now();
        let ms = started
            .parse::<Timestamp>()
            .ok()
            .map(|s| ended.duration_since(s).as_millis() as i64);
        self.conn
            .execute(
                "UPDATE events SET ended_at = ?2, outcome = ?3, duration_ms = ?4, reason = ?5 WHERE id = ?1",
                params![id, ended.to_string(), outcome.as_str(), ms, reason],
            )
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Turn the `running` events of a process that died into `abandoned`. Call only while
    /// holding the app's lock.
    pub fn close_abandoned(&self) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE events SET outcome = 'abandoned', reason = 'the process ended before recording an outcome (killed or crashed)'
                 WHERE app = ?1 AND outcome = 'running'",
                [&self.app],
            )
            .map_err(|e| self.db(e))
    }

    /// Turn `watching` events (a deploy watching its release, without the app's lock) into
    /// `abandoned` when no watcher is alive any more (`watcher_alive`: its watch lock is
    /// held).
    pub fn close_dead_watches(&self, watcher_alive: bool) -> Result<usize> {
        if watcher_alive {
            return Ok(0);
        }
        self.conn
            .execute(
                "UPDATE events SET outcome = 'abandoned', reason = 'the process ended while it watched the release (killed or crashed)'
                 WHERE app = ?1 AND outcome = 'watching'",
                [&self.app],
            )
            .map_err(|e| self.db(e))
    }

    /// Record that an operation starts. The returned guard records how it ended exactly
    /// once: through [`Recording::end`], or — if the operation panics or returns without
    /// saying — as failed, so no event stays `running` behind a live process.
    pub fn record(
        &self,
        command: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Recording<'_>> {
        Ok(Recording {
            history: self,
            id: self.begin(command, from, to)?,
            ended: false,
        })
    }

    /// Record the automatic rollback that followed a failed deploy, as its own event.
    pub fn begin_end_auto_rollback(&self, from: &str, to: &str, reason: &str) -> Result<()> {
        let id = self.begin("auto-rollback", Some(from), Some(to))?;
        self.end(
            id,
            Outcome::Succeeded,
            Some(&format!("{from} failed: {reason}")),
        )
    }

    pub fn mark(&self, tag: &str, mark: Mark) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO marks (app, tag, mark, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app, tag) DO UPDATE SET mark = excluded.mark, at = excluded.at",
                params![self.app, tag, mark.as_str(), now()],
            )
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    pub fn marks(&self) -> Result<std::collections::HashMap<String, Mark>> {
        let mut stmt = self
            .conn
            .prepare("SELECT tag, mark FROM marks WHERE app = ?1")
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([&self.app], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.db(e))?;
        let mut out = std::collections::HashMap::new();
        for row in rows {
            let (tag, mark) = row.map_err(|e| self.db(e))?;
            let mark = if mark == "failed" {
                Mark::Failed
            } else {
                Mark::KnownGood
            };
            out.insert(tag, mark);
        }
        Ok(out)
    }

    pub fn events(&self, limit: Option<usize>) -> Result<Vec<Event>> {
        let limit = limit.map_or(-1, |l| l as i64);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, started_at, ended_at, user, host, command, from_release, to_release, outcome, duration_ms, reason
                 FROM events WHERE app = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![self.app, limit], |r| {
                Ok(Event {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    ended_at: r.get(2)?,
                    user: r.get(3)?,
                    host: r.get(4)?,
                    command: r.get(5)?,
                    from_release: r.get(6)?,
                    to_release: r.get(7)?,
                    outcome: r.get(8)?,
                    duration_ms: r.get(9)?,
                    reason: r.get(10)?,
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.db(e))
    }

    /// The release the last finished deploy or rollback left live, by dockmaster's record.
    pub fn last_put_live(&self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT CASE WHEN outcome = 'succeeded' THEN to_release ELSE from_release END
                 FROM events
                 WHERE app = ?1 AND command IN ('deploy', 'rollback') AND outcome IN ('succeeded', 'rolled-back')
                 ORDER BY id DESC LIMIT 1",
                [&self.app],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db(e))
            .map(Option::flatten)
    }
}

/// An operation being recorded (see [`History::record`]).
pub struct Recording<'a> {
    history: &'a History,
    id: i64,
    ended: bool,
}

impl Recording<'_> {
    pub fn set_target(&self, to: &str) -> Result<()> {
        self.history.set_target(self.id, to)
    }

    /// The release went live and is being watched: the operation no longer holds the lock,
    /// so its event must not read as a `running` one that a crash left behind.
    pub fn watching(&self) -> Result<()> {
        self.history
            .conn
            .execute(
                "UPDATE events SET outcome = 'watching' WHERE id = ?1",
                [self.id],
            )
            .map_err(|e| self.history.db(e))?;
        Ok(())
    }

    /// Record the outcome; consumes the recording, so it happens once.
    pub fn end(mut self, outcome: Outcome, reason: Option<&str>) -> Result<()> {
        self.ended = true;
        self.history.end(self.id, outcome, reason)
    }

    /// Record an operation that stopped with `error`: interrupted if the user asked it to
    /// stop, else failed, with the error's first line as the reason.
    pub fn end_with_error(self, error: &crate::error::Error) -> Result<()> {
        let outcome = if crate::interrupt::requested() {
            Outcome::Interrupted
        } else {
            Outcome::Failed
        };
        let text = error.to_string();
        self.end(outcome, text.lines().next())
    }
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.history.end(
                self.id,
                Outcome::Failed,
                Some("ended without recording an outcome (see its output)"),
            );
        }
    }
}

fn now() -> String {
    Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    #[test]
    fn history_errors_name_the_path_and_fail_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let e = match History::open(&file, "app") {
            Err(e) => crate::error::Error::from(e),
            Ok(_) => panic!("a history under a file"),
        };
        assert_eq!(e.code(), exit::FAILED);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot create the state directory {}",
                file.display()
            )),
            "{text}"
        );
        assert!(text.ends_with("\nhint: pick a writable place with --state-dir"));

        let e = crate::error::Error::from(Error::Database {
            path: "/var/lib/dockmaster/history.db".into(),
            source: rusqlite::Error::QueryReturnedNoRows,
        });
        assert_eq!(e.code(), exit::FAILED);
        let text = e.to_string();
        assert!(
            text.starts_with("history database error in /var/lib/dockmaster/history.db: "),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\nhint: check the state directory's disk and permissions (--state-dir)"
            )
        );
    }

    #[test]
    fn events_round_trip_and_abandoned_runs_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), "app").unwrap();
        let a = h.begin("deploy", None, Some("2026.01.10-abc123f")).unwrap();
        h.end(a, Outcome::Succeeded, None).unwrap();
        let b = h
            .begin(
                "deploy",
                Some("2026.01.10-abc123f"),
                Some("2026.01.11-def4567"),
            )
            .unwrap();
        assert_eq!(
            h.last_put_live().unwrap().as_deref(),
            Some("2026.01.10-abc123f")
        );
        assert_eq!(h.close_abandoned().unwrap(), 1);
        let events = h.events(None).unwrap();
        assert_eq!(events[0].id, b);
        assert_eq!(events[0].outcome, "abandoned");
        assert_eq!(events[1].outcome, "succeeded");
        let other = History::open(dir.path(), "other").unwrap();
        assert!(other.events(None).unwrap().is_empty());
    }

    #[test]
    fn marks_are_per_app_and_latest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), "app").unwrap();
        h.mark("t1", Mark::Failed).unwrap();
        h.mark("t1", Mark::KnownGood).unwrap();
        assert_eq!(h.marks().unwrap()["t1"], Mark::KnownGood);
        let other = History::open(dir.path(), "other").unwrap();
        assert!(other.marks().unwrap().is_empty());
    }
}
