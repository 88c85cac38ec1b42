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
