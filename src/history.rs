//! The durable record of every deploy, rollback and prune, in SQLite.
//!
//! An event row is written when an operation starts (outcome `running`) and completed when
//! it ends. A process killed in between leaves `running`, which the next operation (holding
//! the lock, so certain that nobody runs) turns into `abandoned`: the history says that it
//! did not see how the operation ended, never an outcome that did not happen.
//!
//! SQLite in WAL mode with a busy timeout survives crashes (every write is a committed
//! transaction) and concurrent readers (`status`, `history`) during a deploy.
//!
//! Every event also has a `uid`, 128 random bits in hex, unique across machines: where
//! the history is shared (a Swarm keeps it, `runtime::swarm::store`), the local database is
//! a cache, and the uid is how two machines tell that they hold the same event. Local ids
//! stay the order of arrival on this machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
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

    /// The outcome [`Outcome::as_str`] wrote, if it is one.
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Running,
            Outcome::Succeeded,
            Outcome::RolledBack,
            Outcome::Failed,
            Outcome::Interrupted,
            Outcome::Abandoned,
            Outcome::Watching,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    /// Final: nothing will change the event any more. `running` and `watching` belong to a
    /// live process (or to one that died, which only this machine can find out).
    pub fn has_ended(self) -> bool {
        !matches!(self, Outcome::Running | Outcome::Watching)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mark {
    KnownGood,
    Failed,
}

impl Mark {
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::KnownGood => "known-good",
            Mark::Failed => "failed",
        }
    }

    /// The mark [`Mark::as_str`] wrote, if it is one.
    pub fn parse(s: &str) -> Option<Mark> {
        [Mark::KnownGood, Mark::Failed]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// A release's mark and when it was set (`at`, as [`jiff::Timestamp`] writes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkAt {
    pub tag: String,
    pub mark: Mark,
    pub at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

/// Gives `events` its `uid` column and every row a uid: in a database written before uids
/// existed and in a new one alike (`SCHEMA` keeps the table as it was first written, so
/// there is one way to get the column). Every insert gets its uid from a trigger rather
/// than from `begin`, so that rows an older dockmaster still inserts into this database get
/// one too. `randomblob` is SQLite's generator, seeded from the operating system's random
/// source.
const ADD_UIDS: &str = "
ALTER TABLE events ADD COLUMN uid TEXT;
UPDATE events SET uid = lower(hex(randomblob(16))) WHERE uid IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS events_uid ON events (uid);
CREATE TRIGGER IF NOT EXISTS events_uid_on_insert AFTER INSERT ON events
WHEN NEW.uid IS NULL
BEGIN
    UPDATE events SET uid = lower(hex(randomblob(16))) WHERE id = NEW.id;
END;
";

/// Does `events` have its `uid` column? The column, its index and its trigger come in one
/// transaction ([`ADD_UIDS`]): with the column, the rest is there.
fn has_uids(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM pragma_table_info('events') WHERE name = 'uid'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Adds uids to a database without them. Checked again inside a write transaction: two
/// dockmasters opening the same old database at once migrate it once.
fn migrate_uids(conn: &mut Connection) -> rusqlite::Result<()> {
    if has_uids(conn)? {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !has_uids(&tx)? {
        tx.execute_batch(ADD_UIDS)?;
    }
    tx.commit()
}

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
        let mut conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        migrate_uids(&mut conn).map_err(err)?;
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
                    crate::actor::user(),
                    crate::actor::host(),
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
            .query_map(params![self.app, limit], event_of)
            .map_err(|e| self.db(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.db(e))
    }

    /// The app this history records.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Every event of the app with its uid, oldest first (by local id: the order they
    /// arrived here).
    pub fn events_with_uid(&self) -> Result<Vec<(String, Event)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, started_at, ended_at, user, host, command, from_release, to_release, outcome, duration_ms, reason, uid
                 FROM events WHERE app = ?1 ORDER BY id",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([&self.app], |r| Ok((r.get(11)?, event_of(r)?)))
            .map_err(|e| self.db(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.db(e))
    }

    /// Add an event another machine recorded, as it recorded it (`event.id` is ignored: the
    /// event gets the next local id). Returns false, changing nothing, when an event with
    /// this uid is here already.
    pub fn import_event(&self, uid: &str, event: &Event) -> Result<bool> {
        let added = self
            .conn
            .execute(
                "INSERT INTO events (app, uid, started_at, ended_at, user, host, command, from_release, to_release, outcome, duration_ms, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (uid) DO NOTHING",
                params![
                    self.app,
                    uid,
                    event.started_at,
                    event.ended_at,
                    event.user,
                    event.host,
                    event.command,
                    event.from_release,
                    event.to_release,
                    event.outcome,
                    event.duration_ms,
                    event.reason
                ],
            )
            .map_err(|e| self.db(e))?;
        Ok(added == 1)
    }

    /// Every mark of the app with when it was set, by tag.
    pub fn marks_at(&self) -> Result<Vec<MarkAt>> {
        let mut stmt = self
            .conn
            .prepare("SELECT tag, mark, at FROM marks WHERE app = ?1 ORDER BY tag")
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([&self.app], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.db(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (tag, mark, at) = row.map_err(|e| self.db(e))?;
            // As `marks` reads them: anything but `failed` is known-good.
            let mark = Mark::parse(&mark).unwrap_or(Mark::KnownGood);
            out.push(MarkAt { tag, mark, at });
        }
        Ok(out)
    }

    /// Set a mark as another machine set it, keeping its time.
    pub fn set_mark_at(&self, tag: &str, mark: Mark, at: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO marks (app, tag, mark, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app, tag) DO UPDATE SET mark = excluded.mark, at = excluded.at",
                params![self.app, tag, mark.as_str(), at],
            )
            .map_err(|e| self.db(e))?;
        Ok(())
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

/// An `events` row's first eleven columns, in the order every query here selects them.
fn event_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
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

    /// The events table as dockmaster wrote it before events had uids.
    const SCHEMA_BEFORE_UIDS: &str = "
CREATE TABLE events (
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
CREATE INDEX events_app ON events (app, id);
CREATE TABLE marks (
    app  TEXT NOT NULL,
    tag  TEXT NOT NULL,
    mark TEXT NOT NULL,
    at   TEXT NOT NULL,
    PRIMARY KEY (app, tag)
);
INSERT INTO events (app, started_at, ended_at, user, host, command, to_release, outcome, duration_ms)
VALUES ('app', '2026-01-10T10:00:00Z', '2026-01-10T10:01:00Z', 'ops', 'nas', 'deploy', '2026.01.10-abc123f', 'succeeded', 60000);
INSERT INTO events (app, started_at, user, host, command, from_release, outcome)
VALUES ('app', '2026-01-11T10:00:00Z', 'ops', 'nas', 'deploy', '2026.01.10-abc123f', 'running');
INSERT INTO events (app, started_at, user, host, command, outcome)
VALUES ('other', '2026-01-11T11:00:00Z', 'ops', 'nas', 'prune', 'succeeded');
";

    fn is_uid(s: &str) -> bool {
        s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn a_history_from_before_uids_opens_and_every_event_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        Connection::open(dir.path().join("history.db"))
            .unwrap()
            .execute_batch(SCHEMA_BEFORE_UIDS)
            .unwrap();

        let h = History::open(dir.path(), "app").unwrap();
        let before = h.events_with_uid().unwrap();
        assert_eq!(before.len(), 2);
        assert_eq!(before[0].1.command, "deploy");
        assert_eq!(before[0].1.outcome, "succeeded");
        assert_eq!(before[0].1.duration_ms, Some(60000));
        assert_eq!(before[1].1.outcome, "running");
        assert!(before.iter().all(|(uid, _)| is_uid(uid)), "{before:?}");
        assert_ne!(before[0].0, before[1].0);
        let other = History::open(dir.path(), "other").unwrap();
        let other = other.events_with_uid().unwrap();
        assert_eq!(other.len(), 1);
        assert!(is_uid(&other[0].0));

        // Recorded from now on: a uid of its own.
        let id = h.begin("rollback", None, None).unwrap();
        h.end(id, Outcome::Succeeded, None).unwrap();
        // An older dockmaster, which knows nothing of uids, still inserts into this file.
        h.conn
            .execute(
                "INSERT INTO events (app, started_at, user, host, command, outcome)
                 VALUES ('app', '2026-01-12T10:00:00Z', 'ops', 'nas', 'prune', 'succeeded')",
                [],
            )
            .unwrap();
        drop(h);

        // Opening again migrates nothing and keeps every uid.
        let h = History::open(dir.path(), "app").unwrap();
        let after = h.events_with_uid().unwrap();
        assert_eq!(after.len(), 4);
        assert_eq!(after[..2], before[..]);
        assert!(after.iter().all(|(uid, _)| is_uid(uid)), "{after:?}");
        let uids: std::collections::HashSet<&str> =
            after.iter().map(|(uid, _)| uid.as_str()).collect();
        assert_eq!(uids.len(), 4);
    }

    #[test]
    fn an_imported_event_keeps_its_uid_and_comes_in_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = History::open(&dir.path().join("a"), "app").unwrap();
        let id = a.begin("deploy", None, Some("2026.01.10-abc123f")).unwrap();
        a.end(id, Outcome::Failed, Some("unhealthy")).unwrap();
        let (uid, event) = a.events_with_uid().unwrap().remove(0);

        let b = History::open(&dir.path().join("b"), "app").unwrap();
        let mine = b.begin("prune", None, None).unwrap();
        b.end(mine, Outcome::Succeeded, None).unwrap();
        assert!(b.import_event(&uid, &event).unwrap());
        assert!(!b.import_event(&uid, &event).unwrap());
        let got = b.events_with_uid().unwrap();
        assert_eq!(got.len(), 2);
        let (got_uid, got) = &got[1];
        assert_eq!(got_uid, &uid);
        assert_eq!(got.id, 2);
        assert_eq!(
            (got.started_at.as_str(), got.ended_at.as_deref()),
            (event.started_at.as_str(), event.ended_at.as_deref())
        );
        assert_eq!(got.outcome, "failed");
        assert_eq!(got.reason.as_deref(), Some("unhealthy"));
        assert_eq!(got.duration_ms, event.duration_ms);
    }

    #[test]
    fn marks_keep_the_time_they_were_set() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), "app").unwrap();
        h.mark("t2", Mark::KnownGood).unwrap();
        h.set_mark_at("t1", Mark::Failed, "2026-01-10T10:00:00.5Z")
            .unwrap();
        let marks = h.marks_at().unwrap();
        assert_eq!(marks.len(), 2);
        assert_eq!(
            marks[0],
            MarkAt {
                tag: "t1".into(),
                mark: Mark::Failed,
                at: "2026-01-10T10:00:00.5Z".into()
            }
        );
        assert_eq!(marks[1].mark, Mark::KnownGood);
        assert!(marks[1].at.parse::<Timestamp>().is_ok());
        assert_eq!(h.marks().unwrap()["t1"], Mark::Failed);
    }

    #[test]
    fn outcomes_and_marks_parse_what_they_write() {
        for o in [
            Outcome::Running,
            Outcome::Succeeded,
            Outcome::RolledBack,
            Outcome::Failed,
            Outcome::Interrupted,
            Outcome::Abandoned,
            Outcome::Watching,
        ] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(
                o.has_ended(),
                !matches!(o, Outcome::Running | Outcome::Watching)
            );
        }
        assert_eq!(Outcome::parse("done"), None);
        for m in [Mark::KnownGood, Mark::Failed] {
            assert_eq!(Mark::parse(m.as_str()), Some(m));
        }
        assert_eq!(Mark::parse("good"), None);
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
