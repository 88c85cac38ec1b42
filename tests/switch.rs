//! Issue 5: the start-first switch, measured by clients that probe the service throughout.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{Behaviour, Fixture, Options, docker_out, http_get};

/// A service that exposes its port (start-first needs to know it), with a container name
/// and a host port (ephemeral, on loopback) as in the guide.
fn start_first_fixture(name: &str) -> Fixture {
    Fixture::with(
        name,
        Options {
            container_name: true,
            extra_service_yaml: Some("    ports:\n      - \"127.0.0.1::8080\"\n".into()),
            ..Options::default()
        },
    )
}

/// A client container on the compose network, requesting `url` every 50 ms until told to
/// stop (at most 3000 requests), printing `ok` or `FAIL` per request.
struct NetClient {
    id: String,
}

impl NetClient {
    fn start(fx: &Fixture, url: &str) -> NetClient {
        let image = format!("{}:latest", fx.repo);
        let script = format!(
            "i=0; while [ ! -f /tmp/stop ] && [ $i -lt 3000 ]; do i=$((i+1)); \
             if timeout 2 wget -q -O /dev/null {url}; then echo ok; else echo FAIL; fi; \
             sleep 0.05; done; echo done"
        );
        let id = docker_out(&[
            "run",
            "-d",
            "--network",
            &fx.network(),
            "--label",
            &format!("com.docker.compose.project={}", fx.project),
            "--entrypoint",
            "/bin/sh",
            &image,
            "-c",
            &script,
        ])
        .trim()
        .to_string();
        assert!(!id.is_empty(), "client container started");
        NetClient { id }
    }

    /// Stop and return (ok, failed).
    fn finish(self) -> (usize, usize) {
        let _ = Command::new("docker")
            .args(["exec", &self.id, "touch", "/tmp/stop"])
            .output();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let logs = logs(&self.id);
            if logs.contains("done") || Instant::now() > deadline {
                let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
                let ok = logs.lines().filter(|l| *l == "ok").count();
                let failed = logs.lines().filter(|l| *l == "FAIL").count();
                return (ok, failed);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn logs(id: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", id])
        .output()
        .expect("docker logs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A client on the host, through the published port.
struct HostClient {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(usize, usize)>,
}

impl HostClient {
    fn start(port: u16) -> HostClient {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            for _ in 0..3000 {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if http_get(port, "/health").is_some_and(|(code, _)| code == 200) {
                    ok += 1;
                } else {
                    failed += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (ok, failed)
        });
        HostClient { stop, handle }
    }

    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("host client")
    }
}

#[test]
fn start_first_switches_lose_no_request_for_any_client() {
    let fx = start_first_fixture("sfzero");
    let out = fx.dm(&["deploy"]);
    out.ok().stderr_has("start-first");
    let tag1 = fx.tag_today(&fx.head());
    let proxy = fx.proxy().expect("the service's container is the proxy");
    assert_eq!(
        proxy.name,
        fx.container_name.clone().unwrap(),
        "the proxy holds container_name"
    );
    assert_eq!(fx.served_version(), "v1");
    let port = fx.host_port();

    let by_service = NetClient::start(&fx, "http://app:8080/health");
    let by_name = NetClient::start(
        &fx,
        &format!("http://{}:8080/health", fx.container_name.clone().unwrap()),
    );
    let host = HostClient::start(port);
    std::thread::sleep(Duration::from_millis(500));

    // Three switches: deploy v2, roll back to v1, roll forward to v2.
    let commit2 = fx.push_version(Behaviour::Good);
    let tag2 = fx.tag_today(&commit2);
    fx.dm(&["deploy"]).ok().stderr_has("Traffic moved");
    assert_eq!(fx.served_version(), "v2");
    // A rollback to the release that served just before starts its stopped container again.
    fx.dm(&["rollback", &tag1])
        .ok()
        .stderr_has("Traffic moved")
        .stderr_has("started again");
    assert_eq!(fx.served_version(), "v1");
    fx.dm(&["rollback", &tag2]).ok().stderr_has("started again");
    assert_eq!(fx.served_version(), "v2");
    std::thread::sleep(Duration::from_millis(500));

    let (ok_s, failed_s) = by_service.finish();
    let (ok_n, failed_n) = by_name.finish();
    let (ok_h, failed_h) = host.finish();
    eprintln!(
        "by service name: {ok_s} ok / {failed_s} failed; by container_name: {ok_n}/{failed_n}; host port: {ok_h}/{failed_h}"
    );
    assert!(ok_s > 20 && ok_n > 20 && ok_h > 20, "the clients ran");
    assert_eq!(
        (failed_s, failed_n, failed_h),
        (0, 0, 0),
        "no failed request"
    );

    // The proxy stayed the same container; besides it run only the live release's container
    // and, stopped, the one that served before it.
    assert_eq!(fx.proxy().unwrap().id, proxy.id);
    let running = fx.container_ids(&["label=dev.dockmaster.role=app", "status=running"]);
    assert_eq!(running.len(), 1, "one release container runs: {running:?}");
    assert!(fx.live().unwrap().id.starts_with(&running[0]));
    let all = fx.container_ids(&["label=dev.dockmaster.role=app"]);
    assert!(all.len() <= 2, "older release containers removed: {all:?}");

    // status tells the truth about the proxy and the live release.
    let st = fx.dm(&["status", "--json"]).ok().json();
    assert_eq!(st["live"], tag2.as_str());
    assert_eq!(st["matches_record"], true);
    assert_eq!(
        st["proxy"]["name"],
        fx.container_name.clone().unwrap().as_str()
    );
}

#[test]
fn failed_gate_leaves_the_old_release_serving_untouched() {
    let fx = start_first_fixture("sffail");
    fx.dm(&["deploy"]).ok();
    let before = fx.snapshot();
    let client = NetClient::start(&fx, "http://app:8080/health");

    fx.push_version(Behaviour::NeverHealthy);
    let out = fx.dm(&["deploy", "--timeout", "3s"]);
    out.code(1)
        .stderr_has("kept serving throughout")
        .stderr_has("never took traffic");

    let (ok, failed) = client.finish();
    assert!(ok > 5, "client ran");
    assert_eq!(
        failed, 0,
        "no request failed while the broken release was gated"
    );
    let after = fx.snapshot();
    assert_eq!(
        after.live, before.live,
        "the old container was never touched"
    );
    assert_eq!(fx.served_version(), "v1");
    // Only the failed release's image was added; nothing was removed.
    assert!(after.images.is_superset(&before.images));
    assert_eq!(after.images.len(), before.images.len() + 1);
    assert_eq!(
        fx.container_ids(&["label=dev.dockmaster.role=app"]).len(),
        1,
        "the failed candidate was removed"
    );
    let json = fx.dm(&["releases", "--json"]).ok().json();
    assert!(json.as_array().unwrap().iter().any(|r| r["live"] == true));
}

#[test]
fn a_standby_is_reused_only_while_compose_settings_are_unchanged() {
    let fx = Fixture::with(
        "sfstandby",
        Options {
            extra_service_yaml: Some(
                "    expose: [\"8080\"]\n    labels:\n      greeting: ${GREETING:-hello}\n".into(),
            ),
            ..Options::default()
        },
    );
    let tag1 = fx.tag_today(&fx.head());
    fx.dm(&["deploy"]).ok();
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy"]).ok().stderr_has("kept, stopped");
    // The environment compose would give the release changed: a new container, not the old.
    let out = fx.dm_cmd(&["rollback", &tag1]).env("GREETING", "bye").run();
    out.ok();
    assert!(!out.stderr.contains("started again"), "{}", out.stderr);
    let live = fx.live().unwrap();
    let label = docker_out(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"greeting\"}}",
        &live.id,
    ]);
    assert_eq!(label.trim(), "bye");
    assert_eq!(fx.served_version(), "v1");
}

/// Regression: this test used to start the slow request before a deploy that then built
/// for seconds, so the request had finished before the switch and nothing was drained, yet
/// it passed. Both releases are built first now, the request is in flight when traffic
/// moves, and the drain time dockmaster reports must cover it.
#[test]
fn switch_drains_a_slow_request_in_flight_at_the_switch() {
    // A 10 s request: in flight at the switch however long a loaded machine takes to get
    // there.
    let fx = Fixture::with(
        "sfdrain",
        Options {
            container_name: true,
            extra_service_yaml: Some("    ports:\n      - \"127.0.0.1::8080\"\n".into()),
            app: Some(crate::support::App {
                serve: None,
                files: vec![(
                    "cgi-bin/slow10",
                    "#!/bin/sh\nsleep 10\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow done\\n'\n"
                        .into(),
                )],
            }),
            ..Options::default()
        },
    );
    let tag1 = fx.tag_today(&fx.head());
    fx.dm(&["deploy"]).ok();
    let tag2 = fx.tag_today(&fx.push_version(Behaviour::Good));
    fx.dm(&["deploy"]).ok();
    fx.dm(&["rollback", &tag1]).ok();
    let port = fx.host_port();

    // The request is in flight on the live release when the switch happens.
    let slow = std::thread::spawn(move || {
        let answer = http_get(port, "/cgi-bin/slow10");
        (answer, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let out = fx.dm(&["rollback", &tag2]);
    let ended = Instant::now();
    out.ok();
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("drained in"))
        .unwrap_or_else(|| panic!("no drain line: {}", out.stderr));
    let drained = drained_time(line);
    let (answer, answered) = slow.join().unwrap();
    let (code, body) = answer.expect("the slow request got an answer");
    // Nothing drained would mean a drain time near zero, and a rollback that ended before
    // the request did.
    assert!(
        drained >= Duration::from_secs(2),
        "the switch waited for the request in flight: {line}"
    );
    assert!(
        ended >= answered,
        "the rollback ended after the request it drained ({:?} vs {:?} after the start)",
        ended - started,
        answered.saturating_duration_since(started)
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body.trim(), "slow done");
    assert_eq!(fx.served_version(), "v2");
}

/// `… drained in 2.6s …` or `… drained in 850ms …`.
fn drained_time(line: &str) -> Duration {
    let word = line
        .split("drained in ")
        .nth(1)
        .and_then(|r| r.split([' ', ',', ')']).next())
        .unwrap_or_default();
    if let Some(ms) = word.strip_suffix("ms") {
        Duration::from_millis(ms.parse().unwrap_or_else(|_| panic!("{line}")))
    } else if let Some(s) = word.strip_suffix('s') {
        Duration::from_secs_f64(s.parse().unwrap_or_else(|_| panic!("{line}")))
    } else {
        panic!("no drain time in {line}")
    }
}

#[test]
fn recreate_when_chosen_or_when_start_first_is_unsafe() {
    // No port known: recreate, and it says why.
    let fx = Fixture::new("sfnoport");
    fx.dm(&["deploy"])
        .ok()
        .stderr_has("recreate: no container port is known");
    assert!(fx.proxy().is_none());
    // Asking for start-first there is bad input, and changes nothing.
    let before = fx.snapshot();
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy", "--strategy", "start-first"])
        .code(2)
        .stderr_has("start-first is not possible");
    assert_eq!(fx.snapshot().live, before.live);

    // A writable named volume: recreate with the reason.
    let fx = Fixture::with(
        "sfvol",
        Options {
            extra_service_yaml: Some(
                "    expose: [\"8080\"]\n    volumes:\n      - data:/data\nvolumes:\n  data: {}\n"
                    .into(),
            ),
            ..Options::default()
        },
    );
    let _ = &fx;
    fx.dm(&["deploy"])
        .ok()
        .stderr_has("would be mounted writable in two containers");
    assert!(fx.proxy().is_none());

    // From start-first back to recreate: the proxy goes, the app holds the service again.
    let fx = start_first_fixture("sfback");
    fx.dm(&["deploy"]).ok();
    assert!(fx.proxy().is_some());
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy", "--strategy", "recreate"])
        .ok()
        .stderr_has("recreate, as asked");
    assert!(fx.proxy().is_none());
    assert!(
        fx.container_ids(&["label=dev.dockmaster.role=app"])
            .is_empty(),
        "release containers of the start-first switch removed"
    );
    let live = fx.live().unwrap();
    assert_eq!(live.name, fx.container_name.clone().unwrap());
    assert_eq!(fx.served_version(), "v2");
}

#[test]
fn plain_compose_up_still_brings_the_service_up() {
    let fx = start_first_fixture("sfplain");
    fx.dm(&["deploy"]).ok();
    assert!(fx.proxy().is_some());
    let out = crate::support::compose()
        .args(["up", "-d"])
        .current_dir(&fx.dir)
        .output()
        .expect("compose up");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = fx.host_port();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((200, body)) = http_get(port, "/version") {
            assert_eq!(body.trim(), "v1");
            break;
        }
        assert!(Instant::now() < deadline, "the service came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    // And the next deploy sets start-first up again.
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy"]).ok();
    assert!(fx.proxy().is_some());
    assert_eq!(fx.served_version(), "v2");
}
