//! The part deploy and rollback share: switch, gate, verify, and put the previous
//! release back when the new one does not come up.

use std::time::Duration;

use crate::commands::Ctx;
use crate::compose;
use crate::engine::ContainerInfo;
use crate::error::{Error, Result};
use crate::health::{HealthGate, Verdict};
use crate::output::human_duration;
use crate::switch::Switcher;

/// What to put live: a tag of the app's repository and the image it must resolve to.
#[derive(Clone, Debug)]
pub struct Target {
    pub tag: String,
    pub image_id: String,
}

pub enum Outcome {
    Healthy {
        container: ContainerInfo,
        after: Duration,
        how: String,
    },
    /// The switch or the gate failed; `container` is the new one when it was created.
    Unhealthy {
        reason: String,
        container: Option<ContainerInfo>,
        interrupted: bool,
    },
}

/// Steps numbers for the three phases (switch, gate, verify) and the total.
pub struct Steps {
    pub switch: usize,
    pub gate: usize,
    pub verify: usize,
    pub total: usize,
}

pub async fn go_live(
    ctx: &Ctx,
    compose: &compose::Cli,
    target: &Target,
    timeout: Duration,
    steps: &Steps,
    interruptible: bool,
) -> Result<Outcome> {
    let p = &ctx.printer;
    let app = &ctx.app;
    p.step(
        steps.switch,
        steps.total,
        &format!(
            "Putting {} live ({} up)",
            app.image_ref(&target.tag),
            compose.display()
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
            });
        }
    };
    p.ok(&format!("Container {} recreated", container.name));

    p.step(steps.gate, steps.total, "Waiting for it to be healthy");
    let gate = HealthGate {
        engine: &ctx.engine,
        settings: &app.health,
        timeout,
        interruptible,
    };
    match gate.wait(&container.id).await? {
        Verdict::Healthy { after, how } => {
            p.ok(&format!("Healthy after {} ({how})", human_duration(after)));
        }
        Verdict::Unhealthy { reason } => {
            p.fail(&format!("Not healthy: {reason}"));
            return Ok(Outcome::Unhealthy {
                reason,
                container: Some(container),
                interrupted: false,
            });
        }
        Verdict::Interrupted => {
            p.fail("Interrupted while waiting for health");
            return Ok(Outcome::Unhealthy {
                reason: "interrupted while waiting for health".into(),
                container: Some(container),
                interrupted: true,
            });
        }
    }

    p.step(steps.verify, steps.total, "Verifying");
    let now = ctx
        .engine
        .container(&container.id)
        .await?
        .ok_or_else(|| Error::failed(format!("container {} disappeared", container.name)))?;
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
        return Ok(Outcome::Unhealthy {
            reason,
            container: Some(now),
            interrupted: false,
        });
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
    Ok(Outcome::Healthy {
        container: now,
        after: Duration::ZERO,
        how: String::new(),
    })
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
    compose: &compose::Cli,
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
    match go_live(ctx, compose, previous, timeout, &steps, false).await? {
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
