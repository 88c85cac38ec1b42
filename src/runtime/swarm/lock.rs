//! The cluster-wide lock: one uniquely named Swarm config object per app.
//!
//! A file lock (`crate::lock`) holds on one machine only; a Swarm service is deployed from
//! whichever machine talks to a manager. The swarm's own store is the one place every
//! manager agrees on, and creating a config there is atomic: the leader checks the name and
//! stores the config in one raft transaction, so of any number of creates of
//! `dockmaster-lock-<app>`, from any manager, exactly one succeeds and every other is
//! refused with 409. Creating it is taking the lock; removing it is releasing it.
//!
//! Unlike a file lock, a config outlives the process that created it: a holder that crashes,
//! loses its machine or is killed with `-9` leaves it behind. So the holder proves it is
//! alive with a heartbeat (a label it rewrites every `stale_after / 4`), and a lock whose
//! heartbeat is older than `stale_after` is taken over. This assumes the machines' clocks
//! agree to well within `stale_after` (the heartbeat is the holder's clock, read against the
//! taker's); Swarm's own certificates need that too.
//!
//! Everything after the create is by the config's id, never by its name: a name is whoever
//! holds the lock now, an id is one holding of it. Removing a stale lock by id cannot remove
//! the fresh lock another taker created a moment earlier under the same name, and a holder
//! that was taken over (it froze longer than `stale_after`) and then releases removes
//! nothing but its own, long gone, config.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{Config, ConfigSpec};
use bollard::query_parameters::UpdateConfigOptionsBuilder;
use tokio::task::JoinHandle;

use crate::lock::{Error, Holder};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// On the lock's config: the app it locks (the app id as given, before
/// [`config_name`] made a config name of it).
pub const LABEL_LOCK: &str = "dev.dockmaster.lock";
/// On the lock's config: when its holder last proved it is alive, in Unix seconds.
pub const LABEL_HEARTBEAT: &str = "dev.dockmaster.heartbeat";
/// On the lock's config: the holder's fields, so `docker config ls` and `docker config
/// inspect` show who holds it without decoding the config's data.
pub const LABEL_PID: &str = "dev.dockmaster.lock.pid";
pub const LABEL_USER: &str = "dev.dockmaster.lock.user";
pub const LABEL_HOST: &str = "dev.dockmaster.lock.host";
pub const LABEL_SINCE: &str = "dev.dockmaster.lock.since";
pub const LABEL_COMMAND: &str = "dev.dockmaster.lock.command";

const NAME_PREFIX: &str = "dockmaster-lock-";
/// Swarm refuses config names longer than this.
const NAME_MAX: usize = 64;
/// How often a waiting `acquire` looks again.
const POLL: Duration = Duration::from_millis(200);
/// The heartbeat never runs more often than this, whatever `stale_after` is.
const BEAT_MIN: Duration = Duration::from_millis(100);
/// How long `Drop` may spend removing a lock that was not released.
const DROP_BOUND: Duration = Duration::from_secs(5);
/// How many times in a row `acquire` creates again at once because the lock it was refused
/// for was gone when it looked (released in between); then it waits or gives up as for a
/// held lock.
const VANISHED_RETRIES: usize = 10;

/// The app's lock, held: the config this process created. [`ClusterLock::release`] removes
/// it; dropping it unreleased removes it too, on a thread of its own (see `Drop`).
pub struct ClusterLock {
    docker: Docker,
    /// Where `Drop` connects to remove the config: `DOCKER_HOST` (or the local socket) when
    /// `None`, as `crate::engine::Engine::connect` does.
    host: Option<String>,
    name: String,
    /// Empty once released.
    id: String,
    heartbeat: Option<JoinHandle<()>>,
}

/// The stale lock an `acquire` removed before it took the lock.
#[derive(Clone, Debug)]
pub struct TakenOver {
    /// Who held it, as its labels said (`None`: they did not say).
    pub holder: Option<Holder>,
    /// How long its heartbeat had been silent.
    pub silent_for: Duration,
}

impl ClusterLock {
    /// Take the app's cluster lock, waiting up to `wait` (None: do not wait). A lock whose
    /// heartbeat is older than `stale_after` is taken over (returned in the Option).
    ///
    /// An unreleased lock is removed on `Drop` through a new connection to `DOCKER_HOST`
    /// (else the local socket): `docker` must be connected there. [`ClusterLock::acquire_on`]
    /// takes the address of any other engine.
    pub async fn acquire(
        docker: &Docker,
        app: &str,
        command: &str,
        wait: Option<Duration>,
        stale_after: Duration,
    ) -> Result<(ClusterLock, Option<TakenOver>)> {
        Self::take(docker, None, app, command, wait, stale_after).await
    }

    /// [`ClusterLock::acquire`] through a `docker` connected to `host` (`unix://…`,
    /// `tcp://…`), which is where `Drop` connects to remove an unreleased lock (bollard does
    /// not tell a client's address).
    pub async fn acquire_on(
        docker: &Docker,
        host: &str,
        app: &str,
        command: &str,
        wait: Option<Duration>,
        stale_after: Duration,
    ) -> Result<(ClusterLock, Option<TakenOver>)> {
        Self::take(
            docker,
            Some(host.to_string()),
            app,
            command,
            wait,
            stale_after,
        )
        .await
    }

    async fn take(
        docker: &Docker,
        host: Option<String>,
        app: &str,
        command: &str,
        wait: Option<Duration>,
        stale_after: Duration,
    ) -> Result<(ClusterLock, Option<TakenOver>)> {
        let name = config_name(app);
        let holder = Holder::this_process(command);
        let deadline = wait.map(|w| Instant::now() + w);
        let mut taken_over: Option<TakenOver> = None;
        let mut vanished = 0;
        loop {
            let spec = spec(&name, app, &holder, unix_now());
            match docker.create_config(spec).await {
                Ok(created) => {
                    let lock = ClusterLock {
                        docker: docker.clone(),
                        host,
                        heartbeat: Some(tokio::spawn(heartbeat(
                            docker.clone(),
                            name.clone(),
                            created.id.clone(),
                            (stale_after / 4).max(BEAT_MIN),
                        ))),
                        name,
                        id: created.id,
                    };
                    tracing::debug!(lock = lock.name, id = lock.id, "took the cluster lock");
                    return Ok((lock, taken_over));
                }
                Err(e) if status(&e) == Some(409) => {}
                Err(e) => return Err(cluster_error(&name, "take", &e)),
            }

            // Held: by whom, and is it alive?
            let found = match docker.inspect_config(&name).await {
                Ok(config) => Found::of(&config),
                Err(e) if status(&e) == Some(404) && vanished < VANISHED_RETRIES => {
                    // Released between our create and this look: create again at once.
                    vanished += 1;
                    continue;
                }
                Err(e) if status(&e) == Some(404) => Found::default(),
                Err(e) => return Err(cluster_error(&name, "read", &e)),
            };
            vanished = 0;

            // One takeover per acquire: a lock that is stale again right after is someone
            // else's fresh one seen through a skewed clock, and taking that over would let
            // two takers remove each other's lock in turn.
            let stale = found.silent_for.filter(|s| *s > stale_after);
            if let (Some(silent_for), None, Some(id)) = (stale, &taken_over, &found.id) {
                match docker.delete_config(id).await {
                    // 404: another taker removed it first; the create below decides.
                    Ok(()) => {}
                    Err(e) if status(&e) == Some(404) => {}
                    Err(e) => return Err(cluster_error(&name, "take over", &e)),
                }
                tracing::info!(
                    lock = name,
                    id,
                    silent_for = ?silent_for,
                    "removed a stale cluster lock"
                );
                taken_over = Some(TakenOver {
                    holder: found.holder,
                    silent_for,
                });
                continue;
            }

            if deadline.is_some_and(|d| Instant::now() < d) {
                tokio::time::sleep(POLL).await;
                continue;
            }
            return Err(Error::Held {
                app: app.to_string(),
                holder: found.holder.map(Box::new),
                waited: wait,
            });
        }
    }

    /// Release the lock: stop the heartbeat, then remove this holding's config (by id). A
    /// config already gone (taken over while this process was silent) is not an error: there
    /// is nothing of this holding left to remove.
    ///
    /// When the engine refuses, or this future is dropped before it answered, the lock is
    /// still this holding's, so `Drop` tries once more; after that the config, with no
    /// heartbeat, is taken over once it is `stale_after` old.
    pub async fn release(mut self) -> Result<()> {
        if let Some(beat) = self.heartbeat.take() {
            beat.abort();
            let _ = beat.await;
        }
        let removed = self.docker.delete_config(&self.id).await;
        let (name, id) = (&self.name, &self.id);
        match removed {
            Ok(()) => tracing::debug!(lock = name, id, "released the cluster lock"),
            Err(e) if status(&e) == Some(404) => tracing::warn!(
                lock = name,
                id,
                "the cluster lock was already gone when released (taken over?)"
            ),
            Err(e) => return Err(cluster_error(name, "release", &e)),
        }
        self.id.clear();
        Ok(())
    }

    /// The config's name: `dockmaster-lock-<app>` (see [`config_name`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config's id: this holding of the lock.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for ClusterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLock")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for ClusterLock {
    /// Removes an unreleased lock (an early return, a `?`, a panic), so the next operation
    /// need not wait `stale_after` for it.
    ///
    /// `docker` cannot do it: its pooled connections belong to the runtime that opened them,
    /// and that runtime is the one blocked in this `drop` (dockmaster's runtime has one
    /// thread) or already shutting down. So a thread of its own, with its own runtime and a
    /// new connection, removes the config by id, and `drop` waits for it at most
    /// [`DROP_BOUND`]. Nothing here panics: failures are logged, and the lock then goes
    /// stale and is taken over.
    fn drop(&mut self) {
        if let Some(beat) = self.heartbeat.take() {
            beat.abort();
        }
        if self.id.is_empty() {
            return;
        }
        let id = std::mem::take(&mut self.id);
        let name = self.name.clone();
        let host = self.host.clone();
        let (done, finished) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("dockmaster-unlock".into())
            .spawn(move || {
                let _ = done.send(remove_with_new_client(host.as_deref(), &id));
            });
        let outcome = match worker {
            Ok(_) => finished
                .recv_timeout(DROP_BOUND + Duration::from_millis(500))
                .unwrap_or_else(|_| Err(format!("no answer within {DROP_BOUND:?}"))),
            Err(e) => Err(format!("cannot start a thread: {e}")),
        };
        match outcome {
            Ok(()) => tracing::debug!(lock = name, "released the cluster lock on drop"),
            Err(reason) => tracing::warn!(
                lock = name,
                "could not release the cluster lock on drop ({reason}); it is taken over once its heartbeat is stale"
            ),
        }
    }
}

/// Remove config `id` through a new client on a new current-thread runtime, within
/// [`DROP_BOUND`]. A config already gone is removed.
fn remove_with_new_client(host: Option<&str>, id: &str) -> std::result::Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let remove = async {
            let docker = match host {
                Some(host) => Docker::connect_with_host(host),
                None => Docker::connect_with_defaults(),
            }
            .map_err(|e| e.to_string())?;
            let docker = docker
                .negotiate_version()
                .await
                .map_err(|e| e.to_string())?;
            match docker.delete_config(id).await {
                Ok(()) => Ok(()),
                Err(e) if status(&e) == Some(404) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        };
        tokio::time::timeout(DROP_BOUND, remove)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {DROP_BOUND:?}")))
    })
}

/// Rewrite the heartbeat label of config `id` every `every`, until it is aborted or the
/// config is gone. An update names the version it read (Swarm refuses an update of a
/// version that has moved on), and only labels may change in a config, so the data is sent
/// back as read.
async fn heartbeat(docker: Docker, name: String, id: String, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let config = match docker.inspect_config(&id).await {
            Ok(config) => config,
            Err(e) if status(&e) == Some(404) => {
                let now = match docker.inspect_config(&name).await {
                    Ok(config) => match Found::of(&config).holder {
                        Some(h) => format!(
                            "now held by `dockmaster {}` by {}@{} (pid {})",
                            h.command, h.user, h.host, h.pid
                        ),
                        None => "replaced by another config of that name".into(),
                    },
                    Err(_) => "removed".into(),
                };
                tracing::warn!(
                    lock = name,
                    id,
                    "the cluster lock was taken from this process ({now}): the heartbeat stops"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(lock = name, id, "cluster lock heartbeat: reading it: {e}");
                continue;
            }
        };
        let Some(version) = config.version.and_then(|v| v.index) else {
            tracing::warn!(
                lock = name,
                id,
                "cluster lock heartbeat: the config has no version"
            );
            continue;
        };
        let mut spec = config.spec.unwrap_or_default();
        spec.labels
            .get_or_insert_with(HashMap::new)
            .insert(LABEL_HEARTBEAT.into(), unix_now().to_string());
        let options = UpdateConfigOptionsBuilder::default()
            .version(version as i64)
            .build();
        if let Err(e) = docker.update_config(&id, spec, options).await {
            // 404 here is a takeover between the read and the update: the next read says so.
            tracing::warn!(lock = name, id, "cluster lock heartbeat: updating it: {e}");
        }
    }
}

/// The config name of `app`'s lock: `dockmaster-lock-<app>`. Swarm allows only
/// `[A-Za-z0-9_.-]`, at most 64 characters, beginning and ending with a letter or digit, so
/// an app id that does not fit as it is gets its other characters replaced by `-`, is cut to
/// fit, and is followed by a hash of the whole app id: two app ids never share a lock
/// because they look alike once cleaned. The hash is SHA-256's (`names::short_hash`): the
/// name must be the same on every machine and in every dockmaster version.
pub fn config_name(app: &str) -> String {
    let clean: String = app
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let plain = format!("{NAME_PREFIX}{clean}");
    let fits = clean == app
        && plain.len() <= NAME_MAX
        && app.ends_with(|c: char| c.is_ascii_alphanumeric());
    if fits {
        return plain;
    }
    let hash = super::names::short_hash(app, 12);
    let hash = &hash[..12];
    let room = NAME_MAX - NAME_PREFIX.len() - 1 - hash.len();
    // `clean` is ASCII, so any byte index is a character boundary.
    let head = &clean[..clean.len().min(room)];
    if head.is_empty() {
        format!("{NAME_PREFIX}{hash}")
    } else {
        format!("{NAME_PREFIX}{head}-{hash}")
    }
}

/// The config that is the lock: the holder as JSON data (what `docker config inspect
/// --pretty` shows) and, for reading without decoding, as labels beside the heartbeat.
fn spec(name: &str, app: &str, holder: &Holder, now: i64) -> ConfigSpec {
    let labels = HashMap::from([
        (LABEL_LOCK.to_string(), app.to_string()),
        (LABEL_HEARTBEAT.to_string(), now.to_string()),
        (LABEL_PID.to_string(), holder.pid.to_string()),
        (LABEL_USER.to_string(), holder.user.clone()),
        (LABEL_HOST.to_string(), holder.host.clone()),
        (LABEL_SINCE.to_string(), holder.since.clone()),
        (LABEL_COMMAND.to_string(), holder.command.clone()),
    ]);
    ConfigSpec {
        name: Some(name.to_string()),
        labels: Some(labels),
        data: Some(super::names::encode(
            serde_json::to_string(holder).unwrap_or_default().as_bytes(),
        )),
        templating: None,
    }
}

/// What a lock config found in place says.
#[derive(Default)]
struct Found {
    id: Option<String>,
    holder: Option<Holder>,
    /// Since its last heartbeat; `None` without a readable heartbeat label (not a lock this
    /// code made: never taken over).
    silent_for: Option<Duration>,
}

impl Found {
    fn of(config: &Config) -> Found {
        let empty = HashMap::new();
        let labels = config
            .spec
            .as_ref()
            .and_then(|s| s.labels.as_ref())
            .unwrap_or(&empty);
        let label = |key: &str| labels.get(key).cloned();
        let holder = (|| {
            Some(Holder {
                pid: label(LABEL_PID)?.parse().ok()?,
                user: label(LABEL_USER)?,
                host: label(LABEL_HOST)?,
                since: label(LABEL_SINCE)?,
                command: label(LABEL_COMMAND)?,
            })
        })();
        let silent_for = label(LABEL_HEARTBEAT)
            .and_then(|beat| beat.parse::<i64>().ok())
            .map(|beat| {
                let now_ms = jiff::Timestamp::now().as_millisecond();
                Duration::from_millis(u64::try_from(now_ms - beat * 1000).unwrap_or(0))
            });
        Found {
            id: config.id.clone(),
            holder,
            silent_for,
        }
    }
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The engine's HTTP status, when it answered with one.
fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn cluster_error(name: &str, doing: &str, e: &bollard::errors::Error) -> Error {
    let reason = match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    Error::Cluster {
        name: name.to_string(),
        doing: doing.to_string(),
        status: status(e),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Swarm's rule for config names (swarmkit `isValidConfigOrSecretName`, and 64 at most).
    fn valid(name: &str) -> bool {
        let alnum = |c: char| c.is_ascii_alphanumeric();
        name.len() <= NAME_MAX
            && name.starts_with(alnum)
            && name.ends_with(alnum)
            && name
                .chars()
                .all(|c| alnum(c) || matches!(c, '_' | '.' | '-'))
    }

    #[test]
    fn an_app_id_that_fits_is_the_config_name_as_it_is() {
        assert_eq!(config_name("shop"), "dockmaster-lock-shop");
        assert_eq!(config_name("my_shop-2.v1"), "dockmaster-lock-my_shop-2.v1");
    }

    #[test]
    fn app_ids_that_do_not_fit_get_a_valid_name_and_never_share_one() {
        let long = "a".repeat(200);
        let ids = [
            "my shop",
            "my/shop",
            "my-shop",
            "shop-",
            "shop.",
            "",
            "ünïcode",
            long.as_str(),
            &long[..199],
        ];
        let names: Vec<String> = ids.iter().map(|id| config_name(id)).collect();
        for (id, name) in ids.iter().zip(&names) {
            assert!(valid(name), "{id:?} -> {name:?}");
        }
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        assert_eq!(config_name("my shop"), config_name("my shop"));
        assert!(config_name("my shop").starts_with("dockmaster-lock-my-shop-"));
    }

    #[test]
    fn a_lock_config_names_its_holder_and_heartbeat() {
        let holder = Holder::this_process("deploy");
        let spec = spec("dockmaster-lock-shop", "shop", &holder, 1_700_000_000);
        let config = Config {
            id: Some("abc".into()),
            spec: Some(spec),
            ..Default::default()
        };
        let found = Found::of(&config);
        let h = found.holder.expect("holder from the labels");
        assert_eq!((h.command.as_str(), h.pid), ("deploy", holder.pid));
        assert!(found.silent_for.expect("heartbeat") > Duration::from_secs(3600));
    }
}
