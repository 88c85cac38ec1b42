//! The multi-engine harness itself: three real engines in namespaces of their own, one
//! swarm. Shipping an image is `docker save` on one engine and `docker load` on another;
//! a global service runs a task on every node and answers over the overlay network.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::swarm::{Node, Swarm};

/// `FROM scratch` with busybox, serving /www on 8080; `/cgi-bin/who` answers with the
/// task container's hostname, so a client can tell which task answered.
const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
COPY www /www
CMD ["httpd","-f","-p","8080","-h","/www"]
"#;

#[test]
fn a_three_node_swarm_runs_a_service_and_ships_images_between_nodes() {
    let started = Instant::now();
    let swarm = Swarm::new(3);
    let setup = started.elapsed();
    let body = Instant::now();

    let image = format!("{}:1", swarm.unique("dmsw-app"));
    build_image(swarm.manager(), &image);

    // Ship: save on node 0, load on the others; the image is the same everywhere.
    let ctx = tempfile::Builder::new()
        .prefix("dmsw-")
        .tempdir()
        .expect("tempdir");
    let tar = ctx.path().join("image.tar");
    let tar = tar.to_str().expect("utf-8 temp path");
    swarm.manager().docker_ok(&["save", "-o", tar, &image]);
    let id = image_id(swarm.manager(), &image);
    for node in &swarm.nodes()[1..] {
        assert_eq!(
            image_id_or_none(node, &image),
            None,
            "node {} has it before",
            node.index
        );
        node.docker_ok(&["load", "-i", tar]);
        assert_eq!(image_id(node, &image), id, "node {}: image id", node.index);
    }

    // No IPVS here: dnsrr, not a virtual IP; the image is local on every node.
    let network = swarm.unique("dmswnet");
    let service = swarm.unique("web");
    let manager = swarm.manager();
    manager.docker_ok(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--attachable",
        &network,
    ]);
    manager.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "--mode",
        "global",
        "--endpoint-mode",
        "dnsrr",
        "--network",
        &network,
        "--no-resolve-image",
        "--stop-grace-period",
        "1s",
        &image,
    ]);

    // A running task on every engine, and its address on the overlay.
    let mut tasks = Vec::new();
    for node in swarm.nodes() {
        tasks.push(wait_for_task(node, &service, &network));
    }
    let hostnames: BTreeSet<String> = tasks.iter().map(|(h, _)| h.clone()).collect();
    assert_eq!(hostnames.len(), 3, "three distinct tasks: {tasks:?}");

    // From a client on the overlay (on node 0): every task by address, across nodes, and
    // the service's name through Docker's DNS (dnsrr: every task's address). Busybox's
    // `wget -T` crashes in this busybox, so `timeout` bounds each request.
    const CLIENT: &str = r#"name=$1; shift
for a in "$@"; do timeout 5 wget -q -O - "http://$a:8080/cgi-bin/who" || exit 1; done
nslookup "$name" 127.0.0.11 | sed -n 's/^Address: *\([0-9.]*\)$/dns \1/p'
"#;
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        &network,
        &image,
        "sh",
        "-c",
        CLIENT,
        "sh",
        &service,
    ];
    args.extend(tasks.iter().map(|(_, a)| a.as_str()));
    let addresses: BTreeSet<String> = tasks.iter().map(|(_, a)| a.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let out = manager.docker(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let answered: BTreeSet<String> = text
            .lines()
            .filter(|l| !l.starts_with("dns "))
            .map(str::to_string)
            .collect();
        let resolved: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("dns "))
            .map(str::to_string)
            .collect();
        if out.status.success() && answered == hostnames && resolved == addresses {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "over the overlay, expected answers from {hostnames:?} and {service} to resolve to \
             {addresses:?}; got:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    manager.docker_ok(&["service", "rm", &service]);
    manager.docker_ok(&["network", "rm", &network]);
    let body = body.elapsed();

    let teardown = Instant::now();
    drop(swarm);
    eprintln!(
        "swarm of 3: setup {setup:.1?}, test {body:.1?}, teardown {:.1?}, total {:.1?}",
        teardown.elapsed(),
        started.elapsed()
    );
}

fn build_image(node: &Node, image: &str) {
    let ctx = tempfile::Builder::new()
        .prefix("dmsw-")
        .tempdir()
        .expect("tempdir");
    let d = ctx.path();
    std::fs::write(d.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::copy("/bin/busybox", d.join("busybox")).expect("copy /bin/busybox");
    std::fs::create_dir_all(d.join("www/cgi-bin")).unwrap();
    std::fs::write(d.join("www/index.html"), "hello\n").unwrap();
    let who = d.join("www/cgi-bin/who");
    std::fs::write(
        &who,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nhostname\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&who, std::fs::Permissions::from_mode(0o755)).unwrap();
    node.docker_ok(&[
        "build",
        "-q",
        "-t",
        image,
        d.to_str().expect("utf-8 temp path"),
    ]);
}

fn image_id_or_none(node: &Node, image: &str) -> Option<String> {
    let out = node.docker(&["image", "inspect", "--format", "{{.Id}}", image]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[track_caller]
fn image_id(node: &Node, image: &str) -> String {
    image_id_or_none(node, image).unwrap_or_else(|| panic!("node {}: no {image}", node.index))
}

/// The running task of a global service on this node: (hostname, overlay address).
fn wait_for_task(node: &Node, service: &str, network: &str) -> (String, String) {
    let filter = format!("label=com.docker.swarm.service.name={service}");
    let format = format!(
        "{{{{.Config.Hostname}}}} {{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = node.docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &filter,
            "--filter",
            "status=running",
        ]);
        if let Some(id) = ids.split_whitespace().next() {
            let info = node.docker_ok(&["inspect", "--format", &format, id]);
            let mut parts = info.split_whitespace();
            if let (Some(host), Some(addr)) = (parts.next(), parts.next()) {
                return (host.to_string(), addr.to_string());
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {}: no running task of {service} after 60 s:\n{}",
            node.index,
            node.log_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

// ---------------------------------------------------------------------------------------
// dockmaster with runtime = "swarm", on the real multi-engine swarm above.

use crate::support::{Behaviour, Fixture, Options};

/// A fixture app for a Swarm service: three replicas, DNS round robin (no IPVS here), a
/// 2 s stop grace period (the fixture's httpd is killed at its end, as Docker's 10 s would
/// otherwise add to every update), the compose file's health check at `interval: 30s`.
fn swarm_app(name: &str, swarm: &Swarm, nodes: &[&Node]) -> Fixture {
    let fx = Fixture::with(
        name,
        Options {
            extra_service_yaml: Some(
                "    stop_grace_period: 2s\n    deploy:\n      replicas: 3\n      endpoint_mode: dnsrr\n"
                    .into(),
            ),
            ..Options::default()
        },
    );
    configure_nodes(&fx, nodes);
    let _ = swarm;
    fx
}

fn configure_nodes(fx: &Fixture, nodes: &[&Node]) {
    let list: Vec<String> = nodes
        .iter()
        .map(|n| format!("\"{}\"", n.docker_host))
        .collect();
    fx.configure(&format!(
        "runtime = \"swarm\"\n[swarm]\nnodes = [{}]\n",
        list.join(", ")
    ));
}

/// dockmaster against the swarm's manager.
fn dm_on(fx: &Fixture, swarm: &Swarm, args: &[&str]) -> crate::support::Output {
    fx.dm_cmd(args)
        .env("DOCKER_HOST", &swarm.manager().docker_host)
        .run()
}

/// The image the service's spec names, and the images its running tasks run.
fn service_images(manager: &Node, service: &str) -> (String, Vec<String>) {
    let spec = manager
        .docker_ok(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            service,
        ])
        .trim()
        .to_string();
    let tasks = manager.docker_ok(&[
        "service",
        "ps",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Image}} {{.CurrentState}}",
        service,
    ]);
    let running = tasks
        .lines()
        .filter(|l| l.contains(" Running "))
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    (spec, running)
}

/// Every node's images of `repository`: (tag, id) sets, node by node.
fn kept_images(swarm: &Swarm, repository: &str) -> Vec<BTreeSet<String>> {
    swarm
        .nodes()
        .iter()
        .map(|n| {
            n.docker_ok(&[
                "image",
                "ls",
                "--no-trunc",
                "--format",
                "{{.Tag}} {{.ID}}",
                repository,
            ])
            .lines()
            .map(str::to_string)
            .collect()
        })
        .collect()
}

/// `doctor --json`'s "swarm" check.
fn swarm_check(doctor: &serde_json::Value) -> serde_json::Value {
    doctor
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["check"] == "swarm"))
        .cloned()
        .unwrap_or_else(|| panic!("no swarm check: {doctor}"))
}

/// The service's spec version: changes with every update.
fn spec_version(manager: &Node, service: &str) -> String {
    manager
        .docker_ok(&[
            "service",
            "inspect",
            "--format",
            "{{.Version.Index}}",
            service,
        ])
        .trim()
        .to_string()
}

/// What a running task of the service that runs `release` (by its container's label)
/// answers at `path`, asked inside its container on `node`.
fn task_answer(node: &Node, service: &str, release: &str, path: &str) -> Option<String> {
    let filter = format!("label=com.docker.swarm.service.name={service}");
    let label = format!("label=dev.dockmaster.release={release}");
    let ids = node.docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &filter,
        "--filter",
        &label,
        "--filter",
        "status=running",
    ]);
    let id = ids.split_whitespace().next()?;
    let url = format!("http://127.0.0.1:8080{path}");
    let out = node.docker(&["exec", id, "wget", "-q", "-O", "-", &url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn swarm_deploy_ships_to_every_node_rolls_back_to_any_release_and_undoes_an_unhealthy_one() {
    let swarm = Swarm::new(3);
    let manager = swarm.manager();
    let others: Vec<&Node> = swarm.nodes()[1..].iter().collect();
    let fx = swarm_app("swarmmain", &swarm, &others);
    let service = format!("{}_app", fx.project);

    // First deploy: the stack is made from the compose file; the image reaches every node.
    let v1 = fx.push_version(Behaviour::Good);
    let t1 = fx.tag_today(&v1);
    let out = dm_on(&fx, &swarm, &["deploy", "--no-pull"]);
    out.ok()
        .stderr_has("shipped")
        .stderr_has("a rolling start-first update of Swarm service")
        .stdout_has(&format!("DEPLOYED_APP_TAG={t1}"));
    let reference = format!("{}:{t1}", fx.repo);
    let id1 = image_id(manager, &reference);
    for node in swarm.nodes() {
        assert_eq!(
            image_id(node, &reference),
            id1,
            "node {}: same image id",
            node.index
        );
    }
    let (spec, running) = service_images(manager, &service);
    assert_eq!(
        spec, id1,
        "the spec names the image by id, never a registry name"
    );
    assert_eq!(running, vec![id1.clone(); 3], "three tasks of v1");
    let health = manager.docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec.Healthcheck}}",
        &service,
    ]);
    assert!(
        health.contains("\"Interval\":2000000000") && health.contains("/health"),
        "the compose file's check, its 30 s interval cut to 2 s: {health}"
    );
    let label = manager.docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{index .Spec.Labels \"dev.dockmaster.release\"}}",
        &service,
    ]);
    assert_eq!(label.trim(), t1);
    let check = swarm_check(&dm_on(&fx, &swarm, &["doctor", "--json"]).json());
    assert_eq!(check["ok"], true, "{check}");

    // Second release.
    let v2 = fx.push_version(Behaviour::Good);
    let t2 = fx.tag_today(&v2);
    dm_on(&fx, &swarm, &["deploy", "--no-pull"])
        .ok()
        .stderr_has("Every task of service");
    let id2 = image_id(manager, &format!("{}:{t2}", fx.repo));
    assert_eq!(service_images(manager, &service).1, vec![id2.clone(); 3]);
    let served: Vec<Option<String>> = swarm
        .nodes()
        .iter()
        .map(|n| task_answer(n, &service, &t2, "/version"))
        .collect();
    let written = crate::support::git_out(&fx.work, &["show", &format!("{v2}:www/version")]);
    assert!(
        served.iter().flatten().all(|v| *v == written.trim())
            && served.iter().flatten().count() >= 1,
        "tasks answer {written}: {served:?}"
    );

    // A third, so that a rollback to the first is to "any kept release", not the previous.
    let v3 = fx.push_version(Behaviour::Good);
    let t3 = fx.tag_today(&v3);
    dm_on(&fx, &swarm, &["deploy", "--no-pull"]).ok();
    let out = dm_on(&fx, &swarm, &["rollback", "-y", &t1]);
    out.ok().stdout_has(&format!("DEPLOYED_APP_TAG={t1}"));
    assert_eq!(service_images(manager, &service).1, vec![id1.clone(); 3]);
    let releases = dm_on(&fx, &swarm, &["releases", "--json"]).ok().json();
    let live: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["live"] == true)
        .map(|r| r["tag"].as_str().unwrap())
        .collect();
    assert_eq!(live, vec![t1.as_str()], "{releases}");

    // An unhealthy release: the gate fails fast, the service goes forward to the release
    // that served, verified on every replica; the exit code says so.
    fx.push_version(Behaviour::NeverHealthy);
    let started = Instant::now();
    let out = dm_on(&fx, &swarm, &["deploy", "--no-pull", "--timeout", "40s"]);
    out.code(1)
        .stderr_has("Not healthy")
        .stderr_has("health check failed")
        .stderr_has(&format!("{}:{t1} is live again and healthy", fx.repo));
    assert!(started.elapsed() < Duration::from_secs(60), "fails fast");
    assert_eq!(service_images(manager, &service).1, vec![id1.clone(); 3]);
    let history = dm_on(&fx, &swarm, &["history", "--json"]).ok().json();
    let deploys: Vec<&serde_json::Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["command"] == "deploy")
        .collect();
    assert_eq!(deploys[0]["outcome"], "rolled-back", "{history}");

    // A node dockmaster cannot reach: refused before anything changes, naming the node.
    configure_nodes(&fx, &[others[0]]);
    let before = spec_version(manager, &service);
    let kept_before = kept_images(&swarm, &fx.repo);
    let out = dm_on(&fx, &swarm, &["rollback", "-y", &t3]);
    out.code(1)
        .stderr_has("may run")
        .stderr_has(&others[1].addr)
        .stderr_has("nothing was changed")
        .stderr_has("[swarm] nodes");
    assert_eq!(
        spec_version(manager, &service),
        before,
        "the service was not touched"
    );
    assert_eq!(service_images(manager, &service).1, vec![id1.clone(); 3]);
    assert_eq!(
        kept_images(&swarm, &fx.repo),
        kept_before,
        "no node's images changed"
    );
    let check = swarm_check(&dm_on(&fx, &swarm, &["doctor", "--json"]).code(1).json());
    assert_eq!(check["ok"], false, "{check}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&others[1].addr),
        "doctor names the node without an engine: {check}"
    );

    // Prune on every node: what goes is gone everywhere; the live release, and every
    // image a task's container uses on some node, stays everywhere.
    configure_nodes(&fx, &others);
    // Swarm keeps the containers of old tasks (5 per replica by default), and their images
    // stay in use: keep one, so that prune has releases it may remove (the task reaper
    // removes the others as the next updates go).
    manager.docker_ok(&["swarm", "update", "--task-history-limit", "1"]);
    dm_on(&fx, &swarm, &["rollback", "-y", &t3]).ok();
    dm_on(&fx, &swarm, &["rollback", "-y", &t1]).ok();
    let tags = [&t1, &t2, &t3];
    let report = dm_on(&fx, &swarm, &["prune", "--keep", "1", "--json"])
        .ok()
        .json();
    let removed: Vec<String> = report["removed"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x["tag"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(!removed.contains(&t1), "the live release stays: {report}");
    assert!(
        !removed.is_empty(),
        "something was old enough to go: {report}"
    );
    // Nothing a task's container uses, on any node, was removed.
    for node in swarm.nodes() {
        let ids = node.docker_ok(&["ps", "-aq", "--no-trunc"]);
        for id in ids.split_whitespace() {
            let image = node.docker_ok(&["inspect", "--format", "{{.Image}}", id]);
            let kept = node.docker(&["image", "inspect", image.trim()]);
            assert!(
                kept.status.success(),
                "node {}: container {id} lost its image",
                node.index
            );
        }
    }
    for node in swarm.nodes() {
        for tag in tags {
            let here = image_id_or_none(node, &format!("{}:{tag}", fx.repo));
            if removed.contains(tag) {
                assert_eq!(
                    here, None,
                    "node {}: {tag} was pruned: {report}",
                    node.index
                );
            }
        }
        assert_eq!(
            image_id_or_none(node, &reference),
            Some(id1.clone()),
            "node {}",
            node.index
        );
    }
    // `df` sees every node: what each holds of the app's releases.
    let df = dm_on(&fx, &swarm, &["df", "--json"]).ok().json();
    let nodes = df["nodes"].as_array().expect("df lists the nodes");
    assert_eq!(nodes.len(), 2, "{df}");
    for (n, node) in nodes.iter().zip(&others) {
        let listed = node.docker_ok(&["image", "ls", "--format", "{{.Tag}}", &fx.repo]);
        let count = listed.lines().filter(|t| *t != "latest").count();
        assert_eq!(n["endpoint"], node.docker_host.as_str(), "{df}");
        assert_eq!(n["releases"], count, "node {}: {df}", node.index);
        assert!(n["size_bytes"].as_u64().unwrap_or(0) > 0, "{df}");
    }

    // Cleanup only (the swarm goes with its engines): a task still stopping may hold
    // the network a moment longer, which is no failure of the test.
    let _ = manager.docker(&["stack", "rm", &fx.project]);
}

#[test]
fn swarm_two_operators_deploying_at_once_one_runs_and_both_see_the_same_history() {
    let swarm = Swarm::new(1);
    let fx = swarm_app("swarmlock", &swarm, &[]);
    // Two operator machines: the same checkout, each with a state directory (history
    // cache and local lock) of its own, so only the swarm's lock can keep them apart.
    let other_state = fx.tmp.path().join("operator-b");
    let v1 = fx.push_version(Behaviour::Good);
    let t1 = fx.tag_today(&v1);
    let a = fx
        .dm_cmd(&["deploy", "--no-pull"])
        .env("DOCKER_HOST", &swarm.manager().docker_host)
        .spawn();
    let b = fx
        .dm_cmd(&["deploy", "--no-pull"])
        .env("DOCKER_HOST", &swarm.manager().docker_host)
        .env("DOCKMASTER_STATE_DIR", &other_state)
        .spawn();
    let outs: Vec<std::process::Output> = [a, b]
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait for dockmaster"))
        .collect();
    let codes: Vec<i32> = outs.iter().map(|o| o.status.code().unwrap_or(-1)).collect();
    let text: Vec<String> = outs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    let mut sorted = codes.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        vec![0, 3],
        "exactly one runs: {codes:?}\n{}",
        text.join("\n----\n")
    );
    let loser = codes.iter().position(|c| *c == 3).unwrap();
    assert!(
        text[loser].contains("another operation holds the lock")
            && text[loser].contains("`dockmaster deploy` by "),
        "{}",
        text[loser]
    );

    // Whichever ran, both machines' `history` and `releases` say the same.
    let history = |state: &std::path::Path| {
        fx.dm_cmd(&["history", "--json"])
            .env("DOCKER_HOST", &swarm.manager().docker_host)
            .env("DOCKMASTER_STATE_DIR", state)
            .run()
            .ok()
            .json()
    };
    let ha = history(&fx.state);
    let hb = history(&other_state);
    let succeeded = |h: &serde_json::Value| -> Vec<String> {
        h.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["command"] == "deploy" && e["outcome"] == "succeeded")
            .map(|e| e["to_release"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(succeeded(&ha), vec![t1.clone()], "{ha}");
    assert_eq!(succeeded(&hb), vec![t1.clone()], "{hb}");
    let marks = fx
        .dm_cmd(&["releases", "--json"])
        .env("DOCKER_HOST", &swarm.manager().docker_host)
        .env("DOCKMASTER_STATE_DIR", &other_state)
        .run()
        .ok()
        .json();
    assert_eq!(
        marks[0]["known_good"], true,
        "the mark is shared too: {marks}"
    );

    // Bad input on Swarm: refused with exit 2 and a hint, and nothing changes — the
    // service's spec and every node's images stay as they were.
    let service = format!("{}_app", fx.project);
    let unchanged = || {
        (
            spec_version(swarm.manager(), &service),
            kept_images(&swarm, &fx.repo),
        )
    };
    let before = unchanged();
    fx.push_version(Behaviour::Good);
    dm_on(&fx, &swarm, &["deploy", "--no-pull", "--watch", "1m"])
        .code(2)
        .stderr_has("needs dockmaster's counting proxy")
        .stderr_has("nothing was changed")
        .stderr_has("hint: deploy without --watch");
    assert_eq!(unchanged(), before, "--watch on Swarm changed nothing");
    fx.configure("runtime = \"swarm\"\n[swarm]\nhealth_interval = \"soon\"\n");
    dm_on(&fx, &swarm, &["deploy", "--no-pull"])
        .code(2)
        .stderr_has("[swarm] health_interval")
        .stderr_has("hint: fix [swarm] health_interval");
    assert_eq!(unchanged(), before, "a bad [swarm] value changed nothing");
    fx.configure("runtime = \"swarm\"\n");

    // `status` and `logs` on the service.
    let status = dm_on(&fx, &swarm, &["status", "--json"]).ok().json();
    assert_eq!(status["live"], t1.as_str(), "{status}");
    let logs = dm_on(&fx, &swarm, &["logs", "--tail", "5"]);
    logs.ok();
    assert!(
        logs.stdout.contains(&format!("{}_app.", fx.project)),
        "every task's lines, named by task: {}",
        logs.stdout
    );

    // A lock left by a killed dockmaster (no heartbeat for 5 minutes) is taken over after
    // `lock_stale`, and the deploy says whose it was.
    let app = format!("{}-app", fx.project);
    let name = dockmaster::runtime::swarm::lock::config_name(&app);
    let old = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 300;
    let mut create = swarm.manager().command();
    create.args(["config", "create"]);
    for (k, v) in [
        ("dev.dockmaster.lock", app.clone()),
        ("dev.dockmaster.heartbeat", old.to_string()),
        ("dev.dockmaster.lock.pid", "4242".into()),
        ("dev.dockmaster.lock.user", "ops".into()),
        ("dev.dockmaster.lock.host", "laptop".into()),
        ("dev.dockmaster.lock.since", "2026-11-25T03:00:00Z".into()),
        ("dev.dockmaster.lock.command", "deploy".into()),
    ] {
        create.args(["--label", &format!("{k}={v}")]);
    }
    let data = fx.tmp.path().join("stale-lock.json");
    std::fs::write(&data, "{}").unwrap();
    let out = create
        .arg(&name)
        .arg(&data)
        .output()
        .expect("docker config create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fx.configure("runtime = \"swarm\"\n[swarm]\nlock_stale = \"30s\"\n");
    fx.push_version(Behaviour::Good);
    dm_on(
        &fx,
        &swarm,
        &["deploy", "--no-pull", "--strategy", "recreate"],
    )
    .ok()
    .stderr_has("a rolling stop-first update")
    .stderr_has("took over the swarm's lock")
    .stderr_has("`dockmaster deploy` by ops@laptop, pid 4242")
    .stderr_has("sent no heartbeat for 5m");
    let order = swarm.manager().docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.UpdateConfig.Order}}",
        &service,
    ]);
    assert_eq!(
        order.trim(),
        "stop-first",
        "--strategy recreate updates stop-first"
    );
    // Cleanup only (the swarm goes with its engines): a task still stopping may hold
    // the network a moment longer, which is no failure of the test.
    let _ = swarm.manager().docker(&["stack", "rm", &fx.project]);
}

#[test]
fn swarm_a_node_lost_during_an_update_fails_the_deploy_and_says_what_is_live() {
    let swarm = Swarm::new(3);
    let manager = swarm.manager();
    let others: Vec<&Node> = swarm.nodes()[1..].iter().collect();
    let fx = swarm_app("swarmlost", &swarm, &others);
    let service = format!("{}_app", fx.project);
    let v1 = fx.push_version(Behaviour::Good);
    let t1 = fx.tag_today(&v1);
    dm_on(&fx, &swarm, &["deploy", "--no-pull"]).ok();
    let id1 = image_id(manager, &format!("{}:{t1}", fx.repo));

    // The next release starts slowly, so the update is surely under way when node 2 goes.
    fx.push_version(Behaviour::SlowStart(4));
    let deploy = fx
        .dm_cmd(&["deploy", "--no-pull", "--timeout", "90s"])
        .env("DOCKER_HOST", &manager.docker_host)
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = manager.docker_ok(&[
            "service",
            "inspect",
            "--format",
            "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
            &service,
        ]);
        if state.trim() == "updating" {
            break;
        }
        assert!(Instant::now() < deadline, "the update never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    swarm.kill_engine(2);
    let out = deploy.wait_with_output().expect("wait for deploy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the deploy fails:\n{stderr}");
    assert!(
        stderr.contains(&format!("{}) went down during the update", others[1].addr)),
        "it names the node:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:{t1} is live again and healthy", fx.repo)),
        "and says what is live:\n{stderr}"
    );
    // On the nodes that are up, every task runs the release that was live before.
    let (spec, running) = service_images(manager, &service);
    assert_eq!(spec, id1);
    assert!(
        !running.is_empty() && running.iter().all(|i| *i == id1),
        "{running:?}"
    );
    // Cleanup only (the swarm goes with its engines): a task still stopping may hold
    // the network a moment longer, which is no failure of the test.
    let _ = manager.docker(&["stack", "rm", &fx.project]);
}
