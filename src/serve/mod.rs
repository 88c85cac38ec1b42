//! `dockmaster serve`: the release page and its JSON API, for the app the CLI would pick
//! here. One process, the current-thread runtime like every other command (the work is a
//! few engine reads per page); Ctrl-C or SIGTERM ends it.
//!
//! Every request passes, in order: the `Host` allowlist (DNS rebinding), the login route
//! (the one GET with an effect, on the session only), the session cookie, then its route.
//! A POST also passes `security::check_post` (same origin and the session's CSRF token)
//! before it may change anything. The policy is in `security` (pure, unit-tested); this
//! file only wires it to HTTP.

pub mod api;
pub mod pages;
pub mod security;

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::cli::ServeArgs;
use crate::commands::Ctx;
use crate::error::{Error, exit};
use security::{HostAllowlist, LoginLimiter, Session, Sessions};

type Resp = Response<Full<Bytes>>;

/// A POST body larger than this is refused (forms here carry a token and a few fields).
const MAX_BODY: usize = 16 * 1024;

/// A client that sends no complete request head within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a path serves. Actions (deploy, rollback, prune, marks) arrive as more POST routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Status,
    Releases,
    History,
    ApiStatus,
    ApiReleases,
    ApiHistory,
    OpenApi,
    Logout,
}

/// Every route but `/login`, which comes before the session check. Only POST routes may
/// change anything.
const ROUTES: &[(&str, Method, Route)] = &[
    ("/", Method::GET, Route::Status),
    ("/releases", Method::GET, Route::Releases),
    ("/history", Method::GET, Route::History),
    ("/api/status", Method::GET, Route::ApiStatus),
    ("/api/releases", Method::GET, Route::ApiReleases),
    ("/api/history", Method::GET, Route::ApiHistory),
    ("/api/openapi.json", Method::GET, Route::OpenApi),
    ("/logout", Method::POST, Route::Logout),
];

struct Server {
    ctx: Ctx,
    token: String,
    allow: HostAllowlist,
    /// The session cookie's name, with the port in it: cookies are not kept apart by port,
    /// so two servers on one host would otherwise log each other out.
    cookie: String,
    /// What the pages call the app.
    app_name: String,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    sessions: Sessions,
    limiter: LoginLimiter,
}

/// Serve until Ctrl-C or SIGTERM.
pub async fn run(ctx: Ctx, args: &ServeArgs) -> anyhow::Result<u8> {
    let token = security::load_or_create_token(&ctx.app().state_dir).map_err(|e| {
        Error::failed(e.to_string()).hint(
            "make the state directory writable by this user, or pick another with --state-dir",
        )
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            Error::failed(format!("cannot listen on {}: {e}", args.listen)).hint(
                "is another `dockmaster serve` running there? pick another address with --listen ADDR",
            )
        })?;
    let addr = listener.local_addr()?;
    let printer = ctx.printer.clone();
    if !addr.ip().is_loopback() {
        printer.warn(&format!(
            "listening on {addr}, which is not a loopback address: anyone who can reach it can try to log in (plain HTTP: put it behind a TLS reverse proxy or an SSH tunnel, and keep the token secret)"
        ));
    }
    let app = ctx.app();
    let app_name = app.repository.clone();
    printer.ok(&format!(
        "Serving the release page of {} (service `{}`) on http://{addr}/ — Ctrl-C stops it",
        app.repository, app.service
    ));
    printer.info(&format!("Log in: http://{addr}/login?token={token}"));
    let server = Rc::new(Server {
        allow: HostAllowlist::new(addr, &args.allow_hosts),
        cookie: format!("dockmaster_session_{}", addr.port()),
        app_name,
        token,
        ctx,
        state: RefCell::new(State::default()),
    });
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    () = crate::interrupt::wait() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of file descriptors: pause instead of spinning.
                            tracing::warn!("accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let server = server.clone();
                tokio::task::spawn_local(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req, peer).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
        .await;
    printer.ok("Stopped serving");
    Ok(exit::OK)
}

impl Server {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Resp {
        let host = header_str(&req, header::HOST)
            .unwrap_or_default()
            .to_string();
        if !self.allow.allows(&host) {
            let shown: String = host.chars().take(100).collect();
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                &format!(
                    "refused: this server does not answer to the host name {shown:?}; open it by its listen address or localhost, or start it with --allow-host NAME\n"
                ),
            );
        }
        let path = req.uri().path().to_string();
        tracing::debug!(method = %req.method(), path, %peer, "request");
        if path == "/login" {
            return if req.method() == Method::GET {
                self.login(req.uri().query(), peer)
            } else {
                not_allowed("GET")
            };
        }
        let api = path.starts_with("/api/");
        let Some((sid, session)) = self.session(&req) else {
            return if api {
                json_error(
                    StatusCode::UNAUTHORIZED,
                    "no session: log in with the URL `dockmaster serve` printed (GET /login?token=…)",
                )
            } else {
                redirect("/login")
            };
        };
        let Some((_, method, route)) = ROUTES.iter().find(|(p, _, _)| *p == path) else {
            return if api {
                json_error(
                    StatusCode::NOT_FOUND,
                    "no such route; see /api/openapi.json",
                )
            } else {
                self.page(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    &session,
                    "No such page.",
                )
            };
        };
        if req.method() != method {
            return not_allowed(method.as_str());
        }
        let ctx = &self.ctx;
        let name = &self.app_name;
        let csrf = Some(session.csrf.as_str());
        match route {
            Route::Status => match crate::commands::status::report(ctx).await {
                Ok(r) => html(
                    StatusCode::OK,
                    pages::layout("Status", name, pages::Tab::Status, csrf, &pages::status(&r)),
                ),
                Err(e) => self.failed(&session, e),
            },
            Route::Releases => match crate::commands::releases::report(ctx).await {
                Ok(r) => html(
                    StatusCode::OK,
                    pages::layout(
                        "Releases",
                        name,
                        pages::Tab::Releases,
                        csrf,
                        &pages::releases(&r),
                    ),
                ),
                Err(e) => self.failed(&session, e),
            },
            Route::History => match limit(req.uri().query()) {
                Err(e) => self.page(StatusCode::BAD_REQUEST, "Bad request", &session, &e),
                Ok(limit) => match crate::commands::history::report(ctx, limit).await {
                    Ok(r) => html(
                        StatusCode::OK,
                        pages::layout(
                            "History",
                            name,
                            pages::Tab::History,
                            csrf,
                            &pages::history(&r),
                        ),
                    ),
                    Err(e) => self.failed(&session, e),
                },
            },
            Route::ApiStatus => json_answer(api::status(ctx).await),
            Route::ApiReleases => json_answer(api::releases(ctx).await),
            Route::ApiHistory => match limit(req.uri().query()) {
                Err(e) => json_error(StatusCode::BAD_REQUEST, &e),
                Ok(limit) => json_answer(api::history(ctx, limit).await),
            },
            Route::OpenApi => json_answer(
                serde_json::to_string_pretty(&api::openapi(&self.cookie))
                    .map_err(|e| (500, e.to_string())),
            ),
            Route::Logout => match self.checked_post(req, &session, &host).await {
                Err(resp) => resp,
                Ok(_form) => {
                    self.state.borrow_mut().sessions.remove(&sid);
                    let mut resp = redirect("/login");
                    set_header(
                        &mut resp,
                        header::SET_COOKIE,
                        &format!(
                            "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                            self.cookie
                        ),
                    );
                    resp
                }
            },
        }
    }

    /// `GET /login?token=…`: the token for a session cookie, then to `/`. Without a token,
    /// the page that says how to log in.
    fn login(&self, query: Option<&str>, peer: SocketAddr) -> Resp {
        let Some(sent) = param(query, "token") else {
            return html(StatusCode::OK, pages::how_to_log_in(&self.app_name));
        };
        let now = Instant::now();
        let mut state = self.state.borrow_mut();
        if let Err(wait) = state.limiter.check(peer.ip(), now) {
            let mut resp = html(
                StatusCode::TOO_MANY_REQUESTS,
                pages::message(
                    "Too many failed logins",
                    &self.app_name,
                    None,
                    &format!(
                        "More than {} wrong tokens within a minute from your address: try again in {wait} s.",
                        security::MAX_FAILED_LOGINS
                    ),
                ),
            );
            set_header(&mut resp, header::RETRY_AFTER, &wait.to_string());
            return resp;
        }
        if !security::constant_time_eq(sent.as_bytes(), self.token.as_bytes()) {
            state.limiter.fail(peer.ip(), now);
            tracing::warn!(%peer, "failed login");
            return html(
                StatusCode::FORBIDDEN,
                pages::message(
                    "Wrong token",
                    &self.app_name,
                    None,
                    "That login link's token is not this server's. Use the link `dockmaster serve` printed when it started.",
                ),
            );
        }
        match state.sessions.create(now) {
            Ok((id, _)) => {
                let mut resp = redirect("/");
                set_header(
                    &mut resp,
                    header::SET_COOKIE,
                    &format!("{}={id}; HttpOnly; SameSite=Strict; Path=/", self.cookie),
                );
                resp
            }
            Err(e) => html(
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::message("Error", &self.app_name, None, &e.to_string()),
            ),
        }
    }

    /// The request's live session: (its id, a copy of it).
    fn session(&self, req: &Request<Incoming>) -> Option<(String, Session)> {
        let id = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == self.cookie)
            .map(|(_, v)| v.to_string())?;
        let state = self.state.borrow();
        let session = state.sessions.get(&id, Instant::now())?.clone();
        Some((id, session))
    }

    /// A POST's form fields, once it has passed the same-origin and CSRF checks (the CSRF
    /// token as the form field `csrf`, or the header `X-CSRF-Token`); else the refusal.
    async fn checked_post(
        &self,
        req: Request<Incoming>,
        session: &Session,
        host: &str,
    ) -> Result<Vec<(String, String)>, Resp> {
        let api = req.uri().path().starts_with("/api/");
        let origin = header_str(&req, header::ORIGIN).map(str::to_string);
        let header_csrf =
            header_str(&req, HeaderName::from_static("x-csrf-token")).map(str::to_string);
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return Err(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "refused: the request body is too large or was cut off\n",
                ));
            }
        };
        let form = form_pairs(&String::from_utf8_lossy(&body));
        let sent = form
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.clone())
            .or(header_csrf);
        match security::check_post(session, sent.as_deref(), origin.as_deref(), host) {
            Ok(()) => Ok(form),
            Err(refusal) => {
                tracing::warn!(?refusal, "POST refused");
                Err(if api {
                    json_error(StatusCode::FORBIDDEN, refusal.message())
                } else {
                    self.page(StatusCode::FORBIDDEN, "Refused", session, refusal.message())
                })
            }
        }
    }

    fn page(&self, status: StatusCode, title: &str, session: &Session, text: &str) -> Resp {
        html(
            status,
            pages::message(title, &self.app_name, Some(&session.csrf), text),
        )
    }

    fn failed(&self, session: &Session, e: Error) -> Resp {
        self.page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            session,
            &e.to_string(),
        )
    }
}

fn header_str(req: &Request<Incoming>, name: HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn set_header(resp: &mut Resp, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Every response: never cached (pages show live state and the CSRF token), never framed,
/// never sniffed, no referrer (the login URL holds the token), and nothing loaded from
/// anywhere (inline CSS only; no script at all yet).
fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    resp
}

fn html(status: StatusCode, body: String) -> Resp {
    respond(status, "text/html; charset=utf-8", body)
}

fn text(status: StatusCode, body: &str) -> Resp {
    respond(status, "text/plain; charset=utf-8", body.to_string())
}

fn json_answer(answer: api::Answer) -> Resp {
    match answer {
        Ok(body) => respond(StatusCode::OK, "application/json", body + "\n"),
        Err((code, e)) => json_error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &e,
        ),
    }
}

fn json_error(status: StatusCode, error: &str) -> Resp {
    respond(
        status,
        "application/json",
        serde_json::json!({ "error": error }).to_string() + "\n",
    )
}

fn redirect(to: &'static str) -> Resp {
    let mut resp = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    resp
}

fn not_allowed(allow: &str) -> Resp {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    set_header(&mut resp, header::ALLOW, allow);
    resp
}

/// `?limit=N` of the history routes.
fn limit(query: Option<&str>) -> Result<Option<usize>, String> {
    match param(query, "limit") {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("limit must be a whole number, not {v:?}")),
    }
}

fn param(query: Option<&str>, name: &str) -> Option<String> {
    form_pairs(query?)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` (a query string or a form body) as pairs.
fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(
            form_pairs("csrf=ab%2Fc&x=a+b&flag&=v"),
            vec![
                ("csrf".into(), "ab/c".into()),
                ("x".into(), "a b".into()),
                ("flag".into(), "".into()),
                ("".into(), "v".into()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(
            param(Some("a=1&token=t%20x"), "token").as_deref(),
            Some("t x")
        );
        assert_eq!(limit(Some("limit=3")), Ok(Some(3)));
        assert!(limit(Some("limit=x")).is_err());
    }
}
