//! The start-first switch.
//!
//! 1. `start`: the release runs in a container of its own (`compose run -d`, so it gets the
//!    service's environment, volumes, networks and command from the compose file, but not
//!    its name, aliases or published ports), labelled `dev.dockmaster.role=app`.
//! 2. The caller gates it on health while the live release keeps serving.
//! 3. `take_traffic`: the service's own container is dockmaster's proxy (`crate::proxy`),
//!    which holds the service name, `container_name` and published ports. It is told to
//!    send new requests to the new container, waits for the requests still running on the
//!    old one to finish (up to the drain timeout), and the old container is removed. The
//!    first start-first switch of a service whose container is still the app itself
//!    replaces that container with the proxy (a one-time recreate through compose).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fs_err as fs;

use crate::compose;
use crate::engine::{ContainerInfo, Engine, LABEL_CONFIG, LABEL_RELEASE, LABEL_ROLE, proxy_image};
use crate::error::{Error, Result};
use crate::settings::App;

pub struct StartFirst<'a> {
    pub app: &'a App,
    pub engine: &'a Engine,
    pub compose: &'a compose::Detected,
    pub ports: &'a [u16],
}

/// A started release container, and whether it is a standby that was started again.
pub struct Started {
    pub container: ContainerInfo,
    pub reused: bool,
}

/// Traffic moved: what to say, and the container that served before (now drained).
pub struct Switched {
    pub line: String,
    pub from: Option<String>,
}

/// Why taking traffic failed, and whether the previous release still serves.
pub struct NotSwitched {
    pub reason: String,
    pub previous_serving: bool,
}

impl StartFirst<'_> {
    /// The service's proxy, when its container is one and runs.
    pub async fn running_proxy(&self) -> Result<Option<ContainerInfo>> {
        Ok(self
            .engine
            .service_container(&self.app.project.name, &self.app.service)
            .await?
            .filter(|c| super::is_proxy(c) && c.running))
    }

    /// Start `<repository>:<tag>` beside the live one: the release's standby container
    /// (the one it ran in before the last switch, stopped and kept) when compose would
    /// create it with the same settings today, else a new container through compose.
    pub async fn start(&self, tag: &str) -> Result<Started> {
        let app = self.app;
        if self.running_proxy().await?.is_none() {
            // Built now (once per dockmaster version), so the switch itself stays short.
            proxy_image::ensure(self.engine).await?;
        }
        let fingerprint = app.project.service_fingerprint(&app.service);
        if let Some(fp) = &fingerprint
            && let Some(c) = self.standby(tag, fp).await?
        {
            let started = async {
                self.engine.start(&c.id).await?;
                if let Some(policy) = &app.service_def.restart {
                    self.engine.set_restart_policy(&c.id, policy).await?;
                }
                self.engine.container(&c.id).await
            }
            .await;
            match started {
                Ok(Some(container)) => {
                    return Ok(Started {
                        container,
                        reused: true,
                    });
                }
                other => {
                    tracing::info!(?other, container = %c.name, "standby did not start; creating a new one");
                    let _ = self.engine.stop_and_remove(&c.id, Duration::ZERO).await;
                }
            }
        }
        let (extra, env) = super::image_override(app, tag)?;
        let compose = self.compose.get().await?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ std::process::id())
            .unwrap_or(0)
            & 0xffffff;
        let name = format!("{}-{}-{tag}-{nonce:06x}", app.project.name, app.service);
        let mut cmd = compose.command(&app.project, &extra);
        cmd.args(["run", "-d", "-T", "--no-deps", "--name", &name])
            .args(["--label", &format!("{LABEL_ROLE}=app")])
            .args(["--label", &format!("{LABEL_RELEASE}={tag}")]);
        if let Some(fp) = &fingerprint {
            cmd.args(["--label", &format!("{LABEL_CONFIG}={fp}")]);
        }
        cmd.arg(&app.service);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        tracing::debug!(?cmd, "compose run");
        let out = cmd
            .output()
            .await
            .map_err(|e| Error::failed(format!("cannot run {}: {e}", compose.display())))?;
        if !out.status.success() {
            // A container may exist even though compose failed (e.g. it failed to start).
            let _ = self.engine.stop_and_remove(&name, Duration::ZERO).await;
            return Err(Error::failed(format!(
                "{} run of {} failed: {}{}",
                compose.display(),
                app.image_ref(tag),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let container = self.engine.container(&name).await?.ok_or_else(|| {
            Error::failed(format!(
                "compose reported success but {name} does not exist"
            ))
        })?;
        // `compose run` containers get no restart policy; the release must survive a reboot
        // like the service would.
        if let Some(policy) = &app.service_def.restart
            && let Err(e) = self.engine.set_restart_policy(&container.id, policy).await
        {
            let _ = self.discard(&container).await;
            return Err(e);
        }
        Ok(Started {
            container,
            reused: false,
        })
    }

    /// A stopped container of `tag` created with the same compose settings.
    async fn standby(&self, tag: &str, fingerprint: &str) -> Result<Option<ContainerInfo>> {
        Ok(self
            .engine
            .app_containers(&self.app.project.name, &self.app.service)
            .await?
            .into_iter()
            .find(|c| {
                !c.running
                    && c.labels.get(LABEL_RELEASE).map(String::as_str) == Some(tag)
                    && c.labels.get(LABEL_CONFIG).map(String::as_str) == Some(fingerprint)
            }))
    }

    /// Remove a candidate that will not take traffic.
    pub async fn discard(&self, candidate: &ContainerInfo) -> Result<()> {
        self.engine
            .stop_and_remove(&candidate.id, Duration::from_secs(5))
            .await
    }

    /// Move traffic to `candidate`; the old release's requests are drained first.
    /// Returns a line saying what happened.
    pub async fn take_traffic(
        &self,
        candidate: &ContainerInfo,
        drain: Duration,
    ) -> std::result::Result<Switched, NotSwitched> {
        match self.running_proxy().await {
            Ok(Some(proxy)) => self.switch(&proxy, candidate, drain).await,
            Ok(None) => self
                .install_proxy(candidate)
                .await
                .map(|line| Switched { line, from: None }),
            Err(e) => Err(NotSwitched {
                reason: e.to_string(),
                previous_serving: true,
            }),
        }
    }

    async fn switch(
        &self,
        proxy: &ContainerInfo,
        candidate: &ContainerInfo,
        drain: Duration,
    ) -> std::result::Result<Switched, NotSwitched> {
        let started = Instant::now();
        let cmd = vec![
            "/dockmaster".into(),
            "proxy-ctl".into(),
            "switch".into(),
            candidate.name.clone(),
            drain.as_millis().to_string(),
        ];
        let reply = self
            .engine
            .exec_output(&proxy.id, cmd, drain + Duration::from_secs(20))
            .await;
        match reply {
            Ok(Some((0, text))) => {
                let drained = text
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("drained_ms="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                let still = text
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("still_running="))
                    .unwrap_or("0");
                let from = text
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("from="))
                    .map(str::to_string);
                let line = format!(
                    "Traffic moved by proxy {} in {} (old release drained in {}{})",
                    proxy.name,
                    crate::output::human_duration(started.elapsed()),
                    crate::output::human_duration(Duration::from_millis(drained)),
                    if still == "0" {
                        String::new()
                    } else {
                        format!(", {still} request(s) still running at the drain timeout")
                    }
                );
                Ok(Switched { line, from })
            }
            Ok(Some((_, text))) => Err(NotSwitched {
                reason: format!("the proxy refused the switch: {}", text.trim()),
                previous_serving: true,
            }),
            Ok(None) => Err(NotSwitched {
                reason: "the proxy did not answer the switch in time".into(),
                // It may have swapped and still be draining: the next run sorts it out.
                previous_serving: false,
            }),
            Err(e) => Err(NotSwitched {
                reason: format!("cannot reach the proxy: {e}"),
                previous_serving: true,
            }),
        }
    }

    /// First start-first switch: the service's container becomes the proxy, sending traffic
    /// to `candidate`.
    async fn install_proxy(
        &self,
        candidate: &ContainerInfo,
    ) -> std::result::Result<String, NotSwitched> {
        let app = self.app;
        let fail = |reason: String, previous_serving: bool| NotSwitched {
            reason,
            previous_serving,
        };
        let image = proxy_image::ensure(self.engine)
            .await
            .map_err(|e| fail(e.to_string(), true))?;
        let tag = candidate
            .labels
            .get(LABEL_RELEASE)
            .cloned()
            .unwrap_or_else(|| "latest".into());
        let (mut extra, env) =
            super::image_override(app, &tag).map_err(|e| fail(e.to_string(), true))?;
        extra.push(
            self.write_proxy_override(&image, &candidate.name)
                .map_err(|e| fail(e.to_string(), true))?,
        );
        let had_container = self
            .engine
            .service_container(&app.project.name, &app.service)
            .await
            .ok()
            .flatten()
            .is_some();
        let compose = self
            .compose
            .get()
            .await
            .map_err(|e| fail(e.to_string(), true))?;
        if compose.major == 1 {
            let recreate = super::Switcher {
                app,
                engine: self.engine,
                compose: self.compose,
            };
            recreate
                .avoid_v1_container_config_crash()
                .await
                .map_err(|e| fail(e.to_string(), true))?;
        }
        let started = Instant::now();
        let out = super::compose_up(compose, app, &extra, &env)
            .await
            .map_err(|e| fail(format!("cannot run {}: {e}", compose.display()), false))?;
        if !out.status.success() {
            return Err(fail(
                format!(
                    "{} up of the proxy failed: {}{}",
                    compose.display(),
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                false,
            ));
        }
        // Ready when it answers and sends traffic to the candidate.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(proxy)) = self.running_proxy().await
                && super::proxy_upstream(self.engine, &proxy).await.as_deref()
                    == Some(candidate.name.as_str())
            {
                return Ok(format!(
                    "Proxy {} now holds the service's name{} and sends traffic to {} (set up in {}; {})",
                    proxy.name,
                    if app.service_def.publishes_ports {
                        " and ports"
                    } else {
                        ""
                    },
                    candidate.name,
                    crate::output::human_duration(started.elapsed()),
                    if had_container {
                        "this one-time change recreated the service's container"
                    } else {
                        "later switches move traffic without a gap"
                    }
                ));
            }
            if Instant::now() >= deadline {
                return Err(fail(
                    "the proxy did not come up within 15s (see `docker logs` of the service's container)".into(),
                    false,
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The compose override that turns the service's container into the proxy. Kept in the
    /// state directory; compose merges it over the user's files for this one `up`.
    fn write_proxy_override(&self, image: &str, upstream: &str) -> Result<PathBuf> {
        let app = self.app;
        fs::create_dir_all(&app.state_dir).map_err(|e| Error::failed(e.to_string()))?;
        let path = app.state_dir.join(format!("{}.proxy.yml", app.id()));
        let mut command = vec![];
        for p in self.ports {
            command.push("\"--listen\"".to_string());
            command.push(format!("\"{p}\""));
        }
        command.push("\"--upstream\"".into());
        command.push(format!("\"{upstream}\""));
        let body = format!(
            "# Written by dockmaster: its switch proxy holds the service's name, container_name\n\
             # and ports, and sends traffic to the live release's container.\n\
             services:\n  {svc}:\n    image: \"{image}\"\n    entrypoint: [\"/dockmaster\", \"proxy\"]\n    command: [{command}]\n    user: \"0:0\"\n    working_dir: \"/\"\n    healthcheck:\n      test: [\"CMD\", \"/dockmaster\", \"proxy-ctl\", \"health\"]\n      interval: 10s\n      timeout: 5s\n      retries: 3\n    labels:\n      {LABEL_ROLE}: proxy\n",
            svc = app.service,
            command = command.join(", "),
        );
        fs::write(&path, body).map_err(|e| Error::failed(e.to_string()))?;
        Ok(path)
    }
}
