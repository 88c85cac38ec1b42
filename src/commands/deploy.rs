//! `dockmaster deploy`: the guide's eight steps, with the safety the scripts lack.

use std::time::Instant;

use jiff::Timestamp;
use serde::Serialize;

use crate::cli::DeployArgs;
use crate::commands::golive::{self, Outcome, Steps, Target, short_id};
use crate::commands::{Ctx, releases_table, rollback_target};
use crate::compose;
use crate::engine::{self, BuildRequest};
use crate::error::{Error, Result, exit};
use crate::git::{Checkout, Update};
use crate::history::{Mark, Outcome as Recorded};
use crate::interrupt;
use crate::lock::Lock;
use crate::output::human_duration;
use crate::release::{self, Tag};

const TOTAL: usize = 8;

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
}

pub async fn run(
    ctx: &Ctx,
    args: &DeployArgs,
    wait_lock: Option<std::time::Duration>,
) -> Result<u8> {
    let started = Instant::now();
    let app = &ctx.app;
    let p = &ctx.printer;
    let timeout = args.timeout.unwrap_or(app.health.timeout);
    let checkout = Checkout::find(&app.build.context).await?;

    if args.dry_run {
        return dry_run(ctx, args, &checkout, started).await;
    }

    let _lock = Lock::acquire(&app.state_dir, &app.id(), "deploy", wait_lock)?;
    let history = ctx.history()?;
    history.close_abandoned()?;

    // Compose is found in the background (a process or two), awaited where needed.
    let compose = compose::Detected::start();
    let _releases = ctx.engine.releases(&app.repository).await?;
    let live = ctx.live(&_releases).await?;
    let previous: Option<Target> = live.as_ref().and_then(|l| {
        l.release.as_ref().map(|r| Target {
            tag: r.tag.to_string(),
            image_id: r.image_id.clone(),
        })
    });
    let previous_tag = previous.as_ref().map(|t| t.tag.clone());

    p.banner(&format!(
        "dockmaster deploy: {} (service `{}` of compose project `{}`)",
        app.repository, app.service, app.project.name
    ));
    let event = history.begin("deploy", previous_tag.as_deref(), None)?;
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
    };

    // Steps 1–5 change nothing live: any failure or interrupt here leaves the service as it was.
    let prepared = prepare(ctx, args, &checkout, &mut report).await;
    let (tag, image_id) = match prepared {
        Ok(t) => t,
        Err(e) => {
            let interrupted = interrupt::requested();
            history.end(
                event,
                if interrupted {
                    Recorded::Interrupted
                } else {
                    Recorded::Failed
                },
                Some(&first_line(&e.to_string())),
            )?;
            return Err(e);
        }
    };
    // No compose, no switch: after a build (which compose detection ran beside), say so
    // now. A deploy of an existing image may not need compose at all (a standby start).
    if report.built
        && let Err(e) = compose.get().await
    {
        history.end(event, Recorded::Failed, Some(&first_line(&e.to_string())))?;
        return Err(e.into());
    }

    history.set_target(event, &tag.to_string())?;
    if interrupt::requested() {
        history.end(
            event,
            Recorded::Interrupted,
            Some("interrupted before the switch"),
        )?;
        return Err(Error::failed(format!(
            "interrupted before the switch: {} (built and kept); nothing live was changed{}",
            app.image_ref(&tag.to_string()),
            live_words(previous_tag.as_deref())
        ))
        .hint("run `dockmaster deploy` again to put it live"));
    }

    let target = Target {
        tag: tag.to_string(),
        image_id: image_id.clone(),
    };
    let steps = Steps {
        switch: 6,
        gate: 7,
        verify: 8,
        total: TOTAL,
    };
    let choice = match crate::switch::choose(app, &ctx.engine, &image_id, args.strategy).await {
        Ok(c) => c,
        Err(e) => {
            history.end(event, Recorded::Failed, Some(&first_line(&e.to_string())))?;
            return Err(e);
        }
    };
    let how = golive::How {
        choice: &choice,
        interruptible: true,
        keep_failed: args.no_rollback,
    };
    match golive::go_live(ctx, &compose, &target, timeout, &steps, &how).await? {
        Outcome::Healthy { .. } => {
            history.mark(&target.tag, Mark::KnownGood)?;
            history.end(event, Recorded::Succeeded, None)?;
            report.outcome = "succeeded";
            report.live = Some(target.tag.clone());
            if app.retention.auto {
                crate::commands::prune::auto(ctx, &history).await;
            }
            p.blank();
            p.banner("DEPLOYMENT COMPLETE");
            report.duration_ms = started.elapsed().as_millis();
            if args.json {
                p.json(&report);
            } else {
                let releases = ctx.engine.releases(&app.repository).await?;
                let marks = history.marks()?;
                let live_rel = releases.iter().find(|r| r.tag == tag);
                let target = rollback_target(&releases, live_rel, &marks).map(|(r, _)| r);
                p.out("Recent releases:");
                p.out(releases_table(&releases, live_rel, target, &marks, 5, None).trim_end());
                p.out(&format!("DEPLOYED_{}={}", app.deployed_var, tag));
            }
            Ok(exit::OK)
        }
        Outcome::Unhealthy {
            reason,
            container,
            interrupted,
            previous_serving,
            at_gate,
        } => {
            if let Some(c) = &container {
                golive::show_logs(ctx, c, 50).await;
            }
            if !interrupted {
                history.mark(&target.tag, Mark::Failed)?;
            }
            report.reason = Some(reason.clone());
            let what = if interrupted {
                "interrupted"
            } else if at_gate {
                "failed its health gate"
            } else {
                "could not be put live"
            };
            let (outcome, message, hint) = match (&previous, args.no_rollback && !interrupted) {
                // Start-first: the new release never took traffic.
                (_, _) if previous_serving => (
                    Recorded::Failed,
                    format!(
                        "{} {what}: {reason}\n{}",
                        app.image_ref(&target.tag),
                        match &previous_tag {
                            Some(t) => format!(
                                "{} kept serving throughout and is still live (start-first: the new release never took traffic)",
                                app.image_ref(t)
                            ),
                            None => "this was the first release, so nothing is live".to_string(),
                        }
                    ),
                    "its logs are above; fix it and deploy again".to_string(),
                ),
                (_, true) => (
                    Recorded::Failed,
                    format!(
                        "{} {what}: {reason}; left in place as asked (--no-rollback)",
                        app.image_ref(&target.tag)
                    ),
                    previous_tag
                        .as_ref()
                        .map_or("fix the release and deploy again".to_string(), |t| {
                            format!("`dockmaster rollback {t}` puts the previous release back")
                        }),
                ),
                (None, false) => (
                    Recorded::Failed,
                    format!(
                        "{} {what}: {reason}; this was the first release, so there is nothing to go back to",
                        app.image_ref(&target.tag)
                    ),
                    "fix the release (its logs are above) and deploy again".to_string(),
                ),
                (Some(prev), false) => {
                    let (ok, state) = golive::restore(ctx, &compose, prev, timeout).await?;
                    report.rolled_back = ok;
                    if ok {
                        history.begin_end_auto_rollback(&target.tag, &prev.tag, &reason)?;
                    }
                    (
                        if ok {
                            Recorded::RolledBack
                        } else {
                            Recorded::Failed
                        },
                        format!("{} {what}: {reason}\n{state}", app.image_ref(&target.tag)),
                        if ok {
                            "its logs are above; fix it and deploy again".to_string()
                        } else {
                            format!(
                                "look at `dockmaster status` and `dockmaster logs`; `dockmaster rollback <tag>` puts any kept release live ({} were tried)",
                                [target.tag.as_str(), prev.tag.as_str()].join(", ")
                            )
                        },
                    )
                }
            };
            report.live = if report.rolled_back || previous_serving {
                previous_tag.clone()
            } else if args.no_rollback {
                Some(target.tag.clone())
            } else {
                None
            };
            history.end(
                event,
                // Interrupted is what happened, whatever was put back (the reason and the
                // auto-rollback event say the rest).
                if interrupted {
                    Recorded::Interrupted
                } else {
                    outcome
                },
                Some(&first_line(&reason)),
            )?;
            report.outcome = if report.rolled_back {
                "rolled-back"
            } else {
                "failed"
            };
            report.duration_ms = started.elapsed().as_millis();
            if args.json {
                p.json(&report);
            }
            Err(Error::failed(message).hint(hint))
        }
    }
}

/// Steps 1–5: update the checkout, tag, build, verify. Nothing live changes here.
async fn prepare(
    ctx: &Ctx,
    args: &DeployArgs,
    checkout: &Checkout,
    report: &mut Report,
) -> Result<(Tag, String)> {
    let app = &ctx.app;
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
                &from[..7.min(from.len())],
                &to[..7.min(to.len())],
                crate::commands::plural(commits as usize, "commit", "commits")
            )),
        }
    }
    stop_if_interrupted()?;

    p.step(2, TOTAL, "Computing the image tag");
    let commit = checkout.head().await?;
    report.commit = Some(commit.id.clone());
    let releases = ctx.engine.releases(&app.repository).await?;
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
                &commit.id[..7],
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
            };
            tokio::select! {
                r = engine::build(&req, p) => r?,
                _ = interrupt::wait() => {
                    return Err(Error::failed("interrupted during the build; nothing live was changed")
                        .hint("run `dockmaster deploy` again when ready"));
                }
            }
            report.built = true;
            p.ok(&format!(
                "Image built in {}",
                human_duration(build_started.elapsed())
            ));
        }
    }
    stop_if_interrupted()?;

    p.step(5, TOTAL, "Verifying the image");
    let image_id = ctx.engine.image_id(&image).await?.ok_or_else(|| {
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

fn live_words(tag: Option<&str>) -> String {
    tag.map(|t| format!(" ({t} is still live)"))
        .unwrap_or_default()
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
    let app = &ctx.app;
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
                    &remote[..7.min(remote.len())]
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
    let releases = ctx.engine.releases(&app.repository).await?;
    let live = ctx.live(&releases).await?;
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
        duration_ms: started.elapsed().as_millis(),
        reason: clean.as_ref().err().map(|e| first_line(&e.to_string())),
    };
    if args.json {
        p.json(&report);
    }
    clean.map(|_| exit::OK)
}
