//! The history and the marks of an app, kept in the swarm: what every manager, and every
//! machine that talks to one, sees alike. The local SQLite history stays what the commands
//! read and write; it becomes a cache that [`SwarmStore::pull`] fills from the swarm and
//! [`SwarmStore::push`] copies back.
//!
//! Each ended event is one Swarm config object, `dockmaster-<app>-e-<uid>`, whose data is
//! the event as JSON ([`EventRecord`]). Configs are immutable and created atomically, and an
//! ended event never changes: written once, by whichever machine has it first, never
//! rewritten. A name that exists already (409) is the same event, written by someone else.
//! Events that have not ended (`running`, `watching`) stay local: only the machine that runs
//! the operation can see how it ends.
//!
//! Each mark is one config per release, `dockmaster-<app>-m-<tag>` ([`MarkRecord`]). A
//! config cannot change, so changing a mark deletes its config and creates the new one.
//! That is two steps: the caller holds the app's cluster lock, so no other dockmaster
//! changes the same mark in between. A reader without the lock that looks between the two
//! steps sees no mark for that release and keeps what it had.
//!
//! Where a machine and the swarm disagree on a mark, the mark set last wins (by the time it
//! was set, which travels with it): a mark this machine set while the swarm was out of
//! reach is pushed on the next push instead of being overwritten by the older one.

use std::collections::{HashMap, HashSet};

use bollard::Docker;
use bollard::config::ConfigSpec;
use bollard::query_parameters::ListConfigsOptionsBuilder;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::Kind;
use crate::history::{Event, History, Mark, MarkAt, Outcome};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The label every record carries: the app it belongs to (unchanged, unlike in the name).
pub const LABEL_APP: &str = "dev.dockmaster.app";
/// `event` or `mark`.
pub const LABEL_KIND: &str = "dev.dockmaster.kind";
/// A mark's value (`known-good` or `failed`), for `docker config ls --filter`.
pub const LABEL_MARK: &str = "dev.dockmaster.mark";

/// The record format this dockmaster writes and reads. Fields may be added without changing
/// it (readers ignore fields they do not know); a change older readers would misread
/// needs a new number.
pub const FORMAT: u32 = 1;

/// The largest config the engine accepts (swarmkit's `MaxConfigSize` in 20.10; later
/// engines accept more).
const MAX_DATA: usize = 500 * 1024;

/// A reason is the first line of an error, short in practice; this bound keeps any event
/// well below [`MAX_DATA`].
const MAX_REASON: usize = 64 * 1024;

/// Swarm object names: at most 64 characters of `[A-Za-z0-9_.-]`, starting and ending with
/// a letter or digit.
const MAX_NAME: usize = 64;
const PREFIX: &str = "dockmaster-";
/// The app's part of every name: `PREFIX` (11) + app + `-e-` (3) + uid (32) = 64.
const MAX_APP_PART: usize = MAX_NAME - PREFIX.len() - 3 - 32;
/// The tag's part of a mark's name (a tag, `YYYY.MM.DD-sha7`, is 18 characters).
const MAX_TAG_PART: usize = MAX_NAME - PREFIX.len() - MAX_APP_PART - 3;

/// What can go wrong keeping the history in the swarm. `Display` is the message alone;
/// [`Error::hint`] is the fix, which the conversion into [`crate::error::Error`] puts on its
/// own `hint:` line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine answered with an error (`status`), or gave no answer at all.
    #[error("Docker engine error while {doing}: {}", with_status(*status, message))]
    Api {
        /// What dockmaster asked, in the user's words.
        doing: String,
        status: Option<u16>,
        message: String,
    },

    #[error("the swarm config {name} is not a readable dockmaster {kind} record: {reason}")]
    Unreadable {
        name: String,
        kind: &'static str,
        reason: String,
    },

    #[error(
        "the swarm config {name} was written by a newer dockmaster (record format {found}; this one reads format {FORMAT})"
    )]
    NewerFormat { name: String, found: u32 },

    #[error(
        "the event {uid} of {app} is too large to keep in the swarm ({size} bytes; a config holds {MAX_DATA})"
    )]
    TooLarge {
        app: String,
        uid: String,
        size: usize,
    },

    #[error(transparent)]
    History(#[from] crate::history::Error),
}

impl Error {
    fn api(doing: impl Into<String>, e: bollard::errors::Error) -> Error {
        let (status, message) = match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            } => (Some(status_code), message),
            other => (None, other.to_string()),
        };
        Error::Api {
            doing: doing.into(),
            status,
            message,
        }
    }

    /// The engine's HTTP status, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => *status,
            _ => None,
        }
    }

    /// What the user can do about it: the last line of every message dockmaster prints.
    pub fn hint(&self) -> String {
        match self {
            // The engine's answer to config calls on a worker or outside a swarm.
            Error::Api {
                status: Some(503), ..
            } => "this engine is not a swarm manager: point DOCKER_HOST at a manager (`docker node ls` works there)".into(),
            // Only two writers of one mark at once get here: one of them held no lock.
            Error::Api {
                status: Some(409), ..
            } => "another dockmaster changed the same mark at the same time: run again (holding the app's lock)".into(),
            Error::Api { .. } => {
                "`docker info` shows whether the engine and its swarm are healthy; retry once they are".into()
            }
            Error::Unreadable { name, .. } => format!(
                "`docker config inspect {name}` shows it; remove it (`docker config rm {name}`): a machine whose history has that record writes it again on its next push"
            ),
            Error::NewerFormat { .. } => {
                "upgrade dockmaster here to the version the other machines run".into()
            }
            Error::TooLarge { .. } => {
                "this is a bug in dockmaster: report it with the output of `dockmaster history --json`".into()
            }
            Error::History(e) => e.hint(),
        }
    }

    /// The swarm or the history failing is the operation failing: nothing the user typed
    /// was wrong.
    pub fn kind(&self) -> Kind {
        Kind::Failed
    }
}

/// `message`, preceded by the HTTP status when there is one.
fn with_status(status: Option<u16>, message: &str) -> String {
    match status.and_then(|s| hyper::StatusCode::from_u16(s).ok()) {
        Some(s) => format!("{s}: {message}"),
        None => message.to_string(),
    }
}

impl From<Error> for crate::error::Error {
    fn from(e: Error) -> crate::error::Error {
        crate::error::Error::typed(e.kind(), e.to_string(), e.hint())
    }
}

/// An ended event as the swarm keeps it: the data of its config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// [`FORMAT`].
    pub format: u32,
    /// 32 lowercase hex digits, unique across machines.
    pub uid: String,
    pub app: String,
    /// `deploy`, `rollback`, `auto-rollback`, `prune`, ...
    pub command: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// RFC 3339, as [`jiff::Timestamp`] writes it.
    pub started: String,
    /// None for an event closed as `abandoned` (nobody saw it end).
    pub ended: Option<String>,
    pub duration_ms: Option<i64>,
    /// An ended [`Outcome`], as [`Outcome::as_str`] writes it.
    pub outcome: String,
    pub reason: Option<String>,
    pub user: String,
    pub host: String,
}

impl EventRecord {
    fn of(app: &str, uid: &str, e: &Event) -> EventRecord {
        EventRecord {
            format: FORMAT,
            uid: uid.to_string(),
            app: app.to_string(),
            command: e.command.clone(),
            from: e.from_release.clone(),
            to: e.to_release.clone(),
            started: e.started_at.clone(),
            ended: e.ended_at.clone(),
            duration_ms: e.duration_ms,
            outcome: e.outcome.clone(),
            reason: e.reason.as_deref().map(|r| cut(r, MAX_REASON).to_string()),
            user: e.user.clone(),
            host: e.host.clone(),
        }
    }

    fn to_json(&self) -> Vec<u8> {
        // Strings and numbers only: nothing that serde_json can fail to write.
        serde_json::to_vec(self).expect("an event record serializes")
    }

    /// The event as the local history holds it (its local id is given on import).
    fn event(&self) -> Event {
        Event {
            id: 0,
            started_at: self.started.clone(),
            ended_at: self.ended.clone(),
            user: self.user.clone(),
            host: self.host.clone(),
            command: self.command.clone(),
            from_release: self.from.clone(),
            to_release: self.to.clone(),
            outcome: self.outcome.clone(),
            duration_ms: self.duration_ms,
            reason: self.reason.clone(),
        }
    }

    /// What an event must be to be imported: anything else is not one of ours.
    fn check(&self, app: &str) -> std::result::Result<(), String> {
        if self.app != app {
            return Err(format!("its data is for the app {}", self.app));
        }
        if !is_uid(&self.uid) {
            return Err(format!("its uid {:?} is not 32 hex digits", self.uid));
        }
        match Outcome::parse(&self.outcome) {
            Some(o) if o.has_ended() => {}
            _ => {
                return Err(format!(
                    "{:?} is not the outcome of an ended event",
                    self.outcome
                ));
            }
        }
        for t in std::iter::once(&self.started).chain(self.ended.as_ref()) {
            t.parse::<Timestamp>()
                .map_err(|e| format!("{t:?} is not a time: {e}"))?;
        }
        Ok(())
    }
}

/// A release's mark as the swarm keeps it: the data of its config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkRecord {
    /// [`FORMAT`].
    pub format: u32,
    pub app: String,
    pub tag: String,
    /// `known-good` or `failed`.
    pub mark: String,
    /// When it was set, RFC 3339.
    pub at: String,
}

impl MarkRecord {
    fn of(app: &str, m: &MarkAt) -> MarkRecord {
        MarkRecord {
            format: FORMAT,
            app: app.to_string(),
            tag: m.tag.clone(),
            mark: m.mark.as_str().to_string(),
            at: m.at.clone(),
        }
    }

    fn to_json(&self) -> Vec<u8> {
        // Strings and numbers only: nothing that serde_json can fail to write.
        serde_json::to_vec(self).expect("a mark record serializes")
    }

    fn check(&self, app: &str) -> std::result::Result<(Mark, Timestamp), String> {
        if self.app != app {
            return Err(format!("its data is for the app {}", self.app));
        }
        let mark =
            Mark::parse(&self.mark).ok_or_else(|| format!("{:?} is not a mark", self.mark))?;
        let at = self
            .at
            .parse::<Timestamp>()
            .map_err(|e| format!("{:?} is not a time: {e}", self.at))?;
        Ok((mark, at))
    }
}

/// The first field of every record, read before the rest.
#[derive(Deserialize)]
struct Format {
    format: u32,
}

/// A record's config as listed: its id (to delete it), its name (for errors) and its data.
struct Stored {
    id: String,
    name: String,
    data: Vec<u8>,
}

impl Stored {
    fn record<R: serde::de::DeserializeOwned>(&self, kind: &'static str) -> Result<R> {
        let unreadable = |reason: String| Error::Unreadable {
            name: self.name.clone(),
            kind,
            reason,
        };
        let format: Format =
            serde_json::from_slice(&self.data).map_err(|e| unreadable(e.to_string()))?;
        if format.format > FORMAT {
            return Err(Error::NewerFormat {
                name: self.name.clone(),
                found: format.format,
            });
        }
        serde_json::from_slice(&self.data).map_err(|e| unreadable(e.to_string()))
    }
}

/// A mark in the swarm, read and checked.
struct SwarmMark {
    config: String,
    record: MarkRecord,
    mark: Mark,
    at: Timestamp,
}

/// One app's history and marks in a swarm, through an engine that is one of its managers.
pub struct SwarmStore<'a> {
    docker: &'a Docker,
    app: String,
}

impl<'a> SwarmStore<'a> {
    pub fn new(docker: &'a Docker, app: &str) -> SwarmStore<'a> {
        SwarmStore {
            docker,
            app: app.to_string(),
        }
    }

    /// Events and marks in the swarm → into the local history: events whose uid is not
    /// here yet are added, oldest first, with the outcome they ended with; a mark is set as
    /// the swarm has it unless the one here was set later (see the module's comment).
    /// Returns how many events and marks were new here.
    pub async fn pull(&self, history: &History) -> Result<usize> {
        debug_assert_eq!(history.app(), self.app, "a store and a history of one app");
        let mut records = self.events().await?;
        // Oldest first, so that local ids follow the order the events started in. Every
        // `started` parsed in `check`.
        records.sort_by_cached_key(|r| (r.started.parse::<Timestamp>().ok(), r.uid.clone()));
        let known: HashSet<String> = history
            .events_with_uid()?
            .into_iter()
            .map(|(uid, _)| uid)
            .collect();
        let mut new = 0;
        for r in records.iter().filter(|r| !known.contains(&r.uid)) {
            if history.import_event(&r.uid, &r.event())? {
                new += 1;
            }
        }

        let local = local_marks(history)?;
        for (tag, swarm) in self.marks().await? {
            let take = match local.get(&tag) {
                None => true,
                Some((here, at)) => {
                    (here.mark, here.at.as_str()) != (swarm.mark, swarm.record.at.as_str())
                        && swarm.at >= *at
                }
            };
            if take {
                history.set_mark_at(&tag, swarm.mark, &swarm.record.at)?;
                new += 1;
            }
        }
        Ok(new)
    }

    /// Local ended events not yet in the swarm, and every local mark that differs from the
    /// swarm's and was set later (or that the swarm lacks), → into the swarm. Returns how
    /// many records were written.
    ///
    /// Changing a mark deletes its config and creates the new one: hold the app's cluster
    /// lock while pushing.
    pub async fn push(&self, history: &History) -> Result<usize> {
        debug_assert_eq!(history.app(), self.app, "a store and a history of one app");
        let in_swarm: HashSet<String> = self.events().await?.into_iter().map(|r| r.uid).collect();
        let mut written = 0;
        for (uid, event) in history.events_with_uid()? {
            let ended = Outcome::parse(&event.outcome).is_some_and(Outcome::has_ended);
            if !ended || in_swarm.contains(&uid) {
                continue;
            }
            let data = EventRecord::of(&self.app, &uid, &event).to_json();
            if data.len() > MAX_DATA {
                return Err(Error::TooLarge {
                    app: self.app.clone(),
                    uid,
                    size: data.len(),
                });
            }
            let name = event_config_name(&self.app, &uid);
            match self.create(&name, "event", None, &data).await {
                Ok(()) => written += 1,
                // The same name is the same uid: another push wrote this event first.
                Err(e) if e.status() == Some(409) => {}
                Err(e) => return Err(e),
            }
        }

        let swarm = self.marks().await?;
        for (here, at) in local_marks(history)?.into_values() {
            let old = match swarm.get(&here.tag) {
                None => None,
                Some(s) if (s.mark, s.record.at.as_str()) == (here.mark, here.at.as_str()) => {
                    continue;
                }
                Some(s) if at > s.at => Some(s),
                // Set later in the swarm (or at the same time): a pull brings it here.
                Some(_) => continue,
            };
            if let Some(old) = old {
                self.delete(&old.config, &here.tag).await?;
            }
            let data = MarkRecord::of(&self.app, &here).to_json();
            let name = mark_config_name(&self.app, &here.tag);
            self.create(&name, "mark", Some(here.mark), &data).await?;
            written += 1;
        }
        Ok(written)
    }

    /// The app's events in the swarm, read and checked.
    async fn events(&self) -> Result<Vec<EventRecord>> {
        let mut records = Vec::new();
        for stored in self.list("event").await? {
            let record: EventRecord = stored.record("event")?;
            record
                .check(&self.app)
                .map_err(|reason| Error::Unreadable {
                    name: stored.name.clone(),
                    kind: "event",
                    reason,
                })?;
            records.push(record);
        }
        Ok(records)
    }

    /// The app's marks in the swarm, by tag; of two records of one tag (left behind by a
    /// writer without the lock), the one set later.
    async fn marks(&self) -> Result<HashMap<String, SwarmMark>> {
        let mut out: HashMap<String, SwarmMark> = HashMap::new();
        for stored in self.list("mark").await? {
            let record: MarkRecord = stored.record("mark")?;
            let (mark, at) = record
                .check(&self.app)
                .map_err(|reason| Error::Unreadable {
                    name: stored.name.clone(),
                    kind: "mark",
                    reason,
                })?;
            let later = out.get(&record.tag).is_none_or(|m| at > m.at);
            if later {
                out.insert(
                    record.tag.clone(),
                    SwarmMark {
                        config: stored.id,
                        record,
                        mark,
                        at,
                    },
                );
            }
        }
        Ok(out)
    }

    /// The app's records of one kind, with their data.
    async fn list(&self, kind: &'static str) -> Result<Vec<Stored>> {
        let doing = || format!("listing the {kind} records of {} in the swarm", self.app);
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_APP}={}", self.app),
                format!("{LABEL_KIND}={kind}"),
            ],
        )]);
        let options = ListConfigsOptionsBuilder::default()
            .filters(&filters)
            .build();
        let configs = self
            .docker
            .list_configs(Some(options))
            .await
            .map_err(|e| Error::api(doing(), e))?;
        tracing::debug!(app = %self.app, kind, count = configs.len(), "listed swarm configs");
        let mut out = Vec::with_capacity(configs.len());
        for config in configs {
            let id = config.id.unwrap_or_default();
            let spec = config.spec.unwrap_or_default();
            let name = spec.name.unwrap_or_else(|| id.clone());
            // The list carries every config's data; should an engine leave it out, ask.
            let data = match spec.data {
                Some(data) => data,
                None => self
                    .docker
                    .inspect_config(&id)
                    .await
                    .map_err(|e| Error::api(format!("reading the swarm config {name}"), e))?
                    .spec
                    .and_then(|s| s.data)
                    .unwrap_or_default(),
            };
            let data = super::names::decode(&data).ok_or_else(|| Error::Unreadable {
                name: name.clone(),
                kind,
                reason: "its data is not base64".into(),
            })?;
            out.push(Stored { id, name, data });
        }
        Ok(out)
    }

    async fn create(
        &self,
        name: &str,
        kind: &'static str,
        mark: Option<Mark>,
        data: &[u8],
    ) -> Result<()> {
        let mut labels = HashMap::from([
            (LABEL_APP.to_string(), self.app.clone()),
            (LABEL_KIND.to_string(), kind.to_string()),
        ]);
        if let Some(mark) = mark {
            labels.insert(LABEL_MARK.to_string(), mark.as_str().to_string());
        }
        let spec = ConfigSpec {
            name: Some(name.to_string()),
            labels: Some(labels),
            data: Some(super::names::encode(data)),
            ..Default::default()
        };
        let result = self.docker.create_config(spec).await;
        tracing::debug!(name, ok = result.is_ok(), "created swarm config");
        result
            .map(|_| ())
            .map_err(|e| Error::api(format!("creating the swarm config {name}"), e))
    }

    /// Delete a mark's config (by id); one already gone is fine.
    async fn delete(&self, id: &str, tag: &str) -> Result<()> {
        let result = self.docker.delete_config(id).await;
        tracing::debug!(id, tag, ok = result.is_ok(), "deleted swarm config");
        match result {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(Error::api(
                format!("replacing the mark of {tag} of {} in the swarm", self.app),
                e,
            )),
        }
    }
}

/// The local marks by tag, with when each was set. A time that does not parse (nothing
/// dockmaster writes) reads as the oldest, so the swarm's mark wins over it.
fn local_marks(history: &History) -> Result<HashMap<String, (MarkAt, Timestamp)>> {
    Ok(history
        .marks_at()?
        .into_iter()
        .map(|m| {
            let at = m.at.parse().unwrap_or(Timestamp::MIN);
            (m.tag.clone(), (m, at))
        })
        .collect())
}

/// The config of an ended event: `dockmaster-<app>-e-<uid>`.
pub fn event_config_name(app: &str, uid: &str) -> String {
    format!(
        "{PREFIX}{}-e-{}",
        name_part(app, MAX_APP_PART),
        name_part(uid, 32)
    )
}

/// The config of a release's mark: `dockmaster-<app>-m-<tag>`.
pub fn mark_config_name(app: &str, tag: &str) -> String {
    format!(
        "{PREFIX}{}-m-{}",
        name_part(app, MAX_APP_PART),
        name_part(tag, MAX_TAG_PART)
    )
}

/// `s` as a piece of a Swarm object name of at most `max` characters (`max` > 9). `s` itself
/// when it fits: only `[A-Za-z0-9_.-]`, not too long, ending in a letter or digit. Else its
/// first characters (others replaced by `_`), `-` and 8 hex digits of a hash of all of `s`,
/// so that two names that read alike once cut stay apart. The hash is SHA-256's
/// (`names::short_hash`): every machine must compute the same name from the same app.
fn name_part(s: &str, max: usize) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let fits = !s.is_empty()
        && s.len() <= max
        && s.chars().all(allowed)
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if fits {
        return s.to_string();
    }
    let keep: String = s
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(max - 9)
        .collect();
    format!("{keep}-{}", super::names::short_hash(s, 8))
}

/// 32 lowercase hex digits, as the history writes uids.
fn is_uid(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    /// What Docker accepts as a config name (swarmkit's check).
    fn valid_swarm_name(name: &str) -> bool {
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        name.len() <= MAX_NAME
            && alnum(name.chars().next())
            && alnum(name.chars().last())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }

    const UID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn names_that_fit_are_kept_as_they_are() {
        assert_eq!(
            event_config_name("shop-web", UID),
            format!("dockmaster-shop-web-e-{UID}")
        );
        assert_eq!(
            mark_config_name("shop-web", "2026.01.10-abc123f"),
            "dockmaster-shop-web-m-2026.01.10-abc123f"
        );
        assert_eq!(name_part("my_app.v2", 18), "my_app.v2");
        assert_eq!(MAX_APP_PART, 18);
        assert_eq!(MAX_TAG_PART, 32);
    }

    #[test]
    fn names_are_sanitized_cut_and_hashed_and_stay_apart() {
        let long = "a-very-long-compose-project-name-web";
        let odd = "shop web/ü";
        for app in [long, odd, "shop_web_", "", "x".repeat(200).as_str()] {
            for name in [
                event_config_name(app, UID),
                mark_config_name(app, "2026.01.10-abc123f"),
                mark_config_name(app, &"t/ag ".repeat(20)),
            ] {
                assert!(valid_swarm_name(&name), "{app:?} -> {name:?}");
            }
        }
        let part = name_part(long, MAX_APP_PART);
        assert_eq!(part.len(), MAX_APP_PART);
        assert!(part.starts_with("a-very-lo-"), "{part}");
        assert_eq!(
            part,
            format!(
                "a-very-lo-{}",
                crate::runtime::swarm::names::short_hash(long, 8)
            )
        );
        assert_eq!(
            name_part(odd, MAX_APP_PART),
            format!(
                "shop_web_-{}",
                crate::runtime::swarm::names::short_hash(odd, 8)
            )
        );
        // Alike once sanitized or cut, apart by their hash.
        assert_ne!(name_part("shop web", 18), name_part("shop_web", 18));
        assert_ne!(name_part("shop/web", 18), name_part("shop web", 18));
        assert_ne!(
            name_part(&format!("{long}-1"), 18),
            name_part(&format!("{long}-2"), 18)
        );
    }

    #[test]
    fn a_record_from_a_newer_dockmaster_or_not_ours_is_refused_with_a_hint() {
        let stored = |data: &str| Stored {
            id: "id".into(),
            name: "dockmaster-app-e-x".into(),
            data: data.as_bytes().to_vec(),
        };
        let e = stored(r#"{"format":2,"whatever":true}"#)
            .record::<EventRecord>("event")
            .unwrap_err();
        assert!(matches!(e, Error::NewerFormat { found: 2, .. }), "{e:?}");
        let e = crate::error::Error::from(e);
        assert_eq!(e.code(), exit::FAILED);
        assert!(
            e.to_string()
                .ends_with("\nhint: upgrade dockmaster here to the version the other machines run"),
            "{e}"
        );

        let e = stored("hello").record::<EventRecord>("event").unwrap_err();
        let text = crate::error::Error::from(e).to_string();
        assert!(
            text.starts_with(
                "the swarm config dockmaster-app-e-x is not a readable dockmaster event record: "
            ),
            "{text}"
        );
        assert!(
            text.contains("\nhint: `docker config inspect dockmaster-app-e-x` shows it;"),
            "{text}"
        );

        // Fields this dockmaster does not know are left alone.
        let record = EventRecord {
            format: FORMAT,
            uid: UID.into(),
            app: "app".into(),
            command: "deploy".into(),
            from: None,
            to: Some("2026.01.10-abc123f".into()),
            started: "2026-01-10T10:00:00Z".into(),
            ended: Some("2026-01-10T10:01:00.25Z".into()),
            duration_ms: Some(60250),
            outcome: "succeeded".into(),
            reason: None,
            user: "ops".into(),
            host: "nas".into(),
        };
        let mut json = serde_json::to_value(&record).unwrap();
        json["added_later"] = serde_json::json!(1);
        let read: EventRecord = stored(&json.to_string()).record("event").unwrap();
        assert_eq!(read, record);
        assert_eq!(read.check("app"), Ok(()));
        assert!(read.check("other").is_err());
        for outcome in ["running", "watching", "done"] {
            let r = EventRecord {
                outcome: outcome.into(),
                ..record.clone()
            };
            assert!(r.check("app").is_err(), "{outcome}");
        }
        let r = EventRecord {
            uid: "../x".into(),
            ..record.clone()
        };
        assert!(r.check("app").is_err());
    }

    #[test]
    fn an_engine_that_is_no_manager_says_where_to_point() {
        let e = Error::api(
            "listing the event records of app in the swarm",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 503,
                message: "This node is not a swarm manager.".into(),
            },
        );
        let text = crate::error::Error::from(e).to_string();
        assert_eq!(
            text,
            "Docker engine error while listing the event records of app in the swarm: 503 Service Unavailable: This node is not a swarm manager.\nhint: this engine is not a swarm manager: point DOCKER_HOST at a manager (`docker node ls` works there)"
        );
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let reason = "é".repeat(MAX_REASON);
        let cut = cut(&reason, MAX_REASON);
        assert!(cut.len() <= MAX_REASON && cut.len() > MAX_REASON - 2);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
