//! The health gate: is the container we just started serving?
//!
//! Docker runs a health check first `interval` after start (30 s in many compose files), so
//! waiting for Docker's own status costs that long on every deploy and rollback. The gate
//! runs the container's health-check command itself (`exec`) every `interval` of ours, and
//! passes as soon as it succeeds; it fails at once if the container exits, restarts, or
//! Docker already calls it unhealthy.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::engine::{ContainerInfo, Engine};
use crate::error::Result;
use crate::interrupt;
use crate::settings::HealthSettings;

#[derive(Debug, Clone)]
pub enum Verdict {
    Healthy { after: Duration, how: String },
    Unhealthy { reason: String },
    Interrupted,
}

/// How the gate probes a container.
enum Probe {
    Exec(Vec<String>),
    Http { path: String, port: u16 },
    Settle,
}

pub struct HealthGate<'a> {
    pub engine: &'a Engine,
    pub settings: &'a HealthSettings,
    pub timeout: Duration,
    /// Whether Ctrl-C ends the wait (not while putting the previous release back).
    pub interruptible: bool,
    /// Run the check itself even when Docker already calls the container healthy: for a
    /// hot standby, whose last Docker check may be an `interval` old, the gate wants
    /// evidence from now.
    pub fresh: bool,
}

impl HealthGate<'_> {
    pub async fn wait(&self, container_id: &str) -> Result<Verdict> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut first_restarts = None;
        let mut last: String;
        loop {
            if self.interruptible && interrupt::requested() {
                return Ok(Verdict::Interrupted);
            }
            let Some(c) = self.engine.container(container_id).await? else {
                return Ok(Verdict::Unhealthy {
                    reason: "the container disappeared".into(),
                });
            };
            let restarts = *first_restarts.get_or_insert(c.restart_count);
            if let Some(reason) = dead(&c, restarts) {
                return Ok(Verdict::Unhealthy { reason });
            }
            match c.health.as_deref() {
                Some("unhealthy") => {
                    return Ok(Verdict::Unhealthy {
                        reason: "Docker reports the container unhealthy".into(),
                    });
                }
                Some("healthy") if !self.fresh => {
                    return Ok(Verdict::Healthy {
                        after: start.elapsed(),
                        how: "Docker reports it healthy".into(),
                    });
                }
                _ => {}
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.probe(&c) {
                Probe::Exec(cmd) => {
                    let limit = c
                        .healthcheck_timeout
                        .unwrap_or(Duration::from_secs(30))
                        .min(remaining.max(Duration::from_millis(100)));
                    match self.engine.exec(&c.id, cmd, limit).await {
                        Ok(Some(0)) => {
                            return Ok(Verdict::Healthy {
                                after: start.elapsed(),
                                how: "its health check passed".into(),
                            });
                        }
                        Ok(Some(code)) => last = format!("health check exited {code}"),
                        Ok(None) => last = format!("health check did not finish within {limit:?}"),
                        // The container may have just died; the next round says so.
                        Err(e) => last = format!("health check could not run: {e}"),
                    }
                }
                Probe::Http { path, port } => {
                    let Some(ip) = c.ip_addresses.first() else {
                        return Ok(Verdict::Unhealthy {
                            reason: "the container has no network address to probe".into(),
                        });
                    };
                    match http_status(ip, port, &path, Duration::from_secs(2).min(remaining)).await
                    {
                        Ok(code) if (200..300).contains(&code) => {
                            return Ok(Verdict::Healthy {
                                after: start.elapsed(),
                                how: format!("GET {path} on port {port} answered {code}"),
                            });
                        }
                        Ok(code) => last = format!("GET {path} answered {code}"),
                        Err(e) => last = format!("GET {path}: {e}"),
                    }
                }
                Probe::Settle => {
                    let up = c
                        .started_at
                        .and_then(|t| {
                            let now = jiff::Timestamp::now();
                            now.duration_since(t).try_into().ok()
                        })
                        .unwrap_or(Duration::ZERO);
                    if up >= self.settings.settle {
                        return Ok(Verdict::Healthy {
                            after: start.elapsed(),
                            how: format!(
                                "no health check; it kept running for {}",
                                crate::output::human_duration(self.settings.settle)
                            ),
                        });
                    }
                    last = format!(
                        "running for {up:.1?} of the {:?} settle period",
                        self.settings.settle
                    );
                }
            }
            if Instant::now() >= deadline {
                return Ok(Verdict::Unhealthy {
                    reason: format!(
                        "not healthy within {} (last: {last})",
                        crate::output::human_duration(self.timeout)
                    ),
                });
            }
            // Most apps are ready within a second or two: look closely then, so a fast
            // app is not kept waiting by our own polling.
            let interval = if start.elapsed() < Duration::from_secs(2) {
                self.settings.interval.min(Duration::from_millis(20))
            } else {
                self.settings.interval
            };
            let pause = interval.min(deadline.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = interrupt::wait(), if self.interruptible => return Ok(Verdict::Interrupted),
            }
        }
    }

    fn probe(&self, c: &ContainerInfo) -> Probe {
        if let Some(test) = &c.healthcheck {
            match test.first().map(String::as_str) {
                Some("CMD") => return Probe::Exec(test[1..].to_vec()),
                Some("CMD-SHELL") => {
                    return Probe::Exec(vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")]);
                }
                _ => {}
            }
        }
        match &self.settings.http {
            Some((path, port)) => Probe::Http {
                path: path.clone(),
                port: *port,
            },
            None => Probe::Settle,
        }
    }
}

/// Why a container can no longer become healthy, if it can't.
fn dead(c: &ContainerInfo, restarts_at_start: i64) -> Option<String> {
    if c.restarting || c.restart_count > restarts_at_start {
        return Some(format!(
            "the container is restarting (it exited with code {}; restarts: {})",
            c.exit_code, c.restart_count
        ));
    }
    if !c.running {
        return Some(format!(
            "the container is {} (exit code {})",
            if c.state.is_empty() {
                "not running"
            } else {
                &c.state
            },
            c.exit_code
        ));
    }
    None
}

/// A minimal HTTP/1.0 GET: the gate needs only the status code of one request to a
/// container address, which does not justify an HTTP client stack.
async fn http_status(ip: &str, port: u16, path: &str, timeout: Duration) -> std::io::Result<u16> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await?;
        s.write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let r = s.read(&mut buf[n..]).await?;
            if r == 0 {
                break;
            }
            n += r;
        }
        let head = String::from_utf8_lossy(&buf[..n]);
        head.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
    };
    tokio::time::timeout(timeout, io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}
