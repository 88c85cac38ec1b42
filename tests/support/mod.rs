//! Fixture apps for the integration tests: a git repository with a bare "origin" beside
//! it, a `FROM scratch` busybox image that serves `/health` and `/version`, and a compose
//! file — built and run on the real Docker engine. Every fixture has its own compose
//! project, image repository, state directory and temp dir, and removes them on drop.

#![allow(dead_code)]

pub mod browser;
pub mod serve;
pub mod swarm;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_dockmaster");

/// Panics (never skips) when there is no engine: these tests claim real deploys.
pub fn require_engine() {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let r = OK.get_or_init(|| {
        let out = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    });
    if let Err(e) = r {
        panic!(
            "these tests need a running Docker engine (`docker info` failed: {e}); .ci/run starts one"
        );
    }
    assert!(
        Path::new("/bin/busybox").is_file(),
        "these tests need /bin/busybox: apt-get install busybox-static"
    );
}

/// How the fixture app behaves in a given commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Serves /health and /version at once.
    Good,
    /// Writes an error and exits 3 right after start.
    CrashAtStart,
    /// Runs, but /health answers 404 forever.
    NeverHealthy,
    /// Serves after sleeping this many seconds.
    SlowStart(u32),
    /// `httpd` runs as PID 1 and ignores SIGTERM (as `node server.js` without an init does):
    /// only SIGKILL stops it.
    IgnoresStopSignal,
    /// Takes this many seconds to shut down after SIGTERM.
    SlowStop(u32),
    /// Healthy, but `/cgi-bin/work` answers 500 to about half the requests.
    FailsHalf,
    /// Healthy, but `/cgi-bin/work` takes this many milliseconds.
    SlowWork(u32),
    /// Serves, then exits with an error this many seconds after it started.
    CrashesAfter(u32),
}

/// How the compose file names the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageForm {
    /// `image: <repo>:${APP_TAG:-latest}`
    RepoTagVar,
    /// `image: ${APP_IMAGE:-<repo>}:${APP_TAG:-latest}`
    ImageVarTagVar,
    /// `build:` and no `image:` at all.
    NoImage,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub image_form: ImageForm,
    /// Put the compose file (and build context) in this subdirectory of the checkout.
    pub subdir: Option<&'static str>,
    pub container_name: bool,
    /// A second service with `build:` (so `--service` is needed).
    pub second_buildable: bool,
    /// Healthcheck in the compose file (else none at all).
    pub healthcheck: bool,
    /// Extra lines appended to the compose service definition (indented 4 spaces).
    pub extra_service_yaml: Option<String>,
    /// A test's own app instead of the plain `httpd` one (for `Behaviour::Good` releases).
    pub app: Option<App>,
}

/// A test's own app: what serves port 8080 and the scripts it runs. Every release serves
/// the same scripts; a script tells which release it is by `V=$(cat /www/version)`.
#[derive(Clone, Debug, Default)]
pub struct App {
    /// The lines of `/run.sh` that serve port 8080 (None: the fixture's `httpd` on `/www`,
    /// which runs CGI scripts under `/www/cgi-bin`). They must stop on SIGTERM.
    pub serve: Option<String>,
    /// Executable files put into the image under `/www`: (path below `www/`, contents),
    /// e.g. `("cgi-bin/env", …)` or `("server.sh", …)`.
    pub files: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            image_form: ImageForm::RepoTagVar,
            subdir: None,
            container_name: false,
            second_buildable: false,
            healthcheck: true,
            extra_service_yaml: None,
            app: None,
        }
    }
}

/// Tests share the engine; one that compares global engine figures runs alone: it takes
/// this lock for writing, every fixture holds it for reading.
static ENGINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

thread_local! {
    static ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// This thread's share of `ENGINE`, held while it has fixtures (taken once per thread:
    /// a second read while a writer waits would deadlock).
    static SHARED: std::cell::RefCell<(usize, Option<std::sync::RwLockReadGuard<'static, ()>>)> =
        const { std::cell::RefCell::new((0, None)) };
}

fn share_engine() {
    if ALONE.with(|a| a.get()) {
        return;
    }
    SHARED.with(|s| {
        let mut s = s.borrow_mut();
        if s.0 == 0 {
            s.1 = Some(ENGINE.read().unwrap_or_else(|e| e.into_inner()));
        }
        s.0 += 1;
    });
}

fn unshare_engine() {
    if ALONE.with(|a| a.get()) {
        return;
    }
    SHARED.with(|s| {
        let mut s = s.borrow_mut();
        s.0 = s.0.saturating_sub(1);
        if s.0 == 0 {
            s.1 = None;
        }
    });
}

/// Held by a test that uses the engine without a fixture (its own images or containers),
/// so a test that needs the engine to itself waits for it.
pub struct Shared(());

pub fn shared() -> Shared {
    require_engine();
    share_engine();
    Shared(())
}

impl Drop for Shared {
    fn drop(&mut self) {
        unshare_engine();
    }
}

/// Hold while a test needs the engine to itself (waits for the running fixtures to end).
pub struct Exclusive(#[allow(dead_code)] std::sync::RwLockWriteGuard<'static, ()>);

pub fn exclusive() -> Exclusive {
    let guard = ENGINE.write().unwrap_or_else(|e| e.into_inner());
    ALONE.with(|a| a.set(true));
    Exclusive(guard)
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        ALONE.with(|a| a.set(false));
    }
}

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub origin: PathBuf,
    pub work: PathBuf,
    /// Where the compose file is (the checkout or a subdirectory of it).
    pub dir: PathBuf,
    pub project: String,
    pub repo: String,
    pub service: String,
    pub container_name: Option<String>,
    pub state: PathBuf,
    pub opts: Options,
    version: AtomicUsize,
    /// Other image references a test made from this fixture, removed with it.
    own: std::sync::Mutex<Vec<String>>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
RUN mkdir -p /tmp
COPY www /www
COPY run.sh /run.sh
CMD ["/bin/sh","/run.sh"]
"#;

impl Fixture {
    pub fn new(name: &str) -> Fixture {
        Fixture::with(name, Options::default())
    }

    pub fn with(name: &str, opts: Options) -> Fixture {
        require_engine();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let unique = format!(
            "{}{}x{}",
            name.replace(['_', '-'], ""),
            std::process::id(),
            n
        );
        let project = format!("dmt{unique}");
        let repo = match opts.image_form {
            ImageForm::NoImage => format!("{project}-app"),
            _ => format!("dmt-{unique}"),
        };
        let tmp = tempfile::Builder::new()
            .prefix("dmt-")
            .tempdir()
            .expect("tempdir");
        let origin = tmp.path().join("origin.git");
        let work = tmp.path().join("work");
        let state = tmp.path().join("state");
        git(
            tmp.path(),
            &["init", "-q", "--bare", "-b", "main", "origin.git"],
        );
        git(tmp.path(), &["clone", "-q", "origin.git", "work"]);
        git(&work, &["checkout", "-q", "-B", "main"]);
        let dir = match opts.subdir {
            Some(s) => work.join(s),
            None => work.clone(),
        };
        std::fs::create_dir_all(dir.join("www")).unwrap();
        let container_name = opts.container_name.then(|| format!("{project}-backend"));
        share_engine();
        let fx = Fixture {
            tmp,
            origin,
            work,
            dir,
            project,
            repo,
            service: "app".into(),
            container_name,
            state,
            opts,
            version: AtomicUsize::new(0),
            own: std::sync::Mutex::new(vec![]),
        };
        fx.write_static_files();
        fx.write_app(Behaviour::Good, "v1");
        git(&fx.work, &["add", "-A"]);
        git(&fx.work, &["commit", "-q", "-m", "v1: first release"]);
        git(&fx.work, &["push", "-q", "-u", "origin", "main"]);
        fx.version.store(1, Ordering::SeqCst);
        fx
    }

    fn write_static_files(&self) {
        let d = &self.dir;
        std::fs::write(d.join("Dockerfile"), DOCKERFILE).unwrap();
        // `/cgi-bin/slow` answers after 3 s: an in-flight request a switch must drain.
        std::fs::create_dir_all(d.join("www/cgi-bin")).unwrap();
        let slow = d.join("www/cgi-bin/slow");
        std::fs::write(
            &slow,
            "#!/bin/sh\nsleep 3\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow done\\n'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (path, text) in self.opts.app.iter().flat_map(|a| &a.files) {
            let file = d.join("www").join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::copy("/bin/busybox", d.join("busybox")).expect("copy /bin/busybox");
        std::fs::write(self.work.join(".gitignore"), "busybox\n").unwrap();
        std::fs::write(
            d.join(".env"),
            format!("COMPOSE_PROJECT_NAME={}\n", self.project),
        )
        .unwrap();
        let image_line = match self.opts.image_form {
            ImageForm::RepoTagVar => format!("    image: {}:${{APP_TAG:-latest}}\n", self.repo),
            ImageForm::ImageVarTagVar => {
                format!(
                    "    image: ${{APP_IMAGE:-{}}}:${{APP_TAG:-latest}}\n",
                    self.repo
                )
            }
            ImageForm::NoImage => String::new(),
        };
        // FAIL_START set in the environment of a compose run makes every release refuse to
        // start: how a test makes putting the previous release back fail too.
        let mut yaml = format!(
            "services:\n  app:\n    build: .\n{image_line}    environment:\n      - FAIL_START=${{FAIL_START:-}}\n"
        );
        if let Some(name) = &self.container_name {
            yaml.push_str(&format!("    container_name: {name}\n"));
        }
        if self.opts.healthcheck {
            yaml.push_str(
                "    healthcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/health\"]\n      interval: 30s\n",
            );
        }
        if let Some(extra) = &self.opts.extra_service_yaml {
            yaml.push_str(extra);
            if !extra.ends_with('\n') {
                yaml.push('\n');
            }
        }
        if self.opts.second_buildable {
            yaml.push_str(&format!(
                "  worker:\n    build: .\n    image: {}-worker:latest\n",
                self.repo
            ));
        }
        std::fs::write(d.join("docker-compose.yml"), yaml).unwrap();
    }

    fn write_app(&self, behaviour: Behaviour, version: &str) {
        let d = &self.dir;
        std::fs::write(d.join("www/version"), format!("{version}\n")).unwrap();
        let health = d.join("www/health");
        if behaviour == Behaviour::NeverHealthy {
            let _ = std::fs::remove_file(&health);
        } else {
            std::fs::write(&health, "ok\n").unwrap();
        }
        // `/cgi-bin/work`: the request a watched release is judged on.
        let work = match behaviour {
            Behaviour::FailsHalf => "#!/bin/sh\nif [ $((RANDOM % 2)) = 0 ]; then printf 'HTTP/1.0 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\nbroken\\n'; else printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'; fi\n".to_string(),
            Behaviour::SlowWork(ms) => format!(
                "#!/bin/sh\nsleep {}\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n",
                f64::from(ms) / 1000.0
            ),
            _ => "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n".to_string(),
        };
        let work_path = d.join("www/cgi-bin/work");
        std::fs::write(&work_path, work).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&work_path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let start = match behaviour {
            Behaviour::CrashAtStart => {
                "echo \"fatal: DATABASE_URL is not set (release {V})\" >&2\nexit 3\n"
                    .replace("{V}", version)
            }
            Behaviour::SlowStart(s) => format!("sleep {s}\n"),
            _ => String::new(),
        };
        let own = self.opts.app.as_ref().and_then(|a| a.serve.as_deref());
        let serve = match (behaviour, own) {
            (Behaviour::Good, Some(own)) => own.to_string(),
            (Behaviour::IgnoresStopSignal, _) => "exec httpd -f -p 8080 -h /www\n".to_string(),
            (Behaviour::CrashesAfter(s), _) => format!(
                "httpd -f -p 8080 -h /www & pid=$!\nsleep {s}\necho \"fatal: out of memory\" >&2\nkill $pid\nexit 1\n"
            ),
            (Behaviour::SlowStop(s), _) => format!(
                "trap 'echo stopping; sleep {s}; kill $pid; exit 0' TERM\nhttpd -f -p 8080 -h /www & pid=$!\nwait $pid\nwait $pid\n"
            ),
            _ => "trap 'kill $pid; exit 0' TERM\nhttpd -f -p 8080 -h /www & pid=$!\nwait $pid\n"
                .to_string(),
        };
        let script = format!(
            "#!/bin/sh\necho \"starting release {version}\"\nif [ -n \"$FAIL_START\" ]; then echo \"refusing to start: FAIL_START is set\" >&2; exit 4; fi\n{start}{serve}"
        );
        std::fs::write(d.join("run.sh"), script).unwrap();
    }

    /// Commit a new version of the app and push it to origin; returns the full commit id.
    pub fn push_version(&self, behaviour: Behaviour) -> String {
        let v = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        self.write_app(behaviour, &format!("v{v}"));
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "-m", &format!("v{v}: {behaviour:?}")],
        );
        git(&self.work, &["push", "-q", "origin", "main"]);
        self.head()
    }

    /// Commit a new version to origin only (through a second clone), so the work tree is
    /// behind and `deploy` has to fetch and fast-forward.
    pub fn push_version_elsewhere(&self, behaviour: Behaviour) -> String {
        let other = self
            .tmp
            .path()
            .join(format!("other{}", COUNTER.fetch_add(1, Ordering::SeqCst)));
        git(
            self.tmp.path(),
            &["clone", "-q", "origin.git", other.to_str().unwrap()],
        );
        let v = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let sub = match self.opts.subdir {
            Some(s) => other.join(s),
            None => other.clone(),
        };
        std::fs::write(sub.join("www/version"), format!("v{v}\n")).unwrap();
        if behaviour != Behaviour::Good {
            panic!("push_version_elsewhere supports Good only");
        }
        git(
            &other,
            &[
                "commit",
                "-q",
                "-am",
                &format!("v{v}: pushed from elsewhere"),
            ],
        );
        git(&other, &["push", "-q", "origin", "main"]);
        git_out(&other, &["rev-parse", "HEAD"])
    }

    pub fn head(&self) -> String {
        git_out(&self.work, &["rev-parse", "HEAD"])
    }

    /// The tag dockmaster gives a commit built today.
    pub fn tag_today(&self, commit: &str) -> String {
        let out = Command::new("date")
            .args(["-u", "+%Y.%m.%d"])
            .output()
            .unwrap();
        format!(
            "{}-{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            &commit[..7]
        )
    }

    /// Write `dockmaster.toml` beside the compose file and commit it (the checkout must
    /// stay clean for a deploy).
    pub fn configure(&self, toml: &str) {
        std::fs::write(self.dir.join("dockmaster.toml"), toml).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", "configure dockmaster"]);
        git(&self.work, &["push", "-q", "origin", "main"]);
    }

    /// Run dockmaster in the compose directory with this fixture's state directory.
    pub fn dm(&self, args: &[&str]) -> Output {
        self.dm_cmd(args).run()
    }

    pub fn dm_cmd(&self, args: &[&str]) -> Dm {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(&self.dir)
            .env("DOCKMASTER_STATE_DIR", &self.state)
            .env_remove("APP_TAG")
            .env_remove("COMPOSE_FILE")
            .stdin(Stdio::null());
        Dm { cmd }
    }

    /// The container that serves the service: the app container dockmaster's switch proxy
    /// sends traffic to (asked from the proxy itself), else the service's own container.
    pub fn live(&self) -> Option<Live> {
        if let Some(proxy) = self.proxy() {
            let status = Command::new("docker")
                .args(["exec", &proxy.id, "/dockmaster", "proxy-ctl", "status"])
                .output()
                .expect("docker exec");
            let text = String::from_utf8_lossy(&status.stdout).to_string();
            let upstream = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("upstream="))
                .unwrap_or_else(|| panic!("proxy status without upstream: {text}"));
            return Some(inspect_live(upstream));
        }
        let ids = self.container_ids(&[]);
        let mut found = None;
        for id in ids {
            let live = inspect_live(&id);
            if live.oneoff {
                continue;
            }
            if live.running || found.is_none() {
                found = Some(live);
            }
        }
        found
    }

    /// The switch proxy, when the service's container is one and runs.
    pub fn proxy(&self) -> Option<Live> {
        self.container_ids(&["label=dev.dockmaster.role=proxy"])
            .iter()
            .map(|id| inspect_live(id))
            .find(|c| c.running)
    }

    /// Every container of this fixture's service (compose's, dockmaster's release
    /// containers, the proxy), running or not.
    pub fn container_ids(&self, extra_filters: &[&str]) -> Vec<String> {
        let project = format!("label=com.docker.compose.project={}", self.project);
        let service = format!("label=com.docker.compose.service={}", self.service);
        let mut args = vec!["ps", "-a", "--filter", &project, "--filter", &service];
        for f in extra_filters {
            args.push("--filter");
            args.push(f);
        }
        args.extend(["--format", "{{.ID}}"]);
        docker_out(&args)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The host port the service's container publishes for 8080 (on loopback).
    pub fn host_port(&self) -> u16 {
        let name = self.container_name.clone().expect("container_name set");
        let out = docker_out(&["port", &name, "8080/tcp"]);
        out.lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no published port: {out}"))
    }

    /// The compose project's default network.
    pub fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    /// What the live container serves at /version (asked from inside it).
    pub fn served_version(&self) -> String {
        let live = self.live().expect("a live container");
        docker_out(&[
            "exec",
            &live.id,
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:8080/version",
        ])
        .trim()
        .to_string()
    }

    /// `repo:tag` of every image of this fixture's repository.
    pub fn images(&self) -> BTreeSet<String> {
        docker_out(&["images", &self.repo, "--format", "{{.Repository}}:{{.Tag}}"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn image_id(&self, reference: &str) -> Option<String> {
        let out = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", reference])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Remove this image (a reference or id) when the fixture goes.
    pub fn own_image(&self, reference: &str) {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reference.to_string());
    }

    /// Snapshot of what the failure paths must leave alone.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            live: self.live(),
            images: self.images(),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Released after the cleanup below (declared first, dropped last).
        struct Unshare;
        impl Drop for Unshare {
            fn drop(&mut self) {
                unshare_engine();
            }
        }
        let _unshare = Unshare;
        let label = format!("label=com.docker.compose.project={}", self.project);
        let ids = docker_out(&["ps", "-aq", "--filter", &label]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            let _ = Command::new("docker").args(&args).output();
        }
        let vols = docker_out(&["volume", "ls", "-q", "--filter", &label]);
        for vol in vols.split_whitespace() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", vol])
                .output();
        }
        let nets = docker_out(&["network", "ls", "-q", "--filter", &label]);
        for net in nets.split_whitespace() {
            let _ = Command::new("docker").args(["network", "rm", net]).output();
        }
        // Images tests made on top of this fixture's releases, under other names.
        for r in self.own.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = Command::new("docker").args(["rmi", "-f", r]).output();
        }
        // Twice: an image with child images (label-only releases built on it) goes once
        // its children are gone.
        for _ in 0..2 {
            for repo in [
                self.repo.clone(),
                format!("{}-worker", self.repo),
                self.repo.replace('-', "_"),
            ] {
                let imgs = docker_out(&["images", "-q", &repo]);
                let mut uniq: Vec<&str> = imgs.split_whitespace().collect();
                uniq.sort();
                uniq.dedup();
                if !uniq.is_empty() {
                    let mut args = vec!["rmi", "-f"];
                    args.extend(uniq);
                    let _ = Command::new("docker").args(&args).output();
                }
            }
        }
        // Untagged images this fixture's builds left behind.
        let app = format!("label=dev.dockmaster.app={}-{}", self.project, self.service);
        let dangling = docker_out(&[
            "images",
            "-q",
            "--filter",
            "dangling=true",
            "--filter",
            &app,
        ]);
        for id in dangling.split_whitespace() {
            let _ = Command::new("docker").args(["rmi", "-f", id]).output();
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    pub id: String,
    pub name: String,
    pub image_ref: String,
    pub image_id: String,
    pub running: bool,
    /// A `compose run` container (dockmaster's start-first release containers are).
    pub oneoff: bool,
}

pub fn inspect_live(id: &str) -> Live {
    let info = docker_out(&[
        "inspect",
        "--format",
        "{{.Id}}|{{.Config.Image}}|{{.Image}}|{{.State.Running}}|{{.Name}}|{{index .Config.Labels \"com.docker.compose.oneoff\"}}|{{index .Config.Labels \"dev.dockmaster.role\"}}",
        id,
    ]);
    let parts: Vec<&str> = info.trim().split('|').collect();
    assert!(parts.len() >= 7, "docker inspect {id}: {info}");
    Live {
        id: parts[0].to_string(),
        image_ref: parts[1].to_string(),
        image_id: parts[2].to_string(),
        running: parts[3] == "true",
        name: parts[4].trim_start_matches('/').to_string(),
        oneoff: parts[5].eq_ignore_ascii_case("true"),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub live: Option<Live>,
    pub images: BTreeSet<String>,
}

pub struct Dm {
    pub cmd: Command,
}

impl Dm {
    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Dm {
        self.cmd.env(k, v);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Dm {
        self.cmd.current_dir(dir);
        self
    }

    pub fn run(mut self) -> Output {
        let out = self.cmd.output().expect("run dockmaster");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn spawn(mut self) -> std::process::Child {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.spawn().expect("spawn dockmaster")
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Assert the exit code, showing everything dockmaster said when it differs.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Output {
        assert_eq!(
            self.code, expected,
            "exit code {} (expected {expected})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn ok(&self) -> &Output {
        self.code(0)
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Output {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Output {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n--- stdout\n{}",
            self.stdout
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }

    /// The last line of stdout.
    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }
}

pub fn git(dir: &Path, args: &[&str]) {
    let out = git_cmd(dir).args(args).output().expect("git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = git_cmd(dir).args(args).output().expect("git");
    assert!(out.status.success(), "git {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn git_cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    c
}

/// The compose program the suite runs on, as dockmaster picks it: `DOCKMASTER_COMPOSE`
/// when set (CI runs the suite once with `docker-compose`, v1, and once with `docker
/// compose`, v2), else `docker compose` where it works, else `docker-compose`.
pub fn compose_program() -> Vec<String> {
    match std::env::var("DOCKMASTER_COMPOSE") {
        Ok(p) if !p.trim().is_empty() => p.split_whitespace().map(str::to_string).collect(),
        _ => {
            let v2 = Command::new("docker")
                .args(["compose", "version"])
                .output()
                .is_ok_and(|o| o.status.success());
            if v2 {
                vec!["docker".into(), "compose".into()]
            } else {
                vec!["docker-compose".into()]
            }
        }
    }
}

/// The compose program a user would type (the one the suite runs on).
pub fn compose() -> Command {
    let program = compose_program();
    let mut c = Command::new(&program[0]);
    c.args(&program[1..]);
    c
}

pub fn docker_out(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One HTTP/1.0 GET on loopback (2 s to connect, 20 s to answer): (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = format!("127.0.0.1:{port}").parse().ok()?;
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Some((code, body))
}
