//! `dockmaster serve`: the release page and its JSON API, for the app the CLI would pick
//! here. One process, the current-thread runtime like every other command (the work is a
//! few engine reads per page); Ctrl-C or SIGTERM ends it.
//!
//! Every request passes, in order: the `Host` allowlist (DNS rebinding), the login route
//! (the one GET with an effect, on the session only), the session cookie, then its route.
//! A POST also passes `security::check_post` (same origin and the session's CSRF token)
//! before it may change anything. The policy is in `security` (pure, unit-tested); this
//! file only wires it to HTTP.

pub mod actions;
pub mod api;
pub mod jobs;
pub mod pages;
pub mod security;
mod sse;

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::cli::{GlobalArgs, ServeArgs};
use crate::commands::Ctx;
use crate::error::{Error, exit};
use security::{HostAllowlist, LoginLimiter, Session, Sessions};

type Body = BoxBody<Bytes, Infallible>;
type Resp = Response<Body>;

/// A POST body larger than this is refused (forms here carry a token and a few fields).
const MAX_BODY: usize = 16 * 1024;

/// A client that sends no complete request head within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The page's script, shipped in the binary.
const APP_JS: &str = include_str!("app.js");

/// What a path serves. Only POST routes may change anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Status,
    Releases,
    History,
    Logs,
    /// The rollback confirm page (`?release=TAG`).
    ConfirmRollback,
    /// The prune dry run (`?keep=N&older_than=DUR` to try other rules).
    PrunePlan,
    Job(u64),
    JobEvents(u64),
    StatusEvents,
    LogEvents,
    Script,
    ApiStatus,
    ApiReleases,
    ApiHistory,
    ApiJob(u64),
    ApiJobs,
    OpenApi,
    Logout,
    Deploy,
    Rollback,
    Prune,
    Mark,
    ApiDeploy,
    ApiRollback,
    ApiPrune,
    ApiMark,
}

/// Every route but `/login`, which comes before the session check: (method, route).
fn route(path: &str) -> Option<(Method, Route)> {
    use Route::*;
    let get = |r| Some((Method::GET, r));
    let post = |r| Some((Method::POST, r));
    match path {
        "/" => get(Status),
        "/releases" => get(Releases),
        "/history" => get(History),
        "/logs" => get(Logs),
        "/rollback" => None, // GET and POST: see `handle`
        "/prune" => None,
        "/events/status" => get(StatusEvents),
        "/events/logs" => get(LogEvents),
        "/static/app.js" => get(Script),
        "/api/status" => get(ApiStatus),
        "/api/releases" => get(ApiReleases),
        "/api/history" => get(ApiHistory),
        "/api/openapi.json" => get(OpenApi),
        "/api/jobs" => get(ApiJobs),
        "/logout" => post(Logout),
        "/deploy" => post(Deploy),
        "/mark" => post(Mark),
        "/api/deploy" => post(ApiDeploy),
        "/api/rollback" => post(ApiRollback),
        "/api/prune" => post(ApiPrune),
        "/api/mark" => post(ApiMark),
        _ => {
            if let Some(rest) = path.strip_prefix("/api/jobs/") {
                return rest.parse().ok().map(|id| (Method::GET, ApiJob(id)));
            }
            let rest = path.strip_prefix("/jobs/")?;
            match rest.split_once('/') {
                None => rest.parse().ok().map(|id| (Method::GET, Job(id))),
                Some((id, "events")) => id.parse().ok().map(|id| (Method::GET, JobEvents(id))),
                Some(_) => None,
            }
        }
    }
}

/// Routes that answer both GET (a page that changes nothing) and POST (the action).
fn two_way(path: &str, method: &Method) -> Option<Route> {
    match (path, *method == Method::POST) {
        ("/rollback", false) => Some(Route::ConfirmRollback),
        ("/rollback", true) => Some(Route::Rollback),
        ("/prune", false) => Some(Route::PrunePlan),
        ("/prune", true) => Some(Route::Prune),
        _ => None,
    }
}

struct Server {
    ctx: Ctx,
    token: String,
    allow: HostAllowlist,
    /// The session cookie's name, with the port in it: cookies are not kept apart by port,
    /// so two servers on one host would otherwise log each other out.
    cookie: String,
    /// What the pages call the app.
    app_name: String,
    launcher: jobs::Launcher,
    jobs: Rc<RefCell<jobs::Jobs>>,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    sessions: Sessions,
    limiter: LoginLimiter,
}

/// Serve until Ctrl-C or SIGTERM.
pub async fn run(ctx: Ctx, args: &ServeArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let token = security::load_or_create_token(&ctx.app().state_dir).map_err(|e| {
        Error::failed(e.to_string()).hint(
            "make the state directory writable by this user, or pick another with --state-dir",
        )
    })?;
    let launcher = jobs::Launcher::new(global)
        .map_err(|e| Error::failed(format!("cannot find dockmaster's own program: {e}")))?;
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
        launcher,
        jobs: Rc::default(),
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
            server.finish_running_job().await;
        })
        .await;
    printer.ok("Stopped serving");
    Ok(exit::OK)
}

impl Server {
    async fn handle(self: &Rc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
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
        let route = match two_way(&path, req.method()) {
            Some(r) => r,
            None => match route(&path) {
                Some((method, route)) if *req.method() == method => route,
                Some((method, _)) => return not_allowed(method.as_str()),
                None if api => {
                    return json_error(
                        StatusCode::NOT_FOUND,
                        "no such route; see /api/openapi.json",
                    );
                }
                None => {
                    return self.page(
                        StatusCode::NOT_FOUND,
                        "Not found",
                        &session,
                        "No such page.",
                    );
                }
            },
        };
        if !matches!(req.method(), &Method::GET | &Method::POST) {
            return not_allowed("GET, POST");
        }
        let query = req.uri().query().map(str::to_string);
        let query = query.as_deref();
        let ctx = &self.ctx;
        let csrf = session.csrf.as_str();
        use Route as R;
        match route {
            R::Status => match crate::commands::status::report(ctx).await {
                Ok(r) => self.html_page(
                    "Status",
                    pages::Tab::Status,
                    csrf,
                    &pages::status_page(&r, self.running().as_ref(), csrf),
                ),
                Err(e) => self.failed(&session, e),
            },
            R::Releases => match actions::releases_view(ctx).await {
                Ok((rows, missing)) => self.html_page(
                    "Releases",
                    pages::Tab::Releases,
                    csrf,
                    &pages::releases(&rows, &missing, csrf),
                ),
                Err(e) => self.failed(&session, e),
            },
            R::History => match limit(query) {
                Err(e) => self.page(StatusCode::BAD_REQUEST, "Bad request", &session, &e),
                Ok(limit) => match crate::commands::history::report(ctx, limit).await {
                    Ok(r) => {
                        self.html_page("History", pages::Tab::History, csrf, &pages::history(&r))
                    }
                    Err(e) => self.failed(&session, e),
                },
            },
            R::Logs => {
                let lines = sse::last_log_lines(&self.launcher, 200).await;
                self.html_page("Logs", pages::Tab::Logs, csrf, &pages::logs(&lines))
            }
            R::ConfirmRollback => {
                let release = param(query, "release").unwrap_or_default();
                match actions::confirm(ctx, &release).await {
                    Ok(body) => self.html_page(
                        &format!("Roll back to {release}?"),
                        pages::Tab::Releases,
                        csrf,
                        &pages::confirm_rollback(&body.view(), csrf),
                    ),
                    Err(r) => self.page(r.status, "Cannot roll back", &session, &r.message),
                }
            }
            R::PrunePlan => {
                let fields = form_pairs(query.unwrap_or_default());
                match actions::prune_rules(ctx, &fields) {
                    Err(r) => self.page(r.status, "Bad request", &session, &r.message),
                    Ok(rules) => match crate::commands::prune::plan(ctx, rules.rules).await {
                        Ok((decisions, usage)) => self.html_page(
                            "Prune",
                            pages::Tab::Releases,
                            csrf,
                            &pages::prune_plan(
                                &decisions,
                                rules.rules.keep,
                                rules.older_than.as_deref(),
                                crate::commands::prune::estimate(&decisions, &usage),
                                csrf,
                            ),
                        ),
                        Err(e) => self.failed(&session, e),
                    },
                }
            }
            R::Job(id) => match self.jobs.borrow().get(id) {
                Some((job, _)) => {
                    let j = job.borrow();
                    // Without scripts, the page reloads itself while the job runs.
                    let head = if j.state == jobs::State::Running {
                        "<noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>"
                    } else {
                        ""
                    };
                    html(
                        StatusCode::OK,
                        pages::layout_with(
                            &format!("{} #{}", j.command, j.id),
                            &self.app_name,
                            pages::Tab::None,
                            Some(csrf),
                            head,
                            &pages::job(&j),
                        ),
                    )
                }
                None => self.page(
                    StatusCode::NOT_FOUND,
                    "No such job",
                    &session,
                    "This server has no such job (it keeps the last 20 since it started); the History page has every operation.",
                ),
            },
            R::JobEvents(id) => {
                // A reconnecting EventSource asks again for its first URL (`?from=`), and
                // says the last line it got (`Last-Event-ID`): that one wins.
                let after_last = header_str(&req, HeaderName::from_static("last-event-id"))
                    .and_then(|s| s.parse::<usize>().ok())
                    .map(|n| n + 1);
                let from = after_last
                    .or_else(|| param(query, "from").and_then(|s| s.parse().ok()))
                    .unwrap_or(0);
                match self.jobs.borrow().get(id) {
                    Some((job, changed)) => sse::job_events(job, changed, from),
                    None => json_error(StatusCode::NOT_FOUND, "no such job"),
                }
            }
            R::StatusEvents => sse::status_events(self.clone()),
            R::LogEvents => sse::log_events(&self.launcher),
            R::Script => respond(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                full(APP_JS),
            ),
            R::ApiStatus => json_answer(api::status(ctx).await),
            R::ApiReleases => json_answer(api::releases(ctx).await),
            R::ApiHistory => match limit(query) {
                Err(e) => json_error(StatusCode::BAD_REQUEST, &e),
                Ok(limit) => json_answer(api::history(ctx, limit).await),
            },
            R::ApiJob(id) => match self.jobs.borrow().get(id) {
                Some((job, _)) => json_answer(api::encode(&*job.borrow())),
                None => json_error(StatusCode::NOT_FOUND, "no such job"),
            },
            R::ApiJobs => {
                let all = self.jobs.borrow().all();
                let all: Vec<jobs::Job> = all.iter().map(|j| j.borrow().clone()).collect();
                json_answer(api::encode(&all))
            }
            R::OpenApi => json_answer(
                serde_json::to_string_pretty(&api::openapi(&self.cookie))
                    .map_err(|e| (500, e.to_string())),
            ),
            R::Logout => match self.checked_post(req, &session, &host).await {
                Err(resp) => resp,
                Ok(_) => {
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
            R::Deploy | R::Rollback | R::Prune | R::Mark => {
                let body = match self.checked_post(req, &session, &host).await {
                    Err(resp) => return resp,
                    Ok(b) => b,
                };
                let fields = form_pairs(&String::from_utf8_lossy(&body));
                let action = match route {
                    R::Deploy => Ok(actions::Action::Deploy),
                    R::Rollback => actions::Action::rollback(&fields),
                    R::Prune => actions::Action::prune(ctx, &fields),
                    _ => actions::Action::mark(&fields),
                };
                match self.start(action).await {
                    Ok(job) => redirect_to(&format!("/jobs/{}", job.borrow().id)),
                    Err(r) => self.page(r.status, "Refused", &session, &r.message),
                }
            }
            R::ApiDeploy | R::ApiRollback | R::ApiPrune | R::ApiMark => {
                let body = match self.checked_post(req, &session, &host).await {
                    Err(resp) => return resp,
                    Ok(b) => b,
                };
                let action = match api::action(route_name(route), &body, ctx) {
                    Ok(a) => a,
                    Err(r) => return refusal_json(&r),
                };
                if let actions::Action::Prune {
                    rules,
                    dry_run: true,
                    ..
                } = &action
                {
                    return json_answer(api::prune_plan(ctx, rules.rules).await);
                }
                match self.start(Ok(action)).await {
                    Ok(job) => {
                        let id = job.borrow().id;
                        let mut resp = respond(
                            StatusCode::ACCEPTED,
                            "application/json",
                            full(
                                serde_json::json!({ "job": &*job.borrow() }).to_string() + "\n",
                            ),
                        );
                        set_header(&mut resp, header::LOCATION, &format!("/api/jobs/{id}"));
                        resp
                    }
                    Err(r) => refusal_json(&r),
                }
            }
        }
    }

    /// Check an action and start it as a job, unless something says no first: a job of
    /// this server still running, the lock held by someone else, or bad input.
    async fn start(
        &self,
        action: Result<actions::Action, actions::Refusal>,
    ) -> Result<jobs::Shared, actions::Refusal> {
        let action = action?;
        if let Some(job) = self.jobs.borrow().running() {
            let j = job.borrow();
            return Err(actions::Refusal::busy(format!(
                "refused: this page's {} (job #{}) is still running; nothing was started",
                j.command, j.id
            )));
        }
        let app = self.ctx.app();
        if let Some(held) = crate::lock::Lock::held(&app.state_dir, &app.id()) {
            return Err(actions::Refusal::locked(&held));
        }
        let args = actions::checked(&self.ctx, action).await?;
        tracing::info!(?args, "starting an action from the page");
        jobs::start(&self.jobs, &self.launcher, args).map_err(|e| actions::Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("cannot start dockmaster: {e}"),
            holder: None,
        })
    }

    /// What runs now: a job of this server, else whoever holds the lock.
    fn running(&self) -> Option<pages::Running> {
        if let Some(job) = self.jobs.borrow().running() {
            let j = job.borrow();
            return Some(pages::Running::Job {
                id: j.id,
                command: j.command.clone(),
            });
        }
        let app = self.ctx.app();
        crate::lock::Lock::held(&app.state_dir, &app.id()).map(|e| {
            pages::Running::Lock(match &e {
                crate::lock::Error::Held {
                    holder: Some(h), ..
                } => format!(
                    "`dockmaster {}` by {}@{} (pid {}) since {}",
                    h.command, h.user, h.host, h.pid, h.since
                ),
                _ => "another dockmaster process holds the lock".into(),
            })
        })
    }

    /// On the way out: a job that still runs is asked to stop as Ctrl-C asks the CLI (it
    /// leaves the service on the old release or the new healthy one), and waited for.
    async fn finish_running_job(&self) {
        let Some(job) = self.jobs.borrow().running() else {
            return;
        };
        let (id, command) = {
            let j = job.borrow();
            (j.id, j.command.clone())
        };
        if let Some(pid) = self.jobs.borrow().running_pid() {
            self.ctx.printer.warn(&format!(
                "stopping the page's {command} (job #{id}) first, as Ctrl-C stops it"
            ));
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::INT);
            }
        }
        while job.borrow().state == jobs::State::Running {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for line in job.borrow().output.iter().rev().take(3).rev() {
            self.ctx.printer.info(line);
        }
    }

    fn html_page(&self, title: &str, tab: pages::Tab, csrf: &str, body: &str) -> Resp {
        html(
            StatusCode::OK,
            pages::layout(title, &self.app_name, tab, Some(csrf), body),
        )
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

    /// A POST's body, once it has passed the same-origin and CSRF checks (the CSRF token
    /// as the form field `csrf`, or the header `X-CSRF-Token`); else the refusal.
    async fn checked_post(
        &self,
        req: Request<Incoming>,
        session: &Session,
        host: &str,
    ) -> Result<Bytes, Resp> {
        let api = req.uri().path().starts_with("/api/");
        let origin = header_str(&req, header::ORIGIN).map(str::to_string);
        let header_csrf =
            header_str(&req, HeaderName::from_static("x-csrf-token")).map(str::to_string);
        let form_body = header_str(&req, header::CONTENT_TYPE)
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return Err(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "refused: the request body is too large or was cut off\n",
                ));
            }
        };
        // The form field counts only in a form: a JSON body's text is not a form.
        let sent = form_body
            .then(|| {
                form_pairs(&String::from_utf8_lossy(&body))
                    .into_iter()
                    .find(|(k, _)| k == "csrf")
                    .map(|(_, v)| v)
            })
            .flatten()
            .or(header_csrf);
        match security::check_post(session, sent.as_deref(), origin.as_deref(), host) {
            Ok(()) => Ok(body),
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

/// The API route's action name.
fn route_name(r: Route) -> &'static str {
    match r {
        Route::ApiDeploy => "deploy",
        Route::ApiRollback => "rollback",
        Route::ApiPrune => "prune",
        _ => "mark",
    }
}

fn refusal_json(r: &actions::Refusal) -> Resp {
    let mut v = serde_json::json!({ "error": r.message });
    if let Some(h) = &r.holder {
        v["holder"] = serde_json::to_value(h).unwrap_or_default();
    }
    respond(r.status, "application/json", full(v.to_string() + "\n"))
}

fn header_str(req: &Request<Incoming>, name: HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn set_header(resp: &mut Resp, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

/// Every response: never cached (pages show live state and the CSRF token), never framed,
/// never sniffed, no referrer to other sites (the login URL holds the token), nothing from
/// anywhere else: inline CSS, and scripts and event streams from this origin only.
fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Resp {
    let mut resp = Response::new(body);
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
        // Never to another site (the login URL holds the token). Not `no-referrer`: with
        // it, browsers send `Origin: null` on the page's own form POSTs, and the same-origin
        // check must see the real origin.
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    resp
}

fn html(status: StatusCode, body: String) -> Resp {
    respond(status, "text/html; charset=utf-8", full(body))
}

fn text(status: StatusCode, body: &str) -> Resp {
    respond(status, "text/plain; charset=utf-8", full(body.to_string()))
}

fn json_answer(answer: api::Answer) -> Resp {
    match answer {
        Ok(body) => respond(StatusCode::OK, "application/json", full(body + "\n")),
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
        full(serde_json::json!({ "error": error }).to_string() + "\n"),
    )
}

fn redirect(to: &'static str) -> Resp {
    redirect_to(to)
}

fn redirect_to(to: &str) -> Resp {
    let mut resp = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", full(""));
    set_header(&mut resp, header::LOCATION, to);
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

pub(crate) fn param(query: Option<&str>, name: &str) -> Option<String> {
    form_pairs(query?)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` (a query string or a form body) as pairs.
pub(crate) fn form_pairs(s: &str) -> Vec<(String, String)> {
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
