//! Go-live's facts in words: the steps a deploy or rollback prints on stderr.

use crate::golive::{Event, Phase, Sink};
use crate::output::{Printer, human_duration, short_id};
use crate::runtime::{Started, Switched};
use crate::settings::{App, Standby, Strategy};

/// Which step numbers a command gives go-live's three phases.
#[derive(Clone, Copy, Debug)]
pub struct Steps {
    pub start: usize,
    pub gate: usize,
    pub switch: usize,
    pub total: usize,
}

/// Putting the previous release back is its own three steps.
const RESTORE: Steps = Steps {
    start: 1,
    gate: 2,
    switch: 3,
    total: 3,
};

pub struct GoLivePrinter<'a> {
    pub printer: &'a Printer,
    pub app: &'a App,
    pub steps: Steps,
}

impl Sink for GoLivePrinter<'_> {
    fn event(&self, event: Event<'_>) {
        // With -v, every go-live event with its time: where a switch spends it.
        tracing::debug!(?event, "go-live");
        let p = self.printer;
        let app = self.app;
        match event {
            Event::Phase {
                phase,
                target,
                choice,
                restoring,
            } => {
                let steps = if restoring { RESTORE } else { self.steps };
                let image = app.image_ref(&target.tag);
                let (n, what) = match (phase, choice.strategy) {
                    (Phase::Start, Strategy::StartFirst) => (
                        steps.start,
                        format!("Starting {image} beside the live release ({})", choice.why),
                    ),
                    (Phase::Start, Strategy::Recreate) => (
                        steps.start,
                        format!("Putting {image} live ({})", choice.why),
                    ),
                    (Phase::Gate, Strategy::StartFirst) => (
                        steps.gate,
                        "Waiting for it to be healthy (the live release keeps serving)".into(),
                    ),
                    (Phase::Gate, Strategy::Recreate) => {
                        (steps.gate, "Waiting for it to be healthy".into())
                    }
                    (Phase::Switch, Strategy::StartFirst) => {
                        (steps.switch, "Moving traffic to it and verifying".into())
                    }
                    (Phase::Switch, Strategy::Recreate) => (steps.switch, "Verifying".into()),
                };
                p.step(n, steps.total, &what);
            }
            Event::Started(c) => p.ok(&match c.how {
                Started::Created => format!("Container {} started", c.name),
                Started::Restarted => format!(
                    "Container {} started again (it served this release before; compose settings unchanged)",
                    c.name
                ),
                Started::AlreadyRunning => format!(
                    "Container {} is this release's hot standby (running, drained): nothing to start",
                    c.name
                ),
                Started::Recreated => format!("Container {} recreated", c.name),
                Started::Updated => format!("Service {} is being updated", c.name),
            }),
            Event::StartFailed(why) => p.fail(&format!("Could not start it: {why}")),
            Event::Healthy { after, how } => {
                p.ok(&format!("Healthy after {} ({how})", human_duration(after)))
            }
            Event::Unhealthy(why) => p.fail(&format!("Not healthy: {why}")),
            Event::Interrupted => p.fail("Interrupted while waiting for health"),
            Event::Logs {
                candidate,
                lines,
                text,
            } => match text {
                Ok(text) if !text.trim().is_empty() => {
                    p.info(&format!(
                        "last {lines} log lines of {} ({}):",
                        candidate.name,
                        short_id(&candidate.id)
                    ));
                    for line in text.lines() {
                        p.info(&format!("│ {line}"));
                    }
                }
                Ok(_) => p.info(&format!("{} wrote no log lines", candidate.name)),
                Err(e) => p.warn(&format!("cannot read its logs: {e}")),
            },
            Event::LeftForInspection(c) => p.info(&format!(
                "{} is left in place, taking no traffic, for inspection (--no-rollback); `docker rm -f {}` removes it",
                c.name, c.name
            )),
            Event::Discarded(c) => p.info(&format!("Removed {}", c.name)),
            Event::Switched(s, c) => p.ok(&switched(s, &c.name)),
            Event::SwitchFailed(why) => p.fail(&format!("Traffic not moved: {why}")),
            Event::Confirmed(c, target) => {
                p.ok(&format!(
                    "{} {} {} image {}",
                    if c.how == Started::Updated {
                        "Every task of service"
                    } else {
                        "Container"
                    },
                    c.name,
                    if c.how == Started::Updated {
                        "runs"
                    } else {
                        "is running"
                    },
                    app.image_ref(&target.tag)
                ));
                p.ok(&format!(
                    "{} now names the live image",
                    app.image_ref("latest")
                ));
            }
            Event::ConfirmFailed(why) => p.fail(why),
            Event::Retired(r) => {
                match &r.standby {
                    Some((name, Standby::Hot)) => p.ok(&format!(
                        "The old container {name} is kept running, drained, as the hot standby (a rollback to it is a probe and a switch)"
                    )),
                    Some((name, _)) => {
                        // "stopped" only once it is: the stop below has returned.
                        match r.stopped.iter().find(|s| &s.name == name) {
                            Some(s) => p.ok(&format!(
                                "Stopped the old container {name} in {}{} (after traffic had moved; kept, stopped, for a fast rollback to it)",
                                human_duration(s.took),
                                if s.killed {
                                    format!(
                                        ": it ignored its stop signal and was killed at the end of its {} grace period",
                                        human_duration(s.grace)
                                    )
                                } else {
                                    String::new()
                                }
                            )),
                            None => p.ok(&format!(
                                "The old container {name} is kept, stopped, for a fast rollback to it"
                            )),
                        }
                    }
                    None => {}
                }
                for name in &r.removed {
                    let took = r
                        .stopped
                        .iter()
                        .find(|s| &s.name == name)
                        .map(|s| {
                            format!(
                                " (stopped in {}{})",
                                human_duration(s.took),
                                if s.killed {
                                    ", killed at the end of its grace period"
                                } else {
                                    ""
                                }
                            )
                        })
                        .unwrap_or_default();
                    p.ok(&format!("Removed {name}{took}"));
                }
            }
            Event::Restoring(previous) => {
                p.blank();
                p.warn(&format!(
                    "Putting the previous release {} back",
                    app.image_ref(&previous.tag)
                ));
            }
        }
    }
}

fn switched(s: &Switched, to: &str) -> String {
    match &s.proxy_set_up {
        Some(setup) => format!(
            "Proxy {} now holds the service's name{} and sends traffic to {to} (set up in {}; {})",
            s.proxy,
            if setup.publishes_ports {
                " and ports"
            } else {
                ""
            },
            human_duration(s.took),
            if setup.replaced_a_container {
                "this one-time change recreated the service's container"
            } else {
                "later switches move traffic without a gap"
            }
        ),
        None => format!(
            "Traffic moved by proxy {} in {} (old release drained in {}{})",
            s.proxy,
            human_duration(s.took),
            human_duration(s.drained),
            if s.still_running == 0 {
                String::new()
            } else {
                format!(
                    ", {} request(s) still running at the drain timeout",
                    s.still_running
                )
            }
        ),
    }
}
