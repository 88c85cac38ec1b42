//! The service spec a release gets: pure functions, no engine.
//!
//! A release goes live on Swarm as a forward `service update` whose task template names the
//! release's image by its id (`sha256:…`): a name no registry can hold, which Swarm's agents
//! never try to pull (they skip the pull for an image id), so no task start waits on, or is
//! hijacked by, a public registry. The release tag and repository ride along as labels on the
//! service and on its containers, so `docker service inspect` and `docker ps` on any node say
//! which release runs.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{EndpointPortConfigPublishModeEnum, ServiceSpec};

use crate::runtime::Target;

/// The release tag, on the service and on every task's container.
pub const LABEL_RELEASE: &str = "dev.dockmaster.release";
/// The image repository the release tag belongs to (`<repository>:<tag>` on every node).
pub const LABEL_REPOSITORY: &str = "dev.dockmaster.repository";
/// The compose file's definition of the service when the service was last made from it.
pub const LABEL_FINGERPRINT: &str = "dev.dockmaster.compose-fingerprint";
/// `docker stack deploy` records the image it was given here; kept in step with the spec.
const LABEL_STACK_IMAGE: &str = "com.docker.stack.image";

/// How long Swarm watches each updated task for a failure before the next (dockmaster
/// watches every task itself; Swarm's own monitor only decides when it calls the update
/// complete, so a short one saves that much per update).
pub const UPDATE_MONITOR: Duration = Duration::from_secs(1);

/// Docker's health check interval when none is set.
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// The order tasks are replaced in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// The new task starts, and must be healthy, before the old one stops.
    StartFirst,
    /// The old task stops first (host-mode ports: two tasks cannot hold one port on a node).
    StopFirst,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::StartFirst => "start-first",
            Order::StopFirst => "stop-first",
        }
    }
}

/// The `docker service update` arguments that make the service run `target`: the image by
/// id (and told not to resolve it), the labels, one task at a time in `order`, Swarm's own
/// rollback off (a failed task pauses the update; dockmaster rolls back forward), and the
/// health check interval `interval` (see [`health_interval`]).
///
/// The update goes through the docker CLI rather than a spec posted from here: the CLI
/// round-trips the whole spec in the engine's own types, while a spec read into another
/// model and posted back loses what that model spells differently (bollard's
/// `ContainerSpec.HealthCheck` is the engine's `Healthcheck`, so it would drop the service's
/// health check).
pub fn update_args(
    target: &Target,
    repository: &str,
    order: Order,
    interval: Option<Duration>,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "service".into(),
        "update".into(),
        "--detach".into(),
        "--no-resolve-image".into(),
        "--image".into(),
        target.image_id.clone(),
    ];
    for flag in ["--label-add", "--container-label-add"] {
        args.push(flag.into());
        args.push(format!("{LABEL_RELEASE}={}", target.tag));
        args.push(flag.into());
        args.push(format!("{LABEL_REPOSITORY}={repository}"));
    }
    args.extend(
        [
            "--label-add",
            &format!("{LABEL_STACK_IMAGE}={}", target.image_id),
            "--update-parallelism",
            "1",
            "--update-delay",
            "0s",
            "--update-failure-action",
            "pause",
            "--update-max-failure-ratio",
            "0",
            "--update-monitor",
            &format!("{}ms", UPDATE_MONITOR.as_millis()),
            "--update-order",
            order.as_str(),
        ]
        .map(String::from),
    );
    if let Some(i) = interval {
        args.push("--health-interval".into());
        args.push(format!("{}ms", i.as_millis()));
    }
    args
}

/// The health check interval the service gets: the check's own (the compose file's, else
/// the image's; Docker's 30 s when it sets none), cut to `most` when longer — the test,
/// timeout, retries and start period stay the user's. None: there is no health check.
///
/// Why: Swarm puts a task in DNS, and goes on with a start-first update, only once Docker
/// calls it healthy, and Docker's first check comes one interval after the start (30 s in
/// many compose files: 30 s per replica per update). `start_interval` would do this only
/// while starting, but it needs API 1.44. The cost is a check every `most` instead of every
/// 30 s, per task.
pub fn health_interval(check: Option<Option<Duration>>, most: Duration) -> Option<Duration> {
    let theirs = check?
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_HEALTH_INTERVAL);
    Some(theirs.min(most))
}

/// Start-first, unless the service publishes a port in host mode: then two tasks of it
/// cannot run on one node at once, and a start-first update would wait for a node with the
/// port free (forever, when every node runs a task) — those services update stop-first,
/// one task at a time, and say so.
pub fn order_for(spec: &ServiceSpec) -> Order {
    let host_ports = spec
        .endpoint_spec
        .as_ref()
        .and_then(|e| e.ports.as_ref())
        .is_some_and(|ports| {
            ports
                .iter()
                .any(|p| p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST))
        });
    if host_ports {
        Order::StopFirst
    } else {
        Order::StartFirst
    }
}

/// What a node offers to placement constraints.
#[derive(Clone, Debug, Default)]
pub struct NodeFacts {
    pub id: String,
    pub hostname: String,
    /// "manager" or "worker".
    pub role: String,
    pub labels: HashMap<String, String>,
    pub engine_labels: HashMap<String, String>,
    pub os: String,
    pub arch: String,
    /// The swarm sees its engine (status "ready").
    pub up: bool,
}

/// Does `node` satisfy every constraint (`node.role==manager`, `node.labels.disk!=hdd`…)?
/// A constraint this does not understand counts as satisfied: the node then gets the image
/// too, which costs a copy and never leaves a node that may run a task without it.
pub fn allows(constraints: &[String], node: &NodeFacts) -> bool {
    constraints.iter().all(|c| allows_one(c, node))
}

fn allows_one(constraint: &str, node: &NodeFacts) -> bool {
    let (key, value, equal) = if let Some((k, v)) = constraint.split_once("!=") {
        (k, v, false)
    } else if let Some((k, v)) = constraint.split_once("==") {
        (k, v, true)
    } else {
        return true;
    };
    let key = key.trim();
    let value = value.trim();
    let actual = match key {
        "node.id" => Some(node.id.as_str()),
        "node.hostname" => Some(node.hostname.as_str()),
        "node.role" => Some(node.role.as_str()),
        "node.platform.os" => Some(node.os.as_str()),
        "node.platform.arch" => Some(node.arch.as_str()),
        _ => {
            if let Some(label) = key.strip_prefix("node.labels.") {
                node.labels.get(label).map(String::as_str)
            } else if let Some(label) = key.strip_prefix("engine.labels.") {
                node.engine_labels.get(label).map(String::as_str)
            } else {
                return true;
            }
        }
    };
    // Swarm compares case-insensitively, and a missing label equals nothing.
    let same = actual.is_some_and(|a| a.eq_ignore_ascii_case(value));
    same == equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{EndpointPortConfig, EndpointSpec};

    #[test]
    fn the_interval_is_cut_when_longer_and_kept_when_shorter() {
        let most = Duration::from_secs(2);
        let s = Duration::from_secs;
        assert_eq!(health_interval(Some(Some(s(30))), most), Some(s(2)));
        assert_eq!(
            health_interval(Some(None), most),
            Some(s(2)),
            "Docker's 30 s"
        );
        assert_eq!(health_interval(Some(Some(s(1))), most), Some(s(1)));
        assert_eq!(health_interval(None, most), None, "no check, no interval");
    }

    #[test]
    fn the_update_names_the_image_by_id_and_labels_the_release() {
        let target = Target {
            tag: "2026.11.25-abcdef1".into(),
            image_id: "sha256:00ff".into(),
        };
        let args = update_args(
            &target,
            "myapp",
            Order::StartFirst,
            Some(Duration::from_secs(2)),
        );
        let text = args.join(" ");
        assert!(
            text.starts_with("service update --detach --no-resolve-image --image sha256:00ff ")
        );
        assert!(text.contains("--container-label-add dev.dockmaster.release=2026.11.25-abcdef1"));
        assert!(text.contains("--label-add dev.dockmaster.repository=myapp"));
        assert!(text.contains("--update-parallelism 1"));
        assert!(text.contains("--update-failure-action pause"));
        assert!(text.contains("--update-order start-first"));
        assert!(text.ends_with("--health-interval 2000ms"));
        let args = update_args(&target, "myapp", Order::StopFirst, None);
        assert!(args.join(" ").contains("--update-order stop-first"));
        assert!(!args.contains(&"--health-interval".to_string()));
    }

    #[test]
    fn host_mode_ports_update_stop_first() {
        let mut spec = ServiceSpec::default();
        assert_eq!(order_for(&spec), Order::StartFirst);
        spec.endpoint_spec = Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                target_port: Some(8080),
                published_port: Some(8080),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::INGRESS),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(order_for(&spec), Order::StartFirst);
        spec.endpoint_spec.as_mut().unwrap().ports.as_mut().unwrap()[0].publish_mode =
            Some(EndpointPortConfigPublishModeEnum::HOST);
        assert_eq!(order_for(&spec), Order::StopFirst);
    }

    #[test]
    fn placement_constraints() {
        let node = NodeFacts {
            id: "abc".into(),
            hostname: "nas2".into(),
            role: "worker".into(),
            labels: HashMap::from([("disk".to_string(), "ssd".to_string())]),
            os: "linux".into(),
            arch: "x86_64".into(),
            ..Default::default()
        };
        let c = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(allows(&c(&[]), &node));
        assert!(allows(&c(&["node.role==worker"]), &node));
        assert!(!allows(&c(&["node.role == manager"]), &node));
        assert!(allows(
            &c(&["node.hostname!=nas1", "node.labels.disk==SSD"]),
            &node
        ));
        assert!(!allows(&c(&["node.labels.gpu==yes"]), &node));
        assert!(allows(&c(&["node.labels.gpu!=yes"]), &node));
        assert!(
            allows(&c(&["something.unknown==x"]), &node),
            "unknown: ship anyway"
        );
    }
}
