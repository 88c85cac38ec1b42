//! Issue 13: `deploy --watch` rolls a degraded release back on its own, keeps a healthy one,
//! and the proxy's counters reach `status` and `metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{Behaviour, Fixture, Options};

/// Start-first with a hot standby (so a watch's rollback is a pointer swap), a short
/// window, a published loopback port.
fn fixture(name: &str, watch: &str) -> Fixture {
    let fx = Fixture::with(
        name,
        Options {
            container_name: true,
            extra_service_yaml: Some("    ports:\n      - \"127.0.0.1::8080\"\n".into()),
            ..Options::default()
        },
    );
    fx.configure(&format!(
        "standby = \"hot\"\n[watch]\nwindow = \"5s\"\n{watch}"
    ));
    fx
}

/// Traffic on `/cgi-bin/work` from two loops; counts answers by kind. A 500 is the app's
/// answer; a connection that fails or times out is the switch's fault.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    loops: Vec<JoinHandle<()>>,
}

impl Traffic {
    fn start(fx: &Fixture) -> Traffic {
        let port = fx.host_port();
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, errors, failed) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let loops = (0..2)
            .map(|_| {
                let (stop, ok, errors, failed) =
                    (stop.clone(), ok.clone(), errors.clone(), failed.clone());
                std::thread::spawn(move || {
                    // Bounded: at most 6000 requests per loop, and the test stops it sooner.
                    for _ in 0..6000 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        match crate::support::http_get(port, "/cgi-bin/work").map(|(c, _)| c) {
                            Some(200) => ok.fetch_add(1, Ordering::SeqCst),
                            Some(_) => errors.fetch_add(1, Ordering::SeqCst),
                            None => failed.fetch_add(1, Ordering::SeqCst),
                        };
                        std::thread::sleep(Duration::from_millis(25));
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            errors,
            failed,
            loops,
        }
    }

    /// Stop; (ok, app errors, failed).
    fn finish(self) -> (usize, usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for l in self.loops {
            l.join().unwrap();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.errors.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

fn last_deploy(fx: &Fixture) -> serde_json::Value {
    let h = fx.dm(&["history", "--json"]).ok().json();
    h.as_array()
        .unwrap()
        .iter()
        .find(|e| e["command"] == "deploy")
        .cloned()
        .expect("a deploy event")
}

fn marks(fx: &Fixture, tag: &str) -> (bool, bool) {
    let rel = fx.dm(&["releases", "--json"]).ok().json();
    let r = rel
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tag"] == tag)
        .unwrap_or_else(|| panic!("no release {tag}: {rel}"))
        .clone();
    (r["known_good"] == true, r["failed"] == true)
}

#[test]
fn a_release_failing_half_its_requests_is_rolled_back_by_the_watch_without_a_failed_request() {
    let fx = fixture("watch5xx", "");
    let tag1 = fx.tag_today(&fx.head());
    fx.dm(&["deploy"]).ok();
    let traffic = Traffic::start(&fx);
    std::thread::sleep(Duration::from_secs(2));
    let tag2 = fx.tag_today(&fx.push_version(Behaviour::FailsHalf));
    let started = Instant::now();
    let out = fx.dm(&["deploy", "--watch", "60s"]);
    let took = started.elapsed();
    out.code(1)
        .stderr_has("WATCHING")
        .stderr_has("degraded after")
        .stderr_has("5xx responses:")
        .stderr_has("was rolled back by the watch")
        .stderr_has("is this release's hot standby");
    assert_eq!(out.last_line(), format!("DEPLOYED_APP_TAG={tag1}"));
    assert!(
        took < Duration::from_secs(40),
        "rolled back within the window, not at the end of the watch: {took:?}"
    );
    assert_eq!(fx.served_version(), "v1");
    let (ok, app_errors, failed) = traffic.finish();
    assert!(
        ok > 50 && app_errors > 5,
        "traffic ran: {ok} ok, {app_errors} 500s"
    );
    assert_eq!(failed, 0, "no request failed because of the switches");
    let e = last_deploy(&fx);
    assert_eq!(e["outcome"], "rolled-back");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .starts_with("watch: 5xx responses"),
        "{e}"
    );
    assert_eq!(marks(&fx, &tag2), (false, true), "marked failed");
    // One event for the deploy: no separate rollback event.
    let h = fx.dm(&["history", "--json"]).ok().json();
    assert_eq!(
        h.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["to_release"] == tag2.as_str())
            .count(),
        1
    );
}

#[test]
fn a_healthy_release_is_kept_and_marked_known_good_when_its_watch_ends() {
    // The latency rule is loose here: two identical releases' p95 differed 2.6× once on
    // the 2-core CI machine while the browser and fuzz tests ran beside this one, and
    // this test is about keeping a healthy release. The latency rule has its own test
    // (`a_latency_regression_trips_the_p95_threshold`: a release 300 ms slower).
    let fx = fixture("watchok", "max_p95_ratio = 20.0\n");
    fx.dm(&["deploy"]).ok();
    let traffic = Traffic::start(&fx);
    let tag2 = fx.tag_today(&fx.push_version(Behaviour::Good));
    let out = fx.dm(&["deploy", "--watch", "6s", "--json"]);
    out.ok().stderr_has("watched");
    let report = out.json();
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(report["watch"]["outcome"], "kept");
    assert_eq!(report["live"], tag2.as_str());
    assert_eq!(marks(&fx, &tag2), (true, false));
    let e = last_deploy(&fx);
    assert_eq!(e["outcome"], "succeeded");
    assert!(e["reason"].as_str().unwrap().contains("kept"), "{e}");
    let (ok, app_errors, failed) = traffic.finish();
    assert!(ok > 50);
    assert_eq!((app_errors, failed), (0, 0));

    // The counters reach status and metrics, by release.
    let st = fx.dm(&["status", "--json"]).ok().json();
    let live = st["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["live"] == true)
        .cloned()
        .expect("the live release's traffic");
    assert_eq!(live["release"], tag2.as_str());
    assert!(live["status"]["2xx"].as_u64().unwrap() > 10, "{live}");
    let text = fx.dm(&["metrics"]).ok().stdout.clone();
    assert!(text.contains("# TYPE dockmaster_requests_total counter"));
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("dockmaster_requests_total")
                && l.contains(&tag2)
                && l.contains("code=\"2xx\"")
        })
        .unwrap_or_else(|| panic!("no 2xx line for {tag2}:\n{text}"));
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n > 10, "{line}");
}

#[test]
fn a_release_that_crashes_after_going_live_is_rolled_back() {
    let fx = fixture("watchcrash", "");
    let tag1 = fx.tag_today(&fx.head());
    fx.dm(&["deploy"]).ok();
    fx.push_version(Behaviour::CrashesAfter(12));
    let out = fx.dm(&["deploy", "--watch", "60s"]);
    out.code(1).stderr_has("was rolled back by the watch");
    assert!(
        out.stderr.contains("the container stopped")
            || out.stderr.contains("the container restarted")
            || out.stderr.contains("connection errors"),
        "{}",
        out.stderr
    );
    assert_eq!(out.last_line(), format!("DEPLOYED_APP_TAG={tag1}"));
    assert_eq!(fx.served_version(), "v1");
}

#[test]
fn a_latency_regression_trips_the_p95_threshold() {
    let fx = fixture("watchslow", "min_requests = 5\n");
    let tag1 = fx.tag_today(&fx.head());
    fx.dm(&["deploy"]).ok();
    let traffic = Traffic::start(&fx);
    // The previous release's own p95 is taken over its last window: give it one.
    std::thread::sleep(Duration::from_secs(6));
    fx.push_version(Behaviour::SlowWork(300));
    let out = fx.dm(&["deploy", "--watch", "60s"]);
    out.code(1)
        .stderr_has("latency: p95")
        .stderr_has("the previous release's");
    assert_eq!(out.last_line(), format!("DEPLOYED_APP_TAG={tag1}"));
    let (_, _, failed) = traffic.finish();
    assert_eq!(failed, 0);
}

#[test]
fn ctrl_c_ends_the_watch_and_keeps_the_release_and_another_deploy_ends_it_too() {
    let fx = fixture("watchint", "");
    fx.dm(&["deploy"]).ok();
    let tag2 = fx.tag_today(&fx.push_version(Behaviour::Good));
    let child = fx.dm_cmd(&["deploy", "--watch", "5m"]).spawn();
    let pid = child.id();
    // Wait until it watches (the lock is free then), then Ctrl-C.
    let deadline = Instant::now() + Duration::from_secs(60);
    while last_deploy(&fx)["outcome"] != "watching" {
        assert!(
            Instant::now() < deadline,
            "the deploy never started watching"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("watch ended by Ctrl-C"), "{stderr}");
    assert_eq!(fx.served_version(), "v2");
    let e = last_deploy(&fx);
    assert_eq!(e["outcome"], "succeeded");
    assert!(e["reason"].as_str().unwrap().contains("Ctrl-C"));

    // A rollback run while a watch runs ends the watch (exit 0, said).
    let child = fx.dm_cmd(&["deploy", "--watch", "5m", "-y"]).spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while last_deploy(&fx)["outcome"] != "watching" {
        assert!(
            Instant::now() < deadline,
            "the second deploy never started watching"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let tag1 = {
        let rel = fx.dm(&["releases", "--json"]).ok().json();
        rel.as_array()
            .unwrap()
            .iter()
            .map(|r| r["tag"].as_str().unwrap().to_string())
            .find(|t| *t != tag2)
            .unwrap()
    };
    fx.dm(&["rollback", &tag1]).ok();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("another deploy or rollback put"),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
        format!("DEPLOYED_APP_TAG={tag1}")
    );
}

#[test]
fn bad_watch_settings_and_metrics_without_a_counting_proxy_change_nothing() {
    // No port known: recreate, so no proxy counts this service's traffic.
    let fx = Fixture::new("watchbad");
    fx.dm(&["deploy"]).ok();
    let before = fx.snapshot();
    fx.dm(&["metrics"])
        .code(1)
        .stderr_has("no proxy counts the traffic of service `app`")
        .stderr_has("hint:");
    for (toml, says) in [
        (
            "[watch]\nmax_5xx = \"200%\"\n",
            "[watch] max_5xx in dockmaster.toml: `200%` is not a share",
        ),
        (
            "[watch]\nmax_p95_ratio = 0.5\n",
            "[watch] max_p95_ratio in dockmaster.toml: `0.5` is not a number of at least 1.0",
        ),
        (
            "[watch]\nwindow = \"soon\"\n",
            "[watch] window in dockmaster.toml",
        ),
        ("[watch]\nmax_latency = 3\n", "dockmaster.toml is not valid"),
    ] {
        std::fs::write(fx.dir.join("dockmaster.toml"), toml).unwrap();
        fx.dm(&["deploy", "--watch", "10s"])
            .code(2)
            .stderr_has(says)
            .stderr_has("hint:");
        assert_eq!(fx.snapshot(), before, "nothing changed for {toml}");
    }
    std::fs::remove_file(fx.dir.join("dockmaster.toml")).unwrap();
    fx.dm(&["deploy", "--watch", "soon"])
        .code(2)
        .stderr_has("`soon` is not a duration");
    assert_eq!(fx.snapshot(), before);
}
