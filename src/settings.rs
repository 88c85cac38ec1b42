//! Compose file + dockmaster.toml + flags + environment, resolved once into `App`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{GlobalArgs, parse_duration};
use crate::compose::{Build, Project};
use crate::error::Kind;

pub const CONFIG_FILE: &str = "dockmaster.toml";

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is wrong with the app's settings (dockmaster.toml, the compose file, the
/// environment). `Display` is the message alone; [`Error::hint`] is the fix, which the
/// conversion into [`crate::error::Error`] puts on its own `hint:` line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The compose project itself (its own hints).
    #[error(transparent)]
    Compose(#[from] crate::compose::Error),

    #[error("cannot read the working directory: {source}")]
    WorkingDirectory { source: std::io::Error },

    #[error("cannot read {}: {source}", path.display())]
    ConfigUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{} is not valid: {reason}", path.display())]
    InvalidConfig { path: PathBuf, reason: String },

    /// `reason` names the value (`cli::parse_duration`'s words).
    #[error("{key} in {CONFIG_FILE}: {reason}")]
    BadDuration {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },

    #[error("[health] in {CONFIG_FILE} needs both `path` and `port` for an HTTP probe")]
    IncompleteProbe {
        path: PathBuf,
        /// The key that is set; the other one is missing.
        given: &'static str,
    },

    #[error("no service in {files} has `build:`, so there is nothing to release")]
    NoBuildableService { files: String },

    #[error("{files} has several services with `build:`: {}", services.join(", "))]
    SeveralBuildable {
        files: String,
        services: Vec<String>,
    },

    #[error(
        "service `{service}` in {files} has no `build:`, so there is nothing to build a release from"
    )]
    NotBuildable { service: String, files: String },

    #[error("`{repository}` is not a valid image repository name")]
    BadRepository { repository: String },

    #[error("{key} in {CONFIG_FILE}: `{value}` is not {expected}")]
    BadValue {
        path: PathBuf,
        key: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("{name}={value:?} is not a duration: {reason}")]
    BadEnvDuration {
        name: &'static str,
        value: String,
        reason: String,
    },
}

impl Error {
    /// What the user can do about it: the last line of every message dockmaster prints.
    pub fn hint(&self) -> String {
        match self {
            Error::Compose(e) => e.hint(),
            Error::WorkingDirectory { .. } => {
                "run dockmaster from a directory that exists and this user can read".into()
            }
            Error::ConfigUnreadable { .. } => {
                "make it readable by this user, or remove it to use the defaults".into()
            }
            Error::InvalidConfig { .. } => "the README lists every key dockmaster.toml takes".into(),
            Error::BadDuration { path, key, .. } => format!(
                "fix {key} in {}: a number of seconds or a duration such as 90s, 5m or 14d",
                path.display()
            ),
            Error::IncompleteProbe { path, given } => {
                let missing = if *given == "path" { "port" } else { "path" };
                format!(
                    "add `{missing}` under [health] in {} (or remove `{given}` to let the gate use the health check or the settle time)",
                    path.display()
                )
            }
            Error::NoBuildableService { .. } => "dockmaster releases a service built from source: add `build:` to it, or pass the right file with -f".into(),
            Error::SeveralBuildable { services, .. } => format!(
                "pick one with --service (e.g. --service {}) or `service = \"…\"` in {CONFIG_FILE}",
                services.first().map_or("…", String::as_str)
            ),
            Error::NotBuildable { .. } => "dockmaster releases a service built from source: add `build: .` (or the path to its Dockerfile's directory)".into(),
            Error::BadRepository { .. } => "repository names are lower case letters, digits and . _ - / (set `image` in dockmaster.toml)".into(),
            Error::BadEnvDuration { .. } => "write it as e.g. 500ms, 2s or 1m".into(),
            Error::BadValue {
                path, key, expected, ..
            } => format!("set {key} in {} to {expected}", path.display()),
        }
    }

    /// Settings are the user's to fix before anything changes; only a working directory
    /// that cannot be read, or a broken compose program, is a failure.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Compose(e) => e.kind(),
            Error::WorkingDirectory { .. } => Kind::Failed,
            _ => Kind::BadInput,
        }
    }
}

impl From<Error> for crate::error::Error {
    fn from(e: Error) -> crate::error::Error {
        crate::error::Error::typed(e.kind(), e.to_string(), e.hint())
    }
}

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
    /// Start-first: how the proxy forwards: "http" (HTTP/1.1 with upgrades; the default)
    /// or "tcp" (raw connections, for a service that speaks its own protocol).
    pub proxy: Option<crate::proxy::Mode>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub watch: WatchConfig,
    /// Where releases run: "compose" (one host; the default) or "swarm" (a Swarm service).
    pub runtime: Option<RuntimeKind>,
    #[serde(default)]
    pub swarm: SwarmConfig,
}

/// Where releases run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// One host, with docker compose.
    #[default]
    Compose,
    /// A Swarm service of a stack named after the compose project.
    Swarm,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Compose => "compose",
            RuntimeKind::Swarm => "swarm",
        }
    }
}

/// `[swarm]`: the Swarm runtime's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmConfig {
    /// The engines of the swarm's nodes, as `docker -H` takes them (`unix:///…`,
    /// `ssh://user@host`, `tcp://…`): where release images are shipped. The engine dockmaster
    /// talks to (`DOCKER_HOST`) is a manager and need not be listed.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// The health check interval the service spec gets when the compose file's is longer
    /// (default 2s): Swarm routes to a task and goes on with an update only once Docker
    /// calls it healthy, and Docker's first check comes one interval after the start.
    pub health_interval: Option<String>,
    /// A cluster lock whose holder has not renewed it for this long is taken over
    /// (default 60s).
    pub lock_stale: Option<String>,
}

/// The Swarm runtime's settings, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Swarm {
    pub nodes: Vec<String>,
    pub health_interval: Duration,
    pub lock_stale: Duration,
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
                Some(v) => {
                    humantime::parse_duration(v.trim()).map_err(|e| Error::BadEnvDuration {
                        name: "DOCKMASTER_SIZES_WAIT",
                        reason: e.to_string(),
                        value: v,
                    })?
                }
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

/// `[watch]`: what `deploy --watch` (or `duration` here) watches after going live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Watch every deploy this long (none: only with `--watch`).
    pub duration: Option<String>,
    /// The sliding window the rates and the p95 are taken over (default 30s).
    pub window: Option<String>,
    /// Below this many requests in the window, no verdict from rates (default 20).
    pub min_requests: Option<u64>,
    /// Most 5xx responses allowed, as a share of the window's requests (default "2%").
    pub max_5xx: Option<String>,
    /// Most connection errors to the app allowed, as a share (default "1%").
    pub max_conn_errors: Option<String>,
    /// Most the p95 latency may grow against the previous release's own (default 2.0).
    pub max_p95_ratio: Option<f64>,
}

/// The watch's thresholds, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Watch {
    pub duration: Option<Duration>,
    pub window: Duration,
    pub min_requests: u64,
    /// A share, 0.0–1.0.
    pub max_5xx: f64,
    pub max_conn_errors: f64,
    pub max_p95_ratio: f64,
}

/// `"2%"` or `0.02` → 0.02.
pub fn parse_share(s: &str) -> Option<f64> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => s.parse::<f64>().ok()?,
    };
    (0.0..=1.0).contains(&v).then_some(v)
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
    pub watch: Watch,
    /// The strategy set in dockmaster.toml, if any.
    pub strategy: Option<Strategy>,
    pub drain_timeout: Duration,
    pub standby: Standby,
    pub proxy: crate::proxy::Mode,
    pub runtime: RuntimeKind,
    pub swarm: Swarm,
    /// The environment variables dockmaster reads.
    pub env: Env,
    /// What the compose file says about the service.
    pub service_def: crate::compose::Service,
    pub config_path: Option<PathBuf>,
}

impl App {
    pub fn resolve(global: &GlobalArgs) -> Result<App> {
        let env = Env::from_process()?;
        let cwd = std::env::current_dir().map_err(|source| Error::WorkingDirectory { source })?;
        let project = Project::load(&global.files, &cwd)?;
        let config_path = project.dir.join(CONFIG_FILE);
        let (config, config_path) = if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path).map_err(|source| {
                Error::ConfigUnreadable {
                    path: config_path.clone(),
                    source,
                }
            })?;
            let config: Config = toml::from_str(&text).map_err(|e| Error::InvalidConfig {
                path: config_path.clone(),
                reason: e.to_string(),
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
            return Err(Error::NotBuildable {
                service: service_name,
                files: project.files_display(),
            });
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

        // Only a value read from the file can be bad, so the file is there to name.
        let config_file = config_path
            .clone()
            .unwrap_or_else(|| project.dir.join(CONFIG_FILE));
        let dur = |v: &Option<String>, key: &'static str, default: Duration| -> Result<Duration> {
            match v {
                None => Ok(default),
                Some(s) => parse_duration(s).map_err(|reason| Error::BadDuration {
                    path: config_file.clone(),
                    key,
                    reason,
                }),
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
                (given, _) => {
                    return Err(Error::IncompleteProbe {
                        path: config_file.clone(),
                        given: if given.is_some() { "path" } else { "port" },
                    });
                }
            },
            settle: dur(
                &config.health.settle,
                "[health] settle",
                Duration::from_secs(5),
            )?,
        };
        let share = |v: &Option<String>, key: &'static str, default: f64| -> Result<f64> {
            match v {
                None => Ok(default),
                Some(s) => parse_share(s).ok_or_else(|| Error::BadValue {
                    path: config_file.clone(),
                    key,
                    value: s.clone(),
                    expected: "a share such as \"2%\" or 0.02",
                }),
            }
        };
        let watch = Watch {
            duration: config
                .watch
                .duration
                .as_ref()
                .map(|s| dur(&Some(s.clone()), "[watch] duration", Duration::ZERO))
                .transpose()?,
            window: dur(
                &config.watch.window,
                "[watch] window",
                Duration::from_secs(30),
            )?,
            min_requests: config.watch.min_requests.unwrap_or(20),
            max_5xx: share(&config.watch.max_5xx, "[watch] max_5xx", 0.02)?,
            max_conn_errors: share(
                &config.watch.max_conn_errors,
                "[watch] max_conn_errors",
                0.01,
            )?,
            max_p95_ratio: match config.watch.max_p95_ratio {
                Some(r) if r >= 1.0 && r.is_finite() => r,
                Some(r) => {
                    return Err(Error::BadValue {
                        path: config_file.clone(),
                        key: "[watch] max_p95_ratio",
                        value: r.to_string(),
                        expected: "a number of at least 1.0, such as 2.0",
                    });
                }
                None => 2.0,
            },
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
            watch,
            strategy: config.strategy,
            drain_timeout: dur(
                &config.drain_timeout,
                "drain_timeout",
                Duration::from_secs(30),
            )?,
            standby: config.standby.unwrap_or_default(),
            proxy: config.proxy.unwrap_or_default(),
            runtime: global.runtime.or(config.runtime).unwrap_or_default(),
            swarm: Swarm {
                nodes: config.swarm.nodes.clone(),
                health_interval: dur(
                    &config.swarm.health_interval,
                    "[swarm] health_interval",
                    Duration::from_secs(2),
                )?,
                lock_stale: dur(
                    &config.swarm.lock_stale,
                    "[swarm] lock_stale",
                    Duration::from_secs(60),
                )?,
            },
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
        0 => Err(Error::NoBuildableService {
            files: project.files_display(),
        }),
        _ => Err(Error::SeveralBuildable {
            files: project.files_display(),
            services: buildable,
        }),
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
        Err(Error::BadRepository {
            repository: repo.to_string(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    fn user_facing(e: Error) -> (u8, String) {
        let e = crate::error::Error::from(e);
        (e.code(), e.to_string())
    }

    #[test]
    fn bad_settings_are_bad_input_that_name_the_key_and_the_file() {
        let (code, text) = user_facing(Error::BadDuration {
            path: "/srv/app/dockmaster.toml".into(),
            key: "[health] timeout",
            reason: "`soon` is not a duration (x); try 90s, 5m or 14d".into(),
        });
        assert_eq!(code, exit::BAD_INPUT);
        assert!(text.starts_with("[health] timeout in dockmaster.toml: `soon` is not a duration"));
        assert!(
            text.ends_with("\nhint: fix [health] timeout in /srv/app/dockmaster.toml: a number of seconds or a duration such as 90s, 5m or 14d"),
            "{text}"
        );

        let (code, text) = user_facing(Error::IncompleteProbe {
            path: "/srv/app/dockmaster.toml".into(),
            given: "path",
        });
        assert_eq!(code, exit::BAD_INPUT);
        assert!(text.contains("\nhint: add `port` under [health] in /srv/app/dockmaster.toml"));

        let (code, text) = user_facing(Error::SeveralBuildable {
            files: "compose.yml".into(),
            services: vec!["app".into(), "worker".into()],
        });
        assert_eq!(code, exit::BAD_INPUT);
        assert!(text.starts_with("compose.yml has several services with `build:`: app, worker\nhint: pick one with --service (e.g. --service app)"));
    }

    #[test]
    fn the_environment_and_the_repository_name_are_checked_with_a_hint() {
        let (code, text) = user_facing(Error::BadEnvDuration {
            name: "DOCKMASTER_SIZES_WAIT",
            value: "later".into(),
            reason: "expected number".into(),
        });
        assert_eq!(code, exit::BAD_INPUT);
        assert_eq!(
            text,
            "DOCKMASTER_SIZES_WAIT=\"later\" is not a duration: expected number\nhint: write it as e.g. 500ms, 2s or 1m"
        );
        let e = match validate_repository("My_App") {
            Err(e) => e,
            Ok(()) => panic!("an upper-case repository passed"),
        };
        let (code, text) = user_facing(e);
        assert_eq!(code, exit::BAD_INPUT);
        assert!(text.starts_with("`My_App` is not a valid image repository name\nhint: "));
    }

    #[test]
    fn compose_errors_keep_their_own_kind_and_hint() {
        let (code, text) = user_facing(Error::from(crate::compose::Error::ProgramMissing {
            configured: None,
        }));
        assert_eq!(code, exit::FAILED);
        assert!(
            text.contains("\nhint: install the compose plugin"),
            "{text}"
        );
    }
}
