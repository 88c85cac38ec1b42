//! `dockmaster status`: what is live, how it is doing, and whether it is what dockmaster
//! put there.

use serde::Serialize;

use crate::cli::JsonArg;
use crate::commands::{Ctx, rollback_target};
use crate::error::{Result, exit};
use crate::history::Event;
use crate::output::short_id;
use crate::output::{human_duration, human_size};
use crate::runtime::Runtime;

#[derive(Serialize)]
pub struct Report {
    pub service: String,
    pub project: String,
    pub repository: String,
    /// The live release's tag, when the container runs one.
    pub live: Option<String>,
    pub container: Option<ContainerReport>,
    /// The switch proxy that holds the service's name and ports (start-first), if any.
    pub proxy: Option<ProxyReport>,
    /// The release dockmaster last put live, by its history.
    pub recorded_live: Option<String>,
    /// Whether the container runs what dockmaster last put live (None: no record yet).
    pub matches_record: Option<bool>,
    /// Whether `<repository>:latest` names the live image (None: no latest tag).
    pub latest_matches: Option<bool>,
    pub rollback_target: Option<String>,
    /// The release kept beside the live one after a start-first switch.
    pub standby: Option<StandbyReport>,
    /// What the proxy counted per release (the live one and those that served before it),
    /// over `[watch] window`; null when no proxy counts this service's traffic.
    pub traffic: Option<Vec<TrafficReport>>,
    pub releases: usize,
    pub disk_bytes: i64,
    pub last_event: Option<Event>,
}

#[derive(Serialize)]
pub struct TrafficReport {
    pub release: Option<String>,
    pub container: String,
    pub live: bool,
    pub requests: u64,
    /// Responses by class.
    pub status: std::collections::BTreeMap<&'static str, u64>,
    pub conn_errors: u64,
    pub window_seconds: u64,
    pub window_requests: u64,
    pub window_5xx: u64,
    pub window_conn_errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Serialize)]
pub struct StandbyReport {
    pub tag: Option<String>,
    /// `hot` (running, drained: a rollback to it is a probe and a switch) or `cold`.
    pub mode: crate::settings::Standby,
    pub container: String,
    /// What a hot standby costs in memory now (one-shot engine stats); null when cold.
    pub memory_bytes: Option<u64>,
}

#[derive(Serialize)]
pub struct ProxyReport {
    pub name: String,
    pub state: String,
    /// The app container it sends traffic to.
    pub upstream: String,
}

#[derive(Serialize)]
pub struct ContainerReport {
    pub name: String,
    pub id: String,
    pub image: String,
    pub image_id: String,
    pub state: String,
    pub health: Option<String>,
    pub started_at: Option<String>,
    pub uptime_seconds: Option<i64>,
    pub restarts: i64,
}

/// What `status --json` prints and the release page's status shows.
pub async fn report(ctx: &Ctx) -> Result<Report> {
    let app = ctx.app();
    let releases = ctx.rt.releases().await?;
    let live = ctx.rt.serving(&releases).await?;
    let history = ctx.history_shared().await?;
    let marks = history.marks()?;
    let events = history.events(Some(1))?;
    let recorded = history.last_put_live()?;
    let live_tag = live.as_ref().and_then(|l| l.tag_string());
    let latest_id = ctx.engine().image_id(&app.image_ref("latest")).await?;
    let target = rollback_target(
        &releases,
        live.as_ref().and_then(|l| l.release.as_ref()),
        &marks,
    )
    .map(|(r, _)| r.tag.to_string());
    // Disk use: each image once, even if it carries several release tags.
    let mut seen = std::collections::HashSet::new();
    let disk: i64 = releases
        .iter()
        .filter(|r| seen.insert(r.image_id.clone()))
        .map(|r| r.size_bytes)
        .sum();
    let standby = match ctx.rt.standby(live.as_ref()).await? {
        Some(s) => Some(StandbyReport {
            memory_bytes: if s.mode == crate::settings::Standby::Hot {
                ctx.engine()
                    .memory_usage(&s.container.id)
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            },
            tag: s.tag,
            mode: s.mode,
            container: s.container.name,
        }),
        None => None,
    };
    let live_name = live.as_ref().map(|l| l.container.name.clone());
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    let traffic = ctx.rt.traffic(app.watch.window).await?.map(|all| {
        all.into_iter()
            .map(|t| {
                let c = &t.counters;
                TrafficReport {
                    live: live_name.as_deref() == Some(t.container.as_str()),
                    release: t.release.clone(),
                    container: t.container.clone(),
                    requests: c.requests,
                    status: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                        .into_iter()
                        .zip(c.status)
                        .collect(),
                    conn_errors: c.conn_errors,
                    window_seconds: c.window.seconds,
                    window_requests: c.window.requests,
                    window_5xx: c.window.status5xx,
                    window_conn_errors: c.window.conn_errors,
                    p50_ms: ms(c.window.p50),
                    p95_ms: ms(c.window.p95),
                    p99_ms: ms(c.window.p99),
                }
            })
            .collect::<Vec<_>>()
    });
    let now = jiff::Timestamp::now();
    let report = Report {
        service: app.service.clone(),
        project: app.project.name.clone(),
        repository: app.repository.clone(),
        live: live_tag.clone(),
        container: live.as_ref().map(|l| {
            let c = &l.container;
            ContainerReport {
                name: c.name.clone(),
                id: c.id.clone(),
                image: c.image_ref.clone(),
                image_id: c.image_id.clone(),
                state: c.state.clone(),
                health: c.health.clone(),
                started_at: c.started_at.map(|t| t.to_string()),
                uptime_seconds: c
                    .started_at
                    .filter(|_| c.running)
                    .map(|t| now.as_second() - t.as_second()),
                restarts: c.restart_count,
            }
        }),
        proxy: live.as_ref().and_then(|l| {
            l.proxy.as_ref().map(|p| ProxyReport {
                name: p.name.clone(),
                state: p.state.clone(),
                upstream: l.container.name.clone(),
            })
        }),
        matches_record: recorded.as_ref().map(|r| Some(r) == live_tag.as_ref()),
        recorded_live: recorded,
        latest_matches: latest_id
            .as_ref()
            .map(|id| live.as_ref().is_some_and(|l| &l.container.image_id == id)),
        rollback_target: target,
        standby,
        traffic,
        releases: releases.len(),
        disk_bytes: disk,
        last_event: events.into_iter().next(),
    };
    Ok(report)
}

pub async fn run(ctx: &Ctx, args: &JsonArg) -> Result<u8> {
    let app = ctx.app();
    let p = &ctx.printer;
    let report = report(ctx).await?;
    if args.json {
        p.json(&report);
        return Ok(exit::OK);
    }
    let live_tag = report.live.clone();
    let recorded = report.recorded_live.clone();
    let target = report.rollback_target.clone();
    let mut lines = vec![format!(
        "service:        {} (project {}, repository {})",
        app.service, app.project.name, app.repository
    )];
    match &report.container {
        None => lines.push("live:           nothing: the service has no container".into()),
        Some(c) => {
            lines.push(format!(
                "live:           {}",
                live_tag.clone().unwrap_or_else(|| format!(
                    "{} (not a release of {})",
                    c.image, app.repository
                ))
            ));
            lines.push(format!(
                "container:      {} ({}), {}{}",
                c.name,
                short_id(&c.id),
                c.state,
                c.health
                    .as_ref()
                    .map(|h| format!(", {h}"))
                    .unwrap_or_default()
            ));
            if let Some(up) = c.uptime_seconds {
                lines.push(format!(
                    "uptime:         {}",
                    human_duration(std::time::Duration::from_secs(up.max(0) as u64))
                ));
            }
            lines.push(format!("restarts:       {}", c.restarts));
            if let Some(px) = &report.proxy {
                lines.push(format!(
                    "proxy:          {} ({}), sends traffic to {} (start-first switching)",
                    px.name, px.state, px.upstream
                ));
            }
        }
    }
    lines.push(match (&recorded, report.matches_record) {
        (None, _) => "dockmaster put: no record yet (no deploy or rollback by dockmaster)".into(),
        (Some(r), Some(true)) => format!("dockmaster put: {r} — matches what runs"),
        (Some(r), _) => format!(
            "dockmaster put: {r} — DRIFT: the container runs {} instead",
            report
                .container
                .as_ref()
                .map_or("nothing".to_string(), |c| c.image.clone())
        ),
    });
    lines.push(match report.latest_matches {
        None => format!("latest:         {} does not exist", app.image_ref("latest")),
        Some(true) => "latest:         names the live image".into(),
        Some(false) => format!(
            "latest:         DRIFT: {} is not the live image (a plain `docker compose up -d` would change what runs)",
            app.image_ref("latest")
        ),
    });
    lines.push(format!(
        "rollback to:    {}",
        target.unwrap_or_else(|| "none (no older release that is not failed)".into())
    ));
    if let Some(sb) = &report.standby {
        lines.push(format!(
            "standby:        {} ({}), {}",
            sb.tag.as_deref().unwrap_or("?"),
            sb.container,
            match (sb.mode, sb.memory_bytes) {
                (crate::settings::Standby::Hot, Some(m)) => format!(
                    "hot: running, drained, using {} of memory (a rollback to it is a probe and a switch)",
                    crate::output::human_size(m as i64)
                ),
                (crate::settings::Standby::Hot, None) => {
                    "hot: running, drained (a rollback to it is a probe and a switch)".into()
                }
                _ => "cold: stopped (a rollback to it starts it and gates it)".into(),
            }
        ));
    }
    for t in report.traffic.iter().flatten() {
        let who = if t.live {
            "live"
        } else if report
            .standby
            .as_ref()
            .is_some_and(|s| s.container == t.container)
        {
            "standby"
        } else {
            continue;
        };
        let pct = |n: u64| {
            if t.window_requests == 0 {
                "-".to_string()
            } else {
                format!("{:.1}%", n as f64 * 100.0 / t.window_requests as f64)
            }
        };
        lines.push(format!(
            "traffic ({who}):{} {} ({}): {} requests, 2xx {} 3xx {} 4xx {} 5xx {}, {} connection errors; last {}s: {} requests, 5xx {}, errors {}, p50 {} p95 {} p99 {}",
            if who == "live" { "  " } else { "" },
            t.release.as_deref().unwrap_or("?"),
            t.container,
            t.requests,
            t.status["2xx"],
            t.status["3xx"],
            t.status["4xx"],
            t.status["5xx"],
            t.conn_errors,
            t.window_seconds,
            t.window_requests,
            pct(t.window_5xx),
            pct(t.window_conn_errors),
            fmt_ms(t.p50_ms),
            fmt_ms(t.p95_ms),
            fmt_ms(t.p99_ms),
        ));
    }
    lines.push(format!(
        "releases:       {} kept, {} on disk",
        report.releases,
        human_size(report.disk_bytes)
    ));
    if let Some(e) = &report.last_event {
        lines.push(format!(
            "last event:     #{} {} {} → {}: {}{}",
            e.id,
            e.command,
            e.from_release.as_deref().unwrap_or("-"),
            e.to_release.as_deref().unwrap_or("-"),
            e.outcome,
            e.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        if e.outcome == "running" && crate::lock::Lock::is_free(&app.state_dir, &app.id()) {
            lines.push(
                "                that operation is no longer running (killed or crashed); what runs is shown above, and the next deploy or rollback proceeds".into(),
            );
        }
    }
    p.out(&lines.join("\n"));
    Ok(exit::OK)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |ms| format!("{ms:.1}ms"))
}
