//! Putting a release live. Two strategies:
//!
//! - **start-first** (`start_first.rs`, the default where it is safe): the release starts in a
//!   container of its own beside the live one and passes the health gate while the live one
//!   keeps serving; then dockmaster's proxy, which holds the service's name, `container_name`
//!   and published ports, moves traffic to it in one step, lets the old one's requests
//!   finish, and the old container is removed.
//! - **recreate** (`recreate.rs`): compose stops the old container and starts the new one,
//!   as the guide's script does.

mod recreate;
pub mod start_first;

use std::path::PathBuf;
use std::time::Duration;

use fs_err as fs;

pub use recreate::{Switcher, image_has_container_config};

use crate::engine::{ContainerInfo, Engine, LABEL_ROLE};
use crate::error::{Error, Result};
use crate::settings::{App, Strategy};

/// The strategy a switch uses, the container ports the proxy serves, and why.
#[derive(Clone, Debug)]
pub struct Choice {
    pub strategy: Strategy,
    pub ports: Vec<u16>,
    pub why: String,
}

/// Pick the strategy: `--strategy`, else `strategy` in dockmaster.toml, else start-first
/// unless the service makes it unsafe (see the README's "Switching" section).
pub async fn choose(
    app: &App,
    engine: &Engine,
    image: &str,
    requested: Option<Strategy>,
) -> Result<Choice> {
    let svc = &app.service_def;
    let mut ports = svc.container_ports.clone();
    if ports.is_empty() {
        ports = engine.exposed_ports(image).await.unwrap_or_default();
    }
    if ports.is_empty()
        && let Some((_, port)) = &app.health.http
    {
        ports.push(*port);
    }
    let explicit = requested.or(app.strategy);
    let recreate = |why: String| Choice {
        strategy: Strategy::Recreate,
        ports: vec![],
        why,
    };
    let blocker = if let Some(mode) = &svc.network_mode {
        Some(format!(
            "the service has `network_mode: {mode}`, so a proxy cannot take over its address"
        ))
    } else if ports.is_empty() {
        Some(
            "no container port is known (no `ports:` or `expose:` in the compose file, no EXPOSE in the image)"
                .to_string(),
        )
    } else {
        None
    };
    match explicit {
        Some(Strategy::Recreate) => Ok(recreate(if requested.is_some() {
            "recreate, as asked with --strategy".into()
        } else {
            "recreate, as set in dockmaster.toml".into()
        })),
        Some(Strategy::StartFirst) => match blocker {
            Some(b) => Err(
                Error::bad_input(format!("start-first is not possible: {b}"))
                    .hint("use --strategy recreate, or add `expose: [\"<port>\"]` to the service"),
            ),
            None => Ok(Choice {
                strategy: Strategy::StartFirst,
                why: format!(
                    "start-first, as {} (proxying port{} {})",
                    if requested.is_some() {
                        "asked with --strategy"
                    } else {
                        "set in dockmaster.toml"
                    },
                    if ports.len() == 1 { "" } else { "s" },
                    list(&ports)
                ),
                ports,
            }),
        },
        None => {
            if let Some(b) = blocker {
                return Ok(recreate(format!("recreate: {b}")));
            }
            if let Some(m) = svc.shared_writable_mounts.first() {
                return Ok(recreate(format!(
                    "recreate: `{m}` would be mounted writable in two containers at once; set strategy = \"start-first\" in dockmaster.toml if the app allows that"
                )));
            }
            Ok(Choice {
                strategy: Strategy::StartFirst,
                why: format!(
                    "start-first (zero downtime; proxying port{} {})",
                    if ports.len() == 1 { "" } else { "s" },
                    list(&ports)
                ),
                ports,
            })
        }
    }
}

fn list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Variables set in compose's environment.
pub type EnvVars = Vec<(String, String)>;

/// How compose is told which image to run: the tag variable in its environment, or (with
/// no tag variable) an override file that sets `image:`, kept in the state directory (never
/// in the user's checkout, which must stay clean).
pub fn image_override(app: &App, tag: &str) -> Result<(Vec<PathBuf>, EnvVars)> {
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
pub async fn compose_up(
    compose: &crate::compose::Cli,
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

/// Is this the service's switch proxy rather than the app?
pub fn is_proxy(c: &ContainerInfo) -> bool {
    c.labels.get(LABEL_ROLE).map(String::as_str) == Some("proxy")
}

/// The app container a running proxy sends traffic to, asked from the proxy itself.
pub async fn proxy_upstream(engine: &Engine, proxy: &ContainerInfo) -> Option<String> {
    if !proxy.running {
        return None;
    }
    let out = engine
        .exec_output(
            &proxy.id,
            vec!["/dockmaster".into(), "proxy-ctl".into(), "status".into()],
            Duration::from_secs(5),
        )
        .await
        .ok()
        .flatten()?;
    let (0, text) = out else { return None };
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("upstream="))
        .map(str::to_string)
}

/// Release containers of the service other than `keep` (the live one): `standby` (the one
/// that served until this switch) is stopped and kept, so that rolling back to it is a
/// container start; every other one (older standbys, leftovers of an interrupted switch)
/// is removed. Returns the names (stopped, removed).
pub async fn retire_app_containers(
    app: &App,
    engine: &Engine,
    keep: Option<&str>,
    standby: Option<&str>,
) -> Result<(Vec<String>, Vec<String>)> {
    let (mut stopped, mut removed) = (vec![], vec![]);
    for c in engine
        .app_containers(&app.project.name, &app.service)
        .await?
    {
        if Some(c.id.as_str()) == keep || Some(c.name.as_str()) == keep {
            continue;
        }
        if Some(c.name.as_str()) == standby {
            tracing::info!(container = %c.name, "stopping the old release container (kept as standby)");
            // A stopped standby must stay stopped across engine restarts. It is drained
            // already: it gets its stop signal and shuts down in its own time (a later
            // switch stops whatever is still running with `docker stop`'s grace period).
            engine.set_restart_policy(&c.id, "no").await?;
            if c.running {
                let signal = c.stop_signal.as_deref().unwrap_or("SIGTERM");
                engine.signal(&c.id, signal).await?;
            }
            stopped.push(c.name);
        } else {
            tracing::info!(container = %c.name, "removing old release container");
            engine
                .stop_and_remove(&c.id, Duration::from_secs(10))
                .await?;
            removed.push(c.name);
        }
    }
    Ok((stopped, removed))
}
