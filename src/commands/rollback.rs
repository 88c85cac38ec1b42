//! `dockmaster rollback [TAG]`: the guide's five steps. This module picks the release and
//! asks before re-deploying the live one; `golive` puts it live; the outcome is recorded once.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use serde::Serialize;

use crate::cli::RollbackArgs;
use crate::commands::progress::Steps;
use crate::commands::{Ctx, GoLivePrinter, rollback_target};
use crate::error::{Error, Result, exit};
use crate::golive::{self, Live, Plan};
use crate::history::Mark;
use crate::output::short_id;
use crate::release::Tag;
use crate::runtime::{Runtime, Target};

const TOTAL: usize = 5;
const STEPS: Steps = Steps {
    start: 3,
    gate: 4,
    switch: 5,
    total: TOTAL,
};

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
    let app = ctx.app();
    let p = &ctx.printer;

    // The tag's form is checked before anything else: a typo must not even take the lock.
    let wanted: Option<Tag> = args.tag.as_deref().map(str::parse).transpose()?;

    let _lock = ctx.rt.lock("rollback", wait_lock).await?;
    if let Some(t) = &_lock.taken_over {
        ctx.printer.warn(t);
    }
    let history = ctx.history_under_lock().await?;
    let (releases, serving) = ctx.releases_and_serving().await?;
    ctx.rt.check_drivable()?;
    let live_release = serving.as_ref().and_then(|l| l.release.clone());
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
    let target = Target::of(&target);

    p.banner(&format!(
        "dockmaster rollback: {} (service `{}`)\n\nTarget tag: {} ({why})",
        app.repository, app.service, target.tag
    ));
    p.step(
        1,
        TOTAL,
        &format!("Verifying image {} exists", app.image_ref(&target.tag)),
    );
    p.ok(&format!("Image exists ({})", short_id(&target.image_id)));

    p.step(2, TOTAL, "Checking the current deployment");
    let current = serving
        .as_ref()
        .map(|l| format!("{} ({})", l.container.image_ref, l.container.state))
        .unwrap_or_else(|| "no container".into());
    p.info(&format!("Current image: {current}"));
    p.info(&format!("Target image:  {}", app.image_ref(&target.tag)));
    let same = serving
        .as_ref()
        .is_some_and(|l| l.container.image_id == target.image_id && l.container.running);
    if same && !args.yes {
        p.info(&format!("{} is already live.", target.tag));
        if !confirm(&format!("Re-deploy {} anyway? [y/N] ", target.tag)) {
            return Err(Error::bad_input(format!(
                "{} is already live; not re-deploying it without a yes",
                target.tag
            ))
            .hint("pass -y/--yes to re-deploy it (e.g. to restart it cleanly)"));
        }
    }

    let previous = live_release.as_ref().map(Target::of);
    let previous_tag = previous.as_ref().map(|t| t.tag.clone());
    let rec = history.record("rollback", previous_tag.as_deref(), Some(&target.tag))?;
    let gone_live = async {
        for done in ctx.rt.prepare(&target).await? {
            p.ok(&done);
        }
        let plan = Plan {
            choice: ctx.rt.choose(&target, args.strategy).await?,
            target: target.clone(),
            // Putting back a release that is the target itself would undo nothing.
            previous: previous.clone().filter(|p| p.image_id != target.image_id),
            serving: serving.as_ref().map(|s| s.container.name.clone()),
            standby: app.standby,
            timeout: args.timeout.unwrap_or(app.health.timeout),
            drain: app.drain_timeout,
            keep_failed: false,
        };
        let sink = GoLivePrinter {
            printer: p,
            app,
            steps: STEPS,
        };
        golive::go_live(&ctx.rt, &plan, &sink).await
    }
    .await;
    let mut report = Report {
        outcome: "failed",
        service: app.service.clone(),
        repository: app.repository.clone(),
        tag: target.tag.clone(),
        previous: previous_tag.clone(),
        live: None,
        duration_ms: 0,
        reason: None,
    };
    let live = match gone_live {
        Ok(live) => live,
        Err(e) => {
            rec.end_with_error(&e)?;
            ctx.share_history(&history).await;
            report.reason = e.to_string().lines().next().map(str::to_string);
            report.duration_ms = started.elapsed().as_millis();
            if args.json {
                p.json(&report);
            }
            return Err(e);
        }
    };
    let (outcome, reason) = super::recorded(&live);
    if matches!(live, Live::New { .. }) {
        history.mark(&target.tag, Mark::KnownGood)?;
    } else if live.failure().is_some_and(|f| !f.interrupted) {
        history.mark(&target.tag, Mark::Failed)?;
    }
    rec.end(outcome, reason.as_deref())?;
    ctx.share_history(&history).await;
    report.live = super::live_tag(&live, &target, previous_tag.as_deref());
    report.reason = reason;
    report.outcome = match live {
        Live::New { .. } => "succeeded",
        Live::PreviousRestored { .. } => "rolled-back",
        _ => "failed",
    };
    report.duration_ms = started.elapsed().as_millis();

    if let Live::New { .. } = live {
        p.blank();
        p.banner("ROLLBACK COMPLETE");
        p.info(&format!(
            "Previous image: {}",
            serving
                .as_ref()
                .map_or("none", |l| l.container.image_ref.as_str())
        ));
        p.info(&format!("Current image:  {}", app.image_ref(&target.tag)));
        p.ok(&format!("Rolled back to {}", target.tag));
        if args.json {
            p.json(&report);
        } else {
            p.out(&format!("DEPLOYED_{}={}", app.deployed_var, target.tag));
        }
        return Ok(exit::OK);
    }
    if args.json {
        p.json(&report);
    }
    let f = live.failure().cloned();
    let (reason, interrupted) = f.map_or((String::new(), false), |f| (f.reason, f.interrupted));
    let state = match &live {
        Live::PreviousKept { .. } => match &previous_tag {
            Some(t) => format!(
                "{} kept serving throughout and is still live (start-first: {} never took traffic)",
                app.image_ref(t),
                target.tag
            ),
            None => format!("{} never took traffic", target.tag),
        },
        Live::PreviousRestored { restored, .. } => {
            format!("{} is live again and healthy", app.image_ref(&restored.tag))
        }
        Live::Down {
            restore_failure, ..
        } => match &previous_tag {
            Some(t)
                if previous
                    .as_ref()
                    .is_some_and(|p| p.image_id != target.image_id) =>
            {
                format!(
                    "putting {} back failed too ({restore_failure}); the service is DOWN or unhealthy",
                    app.image_ref(t)
                )
            }
            _ => format!("{restore_failure}; the service is DOWN or unhealthy"),
        },
        _ => "there was no other release live before to put back".to_string(),
    };
    Err(Error::failed(format!(
        "rollback to {} {}: {reason}\n{state}",
        app.image_ref(&target.tag),
        if interrupted { "was interrupted" } else { "failed" }
    ))
    .hint("`dockmaster status` shows what runs now; `dockmaster releases` lists the other kept releases"))
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
