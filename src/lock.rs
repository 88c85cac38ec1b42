//! One operation at a time per app: an exclusive `flock` on `<state>/<app>.lock`.
//!
//! The kernel drops the lock when the holder's process ends, however it ends, so a crash
//! or `kill -9` never leaves a stale lock. The file's content (who, since when, doing what)
//! is only information for the one that finds it held.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Kind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the lock was not taken. `Display` is the message alone; [`Error::hint`] is the fix,
/// which the conversion into [`crate::error::Error`] puts on its own `hint:` line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds it (exit 3). `holder` is what it wrote in the lock file, when
    /// that was readable.
    #[error("another operation holds the lock for {app}{}: {}",
        match waited { Some(w) => format!(" (waited {})", crate::output::human_duration(*w)), None => String::new() },
        match holder {
            Some(h) => format!("`dockmaster {}` by {}@{} (pid {}) since {}", h.command, h.user, h.host, h.pid, h.since),
            None => "another dockmaster process".to_string(),
        }
    )]
    Held {
        app: String,
        /// Boxed: it is large, and `Result<Lock>` is on every command's path.
        holder: Option<Box<Holder>>,
        /// How long this process waited for it (`--wait-lock`).
        waited: Option<Duration>,
    },

    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot open the lock {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The engine refused or did not answer a call on the cluster-wide lock, the Swarm config
    /// `name` (see `runtime::swarm::lock`). `status` is the engine's HTTP status, when it
    /// answered.
    #[error("cannot {doing} the cluster lock {name}: {}",
        match status { Some(s) => format!("{reason} (HTTP {s})"), None => reason.clone() })]
    Cluster {
        name: String,
        /// What dockmaster was doing, in the user's words ("take", "release").
        doing: String,
        status: Option<u16>,
        reason: String,
    },
}

impl Error {
    /// What the user can do about it: the last line of every message dockmaster prints.
    pub fn hint(&self) -> String {
        match self {
            Error::Held { .. } => {
                "wait for it to finish, or pass --wait-lock 5m to wait here".into()
            }
            Error::StateDir { .. } | Error::Open { .. } => {
                "pick a writable place with --state-dir".into()
            }
            Error::Lock { .. } => {
                "the state directory must be on a file system with file locks (not every network share has them): pick another with --state-dir".into()
            }
            // 503: the engine is not a manager of a swarm (a worker, or no swarm at all).
            Error::Cluster {
                status: Some(503),
                ..
            } => "point DOCKER_HOST at a manager of the swarm (`docker node ls` works there)".into(),
            Error::Cluster { name, .. } => format!(
                "check that the engine answers (`docker config inspect {name}`), then try again"
            ),
        }
    }

    /// A held lock is its own outcome (exit 3): nothing failed, someone else is at work.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Held { .. } => Kind::Locked,
            _ => Kind::Failed,
        }
    }
}

impl From<Error> for crate::error::Error {
    fn from(e: Error) -> crate::error::Error {
        crate::error::Error::typed(e.kind(), e.to_string(), e.hint())
    }
}

pub struct Lock {
    // Held for its Drop: closing the file releases the lock.
    _file: File,
    pub path: PathBuf,
    /// The swarm-wide lock (runtime = "swarm"), held beside this machine's; its Drop
    /// removes it.
    cluster: Option<crate::runtime::swarm::lock::ClusterLock>,
    /// A stale swarm-wide lock this one took over, in words, for the command to say.
    pub taken_over: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub user: String,
    pub host: String,
    pub since: String,
    pub command: String,
}

impl Holder {
    /// This process, doing `command`, from now.
    pub fn this_process(command: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            user: crate::actor::user(),
            host: crate::actor::host(),
            since: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or(jiff::Timestamp::now())
                .to_string(),
            command: command.to_string(),
        }
    }
}

impl Lock {
    /// Take the app's lock, waiting up to `wait` for it (None: do not wait).
    pub fn acquire(
        state_dir: &Path,
        app: &str,
        command: &str,
        wait: Option<Duration>,
    ) -> Result<Lock> {
        std::fs::create_dir_all(state_dir).map_err(|source| Error::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(format!("{app}.lock"));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?;
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if deadline.is_some_and(|d| Instant::now() < d) {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                    // Only information for the message: unreadable is "someone". The holder
                    // writes it just after it took the lock, so a reader that comes in
                    // between finds it empty: look again, briefly, before saying "someone".
                    let mut holder = None;
                    for _ in 0..10 {
                        let mut text = String::new();
                        let _ = file.rewind();
                        let _ = file.read_to_string(&mut text);
                        holder = serde_json::from_str::<Holder>(&text).ok();
                        if holder.is_some() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return Err(Error::Held {
                        app: app.to_string(),
                        holder: holder.map(Box::new),
                        waited: wait,
                    });
                }
                Err(TryLockError::Error(source)) => {
                    return Err(Error::Lock { path, source });
                }
            }
        }
        let holder = Holder::this_process(command);
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(
            serde_json::to_string(&holder)
                .unwrap_or_default()
                .as_bytes(),
        );
        let _ = file.flush();
        Ok(Lock {
            _file: file,
            path,
            cluster: None,
            taken_over: None,
        })
    }

    /// Hold `cluster` too (runtime = "swarm": one operation at a time across machines).
    pub fn with_cluster(
        mut self,
        cluster: crate::runtime::swarm::lock::ClusterLock,
        taken_over: Option<String>,
    ) -> Lock {
        self.cluster = Some(cluster);
        self.taken_over = taken_over;
        self
    }

    /// Who holds the app's lock right now, as the refusal a second operation would get
    /// (None: it is free). `dockmaster serve` asks before it starts an action, so that a
    /// page can say who is at work instead of starting a command that would be refused.
    /// Like [`Lock::is_free`], the probe holds the lock for an instant when it is free.
    pub fn held(state_dir: &Path, app: &str) -> Option<Error> {
        let path = state_dir.join(format!("{app}.lock"));
        let mut f = File::options().read(true).write(true).open(&path).ok()?;
        match f.try_lock() {
            Ok(()) => {
                let _ = f.unlock();
                None
            }
            Err(_) => {
                let mut text = String::new();
                let _ = f.read_to_string(&mut text);
                Some(Error::Held {
                    app: app.to_string(),
                    holder: serde_json::from_str::<Holder>(&text).ok().map(Box::new),
                    waited: None,
                })
            }
        }
    }

    /// Is the app's lock free right now? (Used to tell a crashed run from a running one.)
    pub fn is_free(state_dir: &Path, app: &str) -> bool {
        let path = state_dir.join(format!("{app}.lock"));
        match File::options().read(true).write(true).open(&path) {
            Ok(f) => match f.try_lock() {
                Ok(()) => {
                    let _ = f.unlock();
                    true
                }
                Err(_) => false,
            },
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    #[test]
    fn a_held_lock_names_its_holder_and_exits_3() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Lock::acquire(dir.path(), "app", "deploy", None).unwrap();
        // flock belongs to the open file, so a second open in this process is refused too.
        let e = match Lock::acquire(dir.path(), "app", "prune", None) {
            Err(e) => e,
            Ok(_) => panic!("the lock was taken twice"),
        };
        assert!(matches!(&e, Error::Held { holder: Some(h), .. } if h.command == "deploy"));
        let e = crate::error::Error::from(e);
        assert_eq!(e.code(), exit::LOCKED);
        let text = e.to_string();
        assert!(
            text.starts_with("another operation holds the lock for app: `dockmaster deploy` by "),
            "{text}"
        );
        assert!(
            text.contains(" (pid ") && text.contains(") since "),
            "{text}"
        );
        assert!(
            text.ends_with("\nhint: wait for it to finish, or pass --wait-lock 5m to wait here")
        );
    }

    #[test]
    fn an_unusable_state_directory_names_it_and_points_to_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let e = match Lock::acquire(&file, "app", "deploy", None) {
            Err(e) => crate::error::Error::from(e),
            Ok(_) => panic!("a lock under a file"),
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
    }
}
