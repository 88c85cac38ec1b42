//! `dockmaster proxy`: the small HTTP proxy that holds the service's name, container name and
//! published ports, so that a release switch is one atomic pointer swap instead of a
//! container recreate (see ZERO-DOWNTIME-NOTES: Docker's DNS hands out a container's address
//! before it is ready, so nothing based on DNS reaches zero failed requests).
//!
//! It runs inside the service's own container (same binary, `FROM scratch` image built
//! locally by `engine::proxy_image`). Every request goes to the current upstream, an app
//! container addressed by its name on the compose network. `switch` (over a control port on
//! the container's loopback, reached with `docker exec … proxy-ctl`) first checks that the
//! new upstream accepts connections, swaps the pointer so every new request goes there, then
//! waits until the requests still running on the old upstream have finished (up to the
//! drain timeout), and only then answers — after which dockmaster stops the old container.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub mod protocol;

use protocol::{Reply, Request as Control};

/// Where the proxy keeps its upstream, so a restart (host reboot) resumes where it was.
pub const STATE_FILE: &str = "/var/lib/dockmaster-proxy/upstream";
/// The control port, bound to the container's loopback only.
pub const CONTROL_PORT: u16 = 9901;

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
}

struct Upstream {
    host: String,
    inflight: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Upstream {
    fn new(host: String) -> Arc<Upstream> {
        Arc::new(Upstream {
            host,
            inflight: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
        })
    }
}

/// Counts a request as running on its upstream until its response body is done.
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
    inner: BoxBody<Bytes, hyper::Error>,
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
    client: Client<HttpConnector, Incoming>,
    state: PathBuf,
    first_port: u16,
}

type Out = Response<BoxBody<Bytes, hyper::Error>>;

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Proxy {
    fn upstream(&self) -> Arc<Upstream> {
        // A poisoned lock means a panic while swapping an Arc: the Arc itself is intact.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn forward(&self, mut req: Request<Incoming>, port: u16, peer: SocketAddr) -> Out {
        let upstream = self.upstream();
        let guard = InFlight::new(upstream.clone());
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let uri = match format!("http://{}:{port}{path}", upstream.host).parse() {
            Ok(u) => u,
            Err(_) => return plain(StatusCode::BAD_REQUEST, "bad request target"),
        };
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        for h in HOP_BY_HOP {
            headers.remove(h);
        }
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(v) = xff.parse() {
            headers.insert("x-forwarded-for", v);
        }
        match self.client.request(req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                for h in HOP_BY_HOP {
                    parts.headers.remove(h);
                }
                let body = Counted {
                    inner: body.boxed(),
                    _guard: guard,
                };
                Response::from_parts(parts, body.boxed())
            }
            Err(e) => plain(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "dockmaster proxy: upstream {} unreachable: {e}\n",
                    upstream.host
                ),
            ),
        }
    }

    /// Swap to `host` once it accepts connections; then wait for the old one to drain.
    async fn switch(&self, host: &str, drain: Duration) -> Reply {
        let probe = format!("{host}:{}", self.first_port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&probe)).await {
                Ok(Ok(_)) => break,
                other => {
                    if Instant::now() >= deadline {
                        let why = match other {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".into(),
                        };
                        return Reply::Refused(format!(
                            "new upstream {probe} does not accept connections: {why}"
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let new = Upstream::new(host.to_string());
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
        Reply::Switched {
            from: old.host.clone(),
            drained: started.elapsed(),
            still_running: old.inflight.load(Ordering::SeqCst) as u64,
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
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Out {
    let body = http_body_util::Full::new(Bytes::from(text.to_string()))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
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

/// Run the proxy until SIGTERM.
pub async fn serve(args: ProxyArgs) -> anyhow::Result<()> {
    let upstream = std::fs::read_to_string(&args.state)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| args.upstream.clone());
    save_state(&args.state, &upstream);
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let proxy = Arc::new(Proxy {
        current: RwLock::new(Upstream::new(upstream.clone())),
        client,
        state: args.state.clone(),
        first_port: args.listen[0],
    });
    eprintln!(
        "dockmaster proxy: serving ports {:?}, upstream {upstream}",
        args.listen
    );
    for port in &args.listen {
        let listener = TcpListener::bind(("0.0.0.0", *port)).await?;
        let proxy = proxy.clone();
        let port = *port;
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let proxy = proxy.clone();
                        async move { Ok::<_, Infallible>(proxy.forward(req, port, peer).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
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
