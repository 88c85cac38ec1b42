//! `dockmaster proxy`: the proxy that holds the service's name, container name and published
//! ports, so that a release switch is one atomic pointer swap instead of a container
//! recreate (see ZERO-DOWNTIME-NOTES: Docker's DNS hands out a container's address before it
//! is ready, so nothing based on DNS reaches zero failed requests).
//!
//! It runs inside the service's own container (same binary, `FROM scratch` image built
//! locally by `engine::proxy_image`). Every new request (HTTP) or connection (TCP) goes to the
//! current upstream, an app container addressed by its name on the compose network.
//!
//! - **HTTP** (`--mode http`, the default): HTTP/1.1 with keep-alive to clients; each client
//!   connection keeps one connection to the upstream and reuses it while the app allows it
//!   (and while the upstream is the current one). Bodies stream both ways, never buffered.
//!   Hop-by-hop headers are dropped (RFC 9110 §7.6.1, including those `Connection` names);
//!   `Host` is kept; `X-Forwarded-For`, `-Proto` and `-Host` are set or appended. `Upgrade`
//!   requests (WebSocket or any other) are forwarded, and after the upstream's `101` the
//!   bytes flow both ways for as long as the connection lives.
//! - **TCP** (`--mode tcp`): every connection is spliced to the upstream, whatever it speaks.
//!
//! `switch` (over the control port, `protocol.rs`) first checks that the new upstream
//! accepts connections, swaps the pointer so every new request goes there, then waits until
//! the requests and connections still open on the old upstream have finished, up to the
//! drain timeout — then closes the long-lived ones that remain (upgraded or TCP connections)
//! and answers; dockmaster then stops the old container.

use std::convert::Infallible;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub mod metrics;
pub mod protocol;

use protocol::{Reply, Request as Control};

/// Where the proxy keeps its upstream, so a restart (host reboot) resumes where it was.
pub const STATE_FILE: &str = "/var/lib/dockmaster-proxy/upstream";
/// The control port (the container's loopback; with a token, its network addresses too).
pub const CONTROL_PORT: u16 = 9901;
/// How long a client may take to send a request's headers before it is cut off.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the proxy forwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// HTTP/1.1 per request, with upgrades (WebSocket) and streaming.
    #[default]
    Http,
    /// Raw TCP connections, whatever the protocol.
    Tcp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        }
    }
}

#[derive(Debug, clap::Args, Clone)]
pub struct ProxyArgs {
    /// Container port to serve (and forward to the same port upstream); repeatable.
    #[arg(long = "listen", required = true)]
    pub listen: Vec<u16>,
    /// The app container to send traffic to at first start (name or address).
    #[arg(long)]
    pub upstream: String,
    #[arg(long, default_value_t = CONTROL_PORT)]
    pub control: u16,
    #[arg(long, default_value = STATE_FILE)]
    pub state: PathBuf,
    /// With a token, the control port also answers on the container's network addresses,
    /// to clients that send the token (dockmaster on the engine's host, without a
    /// `docker exec`); the container's own loopback needs none. Without one, only loopback.
    #[arg(long, env = "DOCKMASTER_PROXY_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
    /// HTTP (with upgrades) or raw TCP.
    #[arg(long, value_enum, default_value = "http")]
    pub mode: Mode,
    /// The address to serve on (benchmarks run the proxy on the host's loopback).
    #[arg(long, default_value = "0.0.0.0", hide = true)]
    pub bind: IpAddr,
    /// Send to this upstream port instead of the listening one (one `--listen` only; for
    /// benchmarks, where proxy and upstream share the host).
    #[arg(long, hide = true)]
    pub upstream_port: Option<u16>,
    /// Do not count traffic (for the benchmark's "counting off" line only).
    #[arg(long, hide = true)]
    pub no_count: bool,
}

/// One upstream: the requests and connections running on it, and a way to close the
/// long-lived ones when its drain time is over.
struct Upstream {
    host: String,
    /// Its traffic counters (kept across switches: a standby that serves again goes on).
    counters: Arc<metrics::Counters>,
    inflight: AtomicUsize,
    idle: tokio::sync::Notify,
    closing: AtomicBool,
    close: tokio::sync::Notify,
}

impl Upstream {
    fn new(host: String, counters: Arc<metrics::Counters>) -> Arc<Upstream> {
        Arc::new(Upstream {
            host,
            counters,
            inflight: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
            closing: AtomicBool::new(false),
            close: tokio::sync::Notify::new(),
        })
    }

    /// Resolves once the drain of this upstream is over: long-lived connections end then.
    async fn closed(&self) {
        loop {
            let notified = self.close.notified();
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    fn shut(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.close.notify_waiters();
    }
}

/// Counts a request (or connection) as running on its upstream until it is dropped.
struct InFlight(Arc<Upstream>);

impl InFlight {
    fn new(u: Arc<Upstream>) -> InFlight {
        u.inflight.fetch_add(1, Ordering::SeqCst);
        InFlight(u)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted until it has been sent.
struct Counted {
    inner: Incoming,
    _guard: InFlight,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

struct Proxy {
    current: RwLock<Arc<Upstream>>,
    /// Counters per upstream host, the newest last; a few are kept (the live release, the
    /// standby and the one before), so `status` can show the standby's while it served.
    counted: Mutex<Vec<(String, Arc<metrics::Counters>)>>,
    state: PathBuf,
    first_port: u16,
    upstream_port: Option<u16>,
    /// Count traffic per upstream (off only in the benchmark's comparison).
    count: bool,
}

type Out = Response<BoxBody<Bytes, hyper::Error>>;

/// A client connection's connection to the upstream, kept between its requests.
type Pinned = Arc<Mutex<Option<(Arc<Upstream>, SendRequest<Incoming>)>>>;

/// RFC 9110 §7.6.1: connection-specific fields a proxy must not forward (plus the
/// pre-standard `Proxy-Connection` and `Keep-Alive`). As names, not strings: a string is
/// parsed into a name on every lookup.
const HOP_BY_HOP: [HeaderName; 9] = [
    hyper::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    hyper::header::PROXY_AUTHENTICATE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::TE,
    hyper::header::TRAILER,
    hyper::header::TRANSFER_ENCODING,
    hyper::header::UPGRADE,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

impl Proxy {
    fn upstream(&self) -> Arc<Upstream> {
        // A poisoned lock means a panic while swapping an Arc: the Arc itself is intact.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The counters of `host`, made on first use.
    fn counters(&self, host: &str) -> Arc<metrics::Counters> {
        const KEPT: usize = 4;
        let mut counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = counted.iter().position(|(h, _)| h == host) {
            let entry = counted.remove(i);
            let c = entry.1.clone();
            counted.push(entry);
            return c;
        }
        let c = Arc::new(metrics::Counters::new());
        counted.push((host.to_string(), c.clone()));
        if counted.len() > KEPT {
            counted.remove(0);
        }
        c
    }

    fn upstream_port(&self, port: u16) -> u16 {
        self.upstream_port.unwrap_or(port)
    }

    /// The client connection's upstream connection, if it is to the current upstream and
    /// ready for another request; else a new one.
    async fn sender(
        &self,
        pinned: &Pinned,
        upstream: &Arc<Upstream>,
        port: u16,
    ) -> std::io::Result<SendRequest<Incoming>> {
        let cached = pinned.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((u, mut sender)) = cached
            && Arc::ptr_eq(&u, upstream)
            && sender.ready().await.is_ok()
        {
            return Ok(sender);
        }
        let stream = connect(&upstream.host, self.upstream_port(port)).await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// `forwarded_for` is the client's address as a header value (made once per
    /// connection).
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        port: u16,
        forwarded_for: HeaderValue,
        pinned: Pinned,
    ) -> Out {
        let started = Instant::now();
        let upstream = self.upstream();
        let guard = InFlight::new(upstream.clone());
        let upgrade = wants_upgrade(req.headers());
        let client_side = upgrade.then(|| hyper::upgrade::on(&mut req));
        let host = req.headers().get(hyper::header::HOST).cloned();
        // The upstream gets the origin form, `Host` kept as the client sent it. A target
        // already in origin form (nearly all) is kept as it is.
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string();
            match path.parse() {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => return plain(StatusCode::BAD_REQUEST, "bad request target"),
            }
        }
        if req.version() != hyper::Version::HTTP_11 {
            *req.version_mut() = hyper::Version::HTTP_11;
        }
        let headers = req.headers_mut();
        let upgrade_to = if upgrade {
            headers.get(hyper::header::UPGRADE).cloned()
        } else {
            None
        };
        strip_hop_by_hop(headers);
        if let (true, Some(proto)) = (upgrade, upgrade_to) {
            headers.insert(
                hyper::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            headers.insert(hyper::header::UPGRADE, proto);
        }
        if host.is_none()
            && let Ok(h) = HeaderValue::from_str(&upstream.host)
        {
            headers.insert(hyper::header::HOST, h);
        }
        append(headers, X_FORWARDED_FOR, forwarded_for);
        append(headers, X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(h) = host.filter(|h| h.to_str().is_ok()) {
            append(headers, X_FORWARDED_HOST, h);
        }

        let mut sender = match self.sender(&pinned, &upstream, port).await {
            Ok(s) => s,
            Err(e) => {
                if self.count {
                    upstream.counters.conn_error();
                }
                return bad_gateway(&upstream.host, &e);
            }
        };
        let mut resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                if self.count {
                    upstream.counters.conn_error();
                }
                return bad_gateway(&upstream.host, &e);
            }
        };
        if self.count {
            upstream
                .counters
                .response(resp.status().as_u16(), started.elapsed());
        }
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_side) = client_side
        {
            // Both sides become raw byte streams; the connection counts as running on this
            // upstream until it closes or the upstream's drain time is over. The upstream
            // connection is the upgraded one now: it is not kept for another request.
            let server_side = hyper::upgrade::on(&mut resp);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let (Ok(client), Ok(server)) = tokio::join!(client_side, server_side) else {
                    return;
                };
                let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = upstream.closed() => {}
                }
            });
            return resp.map(|b| b.boxed());
        }
        *pinned.lock().unwrap_or_else(|e| e.into_inner()) = Some((upstream, sender));
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = Counted {
            inner: body,
            _guard: guard,
        };
        Response::from_parts(parts, body.boxed())
    }

    /// A raw TCP connection, spliced to the current upstream.
    async fn forward_tcp(&self, mut client: TcpStream, port: u16) {
        let upstream = self.upstream();
        let _guard = InFlight::new(upstream.clone());
        let started = Instant::now();
        let Ok(mut server) = connect(&upstream.host, self.upstream_port(port)).await else {
            upstream.counters.conn_error();
            return;
        };
        // A TCP connection counts as a request answered when it is established.
        upstream.counters.response(200, started.elapsed());
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            _ = upstream.closed() => {}
        }
    }

    /// Swap to `host` once it accepts connections; then wait for the old one to drain, and
    /// close what is still open on it when the drain time is over.
    async fn switch(&self, host: &str, drain: Duration) -> Reply {
        let port = self.upstream_port(self.first_port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match connect(host, port).await {
                Ok(_) => break,
                Err(e) => {
                    if Instant::now() >= deadline {
                        return Reply::Refused(format!(
                            "new upstream {host}:{port} does not accept connections: {e}"
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let new = Upstream::new(host.to_string(), self.counters(host));
        let old = {
            let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *cur, new)
        };
        save_state(&self.state, host);
        let started = Instant::now();
        let until = started + drain;
        loop {
            let idle = old.idle.notified();
            if old.inflight.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(until.into(), idle).await.is_err() {
                break;
            }
        }
        let still_running = old.inflight.load(Ordering::SeqCst) as u64;
        old.shut();
        Reply::Switched {
            from: old.host.clone(),
            drained: started.elapsed(),
            still_running,
        }
    }

    async fn answer(&self, request: Control) -> Reply {
        match request {
            Control::Switch { upstream, drain } => self.switch(&upstream, drain).await,
            Control::Status => {
                let u = self.upstream();
                Reply::Status {
                    proto: protocol::VERSION,
                    upstream: u.host.clone(),
                    inflight: u.inflight.load(Ordering::SeqCst) as u64,
                }
            }
            Control::Health => Reply::Healthy,
            Control::Metrics { window } => {
                let counted = self
                    .counted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                Reply::Metrics(
                    counted
                        .into_iter()
                        .rev()
                        .map(|(upstream, c)| protocol::UpstreamMetrics {
                            upstream,
                            counters: c.snapshot(window),
                        })
                        .collect(),
                )
            }
        }
    }
}

async fn connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Does the request ask to switch protocols (`Connection: upgrade` and `Upgrade: …`)?
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(hyper::header::UPGRADE)
        && headers
            .get_all(hyper::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Drop the hop-by-hop fields, and every field the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none (and then no `Connection` naming others): one pass over the
    // names instead of nine lookups.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in named {
        headers.remove(h);
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

/// Set `name`, or append `, value` to what earlier proxies put there — on one line or
/// several: every line counts, in order (`value` is visible ASCII: an address, a scheme,
/// or a `Host` that reads as text).
fn append(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    let mut earlier = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .peekable();
    let joined = if earlier.peek().is_none() {
        value
    } else {
        let mut all: Vec<&str> = earlier.collect();
        all.push(value.to_str().unwrap_or_default());
        match HeaderValue::from_str(&all.join(", ")) {
            Ok(v) => v,
            Err(_) => return,
        }
    };
    headers.insert(name, joined);
}

fn bad_gateway(host: &str, e: &dyn std::fmt::Display) -> Out {
    // One line: the client (and whoever reads its logs) gets the reason, not a dump.
    let why = e.to_string().replace(['\n', '\r'], " ");
    plain(
        StatusCode::BAD_GATEWAY,
        &format!("dockmaster proxy: upstream {host} unreachable: {why}\n"),
    )
}

fn plain(status: StatusCode, text: &str) -> Out {
    let body = http_body_util::Full::new(Bytes::from(text.to_string()))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn save_state(path: &PathBuf, host: &str) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, host).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Keep a timer due within `HEADER_TIMEOUT / 2` at all times. Every request arms a header
/// timer (hyper's `header_read_timeout`, `HEADER_TIMEOUT` ahead); tokio wakes its I/O driver
/// (an eventfd write, and a parked worker woken) whenever a new timer is due before every
/// other one, i.e. on every request when no other timer is pending. With this one pending,
/// header timers never are the earliest: no wake-up, at the price of one every 5 s.
async fn keep_a_timer_armed() {
    let mut tick = tokio::time::interval(HEADER_TIMEOUT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Accept connections forever; an accept error (out of file descriptors) pauses briefly
/// instead of spinning.
async fn accept_loop(listener: TcpListener, proxy: Arc<Proxy>, port: u16, mode: Mode) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("dockmaster proxy: accept on port {port}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            match mode {
                Mode::Tcp => proxy.forward_tcp(stream, port).await,
                Mode::Http => {
                    let pinned: Pinned = Arc::new(Mutex::new(None));
                    // An address always makes a valid header value.
                    let forwarded_for = HeaderValue::from_str(&peer.ip().to_string())
                        .unwrap_or_else(|_| HeaderValue::from_static(""));
                    let service = hyper::service::service_fn(move |req| {
                        let proxy = proxy.clone();
                        let pinned = pinned.clone();
                        let forwarded_for = forwarded_for.clone();
                        async move {
                            Ok::<_, Infallible>(
                                proxy.forward(req, port, forwarded_for, pinned).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                }
            }
        });
    }
}

/// Run the proxy until SIGTERM.
pub async fn serve(args: ProxyArgs) -> anyhow::Result<()> {
    let upstream = std::fs::read_to_string(&args.state)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| protocol::upstream_name(s).is_ok())
        .unwrap_or_else(|| args.upstream.clone());
    save_state(&args.state, &upstream);
    let first = Arc::new(metrics::Counters::new());
    let proxy = Arc::new(Proxy {
        current: RwLock::new(Upstream::new(upstream.clone(), first.clone())),
        counted: Mutex::new(vec![(upstream.clone(), first)]),
        state: args.state.clone(),
        first_port: args.listen[0],
        upstream_port: args.upstream_port,
        count: !args.no_count,
    });
    eprintln!(
        "dockmaster proxy: serving ports {:?} ({}), upstream {upstream}",
        args.listen,
        args.mode.as_str()
    );
    tokio::spawn(keep_a_timer_armed());
    for port in &args.listen {
        let listener = TcpListener::bind((args.bind, *port)).await?;
        tokio::spawn(accept_loop(listener, proxy.clone(), *port, args.mode));
    }
    let token = args.control_token.clone().filter(|t| !t.is_empty());
    let bind = if token.is_some() {
        "0.0.0.0"
    } else {
        "127.0.0.1"
    };
    let control = TcpListener::bind((bind, args.control)).await?;
    let control_proxy = proxy.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = control.accept().await else {
                continue;
            };
            let proxy = control_proxy.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                // One line, bounded in size and time: a client that sends more, or nothing,
                // gets refused, not buffered or waited for.
                let mut line = String::new();
                let mut reader = BufReader::new(r.take(protocol::MAX_LINE as u64 + 64));
                let read =
                    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
                let line = line.trim_end_matches(['\r', '\n']);
                let request = match (peer.ip().is_loopback(), &token) {
                    (true, _) | (false, None) => Ok(line),
                    (false, Some(t)) => protocol::authenticate(line, t),
                };
                let reply = match (read, request) {
                    (Err(_), _) => Reply::Refused("no control line within 5s".into()),
                    (Ok(Err(e)), _) => Reply::Refused(format!("unreadable control line: {e}")),
                    (Ok(Ok(_)), Err(e)) => Reply::Refused(e.to_string()),
                    (Ok(Ok(_)), Ok(line)) => match Control::parse(line) {
                        Ok(request) => proxy.answer(request).await,
                        Err(e) => Reply::Refused(e.to_string()),
                    },
                };
                let _ = w
                    .write_all(format!("{}\n", reply.render()).as_bytes())
                    .await;
            });
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Let requests that are running finish (compose's stop grace period bounds this).
    let u = proxy.upstream();
    let until = Instant::now() + Duration::from_secs(5);
    while u.inflight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `dockmaster proxy-ctl <command…>`: run inside the proxy container by `docker exec`.
pub async fn ctl(control: u16, words: &[String]) -> anyhow::Result<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", control)).await?;
    s.write_all(format!("{}\n", words.join(" ")).as_bytes())
        .await?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await?;
    print!("{line}");
    Ok(if line.starts_with("ok") { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_keep_every_earlier_line() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        append(
            &mut h,
            X_FORWARDED_FOR,
            HeaderValue::from_static("10.0.0.9"),
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9");
    }

    #[test]
    fn upgrade_needs_both_fields() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(!wants_upgrade(&h));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(wants_upgrade(&h));
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_dropped() {
        let mut h = map(&[
            ("host", "example.com"),
            ("connection", "keep-alive, X-Secret"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["accept", "host"]);
    }

    #[test]
    fn messages_without_hop_by_hop_fields_are_left_alone() {
        let mut h = map(&[
            ("host", "example.com"),
            ("accept", "*/*"),
            ("x-custom", "a"),
            ("x-custom", "b"),
        ]);
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn forwarded_fields_are_set_or_appended() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1"), ("x-forwarded-proto", "")]);
        append(
            &mut h,
            X_FORWARDED_FOR,
            HeaderValue::from_static("172.18.0.5"),
        );
        append(&mut h, X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        append(
            &mut h,
            X_FORWARDED_HOST,
            HeaderValue::from_static("example.com"),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 172.18.0.5");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn an_unreadable_earlier_forwarded_field_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        append(
            &mut h,
            X_FORWARDED_FOR,
            HeaderValue::from_static("172.18.0.5"),
        );
        assert_eq!(h["x-forwarded-for"], "172.18.0.5");
    }
}
