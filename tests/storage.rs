//! Issue 4: prune, df and sizes. Retention must never remove what a rollback needs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Behaviour, Fixture, docker_out};

/// A label-only release image on top of the fixture's first release: cheap (one build
/// step), with its own build time, so retention by age and by count can be exercised.
fn fake_release(fx: &Fixture, days_ago: i64, n: usize) -> String {
    fake_release_sized(fx, days_ago, n, 0)
}

/// As `fake_release`, with a layer of `data_bytes` random bytes of its own (none for 0),
/// so removing it frees that much disk.
fn fake_release_sized(fx: &Fixture, days_ago: i64, n: usize, data_bytes: usize) -> String {
    let created = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days_ago);
    let sha = format!("{:07x}{}", 0xa00000 + n * 7919, "0".repeat(33));
    let tag = format!("{}-{}", created.strftime("%Y.%m.%d"), &sha[..7]);
    let base = first_release_id(fx);
    let data = if data_bytes > 0 {
        format!("RUN head -c {data_bytes} /dev/urandom > /data-{n}\n")
    } else {
        String::new()
    };
    let dockerfile = format!(
        "FROM {base}\n{data}LABEL org.opencontainers.image.created=\"{created}\" org.opencontainers.image.version=\"{tag}\" org.opencontainers.image.revision=\"{sha}\" dev.dockmaster.subject=\"fake {n}\" dev.dockmaster.app=\"{}-app\" fake.n=\"{n}\"\n",
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

/// The engine's own disk-usage answer, asked on its socket.
fn engine_df() -> serde_json::Value {
    // The engine answers one disk-usage request at a time; others wait their turn.
    for _ in 0..300 {
        let mut s = std::os::unix::net::UnixStream::connect("/var/run/docker.sock")
            .expect("the engine's socket");
        write!(s, "GET /system/df HTTP/1.0\r\nHost: docker\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split("\r\n\r\n").nth(1).expect("a body");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        if v["LayersSize"].is_i64() || v["ImageUsage"]["TotalSize"].is_i64() {
            return v;
        }
        assert!(
            body.contains("already running"),
            "unexpected answer: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the engine never answered /system/df");
}

/// The engine's own figure for all image layers on disk.
fn engine_layers_size() -> i64 {
    let v = engine_df();
    v["LayersSize"]
        .as_i64()
        .or_else(|| v["ImageUsage"]["TotalSize"].as_i64())
        .unwrap()
}

/// The engine's figure for the bytes only this image holds (its size less what it
/// shares with other images).
fn engine_unique_size(image_id: &str) -> i64 {
    let v = engine_df();
    let image = v["Images"]
        .as_array()
        .expect("Images")
        .iter()
        .find(|i| i["Id"] == image_id)
        .unwrap_or_else(|| panic!("{image_id} in /system/df"));
    image["Size"].as_i64().unwrap() - image["SharedSize"].as_i64().unwrap()
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

/// The tags a prune report (`--json`) says went (or would go).
fn removed_tags(report: &serde_json::Value) -> BTreeSet<String> {
    report["removed"]
        .as_array()
        .expect("removed")
        .iter()
        .map(|d| d["tag"].as_str().unwrap().to_string())
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
        // The test keeps its own book of what each release is and what happened to it,
        // so the rollback target it expects does not come from dockmaster.
        let mut marks: HashMap<String, &str> = HashMap::new();
        let mut crashes: HashSet<String> = HashSet::new();
        fx.dm(&["deploy"]).ok();
        let mut live_tag = fx.tag_today(&fx.head());
        marks.insert(live_tag.clone(), "known-good");
        let mut n = 0;
        // Older releases, as if kept from earlier weeks (no marks: built before dockmaster).
        for _ in 0..4 {
            n += 1;
            fake_release(&fx, 1 + rng.below(40) as i64, n);
        }
        // A random sequence of deploys, failed deploys and rollbacks.
        for _ in 0..3 {
            match rng.below(3) {
                0 => {
                    let tag = fx.tag_today(&fx.push_version(Behaviour::Good));
                    fx.dm(&["deploy"]).ok();
                    marks.insert(tag.clone(), "known-good");
                    live_tag = tag;
                }
                1 => {
                    let tag = fx.tag_today(&fx.push_version(Behaviour::CrashAtStart));
                    fx.dm(&["deploy", "--timeout", "5s"]).code(1);
                    marks.insert(tag.clone(), "failed");
                    crashes.insert(tag);
                }
                _ => {
                    let all = releases(&fx);
                    let pick = all[rng.below(all.len() as u64) as usize].0.clone();
                    let out = fx.dm(&["rollback", &pick, "-y", "--timeout", "5s"]);
                    if crashes.contains(&pick) {
                        // It fails its gate; the live release is put back.
                        out.code(1);
                        marks.insert(pick, "failed");
                    } else {
                        out.ok();
                        marks.insert(pick.clone(), "known-good");
                        live_tag = pick;
                    }
                }
            }
        }
        // Prune with random flags, twice, checking the rules each time.
        for _ in 0..2 {
            let keep = rng.below(4) as usize;
            let older = [None, Some(5u64), Some(20)][rng.below(3) as usize];
            let before = releases(&fx);
            // The rollback target by the rule of PRODUCT.md, from the test's own book:
            // the newest known-good release built before the live one, failed ones skipped;
            // with none known-good, the newest one before the live one that is not failed.
            let live_at = before
                .iter()
                .position(|r| r.0 == live_tag)
                .expect("the live release is kept");
            assert_eq!(
                fx.live().map(|l| l.image_id).as_ref(),
                Some(&before[live_at].1),
                "seed {seed:#x}: {live_tag} is live"
            );
            let candidates: Vec<&(String, String, jiff::Timestamp)> = before[live_at + 1..]
                .iter()
                .filter(|r| r.1 != before[live_at].1 && marks.get(&r.0) != Some(&"failed"))
                .collect();
            let target = candidates
                .iter()
                .find(|r| marks.get(&r.0) == Some(&"known-good"))
                .or(candidates.first())
                .map(|r| r.0.clone());
            let status = fx.dm(&["status", "--json"]).ok().json();
            assert_eq!(
                status["rollback_target"].as_str(),
                target.as_deref(),
                "seed {seed:#x}: dockmaster names the rollback target the rule gives"
            );
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
            let reported: BTreeSet<String> = removed_tags(&report);
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
    let would: BTreeSet<String> = removed_tags(&dry);
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
    let went: BTreeSet<String> = removed_tags(&real);
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
    // Three old releases, each with data of its own: 100, 200 and 300 KB.
    let old: Vec<String> = (1..=3)
        .map(|n| fake_release_sized(&fx, 40 + n as i64, n, n * 100_000))
        .collect();
    let all = releases(&fx);
    let id_of = |tag: &str| all.iter().find(|r| r.0 == tag).unwrap().1.clone();
    // The newest of the three (the 100 KB one) is the rollback target and stays; the
    // other two go, and with them the bytes only they hold.
    let expected_freed: i64 = old[1..].iter().map(|t| engine_unique_size(&id_of(t))).sum();
    assert!(
        expected_freed >= 500_000,
        "the engine counts the data layers as the images' own: {expected_freed}"
    );

    let before = engine_layers_size();
    let report = fx.dm(&["prune", "--keep", "1", "--json"]).ok().json();
    let after = engine_layers_size();

    let removed: BTreeSet<String> = removed_tags(&report);
    assert_eq!(removed, old[1..].iter().cloned().collect());
    let freed = report["freed_bytes"].as_i64().unwrap();
    assert_eq!(
        freed,
        before - after,
        "freed = the engine's layer total before minus after"
    );
    assert_eq!(
        freed, expected_freed,
        "freed = what the removed releases alone held"
    );
    assert!(tags(&fx).contains(&old[0]), "the rollback target stays");
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
        fake_release_sized(&fx, 70 + n as i64, n, n * 50_000);
    }
    // Waiting as long as the count takes (the slow-count case has a test of its own).
    let rel = fx
        .dm_cmd(&["releases", "--json"])
        .env("DOCKMASTER_SIZES_WAIT", "60s")
        .run()
        .ok()
        .json();
    assert_eq!(rel.as_array().unwrap().len(), 3);
    for r in rel.as_array().unwrap() {
        let size = r["size_bytes"].as_i64().unwrap();
        let unique = r["unique_bytes"].as_i64().unwrap();
        let shared = r["shared_bytes"].as_i64().unwrap();
        assert_eq!(
            unique,
            engine_unique_size(r["image_id"].as_str().unwrap()),
            "the engine's own count: {r}"
        );
        assert_eq!(unique + shared, size, "{r}");
    }
    // The releases with data of their own hold it alone.
    let unique_of = |n: usize| {
        rel.as_array()
            .unwrap()
            .iter()
            .find(|r| r["subject"] == format!("fake {n}"))
            .unwrap()["unique_bytes"]
            .as_i64()
            .unwrap()
    };
    assert!(unique_of(1) >= 50_000 && unique_of(2) >= 100_000);
    // Waiting as long as the count takes: the slow-count case has a test of its own.
    fx.dm_cmd(&["releases"])
        .env("DOCKMASTER_SIZES_WAIT", "60s")
        .run()
        .ok()
        .stdout_has("UNIQUE");
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
fn releases_answers_without_unique_sizes_when_the_engine_is_slow_to_count() {
    // Engines before API 1.42 count every volume's files for a disk-usage answer, which
    // can take minutes on a NAS; `releases` waits DOCKMASTER_SIZES_WAIT (2 s) at most.
    // A wait of zero stands in for a count that takes longer than the wait.
    let fx = Fixture::new("prunewait");
    fx.dm(&["deploy"]).ok();
    let live = fx.tag_today(&fx.head());
    let rel = fx
        .dm_cmd(&["releases", "--json"])
        .env("DOCKMASTER_SIZES_WAIT", "0s")
        .run()
        .ok()
        .json();
    assert_eq!(rel[0]["tag"], live.as_str());
    assert_eq!(rel[0]["live"], true);
    assert!(rel[0]["size_bytes"].as_i64().unwrap() > 0);
    assert!(rel[0]["unique_bytes"].is_null(), "unknown, not guessed");
    assert!(rel[0]["shared_bytes"].is_null());
    let out = fx
        .dm_cmd(&["releases"])
        .env("DOCKMASTER_SIZES_WAIT", "0s")
        .run();
    out.ok()
        .stdout_has(&live)
        .stderr_has("unique sizes left out: the engine did not count disk use within");
    assert!(!out.stdout.contains("UNIQUE"));
    // A wait that is not a duration is bad input.
    fx.dm_cmd(&["releases"])
        .env("DOCKMASTER_SIZES_WAIT", "soon")
        .run()
        .code(2)
        .stderr_has("DOCKMASTER_SIZES_WAIT");
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
