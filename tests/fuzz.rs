//! The JSON API under schemathesis (PyPI's `schemathesis`, v4): every operation that
//! `/api/openapi.json` lists, the POST actions included once they are there, is sent
//! generated valid and invalid requests with a real session cookie, CSRF token and Origin;
//! no answer may be a server error, and every answer must match the schema the document
//! gives it. Bounded: a few examples per operation, and the run is killed (and the test
//! fails) after `RUN_TIMEOUT`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::serve::{Served, csrf_of, serve};
use crate::support::{Fixture, require_engine};

/// The whole schemathesis run, at most.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
/// Generated cases per operation and phase.
const MAX_EXAMPLES: &str = "20";
/// The version .ci/run installs (the flags below are v4's).
const TESTED_WITH: &str = "4.32.5";

/// The schemathesis CLI (`schemathesis`, or its short name `st`), v4; a panic that says
/// how to install it when it is missing.
fn schemathesis() -> PathBuf {
    let install = format!(
        "pip install schemathesis=={TESTED_WITH} (.ci/run installs it in a venv when it is missing)"
    );
    for name in ["schemathesis", "st"] {
        let Ok(out) = Command::new(name).arg("--version").output() else {
            continue;
        };
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        // `st` might be some other program: schemathesis says `<name>, version 4.32.5`.
        let Some(version) = said.trim().strip_prefix(&format!("{name}, version ")) else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        assert!(
            version.starts_with("4."),
            "`{name} --version` says {version}: this test uses schemathesis 4's CLI; {install}"
        );
        return PathBuf::from(name);
    }
    panic!(
        "this test needs schemathesis on PATH (neither `schemathesis` nor `st` answers); {install}"
    );
}

/// Waits (`timeout` at most) until no job the server started is running (`/api/jobs`),
/// so nothing touches the fixture's containers after the test; returns the jobs.
fn wait_for_jobs(s: &Served, cookie: &str, timeout: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let r = s.get("/api/jobs", Some(cookie));
        assert_eq!(r.status, 200, "GET /api/jobs: {r:?}");
        let jobs = r.json();
        let running: Vec<_> = jobs
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["state"] == "running")
            .collect();
        if running.is_empty() {
            return jobs;
        }
        assert!(
            start.elapsed() < timeout,
            "jobs still running after {timeout:?}: {running:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A request path is an instance of a document path (`/api/jobs/{id}`: any one segment
/// for `{id}`).
fn path_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

#[test]
fn serve_api_survives_schemathesis() {
    require_engine();
    let st = schemathesis();
    let fx = Fixture::new("fuzz");
    fx.dm(&["deploy"]).ok();
    // Two releases: the document's links from the releases list lead to a real rollback
    // (to the second) and a real mark (of the first).
    fx.push_version(crate::support::Behaviour::Good);
    fx.dm(&["deploy"]).ok();
    let mut s = serve(&fx, "127.0.0.1:0");
    let cookie = s.login();
    let page = s.get("/", Some(&cookie));
    assert_eq!(page.status, 200, "{page:?}");
    let csrf = csrf_of(&page.body);

    let dir = tempfile::Builder::new()
        .prefix("dmt-fuzz-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("schemathesis.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(&st);
    cmd.current_dir(dir.path())
        .arg("run")
        .arg(s.url("/api/openapi.json"))
        .args(["--url", &s.origin()])
        .args(["-H", &format!("Cookie: {cookie}")])
        .args(["-H", &format!("X-CSRF-Token: {csrf}")])
        .args(["-H", &format!("Origin: {}", s.origin())])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            MAX_EXAMPLES,
            // One request at a time: the actions take the release lock anyway.
            "--workers",
            "1",
            "--request-timeout",
            "60",
            // The session is the -H cookie: do not replace it with generated ones.
            "--generation-with-security-parameters",
            "false",
            // Nothing kept between runs (no .hypothesis directory).
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "har",
            "--report-har-path",
        ])
        .arg(dir.path().join("run.har"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", st.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let took = start.elapsed();

    // Whatever it found, nothing may still act on the fixture once the test ends.
    let jobs = wait_for_jobs(&s, &cookie, Duration::from_secs(180));
    let Some(status) = status else {
        panic!("schemathesis ran longer than {RUN_TIMEOUT:?} and was killed; it said:\n{said}");
    };
    assert!(
        status.success(),
        "schemathesis failed ({status}) after {took:?}; it said:\n{said}"
    );
    eprintln!("schemathesis passed in {took:?}:\n{said}");

    // The actions it started ran as commands, and none of them crashed: each ended with
    // one of dockmaster's exit codes (0 done, 1 failed, 2 bad input, 3 locked), never a
    // panic (101) or a signal.
    let jobs = jobs.as_array().unwrap();
    assert!(!jobs.is_empty(), "no action was started: {said}");
    for job in jobs {
        let code = job["exit_code"].as_i64().unwrap_or(-1);
        assert!(
            (0..=3).contains(&code),
            "job {} ({}) ended with {code}: {job:#}",
            job["id"],
            job["args"]
        );
    }
    let started: Vec<String> = jobs
        .iter()
        .map(|j| format!("{} → {}", j["args"], j["exit_code"]))
        .collect();
    eprintln!("the actions it started:\n{}", started.join("\n"));

    // It really tested the API behind the session: every operation was called, and no
    // answer said the cookie, the CSRF token or the Origin was wrong.
    let har = std::fs::read_to_string(dir.path().join("run.har"))
        .unwrap_or_else(|e| panic!("schemathesis wrote no HAR report ({e}); it said:\n{said}"));
    let har: serde_json::Value = serde_json::from_str(&har).expect("the HAR report parses");
    let sent: Vec<(String, String, u64)> = har["log"]["entries"]
        .as_array()
        .expect("HAR entries")
        .iter()
        .map(|e| {
            let url = e["request"]["url"].as_str().unwrap_or_default();
            let path = url
                .strip_prefix(&s.origin())
                .unwrap_or(url)
                .split('?')
                .next()
                .unwrap_or_default();
            (
                e["request"]["method"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                path.to_string(),
                e["response"]["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let refused: Vec<_> = sent
        .iter()
        .filter(|(_, _, status)| matches!(status, 401 | 403))
        .collect();
    assert!(
        refused.is_empty(),
        "the session, CSRF token or Origin was refused: {refused:?}"
    );
    let doc = s.get("/api/openapi.json", Some(&cookie)).json();
    let mut answers = std::collections::BTreeMap::<(String, String, u64), usize>::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            let mut called = false;
            for (m, p, status) in &sent {
                if *m == method && path_matches(path, p) {
                    called = true;
                    *answers
                        .entry((method.clone(), path.clone(), *status))
                        .or_default() += 1;
                }
            }
            // Schemathesis leaves out the document's own route.
            assert!(
                called || path == "/api/openapi.json",
                "schemathesis never called {method} {path}; it said:\n{said}"
            );
        }
    }
    eprintln!("what the documented operations answered (method path status: requests):");
    for ((m, p, status), n) in &answers {
        eprintln!("  {m} {p} {status}: {n}");
    }

    // The server survived it: it still runs, answers, and the app is still served.
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "dockmaster serve exited"
    );
    let r = s.get("/api/status", Some(&cookie));
    assert_eq!(r.status, 200, "{r:?}");
    let live = fx.live().expect("a live container after the fuzzing");
    assert!(live.running, "{live:?}");
}
