//! The release page's HTML: rendered on the server from the same reports as `--json`,
//! every value escaped, a little inline CSS, no JavaScript. At phone width the tables turn
//! into one card per row.

use std::fmt::Write;
use std::time::Duration;

use crate::commands::releases::Row;
use crate::commands::status::Report;
use crate::history::Event;
use crate::output::{human_duration, human_size};

/// Text made safe for HTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#f6f6f7}
header{display:flex;flex-wrap:wrap;gap:.3em 1em;align-items:center;padding:.6em 1em;background:#1d2b3a;color:#fff}
header strong{margin-right:auto}
header a{color:#cfe3ff;text-decoration:none}
header a.here{color:#fff;text-decoration:underline}
header form{margin:0}
main{padding:1em;max-width:72em;margin:auto}
h1{font-size:1.3em;margin:.2em 0 .8em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.4em .6em;border-bottom:1px solid #e3e3e6;vertical-align:top}
th{font-size:.85em;color:#555}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.3em 1em;background:#fff;padding:1em;margin:0}
dl.facts dt{color:#555}
dl.facts dd{margin:0}
.mark{display:inline-block;padding:0 .4em;margin:0 .2em .2em 0;border-radius:.3em;font-size:.85em;background:#e8e8ec}
.live{background:#d7f5dc}.failed{background:#fde0e0}.good{background:#e0ecfd}
.bad{color:#a40000;font-weight:600}
.note{color:#555;font-size:.9em}
button{font:inherit;padding:.25em .7em}
button[disabled]{cursor:not-allowed}
code{font-size:.95em}
@media (max-width:40em){
 table,tbody,tr,td{display:block;width:100%}
 thead{display:none}
 tr{background:#fff;margin:0 0 .8em;border:1px solid #e3e3e6;border-radius:.4em}
 td{border:0;padding:.25em .7em}
 td[data-label]::before{content:attr(data-label) ': ';color:#555;font-size:.85em}
 dl.facts{grid-template-columns:1fr}
 dl.facts dd{margin-bottom:.4em}
}
";

/// Which page a layout is for (its tab is shown as the current one).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Status,
    Releases,
    History,
    None,
}

/// A whole page. `csrf` is the session's CSRF token for the logout form (None: not logged
/// in, no navigation).
pub fn layout(title: &str, app: &str, tab: Tab, csrf: Option<&str>, body: &str) -> String {
    let mut nav = String::new();
    if let Some(csrf) = csrf {
        for (t, href, name) in [
            (Tab::Status, "/", "Status"),
            (Tab::Releases, "/releases", "Releases"),
            (Tab::History, "/history", "History"),
        ] {
            let class = if t == tab { " class=\"here\"" } else { "" };
            let _ = write!(nav, "<a href=\"{href}\"{class}>{name}</a>");
        }
        let _ = write!(
            nav,
            "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form>",
            escape(csrf)
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · {app} · dockmaster</title><style>{STYLE}</style></head>\
<body><header><strong>dockmaster · {app}</strong>{nav}</header><main><h1>{title}</h1>\n{body}\n</main></body></html>\n",
        title = escape(title),
        app = escape(app),
    )
}

fn opt(v: Option<&str>) -> String {
    v.map_or_else(|| "—".to_string(), escape)
}

/// `/`: what `dockmaster status` says.
pub fn status(r: &Report) -> String {
    let mut facts: Vec<(&str, String)> = vec![(
        "service",
        format!(
            "{} (project {}, repository {})",
            escape(&r.service),
            escape(&r.project),
            escape(&r.repository)
        ),
    )];
    match &r.container {
        None => facts.push((
            "live",
            "<span class=\"bad\">nothing: the service has no container</span>".into(),
        )),
        Some(c) => {
            facts.push((
                "live",
                match &r.live {
                    Some(t) => format!("<span class=\"mark live\">{}</span>", escape(t)),
                    None => format!(
                        "{} <span class=\"bad\">(not a release of {})</span>",
                        escape(&c.image),
                        escape(&r.repository)
                    ),
                },
            ));
            let health = match c.health.as_deref() {
                Some("unhealthy") => "<span class=\"bad\">unhealthy</span>".to_string(),
                Some(h) => escape(h),
                None => "no health check".into(),
            };
            facts.push((
                "container",
                format!("{} ({})", escape(&c.name), escape(&c.state)),
            ));
            facts.push(("health", health));
            facts.push((
                "uptime",
                c.uptime_seconds.map_or("—".into(), |s| {
                    human_duration(Duration::from_secs(s.max(0) as u64))
                }),
            ));
            facts.push(("restarts", c.restarts.to_string()));
        }
    }
    facts.push((
        "proxy",
        match &r.proxy {
            Some(p) => format!(
                "{} ({}), sends traffic to {} — start-first switching",
                escape(&p.name),
                escape(&p.state),
                escape(&p.upstream)
            ),
            None => "none (the service's own ports)".into(),
        },
    ));
    facts.push((
        "standby",
        match &r.standby {
            Some(s) => format!(
                "{} ({}), {}{}",
                opt(s.tag.as_deref()),
                escape(&s.container),
                match s.mode {
                    crate::settings::Standby::Hot => "hot: running, drained",
                    _ => "cold: stopped",
                },
                s.memory_bytes
                    .map(|m| format!(", using {} of memory", human_size(m as i64)))
                    .unwrap_or_default()
            ),
            None => "none".into(),
        },
    ));
    facts.push((
        "dockmaster put",
        match (&r.recorded_live, r.matches_record) {
            (None, _) => "no record yet".into(),
            (Some(t), Some(true)) => format!("{} — matches what runs", escape(t)),
            (Some(t), _) => format!(
                "{} — <span class=\"bad\">DRIFT: something else runs</span>",
                escape(t)
            ),
        },
    ));
    facts.push((
        "latest",
        match r.latest_matches {
            None => "does not exist".into(),
            Some(true) => "names the live image".into(),
            Some(false) => "<span class=\"bad\">DRIFT: not the live image</span>".into(),
        },
    ));
    facts.push((
        "rollback to",
        r.rollback_target
            .as_deref()
            .map_or("none (no older release that is not failed)".into(), escape),
    ));
    facts.push((
        "disk",
        format!(
            "{} kept, {} (each image once)",
            crate::commands::plural(r.releases, "release", "releases"),
            human_size(r.disk_bytes)
        ),
    ));
    if let Some(e) = &r.last_event {
        facts.push((
            "last event",
            format!(
                "#{} {} {} → {}: {} ({})",
                e.id,
                escape(&e.command),
                opt(e.from_release.as_deref()),
                opt(e.to_release.as_deref()),
                escape(&e.outcome),
                escape(&when(&e.started_at))
            ),
        ));
    }
    let mut body = String::from("<dl class=\"facts\">");
    for (k, v) in facts {
        let _ = write!(body, "<dt>{}</dt><dd>{v}</dd>", escape(k));
    }
    body.push_str("</dl>");
    body
}

/// Why a release's rollback button is disabled. Every release has a reason for now: the
/// confirm page that would take a rollback from the page comes next.
pub fn rollback_blocked(row: &Row, image_present: bool) -> &'static str {
    if row.live {
        "live already"
    } else if row.failed {
        "marked failed"
    } else if !image_present {
        "image missing"
    } else {
        "rollback from the page comes next"
    }
}

fn marks(row: &Row) -> String {
    let mut m = String::new();
    let mut add = |class: &str, text: &str| {
        let _ = write!(m, "<span class=\"mark {class}\">{text}</span>");
    };
    if row.live {
        add("live", "live");
    }
    if row.previous {
        add("", "previous");
    }
    match row.standby {
        Some(crate::settings::Standby::Hot) => add("", "standby (hot)"),
        Some(_) => add("", "standby (cold)"),
        None => {}
    }
    if row.known_good {
        add("good", "known-good");
    }
    if row.failed {
        add("failed", "failed");
    }
    m
}

/// `/releases`: the releases table with marks and a (disabled, for now) rollback button.
pub fn releases(rows: &[Row]) -> String {
    if rows.is_empty() {
        return "<p>No releases yet: <code>dockmaster deploy</code> builds the first.</p>".into();
    }
    let mut body = String::from(
        "<table><thead><tr><th>Tag</th><th>Created (UTC)</th><th>Size</th><th>Unique</th><th>Marks</th><th>Subject</th><th>Rollback</th></tr></thead><tbody>",
    );
    for r in rows {
        // Every row is an image the engine lists: its image is present.
        let why = rollback_blocked(r, true);
        let _ = write!(
            body,
            "<tr id=\"release-{tag}\"><td data-label=\"Tag\"><code>{tag}</code></td><td data-label=\"Created\">{created}</td><td data-label=\"Size\">{size}</td><td data-label=\"Unique\">{unique}</td><td data-label=\"Marks\">{marks}</td><td data-label=\"Subject\">{subject}</td><td data-label=\"Rollback\"><button type=\"button\" disabled title=\"{why}\">Roll back</button> <span class=\"note\">{why}</span></td></tr>",
            tag = escape(&r.tag),
            created = escape(&when(&r.created)),
            size = human_size(r.size_bytes),
            unique = r.unique_bytes.map_or("—".into(), human_size),
            marks = marks(r),
            subject = opt(r.subject.as_deref()),
            why = escape(why),
        );
    }
    body.push_str("</tbody></table>");
    body
}

/// `/history`: every event, newest first.
pub fn history(events: &[Event]) -> String {
    if events.is_empty() {
        return "<p>No events recorded yet.</p>".into();
    }
    let mut body = String::from(
        "<table><thead><tr><th>#</th><th>When (UTC)</th><th>Command</th><th>From → to</th><th>Outcome</th><th>Took</th><th>Who</th><th>Why</th></tr></thead><tbody>",
    );
    for e in events {
        let outcome = match e.outcome.as_str() {
            "succeeded" => escape(&e.outcome),
            o => format!("<span class=\"bad\">{}</span>", escape(o)),
        };
        let _ = write!(
            body,
            "<tr><td data-label=\"#\">{id}</td><td data-label=\"When\">{when}</td><td data-label=\"Command\">{cmd}</td><td data-label=\"From → to\">{from} → {to}</td><td data-label=\"Outcome\">{outcome}</td><td data-label=\"Took\">{took}</td><td data-label=\"Who\">{user}@{host}</td><td data-label=\"Why\">{why}</td></tr>",
            id = e.id,
            when = escape(&when(&e.started_at)),
            cmd = escape(&e.command),
            from = opt(e.from_release.as_deref()),
            to = opt(e.to_release.as_deref()),
            took = e
                .duration_ms
                .map_or("—".into(), |ms| human_duration(Duration::from_millis(
                    ms.max(0) as u64
                ))),
            user = escape(&e.user),
            host = escape(&e.host),
            why = e.reason.as_deref().map(escape).unwrap_or_default(),
        );
    }
    body.push_str("</tbody></table>");
    body
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS`.
fn when(t: &str) -> String {
    t.get(..19).unwrap_or(t).replace('T', " ")
}

/// The page for someone without a session: how to get one.
pub fn how_to_log_in(app: &str) -> String {
    layout(
        "Log in",
        app,
        Tab::None,
        None,
        "<p>Open the login link that <code>dockmaster serve</code> printed when it started \
(<code>http://…/login?token=…</code>). The token is kept in <code>serve.token</code> in \
dockmaster's state directory, readable only by its owner.</p>",
    )
}

/// A short page that says one thing (an error, a refusal).
pub fn message(title: &str, app: &str, csrf: Option<&str>, text: &str) -> String {
    layout(
        title,
        app,
        Tab::None,
        csrf,
        &format!("<p>{}</p>", escape(text)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            tag: "2026.01.09-def4567".into(),
            commit: "def4567".into(),
            subject: Some("<script>alert(1)</script>".into()),
            created: "2026-01-09T10:00:00Z".into(),
            size_bytes: 2_000_000,
            unique_bytes: None,
            shared_bytes: None,
            image_id: "sha256:x".into(),
            live: false,
            previous: true,
            known_good: true,
            failed: false,
            standby: None,
        }
    }

    #[test]
    fn escapes_everything_that_matters() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let html = releases(&[row()]);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn every_rollback_button_is_disabled_with_its_reason() {
        let mut r = row();
        assert_eq!(
            rollback_blocked(&r, true),
            "rollback from the page comes next"
        );
        assert_eq!(rollback_blocked(&r, false), "image missing");
        r.failed = true;
        assert_eq!(rollback_blocked(&r, true), "marked failed");
        r.live = true;
        assert_eq!(rollback_blocked(&r, true), "live already");
        let html = releases(&[r]);
        assert!(html.contains("disabled title=\"live already\""), "{html}");
    }

    #[test]
    fn layout_has_viewport_and_logout_form() {
        let html = layout("T", "app<1>", Tab::Status, Some("c0ffee"), "");
        assert!(html.contains("name=\"viewport\""));
        assert!(html.contains("name=\"csrf\" value=\"c0ffee\""));
        assert!(html.contains("app&lt;1&gt;"));
        assert!(!layout("T", "a", Tab::None, None, "").contains("/logout"));
    }
}
