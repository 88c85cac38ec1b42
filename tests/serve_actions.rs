//! Issue 15, the actions: `dockmaster serve`'s forms and API POSTs drive the real CLI
//! commands against a real deploy (plain HTTP, no JavaScript), take the CLI's lock, are
//! recorded in the history as `web`; every refusal says why and changes nothing.

use std::time::{Duration, Instant};

use crate::support::serve::{Reply, Served, csrf_of, serve};
use crate::support::{Behaviour, Fixture};

/// The job id a form POST was sent to (`303 Location: /jobs/N`).
fn job_of(r: &Reply) -> u64 {
    assert_eq!(r.status, 303, "{r:?}");
    let to = r.header("Location").expect("a Location");
    to.strip_prefix("/jobs/")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a job page: {to}"))
}

fn succeeded(job: &serde_json::Value) {
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["exit_code"], 0, "{job:#}");
}

/// The newest history event, through the API.
fn last_event(s: &Served, cookie: &str) -> serde_json::Value {
    let r = s.get("/api/history?limit=1", Some(cookie));
    assert_eq!(r.status, 200, "{r:?}");
    r.json()[0].clone()
}

fn events(s: &Served, cookie: &str) -> usize {
    s.get("/api/history", Some(cookie))
        .json()
        .as_array()
        .unwrap()
        .len()
}

/// Reads the event stream at `path` until `needle` has arrived (20 s at most); returns
/// what arrived. `poke` runs once the stream's head is in, and every second after (to
/// make the event happen: the server may still be starting what it follows).
fn stream_until(s: &Served, cookie: &str, path: &str, needle: &str, poke: impl Fn()) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n",
        s.host()
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = String::new();
    let mut poked: Option<Instant> = None;
    let mut buf = [0u8; 4096];
    while !got.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} never came on {path}; got:\n{got}"
        );
        match c.read(&mut buf) {
            Ok(0) => panic!("{path} ended before {needle:?}; got:\n{got}"),
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {} // a read timeout: look again
        }
        if got.contains("\r\n\r\n") && poked.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            assert!(got.starts_with("HTTP/1.1 200"), "{got}");
            assert!(got.contains("content-type: text/event-stream"), "{got}");
            poke();
            poked = Some(Instant::now());
        }
    }
    got
}

fn row<'a>(page: &'a str, tag: &str) -> &'a str {
    let start = page
        .find(&format!("<tr id=\"release-{tag}\""))
        .unwrap_or_else(|| panic!("no row for {tag}:\n{page}"));
    let end = page[start..].find("</tr>").unwrap() + start;
    &page[start..end]
}

#[test]
fn serve_actions_roll_back_mark_prune_and_deploy_as_forms_recorded_as_web() {
    let fx = Fixture::new("serveact");
    let v1 = fx.tag_today(&fx.head());
    fx.dm(&["deploy"]).ok();
    let v2 = fx.tag_today(&fx.push_version(Behaviour::Good));
    fx.dm(&["deploy"]).ok();
    let v3 = fx.tag_today(&fx.push_version(Behaviour::Good));
    fx.dm(&["deploy"]).ok();

    let s = serve(&fx, "127.0.0.1:0");
    let cookie = s.login();
    let page = s.get("/", Some(&cookie));
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.body);
    // Nothing fetched from anywhere: the one script is the binary's own, and the policy
    // allows nothing else.
    assert!(
        page.body
            .contains("<script src=\"/static/app.js\" defer></script>")
    );
    assert!(!page.body.contains("src=\"http") && !page.body.contains("href=\"http"));
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'self'; connect-src 'self';"),
        "{csp}"
    );
    let js = s.get("/static/app.js", Some(&cookie));
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(
        js.body.contains("new EventSource(\"/events/status\")"),
        "{}",
        js.body
    );
    assert!(
        !js.body.contains("http"),
        "the script loads nothing from elsewhere"
    );
    assert_eq!(
        s.get("/static/app.js", None).status,
        303,
        "the script needs a session"
    );
    assert!(
        page.body.contains(
            "<form id=\"deploy-form\" class=\"action\" method=\"post\" action=\"/deploy\">"
        ),
        "a deploy form that works without scripts: {}",
        page.body
    );

    // The confirm page is a GET: it shows from → to and the commits that stop running,
    // and changes nothing.
    let before = fx.snapshot();
    let n = events(&s, &cookie);
    let confirm = s.get(&format!("/rollback?release={v1}"), Some(&cookie));
    assert_eq!(confirm.status, 200, "{confirm:?}");
    let body = &confirm.body;
    assert!(
        body.contains(&format!(
            "<p id=\"from-to\"><code>{v3}</code> → <code>{v1}</code></p>"
        )),
        "{body}"
    );
    for subject in ["v2: Good", "v3: Good"] {
        assert!(
            body.contains(subject),
            "commit {subject:?} stops running: {body}"
        );
    }
    assert!(body.contains("action=\"/rollback\""), "{body}");
    // The environment by its keys only (the fixture's compose file sets FAIL_START).
    assert!(body.contains("environment keys: FAIL_START"), "{body}");
    assert!(body.contains(&format!("name=\"release\" value=\"{v1}\"")));
    assert_eq!(fx.snapshot(), before, "a GET changed something");
    assert_eq!(events(&s, &cookie), n, "a GET was recorded");

    // The final button: the real rollback, recorded as `web`.
    let id = job_of(&s.post_form("/rollback", &cookie, &csrf, &[("release", &v1)]));
    let job = s.wait_job(&cookie, id);
    succeeded(&job);
    assert_eq!(job["command"], "rollback");
    assert!(
        job["output"].as_array().unwrap().iter().any(|l| l
            .as_str()
            .unwrap()
            .contains(&format!("Rolled back to {v1}"))),
        "the CLI's own output: {job:#}"
    );
    let live = fx.live().expect("a live container");
    assert!(live.image_ref.ends_with(&v1), "{}", live.image_ref);
    let e = last_event(&s, &cookie);
    assert_eq!(e["command"], "rollback");
    assert_eq!(e["to_release"], v1.as_str());
    assert_eq!(e["outcome"], "succeeded");
    assert_eq!(e["user"], "web", "{e:#}");
    let history = s.get("/history", Some(&cookie)).body;
    assert!(
        history.contains(&format!("<tr id=\"event-{}\"", e["id"])) && history.contains(">web@"),
        "{history}"
    );
    // The job page, without scripts: the state and the output, server-rendered.
    let jp = s.get(&format!("/jobs/{id}"), Some(&cookie));
    assert_eq!(jp.status, 200);
    assert!(
        jp.body
            .contains("<span id=\"job-state\" class=\"state-succeeded\">succeeded</span>"),
        "{}",
        jp.body
    );

    // The job's output as server-sent events, from any line on, then its end.
    let events = stream_until(
        &s,
        &cookie,
        &format!("/jobs/{id}/events?from=0"),
        "event: end",
        || {},
    );
    assert!(
        events.contains(&format!("data: ✓ Rolled back to {v1}")),
        "{events}"
    );
    assert!(
        events.contains(r#"data: {"exit_code":0,"state":"succeeded"}"#),
        "{events}"
    );

    // The live release's log: the last lines on `/logs`, and new lines as events.
    let logs = s.get("/logs", Some(&cookie));
    assert_eq!(logs.status, 200);
    assert!(logs.body.contains("starting release v1"), "{}", logs.body);
    let live_id = live.id.clone();
    stream_until(
        &s,
        &cookie,
        "/events/logs",
        "data: written-by-the-test",
        || {
            // Into the live container's log: what its PID 1 writes to stdout.
            let out = std::process::Command::new("docker")
                .args([
                    "exec",
                    &live_id,
                    "sh",
                    "-c",
                    "echo written-by-the-test > /proc/1/fd/1",
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        },
    );

    // Mark v2 failed from the page: its rollback button is disabled with the reason.
    let id = job_of(&s.post_form(
        "/mark",
        &cookie,
        &csrf,
        &[("release", &v2), ("mark", "failed")],
    ));
    succeeded(&s.wait_job(&cookie, id));
    let e = last_event(&s, &cookie);
    assert_eq!(
        (
            e["command"].as_str(),
            e["to_release"].as_str(),
            e["user"].as_str()
        ),
        (Some("mark"), Some(v2.as_str()), Some("web"))
    );
    let releases = s.get("/releases", Some(&cookie)).body;
    assert!(
        row(&releases, &v2).contains("disabled title=\"marked failed\""),
        "{releases}"
    );
    assert!(row(&releases, &v1).contains("disabled title=\"live already\""));
    assert!(row(&releases, &v3).contains(&format!("href=\"/rollback?release={v3}\"")));
    // And known-good again, through the API.
    let r = s.post_json(
        "/api/mark",
        &cookie,
        &csrf,
        &format!(r#"{{"release":"{v2}","mark":"known-good"}}"#),
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        r.header("Location"),
        Some(format!("/api/jobs/{}", r.json()["job"]["id"]).as_str())
    );
    succeeded(&s.wait_job(&cookie, r.json()["job"]["id"].as_u64().unwrap()));
    let listed = fx.dm(&["releases", "--json"]).ok().json();
    let v2_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tag"] == v2.as_str())
        .unwrap()
        .clone();
    assert_eq!(v2_row["known_good"], true, "{v2_row:#}");
    assert_eq!(v2_row["failed"], false, "{v2_row:#}");

    // Prune: the dry run first (a GET, nothing removed), then the same rules for real.
    // Live is v1; v3 is the cold standby (its stopped container keeps it); keep 1 keeps
    // v3 as the newest too, so v2 goes.
    let before = fx.snapshot();
    let plan = s.get("/prune?keep=1", Some(&cookie));
    assert_eq!(plan.status, 200, "{plan:?}");
    assert!(
        plan.body.contains("Nothing has been removed yet"),
        "{}",
        plan.body
    );
    let going = |tag: &str| {
        let start = plan.body.find(&format!("<tr id=\"plan-{tag}\"")).unwrap();
        plan.body[start..]
            .split("</tr>")
            .next()
            .unwrap()
            .contains(">remove<")
    };
    assert!(going(&v2) && !going(&v1) && !going(&v3), "{}", plan.body);
    assert_eq!(fx.snapshot(), before, "the dry run changed something");
    let api_plan = s.post_json("/api/prune", &cookie, &csrf, r#"{"keep":1,"dry_run":true}"#);
    assert_eq!(api_plan.status, 200, "{api_plan:?}");
    let removed: Vec<String> = api_plan.json()["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["tag"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(removed, vec![v2.clone()]);
    assert_eq!(fx.snapshot(), before, "the API's dry run changed something");
    let id = job_of(&s.post_form("/prune", &cookie, &csrf, &[("keep", "1")]));
    succeeded(&s.wait_job(&cookie, id));
    let images = fx.images();
    assert!(!images.iter().any(|i| i.ends_with(&v2)), "{images:?}");
    assert!(images.iter().any(|i| i.ends_with(&v1)) && images.iter().any(|i| i.ends_with(&v3)));
    let e = last_event(&s, &cookie);
    assert_eq!(
        (e["command"].as_str(), e["user"].as_str()),
        (Some("prune"), Some("web"))
    );
    // v2 is gone but the history saw it live: listed, its button disabled, with why.
    let releases = s.get("/releases", Some(&cookie)).body;
    assert!(
        row(&releases, &v2).contains("disabled title=\"image missing\""),
        "{releases}"
    );
    let r = s.post_form("/rollback", &cookie, &csrf, &[("release", &v2)]);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("image missing"), "{}", r.body);

    // Deploy from the page is `dockmaster deploy`: it fetches the branch and builds the
    // commit pushed meanwhile.
    let v4 = fx.tag_today(&fx.push_version_elsewhere(Behaviour::Good));
    let id = job_of(&s.post_form("/deploy", &cookie, &csrf, &[]));
    let job = s.wait_job(&cookie, id);
    succeeded(&job);
    assert_eq!(job["args"], serde_json::json!(["deploy", "--yes"]));
    let live = fx.live().expect("a live container");
    assert!(live.image_ref.ends_with(&v4), "{} {job:#}", live.image_ref);
    let e = last_event(&s, &cookie);
    assert_eq!(
        (
            e["command"].as_str(),
            e["to_release"].as_str(),
            e["user"].as_str()
        ),
        (Some("deploy"), Some(v4.as_str()), Some("web"))
    );
    let status = s.get("/api/status", Some(&cookie)).json();
    assert_eq!(status["live"], v4.as_str());
}

#[test]
fn serve_refusals_say_why_and_change_nothing() {
    let fx = Fixture::new("serverefuse");
    let v1 = fx.tag_today(&fx.head());
    fx.dm(&["deploy"]).ok();
    let v2 = fx.tag_today(&fx.push_version(Behaviour::Good));
    fx.dm(&["deploy"]).ok();
    let s = serve(&fx, "127.0.0.1:0");
    let cookie = s.login();
    let csrf = csrf_of(&s.get("/", Some(&cookie)).body);
    let before = fx.snapshot();
    let n = events(&s, &cookie);
    let unchanged = |what: &str| {
        assert_eq!(
            fx.snapshot(),
            before,
            "{what} changed the service or the images"
        );
        assert_eq!(events(&s, &cookie), n, "{what} was recorded");
        assert_eq!(
            s.get("/api/jobs/1", Some(&cookie)).status,
            404,
            "{what} started a job"
        );
    };
    let origin = s.origin();
    let host = s.host();
    let raw = |headers: &[(&str, &str)], path: &str, body: &str| {
        crate::support::serve::request(s.port, "POST", path, &host, headers, body)
    };

    // Every action POST needs the CSRF token and a same-origin Origin.
    let form = format!("release={v1}");
    let r = raw(
        &[("Cookie", &cookie), ("Origin", &origin)],
        "/rollback",
        &form,
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("CSRF token is missing"), "{}", r.body);
    let with_csrf = format!("csrf={csrf}&release={v1}");
    let r = raw(
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        "/rollback",
        &with_csrf,
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("did not come from this page"), "{}", r.body);
    let r = raw(&[("Cookie", &cookie)], "/deploy", &format!("csrf={csrf}"));
    assert_eq!(r.status, 403, "no Origin: {r:?}");
    let r = raw(
        &[("Cookie", &cookie), ("Origin", &origin)],
        "/api/deploy",
        "{}",
    );
    assert_eq!(r.status, 403, "the API without X-CSRF-Token: {r:?}");
    assert!(r.json()["error"].as_str().unwrap().contains("CSRF"));
    // GETs never act: the action routes answer 405 or show a page that changes nothing.
    assert_eq!(s.get("/deploy", Some(&cookie)).status, 405);
    assert_eq!(s.get("/mark", Some(&cookie)).status, 405);
    assert_eq!(s.get("/api/rollback", Some(&cookie)).status, 405);
    unchanged("a POST without CSRF token or Origin");

    // Bad input: 400 with the reason.
    let r = s.post_form("/rollback", &cookie, &csrf, &[("release", "not-a-tag")]);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("not-a-tag"), "{}", r.body);
    let r = s.post_json(
        "/api/rollback",
        &cookie,
        &csrf,
        r#"{"release":"2020.01.01-abcdef0"}"#,
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.json()["error"].as_str().unwrap().contains("no release"),
        "{r:?}"
    );
    let r = s.post_json("/api/rollback", &cookie, &csrf, r#"{"release":1}"#);
    assert_eq!(r.status, 400, "{r:?}");
    let r = s.post_json("/api/prune", &cookie, &csrf, r#"{"keep":"many"}"#);
    assert_eq!(r.status, 400, "{r:?}");
    let r = s.post_form("/prune", &cookie, &csrf, &[("older_than", "soon")]);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("not a duration"), "{}", r.body);
    let r = s.post_form(
        "/mark",
        &cookie,
        &csrf,
        &[("release", &v1), ("mark", "great")],
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("known-good or failed"), "{}", r.body);
    // The live release: its confirm page and its POST say why not.
    let r = s.get(&format!("/rollback?release={v2}"), Some(&cookie));
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("live already"), "{}", r.body);
    let r = s.post_json(
        "/api/rollback",
        &cookie,
        &csrf,
        &format!(r#"{{"release":"{v2}"}}"#),
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.json()["error"].as_str().unwrap().contains("live already"));
    unchanged("bad input");

    // The CLI's mark command refuses the same way (exit 2, nothing changed).
    fx.dm(&["mark", "nope", "failed"])
        .code(2)
        .stderr_has("nope");
    fx.dm(&["mark", "2020.01.01-abcdef0", "failed"])
        .code(2)
        .stderr_has("no release");
    unchanged("`dockmaster mark` with a bad tag");

    // The lock: while a CLI deploy holds it, the page says who and starts nothing.
    let v3 = fx.tag_today(&fx.push_version(Behaviour::SlowStart(6)));
    let cli = fx.dm_cmd(&["deploy", "--timeout", "60s"]).spawn();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = s.get("/", Some(&cookie)).body;
        if status.contains("running now") {
            assert!(status.contains("`dockmaster deploy` by "), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the CLI deploy never showed: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = s.post_json(
        "/api/rollback",
        &cookie,
        &csrf,
        &format!(r#"{{"release":"{v1}"}}"#),
    );
    assert_eq!(r.status, 409, "{r:?}");
    let holder = &r.json()["holder"];
    assert_eq!(holder["command"], "deploy", "{r:?}");
    assert_ne!(holder["user"], "web", "the CLI's user holds it: {r:?}");
    let r = s.post_form("/deploy", &cookie, &csrf, &[]);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("holds the lock"), "{}", r.body);
    assert!(r.body.contains("`dockmaster deploy` by"), "{}", r.body);
    assert_eq!(
        s.get("/api/jobs/1", Some(&cookie)).status,
        404,
        "a refused action started a job"
    );
    let out = cli.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fx.live().unwrap().image_ref.ends_with(&v3));
    let history = fx.dm(&["history", "--json"]).ok().json();
    assert!(
        !history
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["user"] == "web"),
        "a refused action was recorded: {history:#}"
    );

    // One job at a time: a second action while the page's deploy runs is refused.
    fx.push_version(Behaviour::SlowStart(4));
    let r = s.post_form("/deploy", &cookie, &csrf, &[]);
    let id = job_of(&r);
    let r = s.post_json(
        "/api/rollback",
        &cookie,
        &csrf,
        &format!(r#"{{"release":"{v1}"}}"#),
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("still running"),
        "{r:?}"
    );
    succeeded(&s.wait_job(&cookie, id));
}
