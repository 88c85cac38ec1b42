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

use bollard::models::{
    EndpointPortConfigPublishModeEnum, HealthConfig, ServiceSpec, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
};

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

/// Make `spec` run `target`: the image by id, the labels, one task at a time in `order`,
/// Swarm's own rollback off (failure pauses the update; dockmaster rolls back forward), and
/// a health check interval of at most `interval` (see [`clamp_health`]).
pub fn apply(
    spec: &mut ServiceSpec,
    target: &Target,
    repository: &str,
    order: Order,
    interval: Duration,
    image_health: Option<&HealthConfig>,
) {
    let labels = spec.labels.get_or_insert_with(HashMap::new);
    labels.insert(LABEL_RELEASE.into(), target.tag.clone());
    labels.insert(LABEL_REPOSITORY.into(), repository.into());
    if labels.contains_key(LABEL_STACK_IMAGE) {
        labels.insert(LABEL_STACK_IMAGE.into(), target.image_id.clone());
    }
    let task = spec.task_template.get_or_insert_with(Default::default);
    let container = task.container_spec.get_or_insert_with(Default::default);
    container.image = Some(target.image_id.clone());
    let labels = container.labels.get_or_insert_with(HashMap::new);
    labels.insert(LABEL_RELEASE.into(), target.tag.clone());
    labels.insert(LABEL_REPOSITORY.into(), repository.into());
    container.health_check = clamp_health(container.health_check.as_ref(), image_health, interval);
    spec.update_config = Some(update_config(order));
}

/// One task at a time; on a failed task Swarm pauses (it never rolls back by itself:
/// its rollback swaps to `PreviousSpec`, which is not dockmaster's history).
pub fn update_config(order: Order) -> ServiceSpecUpdateConfig {
    ServiceSpecUpdateConfig {
        parallelism: Some(1),
        delay: Some(0),
        failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
        monitor: Some(UPDATE_MONITOR.as_nanos() as i64),
        max_failure_ratio: Some(0.0),
        order: Some(match order {
            Order::StartFirst => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
            Order::StopFirst => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
        }),
    }
}

/// The health check the spec carries: the service's own (from the compose file), else the
/// image's, with its interval cut to `interval` when longer — the test, timeout, retries
/// and start period stay the user's.
///
/// Why: Swarm puts a task in DNS, and goes on with a start-first update, only once Docker
/// calls it healthy, and Docker's first check comes one interval after the start (30 s in
/// many compose files: 30 s per replica per update). `start_interval` would do this only
/// while starting, but it needs API 1.44. The cost is a check every `interval` instead of
/// every 30 s, per task.
pub fn clamp_health(
    spec: Option<&HealthConfig>,
    image: Option<&HealthConfig>,
    interval: Duration,
) -> Option<HealthConfig> {
    let base = spec.filter(|h| h.test.is_some()).or(image)?;
    let test = base.test.as_ref()?;
    if test.first().map(String::as_str) == Some("NONE") || test.is_empty() {
        return spec.cloned();
    }
    let mut out = base.clone();
    let current = match base.interval {
        Some(ns) if ns > 0 => Duration::from_nanos(ns as u64),
        _ => DEFAULT_HEALTH_INTERVAL,
    };
    out.interval = Some(current.min(interval).as_nanos() as i64);
    Some(out)
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
    use bollard::models::{EndpointPortConfig, EndpointSpec, TaskSpec, TaskSpecContainerSpec};

    fn secs(n: u64) -> i64 {
        Duration::from_secs(n).as_nanos() as i64
    }

    fn check(interval: Option<i64>) -> HealthConfig {
        HealthConfig {
            test: Some(vec!["CMD".into(), "true".into()]),
            interval,
            timeout: Some(secs(3)),
            retries: Some(4),
            ..Default::default()
        }
    }

    #[test]
    fn the_interval_is_cut_and_the_rest_of_the_check_kept() {
        let out = clamp_health(Some(&check(Some(secs(30)))), None, Duration::from_secs(2));
        let out = out.unwrap();
        assert_eq!(out.interval, Some(secs(2)));
        assert_eq!(out.timeout, Some(secs(3)));
        assert_eq!(out.retries, Some(4));
        // Unset means Docker's 30 s: cut too. A shorter one stays.
        assert_eq!(
            clamp_health(Some(&check(None)), None, Duration::from_secs(2))
                .unwrap()
                .interval,
            Some(secs(2))
        );
        assert_eq!(
            clamp_health(Some(&check(Some(secs(1)))), None, Duration::from_secs(2))
                .unwrap()
                .interval,
            Some(secs(1))
        );
    }

    #[test]
    fn the_images_check_is_used_when_the_service_has_none_and_none_stays_none() {
        let out = clamp_health(None, Some(&check(Some(secs(60)))), Duration::from_secs(2));
        assert_eq!(out.unwrap().interval, Some(secs(2)));
        assert!(clamp_health(None, None, Duration::from_secs(2)).is_none());
        let disabled = HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        };
        let out = clamp_health(
            Some(&disabled),
            Some(&check(Some(secs(60)))),
            Duration::from_secs(2),
        );
        assert_eq!(out.unwrap().test, Some(vec!["NONE".to_string()]));
    }

    #[test]
    fn apply_names_the_image_by_id_and_labels_the_release() {
        let mut spec = ServiceSpec {
            labels: Some(HashMap::from([(
                LABEL_STACK_IMAGE.to_string(),
                "myapp:latest".to_string(),
            )])),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some("myapp:latest".into()),
                    env: Some(vec!["A=1".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let target = Target {
            tag: "2026.11.25-abcdef1".into(),
            image_id: "sha256:00ff".into(),
        };
        apply(
            &mut spec,
            &target,
            "myapp",
            Order::StartFirst,
            Duration::from_secs(2),
            None,
        );
        let c = spec.task_template.as_ref().unwrap().container_spec.as_ref().unwrap();
        assert_eq!(c.image.as_deref(), Some("sha256:00ff"));
        assert_eq!(c.env, Some(vec!["A=1".to_string()]), "the rest is kept");
        assert_eq!(c.labels.as_ref().unwrap()[LABEL_RELEASE], "2026.11.25-abcdef1");
        let labels = spec.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_RELEASE], "2026.11.25-abcdef1");
        assert_eq!(labels[LABEL_REPOSITORY], "myapp");
        assert_eq!(labels[LABEL_STACK_IMAGE], "sha256:00ff");
        let u = spec.update_config.as_ref().unwrap();
        assert_eq!(u.parallelism, Some(1));
        assert_eq!(u.order, Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST));
        assert_eq!(
            u.failure_action,
            Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE)
        );
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
        assert!(allows(&c(&["node.hostname!=nas1", "node.labels.disk==SSD"]), &node));
        assert!(!allows(&c(&["node.labels.gpu==yes"]), &node));
        assert!(allows(&c(&["node.labels.gpu!=yes"]), &node));
        assert!(allows(&c(&["something.unknown==x"]), &node), "unknown: ship anyway");
    }
}
