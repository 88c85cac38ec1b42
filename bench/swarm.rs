//! The Swarm benchmark: `cargo bench --bench swarm`.
//!
//! On one 3-node swarm of real engines (tests/support/swarm.rs: each engine in a network
//! namespace of its own, node 0 the manager), in one run, side by side:
//!
//! - **plain Docker**: a service made with `docker service create --endpoint-mode dnsrr
//!   --update-order start-first --update-parallelism 1 --replicas 3`, health check every
//!   1 s, `--stop-grace-period 2s` (and `--rollback-order start-first`: a rollback follows
//!   the rollback config, whose order is stop-first unless told), its two images built on
//!   the manager and put on the other nodes with `docker save | docker load` (same id
//!   everywhere). Then N switches alternating `docker service update --detach=false --image
//!   <repo:tag>` and `docker service rollback --detach=false`, each timed from the command's
//!   start to its exit. Everything else is Docker's default: the CLI asks the engine to
//!   resolve `repo:tag` on a registry, Swarm's agent tries to pull `repo:tag` before every
//!   task start (no registry is reachable from the engines here: that attempt, and its
//!   failure, is part of the time measured), and `--detach=false` returns once every slot's
//!   new task has run for the update monitor period (default 5 s: the CLI's `verify: Waiting
//!   5 seconds`, alongside Swarm's own monitor).
//! - **dockmaster** (`runtime = "swarm"`): a git checkout of the same busybox app with a
//!   compose file (`build: .`, `image: <repo>:${APP_TAG:-latest}`, health check `interval:
//!   30s`, `stop_grace_period: 2s`, `deploy: {replicas: 3, endpoint_mode: dnsrr}`, its
//!   default network an attachable overlay) and a dockmaster.toml naming the two other
//!   nodes' engines under `[swarm] nodes`, run with `DOCKER_HOST` = the manager. Two
//!   releases from two commits (`deploy --no-pull`: build, ship to every node, update; both
//!   timed), then N alternations of `rollback -y <tag>` (a forward service update to the
//!   release's image id), each timed.
//!
//! During both, a client container on the service's overlay network (on the manager)
//! resolves the service's name (dnsrr: Docker's DNS answers every healthy task's address)
//! and requests `/version` in a loop (`timeout 2 wget -q -O - …`, busybox's `wget -T`
//! crashes, then a 20 ms pause), bounded in count and time. Each answer is counted against
//! the switch that started last before it (so the pause after a switch, which is longer
//! than a request's 2 s limit, counts towards that switch); answers before the first switch
//! are the steady state.
//!
//! The app is `httpd -f -p 8080 -h /www` as PID 1, which ignores SIGTERM: each old task
//! stops when its 2 s grace period ends (the same for both), after the 2 s Swarm's agent
//! waits between taking a task out of DNS and stopping it (moby's
//! `defaultGossipConvergeDelay`). dockmaster's gate passes once every replica runs the new
//! release, healthy, and Swarm has told every old task to stop (it is out of DNS then); it
//! does not wait for the old tasks to be gone. With `BENCH_VERBOSE` the tasks' timeline is
//! printed at the end of each part.
//!
//! Environment: `BENCH_SWITCHES` (default 6), `BENCH_VERBOSE` (dockmaster's `-v` output and
//! the docker CLI's on stderr), `BENCH_HEALTH_INTERVAL` (e.g. `1s`: dockmaster's `[swarm]
//! health_interval`, to compare at plain Docker's 1 s; unset: dockmaster's default).

#[allow(dead_code)]
#[path = "../tests/support/swarm.rs"]
mod swarm;

#[path = "common.rs"]
mod common;
use common::{git, git_out};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use swarm::{Node, Swarm};

const BIN: &str = env!("CARGO_BIN_EXE_dockmaster");
/// Upper bound on the client's requests, whatever happens.
const MAX_REQUESTS: usize = 30_000;
/// Upper bound on the client's life, in seconds, whatever happens.
const CLIENT_SECONDS: u64 = 3600;
/// The longest any one timed command (an update, a deploy) may run before it is killed.
const STEP_LIMIT: Duration = Duration::from_secs(600);
/// The client's steady state before the first switch.
const STEADY: Duration = Duration::from_secs(3);
/// The pause after each switch (longer than a request's 2 s limit).
const PAUSE: Duration = Duration::from_millis(2500);

const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
COPY www /www
CMD ["httpd","-f","-p","8080","-h","/www"]
"#;

const HEALTH_CMD: &str = "wget -q -O /dev/null http://127.0.0.1:8080/health";

/// The client: `$1` the name to resolve, `$2` the most requests, `$3` the most seconds.
const CLIENT: &str = r#"name=$1; max=$2; end=$(( $(date +%s) + $3 )); i=0
while [ ! -f /stop ] && [ $i -lt $max ] && [ $(date +%s) -lt $end ]; do
  i=$((i+1))
  if v=$(timeout 2 wget -q -O - "http://$name:8080/version" 2>/dev/null); then echo "ok $v"; else echo FAIL; fi
  sleep 0.02
done
echo done
"#;

fn main() {
    let n: usize = env_num("BENCH_SWITCHES", 6);
    assert!(
        Path::new("/bin/busybox").is_file(),
        "the benchmark needs /bin/busybox (apt-get install busybox-static)"
    );
    let load_start = load_average();
    let started = Instant::now();
    let swarm = Swarm::new(3);
    let setup = started.elapsed();
    let machine = machine(swarm.manager());
    eprintln!(
        "machine: {machine}\nswarm of 3 up in {:.1} s",
        setup.as_secs_f64()
    );
    let root = Scratch::new(&swarm.unique("dm-bench-swarm-"));

    eprintln!("== plain Docker ({n} switches)");
    let plain = plain_docker(&swarm, &root.0, n);
    eprintln!("== dockmaster ({n} switches)");
    let dm = dockmaster(&swarm, &root.0, n);

    let teardown = Instant::now();
    drop(root);
    drop(swarm);
    let teardown = teardown.elapsed();

    println!("\nSwarm benchmark, {machine}");
    println!(
        "3-node swarm (engines in network namespaces, no IPVS: endpoint_mode dnsrr), 3 replicas, start-first, one task at a time; client on the overlay (manager node), resolving the service name\n"
    );
    println!(
        "| what | runs | wall (median / max) | failed / total requests (per run) | failed / total (all runs) |"
    );
    println!("|---|---|---|---|---|");
    for part in [&plain, &dm] {
        let mut kinds: Vec<&str> = vec![];
        for s in &part.switches {
            if !kinds.contains(&s.kind.as_str()) {
                kinds.push(&s.kind);
            }
        }
        for kind in kinds {
            let runs: Vec<&Switch> = part.switches.iter().filter(|s| s.kind == kind).collect();
            let walls: Vec<f64> = runs.iter().filter(|s| s.ok).map(|s| s.wall).collect();
            let failed_runs = runs.iter().filter(|s| !s.ok).count();
            let counted: Vec<&Switch> = runs.iter().copied().filter(|s| s.counted).collect();
            let per_run = if counted.is_empty() {
                "(no client yet)".to_string()
            } else {
                counted
                    .iter()
                    .map(|s| format!("{}/{}", s.failed, s.total))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let all = if counted.is_empty() {
                String::new()
            } else {
                format!(
                    "{}/{}",
                    counted.iter().map(|s| s.failed).sum::<usize>(),
                    counted.iter().map(|s| s.total).sum::<usize>()
                )
            };
            println!(
                "| {}: {kind} | {}{} | {} | {per_run} | {all} |",
                part.name,
                runs.len(),
                if failed_runs > 0 {
                    format!(" ({failed_runs} FAILED)")
                } else {
                    String::new()
                },
                med_max(&walls),
            );
        }
        let outside: Vec<f64> = part
            .switches
            .iter()
            .filter(|s| s.ok && s.switch)
            .filter_map(|s| Some(s.wall - s.gate?))
            .collect();
        if !outside.is_empty() {
            println!(
                "| {}: of each switch, the time outside the health gate (everything but waiting on Swarm's update) | {} | {} | | |",
                part.name,
                outside.len(),
                med_max(&outside)
            );
        }
        if let Some((failed, total)) = part.steady {
            println!(
                "| {}: steady state, before the first timed run | | | {failed}/{total} | |",
                part.name
            );
        }
    }

    println!("\nPer switch, in order:\n");
    println!(
        "| # | plain Docker | wall | failed / total (last answer) | dockmaster | wall | failed / total (last answer) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let switches = |p: &Part| -> Vec<usize> {
        (0..p.switches.len())
            .filter(|&i| p.switches[i].switch)
            .collect()
    };
    let (ps, ds) = (switches(&plain), switches(&dm));
    let rows = ps.len().max(ds.len());
    let cell = |s: Option<&Switch>| match s {
        None => (String::new(), String::new(), String::new()),
        Some(s) => (
            s.label.clone(),
            if s.ok {
                format!("{:.2} s", s.wall)
            } else {
                format!("FAILED after {:.2} s", s.wall)
            },
            if s.counted {
                format!(
                    "{}/{} ({})",
                    s.failed,
                    s.total,
                    s.last.as_deref().unwrap_or("none")
                )
            } else {
                "(no client yet)".into()
            },
        ),
    };
    for i in 0..rows {
        let (a, aw, af) = cell(ps.get(i).map(|&j| &plain.switches[j]));
        let (b, bw, bf) = cell(ds.get(i).map(|&j| &dm.switches[j]));
        println!("| {} | {a} | {aw} | {af} | {b} | {bw} | {bf} |", i + 1);
    }
    for part in [&plain, &dm] {
        for note in &part.notes {
            println!("\n{}: {note}", part.name);
        }
        if let Some(e) = &part.error {
            println!("\n{} FAILED:\n{e}", part.name);
        }
    }
    println!(
        "\nbench ran in {:.0} s (swarm setup {:.1} s, teardown {:.1} s); load average at the start {load_start}, at the end {}",
        started.elapsed().as_secs_f64(),
        setup.as_secs_f64(),
        teardown.as_secs_f64(),
        load_average()
    );
}

/// One timed command and the client's answers counted against it.
struct Switch {
    /// What kind of run (rows of the summary).
    kind: String,
    /// This run, in words (rows of the per-switch table).
    label: String,
    ok: bool,
    wall: f64,
    started: SystemTime,
    /// Whether the client was running (its answers are counted).
    counted: bool,
    /// One of the N switches (a row of the per-switch table).
    switch: bool,
    failed: usize,
    total: usize,
    /// The body of the client's last good answer counted against this switch.
    last: Option<String>,
    /// dockmaster: how long its health gate waited on Swarm's update ("Healthy after …").
    gate: Option<f64>,
}

struct Part {
    name: &'static str,
    switches: Vec<Switch>,
    /// Before the first counted switch: (failed, total).
    steady: Option<(usize, usize)>,
    notes: Vec<String>,
    error: Option<String>,
}

impl Part {
    fn new(name: &'static str) -> Part {
        Part {
            name,
            switches: vec![],
            steady: None,
            notes: vec![],
            error: None,
        }
    }

    /// Runs `cmd`, records it as a switch, and returns whether it succeeded; a failure
    /// becomes the part's error (with the command's output).
    fn timed(
        &mut self,
        kind: &str,
        label: &str,
        what: &str,
        cmd: Command,
        counted: bool,
        switch: bool,
    ) -> bool {
        let started = SystemTime::now();
        let out = run_bounded(cmd, STEP_LIMIT);
        eprintln!(
            "  {label}: {:.2} s{}",
            out.wall,
            if out.ok { "" } else { " FAILED" }
        );
        if verbose() || !out.ok {
            eprintln!("{}", out.output);
        }
        if !out.ok {
            self.error = Some(format!(
                "`{what}` ({label}) failed after {:.2} s{}:\n{}",
                out.wall,
                if out.timed_out {
                    " (killed: too long)"
                } else {
                    ""
                },
                out.output.trim_end()
            ));
        }
        self.switches.push(Switch {
            kind: kind.into(),
            label: label.into(),
            ok: out.ok,
            wall: out.wall,
            started,
            counted,
            switch,
            failed: 0,
            total: 0,
            last: None,
            gate: gate_wait(&out.output),
        });
        out.ok
    }

    /// Counts the client's answers against the switches they follow.
    fn count(&mut self, answers: &[Answer]) {
        let starts: Vec<(usize, SystemTime)> = self
            .switches
            .iter()
            .enumerate()
            .filter(|(_, s)| s.counted)
            .map(|(i, s)| (i, s.started))
            .collect();
        let Some(first) = starts.first().map(|(_, t)| *t) else {
            return;
        };
        let mut steady = (0, 0);
        for (t, body) in answers {
            let slot = starts.iter().rev().find(|(_, s)| s <= t).map(|(i, _)| *i);
            let (failed, total) = match slot {
                Some(i) => {
                    let s = &mut self.switches[i];
                    if body.is_some() {
                        s.last.clone_from(body);
                    }
                    (&mut s.failed, &mut s.total)
                }
                None if *t < first => (&mut steady.0, &mut steady.1),
                None => continue,
            };
            *total += 1;
            if body.is_none() {
                *failed += 1;
            }
        }
        self.steady = Some(steady);
    }
}

/// Plain Docker: `service update --image` and `service rollback`, alternating.
fn plain_docker(swarm: &Swarm, root: &Path, n: usize) -> Part {
    let mut part = Part::new("plain Docker");
    let mgr = swarm.manager();
    let repo = swarm.unique("dm-bench-plain");
    let service = swarm.unique("plain");
    let network = swarm.unique("plainnet");
    let ctx = root.join("plain");
    app_context(&ctx);

    // Two images, on every node with the same id.
    let shipping = Instant::now();
    for v in ["1", "2"] {
        std::fs::write(ctx.join("www/version"), format!("plain v{v}\n")).unwrap();
        mgr.docker_ok(&[
            "build",
            "-q",
            "-t",
            &format!("{repo}:{v}"),
            ctx.to_str().unwrap(),
        ]);
    }
    let tar = root.join("plain.tar");
    let tar = tar.to_str().unwrap();
    let (i1, i2) = (format!("{repo}:1"), format!("{repo}:2"));
    mgr.docker_ok(&["save", "-o", tar, &i1, &i2]);
    for node in &swarm.nodes()[1..] {
        node.docker_ok(&["load", "-q", "-i", tar]);
        for i in [&i1, &i2] {
            assert_eq!(
                image_id(node, i),
                image_id(mgr, i),
                "node {}: {i} after docker load",
                node.index
            );
        }
    }
    let _ = std::fs::remove_file(tar);
    part.notes.push(format!(
        "two images built on the manager and loaded on the two other nodes in {:.1} s (not in the figures)",
        shipping.elapsed().as_secs_f64()
    ));

    // What Swarm's agent tries before each task start of a `repo:tag` service.
    let worker = &swarm.nodes()[1];
    let pull = Instant::now();
    let out = worker.docker(&["pull", &i1]);
    let why = String::from_utf8_lossy(&out.stderr);
    part.notes.push(format!(
        "`docker pull {i1}` on a worker node {} after {:.2} s{}; Swarm's agent makes this attempt before every task start of a service whose image is a `repo:tag` (it then runs the local image)",
        if out.status.success() { "succeeded" } else { "failed" },
        pull.elapsed().as_secs_f64(),
        why.lines()
            .next()
            .map(|l| format!(" ({})", l.trim()))
            .unwrap_or_default()
    ));

    mgr.docker_ok(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--attachable",
        &network,
    ]);
    let mut create = mgr.command();
    create.args([
        "service",
        "create",
        "--detach=false",
        "--name",
        &service,
        "--network",
        &network,
        "--endpoint-mode",
        "dnsrr",
        "--replicas",
        "3",
        "--update-order",
        "start-first",
        "--update-parallelism",
        "1",
        "--rollback-order",
        "start-first",
        "--rollback-parallelism",
        "1",
        "--health-cmd",
        HEALTH_CMD,
        "--health-interval",
        "1s",
        "--stop-grace-period",
        "2s",
        &i1,
    ]);
    part.notes.push(
        "each wall time ends with the CLI's `verify: Waiting 5 seconds to verify that tasks are stable`: `--detach=false` returns once every slot's new task has been running for the update monitor period (default 5 s); the CLI also asks the engine to resolve `repo:tag` on a registry first (and warns that it could not)".into(),
    );
    if !part.timed(
        "service create",
        "create",
        "docker service create",
        create,
        false,
        false,
    ) {
        cleanup_plain(mgr, &service, &network);
        return part;
    }

    let client = match Client::start(mgr, &network, &service, &i1) {
        Ok(c) => c,
        Err(e) => {
            part.error = Some(e);
            cleanup_plain(mgr, &service, &network);
            return part;
        }
    };
    for i in 0..n {
        let mut c = mgr.command();
        let (kind, label, what) = if i % 2 == 0 {
            c.args([
                "service",
                "update",
                "--detach=false",
                "--image",
                &i2,
                &service,
            ]);
            (
                "service update --image <repo:tag>",
                format!("update to {repo}:2"),
                "docker service update",
            )
        } else {
            c.args(["service", "rollback", "--detach=false", &service]);
            (
                "service rollback",
                format!("rollback (to {repo}:1)"),
                "docker service rollback",
            )
        };
        let ok = part.timed(kind, &label, what, c, true, true);
        std::thread::sleep(PAUSE);
        if !ok {
            break;
        }
    }
    let answers = client.finish();
    part.count(&answers);
    if verbose() {
        task_timeline(mgr, &service);
    }
    cleanup_plain(mgr, &service, &network);
    part
}

fn cleanup_plain(mgr: &Node, service: &str, network: &str) {
    mgr.docker(&["service", "rm", service]);
    remove_network(mgr, network);
}

/// dockmaster: two deploys, then `rollback -y <tag>` alternating between the two releases.
fn dockmaster(swarm: &Swarm, root: &Path, n: usize) -> Part {
    let mut part = Part::new("dockmaster");
    let mgr = swarm.manager();
    let project = swarm.unique("dmbench");
    let repo = swarm.unique("dm-bench-swarm");
    let dir = root.join("app");
    app_context(&dir);
    std::fs::write(dir.join(".gitignore"), "busybox\n").unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            r#"services:
  app:
    build: .
    image: {repo}:${{APP_TAG:-latest}}
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"]
      interval: 30s
    stop_grace_period: 2s
    deploy:
      replicas: 3
      endpoint_mode: dnsrr
networks:
  default:
    driver: overlay
    attachable: true
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join(".env"),
        format!("COMPOSE_PROJECT_NAME={project}\n"),
    )
    .unwrap();
    let nodes: Vec<String> = swarm.nodes()[1..]
        .iter()
        .map(|n| format!("{:?}", n.docker_host))
        .collect();
    let interval = std::env::var("BENCH_HEALTH_INTERVAL")
        .map(|i| format!("health_interval = {i:?}\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("dockmaster.toml"),
        format!(
            "runtime = \"swarm\"\nstate_dir = {:?}\n\n[swarm]\nnodes = [{}]\n{interval}",
            root.join("state").display().to_string(),
            nodes.join(", ")
        ),
    )
    .unwrap();
    part.notes
        .push(match std::env::var("BENCH_HEALTH_INTERVAL") {
            Ok(i) => format!("[swarm] health_interval = {i:?} (BENCH_HEALTH_INTERVAL)"),
            Err(_) => {
                "[swarm] health_interval: dockmaster's default (2 s; the compose file says 30 s)"
                    .into()
            }
        });
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("www/version"), "dockmaster v1\n").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "v1"]);
    let c1 = git_out(&dir, &["rev-parse", "HEAD"]);

    let network = format!("{project}_default");
    let service = format!("{project}_app");
    let dm = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(&dir)
            .env("DOCKER_HOST", &mgr.docker_host)
            .env_remove("DOCKER_CONTEXT");
        if verbose() {
            c.arg("-v");
        }
        c
    };

    let ok = part.timed(
        "first deploy (build + ship + stack deploy)",
        "first deploy",
        "dockmaster deploy --no-pull",
        dm(&["deploy", "--no-pull"]),
        false,
        false,
    );
    if !ok {
        stack_rm(mgr, &project, &network);
        return part;
    }
    let t1 = tag_of(mgr, &repo, &c1);

    let client = match Client::start(mgr, &network, &service, &format!("{repo}:{t1}")) {
        Ok(c) => c,
        Err(e) => {
            part.error = Some(e);
            stack_rm(mgr, &project, &network);
            return part;
        }
    };
    std::fs::write(dir.join("www/version"), "dockmaster v2\n").unwrap();
    git(&dir, &["commit", "-q", "-am", "v2"]);
    let c2 = git_out(&dir, &["rev-parse", "HEAD"]);
    let mut ok = part.timed(
        "second deploy (build + ship + update)",
        "second deploy",
        "dockmaster deploy --no-pull",
        dm(&["deploy", "--no-pull"]),
        true,
        false,
    );
    std::thread::sleep(PAUSE);
    if ok {
        let t2 = tag_of(mgr, &repo, &c2);
        for i in 0..n {
            let tag = if i % 2 == 0 { &t1 } else { &t2 };
            ok = part.timed(
                "rollback -y <tag> (forward update)",
                &format!("rollback to {tag}"),
                "dockmaster rollback -y",
                dm(&["rollback", "-y", tag]),
                true,
                true,
            );
            std::thread::sleep(PAUSE);
            if !ok {
                break;
            }
        }
    }
    let answers = client.finish();
    part.count(&answers);
    if verbose() {
        task_timeline(mgr, &service);
        let status = run_bounded(dm(&["status"]), Duration::from_secs(60));
        eprintln!("dockmaster status:\n{}", status.output);
    }
    stack_rm(mgr, &project, &network);
    part
}

/// Every task of the service, oldest first: created, slot, last state change, state,
/// desired state, image (BENCH_VERBOSE).
fn task_timeline(mgr: &Node, service: &str) {
    let ids = mgr.docker_ok(&["service", "ps", "-q", "--no-trunc", service]);
    let mut args = vec![
        "inspect",
        "--format",
        "{{.CreatedAt}} slot {{.Slot}} {{.Status.Timestamp}} {{.Status.State}} (desired {{.DesiredState}}) {{.Spec.ContainerSpec.Image}}",
    ];
    args.extend(ids.split_whitespace());
    let out = mgr.docker_ok(&args);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    eprintln!("tasks of {service} (created, slot, last change, state):");
    for l in lines {
        eprintln!("  {l}");
    }
}

fn stack_rm(mgr: &Node, project: &str, network: &str) {
    mgr.docker(&["stack", "rm", project]);
    remove_network(mgr, network);
}

/// Removes an overlay network once its last task let go of it (bounded).
fn remove_network(mgr: &Node, network: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = mgr.docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{network}$"),
        ]);
        if listed.stdout.is_empty() || Instant::now() >= deadline {
            return;
        }
        mgr.docker(&["network", "rm", network]);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The release tag of `commit` among `repo`'s images on the manager.
fn tag_of(mgr: &Node, repo: &str, commit: &str) -> String {
    let out = mgr.docker_ok(&["images", repo, "--format", "{{.Tag}}"]);
    let suffix = format!("-{}", &commit[..7]);
    out.lines()
        .map(str::trim)
        .find(|t| t.ends_with(&suffix))
        .unwrap_or_else(|| panic!("no release of {commit} among {repo}'s tags: {out}"))
        .to_string()
}

/// The busybox app's build context (no version file: the caller writes it).
fn app_context(dir: &Path) {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox")).expect("copy /bin/busybox");
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.join("www/health"), "ok\n").unwrap();
}

/// dockmaster's "Healthy after 13.5s": the gate's wait, in seconds (`output::human_duration`
/// writes 850ms, 13.5s or 1m05s).
fn gate_wait(output: &str) -> Option<f64> {
    let word = output
        .split("Healthy after ")
        .nth(1)?
        .split_whitespace()
        .next()?;
    if let Some(ms) = word.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|m| m / 1000.0);
    }
    let word = word.strip_suffix('s')?;
    match word.split_once('m') {
        Some((m, s)) => Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?),
        None => word.parse().ok(),
    }
}

/// When the client got an answer, and the body (None: the request failed).
type Answer = (SystemTime, Option<String>);

/// The client container, on the manager, attached to the service's overlay network.
struct Client<'a> {
    node: &'a Node,
    id: String,
}

impl<'a> Client<'a> {
    /// Starts it and waits for its first good answer (the service serves).
    fn start(node: &'a Node, network: &str, name: &str, image: &str) -> Result<Client<'a>, String> {
        let out = node.docker(&[
            "run",
            "-d",
            "--network",
            network,
            "--entrypoint",
            "/bin/sh",
            image,
            "-c",
            CLIENT,
            "client",
            name,
            &MAX_REQUESTS.to_string(),
            &CLIENT_SECONDS.to_string(),
        ]);
        if !out.status.success() {
            return Err(format!(
                "the client container did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let client = Client {
            node,
            id: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let logs = client.logs();
            if logs.lines().any(|l| l.contains(" ok ")) {
                // A few seconds of steady state before the first switch.
                std::thread::sleep(STEADY);
                return Ok(client);
            }
            if Instant::now() >= deadline {
                let tail: Vec<&str> = logs.lines().rev().take(5).collect();
                client.remove();
                return Err(format!(
                    "the client on {network} got no answer from {name} in 90 s: {tail:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn logs(&self) -> String {
        let out = self.node.docker(&["logs", "-t", &self.id]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn remove(&self) {
        self.node.docker(&["rm", "-f", &self.id]);
    }

    /// Stops it and returns every answer until now.
    fn finish(self) -> Vec<Answer> {
        let stop = SystemTime::now();
        self.node.docker(&["exec", &self.id, "touch", "/stop"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut logs;
        loop {
            logs = self.logs();
            if logs.contains(" done") || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.remove();
        if verbose() {
            let path = std::env::temp_dir().join(format!("dm-bench-swarm-client-{}.log", self.id));
            eprintln!("client log: {}", path.display());
            let _ = std::fs::write(path, &logs);
        }
        let mut answers = vec![];
        for line in logs.lines() {
            let Some((ts, what)) = line.split_once(' ') else {
                continue;
            };
            let Ok(t) = ts.parse::<jiff::Timestamp>() else {
                continue;
            };
            let t = SystemTime::from(t);
            if t > stop {
                continue;
            }
            let what = what.trim();
            if let Some(body) = what.strip_prefix("ok ") {
                answers.push((t, Some(body.to_string())));
            } else if what == "FAIL" {
                answers.push((t, None));
            }
        }
        answers
    }
}

struct Outcome {
    ok: bool,
    timed_out: bool,
    wall: f64,
    /// stdout then stderr.
    output: String,
}

/// Runs `cmd` to its end, or kills it after `limit`; wall time from spawn to exit.
fn run_bounded(mut cmd: Command, limit: Duration) -> Outcome {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if started.elapsed() >= limit {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = started.elapsed().as_secs_f64();
    let output = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    Outcome {
        ok: status.is_some_and(|s| s.success()),
        timed_out,
        wall,
        output,
    }
}

/// A scratch directory, removed at the end (and on a panic).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn image_id(node: &Node, image: &str) -> String {
    node.docker_ok(&["image", "inspect", "--format", "{{.Id}}", image])
        .trim()
        .to_string()
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn med_max(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{:.2} s / {:.2} s", median(v), max)
}

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The 1, 5 and 15 minute load averages (the machine may be shared).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn verbose() -> bool {
    std::env::var_os("BENCH_VERBOSE").is_some()
}

/// `nproc`, memory, kernel, the docker CLI and the engines' version.
fn machine(mgr: &Node) -> String {
    let text = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{} GiB", kb / 1024 / 1024));
    let docker = mgr.docker_ok(&[
        "version",
        "--format",
        "docker CLI {{.Client.Version}}, engines {{.Server.Version}} (API {{.Server.APIVersion}})",
    ]);
    format!(
        "nproc {}, {mem}, kernel {}, {}",
        text("nproc", &[]),
        text("uname", &["-r"]),
        docker.trim()
    )
}
