//! A running `dockmaster serve` for the tests, and plain HTTP/1.1 requests to it: the
//! serve tests, the browser test and the API fuzz test share them.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use super::Fixture;

/// A running `dockmaster serve`, stopped on drop as a user stops it (SIGTERM: a job still
/// running is interrupted and waited for, so no orphan command outlives the test), killed
/// if it has not ended within two minutes.
pub struct Served {
    pub child: Child,
    pub port: u16,
    pub token: String,
    /// What it said on stderr before the login URL (warnings).
    pub said: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dockmaster serve --listen <listen>` for the fixture and waits (30 s at most)
/// for the login URL it prints on stderr.
pub fn serve(fx: &Fixture, listen: &str) -> Served {
    let mut child = fx.dm_cmd(&["serve", "--listen", listen]).spawn();
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    // Reads stderr to its end, so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more: keep draining.
                continue;
            }
        }
    });
    let mut said = String::new();
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve printed no login URL; it said:\n{said}")
            }
        };
        said.push_str(&line);
        said.push('\n');
        if let Some(url) = line
            .split_whitespace()
            .find(|w| w.contains("/login?token="))
        {
            let rest = url.strip_prefix("http://").expect("http URL");
            let (addr, token) = rest.split_once("/login?token=").unwrap();
            let port = addr.rsplit_once(':').unwrap().1.parse().unwrap();
            return Served {
                child,
                port,
                token: token.to_string(),
                said,
            };
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request (`Connection: close`) to the server on loopback. `headers` come
/// after `Host` (given by the caller, so tests can send a foreign one).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        // A JSON body for the API, else a form.
        let kind = if body.starts_with('{') {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        req.push_str(&format!(
            "Content-Type: {kind}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a reply head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

impl Served {
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The absolute URL of a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// The login URL, as `serve` printed it.
    pub fn login_url(&self) -> String {
        self.url(&format!("/login?token={}", self.token))
    }

    pub fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        let c;
        let mut headers = vec![];
        if let Some(cookie) = cookie {
            c = cookie.to_string();
            headers.push(("Cookie", c.as_str()));
        }
        request(self.port, "GET", path, &self.host(), &headers, "")
    }

    /// A same-origin form POST with the session's CSRF token.
    pub fn post_form(
        &self,
        path: &str,
        cookie: &str,
        csrf: &str,
        fields: &[(&str, &str)],
    ) -> Reply {
        let mut body = format!("csrf={csrf}");
        for (k, v) in fields {
            body.push_str(&format!("&{k}={v}"));
        }
        let origin = self.origin();
        request(
            self.port,
            "POST",
            path,
            &self.host(),
            &[("Cookie", cookie), ("Origin", &origin)],
            &body,
        )
    }

    /// A same-origin JSON POST to the API with the CSRF header.
    pub fn post_json(&self, path: &str, cookie: &str, csrf: &str, json: &str) -> Reply {
        let origin = self.origin();
        request(
            self.port,
            "POST",
            path,
            &self.host(),
            &[
                ("Cookie", cookie),
                ("Origin", &origin),
                ("X-CSRF-Token", csrf),
            ],
            json,
        )
    }

    /// Waits (bounded) for job `id` to end; returns it (`/api/jobs/{id}`).
    pub fn wait_job(&self, cookie: &str, id: u64) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            let r = self.get(&format!("/api/jobs/{id}"), Some(cookie));
            assert_eq!(r.status, 200, "{r:?}");
            let job = r.json();
            if job["state"] != "running" {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} still running after 180 s: {job}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Logs in; returns the cookie (`name=value`).
    pub fn login(&self) -> String {
        let r = self.get(&format!("/login?token={}", self.token), None);
        assert_eq!(r.status, 303, "{r:?}");
        let set = r.header("Set-Cookie").expect("a session cookie");
        set.split(';').next().unwrap().trim().to_string()
    }
}

/// The CSRF token in a page's logout form.
pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().unwrap().to_string()
}
