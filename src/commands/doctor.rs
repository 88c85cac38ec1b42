//! `dockmaster doctor`: the guide's Troubleshooting section as checks. Each prints ✓ or ✗
//! with what it found and, when it fails, the fix. Exit 0 only when every check passes.
//!
//! Checks: engine reachable (and its version); the docker CLI (where); compose present
//! (which); checkout clean, on the release branch, its remote reachable; free disk on the
//! engine's data root against the newest release's size; a health check defined; the live
//! container not in a restart loop; the running image is the one dockmaster last put
//! live; reclaimable space.
//! Without a compose file (no app), the engine, the docker CLI, compose and the disk are
//! still checked, and every check that needs the app fails with how to name one.

use std::time::Duration;

use serde::Serialize;

use crate::cli::JsonArg;
use crate::commands::{Ctx, plural};
use crate::compose;
use crate::engine::Engine;
use crate::error::{Error, Result, exit};
use crate::git::Checkout;
use crate::history::History;
use crate::output::{Printer, human_size};
use crate::runtime::Runtime;
use crate::settings::App;

#[derive(Serialize)]
pub struct Check {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to do when it failed.
    pub fix: Option<String>,
}

fn pass(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        check,
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// Reclaimable space above this is a failed check (and `dockmaster prune` the fix).
const RECLAIMABLE_LIMIT: i64 = 1 << 30;
/// A build needs room: the newest release's size twice over, and at least this much.
const MIN_FREE: u64 = 1 << 30;

pub async fn run(ctx: &Ctx, args: &JsonArg) -> Result<u8> {
    let checks = checks(Ok(ctx.app()), Ok(ctx.engine()), Some(ctx)).await;
    report(&ctx.printer, &checks, args.json)
}

/// `doctor` when the engine does not answer: that check fails, the others that need no
/// engine still run.
pub async fn run_without_engine(app: &App, why: String, json: bool) -> Result<u8> {
    let checks = checks(Ok(app), Err(&why), None).await;
    report(&Printer::new(), &checks, json)
}

/// `doctor` with no app to check (no compose file here, or one dockmaster cannot use):
/// the checks that need none run, the others fail with what `why` says to do.
pub async fn run_without_app(
    engine: std::result::Result<Engine, String>,
    why: Error,
    json: bool,
) -> Result<u8> {
    let engine = engine.as_ref().map_err(String::as_str);
    let checks = checks(Err(&why), engine, None).await;
    report(&Printer::new(), &checks, json)
}

/// The checks that need the app, in the order they run when there is one.
const APP_CHECKS: &[&str] = &[
    "checkout",
    "health check",
    "container",
    "running image",
    "reclaimable space",
];

fn report(p: &Printer, checks: &[Check], json: bool) -> Result<u8> {
    if json {
        p.json(&checks);
    } else {
        for c in checks {
            if c.ok {
                p.ok(&format!("{}: {}", c.check, c.detail));
            } else {
                p.fail(&format!("{}: {}", c.check, c.detail));
                if let Some(fix) = &c.fix {
                    p.info(&format!("fix: {fix}"));
                }
            }
        }
        let failed = checks.iter().filter(|c| !c.ok).count();
        if failed == 0 {
            p.ok(&format!("All {} checks passed", checks.len()));
        } else {
            p.fail(&format!(
                "{} of {} failed",
                plural(failed, "check", "checks"),
                checks.len()
            ));
        }
    }
    Ok(if checks.iter().all(|c| c.ok) {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// Every check. `ctx` is there when both the app and the engine are.
async fn checks(
    app: std::result::Result<&App, &Error>,
    engine: std::result::Result<&Engine, &str>,
    ctx: Option<&Ctx>,
) -> Vec<Check> {
    let mut out = vec![];
    match engine {
        Ok(engine) => out.push(match engine.version().await {
            Ok(v) => pass("engine", format!("Docker engine {v} answers")),
            Err(e) => fail("engine", e.to_string(), "start it: `systemctl start docker`"),
        }),
        Err(why) => out.push(fail(
            "engine",
            why,
            "start the engine (`systemctl start docker`), or point DOCKER_HOST at it; `docker info` must work",
        )),
    }
    out.push(docker_cli());
    let program = match app {
        Ok(a) => a.env.compose_program.clone(),
        Err(_) => crate::settings::Env::from_process()
            .ok()
            .and_then(|e| e.compose_program),
    };
    out.push(match compose::Cli::detect(program).await {
        Ok(c) => pass("compose", c.display()),
        Err(e) => fail(
            "compose",
            e.to_string(),
            "install compose: `apt-get install docker-compose` (v1) or the docker compose plugin (v2)",
        ),
    });
    let app = match app {
        Ok(app) => app,
        Err(why) => {
            let fix = why
                .hint_text()
                .unwrap_or("run dockmaster where your compose file is, or pass it with -f/--file")
                .to_string();
            out.push(fail("compose file", first_line(why.message()), fix.clone()));
            if let Ok(engine) = engine {
                out.push(disk(engine, None).await);
            }
            for check in APP_CHECKS {
                out.push(fail(
                    check,
                    "not checked: there is no app to check (see `compose file`)",
                    fix.clone(),
                ));
            }
            return out;
        }
    };
    out.extend(checkout(app).await);
    let Some(ctx) = ctx else {
        return out;
    };
    let engine = &ctx.engine();
    let releases = engine.releases(&app.repository).await.unwrap_or_default();
    let live = ctx.rt.serving(&releases).await.ok().flatten();

    out.push(disk(engine, releases.first().map(|r| r.size_bytes)).await);
    if let Some(rt) = ctx.rt.swarm() {
        out.push(match rt.check_nodes().await {
            Ok(detail) => pass("swarm", detail),
            Err((detail, fix)) => fail("swarm", detail, fix),
        });
    }

    out.push(
        if app.has_compose_healthcheck
            || app.health.http.is_some()
            || live
                .as_ref()
                .is_some_and(|l| l.container.healthcheck.is_some())
        {
            pass(
                "health check",
                if app.has_compose_healthcheck {
                    "defined in the compose file".to_string()
                } else if app.health.http.is_some() {
                    "an HTTP probe in dockmaster.toml".to_string()
                } else {
                    "defined in the image".to_string()
                },
            )
        } else {
            fail(
                "health check",
                format!(
                    "service `{}` has none, so a deploy can only check that it keeps running for {}",
                    app.service,
                    crate::output::human_duration(app.health.settle)
                ),
                "add a `healthcheck:` to the service (e.g. test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/health\"]), or [health] path and port in dockmaster.toml",
            )
        },
    );

    out.push(match &live {
        None => fail(
            "container",
            format!("service `{}` has no container", app.service),
            "`dockmaster deploy` (or `dockmaster rollback <tag>`) puts a release live",
        ),
        Some(l) if l.container.restarting || l.container.restart_count >= 3 => fail(
            "restart loop",
            format!(
                "{} has restarted {} time(s) and is {}",
                l.container.name, l.container.restart_count, l.container.state
            ),
            "`dockmaster logs --tail 100` shows why; `dockmaster rollback` puts the previous release back",
        ),
        Some(l) if !l.container.running => fail(
            "container",
            format!("{} is {}", l.container.name, l.container.state),
            "`dockmaster logs` shows why it stopped; `dockmaster rollback <tag> -y` starts a release again",
        ),
        Some(l) => pass(
            "restart loop",
            format!(
                "{} runs, {}",
                l.container.name,
                plural(l.container.restart_count as usize, "restart", "restarts")
            ),
        ),
    });

    let recorded = History::open(&app.state_dir, &app.id())
        .and_then(|h| h.last_put_live())
        .ok()
        .flatten();
    let running = live.as_ref().and_then(|l| l.tag_string());
    out.push(match (&recorded, &running) {
        (None, _) => pass(
            "running image",
            "no record yet: dockmaster has not put a release live here",
        ),
        (Some(r), Some(t)) if r == t => pass(
            "running image",
            format!("{} is what dockmaster last put live", app.image_ref(t)),
        ),
        (Some(r), _) => fail(
            "running image",
            format!(
                "dockmaster last put {} live, but the container runs {}",
                app.image_ref(r),
                live.as_ref()
                    .map_or("nothing".to_string(), |l| l.container.image_ref.clone())
            ),
            format!("`dockmaster rollback {r} -y` puts it back (or deploy the one you want)"),
        ),
    });

    out.push(reclaimable(ctx).await);
    out
}

fn docker_cli() -> Check {
    match crate::engine::cli::docker() {
        Some(cli) if cli.on_path => pass("docker CLI", format!("{} (on PATH)", cli.path.display())),
        Some(cli) => pass(
            "docker CLI",
            format!(
                "{} (not on PATH; found there and used for builds and compose)",
                cli.path.display()
            ),
        ),
        None => fail(
            "docker CLI",
            "no `docker` on PATH or in the places NAS systems put it",
            crate::engine::cli::install_hint(),
        ),
    }
}

async fn checkout(app: &App) -> Vec<Check> {
    let co = match Checkout::find(&app.build.context).await {
        Ok(c) => c,
        Err(e) => {
            return vec![fail(
                "checkout",
                e.to_string(),
                "deploy from a git clone of the app's repository",
            )];
        }
    };
    let mut out = vec![match co.ensure_clean().await {
        Ok(()) => pass("checkout clean", "no uncommitted changes"),
        Err(e) => fail(
            "checkout clean",
            first_line(&e.to_string()),
            "`git stash --include-untracked` sets the changes aside; commit them if they belong in a release",
        ),
    }];
    match co
        .upstream(app.remote.as_deref(), app.branch.as_deref())
        .await
    {
        Ok(up) => {
            out.push(pass("branch", format!("releases come from {up}")));
            let fetch = tokio::time::timeout(Duration::from_secs(20), co.ls_remote(&up)).await;
            out.push(match fetch {
                Ok(Ok(head)) if !head.is_empty() => pass(
                    "remote",
                    format!("{up} is reachable (at {})", &head[..head.len().min(7)]),
                ),
                Ok(Ok(_)) => fail(
                    "remote",
                    format!("{} has no branch {}", up.remote, up.branch),
                    "push the branch, or set `branch` in dockmaster.toml",
                ),
                Ok(Err(e)) => fail(
                    "remote",
                    format!("cannot reach {}: {}", up.remote, first_line(&e.git_said())),
                    "check the network and the credentials (`git fetch` by hand shows the same error)",
                ),
                Err(_) => fail(
                    "remote",
                    format!("{} did not answer within 20s", up.remote),
                    "check the network (`git fetch` by hand)",
                ),
            });
        }
        Err(e) => out.push(fail("branch", first_line(&e.to_string()), e.hint())),
    }
    out
}

async fn disk(engine: &Engine, newest: Option<i64>) -> Check {
    let root = match engine.docker().info().await {
        Ok(i) => i
            .docker_root_dir
            .unwrap_or_else(|| "/var/lib/docker".into()),
        Err(e) => return fail("disk", e.to_string(), "`docker info` must work"),
    };
    let need = (newest.unwrap_or(0).max(0) as u64)
        .saturating_mul(2)
        .max(MIN_FREE);
    match rustix::fs::statvfs(root.as_str()) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let detail = format!(
                "{} free on {root} (a build needs about {})",
                human_size(free as i64),
                human_size(need as i64)
            );
            if free >= need {
                pass("disk", detail)
            } else {
                fail(
                    "disk",
                    detail,
                    "`dockmaster prune` removes old releases; `dockmaster prune --dangling` this app's build leftovers; `docker system df` shows the rest",
                )
            }
        }
        // A remote engine (DOCKER_HOST=tcp://…): its disk is not ours to read.
        Err(e) => pass(
            "disk",
            format!("cannot read {root} from here ({e}); the engine may be remote"),
        ),
    }
}

async fn reclaimable(ctx: &Ctx) -> Check {
    let rules = crate::commands::prune::Rules {
        keep: ctx.app().retention.keep,
        older_than: ctx.app().retention.older_than,
    };
    let planned = crate::commands::prune::plan(ctx, rules).await;
    let dangling = ctx
        .engine()
        .dangling_images(&ctx.app().id())
        .await
        .unwrap_or_default();
    match planned {
        Ok((decisions, usage)) => {
            let by_policy = crate::commands::prune::estimate(&decisions, &usage);
            let left_over: i64 = dangling
                .iter()
                .map(|i| usage.images.get(&i.id).map_or(i.size, |u| u.unique()))
                .sum();
            let detail = format!(
                "{} by the retention policy ({}), {} in {}",
                human_size(by_policy),
                plural(
                    decisions.iter().filter(|d| d.remove).count(),
                    "release",
                    "releases"
                ),
                human_size(left_over),
                plural(dangling.len(), "dangling image", "dangling images"),
            );
            if by_policy + left_over < RECLAIMABLE_LIMIT {
                pass("reclaimable space", detail)
            } else {
                fail(
                    "reclaimable space",
                    detail,
                    "`dockmaster prune --dry-run` shows what would go; `dockmaster prune --dangling` frees it",
                )
            }
        }
        Err(e) => fail(
            "reclaimable space",
            e.to_string(),
            "`docker system df` must work",
        ),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}
