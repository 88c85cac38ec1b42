//! The storage benchmark: `cargo bench --bench storage` (issue 4).
//!
//! Puts 500 releases of one app on the engine — 500 distinct images with their own build
//! time, commit and subject labels, sharing one small layer, loaded in one `docker load` of
//! a generated archive (building them would take minutes) — then times `dockmaster
//! releases`, `releases --json`, `prune --dry-run` and `df` (7 runs each: median and max),
//! and one real `prune --keep 10`. Then, with a local volume of many small files (engines
//! before API 1.42 walk every volume to count disk use), times the engine's own count and
//! `releases` (which waits for the count 2 s at most). Everything is removed afterwards.
//!
//! Environment: `BENCH_RELEASES` (default 500), `BENCH_VOLUME_FILES` (default 200000; 0
//! leaves the volume phase out).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_dockmaster");

fn main() {
    let n: usize = std::env::var("BENCH_RELEASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let id = std::process::id();
    let repo = format!("dm-bench-store-{id}");
    let root = std::env::temp_dir().join(format!("dm-bench-store-{id}"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("compose.yaml"),
        format!("services:\n  app:\n    build: .\n    image: {repo}:${{APP_TAG:-latest}}\n"),
    )
    .unwrap();
    std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(
        root.join(".env"),
        format!("COMPOSE_PROJECT_NAME=dmstore{id}\n"),
    )
    .unwrap();

    let started = Instant::now();
    let archive = archive(&repo, n, &format!("dmstore{id}-app"));
    load(&archive);
    eprintln!(
        "loaded {n} releases ({} KB archive) in {:.1} s",
        archive.len() / 1024,
        started.elapsed().as_secs_f64()
    );
    let tags = Command::new("docker")
        .args(["images", "-q", &repo])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&tags.stdout).lines().count(),
        n,
        "every release is on the engine"
    );

    let mut rows = vec![];
    for (what, args) in [
        ("releases", vec!["releases"]),
        ("releases --json", vec!["releases", "--json"]),
        ("prune --dry-run", vec!["prune", "--dry-run"]),
        ("df", vec!["df"]),
    ] {
        let mut times = vec![];
        for _ in 0..7 {
            times.push(time(&root, &args));
        }
        rows.push((what, median(&times), max(&times)));
    }
    // Engines before API 1.42 count every volume's files for a disk-usage answer: time
    // the engine's count and `releases` again with a volume of many small files.
    let files: usize = std::env::var("BENCH_VOLUME_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let volume = format!("dm-bench-store-{id}");
    let mut volume_rows = vec![];
    if files > 0 && fill_volume(&volume, files) {
        let mut counts = vec![];
        let mut lists = vec![];
        for _ in 0..3 {
            let started = Instant::now();
            let out = Command::new("docker")
                .args(["system", "df"])
                .output()
                .unwrap();
            if !out.status.success() {
                // Reported, not fatal: the rest of the run and its cleanup go on.
                eprintln!(
                    "docker system df failed after {:.1} s: {}",
                    started.elapsed().as_secs_f64(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                continue;
            }
            counts.push(started.elapsed().as_secs_f64());
            lists.push(time(&root, &["releases"]));
            // A count `releases` stopped waiting for goes on in the engine, which refuses a
            // second meanwhile: let it finish before the next timing.
            std::thread::sleep(std::time::Duration::from_secs(8));
        }
        volume_rows.push(("the engine's own count (`docker system df`)", counts));
        volume_rows.push(("`dockmaster releases`", lists));
    }
    let _ = Command::new("docker")
        .args(["volume", "rm", "-f", &volume])
        .output();

    let prune = time(&root, &["prune", "--keep", "10"]);

    let machine = machine();
    println!("\nStorage benchmark, {n} releases of one app; {machine}\n");
    println!("| command | median | max |");
    println!("|---|---|---|");
    for (what, med, mx) in &rows {
        println!(
            "| `dockmaster {what}` | {:.0} ms | {:.0} ms |",
            med * 1e3,
            mx * 1e3
        );
    }
    println!(
        "| `dockmaster prune --keep 10` (removes {}) | {:.0} ms | (one run) |",
        n - 10,
        prune * 1e3
    );

    if !volume_rows.is_empty() {
        println!("\nWith a volume of {files} files (3 runs each):\n");
        println!("| what | median | max |");
        println!("|---|---|---|");
        for (what, times) in &volume_rows {
            println!(
                "| {what} | {:.0} ms | {:.0} ms |",
                median(times) * 1e3,
                max(times) * 1e3
            );
        }
    }

    // Clean up: every image of the repository (and any it left untagged), the state, the
    // directory.
    let ids = Command::new("docker")
        .args([
            "images",
            "-q",
            "-a",
            "--filter",
            &format!("label=dev.dockmaster.app=dmstore{id}-app"),
        ])
        .output()
        .unwrap();
    let mut ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    for chunk in ids.chunks(100) {
        let _ = Command::new("docker")
            .arg("rmi")
            .arg("-f")
            .args(chunk)
            .output();
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A local volume holding `files` one-byte files, written straight into its directory on
/// the host (so this phase needs root and a local engine; it is left out otherwise).
fn fill_volume(name: &str, files: usize) -> bool {
    let created = Command::new("docker")
        .args(["volume", "create", name])
        .output()
        .unwrap();
    let mount = Command::new("docker")
        .args(["volume", "inspect", "--format", "{{.Mountpoint}}", name])
        .output()
        .unwrap();
    let mount = std::path::PathBuf::from(String::from_utf8_lossy(&mount.stdout).trim());
    if !created.status.success() || std::fs::metadata(&mount).is_err() {
        eprintln!("volume phase left out: cannot write into a volume's directory here");
        return false;
    }
    let started = Instant::now();
    for i in 0..files {
        let dir = mount.join(format!("d{}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
    }
    eprintln!(
        "wrote {files} files into volume {name} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    true
}

/// Wall time of one dockmaster run, which must succeed.
fn time(dir: &Path, args: &[&str]) -> f64 {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("dockmaster");
    let t = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "dockmaster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t
}

/// A `docker save`-format archive: one tiny layer, `n` image configs that differ only in
/// their labels (build time an hour apart, commit, subject), each tagged as a release.
fn archive(repo: &str, n: usize, app: &str) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let data = b"release\n";
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    layer.append_data(&mut h, "release.txt", &data[..]).unwrap();
    let layer = layer.into_inner().unwrap();
    let diff_id = format!("sha256:{:x}", Sha256::digest(&layer));

    let mut out = tar::Builder::new(Vec::new());
    add(&mut out, "layer/layer.tar", &layer);
    let start = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(n as i64 + 1);
    let mut manifest = vec![];
    for i in 0..n {
        let created = start + jiff::SignedDuration::from_hours(i as i64);
        // i × an odd number mod 2^28 is one-to-one: every release gets its own sha7.
        let sha7 = (i as u64 * 2_654_435_761 + 0x123_4567) % 0x1000_0000;
        let commit = format!("{sha7:07x}{:033x}", i);
        let tag = format!("{}-{}", created.strftime("%Y.%m.%d"), &commit[..7]);
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": created.to_string(),
            "config": {
                "Labels": {
                    "org.opencontainers.image.created": created.to_string(),
                    "org.opencontainers.image.revision": commit,
                    "org.opencontainers.image.version": tag,
                    "dev.dockmaster.subject": format!("release {i}"),
                    "dev.dockmaster.app": app,
                }
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created.to_string(), "created_by": "dockmaster bench"}]
        });
        let bytes = serde_json::to_vec(&config).unwrap();
        let name = format!("{:x}.json", Sha256::digest(&bytes));
        add(&mut out, &name, &bytes);
        manifest.push(serde_json::json!({
            "Config": name,
            "RepoTags": [format!("{repo}:{tag}")],
            "Layers": ["layer/layer.tar"],
        }));
    }
    add(
        &mut out,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    out.into_inner().unwrap()
}

fn add(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, path, data).unwrap();
}

fn load(archive: &[u8]) {
    let mut child = Command::new("docker")
        .args(["load", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker load");
    child.stdin.take().unwrap().write_all(archive).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let engine = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let images = Command::new("docker")
        .args(["images", "-q"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    format!("{cores} cores, Docker engine {engine}, {images} images on the engine in all")
}
