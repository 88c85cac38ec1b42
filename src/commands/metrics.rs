//! `dockmaster metrics`: the proxy's per-release counters in the Prometheus text format, for
//! a node-exporter textfile collector or a cron job — no port is opened.

use std::fmt::Write;

use crate::commands::Ctx;
use crate::error::{Error, Result, exit};
use crate::runtime::{Runtime, Traffic};

pub async fn run(ctx: &Ctx) -> Result<u8> {
    let app = ctx.app();
    let Some(traffic) = ctx.rt.traffic(app.watch.window).await? else {
        return Err(Error::failed(format!(
            "no proxy counts the traffic of service `{}`: it switches with recreate, or its proxy was set up by a dockmaster before traffic counting",
            app.service
        ))
        .hint("a start-first deploy with this dockmaster sets up a proxy that counts"));
    };
    ctx.printer
        .out(prometheus(&app.id(), &traffic, app.watch.window.as_secs()).trim_end());
    Ok(exit::OK)
}

/// The text format (version 0.0.4): one family per metric, HELP and TYPE first.
pub fn prometheus(app: &str, traffic: &[Traffic], window_s: u64) -> String {
    let mut out = String::new();
    let label = |t: &Traffic| {
        format!(
            "app=\"{}\",release=\"{}\"",
            escape(app),
            escape(t.release.as_deref().unwrap_or(&t.container))
        )
    };
    let _ = writeln!(
        out,
        "# HELP dockmaster_requests_total Requests the proxy forwarded to a release, by status class.\n# TYPE dockmaster_requests_total counter"
    );
    for t in traffic {
        for (i, n) in t.counters.status.iter().enumerate() {
            let _ = writeln!(
                out,
                "dockmaster_requests_total{{{},code=\"{}xx\"}} {n}",
                label(t),
                i + 1
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP dockmaster_upstream_errors_total Requests the proxy could not deliver to a release (connection errors; the client got a 502).\n# TYPE dockmaster_upstream_errors_total counter"
    );
    for t in traffic {
        let _ = writeln!(
            out,
            "dockmaster_upstream_errors_total{{{}}} {}",
            label(t),
            t.counters.conn_errors
        );
    }
    let _ = writeln!(
        out,
        "# HELP dockmaster_request_duration_seconds Time to a response's headers through the proxy, over the last {window_s} s.\n# TYPE dockmaster_request_duration_seconds summary"
    );
    for t in traffic {
        let w = &t.counters.window;
        for (q, v) in [("0.5", w.p50), ("0.95", w.p95), ("0.99", w.p99)] {
            if let Some(v) = v {
                let _ = writeln!(
                    out,
                    "dockmaster_request_duration_seconds{{{},quantile=\"{q}\"}} {}",
                    label(t),
                    v.as_secs_f64()
                );
            }
        }
        let _ = writeln!(
            out,
            "dockmaster_request_duration_seconds_count{{{}}} {}",
            label(t),
            w.requests
        );
    }
    out
}

/// A label value: `\`, `"` and newlines escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::metrics::{Snapshot, WindowStats};
    use std::time::Duration;

    #[test]
    fn text_format_families_and_labels() {
        let t = Traffic {
            release: Some("2026.01.10-abc1234".into()),
            container: "c".into(),
            counters: Snapshot {
                requests: 12,
                status: [0, 10, 0, 1, 1],
                conn_errors: 2,
                window: WindowStats {
                    seconds: 30,
                    requests: 12,
                    status5xx: 1,
                    conn_errors: 2,
                    p50: Some(Duration::from_millis(2)),
                    p95: Some(Duration::from_millis(10)),
                    p99: None,
                },
            },
        };
        let text = prometheus("p-\"api\"", &[t], 30);
        assert!(text.contains(
            "dockmaster_requests_total{app=\"p-\\\"api\\\"\",release=\"2026.01.10-abc1234\",code=\"2xx\"} 10"
        ));
        assert!(text.contains("dockmaster_upstream_errors_total{app=\"p-\\\"api\\\"\",release=\"2026.01.10-abc1234\"} 2"));
        assert!(text.contains("quantile=\"0.95\"} 0.01"));
        assert!(!text.contains("quantile=\"0.99\""), "no sample, no line");
        // Every family is declared before its samples.
        for family in [
            "dockmaster_requests_total",
            "dockmaster_upstream_errors_total",
            "dockmaster_request_duration_seconds",
        ] {
            let declared = text.find(&format!("# TYPE {family} ")).unwrap();
            let first = text.find(&format!("\n{family}")).unwrap();
            assert!(declared < first, "{family}");
        }
    }
}
