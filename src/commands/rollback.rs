//! `dockmaster rollback [TAG]`: the guide's five steps.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use serde::Serialize;

use crate::cli::RollbackArgs;
use crate::commands::golive::{self, Outcome, Steps, Target, short_id};
use crate::commands::{Ctx, rollback_target};
use crate::compose;
use crate::error::{Error, Result, exit};
use crate::history::{Mark, Outcome as Recorded};
use crate::lock::Lock;
use crate::release::Tag;

const TOTAL: usize = 5;

#[derive(Serialize)]
struct Report {
    outcome: &'static str,
    service: String,
    repository: String,
    tag: String,
    previous: Option<String>,
    live: Option<String>,
    duration_ms: u128,
    reason: Option<String>,
}

pub async fn run(
    ctx: &Ctx,
    args: &RollbackArgs,
    wait_lock: Option<std::time::Duration>,
) -> Result<u8> {
    let started = Instant::now();
    let app = &ctx.app;
    let p = &ctx.printer;
    let timeout = args.timeout.unwrap_or(app.health.timeout);

    // The tag's form is checked before anything else: a typo must not even take the lock.
    let wanted: Option<Tag> = args.tag.as_deref().map(str::parse).transpose()?;

    let _lock = Lock::acquire(&app.state_dir, &app.id(), "rollback", wait_lock)?;
    tracing::debug!("rollback: locked");
    let history = ctx.history()?;
    history.close_abandoned()?;
    // Compose is found in the background (a process or two), awaited where needed.
    let compose = compose::Detected::start();
    let releases = ctx.engine.releases(&app.repository).await?;
    let live = ctx.live(&releases).await?;
    tracing::debug!("rollback: live found");
    let live_release = live.as_ref().and_then(|l| l.release.clone());
    let marks = history.marks()?;

    let (target, why) = match &wanted {
        Some(tag) => match releases.iter().find(|r| &r.tag == tag) {
            Some(r) => (r.clone(), "as asked".to_string()),
            None => {
                let list: Vec<String> = releases
                    .iter()
                    .take(15)
                    .map(|r| r.tag.to_string())
                    .collect();
                return Err(Error::bad_input(format!(
                    "no release {} exists; nothing was changed",
                    app.image_ref(&tag.to_string())
                ))
                .hint(if list.is_empty() {
                    format!(
                        "{} has no releases yet: run `dockmaster deploy`",
                        app.repository
                    )
                } else {
                    format!(
                        "the kept releases, newest first: {}{}",
                        list.join(", "),
                        if releases.len() > 15 {
                            ", … (`dockmaster releases` lists all)"
                        } else {
                            ""
                        }
                    )
                }));
            }
        },
        None => match rollback_target(&releases, live_release.as_ref(), &marks) {
            Some((r, why)) => (r.clone(), why.to_string()),
            None => {
                return Err(Error::bad_input(format!(
                    "there is no release to roll back to: none of the {} kept release(s) is older than the live one and not failed; nothing was changed",
                    releases.len()
                ))
                .hint("name one with `dockmaster rollback <tag>` (`dockmaster releases` lists them)"));
            }
        },
    };
    let target_tag = target.tag.to_string();

    p.banner(&format!(
        "dockmaster rollback: {} (service `{}`)\n\nTarget tag: {target_tag} ({why})",
        app.repository, app.service
    ));
    p.step(
        1,
        TOTAL,
        &format!("Verifying image {} exists", app.image_ref(&target_tag)),
    );
    p.ok(&format!("Image exists ({})", short_id(&target.image_id)));

    p.step(2, TOTAL, "Checking the current deployment");
    let current = live
        .as_ref()
        .map(|l| format!("{} ({})", l.container.image_ref, l.container.state))
        .unwrap_or_else(|| "no container".into());
    p.info(&format!("Current image: {current}"));
    p.info(&format!("Target image:  {}", app.image_ref(&target_tag)));
    let same = live
        .as_ref()
        .is_some_and(|l| l.container.image_id == target.image_id && l.container.running);
    if same && !args.yes {
        p.info(&format!("{target_tag} is already live."));
        if !confirm(&format!("Re-deploy {target_tag} anyway? [y/N] ")) {
            return Err(Error::bad_input(format!(
                "{target_tag} is already live; not re-deploying it without a yes"
            ))
            .hint("pass -y/--yes to re-deploy it (e.g. to restart it cleanly)"));
        }
    }

    let previous_tag = live_release.as_ref().map(|r| r.tag.to_string());
    let event = history.begin("rollback", previous_tag.as_deref(), Some(&target_tag))?;
    let steps = Steps {
        switch: 3,
        gate: 4,
        verify: 5,
        total: TOTAL,
    };
    let t = Target {
        tag: target_tag.clone(),
        image_id: target.image_id.clone(),
    };
    let mut report = Report {
        outcome: "failed",
        service: app.service.clone(),
        repository: app.repository.clone(),
        tag: target_tag.clone(),
        previous: previous_tag.clone(),
        live: None,
        duration_ms: 0,
        reason: None,
    };
    let choice = match crate::switch::choose(app, &ctx.engine, &t.image_id, args.strategy).await {
        Ok(c) => c,
        Err(e) => {
            history.end(event, Recorded::Failed, Some(&e.to_string()))?;
            return Err(e);
        }
    };
    let how = golive::How {
        choice: &choice,
        interruptible: true,
        keep_failed: false,
    };
    match golive::go_live(ctx, &compose, &t, timeout, &steps, &how).await? {
        Outcome::Healthy { .. } => {
            history.mark(&target_tag, Mark::KnownGood)?;
            history.end(event, Recorded::Succeeded, None)?;
            p.blank();
            p.banner("ROLLBACK COMPLETE");
            p.info(&format!(
                "Previous image: {}",
                live.as_ref()
                    .map_or("none", |l| l.container.image_ref.as_str())
            ));
            p.info(&format!("Current image:  {}", app.image_ref(&target_tag)));
            p.ok(&format!("Rolled back to {target_tag}"));
            report.outcome = "succeeded";
            report.live = Some(target_tag.clone());
            report.duration_ms = started.elapsed().as_millis();
            if args.json {
                p.json(&report);
            } else {
                p.out(&format!("DEPLOYED_{}={target_tag}", app.deployed_var));
            }
            Ok(exit::OK)
        }
        Outcome::Unhealthy {
            reason,
            container,
            interrupted,
            previous_serving,
            ..
        } => {
            if let Some(c) = &container {
                golive::show_logs(ctx, c, 50).await;
            }
            if !interrupted {
                history.mark(&target_tag, Mark::Failed)?;
            }
            let (outcome, state) = match live_release
                .as_ref()
                .filter(|r| r.image_id != target.image_id)
            {
                Some(prev) if previous_serving => {
                    report.live = Some(prev.tag.to_string());
                    (
                        Recorded::Failed,
                        format!(
                            "{} kept serving throughout and is still live (start-first: {target_tag} never took traffic)",
                            app.image_ref(&prev.tag.to_string())
                        ),
                    )
                }
                Some(prev) => {
                    let prev = Target {
                        tag: prev.tag.to_string(),
                        image_id: prev.image_id.clone(),
                    };
                    let (ok, state) = golive::restore(ctx, &compose, &prev, timeout).await?;
                    report.live = ok.then(|| prev.tag.clone());
                    (
                        if ok {
                            Recorded::RolledBack
                        } else {
                            Recorded::Failed
                        },
                        state,
                    )
                }
                None => (
                    Recorded::Failed,
                    "there was no other release live before to put back".to_string(),
                ),
            };
            history.end(
                event,
                if interrupted {
                    Recorded::Interrupted
                } else {
                    outcome
                },
                Some(reason.lines().next().unwrap_or_default()),
            )?;
            report.reason = Some(reason.clone());
            report.outcome = if report.live.is_some() && !previous_serving {
                "rolled-back"
            } else {
                "failed"
            };
            report.duration_ms = started.elapsed().as_millis();
            if args.json {
                p.json(&report);
            }
            Err(Error::failed(format!(
                "rollback to {} {}: {reason}\n{state}",
                app.image_ref(&target_tag),
                if interrupted { "was interrupted" } else { "failed" }
            ))
            .hint("`dockmaster status` shows what runs now; `dockmaster releases` lists the other kept releases"))
        }
    }
}

/// Ask on the terminal. Without one (cron, CI, ssh without -t) the answer is no.
fn confirm(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_lowercase().as_str(), "y" | "yes")
}
