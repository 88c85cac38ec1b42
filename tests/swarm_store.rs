//! The history and the marks kept in a real swarm (`runtime::swarm::store`): two "operator
//! machines" are two history databases in two directories, each talking to a manager of
//! one swarm of real engines.

use std::time::{Duration, Instant};

use bollard::Docker;
use dockmaster::history::{Event, History, Mark, Outcome};
use dockmaster::runtime::swarm::store::{SwarmStore, event_config_name, mark_config_name};

use crate::support::swarm::{Node, Swarm};

const T0: &str = "2026.01.09-0a1b2c3";
const T1: &str = "2026.01.10-abc123f";

/// The Engine API of one node, as dockmaster speaks to it.
async fn connect(node: &Node) -> Docker {
    Docker::connect_with_unix(&node.docker_host, 120, bollard::API_DEFAULT_VERSION)
        .expect("connect to the node's socket")
        .negotiate_version()
        .await
        .expect("negotiate the API version")
}

/// A history on an operator machine of its own: a directory of its own.
fn machine(app: &str) -> (tempfile::TempDir, History) {
    let dir = tempfile::Builder::new()
        .prefix("dmhist-")
        .tempdir()
        .expect("tempdir");
    let history = History::open(dir.path(), app).expect("open the history");
    (dir, history)
}

/// The events as `dockmaster history` lists them (newest first), without the local ids:
/// what two machines must agree on.
fn listed(h: &History) -> Vec<Event> {
    h.events(None)
        .expect("events")
        .into_iter()
        .map(|e| Event { id: 0, ..e })
        .collect()
}

/// The app's configs in the swarm, as `docker config ls` names them, sorted.
fn configs(node: &Node, app: &str, kind: &str) -> Vec<String> {
    let mut names: Vec<String> = node
        .docker_ok(&[
            "config",
            "ls",
            "--filter",
            &format!("label=dev.dockmaster.app={app}"),
            "--filter",
            &format!("label=dev.dockmaster.kind={kind}"),
            "--format",
            "{{.Name}}",
        ])
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn uids(h: &History) -> Vec<String> {
    h.events_with_uid()
        .expect("events")
        .into_iter()
        .map(|(uid, _)| uid)
        .collect()
}

#[tokio::test]
async fn two_machines_share_the_history_and_the_marks_through_the_swarm() {
    let swarm = Swarm::new(1);
    let docker = connect(swarm.manager()).await;
    let app = "shop-web";
    let store = SwarmStore::new(&docker, app);
    let (_a_dir, a) = machine(app);
    let (_b_dir, b) = machine(app);

    // A deploys T1 and marks it known-good.
    a.record("deploy", Some(T0), Some(T1))
        .unwrap()
        .end(Outcome::Succeeded, None)
        .unwrap();
    a.mark(T1, Mark::KnownGood).unwrap();
    assert_eq!(store.push(&a).await.unwrap(), 2);
    let a_uid = uids(&a).remove(0);
    assert_eq!(
        configs(swarm.manager(), app, "event"),
        [event_config_name(app, &a_uid)]
    );
    assert_eq!(
        configs(swarm.manager(), app, "mark"),
        [mark_config_name(app, T1)]
    );

    // B sees the same event (times, outcome, who) and the same mark.
    assert_eq!(store.pull(&b).await.unwrap(), 2);
    let seen = listed(&b);
    assert_eq!(seen, listed(&a));
    assert_eq!(seen.len(), 1);
    let deploy = &seen[0];
    assert_eq!(deploy.command, "deploy");
    assert_eq!(deploy.from_release.as_deref(), Some(T0));
    assert_eq!(deploy.to_release.as_deref(), Some(T1));
    assert_eq!(deploy.outcome, "succeeded");
    assert_eq!(deploy.reason, None);
    assert!(deploy.ended_at.is_some() && deploy.duration_ms.is_some());
    assert_eq!(uids(&b), [a_uid]);
    assert_eq!(b.marks_at().unwrap(), a.marks_at().unwrap());
    assert_eq!(b.marks().unwrap()[T1], Mark::KnownGood);
    assert_eq!(b.last_put_live().unwrap().as_deref(), Some(T1));

    // B rolls back to T0 and marks T1 failed: the mark's config is replaced.
    b.record("rollback", Some(T1), Some(T0))
        .unwrap()
        .end(Outcome::Succeeded, Some("T1 answers 500 on /checkout"))
        .unwrap();
    b.mark(T1, Mark::Failed).unwrap();
    assert_eq!(store.push(&b).await.unwrap(), 2);
    assert_eq!(configs(swarm.manager(), app, "event").len(), 2);
    assert_eq!(
        configs(swarm.manager(), app, "mark"),
        [mark_config_name(app, T1)]
    );
    let label = swarm.manager().docker_ok(&[
        "config",
        "inspect",
        "--format",
        "{{index .Spec.Labels \"dev.dockmaster.mark\"}}",
        &mark_config_name(app, T1),
    ]);
    assert_eq!(label.trim(), "failed");

    // A pulls: both machines list the same events in the same order, and the same marks.
    assert_eq!(store.pull(&a).await.unwrap(), 2);
    let events = listed(&a);
    assert_eq!(events, listed(&b));
    let commands: Vec<&str> = events.iter().map(|e| e.command.as_str()).collect();
    assert_eq!(commands, ["rollback", "deploy"]);
    assert_eq!(
        events[0].reason.as_deref(),
        Some("T1 answers 500 on /checkout")
    );
    assert_eq!(uids(&a), uids(&b));
    assert_eq!(a.marks_at().unwrap(), b.marks_at().unwrap());
    assert_eq!(a.marks().unwrap()[T1], Mark::Failed);
    assert_eq!(a.last_put_live().unwrap().as_deref(), Some(T0));
    assert_eq!(b.last_put_live().unwrap().as_deref(), Some(T0));
}

#[tokio::test]
async fn pushing_or_pulling_again_adds_nothing_and_running_events_stay_local() {
    let swarm = Swarm::new(1);
    let docker = connect(swarm.manager()).await;
    // A name Swarm would refuse as it is: the configs' names carry a cut, hashed form of
    // it, the labels carry it whole.
    let app = "Shop Floor/web front end (production) ü";
    let store = SwarmStore::new(&docker, app);
    let (_a_dir, a) = machine(app);
    let (_b_dir, b) = machine(app);

    let deploy = a.begin("deploy", None, Some(T0)).unwrap();
    a.end(deploy, Outcome::Succeeded, None).unwrap();
    a.mark(T0, Mark::KnownGood).unwrap();
    // Still running here: only this machine can see how it ends.
    let running = a.begin("deploy", Some(T0), Some(T1)).unwrap();

    assert_eq!(store.push(&a).await.unwrap(), 2);
    assert_eq!(store.push(&a).await.unwrap(), 0);
    assert_eq!(configs(swarm.manager(), app, "event").len(), 1);
    assert_eq!(configs(swarm.manager(), app, "mark").len(), 1);

    assert_eq!(store.pull(&b).await.unwrap(), 2);
    assert_eq!(store.pull(&b).await.unwrap(), 0);
    assert_eq!(store.pull(&a).await.unwrap(), 0);
    assert_eq!(store.push(&b).await.unwrap(), 0);
    let seen = listed(&b);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].to_release.as_deref(), Some(T0));

    // Once it ends, it is shared like any other.
    a.end(running, Outcome::RolledBack, Some("unhealthy: exit 1"))
        .unwrap();
    assert_eq!(store.push(&a).await.unwrap(), 1);
    assert_eq!(store.push(&a).await.unwrap(), 0);
    assert_eq!(store.pull(&b).await.unwrap(), 1);
    assert_eq!(store.pull(&b).await.unwrap(), 0);
    assert_eq!(listed(&b), listed(&a));
    assert_eq!(listed(&b)[0].outcome, "rolled-back");

    // Another app's records in the same swarm are not this app's.
    let other = SwarmStore::new(&docker, "shop-admin");
    let (_c_dir, c) = machine("shop-admin");
    assert_eq!(other.pull(&c).await.unwrap(), 0);
    assert!(listed(&c).is_empty());
}

#[tokio::test]
async fn a_mark_set_here_after_the_swarms_wins_over_it_and_an_older_one_does_not() {
    let swarm = Swarm::new(1);
    let docker = connect(swarm.manager()).await;
    let app = "shop-web";
    let store = SwarmStore::new(&docker, app);
    let (_a_dir, a) = machine(app);
    let (_b_dir, b) = machine(app);

    // Both machines set a mark on T1 before either pushes: B's is the later one.
    a.mark(T1, Mark::KnownGood).unwrap();
    b.mark(T1, Mark::Failed).unwrap();
    assert_eq!(store.push(&a).await.unwrap(), 1);
    // B's mark is later than the swarm's: pulling keeps it, pushing replaces the swarm's.
    assert_eq!(store.pull(&b).await.unwrap(), 0);
    assert_eq!(b.marks().unwrap()[T1], Mark::Failed);
    assert_eq!(store.push(&b).await.unwrap(), 1);
    // A's older mark gives way, and A pushes nothing over B's.
    assert_eq!(store.push(&a).await.unwrap(), 0);
    assert_eq!(store.pull(&a).await.unwrap(), 1);
    assert_eq!(a.marks().unwrap()[T1], Mark::Failed);
    assert_eq!(a.marks_at().unwrap(), b.marks_at().unwrap());
    assert_eq!(configs(swarm.manager(), app, "mark").len(), 1);
}

#[tokio::test]
async fn two_managers_see_the_same_history() {
    let swarm = Swarm::new(2);
    let (first, second) = (&swarm.nodes()[0], &swarm.nodes()[1]);
    let app = "shop-web";
    let (_a_dir, a) = machine(app);
    let (_b_dir, b) = machine(app);
    a.record("deploy", None, Some(T1))
        .unwrap()
        .end(Outcome::Succeeded, None)
        .unwrap();
    a.mark(T1, Mark::KnownGood).unwrap();

    // A worker keeps no configs: it says so, and where to go instead.
    let docker_b = connect(second).await;
    let e = SwarmStore::new(&docker_b, app).pull(&b).await.unwrap_err();
    assert_eq!(e.status(), Some(503), "{e}");
    let text = dockmaster::error::Error::from(e).to_string();
    assert!(
        text.ends_with("\nhint: this engine is not a swarm manager: point DOCKER_HOST at a manager (`docker node ls` works there)"),
        "{text}"
    );
    assert!(listed(&b).is_empty());

    let id = second.docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
    first.docker_ok(&["node", "promote", id.trim()]);
    wait_for_manager(second);

    let docker_a = connect(first).await;
    let via_a = SwarmStore::new(&docker_a, app);
    let via_b = SwarmStore::new(&docker_b, app);
    assert_eq!(via_a.push(&a).await.unwrap(), 2);
    assert_eq!(pull_until(&via_b, &b, 2).await, 2);
    assert_eq!(listed(&b), listed(&a));
    assert_eq!(b.marks_at().unwrap(), a.marks_at().unwrap());

    b.record("rollback", Some(T1), Some(T0))
        .unwrap()
        .end(Outcome::Succeeded, None)
        .unwrap();
    b.mark(T1, Mark::Failed).unwrap();
    assert_eq!(via_b.push(&b).await.unwrap(), 2);
    assert_eq!(pull_until(&via_a, &a, 2).await, 2);
    assert_eq!(listed(&a), listed(&b));
    assert_eq!(a.marks_at().unwrap(), b.marks_at().unwrap());
    assert_eq!(a.marks().unwrap()[T1], Mark::Failed);
}

/// Waits until `node` answers as a manager (`docker node ls` works only there).
fn wait_for_manager(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node.docker(&["node", "ls", "-q"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "node {} is no manager 60 s after its promotion:\n{}",
            node.index,
            node.log_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Pulls until `want` records came in: a manager applies what the other one wrote once the
/// swarm's log has reached it, which may lag its commit by a heartbeat.
async fn pull_until(store: &SwarmStore<'_>, history: &History, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    loop {
        got += store.pull(history).await.unwrap();
        if got >= want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
