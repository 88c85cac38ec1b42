//! The proxy benchmark: `cargo bench --bench proxy`.
//!
//! One fast upstream, reached three ways in one run: (a) directly, (b) through `dockmaster
//! proxy` (this crate's release binary) and (c) through nginx (Debian's `nginx-light`).
//! For each path: p50/p99 latency at 1 connection, requests/s at 16 and 64 connections,
//! the proxy's memory, and the time to the first event of a server-sent-events stream.
//!
//! **Upstream.** A keep-alive HTTP/1.1 server (hyper) written here, on 127.0.0.1 at a free
//! port, on its own thread with a single-threaded tokio runtime, so that it costs the same
//! in every path. `GET /` answers 13 bytes (`Hello, world!`, `Content-Length` set);
//! `GET /sse` answers `text/event-stream`, chunked: the first event at once, then one every
//! 200 ms, 5 in all. (busybox `httpd` forks per request: its cost hides the proxy's.)
//!
//! **The proxies reach it the same way**: over TCP to 127.0.0.1:<upstream port>, HTTP/1.1
//! with keep-alive, `TCP_NODELAY` on both sides, both setting `X-Forwarded-For`, `-Proto`
//! and `-Host` and keeping the client's `Host`. The one difference is each proxy's own
//! design: dockmaster keeps one upstream connection per client connection; nginx keeps a
//! pool (`keepalive 64` idle connections per worker).
//!
//! - dockmaster: `dockmaster proxy --listen <free port> --bind 127.0.0.1 --upstream
//!   127.0.0.1 --upstream-port <upstream port> --state <temp dir>/upstream --control <free
//!   port>`. It runs min(cores, 4) tokio worker threads.
//! - nginx: a generated config in a temp dir, run in the foreground (`-g 'daemon off;'`)
//!   and stopped at the end: `worker_processes` = min(cores, 4), the same parallelism as
//!   dockmaster's worker threads (nginx's `auto` would be one per core, equal here up to 4
//!   cores); `access_log off`; an `upstream` block with `keepalive 64`;
//!   `proxy_http_version 1.1`; `proxy_set_header Connection ""`; pid, error log and temp
//!   paths in the temp dir. Buffering is nginx's default (`proxy_buffering on`).
//!
//! **Load**: Debian's `wrk` against `GET /`: `wrk -t1 -c1 --latency` (p50/p99 at one
//! connection), `wrk -t2 -c16` and `wrk -t2 -c64` (requests/s); each run `BENCH_SECONDS`
//! long (default 10), after a 1 s warm-up per path; each `wrk` is killed if it outlives
//! its duration by 30 s. A run with errors (non-2xx answers, socket errors) fails the
//! benchmark. All three paths are up for the whole run and measured interleaved (every
//! path at one load, then the next load), so a busy moment of a shared machine does not
//! fall on one path only; `BENCH_ROUNDS` (default 1) repeats that and reports medians.
//! Load generator, proxies and upstream share the machine's cores: the figures are
//! comparable with each other, not with a separate client machine.
//!
//! **Memory**: VmRSS and VmHWM (peak) from `/proc/<pid>/status` after all runs;
//! for nginx, master and workers summed (shared pages counted in each).
//!
//! **SSE**: a raw TCP client sends `GET /sse` and times until it reads the first `data:`
//! line; median of 5 per path.
//!
//! Only loopback is a traffic target. `nginx` and `wrk` are required: the benchmark stops
//! with a message naming the package if either is missing.
//!
//! Environment: `BENCH_SECONDS` (default 10), `BENCH_ROUNDS` (default 1), `BENCH_ONLY`
//! (`direct`, `dockmaster` or `nginx`; direct is always measured, for the "added" column),
//! `BENCH_HOLD=<secs>` (for profiling: start the paths, print their addresses and pids,
//! keep them up that long, at most 30 minutes, without load; then stop).

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const BIN: &str = env!("CARGO_BIN_EXE_dockmaster");
const BODY: &[u8] = b"Hello, world!";
const SSE_EVENTS: usize = 5;
const SSE_EVERY: Duration = Duration::from_millis(200);
const SSE_TRIES: usize = 5;

fn main() {
    let secs = env_num("BENCH_SECONDS", 10, 1..=300);
    let rounds = env_num("BENCH_ROUNDS", 1, 1..=10) as usize;
    let only = std::env::var("BENCH_ONLY").ok();
    require("wrk", &["-v"], "wrk");
    require("nginx", &["-v"], "nginx-light");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = cores.min(4);
    let machine = machine();
    eprintln!("machine: {machine}");

    let upstream = start_upstream();
    let dir = tempdir();
    let mut paths = vec![Route {
        name: "direct".into(),
        addr: upstream,
        server: None,
    }];
    if only.as_deref().is_none_or(|o| o == "dockmaster") {
        let proxy = start_dockmaster(&dir, upstream.port(), true);
        paths.push(Route {
            name: "dockmaster proxy".into(),
            addr: proxy.addr,
            server: Some(proxy),
        });
        // The cost of counting traffic per release (issue 13's budget: under 5%).
        let uncounted = start_dockmaster(&dir, upstream.port(), false);
        paths.push(Route {
            name: "dockmaster proxy, counting off".into(),
            addr: uncounted.addr,
            server: Some(uncounted),
        });
    }
    if only.as_deref().is_none_or(|o| o == "nginx") {
        let nginx = start_nginx(&dir, upstream.port(), workers);
        paths.push(Route {
            name: format!("nginx ({workers} workers)"),
            addr: nginx.addr,
            server: Some(nginx),
        });
    }
    if let Some(hold) = std::env::var("BENCH_HOLD")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        // For profiling: the paths stay up, unloaded, for a bounded time.
        let hold = hold.min(1800);
        for p in &paths {
            let pid = p.server.as_ref().map(|s| s.child.id().to_string());
            eprintln!(
                "{}: http://{}/ (pid {})",
                p.name,
                p.addr,
                pid.as_deref().unwrap_or("-")
            );
        }
        eprintln!("holding for {hold} s");
        std::thread::sleep(Duration::from_secs(hold));
        drop(paths);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let rows = measure(&paths, secs, rounds);
    drop(paths);
    let _ = std::fs::remove_dir_all(&dir);

    let direct = rows[0].p50;
    let per = if rounds > 1 {
        format!("{secs} s per wrk run, median of {rounds} interleaved rounds")
    } else {
        format!("{secs} s per wrk run")
    };
    println!("\nProxy benchmark, {machine}; {per}\n");
    println!(
        "| path | p50 at 1 conn | p99 at 1 conn | added p50 vs direct | req/s at 16 | req/s at 64 | RSS (peak) | SSE first event |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let added = if r.name == "direct" {
            "—".to_string()
        } else {
            format!("{:+.3} ms", (r.p50 - direct) * 1e3)
        };
        let rss = r.rss.map_or("—".to_string(), |(now, peak)| {
            format!("{:.1} MiB ({:.1} MiB)", mib(now), mib(peak))
        });
        println!(
            "| {} | {:.3} ms | {:.3} ms | {added} | {:.0} | {:.0} | {rss} | {:.2} ms |",
            r.name,
            r.p50 * 1e3,
            r.p99 * 1e3,
            r.rps16,
            r.rps64,
            r.sse * 1e3,
        );
    }
    if let (Some(on), Some(off)) = (
        rows.iter().find(|r| r.name == "dockmaster proxy"),
        rows.iter()
            .find(|r| r.name == "dockmaster proxy, counting off"),
    ) {
        println!(
            "\nCounting on vs off: req/s at 16 {:.0} vs {:.0} ({:+.1}%), at 64 {:.0} vs {:.0} ({:+.1}%)",
            on.rps16,
            off.rps16,
            (on.rps16 / off.rps16 - 1.0) * 100.0,
            on.rps64,
            off.rps64,
            (on.rps64 / off.rps64 - 1.0) * 100.0,
        );
    }
    if let (Some(d), Some(n)) = (
        rows.iter().find(|r| r.name == "dockmaster proxy"),
        rows.iter().find(|r| r.name.starts_with("nginx")),
    ) {
        let yes = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "\nGoal: added p50 {:+.3} ms vs nginx {:+.3} ms: {}; req/s at 16 {:.0} vs {:.0}: {}; at 64 {:.0} vs {:.0}: {}; RSS under 20 MiB: {}",
            (d.p50 - direct) * 1e3,
            (n.p50 - direct) * 1e3,
            yes(d.p50 <= n.p50),
            d.rps16,
            n.rps16,
            yes(d.rps16 >= n.rps16),
            d.rps64,
            n.rps64,
            yes(d.rps64 >= n.rps64),
            yes(d.rss.is_some_and(|(_, peak)| mib(peak) < 20.0)),
        );
    }
}

/// One way to the upstream; the proxy process behind it, if any, runs while this lives.
struct Route {
    name: String,
    addr: SocketAddr,
    server: Option<Server>,
}

struct Row {
    name: String,
    /// Seconds.
    p50: f64,
    p99: f64,
    rps16: f64,
    rps64: f64,
    /// Bytes: resident now, and peak.
    rss: Option<(u64, u64)>,
    /// Seconds to the first SSE event, median.
    sse: f64,
}

/// Every path at one load before the next load, so that a busy moment on a shared
/// machine falls on all paths alike rather than on one; each figure the median over rounds.
fn measure(paths: &[Route], secs: u64, rounds: usize) -> Vec<Row> {
    let urls: Vec<String> = paths
        .iter()
        .map(|p| format!("http://{}/", p.addr))
        .collect();
    for url in &urls {
        wrk(url, 1, 1, 1);
    }
    let mut one = vec![vec![]; paths.len()];
    let mut c16 = vec![vec![]; paths.len()];
    let mut c64 = vec![vec![]; paths.len()];
    for round in 1..=rounds {
        for (conns, threads, results) in [(1, 1, &mut one), (16, 2, &mut c16), (64, 2, &mut c64)] {
            for (i, p) in paths.iter().enumerate() {
                let r = wrk(&urls[i], threads, conns, secs);
                eprintln!(
                    "round {round}, {conns} conn(s), {}: p50 {:.3} ms, p99 {:.3} ms, {:.0} req/s",
                    p.name,
                    r.p50 * 1e3,
                    r.p99 * 1e3,
                    r.rps
                );
                results[i].push(r);
            }
        }
    }
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let sse = median((0..SSE_TRIES).map(|_| sse_first_event(p.addr)).collect());
            eprintln!("{}: SSE first event {:.2} ms", p.name, sse * 1e3);
            Row {
                name: p.name.clone(),
                p50: median(one[i].iter().map(|r| r.p50).collect()),
                p99: median(one[i].iter().map(|r| r.p99).collect()),
                rps16: median(c16[i].iter().map(|r| r.rps).collect()),
                rps64: median(c64[i].iter().map(|r| r.rps).collect()),
                rss: p.server.as_ref().map(Server::memory),
                sse,
            }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_num(key: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| range.contains(n))
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// The upstream

/// Start the upstream on its own thread and runtime; its address.
fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let addr = listener.local_addr().expect("the upstream's address");
    listener.set_nonblocking(true).expect("non-blocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the upstream's runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                        .await;
                });
            }
        });
    });
    addr
}

type UpBody = BoxBody<Bytes, Infallible>;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<UpBody>, Infallible> {
    if req.uri().path() == "/sse" {
        let events = futures_util::stream::unfold(0usize, |i| async move {
            if i == SSE_EVENTS {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(SSE_EVERY).await;
            }
            let data = Bytes::from(format!("data: event {i}\n\n"));
            Some((Ok::<_, Infallible>(Frame::data(data)), i + 1))
        });
        let resp = Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(StreamBody::new(events).boxed())
            .expect("a valid response");
        return Ok(resp);
    }
    let resp = Response::builder()
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(BODY)).boxed())
        .expect("a valid response");
    Ok(resp)
}

// ---------------------------------------------------------------------------------------
// The proxies

/// A proxy process: stopped (SIGTERM, then SIGKILL after 5 s) when dropped, also on a panic.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// nginx: the master's workers count too.
    with_children: bool,
}

impl Server {
    /// Resident and peak memory in bytes.
    fn memory(&self) -> (u64, u64) {
        let pid = self.child.id();
        let mut pids = vec![pid];
        if self.with_children {
            pids.extend(children(pid));
        }
        pids.iter()
            .map(|&p| status_kb(p))
            .fold((0, 0), |(r, h), (r1, h1)| (r + r1 * 1024, h + h1 * 1024))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dockmaster(dir: &Path, upstream_port: u16, count: bool) -> Server {
    let port = free_port();
    let control = free_port();
    let mut cmd = Command::new(BIN);
    if !count {
        cmd.arg("proxy").arg("--no-count");
    } else {
        cmd.arg("proxy");
    }
    let child = cmd
        .args(["--listen", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--upstream", "127.0.0.1"])
        .args(["--upstream-port", &upstream_port.to_string()])
        .arg("--state")
        .arg(dir.join(if count {
            "dockmaster-upstream"
        } else {
            "dockmaster-upstream-uncounted"
        }))
        .args(["--control", &control.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dockmaster proxy");
    let server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        with_children: false,
    };
    wait_listening(&server, "dockmaster proxy");
    server
}

fn start_nginx(dir: &Path, upstream_port: u16, workers: usize) -> Server {
    let port = free_port();
    let root = dir.join("nginx");
    std::fs::create_dir_all(&root).expect("nginx temp dir");
    let r = root.display();
    let conf = format!(
        "worker_processes {workers};
pid {r}/nginx.pid;
error_log {r}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {r}/client_body;
    proxy_temp_path {r}/proxy;
    fastcgi_temp_path {r}/fastcgi;
    uwsgi_temp_path {r}/uwsgi;
    scgi_temp_path {r}/scgi;
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"
    );
    let conf_path = root.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&root)
        .arg("-e")
        .arg(root.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    let server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        with_children: true,
    };
    wait_listening(&server, "nginx");
    server
}

/// Wait (10 s at most) until the server answers `GET /` with 200.
fn wait_listening(server: &Server, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if get_ok(server.addr) {
            return;
        }
        assert!(
            Instant::now() < until,
            "{what} did not answer on {} within 10 s",
            server.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.starts_with("HTTP/1.1 200") && text.ends_with("Hello, world!")
}

// ---------------------------------------------------------------------------------------
// Load and measurements

#[derive(Clone)]
struct WrkResult {
    /// Seconds.
    p50: f64,
    p99: f64,
    rps: f64,
}

/// One `wrk` run, killed if it outlives its duration by 30 s; errors fail the benchmark.
fn wrk(url: &str, threads: usize, conns: usize, secs: u64) -> WrkResult {
    let mut child = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wrk");
    let until = Instant::now() + Duration::from_secs(secs + 30);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("wrk -c{conns} {url} did not finish within {} s", secs + 30);
            }
        }
    }
    let out = child.wait_with_output().expect("wrk's output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk -c{conns} {url} failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk -c{conns} {url} saw errors:\n{text}"
    );
    parse_wrk(&text).unwrap_or_else(|| panic!("cannot read wrk's output:\n{text}"))
}

/// wrk's `--latency` lines (`     50%  112.00us`) and `Requests/sec:  8912.34`.
fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut p50 = None;
    let mut p99 = None;
    let mut rps = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => p50 = duration(v),
            ["99%", v] => p99 = duration(v),
            ["Requests/sec:", v] => rps = v.parse().ok(),
            _ => {}
        }
    }
    Some(WrkResult {
        p50: p50?,
        p99: p99?,
        rps: rps?,
    })
}

/// wrk's durations: `112.00us`, `1.23ms`, `2.00s`, `1.50m`; in seconds.
fn duration(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    })
}

/// Seconds from sending `GET /sse` to reading the first `data:` line (5 s at most).
fn sse_first_event(addr: SocketAddr) -> f64 {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let started = Instant::now();
    s.write_all(b"GET /sse HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .expect("send the SSE request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read the SSE stream");
        assert!(n > 0, "SSE stream through {addr} ended before an event");
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(6).any(|w| w == b"\ndata:") {
            return started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no SSE event through {addr} within 5 s"
        );
    }
}

/// VmRSS and VmHWM of a process, in KiB.
fn status_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The processes whose parent is `pid` (nginx's workers).
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            // `pid (comm) state ppid …`; comm may hold spaces, so read after the last `)`.
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Helpers

/// Stop with the package to install if a required program is missing.
fn require(program: &str, args: &[&str], package: &str) {
    let found = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "the proxy benchmark needs `{program}`: apt-get install -y {package}"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dm-bench-proxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
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
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| {
                let all = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                all.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_default()
    };
    let nginx = version("nginx", &["-v"]);
    let wrk = version("wrk", &["-v"]);
    // `wrk debian/4.1.0-3+b2 [epoll] Copyright …`
    let wrk = wrk.split(" [").next().unwrap_or("");
    format!(
        "{cores} cores, {mem}, kernel {}, {nginx}, {wrk}",
        kernel.trim()
    )
}
