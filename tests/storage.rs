//! Issue 4: prune, df and sizes. Retention must never remove what a rollback needs.

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Behaviour, Fixture, docker_out};

/// A label-only release image on top of the fixture's first release: cheap (one build
/// step), with its own build time, so retention by age and by count can be exercised.
fn fake_release(fx: &Fixture, days_ago: i64, n: usize) -> String {
    let created = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days_ago);
    let sha = format!("{:07x}{}", 0xa00000 + n * 7919, "0".repeat(33));
    let tag = format!("{}-{}", created.strftime("%Y.%m.%d"), &sha[..7]);
    let base = first_release_id(fx);
    let dockerfile = format!(
        "FROM {base}\nLABEL org.opencontainers.image.created=\"{created}\" org.opencontainers.image.version=\"{tag}\" org.opencontainers.image.revision=\"{sha}\" dev.dockmaster.subject=\"fake {n}\" dev.dockmaster.app=\"{}-app\" fake.n=\"{n}\"\n",
        fx.project
    );
    build_stdin(&format!("{}:{tag}", fx.repo), &dockerfile);
    tag
}

fn first_release_id(fx: &Fixture) -> String {
    let out = docker_out(&["images", "-q", "--no-trunc", &fx.repo]);
    out.lines().last().expect("a release exists").to_string()
}

fn build_stdin(tag: &str, dockerfile: &str) {
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker build");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An untagged image with these labels: built under a tag that then moves to another
/// image, as a rebuild leaves one. Returns its id.
fn dangling(fx: &Fixture, label_line: &str) -> String {
    let tag = format!("dmt-dangling-{}:x", fx.project);
    build_stdin(
        &tag,
        &format!("FROM {}\n{label_line}\n", first_release_id(fx)),
    );
    let id = docker_out(&["image", "inspect", "--format", "{{.Id}}", &tag])
        .trim()
        .to_string();
    build_stdin(
        &tag,
        &format!("FROM {}\nLABEL moved=yes\n", first_release_id(fx)),
    );
    let _ = docker_out(&["rmi", &tag]);
    fx.own_image(&id);
    id
}

/// The engine's own figure for all image layers on disk, asked on its socket.
fn engine_layers_size() -> i64 {
    // The engine answers one disk-usage request at a time; others wait their turn.
    for _ in 0..300 {
        let mut s = std::os::unix::net::UnixStream::connect("/var/run/docker.sock")
            .expect("the engine's socket");
        write!(s, "GET /system/df HTTP/1.0\r\nHost: docker\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split("\r\n\r\n").nth(1).expect("a body");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        if let Some(n) = v["LayersSize"]
            .as_i64()
            .or_else(|| v["ImageUsage"]["TotalSize"].as_i64())
        {
            return n;
        }
        assert!(
            body.contains("already running"),
            "unexpected answer: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the engine never answered /system/df");
}

/// Releases of the fixture, newest first by their created label (then tag), independently
/// of dockmaster: (tag, image id, created).
fn releases(fx: &Fixture) -> Vec<(String, String, jiff::Timestamp)> {
    let out = docker_out(&[
        "images",
        &fx.repo,
        "--no-trunc",
        "--format",
        "{{.Tag}} {{.ID}}",
    ]);
    let mut v = vec![];
    for line in out.lines() {
        let mut parts = line.split_whitespace();
        let (Some(tag), Some(id)) = (parts.next(), parts.next()) else {
            continue;
        };
        if tag == "latest" || tag == "<none>" {
            continue;
        }
        let created = docker_out(&[
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"org.opencontainers.image.created\"}}",
            id,
        ]);
        let created: jiff::Timestamp = created.trim().parse().expect("created label");
        v.push((tag.to_string(), id.to_string(), created));
    }
    v.sort_by(|a, b| b.2.cmp(&a.2).then(b.0.cmp(&a.0)));
    v
}

/// Image ids of this fixture's releases that a container (running or stopped) uses.
fn images_in_use(fx: &Fixture) -> HashSet<String> {
    let ours: HashSet<String> = releases(fx).into_iter().map(|r| r.1).collect();
    docker_out(&["ps", "-aq", "--no-trunc"])
        .split_whitespace()
        .map(|id| {
            docker_out(&["inspect", "--format", "{{.Image}}", id])
                .trim()
                .to_string()
        })
        .filter(|id| ours.contains(id))
        .collect()
}

fn tags(fx: &Fixture) -> BTreeSet<String> {
    releases(fx).into_iter().map(|r| r.0).collect()
}

/// A tiny deterministic generator (xorshift), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn prune_never_removes_what_a_rollback_needs_and_removes_exactly_what_the_rules_select() {
    for seed in [0x9e37_79b9_7f4a_7c15_u64, 0x2545_f491_4f6c_dd1d] {
        let mut rng = Rng(seed);
        let fx = Fixture::new(&format!("prop{}", seed % 1000));
        fx.dm(&["deploy"]).ok();
        let mut n = 0;
        // Older releases, as if kept from earlier weeks.
        for _ in 0..4 {
            n += 1;
            fake_release(&fx, 1 + rng.below(40) as i64, n);
        }
        // A random sequence of deploys, failed deploys and rollbacks.
        for _ in 0..3 {
            match rng.below(3) {
                0 => {
                    fx.push_version(Behaviour::Good);
                    fx.dm(&["deploy"]).ok();
                }
                1 => {
                    fx.push_version(Behaviour::CrashAtStart);
                    fx.dm(&["deploy", "--timeout", "5s"]).code(1);
                }
                _ => {
                    let all = releases(&fx);
                    let pick = &all[rng.below(all.len() as u64) as usize].0;
                    fx.dm(&["rollback", pick, "-y", "--timeout", "5s"]);
                }
            }
        }
        // Prune with random flags, twice, checking the rules each time.
        for _ in 0..2 {
            let keep = rng.below(4) as usize;
            let older = [None, Some(5u64), Some(20)][rng.below(3) as usize];
            let before = releases(&fx);
            let status = fx.dm(&["status", "--json"]).ok().json();
            let target = status["rollback_target"].as_str().map(str::to_string);
            let live_id = fx.live().map(|l| l.image_id);
            let latest = fx.image_id(&format!("{}:latest", fx.repo));
            let in_use = images_in_use(&fx);
            let now = jiff::Timestamp::now();
            let target_id = before
                .iter()
                .find(|r| Some(&r.0) == target.as_ref())
                .map(|r| r.1.clone());
            let expected: BTreeSet<String> = before
                .iter()
                .enumerate()
                .filter(|(i, r)| {
                    *i >= keep
                        && older.is_none_or(|d| {
                            now.duration_since(r.2).as_secs() >= (d * 86_400) as i64
                        })
                        && Some(&r.1) != live_id.as_ref()
                        && Some(&r.1) != target_id.as_ref()
                        && Some(&r.1) != latest.as_ref()
                        && !in_use.contains(&r.1)
                })
                .map(|(_, r)| r.0.clone())
                .collect();

            let mut args = vec!["prune".to_string(), "--keep".into(), keep.to_string()];
            if let Some(d) = older {
                args.push("--older-than".into());
                args.push(format!("{d}d"));
            }
            args.push("--json".into());
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let report = fx.dm(&argv).ok().json();
            let after = tags(&fx);
            let removed: BTreeSet<String> = before
                .iter()
                .map(|r| r.0.clone())
                .filter(|t| !after.contains(t))
                .collect();
            assert_eq!(
                removed, expected,
                "seed {seed:#x}: keep {keep}, older {older:?}: removed exactly what the rules select"
            );
            let reported: BTreeSet<String> = report["removed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["tag"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(reported, removed, "the report says what went");
            // What a rollback needs is all still there.
            if let Some(t) = &target {
                assert!(after.contains(t), "rollback target {t} kept");
            }
            let live = fx.live().expect("live");
            assert!(live.running);
            assert!(fx.image_id(&live.image_id).is_some(), "live image kept");
            assert!(fx.image_id(&format!("{}:latest", fx.repo)).is_some());
            for id in &in_use {
                assert!(
                    fx.image_id(id).is_some(),
                    "image {id} used by a container kept"
                );
            }
        }
    }
}

#[test]
fn dry_run_changes_nothing_and_shows_what_the_real_run_removes() {
    let fx = Fixture::new("prunedry");
    fx.dm(&["deploy"]).ok();
    let old: Vec<String> = (1..=3)
        .map(|n| fake_release(&fx, 30 + n as i64, n))
        .collect();
    let before = fx.snapshot();
    let dry = fx
        .dm(&["prune", "--keep", "1", "--dry-run", "--json"])
        .ok()
        .json();
    assert_eq!(fx.snapshot(), before, "a dry run changes nothing");
    let would: BTreeSet<String> = dry["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["tag"].as_str().unwrap().to_string())
        .collect();
    // The newest old release is the rollback target; the two before it go.
    assert_eq!(
        would,
        old[1..].iter().cloned().collect(),
        "the old releases but the rollback target would go"
    );
    assert!(dry["freed_bytes"].is_null());
    // The human form says the same, and that nothing changed.
    fx.dm(&["prune", "--keep", "1", "--dry-run"])
        .ok()
        .stderr_has("would remove")
        .stderr_has("nothing was changed")
        .stderr_has("live");
    let real = fx.dm(&["prune", "--keep", "1", "--json"]).ok().json();
    let went: BTreeSet<String> = real["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["tag"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(went, would);
    assert_eq!(
        fx.snapshot().live,
        before.live,
        "the live container is untouched"
    );
    // History records the prune.
    let history = fx.dm(&["history", "--json"]).ok().json();
    assert_eq!(history[0]["command"], "prune");
    assert_eq!(history[0]["outcome"], "succeeded");
}

#[test]
fn freed_space_is_what_the_engine_measures() {
    // The engine's layer total is global: no other test may build or remove images while
    // this one compares it before and after.
    let _alone = crate::support::exclusive();
    let fx = Fixture::new("prunefreed");
    fx.dm(&["deploy"]).ok();
    for n in 1..=3 {
        fake_release(&fx, 40 + n as i64, n);
    }
    let before = engine_layers_size();
    let report = fx.dm(&["prune", "--keep", "1", "--json"]).ok().json();
    let after = engine_layers_size();
    assert_eq!(
        report["freed_bytes"].as_i64().unwrap(),
        before - after,
        "freed = the engine's layer total before minus after"
    );
    // The newest of the three is the rollback target and stays.
    assert_eq!(report["removed"].as_array().unwrap().len(), 2);
}

#[test]
fn stopped_containers_other_apps_and_unrelated_images_survive() {
    let fx = Fixture::new("prunesafe");
    fx.dm(&["deploy"]).ok();
    let other = Fixture::new("pruneother");
    other.dm(&["deploy"]).ok();
    let other_images = other.images();

    // The newest older release is the rollback target; the next one a stopped container
    // uses; the oldest nothing protects.
    let target = fake_release(&fx, 50, 1);
    let used = fake_release(&fx, 51, 2);
    let free = fake_release(&fx, 52, 3);
    // A stopped container of an old release (say, a one-off migration run).
    let stopped = docker_out(&[
        "create",
        "--label",
        &format!("com.docker.compose.project={}", fx.project),
        &format!("{}:{used}", fx.repo),
    ]);
    assert!(!stopped.trim().is_empty());
    // An unrelated image, and dangling images: one left by this app's builds, one not.
    let unrelated = format!("dmt-unrelated-{}:keep", fx.project);
    fx.own_image(&unrelated);
    build_stdin(
        &unrelated,
        &format!("FROM {}\nLABEL unrelated=yes\n", first_release_id(&fx)),
    );
    let mine = dangling(
        &fx,
        &format!(
            "LABEL dev.dockmaster.app={}-app mine={}",
            fx.project, fx.project
        ),
    );
    let theirs = dangling(
        &fx,
        &format!("LABEL dev.dockmaster.app=\"\" theirs={}", fx.project),
    );
    assert!(fx.image_id(&mine).is_some() && fx.image_id(&theirs).is_some());

    let out = fx.dm(&["prune", "--keep", "0", "--dangling"]);
    out.ok()
        .stderr_has("a container uses it")
        .stderr_has("rollback target");
    let left = tags(&fx);
    assert!(left.contains(&target), "the rollback target survives");
    assert!(
        left.contains(&used),
        "the stopped container's release survives"
    );
    assert!(!left.contains(&free), "the unused old release goes");
    assert_eq!(other.images(), other_images, "another app's images survive");
    assert!(
        fx.image_id(&unrelated).is_some(),
        "unrelated images survive"
    );
    assert!(
        fx.image_id(&mine).is_none(),
        "this app's dangling image goes"
    );
    assert!(
        fx.image_id(&theirs).is_some(),
        "another dangling image survives"
    );
}

#[test]
fn prune_waits_for_no_one_and_refuses_bad_input() {
    let fx = Fixture::new("prunelock");
    fx.dm(&["deploy"]).ok();
    fake_release(&fx, 60, 1);
    let before = fx.snapshot();
    fx.dm(&["prune", "--keep", "abc"])
        .code(2)
        .stderr_has("--keep");
    fx.dm(&["prune", "--older-than", "3x"])
        .code(2)
        .stderr_has("not a duration");
    assert_eq!(fx.snapshot(), before, "bad input changes nothing");

    // While a deploy holds the lock, prune exits 3 at once and says who holds it.
    fx.push_version(Behaviour::SlowStart(6));
    let mut deploy = fx.dm_cmd(&["deploy", "--wait-lock", "60s"]).spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_lock = false;
    while Instant::now() < deadline {
        if deploy.try_wait().unwrap().is_some() {
            break;
        }
        let out = fx.dm(&["prune", "--keep", "0"]);
        if out.code == 3 {
            assert!(out.stderr.contains("deploy"), "{}", out.stderr);
            saw_lock = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = deploy.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the deploy went through: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(saw_lock, "prune met the deploy's lock");
}

#[test]
fn releases_and_df_report_unique_and_reclaimable_space() {
    let fx = Fixture::new("prunedf");
    fx.dm(&["deploy"]).ok();
    for n in 1..=2 {
        fake_release(&fx, 70 + n as i64, n);
    }
    let rel = fx.dm(&["releases", "--json"]).ok().json();
    for r in rel.as_array().unwrap() {
        let size = r["size_bytes"].as_i64().unwrap();
        let unique = r["unique_bytes"].as_i64().unwrap();
        assert!(unique <= size && unique >= 0, "{r}");
    }
    fx.dm(&["releases"]).ok().stdout_has("UNIQUE");
    let df = fx.dm(&["df", "--json"]).ok().json();
    assert_eq!(df["releases"], 3);
    // The default policy keeps 10: nothing is reclaimable.
    assert_eq!(df["reclaimable_releases"], 0);
    std::fs::write(fx.dir.join("dockmaster.toml"), "[retention]\nkeep = 1\n").unwrap();
    let df = fx.dm(&["df", "--json"]).ok().json();
    // Keep 1: the live release is the newest; the next is the rollback target (kept);
    // the oldest goes.
    assert_eq!(df["reclaimable_releases"], 1);
    let dry = fx.dm(&["prune", "--dry-run", "--json"]).ok().json();
    assert_eq!(df["reclaimable_bytes"], dry["estimated_bytes"]);
    std::fs::remove_file(fx.dir.join("dockmaster.toml")).unwrap();
}

#[test]
fn automatic_retention_after_a_deploy() {
    let fx = Fixture::new("pruneauto");
    fx.dm(&["deploy"]).ok();
    for n in 1..=3 {
        fake_release(&fx, 80 + n as i64, n);
    }
    // Committed, so the checkout stays clean.
    std::fs::write(
        fx.dir.join("dockmaster.toml"),
        "[retention]\nkeep = 2\nauto = true\n",
    )
    .unwrap();
    crate::support::git(&fx.work, &["add", "-A"]);
    crate::support::git(&fx.work, &["commit", "-q", "-m", "retention"]);
    crate::support::git(&fx.work, &["push", "-q", "origin", "main"]);
    fx.dm(&["deploy"])
        .ok()
        .stderr_has("Retention ([retention] auto)");
    let left = tags(&fx);
    assert_eq!(left.len(), 2, "{left:?}");
}
