//! The release page's security model, as plain data and functions (no sockets): the login
//! token, sessions with their CSRF tokens, the `Host` allowlist, the same-origin check for
//! POSTs and the failed-login rate limit. The server in `mod.rs` asks; this answers.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The token file in the state directory.
pub const TOKEN_FILE: &str = "serve.token";

/// Random bytes in a token, a session id or a CSRF token: 256 bits.
const SECRET_BYTES: usize = 32;

/// Failed logins one client may make within `LOGIN_WINDOW` before it gets 429.
pub const MAX_FAILED_LOGINS: usize = 5;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// A session ends this long after its login (the token still works for the next one).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// At most this many sessions are kept; a login beyond it ends the oldest.
const MAX_SESSIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(getrandom::Error),
    #[error("cannot keep the login token in {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A fresh secret from the operating system's generator, hex-encoded.
pub fn random_hex() -> Result<String, Error> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(Error::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether a token file's content is one of ours (a crash while writing it, or a hand edit,
/// leaves something else: then a new token is made).
fn well_formed(token: &str) -> bool {
    token.len() >= 32 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The login token: read from `<state_dir>/serve.token`, or made and written there (mode
/// 0600, through a temporary file and a rename, so a reader never sees half a token).
/// A token file that others can read is made private again.
pub fn load_or_create_token(state_dir: &Path) -> Result<String, Error> {
    let path = state_dir.join(TOKEN_FILE);
    let err = |source| Error::TokenFile {
        path: path.clone(),
        source,
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim();
        if well_formed(token) {
            let mode = std::fs::metadata(&path).map_err(err)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(err)?;
            }
            return Ok(token.to_string());
        }
    }
    std::fs::create_dir_all(state_dir).map_err(err)?;
    let token = random_hex()?;
    let tmp = state_dir.join(format!("{TOKEN_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{token}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(err)?;
    Ok(token)
}

/// Equal, in a time that does not depend on where the first difference is (`subtle`; a
/// length difference answers at once, and every token here has a fixed, public length),
/// so a client cannot find the token byte by byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// One logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// The CSRF token its forms carry (and API POSTs send as `X-CSRF-Token`).
    pub csrf: String,
    created: Instant,
}

/// The sessions, in memory only: a restart logs everyone out (the token logs them in again).
#[derive(Default)]
pub struct Sessions {
    by_id: HashMap<String, Session>,
}

impl Sessions {
    /// A new session; returns its id (the cookie's value).
    pub fn create(&mut self, now: Instant) -> Result<(String, Session), Error> {
        self.by_id
            .retain(|_, s| now.duration_since(s.created) < SESSION_LIFETIME);
        if self.by_id.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(id, _)| id.clone())
        {
            self.by_id.remove(&oldest);
        }
        let id = random_hex()?;
        let session = Session {
            csrf: random_hex()?,
            created: now,
        };
        self.by_id.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session with this id. Ids are compared in constant time.
    pub fn get(&self, id: &str, now: Instant) -> Option<&Session> {
        self.by_id
            .iter()
            .find(|(k, _)| constant_time_eq(k.as_bytes(), id.as_bytes()))
            .map(|(_, s)| s)
            .filter(|s| now.duration_since(s.created) < SESSION_LIFETIME)
    }

    pub fn remove(&mut self, id: &str) {
        self.by_id.remove(id);
    }
}

/// The `Host` values the server answers to: the listen address, `localhost` and
/// `127.0.0.1` on its port, and each `--allow-host` name. A page reached through any other
/// name is refused, so a rebound DNS name cannot make a browser talk to the server as if it
/// were that name's origin.
#[derive(Clone, Debug)]
pub struct HostAllowlist {
    allowed: Vec<String>,
}

impl HostAllowlist {
    pub fn new(listen: SocketAddr, extra: &[String]) -> HostAllowlist {
        let port = listen.port();
        let ip = match listen.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let mut allowed = vec![];
        for name in [ip.as_str(), "localhost", "127.0.0.1"] {
            allowed.push(format!("{name}:{port}"));
            // A browser leaves out the scheme's default port.
            if port == 80 {
                allowed.push(name.to_string());
            }
        }
        for name in extra {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            if has_port(&name) {
                allowed.push(name);
            } else {
                allowed.push(format!("{name}:{port}"));
                // Behind a reverse proxy, the name alone (its port 80 or 443).
                allowed.push(name);
            }
        }
        allowed.sort();
        allowed.dedup();
        HostAllowlist { allowed }
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        self.allowed.contains(&host)
    }
}

/// `name:port` or `[v6]:port`.
fn has_port(name: &str) -> bool {
    match name.rsplit_once(':') {
        Some((h, p)) => {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']'))
        }
        None => false,
    }
}

/// A POST's `Origin` is the page's own origin: `http://` or `https://` (behind a TLS
/// reverse proxy) followed by the request's own (allowlisted) `Host`. A POST without an
/// `Origin`, or with `null`, is refused: every browser that can run the page sends one.
pub fn same_origin(origin: Option<&str>, host: &str) -> bool {
    let Some(origin) = origin else { return false };
    let origin = origin.trim().to_ascii_lowercase();
    let host = host.trim().to_ascii_lowercase();
    [format!("http://{host}"), format!("https://{host}")].contains(&origin)
}

/// Why a POST was refused (the page or JSON error says it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostRefusal {
    /// No `Origin` header, or another site's.
    CrossOrigin,
    /// No CSRF token, or not this session's.
    Csrf,
}

impl PostRefusal {
    pub fn message(self) -> &'static str {
        match self {
            PostRefusal::CrossOrigin => {
                "refused: this request did not come from this page (its Origin header is missing or another site's)"
            }
            PostRefusal::Csrf => {
                "refused: the form's CSRF token is missing or stale; reload the page and try again"
            }
        }
    }
}

/// The check every POST passes before it changes anything: same origin AND the session's
/// CSRF token (the form field `csrf`, or the header `X-CSRF-Token` for the API).
pub fn check_post(
    session: &Session,
    sent_csrf: Option<&str>,
    origin: Option<&str>,
    host: &str,
) -> Result<(), PostRefusal> {
    if !same_origin(origin, host) {
        return Err(PostRefusal::CrossOrigin);
    }
    match sent_csrf {
        Some(t) if constant_time_eq(t.as_bytes(), session.csrf.as_bytes()) => Ok(()),
        _ => Err(PostRefusal::Csrf),
    }
}

/// Failed logins per client address, over a sliding window.
#[derive(Default)]
pub struct LoginLimiter {
    failures: HashMap<IpAddr, VecDeque<Instant>>,
}

impl LoginLimiter {
    /// Whether `ip` may try to log in now; Err(seconds to wait) once it has failed
    /// `MAX_FAILED_LOGINS` times within `LOGIN_WINDOW`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let Some(q) = self.failures.get_mut(&ip) else {
            return Ok(());
        };
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= LOGIN_WINDOW)
        {
            q.pop_front();
        }
        if q.is_empty() {
            self.failures.remove(&ip);
            return Ok(());
        }
        if q.len() < MAX_FAILED_LOGINS {
            return Ok(());
        }
        // Until the oldest failure leaves the window (at least a second).
        let oldest = q.front().copied().unwrap_or(now);
        let left = LOGIN_WINDOW.saturating_sub(now.duration_since(oldest));
        Err(left.as_secs_f64().ceil().max(1.0) as u64)
    }

    pub fn fail(&mut self, ip: IpAddr, now: Instant) {
        // Bounded: a client never has more than the window's worth recorded.
        let q = self.failures.entry(ip).or_default();
        q.push_back(now);
        while q.len() > MAX_FAILED_LOGINS {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
        // A byte that equals the filler for a missing one must not match.
        assert!(!constant_time_eq(&[0xff], &[]));
        assert!(!constant_time_eq(&[0x00, 0xff], &[0x00]));
    }

    #[test]
    fn secrets_are_long_hex_and_differ() {
        let a = random_hex().unwrap();
        let b = random_hex().unwrap();
        assert_eq!(a.len(), 64, "256 bits");
        assert!(well_formed(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn token_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let t1 = load_or_create_token(&state).unwrap();
        let path = state.join(TOKEN_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(&state).unwrap(), t1);
        // Made readable by others: made private again, same token.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create_token(&state).unwrap(), t1);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A broken file (empty after a crash): a new token.
        std::fs::write(&path, "").unwrap();
        let t2 = load_or_create_token(&state).unwrap();
        assert!(well_formed(&t2));
        assert_ne!(t1, t2);
    }

    #[test]
    fn host_allowlist() {
        let a = HostAllowlist::new("127.0.0.1:8765".parse().unwrap(), &[]);
        assert!(a.allows("127.0.0.1:8765"));
        assert!(a.allows("localhost:8765"));
        assert!(a.allows("LOCALHOST:8765"));
        assert!(!a.allows("localhost"), "the port is part of the host");
        assert!(!a.allows("localhost:8766"));
        assert!(!a.allows("evil.example:8765"), "DNS rebinding");
        assert!(!a.allows("127.0.0.1.evil.example:8765"));
        assert!(!a.allows(""));

        let a = HostAllowlist::new(
            "0.0.0.0:9000".parse().unwrap(),
            &["nas.local".into(), "proxy.example:443".into()],
        );
        assert!(a.allows("0.0.0.0:9000"));
        assert!(a.allows("nas.local:9000"));
        assert!(a.allows("nas.local"));
        assert!(a.allows("proxy.example:443"));
        assert!(
            !a.allows("proxy.example"),
            "a name given with a port is exact"
        );
        assert!(!a.allows("nas.local:9001"));

        let a = HostAllowlist::new("[::1]:8765".parse().unwrap(), &[]);
        assert!(a.allows("[::1]:8765"));
        assert!(a.allows("localhost:8765"));

        let a = HostAllowlist::new("127.0.0.1:80".parse().unwrap(), &[]);
        assert!(a.allows("localhost"), "port 80 is left out by browsers");
    }

    #[test]
    fn origin_check() {
        assert!(same_origin(Some("http://127.0.0.1:8765"), "127.0.0.1:8765"));
        assert!(same_origin(Some("https://nas.local"), "nas.local"));
        assert!(!same_origin(None, "127.0.0.1:8765"), "missing Origin");
        assert!(!same_origin(Some("null"), "127.0.0.1:8765"));
        assert!(!same_origin(Some("http://evil.example"), "127.0.0.1:8765"));
        assert!(!same_origin(
            Some("http://127.0.0.1:8766"),
            "127.0.0.1:8765"
        ));
        assert!(!same_origin(
            Some("http://127.0.0.1:8765.evil.example"),
            "127.0.0.1:8765"
        ));
    }

    #[test]
    fn post_needs_origin_and_csrf() {
        let mut s = Sessions::default();
        let now = Instant::now();
        let (_, session) = s.create(now).unwrap();
        let host = "localhost:8765";
        let origin = Some("http://localhost:8765");
        assert_eq!(
            check_post(&session, Some(&session.csrf), origin, host),
            Ok(())
        );
        assert_eq!(
            check_post(&session, None, origin, host),
            Err(PostRefusal::Csrf)
        );
        assert_eq!(
            check_post(&session, Some("0000"), origin, host),
            Err(PostRefusal::Csrf)
        );
        assert_eq!(
            check_post(&session, Some(&session.csrf), None, host),
            Err(PostRefusal::CrossOrigin)
        );
        assert_eq!(
            check_post(
                &session,
                Some(&session.csrf),
                Some("http://evil.example"),
                host
            ),
            Err(PostRefusal::CrossOrigin)
        );
    }

    #[test]
    fn sessions_expire_and_end() {
        let mut s = Sessions::default();
        let now = Instant::now();
        let (id, _) = s.create(now).unwrap();
        assert!(s.get(&id, now).is_some());
        assert!(s.get("nope", now).is_none());
        assert!(s.get(&id, now + SESSION_LIFETIME).is_none());
        s.remove(&id);
        assert!(s.get(&id, now).is_none());
        for _ in 0..MAX_SESSIONS + 5 {
            s.create(now).unwrap();
        }
        assert!(s.by_id.len() <= MAX_SESSIONS);
    }

    #[test]
    fn login_limiter_window() {
        let mut l = LoginLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..MAX_FAILED_LOGINS {
            assert_eq!(l.check(ip, t0), Ok(()), "attempt {}", i + 1);
            l.fail(ip, t0 + Duration::from_secs(i as u64));
        }
        // The sixth attempt within the minute: refused, until the first failure is a
        // minute old.
        let wait = l.check(ip, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, 50);
        assert_eq!(l.check(other, t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(
            l.check(ip, t0 + Duration::from_millis(59_500)).unwrap_err(),
            1
        );
        assert_eq!(
            l.check(ip, t0 + LOGIN_WINDOW),
            Ok(()),
            "one failure left it"
        );
        assert_eq!(l.check(ip, t0 + LOGIN_WINDOW * 2), Ok(()));
        assert!(l.failures.is_empty(), "forgotten after the window");
    }
}
