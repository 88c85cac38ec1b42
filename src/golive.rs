//! The go-live policy: the one place that decides what stays live.
//!
//! `deploy` and `rollback` prepare a [`Plan`] (which release, which strategy, what served
//! before), call [`go_live`], and record and print the [`Live`] it returns. Here, and only
//! here: start the release, gate it on health ("healthy" is decided by the runtime's gate),
//! move traffic, confirm it runs exactly the target image, retire the release that served
//! (kept hot, kept stopped, or removed: `standby`), and — when the new release fails after
//! the previous one stopped — put the previous one back and gate it.
//!
//! Everything that happens is reported to a [`Sink`] as facts; the command's printer words
//! them (and a JSON or web printer is just another sink). Nothing here prints.

use std::time::Duration;

use crate::error::Result;
use crate::health::Verdict;
use crate::runtime::{Candidate, Choice, NotSwitched, Retired, Runtime, Switched, Target};
use crate::settings::{Standby, Strategy};

/// What to put live, and how.
#[derive(Clone, Debug)]
pub struct Plan {
    pub target: Target,
    /// The release that served before, to put back when the target fails after it stopped.
    pub previous: Option<Target>,
    /// The container that serves now (start-first never reuses it as the candidate).
    pub serving: Option<String>,
    pub choice: Choice,
    pub standby: Standby,
    /// How long the target has to pass its health gate.
    pub timeout: Duration,
    /// Start-first: how long requests running on the old release may take to finish.
    pub drain: Duration,
    /// `--no-rollback`: leave a release that fails its gate in place instead of undoing it.
    pub keep_failed: bool,
}

/// What is live once go-live is done: the one decision deploy and rollback share.
#[derive(Debug)]
pub enum Live {
    /// The target passed its gate, serves, and runs exactly the target image.
    New {
        candidate: Candidate,
        switched: Option<Switched>,
        retired: Retired,
    },
    /// The target failed; the previous release never stopped serving (start-first).
    PreviousKept { failure: Failure },
    /// The target failed after the previous release stopped; it was put back and is healthy.
    PreviousRestored { failure: Failure, restored: Target },
    /// `--no-rollback`: the target failed its gate and was left in place, as asked.
    FailedLeftInPlace { failure: Failure },
    /// The target failed and nothing served before it: nothing is live.
    NothingLive { failure: Failure },
    /// The target failed and putting the previous release back failed too (or there was no
    /// release of ours to put back): the service is down or unhealthy.
    Down {
        failure: Failure,
        restore_failure: String,
    },
}

impl Live {
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Live::New { .. } => None,
            Live::PreviousKept { failure }
            | Live::PreviousRestored { failure, .. }
            | Live::FailedLeftInPlace { failure }
            | Live::NothingLive { failure }
            | Live::Down { failure, .. } => Some(failure),
        }
    }
}

/// Why the target did not go live.
#[derive(Clone, Debug)]
pub struct Failure {
    pub stage: Stage,
    pub reason: String,
    /// Ctrl-C or SIGTERM ended the gate (the target is not marked failed for it).
    pub interrupted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// It could not be started.
    Start,
    /// It ran but did not pass its health gate.
    Gate,
    /// Traffic could not be moved to it.
    Switch,
    /// It did not run the target image after the switch.
    Confirm,
}

/// The three phases a command numbers as steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Start,
    Gate,
    Switch,
}

/// What go-live reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A phase begins. `restoring`: putting the previous release back.
    Phase {
        phase: Phase,
        target: &'a Target,
        choice: &'a Choice,
        restoring: bool,
    },
    Started(&'a Candidate),
    StartFailed(&'a str),
    Healthy {
        after: Duration,
        how: &'a str,
    },
    Unhealthy(&'a str),
    Interrupted,
    /// The failed candidate's last log lines (or why they could not be read).
    Logs {
        candidate: &'a Candidate,
        lines: usize,
        text: std::result::Result<&'a str, &'a str>,
    },
    /// `--no-rollback` with start-first: the candidate stays, taking no traffic.
    LeftForInspection(&'a Candidate),
    Discarded(&'a Candidate),
    Switched(&'a Switched, &'a Candidate),
    SwitchFailed(&'a str),
    Confirmed(&'a Candidate, &'a Target),
    ConfirmFailed(&'a str),
    Retired(&'a Retired),
    Restoring(&'a Target),
}

pub trait Sink {
    fn event(&self, event: Event<'_>);
}

/// Put `plan.target` live and say what is live afterwards. Errors are the engine's (it
/// stopped answering); every failure of the release itself is a [`Live`] variant.
pub async fn go_live<R: Runtime>(rt: &R, plan: &Plan, sink: &dyn Sink) -> Result<Live> {
    match plan.choice.strategy {
        Strategy::StartFirst => start_first(rt, plan, sink).await,
        Strategy::Recreate => recreate(rt, plan, sink).await,
    }
}

async fn start_first<R: Runtime>(rt: &R, plan: &Plan, sink: &dyn Sink) -> Result<Live> {
    let phase = |phase| Event::Phase {
        phase,
        target: &plan.target,
        choice: &plan.choice,
        restoring: false,
    };
    sink.event(phase(Phase::Start));
    let candidate = match rt.start_beside(&plan.target, plan.serving.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            let reason = e.to_string();
            sink.event(Event::StartFailed(&reason));
            return Ok(kept(plan, Stage::Start, reason, false));
        }
    };
    sink.event(Event::Started(&candidate));

    sink.event(phase(Phase::Gate));
    if let Some((reason, interrupted)) = gate(rt, &candidate, plan.timeout, true, sink).await? {
        show_logs(rt, &candidate, sink).await;
        if plan.keep_failed && !interrupted {
            sink.event(Event::LeftForInspection(&candidate));
        } else {
            rt.discard(&candidate).await?;
            sink.event(Event::Discarded(&candidate));
        }
        return Ok(kept(plan, Stage::Gate, reason, interrupted));
    }

    // From here on nothing is interrupted: the switch is short and ends in a safe state.
    sink.event(phase(Phase::Switch));
    let switched = match rt.take_traffic(&candidate, &plan.choice, plan.drain).await {
        Ok(s) => s,
        Err(NotSwitched::PreviousServing(reason)) => {
            sink.event(Event::SwitchFailed(&reason));
            rt.discard(&candidate).await?;
            sink.event(Event::Discarded(&candidate));
            return Ok(kept(plan, Stage::Switch, reason, false));
        }
        Err(NotSwitched::Unknown(reason)) => {
            sink.event(Event::SwitchFailed(&reason));
            return restore(rt, plan, Stage::Switch, reason, sink).await;
        }
    };
    sink.event(Event::Switched(&switched, &candidate));
    let confirmed = confirm_and_retire(
        rt,
        &candidate,
        &plan.target,
        switched.from.as_deref(),
        plan.standby,
        sink,
    )
    .await?;
    let retired = match confirmed {
        Ok(r) => r,
        Err(reason) => return restore(rt, plan, Stage::Confirm, reason, sink).await,
    };
    Ok(Live::New {
        candidate,
        switched: Some(switched),
        retired,
    })
}

async fn recreate<R: Runtime>(rt: &R, plan: &Plan, sink: &dyn Sink) -> Result<Live> {
    let phase = |phase| Event::Phase {
        phase,
        target: &plan.target,
        choice: &plan.choice,
        restoring: false,
    };
    sink.event(phase(Phase::Start));
    let candidate = match rt.put_in_place(&plan.target).await {
        Ok(c) => c,
        Err(e) => {
            let reason = e.to_string();
            sink.event(Event::StartFailed(&reason));
            return restore(rt, plan, Stage::Start, reason, sink).await;
        }
    };
    sink.event(Event::Started(&candidate));

    sink.event(phase(Phase::Gate));
    if let Some((reason, interrupted)) = gate(rt, &candidate, plan.timeout, true, sink).await? {
        show_logs(rt, &candidate, sink).await;
        if plan.keep_failed && !interrupted {
            return Ok(Live::FailedLeftInPlace {
                failure: Failure {
                    stage: Stage::Gate,
                    reason,
                    interrupted,
                },
            });
        }
        return restore_failure(rt, plan, Stage::Gate, reason, interrupted, sink).await;
    }

    sink.event(phase(Phase::Switch));
    // Release containers of an earlier start-first switch no longer take traffic.
    let confirmed =
        confirm_and_retire(rt, &candidate, &plan.target, None, Standby::None, sink).await?;
    let retired = match confirmed {
        Ok(r) => r,
        Err(reason) => return restore(rt, plan, Stage::Confirm, reason, sink).await,
    };
    Ok(Live::New {
        candidate,
        switched: None,
        retired,
    })
}

/// The target failed before it took traffic: what served keeps serving.
fn kept(plan: &Plan, stage: Stage, reason: String, interrupted: bool) -> Live {
    let failure = Failure {
        stage,
        reason,
        interrupted,
    };
    if plan.serving.is_some() {
        Live::PreviousKept { failure }
    } else {
        Live::NothingLive { failure }
    }
}

async fn restore<R: Runtime>(
    rt: &R,
    plan: &Plan,
    stage: Stage,
    reason: String,
    sink: &dyn Sink,
) -> Result<Live> {
    restore_failure(rt, plan, stage, reason, false, sink).await
}

/// Put the previous release back after the target failed with it stopped, and gate it.
/// This is itself the safe point: it is not interrupted. It recreates: whatever failed in the
/// switch, compose puts the service back as it is written (a later start-first deploy sets
/// the proxy up again).
async fn restore_failure<R: Runtime>(
    rt: &R,
    plan: &Plan,
    stage: Stage,
    reason: String,
    interrupted: bool,
    sink: &dyn Sink,
) -> Result<Live> {
    let failure = Failure {
        stage,
        reason,
        interrupted,
    };
    let Some(previous) = &plan.previous else {
        return Ok(if plan.serving.is_some() {
            Live::Down {
                failure,
                restore_failure: "there is no earlier release of this app to put back".into(),
            }
        } else {
            Live::NothingLive { failure }
        });
    };
    sink.event(Event::Restoring(previous));
    let choice = Choice {
        strategy: Strategy::Recreate,
        ports: vec![],
        why: rt.restore_why(),
    };
    let phase = |phase| Event::Phase {
        phase,
        target: previous,
        choice: &choice,
        restoring: true,
    };
    sink.event(phase(Phase::Start));
    let candidate = match rt.put_in_place(previous).await {
        Ok(c) => c,
        Err(e) => {
            let why = e.to_string();
            sink.event(Event::StartFailed(&why));
            return Ok(Live::Down {
                failure,
                restore_failure: why,
            });
        }
    };
    sink.event(Event::Started(&candidate));
    sink.event(phase(Phase::Gate));
    if let Some((why, _)) = gate(rt, &candidate, plan.timeout, false, sink).await? {
        show_logs(rt, &candidate, sink).await;
        return Ok(Live::Down {
            failure,
            restore_failure: why,
        });
    }
    sink.event(phase(Phase::Switch));
    if let Err(why) =
        confirm_and_retire(rt, &candidate, previous, None, Standby::None, sink).await?
    {
        return Ok(Live::Down {
            failure,
            restore_failure: why,
        });
    }
    Ok(Live::PreviousRestored {
        failure,
        restored: previous.clone(),
    })
}

/// Check the candidate runs exactly `target` (and move `latest`), then retire the other
/// release containers: the retired ones, or why it did not run the target.
async fn confirm_and_retire<R: Runtime>(
    rt: &R,
    candidate: &Candidate,
    target: &Target,
    previous: Option<&str>,
    standby: Standby,
    sink: &dyn Sink,
) -> Result<std::result::Result<Retired, String>> {
    if let Err(reason) = rt.confirm(candidate, target).await? {
        sink.event(Event::ConfirmFailed(&reason));
        return Ok(Err(reason));
    }
    sink.event(Event::Confirmed(candidate, target));
    let retired = rt.retire(candidate, previous, standby).await?;
    sink.event(Event::Retired(&retired));
    Ok(Ok(retired))
}

/// The health gate; `Some((reason, interrupted))` when it did not pass.
async fn gate<R: Runtime>(
    rt: &R,
    candidate: &Candidate,
    timeout: Duration,
    interruptible: bool,
    sink: &dyn Sink,
) -> Result<Option<(String, bool)>> {
    Ok(match rt.gate(candidate, timeout, interruptible).await? {
        Verdict::Healthy { after, how } => {
            sink.event(Event::Healthy { after, how: &how });
            None
        }
        Verdict::Unhealthy { reason } => {
            sink.event(Event::Unhealthy(&reason));
            Some((reason, false))
        }
        Verdict::Interrupted => {
            sink.event(Event::Interrupted);
            Some(("interrupted while waiting for health".into(), true))
        }
    })
}

/// The failed candidate's last log lines: the first thing anyone asks at night.
async fn show_logs<R: Runtime>(rt: &R, candidate: &Candidate, sink: &dyn Sink) {
    const LINES: usize = 50;
    match rt.last_logs(candidate, LINES).await {
        Ok(text) => sink.event(Event::Logs {
            candidate,
            lines: LINES,
            text: Ok(&text),
        }),
        Err(e) => {
            let e = e.to_string();
            sink.event(Event::Logs {
                candidate,
                lines: LINES,
                text: Err(&e),
            });
        }
    }
}
