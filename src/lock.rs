//! One operation at a time per app: an exclusive `flock` on `<state>/<app>.lock`.
//!
//! The kernel drops the lock when the holder's process ends, however it ends, so a crash
//! or `kill -9` never leaves a stale lock. The file's content (who, since when, doing what)
//! is only information for the one that finds it held.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub struct Lock {
    // Held for its Drop: closing the file releases the lock.
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub user: String,
    pub host: String,
    pub since: String,
    pub command: String,
}

impl Lock {
    /// Take the app's lock, waiting up to `wait` for it (None: do not wait).
    pub fn acquire(
        state_dir: &Path,
        app: &str,
        command: &str,
        wait: Option<Duration>,
    ) -> Result<Lock> {
        fs::create_dir_all(state_dir).map_err(|e| {
            Error::failed(e.to_string()).hint("pick a writable place with --state-dir")
        })?;
        let path = state_dir.join(format!("{app}.lock"));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                Error::failed(format!("cannot open the lock {}: {e}", path.display()))
                    .hint("pick a writable place with --state-dir")
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
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let who = match serde_json::from_str::<Holder>(&text) {
                        Ok(h) => format!(
                            "`dockmaster {}` by {}@{} (pid {}) since {}",
                            h.command, h.user, h.host, h.pid, h.since
                        ),
                        Err(_) => "another dockmaster process".to_string(),
                    };
                    let waited = match wait {
                        Some(w) => format!(" (waited {})", crate::output::human_duration(w)),
                        None => String::new(),
                    };
                    return Err(Error::locked(format!(
                        "another operation holds the lock for {app}{waited}: {who}"
                    ))
                    .hint("wait for it to finish, or pass --wait-lock 5m to wait here"));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(Error::failed(format!(
                        "cannot lock {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        let holder = Holder {
            pid: std::process::id(),
            user: whoami::username(),
            host: whoami::fallible::hostname().unwrap_or_else(|_| "unknown".into()),
            since: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or(jiff::Timestamp::now())
                .to_string(),
            command: command.to_string(),
        };
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(
            serde_json::to_string(&holder)
                .unwrap_or_default()
                .as_bytes(),
        );
        let _ = file.flush();
        Ok(Lock { _file: file, path })
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
