//! Issue 3: automatic rollback, the lock, interruption, the history, doctor.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Behaviour, Fixture, Options, docker_out};

/// A dockmaster run in the background whose stderr is watched line by line.
struct Watched {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Watched {
    fn start(fx: &Fixture, args: &[&str]) -> Watched {
        let mut child = fx.dm_cmd(args).spawn();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Watched { child, stderr }
    }

    /// Wait (bounded) until stderr shows `needle`.
    fn wait_for(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.stderr.lock().unwrap().contains(needle) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "dockmaster ended ({status}) before printing {needle:?}:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {within:?}:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, sig).expect("kill");
    }

    /// Wait (bounded) for the end; (exit code, stderr).
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status.code(), self.stderr.lock().unwrap().clone());
            }
            assert!(Instant::now() < deadline, "dockmaster did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn history(fx: &Fixture) -> Vec<serde_json::Value> {
    fx.dm(&["history", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// No event is left `running`: every recorded outcome is one that happened (a run that
/// was killed is `abandoned`, with no end time: nobody saw it end).
fn history_is_settled(fx: &Fixture) {
    for e in history(fx) {
        assert_ne!(e["outcome"], "running", "{e}");
        if e["outcome"] != "abandoned" {
            assert!(e["ended_at"].is_string(), "{e}");
        }
    }
}

/// The newest event of a command.
fn last_of(fx: &Fixture, command: &str) -> serde_json::Value {
    history(fx)
        .into_iter()
        .find(|e| e["command"] == command)
        .unwrap_or_else(|| panic!("no {command} event"))
}

#[test]
fn a_broken_release_is_rolled_back_automatically_and_marked_failed() {
    let fx = Fixture::new("autorb");
    fx.dm(&["deploy"]).ok();
    let tag1 = fx.tag_today(&fx.head());
    let good = fx.live().unwrap();
    let tag2 = fx.tag_today(&fx.push_version(Behaviour::CrashAtStart));

    let out = fx.dm(&["deploy", "--timeout", "20s"]);
    out.code(1)
        .stderr_has("fatal: DATABASE_URL is not set") // its last log lines
        .stderr_has("Putting the previous release")
        .stderr_has(&format!("{}:{tag1} is live again and healthy", fx.repo));
    let live = fx.live().unwrap();
    assert!(live.running);
    assert_eq!(live.image_id, good.image_id, "the good release is live");
    assert_eq!(fx.served_version(), "v1");

    let deploy = last_of(&fx, "deploy");
    assert_eq!(deploy["outcome"], "rolled-back");
    assert_eq!(deploy["to_release"], tag2.as_str());
    assert!(deploy["reason"].as_str().unwrap().len() > 5);
    let auto = last_of(&fx, "auto-rollback");
    assert_eq!(auto["outcome"], "succeeded");
    assert_eq!(auto["from_release"], tag2.as_str());
    assert_eq!(auto["to_release"], tag1.as_str());
    history_is_settled(&fx);

    let releases = fx.dm(&["releases", "--json"]).ok().json();
    let broken = releases
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tag"] == tag2.as_str())
        .unwrap();
    assert_eq!(broken["failed"], true);
    fx.dm(&["releases"]).ok().stdout_has("failed");
}

#[test]
fn no_rollback_leaves_the_failed_release_and_a_no_tag_rollback_skips_failed_ones() {
    let fx = Fixture::new("norb");
    fx.dm(&["deploy"]).ok();
    let tag1 = fx.tag_today(&fx.head());
    // v2 is broken and rolled back automatically: marked failed.
    let tag2 = fx.tag_today(&fx.push_version(Behaviour::CrashAtStart));
    fx.dm(&["deploy", "--timeout", "20s"]).code(1);
    // v3 is good: live.
    let tag3 = fx.tag_today(&fx.push_version(Behaviour::Good));
    fx.dm(&["deploy"]).ok();
    // v4 is broken and left in place as asked.
    let tag4 = fx.tag_today(&fx.push_version(Behaviour::NeverHealthy));
    fx.dm(&["deploy", "--no-rollback", "--timeout", "3s"])
        .code(1)
        .stderr_has("left in place as asked (--no-rollback)");
    let live = fx.live().unwrap();
    assert_eq!(live.image_ref, format!("{}:{tag4}", fx.repo));

    // The target is the newest known-good release built before the live one: v3.
    let status = fx.dm(&["status", "--json"]).ok().json();
    assert_eq!(status["rollback_target"], tag3.as_str());
    fx.dm(&["rollback", "-y"])
        .ok()
        .stderr_has(&tag3)
        .stderr_has("known-good");
    assert_eq!(fx.served_version(), "v3");
    // From v3, the target skips the failed v2 and goes to v1.
    let status = fx.dm(&["status", "--json"]).ok().json();
    assert_eq!(status["rollback_target"], tag1.as_str());
    let releases = fx.dm(&["releases", "--json"]).ok().json();
    let prev: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["previous"] == true)
        .map(|r| r["tag"].as_str().unwrap())
        .collect();
    assert_eq!(prev, vec![tag1.as_str()]);
    assert!(!prev.contains(&tag2.as_str()));
    history_is_settled(&fx);
}

#[test]
fn when_putting_the_previous_release_back_fails_too_it_says_what_state_and_what_to_run() {
    let fx = Fixture::new("rbfail");
    fx.dm(&["deploy"]).ok();
    let tag1 = fx.tag_today(&fx.head());
    let tag2 = fx.tag_today(&fx.push_version(Behaviour::Good));
    // Something outside the release breaks every start (here: the environment).
    let out = fx
        .dm_cmd(&["deploy", "--timeout", "10s"])
        .env("FAIL_START", "1")
        .run();
    out.code(1)
        .stderr_has("refusing to start")
        .stderr_has("back failed too")
        .stderr_has("DOWN")
        .stderr_has("dockmaster status")
        .stderr_has("dockmaster rollback <tag>")
        .stderr_has(&tag1)
        .stderr_has(&tag2);
    let deploy = last_of(&fx, "deploy");
    assert_eq!(deploy["outcome"], "failed");
    history_is_settled(&fx);
    // status says the truth: not running what dockmaster last put live.
    let status = fx.dm(&["status", "--json"]).ok().json();
    assert_eq!(status["recorded_live"], tag1.as_str());
    assert_ne!(status["container"]["state"], "running");
    // And the way out works once the cause is gone.
    fx.dm(&["rollback", &tag1, "-y"]).ok();
    assert_eq!(fx.served_version(), "v1");
}

#[test]
fn a_first_deploy_that_fails_says_there_is_nothing_to_go_back_to() {
    let fx = Fixture::new("firstfail");
    fx.push_version(Behaviour::CrashAtStart);
    fx.dm(&["deploy", "--timeout", "20s"])
        .code(1)
        .stderr_has("nothing to go back to");
    assert_eq!(last_of(&fx, "deploy")["outcome"], "failed");
}

#[test]
fn two_deploys_at_once_one_proceeds_the_other_exits_3_or_waits() {
    let fx = Fixture::new("lock");
    fx.dm(&["deploy"]).ok();
    fx.push_version(Behaviour::SlowStart(3));
    let mut first = Watched::start(&fx, &["deploy"]);
    first.wait_for("[1/8]", Duration::from_secs(30));
    let before = fx.snapshot();
    let second = fx.dm(&["deploy"]);
    second
        .code(3)
        .stderr_has("another operation holds the lock")
        .stderr_has("`dockmaster deploy`")
        .stderr_has("pid")
        .stderr_has("since")
        .stderr_has("--wait-lock");
    assert!(fx.snapshot().images.is_superset(&before.images));
    // A rollback meanwhile meets the same lock; with --wait-lock it waits its turn.
    let tag1 = fx.tag_today(&crate::support::git_out(
        &fx.work,
        &["rev-list", "--max-parents=0", "HEAD"],
    ));
    let waiting = Watched::start(&fx, &["rollback", &tag1, "--wait-lock", "120s"]);
    let (code, err) = first.finish();
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = waiting.finish();
    assert_eq!(
        code,
        Some(0),
        "the waiting rollback ran after the deploy: {err}"
    );
    assert_eq!(fx.served_version(), "v1");
    history_is_settled(&fx);
}

#[test]
fn ctrl_c_during_the_build_changes_nothing_live() {
    let fx = Fixture::new("intbuild");
    fx.dm(&["deploy"]).ok();
    let before = fx.live().unwrap();
    // A build step that takes a while, so the interrupt lands inside it.
    std::fs::write(
        fx.dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\nRUN mkdir -p /tmp\nRUN sleep 20\nCOPY www /www\nCOPY run.sh /run.sh\nCMD [\"/bin/sh\",\"/run.sh\"]\n",
    )
    .unwrap();
    fx.push_version(Behaviour::Good);
    let mut run = Watched::start(&fx, &["deploy"]);
    run.wait_for("RUN sleep 20", Duration::from_secs(60));
    run.signal(rustix::process::Signal::INT);
    let (code, err) = run.finish();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("nothing live was changed"), "{err}");
    assert_eq!(fx.live().unwrap(), before);
    assert_eq!(fx.served_version(), "v1");
    assert_eq!(last_of(&fx, "deploy")["outcome"], "interrupted");
    history_is_settled(&fx);
    // The next deploy works (and finishes the build).
    fx.dm(&["deploy"]).ok();
    assert_eq!(fx.served_version(), "v2");
}

#[test]
fn ctrl_c_while_waiting_for_health_leaves_the_previous_release_live_and_healthy() {
    for start_first in [false, true] {
        let fx = Fixture::with(
            if start_first { "intgatesf" } else { "intgate" },
            Options {
                extra_service_yaml: start_first.then(|| "    expose: [\"8080\"]\n".to_string()),
                ..Options::default()
            },
        );
        fx.dm(&["deploy"]).ok();
        fx.push_version(Behaviour::SlowStart(20));
        let mut run = Watched::start(&fx, &["deploy"]);
        run.wait_for("[7/8]", Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(300));
        run.signal(rustix::process::Signal::INT);
        let (code, err) = run.finish();
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("interrupted"), "{err}");
        let live = fx.live().unwrap();
        assert!(live.running);
        assert_eq!(fx.served_version(), "v1", "start-first {start_first}");
        let status = fx.dm(&["status", "--json"]).ok().json();
        assert_eq!(
            status["live"],
            fx.tag_today(&crate::support::git_out(&fx.work, &["rev-parse", "HEAD~1"]))
                .as_str()
        );
        assert_eq!(status["matches_record"], true);
        assert_eq!(last_of(&fx, "deploy")["outcome"], "interrupted");
        history_is_settled(&fx);
    }
}

#[test]
fn kill_9_during_the_switch_leaves_a_state_status_reports_truthfully() {
    let fx = Fixture::new("kill9");
    fx.dm(&["deploy"]).ok();
    let tag1 = fx.tag_today(&fx.head());
    let tag2 = fx.tag_today(&fx.push_version(Behaviour::SlowStart(2)));
    let mut run = Watched::start(&fx, &["deploy"]);
    run.wait_for("[6/8]", Duration::from_secs(60));
    run.signal(rustix::process::Signal::KILL);
    let (code, _) = run.finish();
    assert_eq!(code, None, "killed by a signal");

    // status says what runs, whatever it is, and whether it matches the record.
    let status = fx.dm(&["status", "--json"]).ok().json();
    let live = fx.live();
    match &live {
        Some(l) if l.image_ref.ends_with(&tag2) => {
            assert_eq!(status["live"], tag2.as_str());
            assert_eq!(status["matches_record"], false, "the record says {tag1}");
        }
        Some(l) if l.image_ref.ends_with(&tag1) => {
            assert_eq!(status["live"], tag1.as_str());
            assert_eq!(status["matches_record"], true);
        }
        other => assert!(status["live"].is_null(), "{other:?} vs {status}"),
    }
    assert_eq!(status["recorded_live"], tag1.as_str());
    assert_eq!(status["last_event"]["outcome"], "running");

    // The next deploy proceeds (the lock died with the process) and the killed run is
    // recorded as abandoned, not as an outcome it never had.
    fx.dm(&["deploy"]).ok();
    assert_eq!(fx.served_version(), "v2");
    let events = history(&fx);
    assert_eq!(events[0]["outcome"], "succeeded");
    assert_eq!(events[1]["outcome"], "abandoned");
    history_is_settled(&fx);
}

#[test]
fn doctor_passes_on_a_healthy_app_and_names_each_fault_with_its_fix() {
    let fx = Fixture::new("doctor");
    fx.dm(&["deploy"]).ok();
    let out = fx.dm(&["doctor"]);
    out.ok().stderr_has("All");
    let json = fx.dm(&["doctor", "--json"]).ok().json();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for check in [
        "engine",
        "compose",
        "checkout clean",
        "branch",
        "remote",
        "disk",
        "health check",
        "restart loop",
        "running image",
        "reclaimable space",
    ] {
        assert!(names.contains(&check), "{check} in {names:?}");
    }

    let failed = |args: &[&str], check: &str| -> serde_json::Value {
        let out = fx.dm(args);
        out.code(1);
        let json = out.json();
        let c = json
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == check)
            .unwrap_or_else(|| panic!("{check} in {json}"))
            .clone();
        assert_eq!(c["ok"], false, "{c}");
        assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{c}");
        c
    };

    // A dirty checkout.
    std::fs::write(fx.dir.join("notes.txt"), "wip\n").unwrap();
    failed(&["doctor", "--json"], "checkout clean");
    std::fs::remove_file(fx.dir.join("notes.txt")).unwrap();

    // The running image drifted: someone ran compose by hand with another tag.
    let tag1 = fx.tag_today(&fx.head());
    docker_out(&[
        "tag",
        &format!("{}:{tag1}", fx.repo),
        &format!("{}:hand", fx.repo),
    ]);
    let compose = crate::support::compose()
        .args(["up", "-d", "--force-recreate", "app"])
        .env("APP_TAG", "hand")
        .current_dir(&fx.dir)
        .output()
        .unwrap();
    assert!(compose.status.success());
    // Same image, other tag: still what dockmaster put (the tag it names is the release).
    let drift = fx.dm(&["doctor", "--json"]).json();
    let running = drift
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "running image")
        .unwrap()
        .clone();
    assert_eq!(running["ok"], true, "same image id: {running}");
    // Now a different release runs by hand.
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy", "--no-rollback"]).ok();
    let compose = crate::support::compose()
        .args(["up", "-d", "--force-recreate", "app"])
        .env("APP_TAG", &tag1)
        .current_dir(&fx.dir)
        .output()
        .unwrap();
    assert!(compose.status.success());
    let c = failed(&["doctor", "--json"], "running image");
    assert!(
        c["fix"].as_str().unwrap().contains("dockmaster rollback"),
        "{c}"
    );
    fx.dm(&["rollback", &fx.tag_today(&fx.head()), "-y"]).ok();

    // No engine: the first check fails, with its fix; exit 1.
    let out = fx
        .dm_cmd(&["doctor"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .run();
    out.code(1)
        .stderr_has("engine")
        .stderr_has("systemctl start docker");

    // No health check at all.
    let bare = Fixture::with(
        "doctorbare",
        Options {
            healthcheck: false,
            ..Options::default()
        },
    );
    bare.dm(&["deploy"]).ok();
    let out = bare.dm(&["doctor", "--json"]);
    out.code(1);
    let c = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "health check")
        .unwrap()
        .clone();
    assert_eq!(c["ok"], false);
    assert!(c["fix"].as_str().unwrap().contains("healthcheck"));

    // A restart loop: a release that crashes, left in place, with a restart policy.
    let looping = Fixture::with(
        "doctorloop",
        Options {
            extra_service_yaml: Some("    restart: always\n".into()),
            ..Options::default()
        },
    );
    looping.dm(&["deploy"]).ok();
    looping.push_version(Behaviour::CrashAtStart);
    looping
        .dm(&["deploy", "--no-rollback", "--timeout", "5s"])
        .code(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = looping.dm(&["doctor", "--json"]);
        let json = out.json();
        let c = json
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "restart loop")
            .cloned();
        if let Some(c) = c
            && c["ok"] == false
        {
            assert!(c["fix"].as_str().unwrap().contains("dockmaster rollback"));
            break;
        }
        assert!(Instant::now() < deadline, "no restart loop seen: {json}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
