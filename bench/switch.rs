//! The switch benchmark: `cargo bench --bench switch` (issue 5).
//!
//! For each way of switching — dockmaster start-first with a hot standby and with a cold one
//! (the default), dockmaster recreate, and the guide's
//! own script (`TAG=… docker-compose up -d --force-recreate`, then poll Docker's health
//! status every 2 s), written here as the baseline — it builds the same busybox app (health
//! check `interval: 30s` as in the guide's compose file, `container_name:` set, a host port
//! published), starts three clients, runs N switches alternating a deploy of a prebuilt
//! release and a rollback, and reports per client: requests, failed requests and the
//! longest gap without a successful answer; per switch kind: wall time. It also measures
//! the app's own time to ready (from asking the engine to start its container to the first
//! passing run of its health check) so dockmaster's overhead on a rollback can be given.
//!
//! Clients: two client containers on the compose network, one addressing the service by
//! its compose service name, one by its `container_name`; one client on the host through
//! the published port. Each sends a request every ~10 ms from two loops (well over 50
//! requests/s each) and is bounded in count and time.
//!
//! Environment: `BENCH_SWITCHES` (default 20), `BENCH_BASELINE_SWITCHES` (default 20),
//! `BENCH_ONLY` (`hot`, `start-first`, `recreate` or `guide`), `BENCH_VERBOSE` (dockmaster's
//! `-v` output on stderr).

#[path = "common.rs"]
mod common;
use common::{git, git_out};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const BIN: &str = env!("CARGO_BIN_EXE_dockmaster");
/// Upper bound on each client's requests, whatever happens.
const MAX_REQUESTS_PER_LOOP: usize = 40_000;

fn main() {
    let n: usize = env_num("BENCH_SWITCHES", 20);
    let n_guide: usize = env_num("BENCH_BASELINE_SWITCHES", 20);
    let only = std::env::var("BENCH_ONLY").ok();
    assert!(
        Path::new("/bin/busybox").is_file(),
        "the benchmark needs /bin/busybox (apt-get install busybox-static)"
    );
    let machine = machine();
    eprintln!("machine: {machine}");
    let mut rows = vec![];
    for (kind, switches) in [
        (Kind::StartFirstHot, n),
        (Kind::StartFirst, n),
        (Kind::Recreate, n),
        (Kind::Guide, n_guide),
    ] {
        if only.as_deref().is_some_and(|o| o != kind.slug()) || switches == 0 {
            continue;
        }
        eprintln!("== {} ({switches} switches)", kind.name());
        rows.push(run(kind, switches));
    }
    println!("\nSwitch benchmark, {machine}\n");
    println!(
        "| strategy | switches | client | requests | failed | longest gap | deploy wall (median / max) | rollback wall (median / max) | rollback overhead (median) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        for (i, c) in r.clients.iter().enumerate() {
            let (d, rb, over) = if i == 0 {
                (
                    med_max(&r.deploys),
                    med_max(&r.rollbacks),
                    format!(
                        "{:.2} s (app ready in {:.2} s; {:.2} s after its process started)",
                        median(&r.rollbacks) - r.ready,
                        r.ready,
                        r.ready_process
                    ),
                )
            } else {
                (String::new(), String::new(), String::new())
            };
            println!(
                "| {} | {} | {} | {} ({:.0}/s) | {} | {:.2} s | {d} | {rb} | {over} |",
                if i == 0 { r.kind.name() } else { "" },
                if i == 0 {
                    r.switches.to_string()
                } else {
                    String::new()
                },
                c.name,
                c.total,
                c.rate,
                c.failed,
                c.longest_gap,
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Start-first with `standby = "hot"`: a rollback to the release that served just
    /// before is a probe and a proxy switch.
    StartFirstHot,
    /// Start-first with the default cold standby.
    StartFirst,
    Recreate,
    Guide,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::StartFirstHot => "start-first, hot standby",
            Kind::StartFirst => "start-first, cold standby",
            Kind::Recreate => "recreate",
            Kind::Guide => "guide",
        }
    }

    /// For `BENCH_ONLY` and names.
    fn slug(self) -> &'static str {
        match self {
            Kind::StartFirstHot => "hot",
            Kind::StartFirst => "start-first",
            Kind::Recreate => "recreate",
            Kind::Guide => "guide",
        }
    }

    /// The `--strategy` dockmaster is run with.
    fn strategy(self) -> &'static str {
        match self {
            Kind::StartFirstHot | Kind::StartFirst => "start-first",
            _ => "recreate",
        }
    }
}

struct Row {
    kind: Kind,
    switches: usize,
    clients: Vec<ClientResult>,
    deploys: Vec<f64>,
    rollbacks: Vec<f64>,
    /// The app's time to ready from the start request, and from its process start.
    ready: f64,
    ready_process: f64,
}

struct ClientResult {
    name: &'static str,
    total: usize,
    failed: usize,
    rate: f64,
    longest_gap: f64,
}

struct App {
    dir: PathBuf,
    project: String,
    repo: String,
    name: String,
    state: PathBuf,
    c1: String,
    c2: String,
    t1: String,
    t2: String,
}

fn run(kind: Kind, switches: usize) -> Row {
    let app = setup(kind);
    let (ready, ready_process) = time_to_ready(&app);
    eprintln!(
        "app time to ready: {ready:.3} s from the start request ({ready_process:.3} s from the process start)"
    );
    let port = host_port(&app.name);
    let net_service = NetClient::start(&app, "http://app:8080/health");
    let net_name = NetClient::start(&app, &format!("http://{}:8080/health", app.name));
    let host = HostClient::start(port);
    std::thread::sleep(Duration::from_secs(1));
    let window_start = SystemTime::now();

    let mut deploys = vec![];
    let mut rollbacks = vec![];
    for i in 0..switches {
        let started = Instant::now();
        // Even: back to the first release; odd: deploy the second (prebuilt) again.
        if i % 2 == 0 {
            match kind {
                Kind::Guide => guide_switch(&app, &app.t1),
                _ => dm(&app, kind, &["rollback", &app.t1, "-y"]),
            }
            rollbacks.push(started.elapsed().as_secs_f64());
        } else {
            match kind {
                Kind::Guide => guide_switch(&app, &app.t2),
                _ => dm(&app, kind, &["deploy", "--no-pull"]),
            }
            deploys.push(started.elapsed().as_secs_f64());
        }
        eprintln!(
            "  switch {}/{switches}: {:.2} s",
            i + 1,
            started.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(1));
    let window_end = SystemTime::now();
    let clients = vec![
        net_service.finish("network, by service name", window_start, window_end),
        net_name.finish("network, by container_name", window_start, window_end),
        host.finish("host, published port", window_start, window_end),
    ];
    teardown(&app);
    Row {
        kind,
        switches,
        clients,
        deploys,
        rollbacks,
        ready,
        ready_process,
    }
}

/// A git checkout with the app at two commits; both releases built, the second live.
fn setup(kind: Kind) -> App {
    let id = format!(
        "{}{}",
        kind.slug().replace('-', ""),
        std::process::id() % 100_000
    );
    let root = std::env::temp_dir().join(format!("dm-bench-{id}"));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("app");
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let project = format!("dmbench{id}");
    let repo = format!("dm-bench-{id}");
    let name = format!("dm-bench-{id}-api");
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    std::fs::write(dir.join(".gitignore"), "busybox\n").unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\nRUN mkdir -p /tmp\nCOPY www /www\nCOPY run.sh /run.sh\nCMD [\"/bin/sh\",\"/run.sh\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("run.sh"),
        "#!/bin/sh\ntrap 'kill $pid; exit 0' TERM\nhttpd -f -p 8080 -h /www & pid=$!\nwait $pid\n",
    )
    .unwrap();
    std::fs::write(dir.join("www/health"), "ok\n").unwrap();
    // A fixed host port (a free one now): the guide publishes a fixed port, and an
    // ephemeral one would move on every recreate.
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            "services:\n  app:\n    build: .\n    image: {repo}:${{BENCH_TAG:-latest}}\n    container_name: {name}\n    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:{host_port}:8080\"\n    healthcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/health\"]\n      interval: 30s\n"
        ),
    )
    .unwrap();
    // compose v1 does not read `name:`; .env sets the project name for both versions.
    std::fs::write(
        dir.join(".env"),
        format!("COMPOSE_PROJECT_NAME={project}\n"),
    )
    .unwrap();
    if kind == Kind::StartFirstHot {
        std::fs::write(dir.join("dockmaster.toml"), "standby = \"hot\"\n").unwrap();
    }
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("www/version"), "v1\n").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "v1"]);
    let c1 = git_out(&dir, &["rev-parse", "HEAD"]);
    let mut app = App {
        dir: dir.clone(),
        project,
        repo,
        name,
        state: root.join("state"),
        c1,
        c2: String::new(),
        t1: String::new(),
        t2: String::new(),
    };
    // The guide's script switches with compose itself: dockmaster only builds there.
    let setup_kind = if kind == Kind::Guide {
        Kind::Recreate
    } else {
        kind
    };
    dm(&app, setup_kind, &["deploy", "--no-pull"]);
    std::fs::write(dir.join("www/version"), "v2\n").unwrap();
    git(&dir, &["commit", "-q", "-am", "v2"]);
    app.c2 = git_out(&dir, &["rev-parse", "HEAD"]);
    dm(&app, setup_kind, &["deploy", "--no-pull"]);
    let date = jiff::Timestamp::now().strftime("%Y.%m.%d").to_string();
    app.t1 = format!("{date}-{}", &app.c1[..7]);
    app.t2 = format!("{date}-{}", &app.c2[..7]);
    app
}

fn teardown(app: &App) {
    let label = format!("label=com.docker.compose.project={}", app.project);
    let ids = docker_out(&["ps", "-aq", "--filter", &label]);
    for id in ids.split_whitespace() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
    let _ = Command::new("docker")
        .args(["network", "rm", &format!("{}_default", app.project)])
        .output();
    let imgs = docker_out(&["images", "-q", &app.repo]);
    let mut ids: Vec<&str> = imgs.split_whitespace().collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let _ = Command::new("docker").args(["rmi", "-f", id]).output();
    }
    let _ = std::fs::remove_dir_all(app.dir.parent().unwrap());
}

fn dm(app: &App, kind: Kind, args: &[&str]) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--state-dir")
        .arg(&app.state)
        .current_dir(&app.dir)
        .stdin(Stdio::null());
    if args[0] == "deploy" || args[0] == "rollback" {
        cmd.args(["--strategy", kind.strategy()]);
    }
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        cmd.arg("-v");
    }
    let out = cmd.output().expect("run dockmaster");
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        out.status.success(),
        "dockmaster {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The guide's rollback script: recreate with the tag, then poll Docker's health status
/// every 2 s (it waits up to 60 s).
fn guide_switch(app: &App, tag: &str) {
    let out = Command::new("docker-compose")
        .args(["up", "-d", "--force-recreate", "app"])
        .env("BENCH_TAG", tag)
        .current_dir(&app.dir)
        .output()
        .expect("docker-compose");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = docker_out(&["inspect", "--format", "{{.State.Health.Status}}", &app.name]);
        if status.trim() == "healthy" {
            return;
        }
        assert!(Instant::now() < deadline, "guide switch never got healthy");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The app's own time to ready: from asking the engine to start a (created) container of
/// the release to the first passing run of its health-check command, checked every 10 ms;
/// median of 5. Also returned: the part after the engine's `StartedAt` (the process
/// running), i.e. without the engine's own container start-up.
fn time_to_ready(app: &App) -> (f64, f64) {
    let mut from_request = vec![];
    let mut from_started = vec![];
    for _ in 0..5 {
        let id = docker_out(&["create", &format!("{}:{}", app.repo, app.t1)])
            .trim()
            .to_string();
        let asked = jiff::Timestamp::now();
        let started = Instant::now();
        docker_out(&["start", &id]);
        loop {
            let ok = Command::new("docker")
                .args([
                    "exec",
                    &id,
                    "wget",
                    "-q",
                    "-O",
                    "/dev/null",
                    "http://127.0.0.1:8080/health",
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok || started.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let ready_at = jiff::Timestamp::now();
        let started_at = docker_out(&["inspect", "--format", "{{.State.StartedAt}}", &id]);
        let secs =
            |from: jiff::Timestamp| (ready_at - from).total(jiff::Unit::Second).unwrap_or(0.0);
        from_request.push(secs(asked));
        from_started.push(
            started_at
                .trim()
                .parse::<jiff::Timestamp>()
                .map(secs)
                .unwrap_or(0.0),
        );
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
    (median(&from_request), median(&from_started))
}

/// A client container on the compose network: two loops, each `GET url` then 10 ms sleep,
/// printing `ok`/`FAIL` per request; `docker logs -t` gives each answer's time.
struct NetClient {
    id: String,
}

impl NetClient {
    fn start(app: &App, url: &str) -> NetClient {
        let one = format!(
            "i=0; while [ ! -f /tmp/stop ] && [ $i -lt {MAX_REQUESTS_PER_LOOP} ]; do i=$((i+1)); \
             if timeout 2 wget -q -O /dev/null {url}; then echo ok; else echo FAIL; fi; sleep 0.01; done"
        );
        let script = format!("({one}) & ({one}) & wait; echo done");
        let id = docker_out(&[
            "run",
            "-d",
            "--network",
            &format!("{}_default", app.project),
            "--label",
            &format!("com.docker.compose.project={}", app.project),
            "--entrypoint",
            "/bin/sh",
            &format!("{}:{}", app.repo, app.t1),
            "-c",
            &script,
        ])
        .trim()
        .to_string();
        NetClient { id }
    }

    fn finish(self, name: &'static str, from: SystemTime, to: SystemTime) -> ClientResult {
        let _ = Command::new("docker")
            .args(["exec", &self.id, "touch", "/tmp/stop"])
            .output();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut logs;
        loop {
            logs = docker_out(&["logs", "-t", &self.id]);
            if logs.contains(" done") || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
        let mut results = vec![];
        for line in logs.lines() {
            let Some((ts, what)) = line.split_once(' ') else {
                continue;
            };
            let Ok(t) = ts.parse::<jiff::Timestamp>() else {
                continue;
            };
            let t = SystemTime::from(t);
            match what.trim() {
                "ok" => results.push((t, true)),
                "FAIL" => results.push((t, false)),
                _ => {}
            }
        }
        summarize(name, results, from, to)
    }
}

struct HostClient {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<(SystemTime, bool)>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl HostClient {
    fn start(port: u16) -> HostClient {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(vec![]));
        let handles = (0..2)
            .map(|_| {
                let stop = stop.clone();
                let results = results.clone();
                std::thread::spawn(move || {
                    for _ in 0..MAX_REQUESTS_PER_LOOP {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let ok = http_ok(port);
                        results.lock().unwrap().push((SystemTime::now(), ok));
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        HostClient {
            stop,
            results,
            handles,
        }
    }

    fn finish(self, name: &'static str, from: SystemTime, to: SystemTime) -> ClientResult {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            let _ = h.join();
        }
        let results = std::mem::take(&mut *self.results.lock().unwrap());
        summarize(name, results, from, to)
    }
}

fn http_ok(port: u16) -> bool {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200")
}

/// Requests answered within [from, to]: count, failures, rate, longest time without a
/// successful answer.
fn summarize(
    name: &'static str,
    mut results: Vec<(SystemTime, bool)>,
    from: SystemTime,
    to: SystemTime,
) -> ClientResult {
    results.retain(|(t, _)| *t >= from && *t <= to);
    results.sort_by_key(|(t, _)| *t);
    let secs = to.duration_since(from).unwrap_or_default().as_secs_f64();
    let mut last_ok = from;
    let mut gap = 0.0f64;
    for (t, ok) in &results {
        if *ok {
            gap = gap.max(t.duration_since(last_ok).unwrap_or_default().as_secs_f64());
            last_ok = *t;
        }
    }
    gap = gap.max(to.duration_since(last_ok).unwrap_or_default().as_secs_f64());
    ClientResult {
        name,
        total: results.len(),
        failed: results.iter().filter(|(_, ok)| !ok).count(),
        rate: results.len() as f64 / secs.max(0.001),
        longest_gap: gap,
    }
}

fn host_port(container: &str) -> u16 {
    let out = docker_out(&["port", container, "8080/tcp"]);
    out.lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no published port on {container}: {out}"))
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
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{:.2} s / {:.2} s", median(v), max)
}

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{} GiB", kb / 1024 / 1024));
    let engine = docker_out(&["version", "--format", "{{.Server.Version}}"]);
    let compose = Command::new("docker-compose")
        .args(["version", "--short"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{cores} cores, {mem}, Docker engine {}, docker-compose {compose}",
        engine.trim()
    )
}

fn docker_out(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
