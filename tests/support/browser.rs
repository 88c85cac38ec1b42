//! A real browser for the tests: headless Chromium driven over WebDriver by `chromedriver`,
//! through the `fantoccini` client (plain HTTP on loopback, no TLS). Every test gets its
//! own chromedriver on a port of its own, its own Chromium profile in a temp dir, and both
//! are gone when the `Browser` is dropped. A missing chromedriver or Chromium fails the
//! test with the command that installs them: these tests are never skipped.
//!
//! The calls are blocking (the integration tests are plain `#[test]` functions): each one
//! runs on the browser's own single-threaded tokio runtime and is bounded in time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long one WebDriver command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long chromedriver may take to say it listens, and a session to open.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Desktop size the browser starts with.
pub const DESKTOP: (u32, u32) = (1280, 900);
/// A phone (an iPhone 12–15's CSS pixels).
pub const PHONE: (u32, u32) = (390, 844);

const INSTALL: &str = "apt-get install chromium chromium-driver (.ci/run installs them)";

/// `name` as found on PATH, when it is an executable file.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// chromedriver and the Chromium it drives, or a panic that says how to install them.
pub fn require_browser() -> (PathBuf, PathBuf) {
    let driver = on_path("chromedriver").unwrap_or_else(|| {
        panic!("this test needs a real browser: no `chromedriver` on PATH; {INSTALL}")
    });
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|n| on_path(n))
        .unwrap_or_else(|| {
            panic!("this test needs a real browser: no `chromium` on PATH; {INSTALL}")
        });
    (driver, chromium)
}

/// A headless Chromium session. Dropping it ends the session, then chromedriver's whole
/// process group (chromedriver and any Chromium left), then removes the profile.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// What chromedriver printed (shown when something fails).
    driver_log: Arc<Mutex<String>>,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port (it picks one: `--port=0`) and opens a session
    /// with headless Chromium at desktop size.
    pub fn start() -> Browser {
        let (driver_bin, chromium) = require_browser();
        let profile = tempfile::Builder::new()
            .prefix("dmt-chromium-")
            .tempdir()
            .expect("a temp dir for the Chromium profile");
        let mut driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&driver_bin)
                .arg("--port=0")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Its own process group: dropping the browser kills the group, so no
                // Chromium outlives a test, even one that panicked mid-session.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_bin.display()))
        };
        let driver_log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<u16>();
        for (i, out) in [
            Box::new(driver.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(driver.stderr.take().unwrap()),
        ]
        .into_iter()
        .enumerate()
        {
            let log = Arc::clone(&driver_log);
            let tx = tx.clone();
            // Reads to the end, so chromedriver never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if i == 0
                        && let Some(port) = line
                            .split("started successfully on port ")
                            .nth(1)
                            .and_then(|p| p.trim_end_matches('.').trim().parse().ok())
                    {
                        let _ = tx.send(port);
                    }
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        drop(tx);
        let port = match rx.recv_timeout(START_TIMEOUT) {
            Ok(port) => port,
            Err(_) => {
                kill_group(&mut driver);
                panic!(
                    "chromedriver did not say which port it listens on within {START_TIMEOUT:?}; it said:\n{}",
                    driver_log.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    // As root, Chromium needs --no-sandbox; no GPU on these machines.
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-component-update",
                    "--disable-background-networking",
                    "--no-first-run",
                    // Phones overlay their scrollbars: screenshots at phone width show the
                    // whole layout width.
                    "--hide-scrollbars",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let session = rt.block_on(async {
            tokio::time::timeout(
                START_TIMEOUT,
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&url),
            )
            .await
        });
        let client = match session {
            Ok(Ok(client)) => client,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => format!("{e} ({e:?})"),
                    _ => format!("no answer within {START_TIMEOUT:?}"),
                };
                kill_group(&mut driver);
                panic!(
                    "chromedriver at {url} could not open a headless Chromium session ({}): {why}\nchromedriver said:\n{}",
                    chromium.display(),
                    driver_log.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
        };
        Browser {
            rt,
            client: Some(client),
            driver,
            driver_log,
            profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("an open session")
    }

    /// Runs one WebDriver call, bounded by `COMMAND_TIMEOUT`.
    fn run<T, E: std::fmt::Debug>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, fut).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{what}: {e:?}")),
            Err(_) => Err(format!("{what}: no answer within {COMMAND_TIMEOUT:?}")),
        }
    }

    /// Like `run`, but a failure fails the test (with where the browser is).
    #[track_caller]
    fn must<T, E: std::fmt::Debug>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> T {
        match self.run(what, fut) {
            Ok(v) => v,
            Err(e) => panic!("{e}\n{}", self.whereabouts()),
        }
    }

    /// The current URL, the page's text and its source (trimmed), for failure messages.
    pub fn whereabouts(&self) -> String {
        let url = self
            .run("current url", self.client().current_url())
            .map(|u| u.to_string())
            .unwrap_or_else(|e| e);
        let text = self
            .run(
                "page text",
                self.client().execute(
                    "return document.body ? document.body.innerText : ''",
                    vec![],
                ),
            )
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| e);
        let source = self
            .run("page source", self.client().source())
            .unwrap_or_else(|e| e);
        format!(
            "browser at {url}; the page says:\n{}\n--- its source:\n{}",
            cut(&text, 4000),
            cut(&source, 8000)
        )
    }

    /// chromedriver's output so far.
    pub fn driver_log(&self) -> String {
        self.driver_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads a URL and waits for the page to load (30 s at most).
    #[track_caller]
    pub fn goto(&self, url: &str) {
        self.must(&format!("goto {url}"), self.client().goto(url));
    }

    /// The current URL.
    #[track_caller]
    pub fn url(&self) -> String {
        self.must("current url", self.client().current_url())
            .to_string()
    }

    /// The current URL's path (`/releases`).
    #[track_caller]
    pub fn path(&self) -> String {
        self.must("current url", self.client().current_url())
            .path()
            .to_string()
    }

    /// Every element that matches a CSS selector (none: empty).
    #[track_caller]
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        self.must(
            &format!("find {css}"),
            self.client().find_all(Locator::Css(css)),
        )
    }

    /// The one element a CSS selector names; fails the test when there is none.
    #[track_caller]
    pub fn find(&self, css: &str) -> Element {
        let mut all = self.find_all(css);
        if all.is_empty() {
            panic!("no element matches {css:?}\n{}", self.whereabouts());
        }
        all.remove(0)
    }

    /// Elements under `parent` that match a CSS selector.
    #[track_caller]
    pub fn find_in(&self, parent: &Element, css: &str) -> Vec<Element> {
        self.must(&format!("find {css}"), parent.find_all(Locator::Css(css)))
    }

    /// The rendered text of the first element that matches.
    #[track_caller]
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.text_of(&e)
    }

    /// An element's rendered text.
    #[track_caller]
    pub fn text_of(&self, e: &Element) -> String {
        self.must("element text", e.text())
    }

    /// An element's HTML (`inner`: without the element's own tag).
    #[track_caller]
    pub fn html_of(&self, e: &Element, inner: bool) -> String {
        self.must("element html", e.html(inner))
    }

    /// An element's attribute.
    #[track_caller]
    pub fn attr_of(&self, e: &Element, name: &str) -> Option<String> {
        self.must(&format!("attribute {name}"), e.attr(name))
    }

    /// Clicks the first element that matches (a real click: it must be visible).
    #[track_caller]
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.click_on(&e);
    }

    #[track_caller]
    pub fn click_on(&self, e: &Element) {
        self.must("click", e.click());
    }

    /// Runs JavaScript in the page (`return …` gives a value back).
    #[track_caller]
    pub fn execute(&self, script: &str) -> Value {
        self.must(
            &format!("execute {script}"),
            self.client().execute(script, vec![]),
        )
    }

    /// Polls (every 200 ms, `timeout` at most) until the first element matching `css`
    /// has text that `ok` accepts; returns that text. Fails the test with the last text
    /// seen and the page when time runs out. An element that is not there (yet), or goes
    /// stale while the page changes, is just not ready.
    #[track_caller]
    pub fn wait_for(&self, css: &str, ok: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let start = Instant::now();
        let mut last = None;
        loop {
            let seen = self
                .run(
                    &format!("find {css}"),
                    self.client().find_all(Locator::Css(css)),
                )
                .ok()
                .and_then(|all| all.into_iter().next())
                .and_then(|e| self.run("element text", e.text()).ok());
            if let Some(text) = &seen
                && ok(text)
            {
                return text.clone();
            }
            if seen.is_some() {
                last = seen;
            }
            if start.elapsed() >= timeout {
                panic!(
                    "waited {timeout:?} for {css:?} to read as expected; last text seen: {}\n{}",
                    last.map_or("(no such element)".to_string(), |t| format!("{t:?}")),
                    self.whereabouts()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls (every 200 ms, `timeout` at most) until the current URL's path starts with
    /// `prefix`; returns the path. Fails the test with the page it is on instead.
    #[track_caller]
    pub fn wait_for_path(&self, prefix: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let path = self
                .run("current url", self.client().current_url())
                .map(|u| u.path().to_string());
            if let Ok(path) = path
                && path.starts_with(prefix)
            {
                return path;
            }
            if start.elapsed() >= timeout {
                panic!(
                    "waited {timeout:?} for a page under {prefix}\n{}",
                    self.whereabouts()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sets the window so that the page's viewport (`innerWidth` × `innerHeight`) is
    /// `width` × `height` CSS pixels, which is what media queries see.
    #[track_caller]
    pub fn set_size(&self, width: u32, height: u32) {
        let (mut w, mut h) = (width, height);
        for _ in 0..3 {
            self.must("set window size", self.client().set_window_size(w, h));
            let inner = self.execute("return [window.innerWidth, window.innerHeight]");
            let (iw, ih) = (
                inner[0].as_u64().unwrap_or(0) as u32,
                inner[1].as_u64().unwrap_or(0) as u32,
            );
            if (iw, ih) == (width, height) {
                return;
            }
            // The window's frame takes some room: grow the window by what is missing.
            w = (w + width).saturating_sub(iw);
            h = (h + height).saturating_sub(ih);
        }
        let inner = self.execute("return [window.innerWidth, window.innerHeight]");
        panic!("could not make the viewport {width}x{height}: it is {inner}");
    }

    /// Saves a PNG of the viewport.
    #[track_caller]
    pub fn screenshot(&self, path: &Path) {
        let png = self.must("screenshot", self.client().screenshot());
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends the session: chromedriver quits Chromium.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        kill_group(&mut self.driver);
    }
}

/// At most `max` bytes of `s` (on a character boundary), marked when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}\n[… cut]", &s[..at])
}

/// Kills chromedriver's process group (chromedriver and the Chromium it started), then
/// reaps chromedriver.
fn kill_group(child: &mut Child) {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    let _ = child.kill();
    let _ = child.wait();
}
