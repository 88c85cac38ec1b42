//! One host with docker compose: the first runtime.
//!
//! Two ways to put a release live:
//!
//! - **start-first** (`start_first.rs`, the default where it is safe): the release starts in
//!   a container of its own beside the live one and passes the health gate while the live one
//!   keeps serving; then dockmaster's proxy, which holds the service's name, `container_name`
//!   and published ports, moves traffic to it in one step and lets the old one's requests
//!   finish. The old container then becomes the standby (`standby` in dockmaster.toml).
//! - **recreate** (`recreate.rs`): compose stops the old container and starts the new one,
//!   as the guide's script does.

mod recreate;
mod start_first;
mod strategy;

use std::path::PathBuf;
use std::time::Duration;

use fs_err as fs;

pub use strategy::{ServiceFacts, choose_strategy};

use super::{
    Candidate, Choice, NotSwitched, Retired, Runtime, Serving, StandbyNow, Switched, Target,
    Traffic,
};
use crate::compose;
use crate::engine::{ContainerInfo, Engine, LABEL_RELEASE, LABEL_ROLE};
use crate::error::{Error, Result};
use crate::health::{HealthGate, Verdict};
use crate::lock::Lock;
use crate::proxy::protocol::{self, Reply, Request};
use crate::release::{Release, Tag};
use crate::settings::{App, Standby, Strategy};

pub struct ComposeRuntime {
    pub app: App,
    pub engine: Engine,
    pub compose: compose::Detected,
    /// The proxy's protocol version, once its status was asked (each switch needs it, and
    /// the command asked already to find what serves).
    proxy_protocol: std::sync::Mutex<Option<u32>>,
    /// The proxy's control port did not answer directly once: use `docker exec` from then on.
    direct_failed: std::sync::atomic::AtomicBool,
}

impl ComposeRuntime {
    pub fn new(app: App, engine: Engine) -> ComposeRuntime {
        let compose = compose::Detected::idle(app.env.compose_program.clone());
        ComposeRuntime {
            app,
            engine,
            compose,
            proxy_protocol: std::sync::Mutex::new(None),
            direct_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Begin finding the compose program in the background (a process or two), for a
    /// command that will likely need it; it is awaited only where it is needed.
    pub fn warm_up(&self) {
        self.compose.start();
    }

    /// The service's proxy, when its container is one and runs.
    async fn running_proxy(&self) -> Result<Option<ContainerInfo>> {
        Ok(self
            .engine
            .service_container(&self.app.project.name, &self.app.service)
            .await?
            .filter(|c| is_proxy(c) && c.running))
    }

    /// Send one control request to a proxy and read its reply. `None`: no answer in time.
    ///
    /// Straight to its control port over the container network when it can (a proxy set up
    /// with a token, an engine on this machine): a `docker exec` costs ~50 ms of the engine's
    /// time, a connection well under one. Else — an older proxy, a remote engine, addresses
    /// not reachable from here (rootless Docker) — through `docker exec … proxy-ctl`.
    async fn control(
        &self,
        proxy: &ContainerInfo,
        request: &Request,
        timeout: Duration,
    ) -> Result<Option<std::result::Result<Reply, String>>> {
        if let Some(reply) = self.control_direct(proxy, request, timeout).await {
            return Ok(reply.map(|line| {
                Reply::parse(request, &line).map_err(|e| format!("{e} (it said: {})", line.trim()))
            }));
        }
        let mut cmd = vec!["/dockmaster".to_string(), "proxy-ctl".to_string()];
        cmd.extend(request.words());
        let Some((_, text)) = self.engine.exec_output(&proxy.id, cmd, timeout).await? else {
            return Ok(None);
        };
        Ok(Some(
            Reply::parse(request, &text).map_err(|e| format!("{e} (it said: {})", text.trim())),
        ))
    }

    /// The direct way of `control`; `None` when it does not apply or the connection fails
    /// (then `docker exec` is used), `Some(None)` when the proxy took the request but did not
    /// answer in time (not sent again: a switch may be under way).
    async fn control_direct(
        &self,
        proxy: &ContainerInfo,
        request: &Request,
        timeout: Duration,
    ) -> Option<Option<String>> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let token = proxy.labels.get(crate::engine::LABEL_CONTROL_TOKEN)?;
        if !self.engine.is_local()
            || self
                .direct_failed
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let ip = proxy.ip_addresses.first()?;
        let addr = format!("{ip}:{}", crate::proxy::CONTROL_PORT);
        let connect = tokio::net::TcpStream::connect(&addr);
        let stream = match tokio::time::timeout(Duration::from_millis(300), connect).await {
            Ok(Ok(s)) => s,
            other => {
                tracing::debug!(%addr, ?other, "proxy control port not reachable; using docker exec");
                self.direct_failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let (r, mut w) = stream.into_split();
        let line = format!("{}\n", protocol::with_token(token, request));
        if w.write_all(line.as_bytes()).await.is_err() {
            return None;
        }
        let mut reply = String::new();
        let mut reader = tokio::io::BufReader::new(r);
        match tokio::time::timeout(timeout, reader.read_line(&mut reply)).await {
            Ok(Ok(n)) if n > 0 => Some(Some(reply)),
            Ok(_) => None,
            Err(_) => Some(None),
        }
    }

    /// Where the proxy sends traffic, and its protocol version, asked from the proxy.
    async fn proxy_status(&self, proxy: &ContainerInfo) -> Option<(String, u32)> {
        if !proxy.running {
            return None;
        }
        match self
            .control(proxy, &Request::Status, Duration::from_secs(5))
            .await
        {
            Ok(Some(Ok(Reply::Status {
                upstream, proto, ..
            }))) => {
                *self
                    .proxy_protocol
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(proto);
                Some((upstream, proto))
            }
            other => {
                tracing::debug!(?other, "proxy status unreadable");
                None
            }
        }
    }

    /// The release containers dockmaster started for the service.
    async fn app_containers(&self) -> Result<Vec<ContainerInfo>> {
        self.engine
            .app_containers(&self.app.project.name, &self.app.service)
            .await
            .map_err(Into::into)
    }
}

impl Runtime for ComposeRuntime {
    async fn releases(&self) -> Result<Vec<Release>> {
        Ok(self.engine.releases(&self.app.repository).await?)
    }

    async fn serving(&self, releases: &[Release]) -> Result<Option<Serving>> {
        let app = &self.app;
        let service = self
            .engine
            .service_container(&app.project.name, &app.service)
            .await?;
        let (container, proxy) = match service {
            Some(proxy) if is_proxy(&proxy) => {
                // The proxy knows where traffic goes; if it cannot say (stopped), the newest
                // running release container is the best answer.
                let upstream = match self.proxy_status(&proxy).await {
                    Some((name, _)) => self.engine.container(&name).await?,
                    None => None,
                };
                let upstream = match upstream {
                    Some(c) => Some(c),
                    None => self
                        .app_containers()
                        .await?
                        .into_iter()
                        .filter(|c| c.running)
                        .max_by_key(|c| c.started_at),
                };
                match upstream {
                    Some(c) => (c, Some(proxy)),
                    None => (proxy.clone(), Some(proxy)),
                }
            }
            Some(c) => (c, None),
            None => return Ok(None),
        };
        Ok(Some(Serving {
            release: release_of(&container, releases),
            container,
            proxy,
        }))
    }

    async fn traffic(&self, window: Duration) -> Result<Option<Vec<Traffic>>> {
        let Some(proxy) = self.running_proxy().await? else {
            return Ok(None);
        };
        let reply = self
            .control(&proxy, &Request::Metrics { window }, Duration::from_secs(5))
            .await?;
        let all = match reply {
            Some(Ok(Reply::Metrics(all))) => all,
            other => {
                // An older proxy does not count (`err unknown control request`).
                tracing::debug!(?other, "no traffic counters from the proxy");
                return Ok(None);
            }
        };
        let containers = self.app_containers().await?;
        Ok(Some(
            all.into_iter()
                .map(|m| Traffic {
                    release: containers
                        .iter()
                        .find(|c| c.name == m.upstream)
                        .and_then(|c| release_label(c).map(str::to_string)),
                    container: m.upstream,
                    counters: m.counters,
                })
                .collect(),
        ))
    }

    async fn standby(&self, serving: Option<&Serving>) -> Result<Option<StandbyNow>> {
        if serving.is_none_or(|s| s.proxy.is_none()) {
            return Ok(None);
        }
        let live = serving.map(|s| s.container.id.as_str());
        // The newest release container besides the live one (older ones are removed at each
        // switch; after an interrupted one there may briefly be more).
        Ok(self
            .app_containers()
            .await?
            .into_iter()
            .filter(|c| Some(c.id.as_str()) != live)
            .max_by_key(|c| c.started_at)
            .map(|c| StandbyNow {
                tag: release_label(&c).map(str::to_string),
                mode: if c.running {
                    Standby::Hot
                } else {
                    Standby::Cold
                },
                container: c,
            }))
    }

    async fn remove_release(&self, tag: &str) -> Result<()> {
        Ok(self.engine.untag(&self.app.image_ref(tag)).await?)
    }

    fn check_drivable(&self) -> Result<()> {
        let proto = *self
            .proxy_protocol
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match proto {
            Some(p) if p > protocol::VERSION => Err(Error::bad_input(format!(
                "the service's proxy was set up by a newer dockmaster (control protocol {p}; this one speaks up to {}); nothing was changed",
                protocol::VERSION
            ))
            .hint("upgrade dockmaster to the version that set the proxy up, or newer")),
            _ => Ok(()),
        }
    }

    async fn lock(&self, command: &str, wait: Option<Duration>) -> Result<Lock> {
        Ok(Lock::acquire(
            &self.app.state_dir,
            &self.app.id(),
            command,
            wait,
        )?)
    }

    async fn choose(&self, target: &Target, requested: Option<Strategy>) -> Result<Choice> {
        let svc = &self.app.service_def;
        let mut ports = svc.container_ports.clone();
        if ports.is_empty() {
            ports = self
                .engine
                .exposed_ports(&target.image_id)
                .await
                .unwrap_or_default();
        }
        if ports.is_empty()
            && let Some((_, port)) = &self.app.health.http
        {
            ports.push(*port);
        }
        let mut choice = choose_strategy(
            &ServiceFacts {
                ports,
                network_mode: svc.network_mode.clone(),
                shared_writable_mounts: svc.shared_writable_mounts.clone(),
            },
            requested,
            self.app.strategy,
        )?;
        if choice.strategy == Strategy::Recreate {
            // Recreate runs compose at once: say which one.
            choice.why = format!("{} up, {}", self.compose.get().await?.display(), choice.why);
        } else if self.app.proxy == crate::proxy::Mode::Http {
            let test = match &svc.healthcheck_test {
                Some(t) => Some(t.clone()),
                None => self
                    .engine
                    .image_healthcheck(&target.image_id)
                    .await
                    .ok()
                    .flatten(),
            };
            if let Some(test) = test.filter(|t| !looks_like_http(t))
                && self.app.health.http.is_none()
            {
                choice.why = format!(
                    "{}; note: its health check (`{test}`) is not an HTTP request — if the service does not speak HTTP on its ports, set proxy = \"tcp\" in dockmaster.toml",
                    choice.why
                );
            }
        }
        Ok(choice)
    }

    async fn start_beside(&self, target: &Target, serving: Option<&str>) -> Result<Candidate> {
        start_first::start(self, target, serving).await
    }

    async fn put_in_place(&self, target: &Target) -> Result<Candidate> {
        recreate::put_live(self, &target.tag).await
    }

    async fn gate(
        &self,
        candidate: &Candidate,
        timeout: Duration,
        interruptible: bool,
    ) -> Result<Verdict> {
        HealthGate {
            engine: &self.engine,
            settings: &self.app.health,
            timeout,
            interruptible,
            fresh: candidate.how == super::Started::AlreadyRunning,
        }
        .wait(&candidate.id)
        .await
    }

    async fn last_logs(&self, candidate: &Candidate, lines: usize) -> Result<String> {
        Ok(self.engine.logs_tail(&candidate.id, lines).await?)
    }

    async fn take_traffic(
        &self,
        candidate: &Candidate,
        choice: &Choice,
        drain: Duration,
    ) -> std::result::Result<Switched, NotSwitched> {
        match self.running_proxy().await {
            Ok(Some(proxy)) if proxy_mode(&proxy) == self.app.proxy => {
                start_first::switch(self, &proxy, candidate, drain).await
            }
            // No proxy yet, or `proxy` in dockmaster.toml changed: it is set up (again, in the
            // new mode).
            Ok(_) => start_first::install_proxy(self, candidate, &choice.ports).await,
            Err(e) => Err(NotSwitched::PreviousServing(e.to_string())),
        }
    }

    async fn confirm(
        &self,
        candidate: &Candidate,
        target: &Target,
    ) -> Result<std::result::Result<(), String>> {
        let app = &self.app;
        let Some(now) = self.engine.container(&candidate.id).await? else {
            return Ok(Err(format!("container {} disappeared", candidate.name)));
        };
        if now.image_id != target.image_id || !now.running {
            return Ok(Err(format!(
                "container {} runs image {} (state {}), expected {} ({})",
                now.name,
                crate::output::short_id(&now.image_id),
                now.state,
                app.image_ref(&target.tag),
                crate::output::short_id(&target.image_id)
            )));
        }
        self.engine
            .tag(&target.image_id, &app.repository, "latest")
            .await?;
        Ok(Ok(()))
    }

    async fn retire(
        &self,
        live: &Candidate,
        previous: Option<&str>,
        standby: Standby,
    ) -> Result<Retired> {
        let mut retired = Retired::default();
        let mut to_stop = vec![];
        let mut to_remove = vec![];
        for c in self.app_containers().await? {
            if c.id == live.id {
                continue;
            }
            if Some(c.name.as_str()) == previous {
                match standby {
                    Standby::Hot => {
                        // Drained and running: a rollback to it is a probe and a switch. It
                        // keeps the service's restart policy, so it is hot after a reboot too.
                        retired.standby = Some((c.name.clone(), Standby::Hot));
                        continue;
                    }
                    Standby::Cold => {
                        // Stopped must stay stopped across engine restarts.
                        self.engine.set_restart_policy(&c.id, "no").await?;
                        retired.standby = Some((c.name.clone(), Standby::Cold));
                        if c.running {
                            to_stop.push(c);
                        }
                        continue;
                    }
                    Standby::None => {}
                }
            }
            to_remove.push(c);
        }
        // Every container goes down with its own grace period, all at once: the slowest one
        // bounds the wait, not their sum.
        let stops = to_stop.iter().map(|c| self.engine.stop(c));
        let removals = to_remove.iter().map(|c| async move {
            let stopped = if c.running {
                Some(self.engine.stop(c).await?)
            } else {
                None
            };
            self.engine.remove_now(&c.id).await?;
            Ok::<_, Error>((c.name.clone(), stopped))
        });
        let (stopped, removed) = futures_util::future::join(
            futures_util::future::join_all(stops),
            futures_util::future::join_all(removals),
        )
        .await;
        for s in stopped {
            retired.stopped.push(s?);
        }
        for r in removed {
            let (name, stopped) = r?;
            retired.stopped.extend(stopped);
            retired.removed.push(name);
        }
        Ok(retired)
    }

    async fn discard(&self, candidate: &Candidate) -> Result<()> {
        // A candidate that never took traffic has nothing to finish: no grace period.
        Ok(self.engine.remove_now(&candidate.id).await?)
    }
}

/// The release a container runs: the one named in its config if that tag still points at
/// its image, else any release with its image id.
pub fn release_of(container: &ContainerInfo, releases: &[Release]) -> Option<Release> {
    let named = container
        .image_ref
        .rsplit_once(':')
        .and_then(|(_, t)| t.parse::<Tag>().ok());
    releases
        .iter()
        .find(|r| Some(&r.tag) == named.as_ref() && r.image_id == container.image_id)
        .or_else(|| releases.iter().find(|r| r.image_id == container.image_id))
        .cloned()
}

/// How a running proxy forwards (proxies from before `proxy = "tcp"` forward HTTP).
fn proxy_mode(proxy: &ContainerInfo) -> crate::proxy::Mode {
    match proxy
        .labels
        .get(crate::engine::LABEL_PROXY_MODE)
        .map(String::as_str)
    {
        Some("tcp") => crate::proxy::Mode::Tcp,
        _ => crate::proxy::Mode::Http,
    }
}

/// Does a health check's command look like an HTTP request (so the service speaks HTTP)?
fn looks_like_http(test: &str) -> bool {
    let t = test.to_ascii_lowercase();
    t.contains("http://") || t.contains("https://") || t.contains("curl") || t.contains("wget")
}

/// Is this the service's switch proxy rather than the app?
pub fn is_proxy(c: &ContainerInfo) -> bool {
    c.labels.get(LABEL_ROLE).map(String::as_str) == Some("proxy")
}

/// The release tag a release container was started for.
fn release_label(c: &ContainerInfo) -> Option<&str> {
    c.labels.get(LABEL_RELEASE).map(String::as_str)
}

/// Variables set in compose's environment.
pub type EnvVars = Vec<(String, String)>;

/// How compose is told which image to run: the tag variable in its environment, or (with
/// no tag variable) an override file that sets `image:`, kept in the state directory (never
/// in the user's checkout, which must stay clean).
fn image_override(app: &App, tag: &str) -> Result<(Vec<PathBuf>, EnvVars)> {
    match &app.tag_var {
        Some(var) => Ok((vec![], vec![(var.clone(), tag.to_string())])),
        None => {
            fs::create_dir_all(&app.state_dir).map_err(|e| Error::failed(e.to_string()))?;
            let path = app.state_dir.join(format!("{}.override.yml", app.id()));
            let body = format!(
                "# Written by dockmaster: the release it put live last.\nservices:\n  {}:\n    image: \"{}\"\n",
                app.service,
                app.image_ref(tag).replace('$', "$$")
            );
            fs::write(&path, body).map_err(|e| Error::failed(e.to_string()))?;
            Ok((vec![path], vec![]))
        }
    }
}

/// `compose up -d --no-deps --no-build --force-recreate <service>` with these extra files
/// and environment: how both strategies (re)create the service's own container.
async fn compose_up(
    compose: &compose::Cli,
    app: &App,
    extra: &[PathBuf],
    env: &EnvVars,
) -> std::io::Result<std::process::Output> {
    let mut cmd = compose.command(&app.project, extra);
    cmd.args([
        "up",
        "-d",
        "--no-deps",
        "--no-build",
        "--force-recreate",
        &app.service,
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    tracing::debug!(?cmd, "compose up");
    let out = cmd.output().await;
    tracing::debug!(status = ?out.as_ref().map(|o| o.status), "compose up finished");
    out
}

/// A proxy set up by a newer dockmaster speaks a protocol this build may misread: refuse.
fn check_protocol(proxy: &ContainerInfo, proto: u32) -> Result<()> {
    if proto > protocol::VERSION {
        return Err(Error::bad_input(format!(
            "the proxy {} was set up by a newer dockmaster (control protocol {proto}; this one speaks up to {}); nothing was changed",
            proxy.name,
            protocol::VERSION
        ))
        .hint("upgrade dockmaster to the version that set the proxy up (or newer)"));
    }
    Ok(())
}
