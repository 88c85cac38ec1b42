//! Issue 12: what a NAS user gets — one static binary that runs alone, doctor before any
//! compose file exists, a docker CLI off PATH, completions and the man page.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{BIN, Dm, Fixture};

/// Does the ELF file have a program interpreter (PT_INTERP), i.e. is it dynamic?
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let p = phoff + i * phentsize;
        u32::from_le_bytes(elf[p..p + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

/// An image made by one test, removed when it ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

fn tar_header(path: &str, len: usize, mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, mode as u64);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, len as u64);
    octal(&mut h, 136, 12, 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// A build context (a tar on `docker build -`'s stdin) with these files.
fn context(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (path, data, mode) in files {
        tar.extend_from_slice(&tar_header(path, data.len(), *mode));
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    tar
}

#[test]
fn the_static_binary_runs_alone_in_a_scratch_image_version_and_doctor() {
    let _engine = crate::support::shared();
    let binary = std::fs::read(BIN).expect("read the built dockmaster");
    assert!(
        !has_interpreter(&binary),
        "{BIN} is dynamically linked: .cargo/config.toml builds it with +crt-static for x86_64-unknown-linux-gnu"
    );
    let image = Image(format!("dmt-static-{}:test", std::process::id()));
    let dockerfile = "FROM scratch\nCOPY dockmaster /dockmaster\nENTRYPOINT [\"/dockmaster\"]\n";
    let tar = context(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("dockmaster", &binary, 0o755),
    ]);
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", &image.0, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker build");
    build.stdin.take().unwrap().write_all(&tar).unwrap();
    let out = build.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The image's root holds the one file (plus what the engine mounts at run time).
    let files = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{len .RootFS.Layers}}",
            &image.0,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&files.stdout).trim(), "1");

    let out = Command::new("docker")
        .args(["run", "--rm", &image.0, "--version"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("dockmaster {}", env!("CARGO_PKG_VERSION"))
    );

    // doctor in `/` of the image: no compose file, no docker CLI, no compose; the engine
    // through its socket answers.
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            &image.0,
            "doctor",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("✓ engine: Docker engine "), "{stderr}");
    assert!(stderr.contains("✗ docker CLI: no `docker`"), "{stderr}");
    assert!(
        stderr.contains("✗ compose file: no compose file in /"),
        "{stderr}"
    );
}

fn doctor_checks(out: &crate::support::Output) -> Vec<serde_json::Value> {
    out.json().as_array().expect("an array of checks").clone()
}

fn check<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {checks:#?}"))
}

#[test]
fn doctor_without_a_compose_file_checks_what_it_can_and_exits_1() {
    let _engine = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let dm = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(dir.path())
            .env("DOCKMASTER_STATE_DIR", dir.path().join("state"))
            .env_remove("COMPOSE_FILE")
            .stdin(Stdio::null());
        Dm { cmd }.run()
    };
    let out = dm(&["doctor", "--json"]);
    out.code(1);
    let checks = doctor_checks(&out);
    for ok in ["engine", "docker CLI", "compose", "disk"] {
        assert_eq!(check(&checks, ok)["ok"], true, "{ok}: {checks:#?}");
    }
    let file = check(&checks, "compose file");
    assert_eq!(file["ok"], false);
    assert!(
        file["detail"]
            .as_str()
            .unwrap()
            .starts_with("no compose file in ")
    );
    for needs_app in [
        "compose file",
        "checkout",
        "health check",
        "container",
        "running image",
        "reclaimable space",
    ] {
        let c = check(&checks, needs_app);
        assert_eq!(c["ok"], false, "{c}");
        assert!(c["fix"].as_str().unwrap().contains("-f/--file"), "{c}");
    }
    assert!(!dir.path().join("state").exists(), "doctor writes nothing");

    let out = dm(&["doctor"]);
    out.code(1)
        .stderr_has("✓ engine: Docker engine")
        .stderr_has("✗ compose file: no compose file in")
        .stderr_has("fix: run dockmaster where your compose file is")
        .stderr_has("6 checks of 10 failed");
}

/// A directory with symlinks to these programs only (found on the test's PATH).
fn bin_dir_with(dir: &Path, programs: &[&str]) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for p in programs {
        let found = std::env::split_paths(&path)
            .map(|d| d.join(p))
            .find(|f| f.is_file())
            .unwrap_or_else(|| panic!("{p} is not on PATH"));
        std::os::unix::fs::symlink(found, bin.join(p)).unwrap();
    }
    bin
}

/// Synology over SSH: `docker` is /usr/local/bin/docker, not on PATH. dockmaster finds it
/// there (this machine has it in /usr/local/bin and /usr/bin) and a deploy works.
#[test]
fn docker_cli_off_path_is_found_in_a_known_place_and_a_deploy_works() {
    let fx = Fixture::new("nopathdocker");
    let tools = tempfile::tempdir().unwrap();
    let bin = bin_dir_with(tools.path(), &["git", "docker-compose"]);
    assert!(!bin.join("docker").exists());

    let out = fx.dm_cmd(&["doctor", "--json"]).env("PATH", &bin).run();
    let checks = doctor_checks(&out);
    let cli = check(&checks, "docker CLI");
    assert_eq!(cli["ok"], true, "{cli}");
    let detail = cli["detail"].as_str().unwrap();
    assert!(
        ["/usr/local/bin/docker ", "/usr/bin/docker "]
            .iter()
            .any(|p| detail.starts_with(p)),
        "{detail}"
    );
    assert!(detail.contains("not on PATH"), "{detail}");
    assert_eq!(check(&checks, "compose")["ok"], true, "{checks:#?}");

    let tag = fx.tag_today(&fx.head());
    let out = fx.dm_cmd(&["deploy"]).env("PATH", &bin).run();
    out.ok().stderr_has("Image built");
    assert_eq!(out.last_line(), format!("DEPLOYED_APP_TAG={tag}"));
    assert_eq!(fx.served_version(), "v1");
}

fn dm_out(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run dockmaster");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn completions_name_the_commands_and_not_the_internal_ones() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let script = dm_out(&["completions", shell]);
        assert!(!script.is_empty());
        for word in [
            "deploy",
            "rollback",
            "releases",
            "completions",
            "no-rollback",
        ] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
        // The hidden internal modes (`proxy`, `proxy-ctl`, documented "(Internal) …") are
        // not offered; the word "proxy" may appear in other commands' help.
        assert!(
            !script.contains("proxy-ctl") && !script.contains("(Internal)"),
            "{shell} script names the internal proxy modes"
        );
        let file = dir.path().join(format!("dockmaster.{shell}"));
        std::fs::write(&file, &script).unwrap();
        if shell == "bash" {
            let out = Command::new("bash").arg("-n").arg(&file).output().unwrap();
            assert!(out.status.success(), "bash -n: {out:?}");
        }
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_page_renders_with_every_command_and_no_warning() {
    let page = dm_out(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH dockmaster 1"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dockmaster.1");
    std::fs::write(&file, &page).unwrap();

    // groff parses it without a warning...
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&file)
        .output()
        .expect("groff is needed: apt-get install groff-base");
    assert!(groff.status.success(), "{groff:?}");
    assert_eq!(String::from_utf8_lossy(&groff.stderr), "");
    // ...and man renders it.
    let out = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .expect("man is needed: apt-get install man-db");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "dockmaster deploy",
        "dockmaster rollback <TAG>",
        "--no-rollback",
        "dockmaster completions <SHELL>",
        "EXIT STATUS",
    ] {
        assert!(text.contains(needle), "man page lacks {needle:?}:\n{text}");
    }
    assert!(!text.contains("proxy-ctl"), "{text}");
}
