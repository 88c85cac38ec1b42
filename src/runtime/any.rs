//! The runtime a command drives, chosen once from `runtime` (dockmaster.toml or
//! `--runtime`): an enum, so the commands stay plain functions and the go-live policy stays
//! generic over [`Runtime`].

use std::time::Duration;

use super::compose::ComposeRuntime;
use super::swarm::SwarmRuntime;
use super::{
    Candidate, Choice, NotSwitched, Retired, Runtime, Serving, StandbyNow, Switched, Target,
    Traffic,
};
use crate::engine::Engine;
use crate::error::Result;
use crate::health::Verdict;
use crate::lock::Lock;
use crate::release::Release;
use crate::settings::{App, Standby, Strategy};

pub enum AnyRuntime {
    Compose(ComposeRuntime),
    Swarm(SwarmRuntime),
}

/// `$rt.<method>(…)` on whichever runtime this is.
macro_rules! each {
    ($self:ident, $rt:ident => $call:expr) => {
        match $self {
            AnyRuntime::Compose($rt) => $call,
            AnyRuntime::Swarm($rt) => $call,
        }
    };
}

impl AnyRuntime {
    pub fn new(app: App, engine: Engine) -> AnyRuntime {
        match app.runtime {
            crate::settings::RuntimeKind::Compose => {
                AnyRuntime::Compose(ComposeRuntime::new(app, engine))
            }
            crate::settings::RuntimeKind::Swarm => {
                AnyRuntime::Swarm(SwarmRuntime::new(app, engine))
            }
        }
    }

    pub fn app(&self) -> &App {
        each!(self, rt => &rt.app)
    }

    pub fn engine(&self) -> &Engine {
        each!(self, rt => &rt.engine)
    }

    /// The compose runtime, for what only one host with compose has.
    pub fn compose(&self) -> Option<&ComposeRuntime> {
        match self {
            AnyRuntime::Compose(rt) => Some(rt),
            AnyRuntime::Swarm(_) => None,
        }
    }

    pub fn swarm(&self) -> Option<&SwarmRuntime> {
        match self {
            AnyRuntime::Compose(_) => None,
            AnyRuntime::Swarm(rt) => Some(rt),
        }
    }

    /// Begin finding the compose program in the background, where there is one to find.
    pub fn warm_up(&self) {
        if let Some(rt) = self.compose() {
            rt.warm_up();
        }
    }

    /// Compose found and usable, where the runtime runs compose.
    pub async fn compose_ready(&self) -> Result<()> {
        if let Some(rt) = self.compose() {
            rt.compose.get().await?;
        }
        Ok(())
    }
}

impl Runtime for AnyRuntime {
    async fn releases(&self) -> Result<Vec<Release>> {
        each!(self, rt => rt.releases().await)
    }
    async fn serving(&self, releases: &[Release]) -> Result<Option<Serving>> {
        each!(self, rt => rt.serving(releases).await)
    }
    async fn traffic(&self, window: Duration) -> Result<Option<Vec<Traffic>>> {
        each!(self, rt => rt.traffic(window).await)
    }
    async fn standby(&self, serving: Option<&Serving>) -> Result<Option<StandbyNow>> {
        each!(self, rt => rt.standby(serving).await)
    }
    async fn remove_release(&self, tag: &str) -> Result<()> {
        each!(self, rt => rt.remove_release(tag).await)
    }
    fn check_drivable(&self) -> Result<()> {
        each!(self, rt => rt.check_drivable())
    }
    async fn lock(&self, command: &str, wait: Option<Duration>) -> Result<Lock> {
        each!(self, rt => rt.lock(command, wait).await)
    }
    async fn prepare(&self, target: &Target) -> Result<Vec<String>> {
        each!(self, rt => rt.prepare(target).await)
    }
    fn restore_why(&self) -> String {
        each!(self, rt => rt.restore_why())
    }
    async fn choose(&self, target: &Target, requested: Option<Strategy>) -> Result<Choice> {
        each!(self, rt => rt.choose(target, requested).await)
    }
    async fn start_beside(&self, target: &Target, serving: Option<&str>) -> Result<Candidate> {
        each!(self, rt => rt.start_beside(target, serving).await)
    }
    async fn put_in_place(&self, target: &Target) -> Result<Candidate> {
        each!(self, rt => rt.put_in_place(target).await)
    }
    async fn gate(
        &self,
        candidate: &Candidate,
        timeout: Duration,
        interruptible: bool,
    ) -> Result<Verdict> {
        each!(self, rt => rt.gate(candidate, timeout, interruptible).await)
    }
    async fn last_logs(&self, candidate: &Candidate, lines: usize) -> Result<String> {
        each!(self, rt => rt.last_logs(candidate, lines).await)
    }
    async fn take_traffic(
        &self,
        candidate: &Candidate,
        choice: &Choice,
        drain: Duration,
    ) -> std::result::Result<Switched, NotSwitched> {
        each!(self, rt => rt.take_traffic(candidate, choice, drain).await)
    }
    async fn confirm(
        &self,
        candidate: &Candidate,
        target: &Target,
    ) -> Result<std::result::Result<(), String>> {
        each!(self, rt => rt.confirm(candidate, target).await)
    }
    async fn retire(
        &self,
        live: &Candidate,
        previous: Option<&str>,
        standby: Standby,
    ) -> Result<Retired> {
        each!(self, rt => rt.retire(live, previous, standby).await)
    }
    async fn discard(&self, candidate: &Candidate) -> Result<()> {
        each!(self, rt => rt.discard(candidate).await)
    }
}
