//! Issue 10: "stopped" means stopped, hot/cold/no standby, and the proxy set up by the
//! release before the control protocol had a version.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{Behaviour, Fixture, Options, docker_out};

/// Start-first with a container name and a published port (on loopback, ephemeral), as in
/// the guide; `extra` adds lines to the service.
fn fixture(name: &str, extra: &str) -> Fixture {
    Fixture::with(
        name,
        Options {
            container_name: true,
            extra_service_yaml: Some(format!("    ports:\n      - \"127.0.0.1::8080\"\n{extra}")),
            ..Options::default()
        },
    )
}

/// A client on the host through the published port, one request every 20 ms.
struct Client {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(usize, usize)>,
}

impl Client {
    fn start(fx: &Fixture) -> Client {
        let port = fx.host_port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            // Bounded: at most 5000 requests, and the test stops it sooner.
            for _ in 0..5000 {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                match crate::support::http_get(port, "/health") {
                    Some((200, _)) => ok += 1,
                    _ => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        });
        std::thread::sleep(Duration::from_millis(300));
        Client { stop, handle }
    }

    #[track_caller]
    fn none_failed(self) {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::SeqCst);
        let (ok, failed) = self.handle.join().expect("client");
        assert!(ok > 10, "the client ran ({ok} ok)");
        assert_eq!(failed, 0, "no request failed ({ok} ok)");
    }
}

/// (name, running) of every release container of the fixture's service.
fn release_containers(fx: &Fixture) -> Vec<(String, bool)> {
    fx.container_ids(&["label=dev.dockmaster.role=app"])
        .iter()
        .map(|id| {
            let l = crate::support::inspect_live(id);
            (l.name, l.running)
        })
        .collect()
}

fn running_releases(fx: &Fixture) -> usize {
    release_containers(fx).iter().filter(|(_, r)| *r).count()
}

#[test]
fn a_standby_that_ignores_its_stop_signal_is_killed_after_its_grace_period_before_exit() {
    let fx = fixture("stopkill", "    stop_grace_period: 2s\n");
    fx.push_version(Behaviour::IgnoresStopSignal);
    fx.dm(&["deploy"]).ok();
    let client = Client::start(&fx);
    fx.push_version(Behaviour::Good);
    let started = Instant::now();
    let out = fx.dm(&["deploy"]);
    let took = started.elapsed();
    out.ok()
        .stderr_has("Traffic moved")
        .stderr_has("it ignored its stop signal and was killed at the end of its 2.0s grace period")
        .stderr_has("kept, stopped");
    // At exit, exactly the live release runs (plus the proxy): the old one is stopped.
    assert_eq!(running_releases(&fx), 1, "{:?}", release_containers(&fx));
    assert!(fx.proxy().is_some());
    assert!(took >= Duration::from_secs(2), "it waited the grace period");
    assert_eq!(fx.served_version(), "v3");
    client.none_failed();
}

#[test]
fn a_standby_that_takes_two_seconds_to_shut_down_is_stopped_before_exit() {
    let fx = fixture("stopslow", "");
    fx.push_version(Behaviour::SlowStop(2));
    fx.dm(&["deploy"]).ok();
    let client = Client::start(&fx);
    fx.push_version(Behaviour::Good);
    let out = fx.dm(&["deploy"]);
    out.ok().stderr_has("Stopped the old container");
    assert!(
        !out.stderr.contains("killed"),
        "it stopped in its own time: {}",
        out.stderr
    );
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("Stopped the old container"))
        .unwrap();
    let secs: f64 = line
        .split(" in ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stop time in {line}"));
    assert!(
        secs >= 1.5,
        "the stop time is its shutdown (~2 s), shown apart from the switch: {line}"
    );
    assert_eq!(running_releases(&fx), 1, "{:?}", release_containers(&fx));
    client.none_failed();
}

#[test]
fn hot_standby_rollback_runs_no_compose_and_keeps_at_most_one_standby() {
    let fx = fixture("hot", "");
    fx.configure("standby = \"hot\"\n");
    let tag1 = fx.tag_today(&fx.head());
    fx.dm(&["deploy"]).ok();
    let client = Client::start(&fx);
    let tag2 = fx.tag_today(&fx.push_version(Behaviour::Good));
    fx.dm(&["deploy"])
        .ok()
        .stderr_has("kept running, drained, as the hot standby");
    // Live and hot standby run; nothing else.
    assert_eq!(running_releases(&fx), 2, "{:?}", release_containers(&fx));
    assert_eq!(release_containers(&fx).len(), 2);
    let rel = fx.dm(&["releases", "--json"]).ok().json();
    let standby: Vec<(String, serde_json::Value)> = rel
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["tag"].as_str().unwrap().to_string(), r["standby"].clone()))
        .collect();
    assert!(
        standby.contains(&(tag1.clone(), "hot".into())),
        "{standby:?}"
    );
    assert!(standby.contains(&(tag2.clone(), serde_json::Value::Null)));
    let st = fx.dm(&["status", "--json"]).ok().json();
    assert_eq!(st["standby"]["tag"], tag1.as_str());
    assert_eq!(st["standby"]["mode"], "hot");
    assert!(
        st["standby"]["memory_bytes"]
            .as_u64()
            .is_some_and(|m| m > 0),
        "a hot standby's memory is shown: {st}"
    );
    fx.dm(&["status"])
        .ok()
        .stdout_has("hot: running, drained, using");

    // The rollback to it must not run compose at all: a compose that fails proves it.
    let failing = fx.tmp.path().join("no-compose.sh");
    std::fs::write(&failing, "#!/bin/sh\necho compose was run >&2\nexit 97\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = fx
        .dm_cmd(&["rollback"])
        .env("DOCKMASTER_COMPOSE", &failing)
        .run();
    out.ok()
        .stderr_has("hot standby")
        .stderr_has("Traffic moved");
    assert_eq!(out.last_line(), format!("DEPLOYED_APP_TAG={tag1}"));
    assert_eq!(fx.served_version(), "v1");
    // And the release it left is now the hot standby.
    assert_eq!(running_releases(&fx), 2);
    let st = fx.dm(&["status", "--json"]).ok().json();
    assert_eq!(st["live"], tag1.as_str());
    assert_eq!(st["standby"]["tag"], tag2.as_str());

    // A third release: still one standby (the release that served just before), the older
    // one removed.
    fx.dm(&["rollback", &tag2]).ok();
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy"]).ok();
    let containers = release_containers(&fx);
    assert_eq!(containers.len(), 2, "live and one standby: {containers:?}");
    assert!(containers.iter().all(|(_, running)| *running));
    assert!(containers.iter().any(|(n, _)| n.contains(&tag2)));
    client.none_failed();
}

#[test]
fn standby_none_removes_the_old_release_and_cold_keeps_it_stopped() {
    let fx = fixture("sbnone", "");
    fx.configure("standby = \"none\"\n");
    fx.dm(&["deploy"]).ok();
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy"]).ok().stderr_has("Removed ");
    assert_eq!(release_containers(&fx).len(), 1, "only the live release");
    let rel = fx.dm(&["releases", "--json"]).ok().json();
    assert!(
        rel.as_array()
            .unwrap()
            .iter()
            .all(|r| r["standby"].is_null())
    );
    assert!(fx.dm(&["status", "--json"]).ok().json()["standby"].is_null());

    // The default is cold: kept, stopped, and said so.
    let fx = fixture("sbcold", "");
    let tag1 = fx.tag_today(&fx.head());
    fx.dm(&["deploy"]).ok();
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy"]).ok();
    let containers = release_containers(&fx);
    assert_eq!(containers.len(), 2);
    assert_eq!(running_releases(&fx), 1);
    let st = fx.dm(&["status", "--json"]).ok().json();
    assert_eq!(st["standby"]["mode"], "cold");
    assert_eq!(st["standby"]["tag"], tag1.as_str());
    assert!(st["standby"]["memory_bytes"].is_null());
}

#[test]
fn a_bad_standby_value_is_refused_and_changes_nothing() {
    let fx = fixture("sbbad", "");
    fx.dm(&["deploy"]).ok();
    let before = fx.snapshot();
    std::fs::write(fx.dir.join("dockmaster.toml"), "standby = \"warm\"\n").unwrap();
    fx.dm(&["releases"])
        .code(2)
        .stderr_has("dockmaster.toml is not valid");
    assert_eq!(fx.snapshot(), before);
}

/// Other builds of dockmaster for the upgrade tests, built once per run into one target
/// directory of their own (shared, so their common dependencies compile once; builds one at
/// a time, each binary copied out as it is made).
fn variant(
    name: &str,
    env: &[(&str, &str)],
    source: impl FnOnce(&std::path::Path) -> std::path::PathBuf,
) -> std::path::PathBuf {
    static BUILDS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("variants");
    let bin = base.join("bin").join(name);
    if bin.is_file() {
        return bin;
    }
    std::fs::create_dir_all(base.join("bin")).unwrap();
    let src = source(&base);
    let target = base.join("target");
    let out = Command::new(env!("CARGO"))
        .args(["build", "--locked", "--bin", "dockmaster"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .envs(env.iter().copied())
        .output()
        .expect("cargo build");
    assert!(
        out.status.success(),
        "building {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A static build lands under the target triple's directory.
    let built = [
        target.join("debug/dockmaster"),
        target.join("x86_64-unknown-linux-gnu/debug/dockmaster"),
    ]
    .into_iter()
    .filter(|p| p.is_file())
    .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .expect("the built binary");
    std::fs::copy(&built, &bin).unwrap();
    bin
}

/// The release before the protocol had a version (commit 8048024).
fn old_release_binary() -> std::path::PathBuf {
    const COMMIT: &str = "8048024";
    variant(COMMIT, &[], |base| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let src = base.join(format!("src-{COMMIT}"));
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).unwrap();
        let archive = Command::new("git")
            .args([
                "-C",
                root.to_str().unwrap(),
                "archive",
                "--format=tar",
                COMMIT,
            ])
            .output()
            .expect("git archive");
        assert!(
            archive.status.success(),
            "this test needs the repository's history (git archive {COMMIT}): {}",
            String::from_utf8_lossy(&archive.stderr)
        );
        let mut tar = Command::new("tar")
            .args(["-x", "-C", src.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tar.stdin
            .take()
            .unwrap()
            .write_all(&archive.stdout)
            .unwrap();
        assert!(tar.wait().unwrap().success());
        src
    })
}

/// This source tree built with `DOCKMASTER_PROXY_PROTOCOL=3`: a newer dockmaster.
fn newer_protocol_binary() -> std::path::PathBuf {
    variant("protocol-3", &[("DOCKMASTER_PROXY_PROTOCOL", "3")], |_| {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    })
}

#[test]
fn a_proxy_set_up_by_the_release_before_versions_is_driven_without_a_failed_request() {
    let old = old_release_binary();
    let fx = fixture("oldproxy", "");
    let tag1 = fx.tag_today(&fx.head());
    // The old dockmaster deploys and sets its proxy up (its own binary in the proxy image).
    let out = Command::new(&old)
        .arg("deploy")
        .current_dir(&fx.dir)
        .env("DOCKMASTER_STATE_DIR", &fx.state)
        .env_remove("APP_TAG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proxy = fx.proxy().expect("the old release's proxy");
    let status = docker_out(&["exec", &proxy.id, "/dockmaster", "proxy-ctl", "status"]);
    assert!(
        status.starts_with("ok upstream=") && !status.contains("proto="),
        "an unversioned proxy: {status}"
    );
    let client = Client::start(&fx);
    // This build drives it: a deploy and a rollback through the old proxy.
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy"]).ok().stderr_has("Traffic moved");
    assert_eq!(fx.served_version(), "v2");
    fx.dm(&["rollback", &tag1]).ok().stderr_has("Traffic moved");
    assert_eq!(fx.served_version(), "v1");
    assert_eq!(
        fx.proxy().unwrap().id,
        proxy.id,
        "the same proxy throughout"
    );
    let st = fx.dm(&["status", "--json"]).ok().json();
    assert_eq!(st["live"], tag1.as_str());
    client.none_failed();
}

fn run_as(bin: &std::path::Path, fx: &Fixture, args: &[&str]) -> crate::support::Output {
    let out = Command::new(bin)
        .args(args)
        .current_dir(&fx.dir)
        .env("DOCKMASTER_STATE_DIR", &fx.state)
        .env_remove("APP_TAG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    crate::support::Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_newer_build_drives_an_older_proxy_and_an_older_build_refuses_a_newer_one() {
    let newer = newer_protocol_binary();
    // This build (protocol 1) sets the proxy up; the newer build drives it.
    let fx = fixture("protoup", "");
    fx.dm(&["deploy"]).ok();
    let proxy = fx.proxy().unwrap();
    let client = Client::start(&fx);
    fx.push_version(Behaviour::Good);
    run_as(&newer, &fx, &["deploy"])
        .ok()
        .stderr_has("Traffic moved");
    assert_eq!(fx.served_version(), "v2");
    assert_eq!(
        fx.proxy().unwrap().id,
        proxy.id,
        "the same proxy throughout"
    );
    client.none_failed();

    // A proxy set up by the newer build: this (older) one refuses before changing anything.
    let fx = fixture("protodown", "");
    let tag1 = fx.tag_today(&fx.head());
    run_as(&newer, &fx, &["deploy"]).ok();
    let status = docker_out(&[
        "exec",
        &fx.proxy().unwrap().id,
        "/dockmaster",
        "proxy-ctl",
        "status",
    ]);
    assert!(status.contains("proto=3"), "{status}");
    fx.push_version(Behaviour::Good);
    let before = fx.snapshot();
    for args in [vec!["deploy"], vec!["rollback", tag1.as_str()]] {
        fx.dm(&args)
            .code(2)
            .stderr_has(
                "set up by a newer dockmaster (control protocol 3; this one speaks up to 2)",
            )
            .stderr_has("upgrade dockmaster");
        assert_eq!(fx.snapshot(), before, "nothing changed");
    }
}

#[test]
fn the_proxy_runs_as_nobody_and_resumes_its_upstream_after_a_restart() {
    let fx = fixture("nobody", "");
    fx.dm(&["deploy"]).ok();
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy"]).ok();
    let proxy = fx.proxy().expect("the proxy");
    let user = docker_out(&["inspect", "-f", "{{.Config.User}}", &proxy.id]);
    assert_eq!(
        user.trim(),
        "65534:65534",
        "its ports (8080) allow a non-root user"
    );
    let pid = docker_out(&["inspect", "-f", "{{.State.Pid}}", &proxy.id]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default()
        .to_string();
    assert!(uid.split_whitespace().nth(1) == Some("65534"), "{uid}");
    // Its state file is its own to write: after a restart it sends traffic where it did.
    let out = Command::new("docker")
        .args(["restart", "-t", "2", &proxy.id])
        .output()
        .unwrap();
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = docker_out(&["exec", &proxy.id, "/dockmaster", "proxy-ctl", "status"]);
        if status.starts_with("ok") {
            break;
        }
        assert!(Instant::now() < deadline, "the proxy came back: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(fx.served_version(), "v2");
}
