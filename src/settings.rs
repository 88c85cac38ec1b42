//! Compose file + dockmaster.toml + flags + environment, resolved once into `App`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fs_err as fs;
use serde::Deserialize;

use crate::cli::{GlobalArgs, parse_duration};
use crate::compose::{Build, Project};
use crate::error::{Error, Result};

pub const CONFIG_FILE: &str = "dockmaster.toml";

/// `dockmaster.toml`, beside the (first) compose file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The compose service to release.
    pub service: Option<String>,
    /// The image repository, when the compose file has no `image:` (or to override it).
    pub image: Option<String>,
    /// The variable that carries the tag, when `image:` does not name one.
    pub tag_var: Option<String>,
    /// The git remote to update from (default: the branch's upstream remote, else origin).
    pub remote: Option<String>,
    /// The branch releases come from (default: the branch's upstream branch).
    pub branch: Option<String>,
    /// Where the history and lock live.
    pub state_dir: Option<PathBuf>,
    /// How a release is switched: "start-first" or "recreate" (default: start-first
    /// where it is safe, see the README).
    pub strategy: Option<Strategy>,
    /// Start-first: how long requests still running on the old release may take to
    /// finish after traffic moved (default 30s).
    pub drain_timeout: Option<String>,
    /// Start-first: what becomes of the release that served before a switch: "hot" (kept
    /// running, drained), "cold" (kept stopped; the default) or "none" (removed).
    pub standby: Option<Standby>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// How a release replaces the live one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Start the new container beside the live one; move traffic once it is healthy.
    StartFirst,
    /// Stop the live container and start the new one in its place (the guide's way).
    Recreate,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::StartFirst => "start-first",
            Strategy::Recreate => "recreate",
        }
    }
}

/// What becomes of the release that served before a start-first switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standby {
    /// Kept running and drained: a rollback to it is a health probe and a proxy switch.
    Hot,
    /// Kept stopped: a rollback to it is a container start and the gate.
    #[default]
    Cold,
    /// Removed at once: least disk and memory; a rollback creates its container anew.
    None,
}

impl Standby {
    pub fn as_str(self) -> &'static str {
        match self {
            Standby::Hot => "hot",
            Standby::Cold => "cold",
            Standby::None => "none",
        }
    }
}

/// The environment variables dockmaster reads, read once, up front.
#[derive(Clone, Debug)]
pub struct Env {
    /// `DOCKMASTER_COMPOSE`: the compose program to use (`docker-compose`, `docker compose`).
    pub compose_program: Option<Vec<String>>,
    /// `DOCKMASTER_SIZES_WAIT`: how long `releases` waits for the engine's disk count.
    pub sizes_wait: Duration,
    /// `DOCKER_BUILDKIT`: `1`/`0` forces BuildKit or the legacy builder.
    pub buildkit: Option<bool>,
}

impl Env {
    pub fn from_process() -> Result<Env> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Ok(Env {
            compose_program: var("DOCKMASTER_COMPOSE")
                .map(|p| p.split_whitespace().map(str::to_string).collect()),
            sizes_wait: match var("DOCKMASTER_SIZES_WAIT") {
                Some(v) => humantime::parse_duration(v.trim()).map_err(|e| {
                    Error::bad_input(format!(
                        "DOCKMASTER_SIZES_WAIT={v:?} is not a duration: {e}"
                    ))
                    .hint("write it as e.g. 500ms, 2s or 1m")
                })?,
                None => Duration::from_secs(2),
            },
            buildkit: var("DOCKER_BUILDKIT").map(|v| v.trim() != "0"),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// How long a new release has to become healthy (default 60s).
    pub timeout: Option<String>,
    /// How often the gate runs the health check (default 100ms).
    pub interval: Option<String>,
    /// Without a health check: an HTTP path to probe on the container...
    pub path: Option<String>,
    /// ...at this container port.
    pub port: Option<u16>,
    /// Without a health check or probe: how long the container must run without a
    /// restart to pass (default 5s).
    pub settle: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep the N newest releases (default 10).
    pub keep: Option<usize>,
    /// Remove only releases older than this (e.g. "14d").
    pub older_than: Option<String>,
    /// Prune after every successful deploy.
    #[serde(default)]
    pub auto: bool,
}

/// How the gate decides a container is healthy.
#[derive(Clone, Debug)]
pub struct HealthSettings {
    pub timeout: Duration,
    pub interval: Duration,
    pub http: Option<(String, u16)>,
    pub settle: Duration,
}

#[derive(Clone, Debug)]
pub struct Retention {
    pub keep: usize,
    pub older_than: Option<Duration>,
    pub auto: bool,
}

/// Everything a command needs to know about the app, resolved once.
#[derive(Clone, Debug)]
pub struct App {
    pub project: Project,
    pub service: String,
    pub repository: String,
    /// The variable compose reads the tag from; `None` when `image:` has no variable tag
    /// (or no `image:` at all), in which case dockmaster sets the image in an override file.
    pub tag_var: Option<String>,
    /// Name printed as `DEPLOYED_<name>=<tag>`.
    pub deployed_var: String,
    pub build: Build,
    pub container_name: Option<String>,
    pub has_compose_healthcheck: bool,
    pub remote: Option<String>,
    pub branch: Option<String>,
    pub state_dir: PathBuf,
    pub health: HealthSettings,
    pub retention: Retention,
    /// The strategy set in dockmaster.toml, if any.
    pub strategy: Option<Strategy>,
    pub drain_timeout: Duration,
    pub standby: Standby,
    /// The environment variables dockmaster reads.
    pub env: Env,
    /// What the compose file says about the service.
    pub service_def: crate::compose::Service,
    pub config_path: Option<PathBuf>,
}

impl App {
    pub fn resolve(global: &GlobalArgs) -> Result<App> {
        let env = Env::from_process()?;
        let cwd = std::env::current_dir()
            .map_err(|e| Error::failed(format!("cannot read the working directory: {e}")))?;
        let project = Project::load(&global.files, &cwd)?;
        let config_path = project.dir.join(CONFIG_FILE);
        let (config, config_path) = if config_path.is_file() {
            let text =
                fs::read_to_string(&config_path).map_err(|e| Error::bad_input(e.to_string()))?;
            let config: Config = toml::from_str(&text).map_err(|e| {
                Error::bad_input(format!("{} is not valid: {e}", config_path.display()))
                    .hint("the README lists every key dockmaster.toml takes")
            })?;
            (config, Some(config_path))
        } else {
            (Config::default(), None)
        };

        let service_name = pick_service(
            &project,
            global.service.as_deref().or(config.service.as_deref()),
        )?;
        let service = project.service(&service_name)?;
        let Some(build) = service.build.clone() else {
            return Err(Error::bad_input(format!(
                "service `{service_name}` in {} has no `build:`, so there is nothing to build a release from",
                project.files_display()
            ))
            .hint("dockmaster releases a service built from source: add `build: .` (or the path to its Dockerfile's directory)"));
        };
        let template = service.image_template(&project)?;
        let repository = match (&config.image, &template) {
            (Some(image), _) => image.clone(),
            (None, Some(t)) if !t.repository.is_empty() => t.repository.clone(),
            // Compose's own name for a built image without `image:` (v2 spelling).
            _ => format!("{}-{}", project.name, service_name),
        };
        validate_repository(&repository)?;
        let tag_var = if config.image.is_some() {
            config.tag_var.clone()
        } else {
            config
                .tag_var
                .clone()
                .or_else(|| template.as_ref().and_then(|t| t.tag_var.clone()))
        };
        let deployed_var = tag_var.clone().unwrap_or_else(|| {
            format!(
                "{}_TAG",
                service_name
                    .to_uppercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            )
        });

        let dur = |v: &Option<String>, key: &str, default: Duration| -> Result<Duration> {
            match v {
                None => Ok(default),
                Some(s) => parse_duration(s)
                    .map_err(|e| Error::bad_input(format!("{key} in {CONFIG_FILE}: {e}"))),
            }
        };
        let health = HealthSettings {
            timeout: dur(
                &config.health.timeout,
                "[health] timeout",
                Duration::from_secs(60),
            )?,
            interval: dur(
                &config.health.interval,
                "[health] interval",
                Duration::from_millis(100),
            )?,
            http: match (&config.health.path, config.health.port) {
                (Some(p), Some(port)) => Some((p.clone(), port)),
                (None, None) => None,
                _ => {
                    return Err(Error::bad_input(format!(
                        "[health] in {CONFIG_FILE} needs both `path` and `port` for an HTTP probe"
                    )));
                }
            },
            settle: dur(
                &config.health.settle,
                "[health] settle",
                Duration::from_secs(5),
            )?,
        };
        let retention = Retention {
            keep: config.retention.keep.unwrap_or(10),
            older_than: config
                .retention
                .older_than
                .as_ref()
                .map(|s| dur(&Some(s.clone()), "[retention] older_than", Duration::ZERO))
                .transpose()?,
            auto: config.retention.auto,
        };

        let state_dir = global
            .state_dir
            .clone()
            .or_else(|| config.state_dir.clone().map(|d| project.dir.join(d)))
            .or_else(|| std::env::var_os("DOCKMASTER_STATE_DIR").map(PathBuf::from))
            .unwrap_or_else(default_state_dir);

        Ok(App {
            repository,
            tag_var,
            deployed_var,
            build,
            container_name: service.container_name.clone(),
            has_compose_healthcheck: service.has_healthcheck,
            remote: config.remote.clone(),
            branch: config.branch.clone(),
            state_dir,
            health,
            retention,
            strategy: config.strategy,
            drain_timeout: dur(
                &config.drain_timeout,
                "drain_timeout",
                Duration::from_secs(30),
            )?,
            standby: config.standby.unwrap_or_default(),
            env,
            service_def: service.clone(),
            config_path,
            service: service_name,
            project,
        })
    }

    /// A name for this app in the state directory: project and service.
    pub fn id(&self) -> String {
        format!("{}-{}", self.project.name, self.service)
    }

    pub fn image_ref(&self, tag: &str) -> String {
        format!("{}:{}", self.repository, tag)
    }
}

fn pick_service(project: &Project, wanted: Option<&str>) -> Result<String> {
    if let Some(name) = wanted {
        project.service(name)?;
        return Ok(name.to_string());
    }
    let mut buildable = vec![];
    for name in project.service_names() {
        if project.service(&name)?.build.is_some() {
            buildable.push(name);
        }
    }
    match buildable.len() {
        1 => Ok(buildable.remove(0)),
        0 => Err(Error::bad_input(format!(
            "no service in {} has `build:`, so there is nothing to release",
            project.files_display()
        ))
        .hint("dockmaster releases a service built from source: add `build:` to it, or pass the right file with -f")),
        _ => Err(Error::bad_input(format!(
            "{} has several services with `build:`: {}",
            project.files_display(),
            buildable.join(", ")
        ))
        .hint(format!(
            "pick one with --service (e.g. --service {}) or `service = \"…\"` in {CONFIG_FILE}",
            buildable[0]
        ))),
    }
}

fn validate_repository(repo: &str) -> Result<()> {
    let ok = !repo.is_empty()
        && repo
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_input(format!("`{repo}` is not a valid image repository name"))
            .hint("repository names are lower case letters, digits and . _ - / (set `image` in dockmaster.toml)"))
    }
}

fn default_state_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("dockmaster");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Path::new(&home).join(".local/state/dockmaster"),
        None => PathBuf::from("/var/lib/dockmaster"),
    }
}
