//! Several real Docker engines on this one machine, joined into one swarm: each engine
//! runs in a network namespace of its own, wired by a veth to a bridge of this swarm's
//! own, with its own data root, exec root and containerd namespaces (see "Several
//! engines on one machine" in ENGINE-NOTES.md). Every piece is registered as soon as it
//! exists, so `Drop` leaves the machine as it was even after a panic halfway through
//! setup.
//!
//! This kernel has no IPVS: services must use `--endpoint-mode dnsrr` and host-mode
//! ports; the routing mesh and virtual IPs do not answer here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Choosing a subnet and creating the bridge that claims it happen under this lock, so
/// two swarms of one test process never pick the same /24.
static SUBNET: Mutex<()> = Mutex::new(());

/// How long an engine may take to answer, and the swarm to show every node ready.
const ENGINE_WAIT: Duration = Duration::from_secs(60);

pub struct Swarm {
    /// `<pid>x<counter>`: in every name this swarm gives a piece of the machine.
    id: String,
    /// The third octet of this swarm's 10.231.<n>.0/24.
    octet: u8,
    /// /tmp/dmsw<id>: short, because engine and containerd sockets live below it.
    dir: Option<PathBuf>,
    bridge: Option<String>,
    /// The DOCKER-USER rule that lets traffic between this bridge's ports through.
    forward_rule: bool,
    nodes: Vec<Node>,
}

pub struct Node {
    pub index: usize,
    /// The node's address on the swarm's bridge (what it advertises to the swarm).
    pub addr: String,
    /// `unix://…/d.sock`: the value for `DOCKER_HOST` or `docker -H`.
    pub docker_host: String,
    dir: PathBuf,
    netns: Option<String>,
    veth: Option<String>,
    dockerd: Option<Child>,
}

impl Swarm {
    /// Starts `nodes` engines and joins them into one swarm; node 0 is the manager.
    /// Returns once `docker node ls` shows every node ready.
    pub fn new(nodes: usize) -> Swarm {
        require_tools();
        assert!((1..=9).contains(&nodes), "a test swarm has 1 to 9 nodes");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let id = format!("{pid}x{n}");
        let mut swarm = Swarm {
            id,
            octet: 0,
            dir: None,
            bridge: None,
            forward_rule: false,
            nodes: Vec::new(),
        };
        let dir = PathBuf::from(format!("/tmp/dmsw{}", swarm.id));
        std::fs::create_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "create {}: {e} (left by an earlier run? remove it and its mounts)",
                dir.display()
            )
        });
        swarm.dir = Some(dir.clone());

        {
            let _lock = SUBNET.lock().unwrap_or_else(|e| e.into_inner());
            swarm.octet = free_octet(pid as usize + n);
            // Bridge names are at most 15 characters: "dmsw" + pid (≤ 7) + "x" + counter.
            let bridge = format!("dmsw{}", swarm.id);
            assert!(bridge.len() <= 15, "bridge name {bridge} is too long");
            must("ip", &["link", "add", &bridge, "type", "bridge"]);
            swarm.bridge = Some(bridge.clone());
            let gateway = format!("10.231.{}.1/24", swarm.octet);
            must("ip", &["addr", "add", &gateway, "dev", &bridge]);
            must("ip", &["link", "set", &bridge, "up"]);
        }
        let bridge = swarm.bridge.clone().expect("bridge registered above");
        // Docker's FORWARD policy drops bridged traffic that is not its own.
        swarm.forward_rule = run(
            "iptables",
            &[
                "-w",
                "-I",
                "DOCKER-USER",
                "-i",
                &bridge,
                "-o",
                &bridge,
                "-j",
                "ACCEPT",
            ],
        )
        .status
        .success();

        for i in 0..nodes {
            let node_dir = dir.join(format!("n{i}"));
            swarm.nodes.push(Node {
                index: i,
                addr: format!("10.231.{}.{}", swarm.octet, i + 2),
                docker_host: format!("unix://{}", node_dir.join("d.sock").display()),
                dir: node_dir,
                netns: None,
                veth: None,
                dockerd: None,
            });
            let node = swarm.nodes.last_mut().expect("pushed above");
            node.start(&swarm.id, &bridge);
        }
        for node in &mut swarm.nodes {
            node.wait_for_engine();
        }

        let manager = swarm.nodes[0].addr.clone();
        swarm.nodes[0].docker_ok(&["swarm", "init", "--advertise-addr", &manager]);
        let token = swarm.nodes[0]
            .docker_ok(&["swarm", "join-token", "-q", "worker"])
            .trim()
            .to_string();
        let join_addr = format!("{manager}:2377");
        for node in &swarm.nodes[1..] {
            node.docker_ok(&[
                "swarm",
                "join",
                "--token",
                &token,
                "--advertise-addr",
                &node.addr,
                &join_addr,
            ]);
        }
        swarm.wait_all_ready();
        swarm
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Stop node `index`'s engine as a crash or a power cut would look to the swarm: the
    /// engine is killed (its containers stay until `Drop` cleans up).
    pub fn kill_engine(&self, index: usize) {
        let node = &self.nodes[index];
        if let Some(pid) = node.engine_pid() {
            run("kill", &["-KILL", &pid.to_string()]);
        }
    }

    /// Node 0, where the swarm was initialised.
    pub fn manager(&self) -> &Node {
        &self.nodes[0]
    }

    /// A name no other swarm of any test run uses (for services, networks, images).
    pub fn unique(&self, what: &str) -> String {
        format!("{what}{}", self.id)
    }

    fn wait_all_ready(&self) {
        let deadline = Instant::now() + ENGINE_WAIT;
        loop {
            let out = self
                .manager()
                .docker(&["node", "ls", "--format", "{{.Status}}"]);
            let ready = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.trim() == "Ready")
                .count();
            if ready == self.nodes.len() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "swarm {}: {ready} of {} nodes ready after {ENGINE_WAIT:?}: {}",
                self.id,
                self.nodes.len(),
                String::from_utf8_lossy(&out.stdout)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Node {
    /// `docker -H <this node> <args>`, run to the end.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        let out = self.command().args(args).output().expect("run docker");
        log(&format!("docker -H {} {args:?}", self.docker_host), &out);
        out
    }

    /// `docker -H <this node> <args>`; panics when it fails, else returns stdout.
    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "node {}: docker {args:?} failed: {}",
            self.index,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A `docker` command aimed at this node (add arguments, then run it).
    pub fn command(&self) -> Command {
        let mut c = Command::new("docker");
        c.env_remove("DOCKER_CONTEXT")
            .env("DOCKER_BUILDKIT", "0")
            .args(["-H", &self.docker_host]);
        c
    }

    /// Namespace, veth and engine, each registered as soon as it exists.
    fn start(&mut self, swarm_id: &str, bridge: &str) {
        let netns = format!("dmsw{swarm_id}n{}", self.index);
        must("ip", &["netns", "add", &netns]);
        self.netns = Some(netns.clone());
        // The host end's name is at most 15 characters: "dv" + pid + "x" + counter + "n" + i.
        let veth = format!("dv{swarm_id}n{}", self.index);
        assert!(veth.len() <= 15, "veth name {veth} is too long");
        must(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        );
        self.veth = Some(veth.clone());
        must("ip", &["link", "set", &veth, "master", bridge]);
        must("ip", &["link", "set", &veth, "up"]);
        let cidr = format!("{}/24", self.addr);
        must("ip", &["-n", &netns, "addr", "add", &cidr, "dev", "eth0"]);
        must("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
        must("ip", &["-n", &netns, "link", "set", "lo", "up"]);

        std::fs::create_dir(&self.dir).expect("create node dir");
        let config = self.dir.join("daemon.json");
        std::fs::write(
            &config,
            r#"{"storage-driver": "fuse-overlayfs", "mtu": 1400, "shutdown-timeout": 2}"#,
        )
        .expect("write daemon.json");
        let log = std::fs::File::create(self.dir.join("log")).expect("create engine log");
        let d = |name: &str| self.dir.join(name).display().to_string();
        // `nsenter --net`, not `ip netns exec`: the latter remounts /sys and dockerd then
        // finds no devices cgroup.
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{netns}"))
            .args(["setsid", "dockerd", "--config-file", &d("daemon.json")])
            .args(["--data-root", &d("data"), "--exec-root", &d("exec")])
            .args(["-H", &self.docker_host, "--pidfile", &d("d.pid")])
            .args(["--containerd-namespace", &netns])
            .args(["--containerd-plugins-namespace", &format!("{netns}p")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd (in nsenter)");
        self.dockerd = Some(child);
    }

    fn wait_for_engine(&mut self) {
        let deadline = Instant::now() + ENGINE_WAIT;
        loop {
            let out = self.docker(&["info", "--format", "{{.ServerVersion}}"]);
            if out.status.success() {
                return;
            }
            if let Some(status) = self.dockerd.as_mut().and_then(|c| c.try_wait().ok()?) {
                panic!(
                    "node {}: dockerd exited ({status}) before answering:\n{}",
                    self.index,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "node {}: no answer from {} after {ENGINE_WAIT:?}:\n{}",
                self.index,
                self.docker_host,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines the engine wrote.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The engine's process id: from its pidfile, else the process started for it.
    fn engine_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("d.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .or_else(|| self.dockerd.as_ref().map(Child::id))
    }

    /// Asks the engine to stop (it stops its containers and its containerd first).
    fn signal_stop(&self) {
        if self.dockerd.is_none() {
            return;
        }
        if let Some(pid) = self.engine_pid() {
            run("kill", &["-TERM", &pid.to_string()]);
        }
    }

    /// Waits for the engine to be gone (killing it if it takes too long).
    fn reap(&mut self) {
        if self.dockerd.is_none() {
            return;
        }
        let pid = self.engine_pid();
        let Some(mut child) = self.dockerd.take() else {
            return;
        };
        let alive =
            |pid: Option<u32>| pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Reaps the engine when it is the process started for it.
            let exited = !matches!(child.try_wait(), Ok(None));
            if exited && !alive(pid) {
                break;
            }
            if Instant::now() >= deadline {
                if let Some(p) = pid {
                    run("kill", &["-KILL", &p.to_string()]);
                }
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        // Every engine at once: each may take a few seconds to stop its containers.
        for node in &self.nodes {
            node.signal_stop();
        }
        for node in &mut self.nodes {
            node.reap();
        }
        if let Some(dir) = self.dir.take() {
            let prefix = format!("{}/", dir.display());
            // A containerd, shim or fuse-overlayfs an engine left running: ours by path.
            let out = run("pgrep", &["-f", &prefix]);
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                run("kill", &["-KILL", pid]);
            }
            // Network namespace files and layer mounts an engine leaves under its dirs.
            let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|p| p.starts_with(&prefix))
                .collect();
            points.sort_unstable_by(|a, b| b.cmp(a));
            for point in points {
                run("umount", &["-l", point]);
            }
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("swarm {}: remove {}: {e}", self.id, dir.display());
            }
        }
        for node in &mut self.nodes {
            if let Some(veth) = node.veth.take() {
                // Already gone when its namespace went first; harmless then.
                run("ip", &["link", "del", &veth]);
            }
            if let Some(netns) = node.netns.take() {
                run("ip", &["netns", "del", &netns]);
            }
        }
        if let Some(bridge) = self.bridge.take() {
            if std::mem::take(&mut self.forward_rule) {
                run(
                    "iptables",
                    &[
                        "-w",
                        "-D",
                        "DOCKER-USER",
                        "-i",
                        &bridge,
                        "-o",
                        &bridge,
                        "-j",
                        "ACCEPT",
                    ],
                );
            }
            run("ip", &["link", "del", &bridge]);
        }
    }
}

/// Panics (never skips) without what the swarm needs.
fn require_tools() {
    for tool in [
        "dockerd",
        "nsenter",
        "fuse-overlayfs",
        "ip",
        "iptables",
        "docker",
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(found, "the swarm tests need `{tool}` on PATH");
    }
    assert!(
        Path::new("/bin/busybox").is_file(),
        "the swarm tests need /bin/busybox: apt-get install busybox-static"
    );
}

/// A third octet for 10.231.<n>.0/24 that no route on the machine uses, starting from
/// `seed` so parallel test processes tend to start far apart.
fn free_octet(seed: usize) -> u8 {
    let routes =
        String::from_utf8_lossy(&run("ip", &["-4", "route", "show", "table", "all"]).stdout)
            .into_owned();
    let addrs = String::from_utf8_lossy(&run("ip", &["-4", "addr"]).stdout).into_owned();
    for step in 0..254 {
        let octet = ((seed + step) % 254 + 1) as u8;
        let net = format!("10.231.{octet}.");
        if !routes.contains(&net) && !addrs.contains(&net) {
            return octet;
        }
    }
    panic!("no free /24 in 10.231.0.0/16 for a test swarm");
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    log(&format!("{program} {args:?}"), &out);
    out
}

#[track_caller]
fn must(program: &str, args: &[&str]) {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every external call, with its exit status, when `DMSW_DEBUG` is set.
fn log(what: &str, out: &std::process::Output) {
    if std::env::var_os("DMSW_DEBUG").is_some() {
        eprintln!("[swarm] {what} -> {}", out.status);
    }
}
