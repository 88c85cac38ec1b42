//! The release page's HTML: rendered on the server from the same reports as `--json`,
//! every value escaped, a little inline CSS. Every page and every action works without
//! JavaScript; `/static/app.js` (shipped in the binary) only adds the live parts: the
//! status refreshed from `/events/status`, the logs and a job's output streamed. At phone
//! width the tables turn into one card per row.

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
td form{display:inline;margin:0 .3em .2em 0}
td code,td[data-label=Created],td[data-label=Size],td[data-label=Unique],td button,a.rollback{white-space:nowrap}
a.rollback,a.button{display:inline-block;padding:.25em .7em;border:1px solid #1d2b3a;border-radius:.3em;background:#1d2b3a;color:#fff;text-decoration:none}
form.action{margin:1em 0}
form.action button{padding:.5em 1.2em;font-weight:600}
button.danger{background:#a40000;color:#fff;border:1px solid #a40000;border-radius:.3em}
pre{background:#10161d;color:#e6e6e6;padding:.8em;overflow:auto;max-height:70vh;font-size:.85em;white-space:pre-wrap;word-break:break-all}
.state-running{color:#8a5a00;font-weight:600}.state-succeeded{color:#0a6b1f;font-weight:600}.state-failed{color:#a40000;font-weight:600}
.running{background:#fff4d6;padding:.6em 1em;margin:0 0 1em;border-radius:.3em}
#from-to{font-size:1.15em}
code{font-size:.95em}
@media (max-width:40em){
 table,tbody,tr,td{display:block;width:100%}
 thead{display:none}
 tr{background:#fff;margin:0 0 .8em;border:1px solid #e3e3e6;border-radius:.4em}
 td{border:0;padding:.25em .7em}
 td[data-label]::before{content:attr(data-label) ': ';color:#555;font-size:.85em}
 header strong{flex-basis:100%}
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
    Logs,
    None,
}

/// A whole page. `csrf` is the session's CSRF token for the logout form (None: not logged
/// in, no navigation, no script).
pub fn layout(title: &str, app: &str, tab: Tab, csrf: Option<&str>, body: &str) -> String {
    layout_with(title, app, tab, csrf, "", body)
}

/// [`layout`] with more in `<head>` (a job page's refresh for browsers without scripts).
pub fn layout_with(
    title: &str,
    app: &str,
    tab: Tab,
    csrf: Option<&str>,
    head: &str,
    body: &str,
) -> String {
    let mut nav = String::new();
    let mut script = String::new();
    if let Some(csrf) = csrf {
        script = format!(
            "<meta name=\"csrf-token\" content=\"{}\"><script src=\"/static/app.js\" defer></script>",
            escape(csrf)
        );
        for (t, href, name) in [
            (Tab::Status, "/", "Status"),
            (Tab::Releases, "/releases", "Releases"),
            (Tab::History, "/history", "History"),
            (Tab::Logs, "/logs", "Logs"),
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
<title>{title} · {app} · dockmaster</title><style>{STYLE}</style>{script}{head}</head>\
<body><header><strong>dockmaster · {app}</strong>{nav}</header><main><h1>{title}</h1>\n{body}\n</main></body></html>\n",
        title = escape(title),
        app = escape(app),
    )
}

fn opt(v: Option<&str>) -> String {
    v.map_or_else(|| "—".to_string(), escape)
}

/// An operation under way, as the status page says it.
pub enum Running {
    /// Started from this page: its job page streams its output.
    Job { id: u64, command: String },
    /// Someone else holds the lock (the CLI, another server): who, in words.
    Lock(String),
}

/// `/`: what `dockmaster status` says, refreshed live by the page's script, and the
/// deploy button.
pub fn status_page(r: &Report, running: Option<&Running>, csrf: &str) -> String {
    format!(
        "<dl id=\"status\" class=\"facts\">{facts}</dl>\
<form id=\"deploy-form\" class=\"action\" method=\"post\" action=\"/deploy\">{csrf}\
<button id=\"deploy\" type=\"submit\">Deploy</button> <span class=\"note\">builds and puts live the newest commit of the checkout's branch, as <code>dockmaster deploy</code> does</span></form>\
<p><a href=\"/prune\">Prune old releases…</a> (a dry run is shown first)</p>",
        facts = status_facts(r, running),
        csrf = csrf_field(csrf),
    )
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    )
}

/// The inside of the status page's `<dl id="status">`: what `/events/status` sends.
pub fn status_facts(r: &Report, running: Option<&Running>) -> String {
    let mut facts: Vec<(&str, String)> = vec![];
    match running {
        Some(Running::Job { id, command }) => facts.push((
            "running now",
            format!(
                "<span class=\"state-running\">{} from this page</span> — <a href=\"/jobs/{id}\">follow it</a>",
                escape(command)
            ),
        )),
        Some(Running::Lock(who)) => facts.push((
            "running now",
            format!("<span class=\"state-running\">{}</span>", escape(who)),
        )),
        None => {}
    }
    facts.push((
        "service",
        format!(
            "{} (project {}, repository {})",
            escape(&r.service),
            escape(&r.project),
            escape(&r.repository)
        ),
    ));
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
    let mut body = String::new();
    for (k, v) in facts {
        let id = if k == "live" { " id=\"live\"" } else { "" };
        let _ = write!(body, "<dt>{}</dt><dd{id}>{v}</dd>", escape(k));
    }
    body
}

/// Why a release cannot be rolled back to from the page (None: it can).
pub fn rollback_blocked(row: &Row, image_present: bool) -> Option<&'static str> {
    if row.live {
        Some("live already")
    } else if !image_present {
        Some("image missing")
    } else if row.failed {
        Some("marked failed")
    } else {
        None
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

/// A release the history knows but whose image is gone (removed by hand, or pruned):
/// listed so that its rollback button can say why it is disabled.
pub struct Missing {
    pub tag: String,
    pub mark: Option<crate::history::Mark>,
}

/// `/releases`: the releases table with marks, a rollback link to the confirm page (or a
/// disabled button and why), and the mark buttons.
pub fn releases(rows: &[Row], missing: &[Missing], csrf: &str) -> String {
    if rows.is_empty() && missing.is_empty() {
        return "<p>No releases yet: <code>dockmaster deploy</code> builds the first.</p>".into();
    }
    let mut body = String::from(
        "<table><thead><tr><th>Tag</th><th>Created (UTC)</th><th>Size</th><th>Unique</th><th>Marks</th><th>Subject</th><th>Rollback</th><th>Mark</th></tr></thead><tbody>",
    );
    for r in rows {
        // Every row is an image the engine lists: its image is present.
        let rollback = match rollback_blocked(r, true) {
            None => format!(
                "<a class=\"rollback\" href=\"/rollback?release={tag}\">Roll back…</a>",
                tag = escape(&r.tag)
            ),
            Some(why) => disabled(why),
        };
        let mut mark_forms = String::new();
        for (mark, label, shown) in [
            ("known-good", "Mark known-good", !r.known_good),
            ("failed", "Mark failed", !r.failed),
        ] {
            if shown {
                let _ = write!(
                    mark_forms,
                    "<form method=\"post\" action=\"/mark\">{csrf}<input type=\"hidden\" name=\"release\" value=\"{tag}\"><button type=\"submit\" name=\"mark\" value=\"{mark}\">{label}</button></form>",
                    csrf = csrf_field(csrf),
                    tag = escape(&r.tag),
                );
            }
        }
        let _ = write!(
            body,
            "<tr id=\"release-{tag}\"><td data-label=\"Tag\"><code>{tag}</code></td><td data-label=\"Created\">{created}</td><td data-label=\"Size\">{size}</td><td data-label=\"Unique\">{unique}</td><td data-label=\"Marks\">{marks}</td><td data-label=\"Subject\">{subject}</td><td data-label=\"Rollback\">{rollback}</td><td data-label=\"Mark\">{mark_forms}</td></tr>",
            tag = escape(&r.tag),
            created = escape(&when(&r.created)),
            size = human_size(r.size_bytes),
            unique = r.unique_bytes.map_or("—".into(), human_size),
            marks = marks(r),
            subject = opt(r.subject.as_deref()),
        );
    }
    for m in missing {
        let mark = match m.mark {
            Some(crate::history::Mark::KnownGood) => "<span class=\"mark good\">known-good</span>",
            Some(crate::history::Mark::Failed) => "<span class=\"mark failed\">failed</span>",
            None => "",
        };
        let _ = write!(
            body,
            "<tr id=\"release-{tag}\" class=\"missing\"><td data-label=\"Tag\"><code>{tag}</code></td><td data-label=\"Created\">—</td><td data-label=\"Size\">—</td><td data-label=\"Unique\">—</td><td data-label=\"Marks\">{mark}</td><td data-label=\"Subject\">—</td><td data-label=\"Rollback\">{rollback}</td><td data-label=\"Mark\"></td></tr>",
            tag = escape(&m.tag),
            rollback = disabled("image missing"),
        );
    }
    body.push_str("</tbody></table>");
    body
}

fn disabled(why: &str) -> String {
    format!(
        "<button type=\"button\" disabled title=\"{why}\">Roll back</button> <span class=\"why note\">{why}</span>",
        why = escape(why)
    )
}

/// What the rollback confirm page shows.
pub struct Confirm<'a> {
    pub live: Option<&'a Row>,
    pub target: &'a Row,
    /// The commits that stop running (`git log target..live`), when the checkout has both.
    pub commits_undone: Option<Vec<String>>,
    /// How the switch happens, in words.
    pub how: String,
    /// The service's environment keys (never their values).
    pub env_keys: Vec<String>,
}

/// `/rollback?release=TAG`: from → to and what changes, with the final button.
pub fn confirm_rollback(c: &Confirm, csrf: &str) -> String {
    let t = c.target;
    let from = c
        .live
        .map_or("nothing live".to_string(), |l| escape(&l.tag));
    let mut body = format!(
        "<p id=\"from-to\"><code>{from}</code> → <code>{to}</code></p><dl class=\"facts\">",
        to = escape(&t.tag)
    );
    let mut fact = |k: &str, v: String| {
        let _ = write!(body, "<dt>{}</dt><dd>{v}</dd>", escape(k));
    };
    let describe = |r: &Row| {
        format!(
            "commit <code>{}</code> “{}”, built {} UTC, image {} ({}){}",
            escape(r.commit.get(..7).unwrap_or(&r.commit)),
            opt(r.subject.as_deref()),
            escape(&when(&r.created)),
            escape(crate::output::short_id(&r.image_id)),
            human_size(r.size_bytes),
            if r.known_good { ", known-good" } else { "" }
        )
    };
    fact(
        "now live",
        c.live.map_or("nothing of this app".into(), describe),
    );
    fact("after", describe(t));
    fact(
        "commits that stop running",
        match &c.commits_undone {
            None => "unknown (the checkout does not have both commits)".into(),
            Some(v) if v.is_empty() => "none".into(),
            Some(v) => format!(
                "<ul>{}</ul>",
                v.iter()
                    .map(|l| format!("<li><code>{}</code></li>", escape(l)))
                    .collect::<String>()
            ),
        },
    );
    fact("how", escape(&c.how));
    fact(
        "configuration",
        format!(
            "unchanged: the compose file and environment as they are now{}; only the image changes",
            if c.env_keys.is_empty() {
                String::new()
            } else {
                format!(
                    " (environment keys: {})",
                    c.env_keys
                        .iter()
                        .map(|k| escape(k))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
    );
    let _ = write!(
        body,
        "</dl><form id=\"confirm-rollback\" class=\"action\" method=\"post\" action=\"/rollback\">{csrf}<input type=\"hidden\" name=\"release\" value=\"{tag}\"><button id=\"confirm\" class=\"danger\" type=\"submit\">Roll back to {tag}</button> <a href=\"/releases\">Cancel</a></form>",
        csrf = csrf_field(csrf),
        tag = escape(&t.tag),
    );
    body
}

/// `/prune`: the dry run, then the button that prunes with the same rules.
pub fn prune_plan(
    decisions: &[crate::commands::prune::Decision],
    keep: usize,
    older_than: Option<&str>,
    estimated_bytes: i64,
    csrf: &str,
) -> String {
    let going: Vec<_> = decisions.iter().filter(|d| d.remove).collect();
    let rules = format!(
        "keep the {keep} newest{}",
        older_than.map_or(String::new(), |o| format!(
            ", remove only releases built more than {} ago",
            escape(o)
        ))
    );
    let mut body = format!(
        "<div id=\"prune-plan\"><p>Dry run ({rules}): {} would go, freeing about {}. Nothing has been removed yet.</p><table><thead><tr><th>Tag</th><th>Created (UTC)</th><th>Plan</th><th>Why kept</th></tr></thead><tbody>",
        crate::commands::plural(going.len(), "release", "releases"),
        human_size(estimated_bytes)
    );
    for d in decisions {
        let _ = write!(
            body,
            "<tr id=\"plan-{tag}\"><td data-label=\"Tag\"><code>{tag}</code></td><td data-label=\"Created\">{created}</td><td data-label=\"Plan\">{plan}</td><td data-label=\"Why kept\">{why}</td></tr>",
            tag = escape(&d.tag),
            created = escape(&when(&d.created)),
            plan = if d.remove {
                "<span class=\"bad\">remove</span>"
            } else {
                "keep"
            },
            why = escape(&d.reason),
        );
    }
    body.push_str("</tbody></table></div>");
    if going.is_empty() {
        body.push_str("<p>Nothing to prune.</p>");
    } else {
        let _ = write!(
            body,
            "<form id=\"confirm-prune\" class=\"action\" method=\"post\" action=\"/prune\">{csrf}<input type=\"hidden\" name=\"keep\" value=\"{keep}\">{older}<button id=\"prune\" class=\"danger\" type=\"submit\">Prune {n}</button></form><p class=\"note\">The prune decides again when it runs: a release that became live or the rollback target meanwhile is kept.</p>",
            csrf = csrf_field(csrf),
            older = older_than.map_or(String::new(), |o| format!(
                "<input type=\"hidden\" name=\"older_than\" value=\"{}\">",
                escape(o)
            )),
            n = crate::commands::plural(going.len(), "release", "releases"),
        );
    }
    body
}

/// `/jobs/N`: an action's state and output; the script streams the rest of it.
pub fn job(j: &super::jobs::Job) -> String {
    let state = j.state.as_str();
    let code = j
        .exit_code
        .map_or(String::new(), |c| format!(" (exit code {c})"));
    let mut out = String::new();
    if j.dropped > 0 {
        let _ = writeln!(out, "… {} earlier lines not kept", j.dropped);
    }
    for l in &j.output {
        out.push_str(&escape(l));
        out.push('\n');
    }
    format!(
        "<p><code>dockmaster {args}</code>, started {started} UTC: <span id=\"job-state\" class=\"state-{state}\">{state}</span><span id=\"job-code\">{code}</span></p>\
<pre id=\"job-output\" data-job=\"{id}\" data-next=\"{next}\" data-state=\"{state}\">{out}</pre>\
<p><a href=\"/\">Status</a> · <a href=\"/releases\">Releases</a> · <a href=\"/history\">History</a></p>",
        args = escape(&j.args.join(" ")),
        started = escape(&when(&j.started_at)),
        id = j.id,
        next = j.dropped + j.output.len(),
    )
}

/// `/logs`: the live container's last lines; the script follows them.
pub fn logs(lines: &[String]) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(&escape(l));
        out.push('\n');
    }
    format!(
        "<p class=\"note\">The live release's last {} lines (<code>dockmaster logs</code>); with scripts on, new lines appear as they are written.</p><pre id=\"logs\">{out}</pre>",
        lines.len()
    )
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
            "<tr id=\"event-{id}\"><td data-label=\"#\">{id}</td><td data-label=\"When\">{when}</td><td data-label=\"Command\">{cmd}</td><td data-label=\"From → to\">{from} → {to}</td><td data-label=\"Outcome\">{outcome}</td><td data-label=\"Took\">{took}</td><td data-label=\"Who\">{user}@{host}</td><td data-label=\"Why\">{why}</td></tr>",
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
        let html = releases(&[row()], &[], "c");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn a_rollback_button_is_a_link_to_the_confirm_page_or_disabled_with_its_reason() {
        let mut r = row();
        assert_eq!(rollback_blocked(&r, true), None);
        let html = releases(&[r.clone()], &[], "c0ffee");
        assert!(
            html.contains("href=\"/rollback?release=2026.01.09-def4567\""),
            "{html}"
        );
        // Mark forms carry the CSRF token and post.
        assert!(html.contains("action=\"/mark\""), "{html}");
        assert!(html.contains("name=\"csrf\" value=\"c0ffee\""), "{html}");
        assert_eq!(rollback_blocked(&r, false), Some("image missing"));
        r.failed = true;
        assert_eq!(rollback_blocked(&r, true), Some("marked failed"));
        r.live = true;
        assert_eq!(rollback_blocked(&r, true), Some("live already"));
        let missing = Missing {
            tag: "2026.01.01-abc1234".into(),
            mark: None,
        };
        let html = releases(&[r], &[missing], "c");
        assert!(html.contains("disabled title=\"live already\""), "{html}");
        assert!(html.contains("disabled title=\"image missing\""), "{html}");
        assert!(!html.contains("href=\"/rollback"), "{html}");
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
