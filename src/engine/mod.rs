//! Everything that talks to Docker. Reads go through the Engine API (bollard); image builds
//! go through the `docker` CLI (see `build.rs` for why).

mod build;
pub mod cli;
pub mod disk;
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

pub use build::{BuildRequest, build};

use crate::error::{Error, Result};
use crate::release::{self, Release, Tag};

pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";
/// `app` on release containers started beside the live one, `proxy` on the switch proxy.
pub const LABEL_ROLE: &str = "dev.dockmaster.role";
/// The release tag an `app` container was started for.
pub const LABEL_RELEASE: &str = "dev.dockmaster.release";
/// The compose settings an `app` container was created with (`Project::service_fingerprint`).
pub const LABEL_CONFIG: &str = "dev.dockmaster.config";

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
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
}

impl Engine {
    /// Connect as the docker CLI does (`DOCKER_HOST`, else the local socket) and agree on
    /// an API version the engine speaks (Debian's 20.10 engine speaks only up to 1.41).
    pub async fn connect() -> Result<Engine> {
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::failed(format!("cannot reach the Docker engine at {host}: {e}"))
                .hint("start it (`systemctl start docker`), or point DOCKER_HOST at it; `docker info` shows the same problem")
        };
        let docker = Docker::connect_with_defaults().map_err(|e| unreachable(&e))?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable(&"no answer within 10s"))?
            .map_err(|e| unreachable(&e))?;
        Ok(Engine { docker })
    }

    pub async fn version(&self) -> Result<String> {
        let v = self.docker.version().await.map_err(api_error)?;
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
        self.docker.list_images(Some(opts)).await.map_err(api_error)
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
            Err(e) => Err(api_error(e)),
        }
    }

    pub async fn tag(&self, image: &str, repository: &str, tag: &str) -> Result<()> {
        let opts = TagImageOptionsBuilder::default()
            .repo(repository)
            .tag(tag)
            .build();
        self.docker
            .tag_image(image, Some(opts))
            .await
            .map_err(|e| Error::failed(format!("cannot tag {image} as {repository}:{tag}: {e}")))
    }

    /// Remove one tag (the image goes when its last tag does and no container uses it).
    pub async fn untag(&self, reference: &str) -> Result<()> {
        let opts = RemoveImageOptionsBuilder::default().noprune(false).build();
        self.docker
            .remove_image(reference, Some(opts), None)
            .await
            .map(|_| ())
            .map_err(|e| Error::failed(format!("cannot remove {reference}: {e}")))
    }

    /// Untagged images left by this app's builds (they carry `dev.dockmaster.app`).
    pub async fn dangling_images(&self, app_label: &str) -> Result<Vec<ImageSummary>> {
        let label = format!("{}={app_label}", release::LABEL_APP);
        let filters: HashMap<&str, Vec<&str>> =
            HashMap::from([("dangling", vec!["true"]), ("label", vec![label.as_str()])]);
        let opts = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        self.docker.list_images(Some(opts)).await.map_err(api_error)
    }

    /// Remove an image by id; refused (an error) while a container uses it.
    pub async fn remove_image(&self, id: &str) -> Result<()> {
        let opts = RemoveImageOptionsBuilder::default().noprune(false).build();
        self.docker
            .remove_image(id, Some(opts), None)
            .await
            .map(|_| ())
            .map_err(|e| Error::failed(format!("cannot remove image {id}: {e}")))
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
            .map_err(api_error)
    }

    /// Every container (running or not), for "which images are in use".
    pub async fn all_containers(&self) -> Result<Vec<ContainerSummary>> {
        let opts = ListContainersOptionsBuilder::default().all(true).build();
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(api_error)
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
            Err(e) => Err(api_error(e)),
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
        let exec = self
            .docker
            .create_exec(container, config)
            .await
            .map_err(api_error)?;
        let run = async {
            let mut text = String::new();
            match self
                .docker
                .start_exec(&exec.id, None)
                .await
                .map_err(api_error)?
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
                .map_err(api_error)?;
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
        tolerate(self.docker.start_container(id, None).await, &[304])
    }

    /// Send a signal and return at once (the container shuts down in its own time).
    pub async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        let opts = bollard::query_parameters::KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        // 404: gone already; 409: not running.
        tolerate(
            self.docker.kill_container(id, Some(opts)).await,
            &[404, 409],
        )
    }

    /// Stop a container (SIGTERM, then SIGKILL after `grace`) and remove it.
    pub async fn stop_and_remove(&self, id: &str, grace: Duration) -> Result<()> {
        let stop = bollard::query_parameters::StopContainerOptionsBuilder::default()
            .t(grace.as_secs().try_into().unwrap_or(i32::MAX))
            .build();
        // 304: stopped already; 404: gone already.
        tolerate(
            self.docker.stop_container(id, Some(stop)).await,
            &[304, 404],
        )?;
        let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .build();
        tolerate(self.docker.remove_container(id, Some(rm)).await, &[404])
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
            .map_err(api_error)
    }

    /// The TCP ports an image declares with `EXPOSE`.
    pub async fn exposed_ports(&self, image: &str) -> Result<Vec<u16>> {
        let inspect = self.docker.inspect_image(image).await.map_err(api_error)?;
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
                Err(e) => return Err(api_error(e)),
            }
        }
        Ok(out)
    }

    /// Stream the container's logs to stdout (`logs -f`).
    pub async fn follow_logs(&self, container: &str, tail: usize, follow: bool) -> Result<()> {
        use std::io::Write;
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(follow)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(container, Some(opts));
        let mut stdout = std::io::stdout();
        while let Some(item) = stream.next().await {
            let chunk = item.map_err(api_error)?;
            if stdout
                .write_all(&chunk.into_bytes())
                .and_then(|_| stdout.flush())
                .is_err()
            {
                // A closed pipe (`| head`) is not an error.
                return Ok(());
            }
        }
        Ok(())
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
    }
}

/// An engine answer where these HTTP statuses mean "already as wanted".
fn tolerate(r: std::result::Result<(), bollard::errors::Error>, ok: &[u16]) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code, .. })
            if ok.contains(&status_code) =>
        {
            Ok(())
        }
        Err(e) => Err(api_error(e)),
    }
}

fn api_error(e: bollard::errors::Error) -> Error {
    Error::failed(format!("Docker engine error: {e}"))
        .hint("`docker info` shows whether the engine is healthy; retry once it is")
}
