//! `deploy --watch`: the guide's "monitor for 10–15 minutes post-deploy", done by the tool.
//!
//! After a release goes live, the watch reads, once a second, what the proxy counted for it
//! over a sliding window (`[watch] window`) and how its container is doing, and ends in one
//! of four ways ([`End`]): the time is up and the release is kept; something tripped
//! ([`judge`]: 5xx or connection-error share, p95 against the previous release's own, a
//! restart, an exit, Docker's "unhealthy"); another deploy or rollback changed what is live;
//! or Ctrl-C. What happens then — roll back, record, print — is the deploy's business.
//!
//! The watch holds no lock: a `deploy` or `rollback` run meanwhile simply ends it.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::interrupt;
use crate::proxy::metrics::WindowStats;
use crate::runtime::{Candidate, Runtime};
use crate::settings::Watch;

#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// Watched for the whole duration: kept.
    Kept { watched: Duration },
    /// Degraded: why, and when.
    Tripped { reason: String, after: Duration },
    /// Another deploy or rollback put something else live (its container name).
    Superseded {
        now: Option<String>,
        after: Duration,
    },
    /// Ctrl-C: the release is kept.
    Interrupted { after: Duration },
}

/// One second of the watch, for the live summary line.
#[derive(Clone, Debug)]
pub struct Tick {
    pub elapsed: Duration,
    pub left: Duration,
    /// What the proxy counted over the window (None: no proxy counts this service).
    pub window: Option<WindowStats>,
}

/// Why the release is degraded, if it is, from what the proxy counted over the window.
/// Rates give no verdict below `min_requests`; the p95 is compared with the previous
/// release's own p95 over its last window, when there is one.
pub fn judge(w: &Watch, now: &WindowStats, baseline_p95: Option<Duration>) -> Option<String> {
    if now.requests < w.min_requests {
        return None;
    }
    let share = |n: u64| n as f64 / now.requests as f64;
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    if share(now.status5xx) > w.max_5xx {
        return Some(format!(
            "5xx responses: {} of {} requests in the last {}s ({}; most allowed {})",
            now.status5xx,
            now.requests,
            now.seconds,
            pct(share(now.status5xx)),
            pct(w.max_5xx)
        ));
    }
    if share(now.conn_errors) > w.max_conn_errors {
        return Some(format!(
            "connection errors to the app: {} of {} requests in the last {}s ({}; most allowed {})",
            now.conn_errors,
            now.requests,
            now.seconds,
            pct(share(now.conn_errors)),
            pct(w.max_conn_errors)
        ));
    }
    if let (Some(p95), Some(base)) = (now.p95, baseline_p95)
        && p95.as_secs_f64() > base.as_secs_f64() * w.max_p95_ratio
    {
        return Some(format!(
            "latency: p95 {} over the last {}s is {:.1}× the previous release's {} (most allowed {:.1}×)",
            crate::output::human_duration(p95),
            now.seconds,
            p95.as_secs_f64() / base.as_secs_f64().max(1e-9),
            crate::output::human_duration(base),
            w.max_p95_ratio
        ));
    }
    None
}

/// A verdict from the counters must hold this many checks (seconds) in a row before the
/// watch acts on it: one noisy second (a cold cache, a busy host) is not a regression. A
/// restart, an exit or Docker's "unhealthy" acts at once.
pub const SUSTAINED: u32 = 3;

/// Watch `live` for `duration`.
pub async fn watch<R: Runtime>(
    rt: &R,
    settings: &Watch,
    duration: Duration,
    live: &Candidate,
    baseline_p95: Option<Duration>,
    on_tick: &dyn Fn(&Tick),
) -> Result<End> {
    let started = Instant::now();
    let mut restarts_at_start = None;
    let mut degraded_for = 0;
    loop {
        let after = started.elapsed();
        if interrupt::requested() {
            return Ok(End::Interrupted { after });
        }
        if after >= duration {
            return Ok(End::Kept { watched: after });
        }
        let releases = rt.releases().await?;
        let serving = rt.serving(&releases).await?;
        let Some(serving) = serving else {
            return Ok(End::Tripped {
                reason: "the service has no container any more".into(),
                after,
            });
        };
        if serving.container.id != live.id {
            return Ok(End::Superseded {
                now: Some(serving.container.name.clone()),
                after,
            });
        }
        let c = &serving.container;
        let restarts = *restarts_at_start.get_or_insert(c.restart_count);
        if c.restart_count > restarts || c.restarting {
            return Ok(End::Tripped {
                reason: format!(
                    "the container restarted (it exited with code {}; restarts: {})",
                    c.exit_code, c.restart_count
                ),
                after,
            });
        }
        if !c.running {
            return Ok(End::Tripped {
                reason: format!("the container stopped (exit code {})", c.exit_code),
                after,
            });
        }
        if c.health.as_deref() == Some("unhealthy") {
            return Ok(End::Tripped {
                reason: "Docker reports the container unhealthy".into(),
                after,
            });
        }
        let window = rt
            .traffic(settings.window)
            .await?
            .and_then(|all| all.into_iter().find(|t| t.container == live.name))
            .map(|t| t.counters.window);
        match window
            .as_ref()
            .and_then(|w| judge(settings, w, baseline_p95))
        {
            Some(reason) => {
                degraded_for += 1;
                if degraded_for >= SUSTAINED {
                    return Ok(End::Tripped {
                        reason: format!("{reason}, for {degraded_for} checks in a row"),
                        after,
                    });
                }
            }
            None => degraded_for = 0,
        }
        on_tick(&Tick {
            elapsed: after,
            left: duration.saturating_sub(after),
            window,
        });
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = interrupt::wait() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Watch {
        Watch {
            duration: None,
            window: Duration::from_secs(30),
            min_requests: 20,
            max_5xx: 0.02,
            max_conn_errors: 0.01,
            max_p95_ratio: 2.0,
        }
    }

    fn stats(requests: u64, s5xx: u64, errors: u64, p95_ms: Option<u64>) -> WindowStats {
        WindowStats {
            seconds: 30,
            requests,
            status5xx: s5xx,
            conn_errors: errors,
            p50: None,
            p95: p95_ms.map(Duration::from_millis),
            p99: None,
        }
    }

    #[test]
    fn below_min_requests_there_is_no_verdict() {
        assert_eq!(
            judge(
                &settings(),
                &stats(19, 19, 19, Some(9000)),
                Some(Duration::from_millis(1))
            ),
            None
        );
    }

    #[test]
    fn shares_over_their_limits_trip_and_say_so() {
        let w = settings();
        let r = judge(&w, &stats(100, 50, 0, None), None).unwrap();
        assert!(r.starts_with("5xx responses: 50 of 100"), "{r}");
        assert!(r.contains("most allowed 2.0%"), "{r}");
        assert_eq!(
            judge(&w, &stats(100, 2, 0, None), None),
            None,
            "2% is allowed"
        );
        let r = judge(&w, &stats(100, 0, 2, None), None).unwrap();
        assert!(
            r.starts_with("connection errors to the app: 2 of 100"),
            "{r}"
        );
    }

    #[test]
    fn p95_is_judged_against_the_previous_release_only() {
        let w = settings();
        let base = Some(Duration::from_millis(10));
        let r = judge(&w, &stats(100, 0, 0, Some(310)), base).unwrap();
        assert!(r.starts_with("latency: p95 310ms"), "{r}");
        assert_eq!(
            judge(&w, &stats(100, 0, 0, Some(20)), base),
            None,
            "2× is allowed"
        );
        assert_eq!(
            judge(&w, &stats(100, 0, 0, Some(310)), None),
            None,
            "no baseline, no latency verdict"
        );
    }
}
