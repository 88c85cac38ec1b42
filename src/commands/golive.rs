//! The part deploy and rollback share: switch, gate, verify, and put the previous
//! release back when the new one does not come up.

use std::time::Duration;

use crate::commands::Ctx;
use crate::compose;
use crate::engine::ContainerInfo;
use crate::error::Result;
use crate::health::{HealthGate, Verdict};
use crate::output::human_duration;
use crate::settings::Strategy;
use crate::switch::start_first::StartFirst;
use crate::switch::{Choice, Switcher};

/// What to put live: a tag of the app's repository and the image it must resolve to.
#[derive(Clone, Debug)]
pub struct Target {
    pub tag: String,
    pub image_id: String,
}

pub enum Outcome {
    Healthy {
        container: ContainerInfo,
    },
    /// The switch or the gate failed. `container` is the new one when it still exists and
    /// its logs were not shown yet; `previous_serving` is true when the live release never
    /// stopped serving (start-first), so there is nothing to put back.
    Unhealthy {
        reason: String,
        container: Option<ContainerInfo>,
        interrupted: bool,
        previous_serving: bool,
        /// The new release ran but did not pass its health gate (else: it could not be
        /// started or switched to).
        at_gate: bool,
    },
}

/// Steps numbers for the three phases (switch, gate, verify) and the total.
pub struct Steps {
    pub switch: usize,
    pub gate: usize,
    pub verify: usize,
    pub total: usize,
}

/// How go_live runs: the strategy, and whether a failed candidate is kept for inspection.
pub struct How<'a> {
    pub choice: &'a Choice,
    pub interruptible: bool,
    pub keep_failed: bool,
}

pub async fn go_live(
    ctx: &Ctx,
    compose: &compose::Detected,
    target: &Target,
    timeout: Duration,
    steps: &Steps,
    how: &How<'_>,
) -> Result<Outcome> {
    match how.choice.strategy {
        Strategy::Recreate => recreate(ctx, compose, target, timeout, steps, how).await,
        Strategy::StartFirst => start_first(ctx, compose, target, timeout, steps, how).await,
    }
}

async fn recreate(
    ctx: &Ctx,
    compose: &compose::Detected,
    target: &Target,
    timeout: Duration,
    steps: &Steps,
    how: &How<'_>,
) -> Result<Outcome> {
    let p = &ctx.printer;
    let app = &ctx.app;
    p.step(
        steps.switch,
        steps.total,
        &format!(
            "Putting {} live ({} up, {})",
            app.image_ref(&target.tag),
            compose.get().await?.display(),
            how.choice.why
        ),
    );
    let switcher = Switcher {
        app,
        engine: &ctx.engine,
        compose,
    };
    let container = match switcher.put_live(&target.tag).await {
        Ok(c) => c,
        Err(e) => {
            p.fail("Switch failed");
            return Ok(Outcome::Unhealthy {
                reason: e.to_string(),
                container: None,
                interrupted: false,
                previous_serving: false,
                at_gate: false,
            });
        }
    };
    p.ok(&format!("Container {} recreated", container.name));

    p.step(steps.gate, steps.total, "Waiting for it to be healthy");
    if let Some((reason, interrupted)) = gate(ctx, &container, timeout, how.interruptible).await? {
        return Ok(Outcome::Unhealthy {
            reason,
            container: Some(container),
            interrupted,
            previous_serving: false,
            at_gate: true,
        });
    }

    p.step(steps.verify, steps.total, "Verifying");
    let now = match verify(ctx, &container, target).await? {
        Ok(now) => now,
        Err((reason, now)) => {
            return Ok(Outcome::Unhealthy {
                reason,
                container: now,
                interrupted: false,
                previous_serving: false,
                at_gate: false,
            });
        }
    };
    // Release containers of an earlier start-first switch no longer take traffic.
    crate::switch::retire_app_containers(app, &ctx.engine, None, None).await?;
    Ok(Outcome::Healthy { container: now })
}

async fn start_first(
    ctx: &Ctx,
    compose: &compose::Detected,
    target: &Target,
    timeout: Duration,
    steps: &Steps,
    how: &How<'_>,
) -> Result<Outcome> {
    let p = &ctx.printer;
    let app = &ctx.app;
    p.step(
        steps.switch,
        steps.total,
        &format!(
            "Starting {} beside the live release ({})",
            app.image_ref(&target.tag),
            how.choice.why
        ),
    );
    let sf = StartFirst {
        app,
        engine: &ctx.engine,
        compose,
        ports: &how.choice.ports,
    };
    let (candidate, reused) = match sf.start(&target.tag).await {
        Ok(s) => (s.container, s.reused),
        Err(e) => {
            p.fail("Could not start it");
            return Ok(Outcome::Unhealthy {
                reason: e.to_string(),
                container: None,
                interrupted: false,
                previous_serving: true,
                at_gate: false,
            });
        }
    };
    tracing::debug!("candidate started");
    p.ok(&format!(
        "Container {} started{}",
        candidate.name,
        if reused {
            " again (it served this release before; compose settings unchanged)"
        } else {
            ""
        }
    ));

    p.step(
        steps.gate,
        steps.total,
        "Waiting for it to be healthy (the live release keeps serving)",
    );
    if let Some((reason, interrupted)) = gate(ctx, &candidate, timeout, how.interruptible).await? {
        show_logs(ctx, &candidate, 50).await;
        if how.keep_failed && !interrupted {
            p.info(&format!(
                "{} is left in place, taking no traffic, for inspection (--no-rollback); `docker rm -f {}` removes it",
                candidate.name, candidate.name
            ));
        } else {
            sf.discard(&candidate).await?;
            p.info(&format!("Removed {}", candidate.name));
        }
        return Ok(Outcome::Unhealthy {
            reason,
            container: None,
            interrupted,
            previous_serving: true,
            at_gate: true,
        });
    }

    p.step(
        steps.verify,
        steps.total,
        "Moving traffic to it and verifying",
    );
    // From here on the switch is not interrupted: it is short and ends in a safe state.
    let from = match sf.take_traffic(&candidate, app.drain_timeout).await {
        Ok(s) => {
            p.ok(&s.line);
            s.from
        }
        Err(e) => {
            p.fail(&format!("Traffic not moved: {}", e.reason));
            if e.previous_serving {
                sf.discard(&candidate).await?;
            }
            return Ok(Outcome::Unhealthy {
                reason: e.reason,
                container: None,
                interrupted: false,
                previous_serving: e.previous_serving,
                at_gate: false,
            });
        }
    };
    let now = match verify(ctx, &candidate, target).await? {
        Ok(now) => now,
        Err((reason, now)) => {
            return Ok(Outcome::Unhealthy {
                reason,
                container: now,
                interrupted: false,
                previous_serving: false,
                at_gate: false,
            });
        }
    };
    tracing::debug!("traffic moved, verified");
    let (stopped, removed) =
        crate::switch::retire_app_containers(app, &ctx.engine, Some(&now.id), from.as_deref())
            .await?;
    if !stopped.is_empty() {
        p.ok(&format!(
            "Stopping the old container {} (drained; kept, stopped, for a fast rollback to it)",
            stopped.join(", ")
        ));
    }
    if !removed.is_empty() {
        p.ok(&format!("Removed {}", removed.join(", ")));
    }
    Ok(Outcome::Healthy { container: now })
}

/// The health gate; `Some((reason, interrupted))` when it did not pass.
async fn gate(
    ctx: &Ctx,
    container: &ContainerInfo,
    timeout: Duration,
    interruptible: bool,
) -> Result<Option<(String, bool)>> {
    let p = &ctx.printer;
    let gate = HealthGate {
        engine: &ctx.engine,
        settings: &ctx.app.health,
        timeout,
        interruptible,
    };
    Ok(match gate.wait(&container.id).await? {
        Verdict::Healthy { after, how } => {
            p.ok(&format!("Healthy after {} ({how})", human_duration(after)));
            None
        }
        Verdict::Unhealthy { reason } => {
            p.fail(&format!("Not healthy: {reason}"));
            Some((reason, false))
        }
        Verdict::Interrupted => {
            p.fail("Interrupted while waiting for health");
            Some(("interrupted while waiting for health".into(), true))
        }
    })
}

/// Check that the container runs exactly the target image; then `latest` names it.
#[allow(clippy::type_complexity)]
async fn verify(
    ctx: &Ctx,
    container: &ContainerInfo,
    target: &Target,
) -> Result<std::result::Result<ContainerInfo, (String, Option<ContainerInfo>)>> {
    let p = &ctx.printer;
    let app = &ctx.app;
    let Some(now) = ctx.engine.container(&container.id).await? else {
        let reason = format!("container {} disappeared", container.name);
        p.fail(&reason);
        return Ok(Err((reason, None)));
    };
    if now.image_id != target.image_id || !now.running {
        let reason = format!(
            "container {} runs image {} (state {}), expected {} ({})",
            now.name,
            short_id(&now.image_id),
            now.state,
            app.image_ref(&target.tag),
            short_id(&target.image_id)
        );
        p.fail(&reason);
        return Ok(Err((reason, Some(now))));
    }
    p.ok(&format!(
        "Container {} is running image {}",
        now.name,
        app.image_ref(&target.tag)
    ));
    ctx.engine
        .tag(&target.image_id, &app.repository, "latest")
        .await?;
    p.ok(&format!(
        "{} now names the live image",
        app.image_ref("latest")
    ));
    Ok(Ok(now))
}

/// Print the failed container's last log lines (the first thing anyone asks at night).
pub async fn show_logs(ctx: &Ctx, container: &ContainerInfo, lines: usize) {
    match ctx.engine.logs_tail(&container.id, lines).await {
        Ok(logs) if !logs.trim().is_empty() => {
            ctx.printer.info(&format!(
                "last {lines} log lines of {} ({}):",
                container.name,
                short_id(&container.id)
            ));
            for line in logs.lines() {
                ctx.printer.info(&format!("│ {line}"));
            }
        }
        Ok(_) => ctx
            .printer
            .info(&format!("{} wrote no log lines", container.name)),
        Err(e) => ctx.printer.warn(&format!("cannot read its logs: {e}")),
    }
}

/// Put `previous` back after a failed switch, and gate it. Returns what is live now, in
/// words, and whether it is healthy.
pub async fn restore(
    ctx: &Ctx,
    compose: &compose::Detected,
    previous: &Target,
    timeout: Duration,
) -> Result<(bool, String)> {
    let p = &ctx.printer;
    let app = &ctx.app;
    p.blank();
    p.warn(&format!(
        "Putting the previous release {} back",
        app.image_ref(&previous.tag)
    ));
    let steps = Steps {
        switch: 1,
        gate: 2,
        verify: 3,
        total: 3,
    };
    // Putting the previous release back is itself the safe point: it is not interrupted.
    // It recreates: whatever failed in the switch, compose puts the service back as it is
    // written, and the next start-first deploy sets the proxy up again.
    let choice = Choice {
        strategy: Strategy::Recreate,
        ports: vec![],
        why: "recreate, to put the previous release back".into(),
    };
    let how = How {
        choice: &choice,
        interruptible: false,
        keep_failed: false,
    };
    match go_live(ctx, compose, previous, timeout, &steps, &how).await? {
        Outcome::Healthy { container, .. } => Ok((
            true,
            format!(
                "{} is live again and healthy (container {})",
                app.image_ref(&previous.tag),
                container.name
            ),
        )),
        Outcome::Unhealthy {
            reason, container, ..
        } => {
            if let Some(c) = &container {
                show_logs(ctx, c, 50).await;
            }
            Ok((
                false,
                format!(
                    "putting {} back failed too ({reason}); the service is DOWN or unhealthy",
                    app.image_ref(&previous.tag)
                ),
            ))
        }
    }
}

pub fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}
