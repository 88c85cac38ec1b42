//! `dockmaster deploy`: the guide's eight steps, with the safety the scripts lack.
//!
//! This module prepares (steps 1–5: checkout, tag, build, verify), hands the release to
//! `golive` (steps 6–8), records the outcome once and prints it.

use std::time::Instant;

use jiff::Timestamp;
use serde::Serialize;

use crate::cli::DeployArgs;
use crate::commands::progress::Steps;
use crate::commands::{Ctx, GoLivePrinter, releases_table, rollback_target};
use crate::engine::{self, BuildEvent, BuildRequest};
use crate::error::{Error, Result, exit};
use crate::git::{Checkout, Update};
use crate::golive::{self, Live, Plan, Stage};
use crate::history::{History, Mark, Outcome, Recording};
use crate::interrupt;
use crate::lock::Lock;
use crate::output::{human_duration, short_id};
use crate::release::{self, Tag, short_sha};
use crate::runtime::{Candidate, Choice};
use crate::runtime::{Runtime, Target};
use crate::watch::{self, End};

const TOTAL: usize = 8;
const STEPS: Steps = Steps {
    start: 6,
    gate: 7,
    switch: 8,
    total: TOTAL,
};

#[derive(Serialize)]
struct Report {
    outcome: &'static str,
    service: String,
    repository: String,
    tag: Option<String>,
    commit: Option<String>,
    previous: Option<String>,
    built: bool,
    live: Option<String>,
    rolled_back: bool,
    dry_run: bool,
    duration_ms: u128,
    reason: Option<String>,
    /// `deploy --watch`: how the watch ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    watch: Option<WatchReport>,
}

#[derive(Serialize)]
struct WatchReport {
    /// `kept`, `rolled-back`, `superseded` (another deploy or rollback) or `interrupted`.
    outcome: &'static str,
    watched_ms: u128,
    reason: Option<String>,
}

pub async fn run(
    ctx: &Ctx,
    args: &DeployArgs,
    wait_lock: Option<std::time::Duration>,
) -> Result<u8> {
    let started = Instant::now();
    let app = ctx.app();
    let p = &ctx.printer;
    let checkout = Checkout::find(&app.build.context).await?;

    if args.dry_run {
        return dry_run(ctx, args, &checkout, started).await;
    }

    let watch_for = args.watch.or(app.watch.duration);
    if watch_for.is_some() && ctx.rt.swarm().is_some() {
        return Err(Error::bad_input(
            "deploy --watch (or [watch] duration) needs dockmaster's counting proxy, which a Swarm service does not have yet; nothing was changed",
        )
        .hint("deploy without --watch (and without [watch] duration in dockmaster.toml) on runtime = \"swarm\""));
    }
    let lock = ctx.rt.lock("deploy", wait_lock).await?;
    if let Some(t) = &lock.taken_over {
        p.warn(t);
    }
    let history = ctx.history_under_lock().await?;
    ctx.rt.warm_up();
    let (_, serving) = ctx.releases_and_serving().await?;
    ctx.rt.check_drivable()?;
    let previous: Option<Target> = serving
        .as_ref()
        .and_then(|s| s.release.as_ref().map(Target::of));
    let previous_tag = previous.as_ref().map(|t| t.tag.clone());

    p.banner(&format!(
        "dockmaster deploy: {} (service `{}` of compose project `{}`)",
        app.repository, app.service, app.project.name
    ));
    let rec = history.record("deploy", previous_tag.as_deref(), None)?;
    let mut report = Report {
        outcome: "failed",
        service: app.service.clone(),
        repository: app.repository.clone(),
        tag: None,
        commit: None,
        previous: previous_tag.clone(),
        built: false,
        live: previous_tag.clone(),
        rolled_back: false,
        dry_run: false,
        duration_ms: 0,
        reason: None,
        watch: None,
    };

    let gone_live = async {
        // Steps 1–5 change nothing live: any failure or interrupt here leaves the service as
        // it was.
        let (tag, image_id) = prepare(ctx, &checkout, args, &mut report).await?;
        // No compose, no switch: after a build (which compose detection ran beside), say so
        // now. A deploy of an existing image may not need compose at all (a standby start).
        if report.built {
            ctx.rt.compose_ready().await?;
        }
        rec.set_target(&tag.to_string())?;
        if interrupt::requested() {
            return Err(Error::failed(format!(
                "interrupted before the switch: {} (built and kept); nothing live was changed{}",
                app.image_ref(&tag.to_string()),
                previous_tag
                    .as_ref()
                    .map(|t| format!(" ({t} is still live)"))
                    .unwrap_or_default()
            ))
            .hint("run `dockmaster deploy` again to put it live"));
        }
        let target = Target {
            tag: tag.to_string(),
            image_id,
        };
        for done in ctx.rt.prepare(&target).await? {
            p.ok(&done);
        }
        let plan = Plan {
            choice: ctx.rt.choose(&target, args.strategy).await?,
            target,
            previous: previous.clone(),
            serving: serving.as_ref().map(|s| s.container.name.clone()),
            standby: app.standby,
            timeout: args.timeout.unwrap_or(app.health.timeout),
            drain: app.drain_timeout,
            keep_failed: args.no_rollback,
        };
        let sink = GoLivePrinter {
            printer: p,
            app,
            steps: STEPS,
        };
        // The previous release's own p95 over its last window, before traffic leaves it:
        // what a watch compares the new release's latency with.
        let baseline = match (watch_for, &serving) {
            (Some(_), Some(s)) => ctx
                .rt
                .traffic(app.watch.window)
                .await
                .ok()
                .flatten()
                .and_then(|all| all.into_iter().find(|t| t.container == s.container.name))
                .and_then(|t| t.counters.window.p95),
            _ => None,
        };
        let live = golive::go_live(&ctx.rt, &plan, &sink).await?;
        Ok((plan.target, live, plan.choice, baseline))
    }
    .await;
    let (target, live, choice, baseline) = match gone_live {
        Ok(done) => done,
        Err(e) => {
            rec.end_with_error(&e)?;
            ctx.share_history(&history).await;
            report.reason = Some(first_line(&e.to_string()));
            report.duration_ms = started.elapsed().as_millis();
            if args.json {
                p.json(&report);
            }
            return Err(e);
        }
    };

    if let (Live::New { candidate, .. }, Some(duration)) = (&live, watch_for) {
        // The lock goes now: a deploy or rollback run meanwhile ends the watch.
        drop(lock);
        let watched = Watched {
            candidate,
            target: &target,
            previous: previous.as_ref(),
            choice: &choice,
            baseline,
            duration,
        };
        return watch_phase(ctx, args, &history, rec, &watched, report, started).await;
    }
    drop(lock);
    let (outcome, reason) = super::recorded(&live);
    match &live {
        Live::New { .. } => history.mark(&target.tag, Mark::KnownGood)?,
        Live::PreviousRestored { failure, restored } => {
            history.begin_end_auto_rollback(&target.tag, &restored.tag, &failure.reason)?;
        }
        _ => {}
    }
    if live.failure().is_some_and(|f| !f.interrupted) {
        history.mark(&target.tag, Mark::Failed)?;
    }
    rec.end(outcome, reason.as_deref())?;
    ctx.share_history(&history).await;
    report.duration_ms = started.elapsed().as_millis();
    report.reason = reason;
    report.live = super::live_tag(&live, &target, previous_tag.as_deref());
    report.rolled_back = matches!(live, Live::PreviousRestored { .. });
    report.outcome = match (&live, report.rolled_back) {
        (Live::New { .. }, _) => "succeeded",
        (_, true) => "rolled-back",
        _ => "failed",
    };

    if let Live::New { .. } = live {
        if app.retention.auto {
            crate::commands::prune::auto(ctx, &history).await;
        }
        p.blank();
        p.banner("DEPLOYMENT COMPLETE");
        if args.json {
            p.json(&report);
        } else {
            let releases = ctx.rt.releases().await?;
            let marks = history.marks()?;
            let live_rel = releases.iter().find(|r| r.tag.to_string() == target.tag);
            let rollback_to = rollback_target(&releases, live_rel, &marks).map(|(r, _)| r);
            let standby = match &live {
                Live::New { retired, .. } => retired.standby.as_ref().and_then(|(name, mode)| {
                    releases
                        .iter()
                        .find(|r| name.contains(&format!("-{}-", r.tag)))
                        .map(|r| (r.tag.to_string(), *mode))
                }),
                _ => None,
            };
            p.out("Recent releases:");
            p.out(
                releases_table(
                    &releases,
                    live_rel,
                    rollback_to,
                    &marks,
                    standby.as_ref(),
                    5,
                    None,
                )
                .trim_end(),
            );
            p.out(&format!("DEPLOYED_{}={}", app.deployed_var, target.tag));
        }
        return Ok(exit::OK);
    }
    if args.json {
        p.json(&report);
    }
    Err(failure_error(ctx, &live, &target, previous_tag.as_deref()))
}

/// The error a failed deploy ends with: what failed, why, and what is live now.
fn failure_error(ctx: &Ctx, live: &Live, target: &Target, previous: Option<&str>) -> Error {
    let app = ctx.app();
    let image = app.image_ref(&target.tag);
    let Some(f) = live.failure() else {
        return Error::failed(format!("{image} went live"));
    };
    let what = if f.interrupted {
        "was interrupted"
    } else if f.stage == Stage::Gate {
        "failed its health gate"
    } else {
        "could not be put live"
    };
    let reason = &f.reason;
    let rollback_hint = |prev: Option<&str>| {
        prev.map_or("fix the release and deploy again".to_string(), |t| {
            format!("`dockmaster rollback {t}` puts the previous release back")
        })
    };
    match live {
        Live::New { .. } => unreachable!("handled above: a failure exists"),
        Live::PreviousKept { .. } => Error::failed(format!(
            "{image} {what}: {reason}
{}",
            match previous {
                Some(t) => format!(
                    "{} kept serving throughout and is still live (start-first: the new release never took traffic)",
                    app.image_ref(t)
                ),
                None => "what served before kept serving throughout (start-first: the new release never took traffic)".into(),
            }
        ))
        .hint("its logs are above; fix it and deploy again"),
        Live::NothingLive { .. } => Error::failed(format!(
            "{image} {what}: {reason}; this was the first release, so there is nothing to go back to"
        ))
        .hint("fix the release (its logs are above) and deploy again"),
        Live::FailedLeftInPlace { .. } => Error::failed(format!(
            "{image} {what}: {reason}; left in place as asked (--no-rollback)"
        ))
        .hint(rollback_hint(previous)),
        Live::PreviousRestored { restored, .. } => Error::failed(format!(
            "{image} {what}: {reason}
{} is live again and healthy",
            app.image_ref(&restored.tag)
        ))
        .hint("its logs are above; fix it and deploy again"),
        Live::Down {
            restore_failure, ..
        } => Error::failed(format!(
            "{image} {what}: {reason}
{}; the service is DOWN or unhealthy",
            match previous {
                Some(t) => format!(
                    "putting {} back failed too ({restore_failure})",
                    app.image_ref(t)
                ),
                None => restore_failure.clone(),
            }
        ))
        .hint(format!(
            "look at `dockmaster status` and `dockmaster logs`; `dockmaster rollback <tag>` puts any kept release live ({} were tried)",
            std::iter::once(target.tag.as_str())
                .chain(previous)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Steps 1–5: update the checkout, tag, build, verify. Nothing live changes here.
async fn prepare(
    ctx: &Ctx,
    checkout: &Checkout,
    args: &DeployArgs,
    report: &mut Report,
) -> Result<(Tag, String)> {
    let app = ctx.app();
    let p = &ctx.printer;

    if args.no_pull {
        p.step(1, TOTAL, "Checking the checkout (--no-pull: not fetching)");
        checkout.ensure_clean().await?;
        p.ok(&format!("{} is clean", checkout.root.display()));
    } else {
        let upstream = checkout
            .upstream(app.remote.as_deref(), app.branch.as_deref())
            .await?;
        p.step(1, TOTAL, &format!("Updating the checkout from {upstream}"));
        checkout.ensure_clean().await?;
        match checkout.fast_forward(&upstream).await? {
            Update::UpToDate => p.ok(&format!("Up to date with {upstream}")),
            Update::FastForwarded { from, to, commits } => p.ok(&format!(
                "Fast-forwarded {}..{} ({})",
                short_sha(&from),
                short_sha(&to),
                crate::commands::plural(commits as usize, "commit", "commits")
            )),
        }
    }
    stop_if_interrupted()?;

    p.step(2, TOTAL, "Computing the image tag");
    let commit = checkout.head().await?;
    report.commit = Some(commit.id.clone());
    let releases = ctx.rt.releases().await?;
    let existing = releases.iter().find(|r| r.commit == commit.id);
    let tag = match existing {
        Some(r) => r.tag.clone(),
        None => Tag::new(Timestamp::now(), &commit.id),
    };
    report.tag = Some(tag.to_string());
    p.ok(&format!("Image tag: {tag} ({})", commit.subject));

    p.step(3, TOTAL, &format!("Setting {}", app.deployed_var));
    p.ok(&format!("{}={tag}", app.deployed_var));

    let image = app.image_ref(&tag.to_string());
    match existing {
        Some(r) => {
            p.step(4, TOTAL, &format!("Building {image}"));
            p.ok(&format!(
                "Skipped: {image} already holds commit {} (built {})",
                short_sha(&commit.id),
                r.created.strftime("%Y-%m-%d %H:%M UTC")
            ));
        }
        None => {
            p.step(4, TOTAL, &format!("Building {image}"));
            let build_started = Instant::now();
            let source = checkout
                .source_url(app.remote.as_deref().unwrap_or("origin"))
                .await;
            let req = BuildRequest {
                image: image.clone(),
                context: app.build.context.clone(),
                dockerfile: app.build.dockerfile.clone(),
                target: app.build.target.clone(),
                args: app.build.args.clone(),
                labels: vec![
                    (release::LABEL_REVISION.into(), commit.id.clone()),
                    (release::LABEL_CREATED.into(), Timestamp::now().to_string()),
                    (release::LABEL_VERSION.into(), tag.to_string()),
                    (release::LABEL_SOURCE.into(), source),
                    (release::LABEL_SUBJECT.into(), commit.subject.clone()),
                    (release::LABEL_APP.into(), app.id()),
                ],
                buildkit: app.env.buildkit,
            };
            let progress = p.progress(&format!("building {image}"));
            let mut on = |event: BuildEvent<'_>| {
                match event {
                BuildEvent::Line(line) => progress.line(line),
                BuildEvent::Retrying => p.warn(
                    "an image the build took from its cache was removed meanwhile (an image removal elsewhere); building again",
                ),
            }
            };
            let built = tokio::select! {
                r = engine::build(&req, &mut on) => r.map_err(Error::from),
                _ = interrupt::wait() => Err(Error::failed("interrupted during the build; nothing live was changed")
                        .hint("run `dockmaster deploy` again when ready")),
            };
            progress.finish();
            built?;
            report.built = true;
            p.ok(&format!(
                "Image built in {}",
                human_duration(build_started.elapsed())
            ));
        }
    }
    stop_if_interrupted()?;

    p.step(5, TOTAL, "Verifying the image");
    let image_id = ctx.engine().image_id(&image).await?.ok_or_else(|| {
        Error::failed(format!("{image} does not exist after the build"))
            .hint("`docker images` shows what the build produced; deploy again")
    })?;
    p.ok(&format!("Image {image} exists ({})", short_id(&image_id)));
    Ok((tag, image_id))
}

fn stop_if_interrupted() -> Result<()> {
    if interrupt::requested() {
        Err(Error::failed("interrupted; nothing live was changed")
            .hint("run `dockmaster deploy` again when ready"))
    } else {
        Ok(())
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// `--dry-run`: say what a deploy would do, without fetching, building or switching.
async fn dry_run(
    ctx: &Ctx,
    args: &DeployArgs,
    checkout: &Checkout,
    started: Instant,
) -> Result<u8> {
    let app = ctx.app();
    let p = &ctx.printer;
    p.banner(&format!(
        "dockmaster deploy --dry-run: {} (service `{}`)",
        app.repository, app.service
    ));
    let clean = checkout.ensure_clean().await;
    let mut commit = checkout.head().await?;
    let mut notes = vec![];
    if let Err(e) = &clean {
        notes.push(first_line(&e.to_string()));
    }
    if !args.no_pull {
        let upstream = checkout
            .upstream(app.remote.as_deref(), app.branch.as_deref())
            .await?;
        match checkout.ls_remote(&upstream).await {
            Ok(remote) if remote.is_empty() => {
                notes.push(format!("{upstream} does not exist on the remote"))
            }
            Ok(remote) if remote != commit.id => {
                notes.push(format!(
                    "would fast-forward to {upstream} at {}",
                    short_sha(&remote)
                ));
                commit.subject = checkout.subject_of(&remote).await.unwrap_or_default();
                commit.id = remote;
            }
            Ok(_) => notes.push(format!("up to date with {upstream}")),
            Err(e) => notes.push(format!(
                "cannot reach {upstream}: {}",
                first_line(&e.to_string())
            )),
        }
    }
    let (releases, live) = ctx.releases_and_serving().await?;
    let existing = releases.iter().find(|r| r.commit == commit.id);
    let tag = existing
        .map(|r| r.tag.clone())
        .unwrap_or_else(|| Tag::new(Timestamp::now(), &commit.id));
    let build = existing.is_none();
    for n in &notes {
        p.info(n);
    }
    p.info(&format!(
        "would {} {} and put it live in place of {}",
        if build {
            "build"
        } else {
            "reuse (already built)"
        },
        app.image_ref(&tag.to_string()),
        live.as_ref()
            .and_then(|l| l.tag_string())
            .unwrap_or_else(|| "nothing (first deploy)".into())
    ));
    let report = Report {
        outcome: if clean.is_ok() {
            "would-deploy"
        } else {
            "would-refuse"
        },
        service: app.service.clone(),
        repository: app.repository.clone(),
        tag: Some(tag.to_string()),
        commit: Some(commit.id.clone()),
        previous: live.as_ref().and_then(|l| l.tag_string()),
        built: build,
        live: live.as_ref().and_then(|l| l.tag_string()),
        rolled_back: false,
        dry_run: true,
        watch: None,
        duration_ms: started.elapsed().as_millis(),
        reason: clean.as_ref().err().map(|e| first_line(&e.to_string())),
    };
    if args.json {
        p.json(&report);
    }
    Ok(clean.map(|_| exit::OK)?)
}

/// What a watch needs to know about the deploy it follows.
struct Watched<'a> {
    candidate: &'a Candidate,
    target: &'a Target,
    previous: Option<&'a Target>,
    choice: &'a Choice,
    baseline: Option<std::time::Duration>,
    duration: std::time::Duration,
}

/// `deploy --watch`: watch the new release, keep it or roll it back, record it once.
async fn watch_phase(
    ctx: &Ctx,
    args: &DeployArgs,
    history: &History,
    rec: Recording<'_>,
    w: &Watched<'_>,
    mut report: Report,
    started: Instant,
) -> Result<u8> {
    let app = ctx.app();
    let p = &ctx.printer;
    let _watching = Lock::acquire(
        &app.state_dir,
        &super::watch_lock_name(app),
        "deploy --watch",
        Some(std::time::Duration::from_secs(5)),
    )?;
    rec.watching()?;
    p.blank();
    p.banner(&format!(
        "DEPLOYED {} — WATCHING IT FOR {}",
        w.target.tag,
        humantime::format_duration(w.duration)
    ));
    let ws = &app.watch;
    p.info(&format!(
        "Rolls back on its own if, over the last {} (with at least {} requests), 5xx responses exceed {:.1}%, connection errors {:.1}%, or the p95 latency {:.1}× {}; or if it restarts, stops or turns unhealthy. Ctrl-C ends the watch and keeps it.",
        humantime::format_duration(ws.window),
        ws.min_requests,
        ws.max_5xx * 100.0,
        ws.max_conn_errors * 100.0,
        ws.max_p95_ratio,
        match w.baseline {
            Some(b) => format!("the previous release's {}", human_duration(b)),
            None => "(no previous p95 to compare with: latency is not judged)".to_string(),
        }
    ));
    let on_tick = |t: &watch::Tick| {
        // On a terminal one line that updates; in a log, a line every 10 s.
        let line = match &t.window {
            Some(w) => format!(
                "watching: {} requests in the last {}s, 5xx {}, errors {}, p95 {}; {} left",
                w.requests,
                w.seconds,
                w.status5xx,
                w.conn_errors,
                w.p95.map_or("-".into(), human_duration),
                human_duration(t.left)
            ),
            None => format!(
                "watching the container (no proxy counts its traffic); {} left",
                human_duration(t.left)
            ),
        };
        p.live_line(&line, t.elapsed.as_secs().is_multiple_of(10));
    };
    let end = watch::watch(&ctx.rt, ws, w.duration, w.candidate, w.baseline, &on_tick).await;
    p.end_live_line();
    let end = match end {
        Ok(end) => end,
        Err(e) => {
            rec.end_with_error(&e)?;
            return Err(e);
        }
    };
    let watch_report = |outcome, after: std::time::Duration, reason: Option<String>| WatchReport {
        outcome,
        watched_ms: after.as_millis(),
        reason,
    };
    match end {
        End::Kept { watched } => {
            history.mark(&w.target.tag, Mark::KnownGood)?;
            let line = format!("watched {}: kept", human_duration(watched));
            rec.end(Outcome::Succeeded, Some(&line))?;
            p.ok(&format!("{} {line}", w.target.tag));
            if app.retention.auto {
                crate::commands::prune::auto(ctx, history).await;
            }
            report.outcome = "succeeded";
            report.live = Some(w.target.tag.clone());
            report.watch = Some(watch_report("kept", watched, None));
            finish(ctx, args, &report, &w.target.tag)?;
            Ok(exit::OK)
        }
        End::Interrupted { after } => {
            let line = format!(
                "watch ended by Ctrl-C after {}; kept",
                human_duration(after)
            );
            rec.end(Outcome::Succeeded, Some(&line))?;
            p.warn(&format!("{line}: {} stays live", w.target.tag));
            report.outcome = "succeeded";
            report.live = Some(w.target.tag.clone());
            report.watch = Some(watch_report("interrupted", after, Some(line)));
            finish(ctx, args, &report, &w.target.tag)?;
            Ok(exit::OK)
        }
        End::Superseded { now, after } => {
            let (_, serving) = ctx.releases_and_serving().await?;
            let now_tag = serving.as_ref().and_then(|s| s.tag_string());
            let line = format!(
                "watch ended after {}: another deploy or rollback put {} live",
                human_duration(after),
                now_tag
                    .as_deref()
                    .or(now.as_deref())
                    .unwrap_or("something else")
            );
            rec.end(Outcome::Succeeded, Some(&line))?;
            p.warn(&line);
            report.outcome = "succeeded";
            report.live = now_tag.clone();
            report.watch = Some(watch_report("superseded", after, Some(line)));
            finish(ctx, args, &report, now_tag.as_deref().unwrap_or(""))?;
            Ok(exit::OK)
        }
        End::Tripped { reason, after } => {
            p.fail(&format!(
                "{} degraded after {}: {reason}",
                w.target.tag,
                human_duration(after)
            ));
            history.mark(&w.target.tag, Mark::Failed)?;
            let why = format!("watch: {reason}");
            report.watch = Some(watch_report("rolled-back", after, Some(reason.clone())));
            report.reason = Some(why.clone());
            let Some(previous) = w.previous else {
                rec.end(Outcome::Failed, Some(&why))?;
                report.outcome = "failed";
                report.live = Some(w.target.tag.clone());
                if args.json {
                    p.json(&report);
                }
                return Err(Error::failed(format!(
                    "{} degraded while watched: {reason}; it was the first release, so there is nothing to roll back to and it stays live",
                    app.image_ref(&w.target.tag)
                ))
                .hint("its logs (`dockmaster logs`) say why; fix it and deploy again"));
            };
            // Back under the lock: the rollback is an operation like any other.
            let _lock = ctx
                .rt
                .lock(
                    "deploy --watch (rollback)",
                    Some(std::time::Duration::from_secs(60)),
                )
                .await?;
            let plan = Plan {
                target: previous.clone(),
                previous: Some(w.target.clone()),
                serving: Some(w.candidate.name.clone()),
                choice: w.choice.clone(),
                // The degraded release is not kept as a standby.
                standby: crate::settings::Standby::None,
                timeout: args.timeout.unwrap_or(app.health.timeout),
                drain: app.drain_timeout,
                keep_failed: false,
            };
            let sink = GoLivePrinter {
                printer: p,
                app,
                steps: Steps {
                    start: 1,
                    gate: 2,
                    switch: 3,
                    total: 3,
                },
            };
            p.blank();
            p.warn(&format!("Rolling back to {}", app.image_ref(&previous.tag)));
            let back = golive::go_live(&ctx.rt, &plan, &sink).await;
            let back = match back {
                Ok(b) => b,
                Err(e) => {
                    rec.end(Outcome::Failed, Some(&why))?;
                    return Err(e);
                }
            };
            report.live = super::live_tag(&back, previous, Some(&w.target.tag));
            if let Live::New { .. } = back {
                rec.end(Outcome::RolledBack, Some(&why))?;
                report.outcome = "rolled-back";
                report.rolled_back = true;
                report.duration_ms = started.elapsed().as_millis();
                if args.json {
                    p.json(&report);
                } else {
                    p.out(&format!("DEPLOYED_{}={}", app.deployed_var, previous.tag));
                }
                return Err(Error::failed(format!(
                    "{} was rolled back by the watch: {reason}\n{} is live again",
                    app.image_ref(&w.target.tag),
                    app.image_ref(&previous.tag)
                ))
                .hint("its logs (`dockmaster logs` shows the live release's; `docker logs` the rest) say why; fix it and deploy again"));
            }
            rec.end(Outcome::Failed, Some(&why))?;
            report.outcome = "failed";
            if args.json {
                p.json(&report);
            }
            Err(Error::failed(format!(
                "{} degraded while watched ({reason}), and rolling back to {} failed: {}",
                app.image_ref(&w.target.tag),
                app.image_ref(&previous.tag),
                back.failure().map_or("", |f| f.reason.as_str())
            ))
            .hint("`dockmaster status` shows what runs now; `dockmaster rollback <tag>` puts any kept release live"))
        }
    }
}

/// The end of a successful deploy: the JSON report, or the recent releases and
/// `DEPLOYED_<VAR>=<tag>` last on stdout.
fn finish(ctx: &Ctx, args: &DeployArgs, report: &Report, live_tag: &str) -> Result<()> {
    let p = &ctx.printer;
    if args.json {
        p.json(report);
    } else {
        p.out(&format!("DEPLOYED_{}={live_tag}", ctx.app().deployed_var));
    }
    Ok(())
}
