//! Who an operation is recorded as, in the history and in the lock: the user running
//! dockmaster, or `web` for what `dockmaster serve` runs on a page's behalf (it starts the
//! same command with the hidden `--actor web`).

use std::sync::OnceLock;

static ACTOR: OnceLock<String> = OnceLock::new();

/// Who acts for this process (once, at start).
pub fn set(actor: crate::cli::Actor) {
    let _ = ACTOR.set(actor.as_str().to_string());
}

/// The user an event or lock is recorded under.
pub fn user() -> String {
    ACTOR.get().cloned().unwrap_or_else(whoami::username)
}

pub fn host() -> String {
    whoami::fallible::hostname().unwrap_or_else(|_| "unknown".into())
}
