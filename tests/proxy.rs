//! The switch proxy (`src/proxy`) in front of a real release: upgrades, streaming both ways,
//! keep-alive, forwarded headers, timeouts, a 502 when the app is gone, raw TCP mode, and its
//! control port. Every request goes through the published port (the proxy), never to the app
//! directly; the apps are busybox `httpd` CGI scripts or `nc -ll -e` servers (see `App`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{App, Behaviour, Fixture, Options, docker_out};

/// Start-first with a container name and a published loopback port, serving `app`.
fn fixture(name: &str, app: App) -> Fixture {
    fixture_with(name, app, true, "")
}

fn fixture_with(name: &str, app: App, healthcheck: bool, extra: &str) -> Fixture {
    Fixture::with(
        name,
        Options {
            container_name: true,
            healthcheck,
            extra_service_yaml: Some(format!("    ports:\n      - \"127.0.0.1::8080\"\n{extra}")),
            app: Some(app),
            ..Options::default()
        },
    )
}

/// run.sh's serving lines for a forking `nc` server running `/www/<script>` per connection.
fn nc_serving(script: &str) -> String {
    format!("trap 'kill $pid; exit 0' TERM\nnc -ll -p 8080 -e /www/{script} & pid=$!\nwait $pid\n")
}

/// One connection: a request whose `Upgrade:` gets a 101 and then every line echoed back
/// prefixed with the release; any other request gets a 200 naming the release.
const UPGRADE_SERVER: &str = r#"#!/bin/sh
V=$(cat /www/version)
cr=$(printf '\r')
up=
key=
while IFS= read -r l; do
  l=${l%"$cr"}
  [ -z "$l" ] && break
  case "$l" in
    [Uu]pgrade:*) up=${l#*: } ;;
    [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=${l#*: } ;;
  esac
done
if [ -n "$up" ]; then
  printf 'HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: %s\r\nX-Seen-Key: %s\r\n\r\n' "$up" "$key"
  while IFS= read -r l; do echo "$V: $l"; done
else
  printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s\n' $((${#V} + 1)) "$V"
fi
"#;

/// A raw TCP service (no HTTP at all): every line echoed back prefixed with the release.
const ECHO_SERVER: &str =
    "#!/bin/sh\nV=$(cat /www/version)\nwhile IFS= read -r l; do echo \"$V: $l\"; done\n";

/// Server-sent events: the first at once, then one a second.
const SSE_CGI: &str = "#!/bin/sh\nprintf 'Content-Type: text/event-stream\\r\\n\\r\\n'\nfor i in 1 2 3; do echo \"data: event $i\"; echo; sleep 1; done\n";

/// A response the app frames itself with `Transfer-Encoding: chunked` (busybox `httpd` sends
/// CGI output that starts with a status line as it is), one chunk a second.
const CHUNKED_CGI: &str = "#!/bin/sh\nprintf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n'\nfor i in 1 2 3; do printf '8\\r\\nchunk %s\\n\\r\\n' \"$i\"; sleep 1; done\nprintf '0\\r\\n\\r\\n'\n";

/// Counts the request body it is given.
const COUNT_CGI: &str =
    "#!/bin/sh\nn=$(wc -c)\nprintf 'Content-Type: text/plain\\r\\n\\r\\nreceived %s\\n' \"$n\"\n";

/// The request headers the app was given (`HTTP_*`), one `NAME=value` a line.
const ENV_CGI: &str =
    "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nenv | grep '^HTTP_' | sort\n";

/// One connection: answers with the request head exactly as it came (the fields the proxy
/// sent), and with hop-by-hop fields of its own the client must not see.
const HEAD_SERVER: &str = r#"#!/bin/sh
cr=$(printf '\r')
head=
while IFS= read -r l; do
  l=${l%"$cr"}
  [ -z "$l" ] && break
  head="$head$l
"
done
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close, X-App-Hop\r\nX-App-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-App-Kept: 1\r\n\r\n%s' "${#head}" "$head"
"#;

fn connect(port: u16) -> TcpStream {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// A response as the client got it: status, headers (names lowercased), and the body in
/// the pieces it arrived in, each with the time since `t0`.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    pieces: Vec<(Duration, Vec<u8>)>,
    /// When the body ended (its last byte, its last chunk or EOF).
    ended: Duration,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn body(&self) -> String {
        let all: Vec<u8> = self.pieces.iter().flat_map(|(_, p)| p.clone()).collect();
        String::from_utf8_lossy(&all).into_owned()
    }
}

/// Status line and headers; None at EOF before a status line.
fn read_head(r: &mut impl BufRead) -> Option<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = vec![];
    for _ in 0..200 {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            return Some((status, headers));
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    None
}

/// One response, its body framed by `Content-Length`, chunks, or the end of the connection.
fn read_response(r: &mut impl BufRead, t0: Instant) -> Response {
    let (status, headers) = read_head(r).expect("a status line and headers");
    let mut resp = Response {
        status,
        headers,
        pieces: vec![],
        ended: Duration::ZERO,
    };
    if resp.status == 101 {
        resp.ended = t0.elapsed();
        return resp;
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length: Option<usize> = resp.header("content-length").map(|v| v.parse().unwrap());
    if chunked {
        for _ in 0..100_000 {
            let mut size = String::new();
            r.read_line(&mut size).expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
            let mut data = vec![0; size + 2];
            r.read_exact(&mut data).expect("chunk");
            data.truncate(size);
            if size == 0 {
                break;
            }
            resp.pieces.push((t0.elapsed(), data));
        }
    } else if let Some(n) = length {
        let mut data = vec![0; n];
        r.read_exact(&mut data).expect("body");
        resp.pieces.push((t0.elapsed(), data));
    } else {
        let mut buf = [0u8; 65536];
        for _ in 0..100_000 {
            let n = r.read(&mut buf).expect("body");
            if n == 0 {
                break;
            }
            resp.pieces.push((t0.elapsed(), buf[..n].to_vec()));
        }
    }
    resp.ended = t0.elapsed();
    resp
}

/// One request on a new connection (HTTP/1.1, closed after), through the proxy.
fn request(port: u16, head: &str) -> Response {
    let s = connect(port);
    (&s).write_all(head.as_bytes()).unwrap();
    read_response(&mut BufReader::new(s), Instant::now())
}

/// The release a new request reaches, if it is answered.
fn version(port: u16) -> Option<String> {
    let addr = format!("127.0.0.1:{port}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET /version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.starts_with("HTTP/1.1 200").then(|| {
        text.split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

/// Poll (every 50 ms, at most `limit`) until `f` holds; when it did.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Read until the other side closes; how long after `since` that was, and what came.
fn until_closed(s: &mut impl Read, since: Instant) -> (Duration, String) {
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    for _ in 0..10_000 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "still open {:?} after: {}",
                    since.elapsed(),
                    String::from_utf8_lossy(&got)
                )
            }
            Err(_) => break,
        }
    }
    (since.elapsed(), String::from_utf8_lossy(&got).into_owned())
}

/// Send a line on an upgraded or TCP connection and read the line that comes back.
fn echo(r: &mut BufReader<TcpStream>, line: &str) -> String {
    r.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let mut back = String::new();
    r.read_line(&mut back).expect("an echoed line");
    back.trim_end().to_string()
}

/// A client on the host requesting `/version` (HTTP) through the proxy every 50 ms.
struct Prober {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(usize, usize)>,
}

impl Prober {
    fn start(port: u16, probe: fn(u16) -> bool) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            for _ in 0..3000 {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if probe(port) {
                    ok += 1;
                } else {
                    failed += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (ok, failed)
        });
        Prober { stop, handle }
    }

    /// (answered, failed)
    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("prober")
    }
}

fn http_probe(port: u16) -> bool {
    version(port).is_some()
}

/// One TCP connection to the echo service: the line it answers `probe` with.
fn tcp_line(port: u16) -> Option<String> {
    let addr = format!("127.0.0.1:{port}").parse().ok()?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(s);
    r.get_mut().write_all(b"probe\n").ok()?;
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let line = line.trim_end().to_string();
    line.ends_with(": probe").then_some(line)
}

fn tcp_probe(port: u16) -> bool {
    tcp_line(port).is_some()
}

fn inspect(id: &str, format: &str) -> String {
    docker_out(&["inspect", "--format", format, id])
        .trim()
        .to_string()
}

fn container_ip(id: &str) -> String {
    inspect(
        id,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    )
}

/// `ok proto=<n> …` with a protocol version of 1 or later (the build's own).
fn is_versioned_status(reply: &str) -> bool {
    reply
        .strip_prefix("ok proto=")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|v| v >= 1)
}

/// The proxy's upstream, asked through `docker exec` (its loopback needs no token).
fn proxy_upstream(proxy: &str) -> String {
    let status = docker_out(&["exec", proxy, "/dockmaster", "proxy-ctl", "status"]);
    assert!(is_versioned_status(&status), "{status}");
    status
        .split_whitespace()
        .find_map(|w| w.strip_prefix("upstream="))
        .unwrap_or_else(|| panic!("no upstream in {status}"))
        .to_string()
}

/// Deploy v2 in the background; returns when a new request reaches it (the switch).
fn deploy_v2_until(fx: &Fixture, reached: impl Fn() -> bool) -> (std::process::Child, Instant) {
    fx.push_version(Behaviour::Good);
    let mut deploy = fx.dm_cmd(&["deploy"]).spawn();
    let Some(at) = wait_until(Duration::from_secs(180), reached) else {
        let _ = deploy.kill();
        let out = deploy.wait_with_output().unwrap();
        panic!("v2 never served\n{}", String::from_utf8_lossy(&out.stderr));
    };
    (deploy, at)
}

fn finished(deploy: std::process::Child) -> String {
    let out = deploy.wait_with_output().expect("deploy");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "deploy failed:\n{stderr}");
    stderr
}

#[test]
fn an_upgraded_connection_echoes_both_ways_stays_on_its_release_and_closes_when_the_drain_ends() {
    let fx = fixture(
        "upgrade",
        App {
            serve: Some(nc_serving("server.sh")),
            files: vec![("server.sh", UPGRADE_SERVER.into())],
        },
    );
    fx.configure("drain_timeout = \"3s\"\n");
    fx.dm(&["deploy"]).ok().stderr_has("start-first");
    let port = fx.host_port();

    let s = connect(port);
    (&s).write_all(
        b"GET /stream HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .unwrap();
    let mut conn = BufReader::new(s);
    let head = read_response(&mut conn, Instant::now());
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("upgrade"), Some("echo"), "{head:?}");
    assert_eq!(echo(&mut conn, "one"), "v1: one");
    assert_eq!(echo(&mut conn, "two"), "v1: two");

    let (deploy, switched) = deploy_v2_until(&fx, || version(port).as_deref() == Some("v2"));
    // Traffic has moved; this connection has not.
    assert_eq!(echo(&mut conn, "after the switch"), "v1: after the switch");
    let (closed_after, rest) = until_closed(&mut conn, switched);
    eprintln!("upgraded connection closed {closed_after:?} after the switch was seen");
    assert!(rest.is_empty(), "nothing more came: {rest:?}");
    assert!(
        closed_after >= Duration::from_secs(2) && closed_after <= Duration::from_secs(7),
        "closed at the end of the 3 s drain, not at once nor much later: {closed_after:?}"
    );
    let stderr = finished(deploy);
    assert!(
        stderr.contains(", 1 request(s) still running at the drain timeout"),
        "{stderr}"
    );
    assert_eq!(version(port).as_deref(), Some("v2"));
    assert_eq!(fx.served_version(), "v2");
}

#[test]
fn a_websocket_handshake_passes_through_with_its_upgrade_headers() {
    let fx = fixture(
        "websocket",
        App {
            serve: Some(nc_serving("server.sh")),
            files: vec![("server.sh", UPGRADE_SERVER.into())],
        },
    );
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let s = connect(port);
    (&s).write_all(
        b"GET /chat HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut conn = BufReader::new(s);
    let head = read_response(&mut conn, Instant::now());
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("upgrade"), Some("websocket"), "{head:?}");
    assert!(
        head.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{head:?}"
    );
    assert_eq!(
        head.header("x-seen-key"),
        Some("dGhlIHNhbXBsZSBub25jZQ=="),
        "the app got the key: {head:?}"
    );
    assert_eq!(echo(&mut conn, "frame"), "v1: frame");
}

#[test]
fn server_sent_events_and_chunked_responses_arrive_as_the_app_writes_them() {
    let fx = fixture(
        "stream",
        App {
            serve: None,
            files: vec![
                ("cgi-bin/sse", SSE_CGI.into()),
                ("cgi-bin/chunked", CHUNKED_CGI.into()),
            ],
        },
    );
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();

    let sse = request(
        port,
        "GET /cgi-bin/sse HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
    );
    eprintln!(
        "SSE pieces at {:?}, ended {:?}",
        sse.pieces.iter().map(|p| p.0).collect::<Vec<_>>(),
        sse.ended
    );
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    let (first_at, first) = &sse.pieces[0];
    let first = String::from_utf8_lossy(first);
    assert!(first.contains("data: event 1"), "{first:?}");
    assert!(!first.contains("event 2"), "not held back: {first:?}");
    assert!(
        *first_at < Duration::from_secs(1),
        "first event at {first_at:?}"
    );
    assert!(
        sse.ended >= Duration::from_secs(2),
        "ended at {:?}",
        sse.ended
    );
    assert_eq!(
        sse.body(),
        "data: event 1\n\ndata: event 2\n\ndata: event 3\n\n"
    );

    let chunked = request(
        port,
        "GET /cgi-bin/chunked HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    eprintln!(
        "chunks at {:?}, ended {:?}",
        chunked.pieces.iter().map(|p| p.0).collect::<Vec<_>>(),
        chunked.ended
    );
    assert_eq!(chunked.status, 200);
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert_eq!(chunked.body(), "chunk 1\nchunk 2\nchunk 3\n");
    assert_eq!(chunked.pieces.len(), 3, "one chunk each: {chunked:?}");
    assert!(chunked.pieces[0].0 < Duration::from_secs(1));
    assert!(chunked.ended >= Duration::from_secs(2));
}

#[test]
fn a_one_gib_upload_streams_through_the_proxy_in_under_32_mib() {
    const GIB: usize = 1 << 30;
    let fx = fixture(
        "upload",
        App {
            serve: None,
            files: vec![("cgi-bin/count", COUNT_CGI.into())],
        },
    );
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let proxy = fx.proxy().expect("the proxy");
    let pid = inspect(&proxy.id, "{{.State.Pid}}");

    let started = Instant::now();
    let mut s = connect(port);
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST /cgi-bin/count HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {GIB}\r\n\r\n"
    )
    .unwrap();
    let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    for _ in 0..GIB / block.len() {
        s.write_all(&block).expect("the proxy takes the body");
    }
    let resp = read_response(&mut BufReader::new(s), Instant::now());
    let took = started.elapsed();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    eprintln!(
        "1 GiB through the proxy in {took:?} ({:.0} MB/s); proxy peak RSS {hwm_kib} KiB",
        GIB as f64 / 1e6 / took.as_secs_f64()
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body().trim(), format!("received {GIB}"));
    assert!(
        hwm_kib < 32 * 1024,
        "the proxy's peak RSS {hwm_kib} KiB stays under 32 MiB"
    );
}

#[test]
fn one_client_connection_carries_several_requests() {
    let fx = fixture(
        "keepalive",
        App {
            serve: None,
            files: vec![("cgi-bin/env", ENV_CGI.into())],
        },
    );
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let mut conn = BufReader::new(connect(port));
    // Static files have a length; a CGI answer ends when busybox closes its side, which the
    // proxy must re-frame (chunked) to keep the client's connection.
    for path in ["/version", "/cgi-bin/env", "/version"] {
        write!(
            conn.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        .unwrap();
        let resp = read_response(&mut conn, Instant::now());
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
        assert!(
            !resp
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close")),
            "{path}: the proxy keeps the connection: {resp:?}"
        );
        if path == "/version" {
            assert_eq!(resp.body(), "v1\n");
        } else {
            assert!(resp.body().contains("HTTP_HOST=localhost"), "{resp:?}");
        }
    }
}

#[test]
fn forwarded_headers_are_set_and_hop_by_hop_headers_dropped() {
    let fx = fixture(
        "headers",
        App {
            serve: None,
            files: vec![("cgi-bin/env", ENV_CGI.into())],
        },
    );
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let resp = request(
        port,
        "GET /cgi-bin/env HTTP/1.1\r\nHost: example.test:8443\r\nConnection: keep-alive, X-Hop\r\n\
         X-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 203.0.113.7\r\nX-Kept: yes\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let env: BTreeMap<String, String> = resp
        .body()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    eprintln!("the app saw {env:#?}");
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("HTTP_HOST"), Some("example.test:8443"), "Host kept");
    assert_eq!(get("HTTP_X_FORWARDED_PROTO"), Some("http"));
    assert_eq!(get("HTTP_X_FORWARDED_HOST"), Some("example.test:8443"));
    assert_eq!(
        get("HTTP_X_KEPT"),
        Some("yes"),
        "an end-to-end header passes"
    );
    // The client's value, then the peer the proxy saw: the engine's port forwarder on the
    // compose network's gateway.
    let xff = get("HTTP_X_FORWARDED_FOR").unwrap_or_default();
    let (client, peer) = xff
        .split_once(", ")
        .unwrap_or_else(|| panic!("one address appended: {xff:?}"));
    assert_eq!(client, "203.0.113.7");
    assert!(peer.parse::<IpAddr>().is_ok(), "{xff:?}");
    let gateway = docker_out(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        &fx.network(),
    ]);
    assert_eq!(peer, gateway.trim(), "the peer is the network's gateway");
    assert_eq!(
        get("HTTP_X_HOP"),
        None,
        "a field `Connection` names is dropped"
    );
    assert_eq!(get("HTTP_KEEP_ALIVE"), None, "Keep-Alive is dropped");
    assert!(
        !get("HTTP_CONNECTION").is_some_and(|c| c.to_ascii_lowercase().contains("x-hop")),
        "the client's Connection is not forwarded: {env:?}"
    );
}

#[test]
fn a_client_that_stops_sending_its_headers_is_cut_off_while_others_are_served() {
    let fx = fixture("slowhead", App::default());
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let prober = Prober::start(port, http_probe);
    let mut slow = connect(port);
    let since = Instant::now();
    slow.write_all(b"GET /version HTTP/1.1\r\nHost: local")
        .unwrap();
    let (after, got) = until_closed(&mut slow, since);
    let (ok, failed) = prober.finish();
    eprintln!(
        "half a request cut off after {after:?} (it got {got:?}); meanwhile {ok} ok, {failed} failed"
    );
    assert!(
        after >= Duration::from_secs(9) && after <= Duration::from_secs(15),
        "closed at the 10 s header timeout: {after:?}"
    );
    assert!(
        !got.contains("200 OK"),
        "no answer to half a request: {got:?}"
    );
    assert!(ok > 50, "the others were served meanwhile ({ok})");
    assert_eq!(failed, 0);
}

#[test]
fn an_app_that_stopped_serving_gets_a_one_line_502_and_the_proxy_serves_on() {
    // The container stays up after its server is killed: connections to it are refused.
    let fx = fixture(
        "badgw",
        App {
            serve: Some(
                "trap 'kill $pid 2>/dev/null; exit 0' TERM\nhttpd -f -p 8080 -h /www & pid=$!\nwait $pid\nwhile :; do sleep 1 & wait $!; done\n"
                    .into(),
            ),
            files: vec![],
        },
    );
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let proxy = fx.proxy().expect("the proxy");
    let proxy_started = inspect(&proxy.id, "{{.State.StartedAt}}");
    let before = fx.snapshot();
    let live = before.live.clone().expect("live");
    assert_eq!(version(port).as_deref(), Some("v1"));

    let kill = Command::new("docker")
        .args(["exec", &live.id, "killall", "httpd"])
        .output()
        .unwrap();
    assert!(kill.status.success(), "{kill:?}");
    wait_until(Duration::from_secs(10), || version(port).is_none()).expect("the app stops");
    let resp = request(
        port,
        "GET /version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let body = resp.body();
    eprintln!("502 body: {body:?}");
    assert_eq!(resp.status, 502, "{resp:?}");
    assert_eq!(body.lines().count(), 1, "one line: {body:?}");
    assert!(body.ends_with('\n'));
    assert!(
        body.contains(&format!("upstream {} unreachable", live.name)),
        "names the upstream: {body:?}"
    );

    // The app serves again: so does the proxy, the same process all along.
    let restart = Command::new("docker")
        .args([
            "exec", "-d", &live.id, "httpd", "-f", "-p", "8080", "-h", "/www",
        ])
        .output()
        .unwrap();
    assert!(restart.status.success(), "{restart:?}");
    wait_until(Duration::from_secs(10), || {
        version(port).as_deref() == Some("v1")
    })
    .expect("served again through the same proxy");
    let now = fx.proxy().expect("the proxy runs");
    assert_eq!(now.id, proxy.id);
    assert_eq!(inspect(&proxy.id, "{{.RestartCount}}"), "0");
    assert_eq!(inspect(&proxy.id, "{{.State.StartedAt}}"), proxy_started);
    assert_eq!(fx.snapshot(), before, "nothing else changed");
}

/// The echo service: its health check speaks its own protocol, not HTTP.
fn tcp_fixture(name: &str) -> Fixture {
    fixture_with(
        name,
        App {
            serve: Some(nc_serving("echo.sh")),
            files: vec![("echo.sh", ECHO_SERVER.into())],
        },
        false,
        "    healthcheck:\n      test: [\"CMD\", \"sh\", \"-c\", \"echo ping | nc -w 2 127.0.0.1 8080 | grep -q ': ping'\"]\n      interval: 30s\n",
    )
}

#[test]
fn tcp_mode_keeps_an_open_connection_on_its_release_until_the_drain_ends_and_loses_no_connection() {
    let fx = tcp_fixture("tcpmode");
    fx.configure("proxy = \"tcp\"\ndrain_timeout = \"3s\"\n");
    let out = fx.dm(&["deploy"]);
    out.ok().stderr_has("start-first");
    assert!(!out.stderr.contains("set proxy"), "{}", out.stderr);
    let proxy = fx.proxy().expect("the proxy");
    assert_eq!(
        inspect(
            &proxy.id,
            "{{index .Config.Labels \"dev.dockmaster.proxy-mode\"}}"
        ),
        "tcp"
    );
    let port = fx.host_port();
    assert_eq!(tcp_line(port).as_deref(), Some("v1: probe"));

    let mut held = BufReader::new(connect(port));
    assert_eq!(echo(&mut held, "hello"), "v1: hello");
    let prober = Prober::start(port, tcp_probe);
    std::thread::sleep(Duration::from_millis(300));
    let (deploy, switched) =
        deploy_v2_until(&fx, || tcp_line(port).as_deref() == Some("v2: probe"));
    assert_eq!(echo(&mut held, "still here"), "v1: still here");
    let (closed_after, rest) = until_closed(&mut held, switched);
    eprintln!("held TCP connection closed {closed_after:?} after the switch was seen");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        closed_after >= Duration::from_secs(2) && closed_after <= Duration::from_secs(7),
        "closed at the end of the 3 s drain: {closed_after:?}"
    );
    let stderr = finished(deploy);
    let (ok, failed) = prober.finish();
    eprintln!("probing connections: {ok} ok, {failed} failed");
    assert!(
        stderr.contains("still running at the drain timeout"),
        "{stderr}"
    );
    assert!(ok > 20, "the prober ran ({ok})");
    assert_eq!(failed, 0, "no connection failed ({ok} ok)");
    assert_eq!(tcp_line(port).as_deref(), Some("v2: probe"));
    assert_eq!(fx.proxy().expect("the proxy").id, proxy.id);
}

#[test]
fn an_http_proxy_before_a_health_check_that_is_not_http_suggests_tcp_mode() {
    let fx = tcp_fixture("tcphint");
    fx.dm(&["deploy"])
        .ok()
        .stderr_has("is not an HTTP request")
        .stderr_has("set proxy = \"tcp\"");
}

#[test]
fn the_control_port_refuses_bad_names_and_tokenless_clients_and_changes_nothing() {
    let fx = fixture("ctl", App::default());
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let proxy = fx.proxy().expect("the proxy");
    let before = fx.snapshot();
    let upstream = before.live.clone().expect("live").name;
    assert_eq!(proxy_upstream(&proxy.id), upstream);

    // Through `docker exec` (the container's loopback): a name that is no name.
    let bad = Command::new("docker")
        .args([
            "exec",
            &proxy.id,
            "/dockmaster",
            "proxy-ctl",
            "switch",
            "bad;name",
            "100",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "refused: {said}");
    assert!(
        said.starts_with("err ") && said.contains("bad;name"),
        "{said}"
    );
    assert_eq!(proxy_upstream(&proxy.id), upstream, "upstream unchanged");
    assert_eq!(version(port).as_deref(), Some("v1"));

    // From the host, over the network, without the token.
    let ip = container_ip(&proxy.id);
    let control = |line: &str| -> String {
        let addr = format!("{ip}:9901").parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("control");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).unwrap();
        reply.trim_end().to_string()
    };
    for line in [
        "status".to_string(),
        format!("switch {upstream} 100"),
        "auth wrongtoken status".to_string(),
        "auth wrongtoken switch x 100".to_string(),
    ] {
        let reply = control(&line);
        assert!(reply.starts_with("err "), "{line:?} -> {reply:?}");
    }
    assert_eq!(proxy_upstream(&proxy.id), upstream, "upstream unchanged");
    assert_eq!(version(port).as_deref(), Some("v1"));

    // With the token from the proxy's label.
    let token = inspect(
        &proxy.id,
        "{{index .Config.Labels \"dev.dockmaster.control-token\"}}",
    );
    assert_eq!(token.len(), 32, "{token}");
    let reply = control(&format!("auth {token} status"));
    assert!(
        is_versioned_status(&reply) && reply.contains(&format!("upstream={upstream} ")),
        "{reply}"
    );
    assert_eq!(fx.snapshot(), before, "nothing changed");
    assert_eq!(fx.proxy().expect("the proxy").id, proxy.id);
}

/// The `Traffic moved … (old release drained in X…)` time of a deploy's output.
fn drained(stderr: &str) -> Duration {
    let text = stderr
        .split("drained in ")
        .nth(1)
        .and_then(|r| r.split([')', ',']).next())
        .unwrap_or_else(|| panic!("no drain time in {stderr}"));
    let secs = if let Some(ms) = text.strip_suffix("ms") {
        ms.parse::<f64>().map(|m| m / 1000.0)
    } else {
        text.trim_end_matches('s').parse::<f64>()
    };
    Duration::from_secs_f64(secs.unwrap_or_else(|_| panic!("drain time {text:?} in {stderr}")))
}

#[test]
fn an_upgraded_connection_closed_by_its_client_ends_the_drain_early() {
    let fx = fixture(
        "upgradeclose",
        App {
            serve: Some(nc_serving("server.sh")),
            files: vec![("server.sh", UPGRADE_SERVER.into())],
        },
    );
    fx.configure("drain_timeout = \"30s\"\n");
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let s = connect(port);
    (&s).write_all(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .unwrap();
    let mut conn = BufReader::new(s);
    assert_eq!(read_response(&mut conn, Instant::now()).status, 101);
    assert_eq!(echo(&mut conn, "before"), "v1: before");
    let (deploy, _) = deploy_v2_until(&fx, || version(port).as_deref() == Some("v2"));
    assert_eq!(echo(&mut conn, "after"), "v1: after");
    std::thread::sleep(Duration::from_secs(1));
    drop(conn);
    let closed = Instant::now();
    let stderr = finished(deploy);
    let waited = closed.elapsed();
    let drain = drained(&stderr);
    eprintln!("the deploy ended {waited:?} after the client closed; drained in {drain:?}");
    assert!(!stderr.contains("still running"), "{stderr}");
    assert!(
        drain < Duration::from_secs(10),
        "the drain ended with the connection, not at 30 s: {stderr}"
    );
    assert_eq!(fx.served_version(), "v2");
}

#[test]
fn an_idle_keep_alive_connection_neither_holds_the_drain_nor_stays_on_the_old_release() {
    let fx = fixture("keepswitch", App::default());
    fx.configure("drain_timeout = \"30s\"\n");
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let conn = std::cell::RefCell::new(BufReader::new(connect(port)));
    let get_version = || {
        let mut conn = conn.borrow_mut();
        write!(
            conn.get_mut(),
            "GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        .unwrap();
        let resp = read_response(&mut *conn, Instant::now());
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.body().trim().to_string()
    };
    assert_eq!(get_version(), "v1");
    // The same connection asks again every poll (it is idle in between, and at the
    // switch): the proxy closes a connection idle for its header timeout (10 s), which a
    // deploy on a loaded machine can outlast, so the test never leaves it idle that long.
    let (deploy, _) = deploy_v2_until(&fx, || get_version() == "v2");
    let stderr = finished(deploy);
    let drain = drained(&stderr);
    eprintln!("drained in {drain:?} with a keep-alive connection open, idle between requests");
    assert!(!stderr.contains("still running"), "{stderr}");
    assert!(drain < Duration::from_secs(10), "{stderr}");
}

#[test]
fn an_upload_that_expects_100_continue_gets_it_and_is_streamed() {
    const SIZE: usize = 8 << 20;
    let fx = fixture(
        "continue",
        App {
            serve: None,
            files: vec![("cgi-bin/count", COUNT_CGI.into())],
        },
    );
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let s = connect(port);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn = BufReader::new(s);
    write!(
        conn.get_mut(),
        "POST /cgi-bin/count HTTP/1.1\r\nHost: localhost\r\nContent-Length: {SIZE}\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    // As curl does: wait (here up to 5 s) for the interim answer before sending the body.
    let asked = Instant::now();
    let interim = read_head(&mut conn);
    let waited = asked.elapsed();
    eprintln!("interim answer {interim:?} after {waited:?}");
    assert_eq!(interim.map(|(s, _)| s), Some(100), "100 Continue came");
    let block = vec![b'x'; 1 << 20];
    for _ in 0..SIZE / block.len() {
        conn.get_mut().write_all(&block).unwrap();
    }
    conn.get_mut()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let resp = read_response(&mut conn, Instant::now());
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body().trim(), format!("received {SIZE}"));
}

#[test]
fn x_forwarded_for_sent_on_two_lines_is_kept_whole() {
    let fx = fixture(
        "xfftwo",
        App {
            serve: Some(nc_serving("head.sh")),
            files: vec![("head.sh", HEAD_SERVER.into())],
        },
    );
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let resp = request(
        port,
        "GET /who HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.7\r\n\
         X-Forwarded-For: 198.51.100.9\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let head = resp.body();
    eprintln!("the app was sent:\n{head}");
    let xff: Vec<&str> = head
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("x-forwarded-for")
                .then_some(v.trim())
        })
        .collect();
    // RFC 9110 §5.3: two field lines mean the same as one with the values comma-joined.
    let joined = xff.join(", ");
    assert!(
        joined.starts_with("203.0.113.7, 198.51.100.9, "),
        "both addresses the client sent, then the peer: {xff:?}"
    );
    assert_eq!(joined.split(", ").count(), 3, "{xff:?}");
}

#[test]
fn hop_by_hop_fields_of_the_app_s_answer_are_dropped() {
    let fx = fixture(
        "apphop",
        App {
            serve: Some(nc_serving("head.sh")),
            files: vec![("head.sh", HEAD_SERVER.into())],
        },
    );
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let mut conn = BufReader::new(connect(port));
    for _ in 0..2 {
        write!(
            conn.get_mut(),
            "GET /who HTTP/1.1\r\nHost: localhost\r\nTE: trailers\r\n\r\n"
        )
        .unwrap();
        let resp = read_response(&mut conn, Instant::now());
        eprintln!("the client got {:?}", resp.headers);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-app-kept"), Some("1"));
        assert_eq!(
            resp.header("x-app-hop"),
            None,
            "named in the app's Connection"
        );
        assert_eq!(resp.header("keep-alive"), None);
        assert_ne!(
            resp.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("close, x-app-hop"),
            "the app's Connection is its own"
        );
        // The app closes after each answer; the client's connection stays.
        let head = resp.body().to_ascii_lowercase();
        assert!(!head.contains("\nte:"), "TE is hop-by-hop: {head}");
        assert!(head.contains("x-forwarded-for: "), "{head}");
    }
}

#[test]
fn concurrent_upgraded_connections_each_keep_their_own_bytes() {
    let fx = fixture(
        "upgrademany",
        App {
            serve: Some(nc_serving("server.sh")),
            files: vec![("server.sh", UPGRADE_SERVER.into())],
        },
    );
    fx.dm(&["deploy"]).ok();
    let port = fx.host_port();
    let mut conns: Vec<BufReader<TcpStream>> = (0..8)
        .map(|i| {
            let s = connect(port);
            write!(
                &s,
                "GET /{i} HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
            )
            .unwrap();
            let mut conn = BufReader::new(s);
            assert_eq!(read_response(&mut conn, Instant::now()).status, 101);
            conn
        })
        .collect();
    // Interleaved: every connection gets its own lines back, in order, and nobody else's.
    for round in 0..3 {
        for (i, conn) in conns.iter_mut().enumerate() {
            assert_eq!(
                echo(conn, &format!("conn {i} round {round}")),
                format!("v1: conn {i} round {round}")
            );
        }
    }
    let proxy = fx.proxy().expect("the proxy");
    let status = docker_out(&["exec", &proxy.id, "/dockmaster", "proxy-ctl", "status"]);
    assert!(
        status.contains("inflight=8"),
        "each open upgraded connection counts: {status}"
    );
    drop(conns);
    wait_until(Duration::from_secs(10), || {
        docker_out(&["exec", &proxy.id, "/dockmaster", "proxy-ctl", "status"])
            .contains("inflight=0")
    })
    .expect("closed connections stop counting");
}
