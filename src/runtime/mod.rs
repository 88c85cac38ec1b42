//! Where releases run: the seam between the go-live policy (`crate::golive`) and a place
//! that can start, gate, switch to, stop and list releases.
//!
//! `compose::ComposeRuntime` is one host with docker compose (start-first through
//! dockmaster's proxy, or recreate). The commands and the go-live policy use only this trait,
//! so a second runtime (a Swarm service whose releases live on several engines) changes
//! neither: it answers the same questions — which releases exist, what serves now, start
//! this release, is it healthy, move traffic, what happens to the one that served — for
//! however many engines it spans, and takes a lock that holds across machines.

pub mod compose;
pub mod swarm;

pub use any::AnyRuntime;
mod any;

use std::time::Duration;

use crate::error::Result;
use crate::health::Verdict;
use crate::lock::Lock;
use crate::release::{Release, Tag};
use crate::settings::{Standby, Strategy};

/// A release to put live: its tag and the image id the tag must resolve to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tag: String,
    pub image_id: String,
}

impl Target {
    pub fn of(release: &Release) -> Target {
        Target {
            tag: release.tag.to_string(),
            image_id: release.image_id.clone(),
        }
    }
}

/// What serves the service now.
#[derive(Clone, Debug)]
pub struct Serving {
    /// The container that serves the traffic: the release container the proxy sends it to
    /// (start-first), else the service's own container.
    pub container: crate::engine::ContainerInfo,
    /// The release whose image it runs, when it runs one of the app's releases.
    pub release: Option<Release>,
    /// The switch proxy, when the service's container is one.
    pub proxy: Option<crate::engine::ContainerInfo>,
}

impl Serving {
    pub fn tag(&self) -> Option<&Tag> {
        self.release.as_ref().map(|r| &r.tag)
    }

    pub fn tag_string(&self) -> Option<String> {
        self.tag().map(Tag::to_string)
    }
}

/// The release kept beside the live one after a start-first switch (never more than one).
#[derive(Clone, Debug)]
pub struct StandbyNow {
    /// The release it runs, by its container's label.
    pub tag: Option<String>,
    pub container: crate::engine::ContainerInfo,
    /// Running (hot) or stopped (cold).
    pub mode: Standby,
}

/// What the proxy counted for one release's container.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// The release it runs (its container's label), if known.
    pub release: Option<String>,
    pub container: String,
    pub counters: crate::proxy::metrics::Snapshot,
}

/// The strategy a switch uses, the container ports the proxy serves, and why (in words a
/// user reads: "start-first (zero downtime; proxying port 8080)").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub strategy: Strategy,
    pub ports: Vec<u16>,
    pub why: String,
}

/// A release container started for a switch.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: String,
    pub name: String,
    pub how: Started,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// A new container, created by compose.
    Created,
    /// The release's cold standby (stopped, same compose settings), started again.
    Restarted,
    /// The release's hot standby: it was running, drained, and takes traffic again.
    AlreadyRunning,
    /// The service's own container, recreated in place (the recreate strategy).
    Recreated,
    /// A Swarm service, updated to the release task by task.
    Updated,
}

/// Traffic moved: the facts, worded by the printer.
#[derive(Clone, Debug)]
pub struct Switched {
    /// The proxy that moved it.
    pub proxy: String,
    pub took: Duration,
    /// How long the old release's running requests took to finish.
    pub drained: Duration,
    /// Requests still running on the old release when `drain_timeout` ended.
    pub still_running: u64,
    /// The container that served before (now drained).
    pub from: Option<String>,
    /// Set when this switch first made the service's container the proxy.
    pub proxy_set_up: Option<ProxySetUp>,
}

#[derive(Clone, Debug)]
pub struct ProxySetUp {
    pub publishes_ports: bool,
    /// The service had a container before (a one-time recreate); else it is its first.
    pub replaced_a_container: bool,
}

/// Why traffic did not move.
#[derive(Clone, Debug)]
pub enum NotSwitched {
    /// Nothing changed: the release that served still serves.
    PreviousServing(String),
    /// The outcome is unknown (the proxy did not answer, or setting it up failed midway):
    /// the previous release must be put back to be sure.
    Unknown(String),
}

/// What became of the releases that are not live after a switch.
#[derive(Clone, Debug, Default)]
pub struct Retired {
    /// The release that served until now, kept as the standby (hot or cold), if any.
    pub standby: Option<(String, Standby)>,
    /// Containers stopped, with how long each took (after traffic had moved).
    pub stopped: Vec<crate::engine::Stopped>,
    /// Containers removed.
    pub removed: Vec<String>,
}

/// Everything the go-live policy and the commands ask of the place releases run.
///
/// `async fn` in a trait has no `Send` bound: dockmaster runs on a current-thread runtime,
/// and implementations are used through generics, never as trait objects.
#[allow(async_fn_in_trait)]
pub trait Runtime {
    /// Every kept release, newest first.
    async fn releases(&self) -> Result<Vec<Release>>;
    /// What serves now, if anything.
    async fn serving(&self, releases: &[Release]) -> Result<Option<Serving>>;
    /// What the proxy counted per release over `window` (None: no proxy counts this service's
    /// traffic — it switches with recreate, or its proxy predates counting).
    async fn traffic(&self, window: Duration) -> Result<Option<Vec<Traffic>>>;
    /// The standby kept beside what serves, if any.
    async fn standby(&self, serving: Option<&Serving>) -> Result<Option<StandbyNow>>;
    /// Remove a release (its tag; the image goes once nothing else names or uses it).
    async fn remove_release(&self, tag: &str) -> Result<()>;
    /// Refuse, before anything changes, to drive what this build cannot drive safely (a
    /// proxy set up by a newer dockmaster). Call after `serving`.
    fn check_drivable(&self) -> Result<()>;
    /// The app's lock: one deploy, rollback or prune at a time.
    async fn lock(&self, command: &str, wait: Option<Duration>) -> Result<Lock>;

    /// Make `target` runnable everywhere it may run, before anything live changes (Swarm:
    /// ship its image to every node that may run a task). An error leaves everything as it
    /// was. Returns what it did, in words, for the printer.
    async fn prepare(&self, _target: &Target) -> Result<Vec<String>> {
        Ok(vec![])
    }

    /// How go-live puts the previous release back after the target failed, in words.
    fn restore_why(&self) -> String {
        "recreate, to put the previous release back".into()
    }

    /// Pick the strategy for putting `target` live (`requested`: `--strategy`).
    async fn choose(&self, target: &Target, requested: Option<Strategy>) -> Result<Choice>;
    /// Start `target` beside what serves (start-first), not taking traffic yet. `serving` is
    /// the container that serves now: never reused as the candidate.
    async fn start_beside(&self, target: &Target, serving: Option<&str>) -> Result<Candidate>;
    /// Put `target` in place of what serves (recreate): the old one stops first.
    async fn put_in_place(&self, target: &Target) -> Result<Candidate>;
    /// Is the candidate healthy? Waits up to `timeout`.
    async fn gate(
        &self,
        candidate: &Candidate,
        timeout: Duration,
        interruptible: bool,
    ) -> Result<Verdict>;
    /// Its last log lines (for a failure message).
    async fn last_logs(&self, candidate: &Candidate, lines: usize) -> Result<String>;
    /// Move traffic to the candidate, draining the old release's requests.
    async fn take_traffic(
        &self,
        candidate: &Candidate,
        choice: &Choice,
        drain: Duration,
    ) -> std::result::Result<Switched, NotSwitched>;
    /// Check the candidate runs exactly the target image, then make `latest` name it.
    async fn confirm(
        &self,
        candidate: &Candidate,
        target: &Target,
    ) -> Result<std::result::Result<(), String>>;
    /// After a switch to `live`: keep `previous` (the container that served until now) as
    /// the standby `standby` says, stop or remove every other release container.
    async fn retire(
        &self,
        live: &Candidate,
        previous: Option<&str>,
        standby: Standby,
    ) -> Result<Retired>;
    /// Remove a candidate that will not take traffic.
    async fn discard(&self, candidate: &Candidate) -> Result<()>;
}
