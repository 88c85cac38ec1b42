//! Everything that talks to Docker. Reads go through the Engine API (bollard); image builds
//! go through the `docker` CLI (see `build.rs` for why).

mod build;
pub mod cli;
pub mod disk;
mod error;
pub mod proxy_image;

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, ContainerSummary, ExecConfig, ImageSummary};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, LogsOptionsBuilder,
    RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use jiff::Timestamp;

use crate::release::{self, Release, Tag};
pub use build::{BuildEvent, BuildRequest, build};
pub use error::{Error, Result};

pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";
/// `app` on release containers started beside the live one, `proxy` on the switch proxy.
pub const LABEL_ROLE: &str = "dev.dockmaster.role";
/// The release tag an `app` container was started for.
pub const LABEL_RELEASE: &str = "dev.dockmaster.release";
/// The compose settings an `app` container was created with (`Project::service_fingerprint`).
pub const LABEL_CONFIG: &str = "dev.dockmaster.config";
/// How the proxy forwards (`http` or `tcp`); absent on proxies from before `proxy = "tcp"`.
pub const LABEL_PROXY_MODE: &str = "dev.dockmaster.proxy-mode";
/// The token the proxy's control port asks of clients on its network addresses.
pub const LABEL_CONTROL_TOKEN: &str = "dev.dockmaster.control-token";

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    /// `DOCKER_HOST`, or the local socket.
    host: String,
}

/// What the engine says about one container of the service.
#[derive(Clone, Debug)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// The image reference the container was created from (`repo:tag`).
    pub image_ref: String,
    pub image_id: String,
    pub state: String,
    pub running: bool,
    pub restarting: bool,
    pub exit_code: i64,
    pub health: Option<String>,
    pub started_at: Option<Timestamp>,
    pub restart_count: i64,
    pub healthcheck: Option<Vec<String>>,
    pub healthcheck_timeout: Option<Duration>,
    pub ip_addresses: Vec<String>,
    pub labels: HashMap<String, String>,
    /// The signal `docker stop` sends (the image's or compose's `stop_signal`).
    pub stop_signal: Option<String>,
    /// How long `docker stop` waits after the stop signal before it kills: compose sets it
    /// from the service's `stop_grace_period` (on `up` and `run` alike); Docker's default is
    /// 10 s.
    pub stop_grace: Duration,
}

/// How a container stopped: in its own time after the stop signal, or killed at the end of
/// its grace period.
#[derive(Clone, Debug)]
pub struct Stopped {
    pub name: String,
    pub took: Duration,
    pub grace: Duration,
    /// It was still running when the grace period ended, so the engine killed it.
    pub killed: bool,
}

/// Docker's stop timeout when the container sets none.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

impl Engine {
    /// Connect as the docker CLI does (`DOCKER_HOST`, else the local socket) and agree on
    /// an API version the engine speaks (Debian's 20.10 engine speaks only up to 1.41).
    pub async fn connect() -> Result<Engine> {
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let unreachable = |e: &dyn std::fmt::Display| Error::Unreachable {
            host: host.clone(),
            reason: e.to_string(),
        };
        let docker = Docker::connect_with_defaults().map_err(|e| unreachable(&e))?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable(&"no answer within 10s"))?
            .map_err(|e| unreachable(&e))?;
        Ok(Engine { docker, host })
    }

    /// Is the engine on this machine (a unix socket)? Then its bridge networks' container
    /// addresses are reachable from here, on Linux.
    /// `DOCKER_HOST`, or the local socket: where the engine is, for messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn is_local(&self) -> bool {
        self.host.starts_with("unix://")
    }

    pub async fn version(&self) -> Result<String> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| Error::api("asking its version", e))?;
        Ok(format!(
            "{} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    }

    /// The images of `repository`, each with the tags it carries there.
    pub async fn repository_images(&self, repository: &str) -> Result<Vec<ImageSummary>> {
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([("reference", vec![repository])]);
        let opts = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        self.docker
            .list_images(Some(opts))
            .await
            .map_err(|e| Error::api(format!("listing the images of {repository}"), e))
    }

    /// Every release of the repository, newest first. An image carrying several release
    /// tags gives one release per tag.
    pub async fn releases(&self, repository: &str) -> Result<Vec<Release>> {
        let mut out = vec![];
        for image in self.repository_images(repository).await? {
            for repo_tag in &image.repo_tags {
                let Some((repo, tag)) = repo_tag.rsplit_once(':') else {
                    continue;
                };
                if repo != repository {
                    continue;
                }
                let Ok(tag) = tag.parse::<Tag>() else {
                    continue;
                };
                let label = |k: &str| image.labels.get(k).cloned();
                let created = label(release::LABEL_CREATED)
                    .and_then(|c| c.parse::<Timestamp>().ok())
                    .or_else(|| Timestamp::from_second(image.created).ok())
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                out.push(Release {
                    commit: label(release::LABEL_REVISION)
                        .unwrap_or_else(|| tag.sha7().to_string()),
                    subject: label(release::LABEL_SUBJECT),
                    created,
                    image_id: image.id.clone(),
                    size_bytes: image.size,
                    tag,
                });
            }
        }
        out.sort_by(Release::newest_first);
        Ok(out)
    }

    /// The image id `reference` names, if it exists.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(i.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(Error::api(format!("inspecting image {reference}"), e)),
        }
    }

    pub async fn tag(&self, image: &str, repository: &str, tag: &str) -> Result<()> {
        let opts = TagImageOptionsBuilder::default()
            .repo(repository)
            .tag(tag)
            .build();
        self.docker.tag_image(image, Some(opts)).await.map_err(|e| {
            let (status, message) = error::status_and_message(e);
            Error::TagFailed {
                image: image.to_string(),
                repository: repository.to_string(),
                tag: tag.to_string(),
                status,
                message,
            }
        })
    }

    /// Remove one tag (the image goes when its last tag does and no container uses it).
    pub async fn untag(&self, reference: &str) -> Result<()> {
        let opts = RemoveImageOptionsBuilder::default().noprune(false).build();
        self.docker
            .remove_image(reference, Some(opts), None)
            .await
            .map(|_| ())
            .map_err(|e| remove_refused(reference, e))
    }

    /// Untagged images left by this app's builds (they carry `dev.dockmaster.app`).
    pub async fn dangling_images(&self, app_label: &str) -> Result<Vec<ImageSummary>> {
        let label = format!("{}={app_label}", release::LABEL_APP);
        let filters: HashMap<&str, Vec<&str>> =
            HashMap::from([("dangling", vec!["true"]), ("label", vec![label.as_str()])]);
        let opts = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        self.docker
            .list_images(Some(opts))
            .await
            .map_err(|e| Error::api("listing this app's untagged build leftovers", e))
    }

    /// Remove an image by id; refused (an error) while a container uses it.
    pub async fn remove_image(&self, id: &str) -> Result<()> {
        let opts = RemoveImageOptionsBuilder::default().noprune(false).build();
        self.docker
            .remove_image(id, Some(opts), None)
            .await
            .map(|_| ())
            .map_err(|e| remove_refused(id, e))
    }

    /// The containers compose made for the service (running or not, no one-off `run`s).
    pub async fn service_containers(
        &self,
        project: &str,
        service: &str,
    ) -> Result<Vec<ContainerSummary>> {
        let list = self.labelled_containers(project, service, &[]).await?;
        Ok(list
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_ONEOFF))
                    .is_none_or(|v| !v.eq_ignore_ascii_case("true"))
            })
            .collect())
    }

    /// The service's containers (running or not) with these extra `key=value` labels.
    async fn labelled_containers(
        &self,
        project: &str,
        service: &str,
        extra: &[&str],
    ) -> Result<Vec<ContainerSummary>> {
        let p = format!("{LABEL_PROJECT}={project}");
        let s = format!("{LABEL_SERVICE}={service}");
        let mut labels = vec![p.as_str(), s.as_str()];
        labels.extend_from_slice(extra);
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", labels)]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| Error::api(format!("listing the containers of service {service}"), e))
    }

    /// Every container (running or not), for "which images are in use".
    pub async fn all_containers(&self) -> Result<Vec<ContainerSummary>> {
        let opts = ListContainersOptionsBuilder::default().all(true).build();
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| Error::api("listing all containers", e))
    }

    /// The service's container that runs now, else its newest one.
    pub async fn service_container(
        &self,
        project: &str,
        service: &str,
    ) -> Result<Option<ContainerInfo>> {
        let mut list = self.service_containers(project, service).await?;
        list.sort_by_key(|c| {
            let running = c.state.as_ref().map(|s| s.to_string()) == Some("running".into());
            (running, c.created.unwrap_or(0))
        });
        match list.pop().and_then(|c| c.id) {
            Some(id) => self.container(&id).await,
            None => Ok(None),
        }
    }

    pub async fn container(&self, id: &str) -> Result<Option<ContainerInfo>> {
        match self.docker.inspect_container(id, None).await {
            Ok(c) => Ok(Some(container_info(c))),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(Error::api(format!("inspecting container {id}"), e)),
        }
    }

    /// Run `cmd` in the container; its exit code, or `None` when it did not finish in time.
    pub async fn exec(
        &self,
        container: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<Option<i64>> {
        Ok(self
            .exec_output(container, cmd, timeout)
            .await?
            .map(|(code, _)| code))
    }

    /// Run `cmd` in the container; its exit code and output (stdout and stderr), or `None`
    /// when it did not finish in time.
    pub async fn exec_output(
        &self,
        container: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<Option<(i64, String)>> {
        let config = ExecConfig {
            cmd: Some(cmd),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let doing = || format!("running a command in container {container}");
        let exec = self
            .docker
            .create_exec(container, config)
            .await
            .map_err(|e| Error::api(doing(), e))?;
        let run = async {
            let mut text = String::new();
            match self
                .docker
                .start_exec(&exec.id, None)
                .await
                .map_err(|e| Error::api(doing(), e))?
            {
                bollard::exec::StartExecResults::Attached { mut output, .. } => {
                    while let Some(chunk) = output.next().await {
                        match chunk {
                            Ok(c) => text.push_str(&String::from_utf8_lossy(&c.into_bytes())),
                            Err(_) => break,
                        }
                    }
                }
                bollard::exec::StartExecResults::Detached => {}
            }
            let inspect = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| Error::api(doing(), e))?;
            Ok::<_, Error>(inspect.exit_code.map(|c| (c, text)))
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Ok(None),
        }
    }

    /// The release containers dockmaster started for the service (label `role=app`).
    pub async fn app_containers(&self, project: &str, service: &str) -> Result<Vec<ContainerInfo>> {
        let role = format!("{LABEL_ROLE}=app");
        let list = self
            .labelled_containers(project, service, &[role.as_str()])
            .await?;
        let mut out = vec![];
        for id in list.into_iter().filter_map(|c| c.id) {
            if let Some(c) = self.container(&id).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        // 304: already running.
        tolerate(self.docker.start_container(id, None).await, &[304], || {
            format!("starting container {id}")
        })
    }

    /// Stop a container as `docker stop` does — its stop signal, then SIGKILL once its grace
    /// period (`stop_grace_period`) is over — and return once it has exited.
    pub async fn stop(&self, c: &ContainerInfo) -> Result<Stopped> {
        let started = std::time::Instant::now();
        let opts = bollard::query_parameters::StopContainerOptionsBuilder::default()
            .t(c.stop_grace.as_secs().try_into().unwrap_or(i32::MAX))
            .build();
        // 304: stopped already; 404: gone already.
        tolerate(
            self.docker.stop_container(&c.id, Some(opts)).await,
            &[304, 404],
            || format!("stopping container {}", c.name),
        )?;
        let took = started.elapsed();
        // The engine answers once the process is gone: it was killed when that took the
        // whole grace period (an exit by SIGKILL reads 137).
        let after = self.container(&c.id).await?;
        let killed = match after {
            Some(a) => a.exit_code == 137,
            None => took >= c.stop_grace,
        };
        Ok(Stopped {
            name: c.name.clone(),
            took,
            grace: c.stop_grace,
            killed,
        })
    }

    /// Remove a container, stopped or not, at once (SIGKILL).
    pub async fn remove_now(&self, id: &str) -> Result<()> {
        let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .build();
        tolerate(
            self.docker.remove_container(id, Some(rm)).await,
            &[404],
            || format!("removing container {id}"),
        )
    }

    /// The container's memory use now (one-shot stats, as `docker stats --no-stream`
    /// counts it: usage less the page cache), if the engine reports it.
    pub async fn memory_usage(&self, id: &str) -> Result<Option<u64>> {
        let opts = bollard::query_parameters::StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.docker.stats(id, Some(opts));
        let Some(stats) = stream.next().await else {
            return Ok(None);
        };
        let stats = stats
            .map_err(|e| Error::api(format!("reading the memory use of container {id}"), e))?;
        let Some(mem) = stats.memory_stats else {
            return Ok(None);
        };
        let cache = mem
            .stats
            .as_ref()
            .and_then(|s| {
                s.get("inactive_file")
                    .or_else(|| s.get("total_inactive_file"))
            })
            .copied()
            .unwrap_or(0);
        Ok(mem.usage.map(|u| u.saturating_sub(cache)))
    }

    /// Give a container the restart policy compose would have (`compose run` gives none).
    pub async fn set_restart_policy(&self, id: &str, policy: &str) -> Result<()> {
        use bollard::models::{ContainerUpdateBody, RestartPolicy, RestartPolicyNameEnum};
        let (name, count) = policy.split_once(':').unwrap_or((policy, ""));
        let name = match name {
            "always" => RestartPolicyNameEnum::ALWAYS,
            "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            "no" => RestartPolicyNameEnum::NO,
            _ => return Ok(()),
        };
        let body = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(name),
                maximum_retry_count: count.parse().ok(),
            }),
            ..Default::default()
        };
        self.docker
            .update_container(id, body)
            .await
            .map(|_| ())
            .map_err(|e| Error::api(format!("setting the restart policy of container {id}"), e))
    }

    /// The image's own `HEALTHCHECK` test, as one line (None: it has none).
    pub async fn image_healthcheck(&self, image: &str) -> Result<Option<String>> {
        let inspect = self
            .docker
            .inspect_image(image)
            .await
            .map_err(|e| Error::api(format!("inspecting image {image}"), e))?;
        Ok(inspect
            .config
            .and_then(|c| c.healthcheck)
            .and_then(|h| h.test)
            .filter(|t| t.first().is_some_and(|w| w != "NONE"))
            .map(|t| t.iter().skip(1).cloned().collect::<Vec<_>>().join(" ")))
    }

    /// The TCP ports an image declares with `EXPOSE`.
    pub async fn exposed_ports(&self, image: &str) -> Result<Vec<u16>> {
        let inspect = self
            .docker
            .inspect_image(image)
            .await
            .map_err(|e| Error::api(format!("inspecting image {image}"), e))?;
        let mut ports: Vec<u16> = inspect
            .config
            .and_then(|c| c.exposed_ports)
            .map(|m| {
                m.iter()
                    .filter_map(|k| k.strip_suffix("/tcp").and_then(|p| p.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        ports.sort_unstable();
        Ok(ports)
    }

    /// The container's last `n` log lines (stdout and stderr interleaved).
    pub async fn logs_tail(&self, container: &str, n: usize) -> Result<String> {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&n.to_string())
            .build();
        let mut stream = self.docker.logs(container, Some(opts));
        let mut out = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => out.push_str(&String::from_utf8_lossy(&chunk.into_bytes())),
                Err(e) => {
                    return Err(Error::api(
                        format!("reading the logs of container {container}"),
                        e,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Stream the container's logs to `out` (`logs -f`). A closed pipe (`| head`) ends it
    /// quietly.
    pub async fn follow_logs(
        &self,
        container: &str,
        tail: usize,
        follow: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<()> {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(follow)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(container, Some(opts));
        while let Some(item) = stream.next().await {
            let chunk = item
                .map_err(|e| Error::api(format!("reading the logs of container {container}"), e))?;
            if out
                .write_all(&chunk.into_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Does the image carry the legacy builder's `ContainerConfig`? Read from the engine's raw
    /// answer because the field is gone from current API models; an error counts as "no".
    pub async fn image_has_container_config(&self, image: &str) -> bool {
        let v = self.docker.client_version();
        let path = format!(
            "/v{}.{}/images/{image}/json",
            v.major_version, v.minor_version
        );
        let Ok(body) = disk::raw_get(&path).await else {
            return false;
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return false;
        };
        match json.get("ContainerConfig") {
            Some(serde_json::Value::Object(m)) => !m.is_empty(),
            _ => false,
        }
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }
}

fn container_info(c: ContainerInspectResponse) -> ContainerInfo {
    let state = c.state.unwrap_or_default();
    let config = c.config.unwrap_or_default();
    let health_cfg = config.healthcheck.clone();
    let healthcheck = health_cfg
        .as_ref()
        .and_then(|h| h.test.clone())
        .filter(|t| !t.is_empty() && t[0] != "NONE");
    let ip_addresses = c
        .network_settings
        .and_then(|n| n.networks)
        .map(|nets| {
            nets.values()
                .filter_map(|n| n.ip_address.clone())
                .filter(|ip| !ip.is_empty())
                .collect()
        })
        .unwrap_or_default();
    ContainerInfo {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image_ref: config.image.unwrap_or_default(),
        image_id: c.image.unwrap_or_default(),
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        running: state.running.unwrap_or(false),
        restarting: state.restarting.unwrap_or(false),
        exit_code: state.exit_code.unwrap_or(0),
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty()),
        started_at: state
            .started_at
            .and_then(|s| s.parse().ok())
            .filter(|t: &Timestamp| t.as_second() > 0),
        restart_count: c.restart_count.unwrap_or(0),
        healthcheck,
        healthcheck_timeout: health_cfg
            .and_then(|h| h.timeout)
            .filter(|t| *t > 0)
            .map(|ns| Duration::from_nanos(ns as u64)),
        ip_addresses,
        labels: config.labels.unwrap_or_default(),
        stop_signal: config.stop_signal.filter(|s| !s.is_empty()),
        stop_grace: config
            .stop_timeout
            .and_then(|t| u64::try_from(t).ok())
            .map_or(DEFAULT_STOP_GRACE, Duration::from_secs),
    }
}

/// An engine answer where these HTTP statuses mean "already as wanted"; any other error is
/// one while `doing` what the caller says.
fn tolerate(
    r: std::result::Result<(), bollard::errors::Error>,
    ok: &[u16],
    doing: impl FnOnce() -> String,
) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code, .. })
            if ok.contains(&status_code) =>
        {
            Ok(())
        }
        Err(e) => Err(Error::api(doing(), e)),
    }
}

/// The engine would not remove an image; its status (409: a container uses it) decides the
/// hint.
fn remove_refused(reference: &str, e: bollard::errors::Error) -> Error {
    let (status, reason) = error::status_and_message(e);
    Error::RemoveRefused {
        reference: reference.to_string(),
        status,
        reason,
    }
}
