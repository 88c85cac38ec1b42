//! A Swarm service as the place releases run: one service of a stack named after the compose
//! project (`<project>_<service>`, as `docker stack deploy` names it), created from the
//! compose file on the first deploy.
//!
//! dockmaster's history is the truth, not the service's `PreviousSpec`: every release goes
//! live as a forward `service update` to its image (by id: see `spec`), a rollback to any kept
//! release included, so Swarm's own one-step swap (`docker service rollback`) is never used.
//! Before an update the image is shipped to every node that may run a task (`nodes`); the
//! gate watches the update and every new task itself and fails fast; go-live's restore is a
//! forward update to the release that served.

pub mod lock;
pub mod names;
pub mod nodes;
pub mod spec;
pub mod store;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::models::{Service, Task, TaskState};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListTasksOptionsBuilder, LogsOptionsBuilder,
};
use futures_util::StreamExt;

use crate::engine::{ContainerInfo, Engine};
use crate::error::{Error, Result};
use crate::health::Verdict;
use crate::lock::Lock;
use crate::release::Release;
use crate::runtime::{
    Candidate, Choice, NotSwitched, Retired, Runtime, Serving, StandbyNow, Started, Switched,
    Target, Traffic,
};
use crate::settings::{App, Standby, Strategy};

use nodes::NodeEngine;
use spec::{NodeFacts, Order};

/// How often the gate looks at the update and the tasks.
const POLL: Duration = Duration::from_millis(250);

pub struct SwarmRuntime {
    pub app: App,
    /// The engine dockmaster talks to (`DOCKER_HOST`): a manager of the swarm, where releases
    /// are built and kept.
    pub engine: Engine,
    gate: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    /// The task the gate last found failing (its logs are the ones to show).
    failed_task: Option<String>,
    /// Each node's engine, by node id, as `ship` found them (None: the manager's).
    engines: HashMap<String, Option<String>>,
    /// The order `choose` picked (`--strategy recreate`: stop-first), for the updates of
    /// this go-live, the restore's included.
    order: Option<Order>,
}

/// A task of the service, as the gate and `status` need it.
#[derive(Clone, Debug)]
struct TaskView {
    id: String,
    slot: Option<i64>,
    node: String,
    image: String,
    state: TaskState,
    desired: TaskState,
    created: Option<jiff::Timestamp>,
    message: String,
    error: Option<String>,
    container: Option<String>,
}

impl SwarmRuntime {
    pub fn new(app: App, engine: Engine) -> SwarmRuntime {
        SwarmRuntime {
            app,
            engine,
            gate: Mutex::new(GateState::default()),
        }
    }

    /// `<project>_<service>`: the name `docker stack deploy` gives the compose service.
    pub fn service_name(&self) -> String {
        format!("{}_{}", self.app.project.name, self.app.service)
    }

    fn docker(&self) -> &bollard::Docker {
        self.engine.docker()
    }

    async fn inspect(&self) -> Result<Option<Service>> {
        let name = self.service_name();
        match self
            .docker()
            .inspect_service(&name, None::<InspectServiceOptions>)
            .await
        {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                let e = crate::engine::Error::api(format!("inspecting service {name}"), e);
                match e.status() {
                    Some(404) => Ok(None),
                    Some(503) => Err(Error::failed(format!(
                        "the engine at {} is not a swarm manager: {e}",
                        self.engine.host()
                    ))
                    .hint("point DOCKER_HOST at a manager of the swarm (`docker node ls` works there), or set runtime = \"compose\"")),
                    _ => Err(e.into()),
                }
            }
        }
    }

    async fn tasks(&self) -> Result<Vec<TaskView>> {
        let name = self.service_name();
        let filters = HashMap::from([("service", vec![name.as_str()])]);
        let opts = ListTasksOptionsBuilder::default().filters(&filters).build();
        let tasks: Vec<Task> =
            self.docker().list_tasks(Some(opts)).await.map_err(|e| {
                crate::engine::Error::api(format!("listing the tasks of {name}"), e)
            })?;
        Ok(tasks.into_iter().filter_map(view).collect())
    }

    async fn node_facts(&self) -> Result<Vec<(NodeFacts, bool, String)>> {
        let nodes = self
            .docker()
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|e| crate::engine::Error::api("listing the swarm's nodes", e))?;
        Ok(nodes
            .into_iter()
            .map(|n| {
                let spec = n.spec.unwrap_or_default();
                let desc = n.description.unwrap_or_default();
                let status = n.status.unwrap_or_default();
                let platform = desc.platform.unwrap_or_default();
                let up = status.state.map(|s| s.to_string()).as_deref() == Some("ready");
                let ready =
                    up && spec.availability.map(|a| a.to_string()).as_deref() == Some("active");
                let facts = NodeFacts {
                    id: n.id.unwrap_or_default(),
                    hostname: desc.hostname.unwrap_or_default(),
                    role: spec.role.map(|r| r.to_string()).unwrap_or_default(),
                    labels: spec.labels.unwrap_or_default(),
                    engine_labels: desc.engine.and_then(|e| e.labels).unwrap_or_default(),
                    os: platform.os.unwrap_or_default(),
                    arch: platform.architecture.unwrap_or_default(),
                    up,
                };
                (facts, ready, status.addr.unwrap_or_default())
            })
            .collect())
    }

    /// Ship `target`'s image to every ready node the service's placement allows, so that no
    /// task start waits on (or is refused for) a missing image; check that every such node
    /// has the same image id. Nothing about the service changes here: an error leaves
    /// everything as it was, and names the node.
    pub async fn ship(&self, target: &Target) -> Result<Vec<String>> {
        let app = &self.app;
        let reference = app.image_ref(&target.tag);
        let info = self
            .docker()
            .info()
            .await
            .map_err(|e| crate::engine::Error::api("asking the engine about its swarm", e))?;
        let here = info
            .swarm
            .and_then(|s| s.node_id)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                Error::bad_input(format!(
                    "runtime = \"swarm\", but the engine at {} is not part of a swarm; nothing was changed",
                    self.engine.host()
                ))
                .hint("run `docker swarm init` there (or point DOCKER_HOST at a manager), or set runtime = \"compose\"")
            })?;
        let constraints = self
            .inspect()
            .await?
            .and_then(|s| s.spec)
            .and_then(|s| s.task_template)
            .and_then(|t| t.placement)
            .and_then(|p| p.constraints)
            .unwrap_or_default();
        let nodes = self.node_facts().await?;
        let eligible: Vec<&(NodeFacts, bool, String)> = nodes
            .iter()
            .filter(|(facts, ready, _)| *ready && spec::allows(&constraints, facts))
            .collect();

        // Which engine is which node.
        let engines: Vec<NodeEngine> = app
            .swarm
            .nodes
            .iter()
            .map(|e| NodeEngine {
                endpoint: Some(e.clone()),
            })
            .collect();
        let ids = futures_util::future::join_all(engines.iter().map(NodeEngine::node_id)).await;
        let mut by_node: HashMap<String, &NodeEngine> = HashMap::new();
        let mut unreachable = vec![];
        for (engine, id) in engines.iter().zip(ids) {
            match id {
                Ok(id) => {
                    by_node.insert(id, engine);
                }
                Err(e) => unreachable.push(e.to_string()),
            }
        }

        {
            let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
            gate.engines.insert(here.clone(), None);
            for (id, engine) in &by_node {
                gate.engines.insert(id.clone(), engine.endpoint.clone());
            }
        }
        let manager = NodeEngine { endpoint: None };
        let mut done = vec![];
        for (node, _, addr) in eligible {
            let name = node_name(node, addr);
            if node.id == here {
                continue;
            }
            let Some(engine) = by_node.get(&node.id) else {
                let mut msg = format!(
                    "node {name} may run {} but dockmaster cannot reach its engine to give it {reference}; nothing was changed",
                    self.service_name()
                );
                for u in &unreachable {
                    msg.push_str(&format!("\n  {u}"));
                }
                return Err(Error::failed(msg).hint(format!(
                    "list the node's engine under [swarm] nodes in dockmaster.toml (e.g. \"ssh://user@{}\"), check that it answers (`docker -H <endpoint> info`), or drain the node (`docker node update --availability drain {}`)",
                    if addr.is_empty() { "host" } else { addr.as_str() },
                    node.hostname
                )));
            };
            let node_err = |e: nodes::Error| {
                Error::failed(format!(
                    "node {name}: {e}; {reference} is not on every node that may run it, so nothing was changed"
                ))
                .hint("check the node's engine (`docker -H <endpoint> info`), or drain the node")
            };
            let started = Instant::now();
            let has = engine.image_id(&target.image_id).await.map_err(node_err)?;
            if has.as_deref() != Some(target.image_id.as_str()) {
                engine
                    .load_from(&manager, &reference, &name)
                    .await
                    .map_err(node_err)?;
                done.push(format!(
                    "node {name}: shipped {reference} in {}",
                    crate::output::human_duration(started.elapsed())
                ));
            } else if engine
                .image_id(&reference)
                .await
                .map_err(node_err)?
                .as_deref()
                != Some(target.image_id.as_str())
            {
                engine
                    .tag(&target.image_id, &reference)
                    .await
                    .map_err(node_err)?;
            }
            let now = engine.image_id(&reference).await.map_err(node_err)?;
            if now.as_deref() != Some(target.image_id.as_str()) {
                return Err(Error::failed(format!(
                    "node {name}: {reference} is image {} there, not {}; nothing was changed",
                    now.as_deref().map_or("missing", crate::output::short_id),
                    crate::output::short_id(&target.image_id)
                ))
                .hint(
                    "remove the node's copy (`docker -H <endpoint> image rm …`) and deploy again",
                ));
            }
        }
        Ok(done)
    }

    /// The health check interval the service gets (None: it has no health check).
    async fn health_interval(&self, image: &str) -> Option<Duration> {
        let app = &self.app;
        let theirs = if app.has_compose_healthcheck {
            Some(app.service_def.healthcheck_interval)
        } else {
            self.docker()
                .inspect_image(image)
                .await
                .ok()
                .and_then(|i| i.config)
                .and_then(|c| c.healthcheck)
                .filter(|h| {
                    h.test
                        .as_ref()
                        .is_some_and(|t| !t.is_empty() && t[0] != "NONE")
                })
                .map(|h| {
                    h.interval
                        .filter(|n| *n > 0)
                        .map(|n| Duration::from_nanos(n as u64))
                })
        };
        spec::health_interval(theirs, app.swarm.health_interval)
    }

    /// Create (or make again) the stack from the compose file, with the release's image,
    /// labels and update settings laid over it in an override file, as `docker stack deploy`
    /// would make it.
    async fn deploy_stack(&self, target: &Target) -> Result<()> {
        let app = &self.app;
        let labels = serde_json::json!({
            spec::LABEL_RELEASE: target.tag,
            spec::LABEL_REPOSITORY: app.repository,
        });
        let mut service_labels = labels.clone();
        service_labels[spec::LABEL_FINGERPRINT] = self.fingerprint().into();
        let mut service = serde_json::json!({
            "image": target.image_id,
            "labels": labels,
            "deploy": {
                "labels": service_labels,
                "update_config": {
                    "parallelism": 1,
                    "delay": "0s",
                    "order": "start-first",
                    "failure_action": "pause",
                    "monitor": format!("{}ms", spec::UPDATE_MONITOR.as_millis()),
                    "max_failure_ratio": 0,
                },
            },
        });
        if let Some(i) = self.health_interval(&target.image_id).await {
            // Only the interval: the rest of the check is the compose file's (or the image's).
            service["healthcheck"] =
                serde_json::json!({ "interval": format!("{}ms", i.as_millis()) });
        }
        let over = serde_json::json!({ "services": { app.service.clone(): service } });
        std::fs::create_dir_all(&app.state_dir).map_err(|e| {
            Error::failed(format!(
                "cannot create the state directory {}: {e}",
                app.state_dir.display()
            ))
            .hint("pick a writable place with --state-dir")
        })?;
        let path = app
            .state_dir
            .join(format!("{}.swarm-override.yml", app.id()));
        std::fs::write(&path, over.to_string())
            .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))?;
        let mut c = crate::engine::cli::command("docker");
        c.env_remove("DOCKER_CONTEXT").current_dir(&app.project.dir);
        // `docker stack deploy` reads variables from its environment only, not from `.env`.
        for (k, v) in app.project.env.iter() {
            c.env(k, v);
        }
        if let Some(var) = &app.tag_var {
            c.env(var, &target.tag);
        }
        c.args([
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "--detach=true",
        ]);
        for f in &app.project.files {
            c.arg("-c").arg(f);
        }
        c.arg("-c").arg(&path).arg(&app.project.name);
        self.run_cli(c, "docker stack deploy").await
    }

    async fn run_cli(&self, mut c: tokio::process::Command, what: &str) -> Result<()> {
        let out = c
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| {
                Error::failed(format!("cannot run `{what}`: {e}"))
                    .hint(crate::engine::cli::install_hint())
            })?;
        tracing::debug!(status = ?out.status, stdout = %String::from_utf8_lossy(&out.stdout), stderr = %String::from_utf8_lossy(&out.stderr), "{what}");
        if !out.status.success() {
            return Err(Error::failed(format!(
                "`{what}` for {} failed: {}",
                self.service_name(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// The compose file's definition of the service (changes mean: make it from the file
    /// again).
    fn fingerprint(&self) -> String {
        self.app
            .project
            .service_fingerprint(&self.app.service)
            .unwrap_or_default()
    }

    /// A forward update of the service to `target`: `docker service update` when the service
    /// was made from the compose file as it is now, else `docker stack deploy` (one rolling
    /// update does both).
    async fn update(&self, target: &Target, order: Option<Order>) -> Result<()> {
        let Some(service) = self.inspect().await? else {
            return self.deploy_stack(target).await;
        };
        let spec = service.spec.unwrap_or_default();
        let fingerprint = spec
            .labels
            .as_ref()
            .and_then(|l| l.get(spec::LABEL_FINGERPRINT))
            .cloned();
        if fingerprint.as_deref() != Some(self.fingerprint().as_str()) {
            return self.deploy_stack(target).await;
        }
        let order = order.unwrap_or_else(|| spec::order_for(&spec));
        let interval = self.health_interval(&target.image_id).await;
        let mut c = crate::engine::cli::command("docker");
        c.env_remove("DOCKER_CONTEXT")
            .args(spec::update_args(
                target,
                &self.app.repository,
                order,
                interval,
            ))
            .arg(self.service_name());
        self.run_cli(c, "docker service update").await
    }

    /// What runs now: the service's tasks that are meant to run.
    async fn running(&self) -> Result<(Option<Service>, Vec<TaskView>)> {
        let service = self.inspect().await?;
        if service.is_none() {
            return Ok((None, vec![]));
        }
        Ok((service, self.tasks().await?))
    }

    /// For `doctor`: is the engine a manager, does every listed node's engine answer as a
    /// node of this swarm, and has every node that may run a task an engine listed?
    /// Ok(detail), or Err((what is wrong, the fix)).
    pub async fn check_nodes(&self) -> std::result::Result<String, (String, String)> {
        let info = match self.docker().info().await {
            Ok(i) => i,
            Err(e) => return Err((e.to_string(), "check DOCKER_HOST".into())),
        };
        let swarm = info.swarm.unwrap_or_default();
        let here = swarm.node_id.clone().unwrap_or_default();
        if here.is_empty() || swarm.control_available != Some(true) {
            return Err((
                format!("the engine at {} is not a manager of a swarm", self.engine.host()),
                "point DOCKER_HOST at a manager (`docker node ls` works there), or `docker swarm init`".into(),
            ));
        }
        let nodes = match self.node_facts().await {
            Ok(n) => n,
            Err(e) => return Err((e.to_string(), "check the manager".into())),
        };
        let mut listed = HashMap::new();
        for endpoint in &self.app.swarm.nodes {
            let engine = NodeEngine {
                endpoint: Some(endpoint.clone()),
            };
            match engine.node_id().await {
                Ok(id) if nodes.iter().any(|(n, _, _)| n.id == id) => {
                    listed.insert(id, endpoint.clone());
                }
                Ok(id) => {
                    return Err((
                        format!("{endpoint} is node {id}, which is not in this swarm"),
                        "list only this swarm's nodes under [swarm] nodes".into(),
                    ));
                }
                Err(e) => {
                    return Err((
                        e.to_string(),
                        format!(
                            "check that `docker -H {endpoint} info` answers, or remove it from [swarm] nodes"
                        ),
                    ));
                }
            }
        }
        let missing: Vec<String> = nodes
            .iter()
            .filter(|(n, ready, _)| *ready && n.id != here && !listed.contains_key(&n.id))
            .map(|(n, _, a)| node_name(n, a))
            .collect();
        if !missing.is_empty() {
            return Err((
                format!(
                    "no engine listed for {}: a release cannot be shipped there",
                    missing.join(", ")
                ),
                "add each node's engine to [swarm] nodes in dockmaster.toml (e.g. \"ssh://user@host\")".into(),
            ));
        }
        let down = nodes.iter().filter(|(n, _, _)| !n.up).count();
        Ok(format!(
            "{} is a manager; {} ready, every one reachable{}",
            self.engine.host(),
            crate::commands::plural(nodes.len() - down, "node", "nodes"),
            if down > 0 {
                format!(" ({down} down)")
            } else {
                String::new()
            }
        ))
    }

    /// The app's images on each listed node's engine: (tag, id, size), or why not.
    pub async fn node_images(
        &self,
    ) -> Vec<(
        String,
        std::result::Result<Vec<(String, String, u64)>, nodes::Error>,
    )> {
        let mut out = vec![];
        for endpoint in &self.app.swarm.nodes {
            let node = NodeEngine {
                endpoint: Some(endpoint.clone()),
            };
            out.push((endpoint.clone(), node.images(&self.app.repository).await));
        }
        out
    }

    /// Every image a task of the service names (any state: Swarm keeps the containers of
    /// a few old tasks per replica, and no node may lose an image one of them uses), the
    /// previous spec's, and the images the containers of every reachable node use.
    pub async fn images_in_use(&self) -> Result<std::collections::HashSet<String>> {
        let mut used: std::collections::HashSet<String> =
            self.tasks().await?.into_iter().map(|t| t.image).collect();
        // bollard's Service has no PreviousSpec: ask the CLI.
        let mut c = crate::engine::cli::command("docker");
        c.env_remove("DOCKER_CONTEXT").args([
            "service",
            "inspect",
            "--format",
            "{{if .PreviousSpec}}{{.PreviousSpec.TaskTemplate.ContainerSpec.Image}}{{end}}",
            &self.service_name(),
        ]);
        if let Ok(out) = c.output().await
            && out.status.success()
        {
            let previous = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !previous.is_empty() {
                used.insert(previous);
            }
        }
        for endpoint in &self.app.swarm.nodes {
            let node = NodeEngine {
                endpoint: Some(endpoint.clone()),
            };
            match node.used_images().await {
                Ok(images) => used.extend(images),
                Err(e) => {
                    return Err(Error::failed(format!(
                        "{e}; without knowing what that node's containers use, nothing is pruned"
                    ))
                    .hint("check the node's engine, or take it out of [swarm] nodes if it left the swarm"));
                }
            }
        }
        Ok(used)
    }

    fn node_label(nodes: &[(NodeFacts, bool, String)], id: &str) -> String {
        nodes
            .iter()
            .find(|(n, _, _)| n.id == id)
            .map(|(n, _, a)| node_name(n, a))
            .unwrap_or_else(|| crate::output::short_id(id).to_string())
    }
}

impl SwarmRuntime {
    /// Why a task ended, in words: Swarm's error, else (a task Swarm stopped, which it
    /// reports as "complete") what its container's health check said last, asked of the
    /// node's engine.
    async fn why_ended(&self, t: &TaskView) -> String {
        if let Some(e) = &t.error {
            return e.clone();
        }
        let endpoint = self
            .gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .engines
            .get(&t.node)
            .cloned();
        if let (Some(endpoint), Some(container)) = (endpoint, &t.container) {
            let node = NodeEngine { endpoint };
            if let Some(health) = node.last_health(container).await {
                return health;
            }
        }
        t.message.clone()
    }
}

fn node_name(node: &NodeFacts, addr: &str) -> String {
    let id = &node.id[..node.id.len().min(12)];
    if addr.is_empty() {
        format!("{} ({id})", node.hostname)
    } else {
        format!("{} ({id}, {addr})", node.hostname)
    }
}

fn view(t: Task) -> Option<TaskView> {
    let status = t.status.unwrap_or_default();
    Some(TaskView {
        id: t.id?,
        slot: t.slot,
        node: t.node_id.unwrap_or_default(),
        image: t
            .spec
            .and_then(|s| s.container_spec)
            .and_then(|c| c.image)
            .unwrap_or_default(),
        state: status.state?,
        desired: t.desired_state.unwrap_or(TaskState::RUNNING),
        created: t.created_at.and_then(|c| c.parse().ok()),
        message: status.message.unwrap_or_default(),
        error: status.err.filter(|e| !e.is_empty()),
        container: status.container_status.and_then(|c| c.container_id),
    })
}

/// A task that ended or was refused: failed, rejected, or gone while meant to run.
fn ended_badly(t: &TaskView) -> bool {
    matches!(
        t.state,
        TaskState::FAILED | TaskState::REJECTED | TaskState::ORPHANED
    ) || (matches!(t.state, TaskState::COMPLETE | TaskState::SHUTDOWN)
        && t.desired == TaskState::RUNNING)
}

/// Still holding (or about to hold) a container.
fn live_state(s: TaskState) -> bool {
    matches!(
        s,
        TaskState::NEW
            | TaskState::ALLOCATED
            | TaskState::PENDING
            | TaskState::ASSIGNED
            | TaskState::ACCEPTED
            | TaskState::PREPARING
            | TaskState::READY
            | TaskState::STARTING
            | TaskState::RUNNING
    )
}

impl Runtime for SwarmRuntime {
    async fn releases(&self) -> Result<Vec<Release>> {
        Ok(self.engine.releases(&self.app.repository).await?)
    }

    async fn serving(&self, releases: &[Release]) -> Result<Option<Serving>> {
        let (service, tasks) = self.running().await?;
        let Some(service) = service else {
            return Ok(None);
        };
        let spec = service.spec.clone().unwrap_or_default();
        let container = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.clone())
            .unwrap_or_default();
        let image = container.image.clone().unwrap_or_default();
        let image_id = if image.starts_with("sha256:") {
            image.clone()
        } else {
            self.engine.image_id(&image).await?.unwrap_or_default()
        };
        let release = releases.iter().find(|r| r.image_id == image_id).cloned();
        let meant: Vec<&TaskView> = tasks
            .iter()
            .filter(|t| t.desired == TaskState::RUNNING)
            .collect();
        let running = meant
            .iter()
            .filter(|t| t.state == TaskState::RUNNING && t.image == image)
            .count();
        let wanted = spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas)
            .map_or(meant.len(), |r| r as usize);
        let failed = tasks
            .iter()
            .filter(|t| t.image == image && ended_badly(t))
            .count();
        let labels = spec.labels.clone().unwrap_or_default();
        let state = format!("{running}/{wanted} tasks running");
        Ok(Some(Serving {
            container: ContainerInfo {
                id: service.id.clone().unwrap_or_default(),
                name: self.service_name(),
                image_ref: labels
                    .get(spec::LABEL_RELEASE)
                    .map(|t| self.app.image_ref(t))
                    .unwrap_or_else(|| image.clone()),
                image_id,
                state,
                running: running > 0,
                restarting: false,
                exit_code: 0,
                health: Some(if running >= wanted && wanted > 0 {
                    "healthy".into()
                } else {
                    "starting".into()
                }),
                started_at: service.updated_at.as_deref().and_then(|t| t.parse().ok()),
                restart_count: failed as i64,
                // Not read back from the spec: bollard's model misspells the field (see
                // `spec::update_args`). The compose file's check is what the service runs.
                healthcheck: self
                    .app
                    .service_def
                    .healthcheck_test
                    .clone()
                    .map(|t| vec![t]),
                healthcheck_timeout: None,
                ip_addresses: vec![],
                labels,
                stop_signal: container.stop_signal.clone(),
                stop_grace: container
                    .stop_grace_period
                    .map_or(crate::engine::DEFAULT_STOP_GRACE, |n| {
                        Duration::from_nanos(n as u64)
                    }),
            },
            release,
            proxy: None,
        }))
    }

    async fn traffic(&self, _window: Duration) -> Result<Option<Vec<Traffic>>> {
        // No dockmaster proxy counts a Swarm service's traffic.
        Ok(None)
    }

    async fn standby(&self, _serving: Option<&Serving>) -> Result<Option<StandbyNow>> {
        // Swarm keeps no old task running: a rollback is a forward update.
        Ok(None)
    }

    async fn remove_release(&self, tag: &str) -> Result<()> {
        let reference = self.app.image_ref(tag);
        for endpoint in &self.app.swarm.nodes {
            let node = NodeEngine {
                endpoint: Some(endpoint.clone()),
            };
            if let Err(e) = node.remove(&reference).await {
                match e {
                    nodes::Error::Command { ref reason, .. }
                        if reason.contains("No such image") => {}
                    e => tracing::warn!("{e}"),
                }
            }
        }
        self.engine.untag(&reference).await?;
        Ok(())
    }

    fn check_drivable(&self) -> Result<()> {
        Ok(())
    }

    /// This machine's lock, then the swarm's (a Swarm config object: one operation at a
    /// time across operators and managers; taken over after `[swarm] lock_stale` without a
    /// heartbeat from its holder).
    async fn lock(&self, command: &str, wait: Option<Duration>) -> Result<Lock> {
        let local = Lock::acquire(&self.app.state_dir, &self.app.id(), command, wait)?;
        let (cluster, taken) = lock::ClusterLock::acquire_on(
            self.docker(),
            self.engine.host(),
            &self.app.id(),
            command,
            wait,
            self.app.swarm.lock_stale,
        )
        .await?;
        let taken = taken.map(|t| {
            format!(
                "took over the swarm's lock for {}: its holder{} sent no heartbeat for {} (more than [swarm] lock_stale = {}); it was most likely killed",
                self.app.id(),
                t.holder
                    .map(|h| format!(
                        " (`dockmaster {}` by {}@{}, pid {}, since {})",
                        h.command, h.user, h.host, h.pid, h.since
                    ))
                    .unwrap_or_default(),
                crate::output::human_duration(t.silent_for),
                crate::output::human_duration(self.app.swarm.lock_stale)
            )
        });
        Ok(local.with_cluster(cluster, taken))
    }

    async fn prepare(&self, target: &Target) -> Result<Vec<String>> {
        self.ship(target).await
    }

    async fn choose(&self, _target: &Target, requested: Option<Strategy>) -> Result<Choice> {
        let order = match (requested, self.inspect().await?) {
            (Some(Strategy::Recreate), _) => Order::StopFirst,
            (_, Some(s)) => spec::order_for(&s.spec.unwrap_or_default()),
            (_, None) => Order::StartFirst,
        };
        self.gate.lock().unwrap_or_else(|e| e.into_inner()).order = Some(order);
        let why = match order {
            Order::StartFirst => format!(
                "a rolling {} update of Swarm service {}, one task at a time",
                order.as_str(),
                self.service_name()
            ),
            Order::StopFirst => format!(
                "a rolling {} update of Swarm service {}, one task at a time{}",
                order.as_str(),
                self.service_name(),
                if requested == Some(Strategy::Recreate) {
                    " (--strategy recreate)"
                } else {
                    ": it publishes ports in host mode, so two of its tasks cannot share a node and each replica is down while it is replaced"
                }
            ),
        };
        Ok(Choice {
            // Go-live's put-in-place path: start the update, gate it, and on failure put the
            // previous release back the same way (a forward update).
            strategy: Strategy::Recreate,
            ports: vec![],
            why,
        })
    }

    fn restore_why(&self) -> String {
        format!(
            "a forward update of Swarm service {} to the release that served",
            self.service_name()
        )
    }

    async fn start_beside(&self, target: &Target, _serving: Option<&str>) -> Result<Candidate> {
        self.put_in_place(target).await
    }

    async fn put_in_place(&self, target: &Target) -> Result<Candidate> {
        // Shipped already by `prepare`; again here for go-live's restore (a no-op when the
        // nodes have it).
        self.ship(target).await?;
        let order = self.gate.lock().unwrap_or_else(|e| e.into_inner()).order;
        self.update(target, order).await?;
        let id = self.inspect().await?.and_then(|s| s.id).unwrap_or_default();
        Ok(Candidate {
            id,
            name: self.service_name(),
            how: Started::Updated,
        })
    }

    async fn gate(
        &self,
        candidate: &Candidate,
        timeout: Duration,
        interruptible: bool,
    ) -> Result<Verdict> {
        let started = Instant::now();
        let mut deadline = started + timeout;
        let nodes = self.node_facts().await.unwrap_or_default();
        // Nodes down already are Swarm's to reschedule around; one that goes down during
        // the update fails it (its tasks are in no known state).
        let ready_at_start: std::collections::HashSet<String> = nodes
            .iter()
            .filter(|(n, _, _)| n.up)
            .map(|(n, _, _)| n.id.clone())
            .collect();
        let mut best = 0usize;
        loop {
            if interruptible && crate::interrupt::requested() {
                return Ok(Verdict::Interrupted);
            }
            let Some(service) = self.inspect().await? else {
                return Ok(Verdict::Unhealthy {
                    reason: format!("service {} disappeared", candidate.name),
                });
            };
            let spec = service.spec.clone().unwrap_or_default();
            let image = spec
                .task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let since = service
                .update_status
                .as_ref()
                .and_then(|u| u.started_at.as_deref())
                .or(service.created_at.as_deref())
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let update = service.update_status.as_ref();
            let update_state = update.and_then(|u| u.state).map(|s| s.to_string());
            let now_nodes = self.node_facts().await?;
            // Down: the swarm lost its engine (a drained node is up).
            let down: std::collections::HashSet<String> = now_nodes
                .iter()
                .filter(|(n, _, _)| !n.up)
                .map(|(n, _, _)| n.id.clone())
                .collect();
            if let Some(gone) = now_nodes
                .iter()
                .find(|(n, _, _)| !n.up && ready_at_start.contains(&n.id))
            {
                let (n, _, addr) = gone;
                return Ok(Verdict::Unhealthy {
                    reason: format!(
                        "node {} went down during the update (the swarm lost its engine); its tasks are in no known state",
                        node_name(n, addr)
                    ),
                });
            }
            // Tasks on nodes that are down count for nothing either way.
            let tasks: Vec<TaskView> = self
                .tasks()
                .await?
                .into_iter()
                .filter(|t| !down.contains(&t.node))
                .collect();
            let fresh = |t: &&TaskView| {
                t.image == image && since.is_none_or(|s| t.created.is_none_or(|c| c >= s))
            };
            if let Some(bad) = tasks.iter().filter(fresh).find(|t| ended_badly(t)) {
                self.gate
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .failed_task = Some(bad.id.clone());
                return Ok(Verdict::Unhealthy {
                    reason: format!(
                        "task {}.{} on node {} {}: {}",
                        candidate.name,
                        bad.slot.unwrap_or(0),
                        Self::node_label(&nodes, &bad.node),
                        bad.state,
                        self.why_ended(bad).await
                    ),
                });
            }
            if update_state.as_deref() == Some("paused") {
                // Swarm pauses on the task that failed; say what became of it.
                let message = update.and_then(|u| u.message.clone()).unwrap_or_default();
                // The task it names; else (Swarm may have reaped it already, with a short
                // task history) the newest task of the release that does not run.
                let named = tasks
                    .iter()
                    .filter(|t| t.image == image)
                    .find(|t| message.contains(&t.id))
                    .or_else(|| {
                        tasks
                            .iter()
                            .filter(|t| t.image == image)
                            .filter(|t| t.state != TaskState::RUNNING || t.error.is_some())
                            .max_by_key(|t| t.created)
                    });
                if let Some(t) = named {
                    self.gate
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .failed_task = Some(t.id.clone());
                }
                return Ok(Verdict::Unhealthy {
                    reason: match named {
                        Some(t) => format!(
                            "task {}.{} on node {} {}: {} (Swarm paused the update)",
                            candidate.name,
                            t.slot.unwrap_or(0),
                            Self::node_label(&nodes, &t.node),
                            t.state,
                            self.why_ended(t).await
                        ),
                        None => format!("Swarm paused the update: {message}"),
                    },
                });
            }
            let wanted = spec
                .mode
                .as_ref()
                .and_then(|m| m.replicated.as_ref())
                .and_then(|r| r.replicas)
                .map(|r| r as usize);
            let meant: Vec<&TaskView> = tasks
                .iter()
                .filter(|t| t.desired == TaskState::RUNNING)
                .collect();
            let wanted = wanted.unwrap_or(meant.len().max(1));
            let running = meant
                .iter()
                .filter(|t| t.image == image && t.state == TaskState::RUNNING)
                .count();
            // Old tasks Swarm still means to run. One it has told to stop is out of the
            // service's DNS already (the agent takes it out, waits 2 s for the other nodes to
            // hear, then sends the stop signal): it takes no new traffic and is not waited
            // for, which saves about 5 s per update (2 s + its stop grace period).
            let old_alive = tasks
                .iter()
                .filter(|t| {
                    t.image != image && t.desired == TaskState::RUNNING && live_state(t.state)
                })
                .count();
            let old_stopping = tasks
                .iter()
                .filter(|t| {
                    t.image != image && t.desired != TaskState::RUNNING && live_state(t.state)
                })
                .count();
            let updating = matches!(update_state.as_deref(), Some("updating"));
            if running > best {
                // Progress: each task that comes up gives the next the whole timeout.
                best = running;
                deadline = Instant::now() + timeout;
            }
            if running >= wanted && old_alive == 0 && !updating {
                let on: std::collections::BTreeSet<String> = meant
                    .iter()
                    .filter(|t| t.image == image)
                    .map(|t| Self::node_label(&nodes, &t.node))
                    .collect();
                return Ok(Verdict::Healthy {
                    after: started.elapsed(),
                    how: format!(
                        "{} running and healthy on {}; {}",
                        crate::commands::plural(running, "task", "tasks"),
                        on.into_iter().collect::<Vec<_>>().join(", "),
                        if old_stopping == 0 {
                            "no task of the old release left".to_string()
                        } else {
                            format!(
                                "the old release's {} out of the service's DNS and stopping",
                                crate::commands::plural(old_stopping, "task is", "tasks are")
                            )
                        }
                    ),
                });
            }
            if Instant::now() >= deadline {
                let pending: Vec<String> = meant
                    .iter()
                    .filter(|t| t.image == image && t.state != TaskState::RUNNING)
                    .map(|t| {
                        format!(
                            "task {} is {}{}",
                            t.slot.unwrap_or(0),
                            t.state,
                            t.error
                                .as_ref()
                                .map(|e| format!(" ({e})"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                if let Some(t) = meant
                    .iter()
                    .find(|t| t.image == image && t.state != TaskState::RUNNING)
                {
                    self.gate
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .failed_task = Some(t.id.clone());
                }
                return Ok(Verdict::Unhealthy {
                    reason: format!(
                        "{running} of {wanted} tasks running and healthy after {}{}{}",
                        crate::output::human_duration(started.elapsed()),
                        if old_alive > 0 {
                            format!(", {old_alive} task(s) of the old release still running")
                        } else {
                            String::new()
                        },
                        if pending.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", pending.join("; "))
                        }
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn last_logs(&self, candidate: &Candidate, lines: usize) -> Result<String> {
        let task = self
            .gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed_task
            .clone();
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = match &task {
            Some(t) => self.docker().task_logs(t, Some(opts)).boxed_local(),
            None => self
                .docker()
                .service_logs(&candidate.id, Some(opts))
                .boxed_local(),
        };
        let mut text = String::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => text.push_str(&c.to_string()),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(())) | Err(_) => Ok(text),
            Ok(Err(e)) => Err(crate::engine::Error::api("reading the task's logs", e).into()),
        }
    }

    async fn take_traffic(
        &self,
        _candidate: &Candidate,
        _choice: &Choice,
        _drain: Duration,
    ) -> std::result::Result<Switched, NotSwitched> {
        // Swarm moved traffic task by task during the update (a task is in the service's
        // DNS once healthy and leaves it before it is stopped).
        Err(NotSwitched::PreviousServing(
            "a Swarm service takes traffic during its update".into(),
        ))
    }

    async fn confirm(
        &self,
        candidate: &Candidate,
        target: &Target,
    ) -> Result<std::result::Result<(), String>> {
        let tasks = self.tasks().await?;
        let wrong: Vec<&TaskView> = tasks
            .iter()
            .filter(|t| t.desired == TaskState::RUNNING && t.image != target.image_id)
            .collect();
        if !wrong.is_empty() {
            return Ok(Err(format!(
                "{} of service {} run another image than {} ({})",
                crate::commands::plural(wrong.len(), "task", "tasks"),
                candidate.name,
                self.app.image_ref(&target.tag),
                crate::output::short_id(&target.image_id)
            )));
        }
        self.engine
            .tag(&target.image_id, &self.app.repository, "latest")
            .await?;
        Ok(Ok(()))
    }

    async fn retire(
        &self,
        _live: &Candidate,
        _previous: Option<&str>,
        _standby: Standby,
    ) -> Result<Retired> {
        // The update stopped the old tasks (the gate waited for them).
        Ok(Retired::default())
    }

    async fn discard(&self, _candidate: &Candidate) -> Result<()> {
        Ok(())
    }
}
