//! The control protocol between dockmaster and its proxy: one request line, one reply line.
//! Both ends use these types; nobody splits control text anywhere else.
//!
//! dockmaster reaches the proxy with `docker exec <proxy> /dockmaster proxy-ctl <words…>`,
//! and `proxy-ctl` (the proxy container's own binary) sends the words as one line to the
//! control port on the container's loopback. So the request a dockmaster sends is read by
//! whatever dockmaster build set the proxy up — possibly an older or a newer one.
//!
//! **Versions.** Version 0 is what dockmaster spoke before the protocol had a version (the
//! release at commit 8048024 and before): requests `status`, `health` and
//! `switch <upstream> <drain_ms>`; replies `ok key=value…` or `err <message>`. Version 1 keeps
//! every request and reply of version 0 word for word and adds `proto=1` to the `status`
//! reply. dockmaster asks `status` before it switches anyway, so it learns the proxy's version
//! at no cost: a version-0 proxy is driven with version-0 requests, and a proxy newer than
//! this build ([`VERSION`]) is refused rather than guessed at. A future version that changes a
//! request adds it under a new word and keeps the old ones for older dockmaster builds.

use std::fmt;
use std::time::Duration;

/// The protocol version this build speaks (and, as a proxy, answers with): 2 added
/// `metrics`. A build with
/// `DOCKMASTER_PROXY_PROTOCOL=<n>` in its environment claims version `n`: how the tests make
/// a "newer" and an "older" dockmaster from one source tree.
pub const VERSION: u32 = match option_env!("DOCKMASTER_PROXY_PROTOCOL") {
    Some(v) => parse_version(v),
    None => 2,
};

/// A decimal `u32` at compile time (a malformed value fails the build).
const fn parse_version(s: &str) -> u32 {
    let bytes = s.as_bytes();
    assert!(!bytes.is_empty(), "DOCKMASTER_PROXY_PROTOCOL is empty");
    let mut n: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let d = bytes[i];
        assert!(
            d.is_ascii_digit(),
            "DOCKMASTER_PROXY_PROTOCOL is not a number"
        );
        n = n * 10 + (d - b'0') as u32;
        i += 1;
    }
    n
}

/// A control line longer than this is refused unread (a switch line is ~100 bytes).
pub const MAX_LINE: usize = 1024;
/// A reply longer than this is refused (a `metrics` reply for the few upstreams a proxy
/// keeps counting is ~2 KiB).
pub const MAX_REPLY: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Where traffic goes now, and how many requests run there.
    Status,
    /// The proxy's own health check: it answers.
    Health,
    /// Send new requests to `upstream` (once it accepts connections), then wait up to `drain`
    /// for the requests still running on the old upstream.
    Switch { upstream: String, drain: Duration },
    /// The traffic counters of every upstream the proxy has sent to (version 2).
    Metrics { window: Duration },
}

/// One upstream's counters, as the proxy reports them.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamMetrics {
    pub upstream: String,
    pub counters: crate::proxy::metrics::Snapshot,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Status {
        /// The proxy's protocol version (0: it predates versions).
        proto: u32,
        upstream: String,
        inflight: u64,
    },
    Healthy,
    Switched {
        from: String,
        drained: Duration,
        /// Requests still running on the old upstream when the drain ended.
        still_running: u64,
    },
    Metrics(Vec<UpstreamMetrics>),
    /// The proxy refused the request; nothing changed.
    Refused(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("empty control line")]
    Empty,
    #[error("control line too long")]
    TooLong,
    #[error("unknown control request `{0}`")]
    UnknownRequest(String),
    #[error("`{request}` takes {expected}")]
    Arity {
        request: &'static str,
        expected: &'static str,
    },
    #[error(
        "`{0}` is not a container name or address (letters, digits, `.`, `-`, `_`; at most 253)"
    )]
    BadUpstream(String),
    #[error("`{value}` is not a number for {what}")]
    BadNumber { value: String, what: &'static str },
    #[error("the proxy's reply `{0}` is not one this dockmaster understands")]
    MalformedReply(String),
    #[error("this control connection needs the proxy's token")]
    Unauthorized,
}

/// A control line sent over the network (not through `docker exec` on the container's own
/// loopback) starts with `auth <token>`: the token dockmaster generated when it set the proxy
/// up, kept in the proxy container's label (readable only with access to the engine).
pub fn with_token(token: &str, request: &Request) -> String {
    format!("auth {token} {request}")
}

/// The request part of a network control line whose token is `token`.
pub fn authenticate<'a>(line: &'a str, token: &str) -> Result<&'a str, ProtocolError> {
    let rest = line
        .strip_prefix("auth ")
        .ok_or(ProtocolError::Unauthorized)?;
    let (given, request) = rest.split_once(' ').ok_or(ProtocolError::Unauthorized)?;
    // Compared in constant time: the answer must not tell how much of a guess was right.
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same && !token.is_empty() {
        Ok(request)
    } else {
        Err(ProtocolError::Unauthorized)
    }
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, ProtocolError> {
        if line.len() > MAX_LINE {
            return Err(ProtocolError::TooLong);
        }
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        match words.as_slice() {
            [] => Err(ProtocolError::Empty),
            ["status"] => Ok(Request::Status),
            ["health"] => Ok(Request::Health),
            ["switch", upstream, drain_ms] => Ok(Request::Switch {
                upstream: upstream_name(upstream)?,
                drain: Duration::from_millis(number(drain_ms, "the drain time (ms)")?),
            }),
            ["metrics", window_s] => Ok(Request::Metrics {
                window: Duration::from_secs(number(window_s, "the window (s)")?),
            }),
            ["metrics", ..] => Err(ProtocolError::Arity {
                request: "metrics",
                expected: "a window in seconds",
            }),
            ["status" | "health", ..] => Err(ProtocolError::Arity {
                request: if words[0] == "status" {
                    "status"
                } else {
                    "health"
                },
                expected: "no arguments",
            }),
            ["switch", ..] => Err(ProtocolError::Arity {
                request: "switch",
                expected: "an upstream and a drain time in ms",
            }),
            [other, ..] => Err(ProtocolError::UnknownRequest(truncate(other))),
        }
    }

    /// The words `proxy-ctl` sends, in the wire form every protocol version reads.
    pub fn words(&self) -> Vec<String> {
        match self {
            Request::Status => vec!["status".into()],
            Request::Health => vec!["health".into()],
            Request::Switch { upstream, drain } => vec![
                "switch".into(),
                upstream.clone(),
                drain.as_millis().to_string(),
            ],
            Request::Metrics { window } => vec!["metrics".into(), window.as_secs().to_string()],
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.words().join(" "))
    }
}

impl Reply {
    /// Read the reply to `request`. A reply is read in the light of what was asked: `ok`
    /// alone answers `health`, `ok from=…` answers `switch`.
    pub fn parse(request: &Request, line: &str) -> Result<Reply, ProtocolError> {
        let line = line.trim();
        if line.len() > MAX_REPLY {
            return Err(ProtocolError::TooLong);
        }
        let malformed = || ProtocolError::MalformedReply(truncate(line));
        if let Some(message) = line.strip_prefix("err") {
            if message.is_empty() || message.starts_with(' ') {
                return Ok(Reply::Refused(message.trim().to_string()));
            }
            return Err(malformed());
        }
        let rest = line.strip_prefix("ok").ok_or_else(malformed)?;
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return Err(malformed());
        }
        let mut fields = std::collections::HashMap::new();
        for word in rest.split_ascii_whitespace() {
            let (k, v) = word.split_once('=').ok_or_else(malformed)?;
            fields.insert(k, v);
        }
        let num = |key: &'static str| -> Result<u64, ProtocolError> {
            let v = fields.get(key).ok_or_else(malformed)?;
            number(v, key)
        };
        match request {
            Request::Health => Ok(Reply::Healthy),
            Request::Status => Ok(Reply::Status {
                proto: match fields.get("proto") {
                    Some(v) => u32::try_from(number(v, "proto")?).map_err(|_| malformed())?,
                    None => 0,
                },
                upstream: upstream_name(fields.get("upstream").ok_or_else(malformed)?)?,
                inflight: num("inflight")?,
            }),
            Request::Switch { .. } => Ok(Reply::Switched {
                from: upstream_name(fields.get("from").ok_or_else(malformed)?)?,
                drained: Duration::from_millis(num("drained_ms")?),
                still_running: num("still_running")?,
            }),
            Request::Metrics { .. } => {
                let n = num("n")?;
                if n > 64 {
                    return Err(malformed());
                }
                let mut out = vec![];
                for i in 0..n {
                    let key = |k: &str| format!("u{i}.{k}");
                    let get = |k: &str| -> Result<u64, ProtocolError> {
                        let v = fields.get(key(k).as_str()).ok_or_else(malformed)?;
                        number(v, "a counter")
                    };
                    let quantile = |k: &str| -> Result<Option<Duration>, ProtocolError> {
                        match fields.get(key(k).as_str()) {
                            Some(&"-") => Ok(None),
                            Some(v) => Ok(Some(Duration::from_micros(number(v, "a latency")?))),
                            None => Err(malformed()),
                        }
                    };
                    let upstream =
                        upstream_name(fields.get(format!("u{i}").as_str()).ok_or_else(malformed)?)?;
                    out.push(UpstreamMetrics {
                        upstream,
                        counters: crate::proxy::metrics::Snapshot {
                            requests: get("req")?,
                            status: [get("s1")?, get("s2")?, get("s3")?, get("s4")?, get("s5")?],
                            conn_errors: get("err")?,
                            window: crate::proxy::metrics::WindowStats {
                                seconds: get("wsec")?,
                                requests: get("wreq")?,
                                status5xx: get("w5xx")?,
                                conn_errors: get("werr")?,
                                p50: quantile("p50")?,
                                p95: quantile("p95")?,
                                p99: quantile("p99")?,
                            },
                        },
                    });
                }
                Ok(Reply::Metrics(out))
            }
        }
    }

    /// The reply line (without its newline), as every protocol version writes it.
    pub fn render(&self) -> String {
        match self {
            Reply::Status {
                proto,
                upstream,
                inflight,
            } => format!("ok proto={proto} upstream={upstream} inflight={inflight}"),
            Reply::Healthy => "ok".into(),
            Reply::Switched {
                from,
                drained,
                still_running,
            } => format!(
                "ok from={from} drained_ms={} still_running={still_running}",
                drained.as_millis()
            ),
            Reply::Metrics(all) => {
                let mut line = format!("ok n={}", all.len());
                for (i, m) in all.iter().enumerate() {
                    let c = &m.counters;
                    let w = &c.window;
                    let q = |d: Option<Duration>| {
                        d.map_or("-".to_string(), |d| d.as_micros().to_string())
                    };
                    line.push_str(&format!(
                        " u{i}={} u{i}.req={} u{i}.s1={} u{i}.s2={} u{i}.s3={} u{i}.s4={} u{i}.s5={} u{i}.err={} u{i}.wsec={} u{i}.wreq={} u{i}.w5xx={} u{i}.werr={} u{i}.p50={} u{i}.p95={} u{i}.p99={}",
                        m.upstream,
                        c.requests,
                        c.status[0],
                        c.status[1],
                        c.status[2],
                        c.status[3],
                        c.status[4],
                        c.conn_errors,
                        w.seconds,
                        w.requests,
                        w.status5xx,
                        w.conn_errors,
                        q(w.p50),
                        q(w.p95),
                        q(w.p99),
                    ));
                }
                line
            }
            // One line, always: a message never breaks the framing.
            Reply::Refused(message) => format!("err {}", message.replace(['\n', '\r'], " ")),
        }
    }
}

/// A container name (Docker allows `[a-zA-Z0-9][a-zA-Z0-9_.-]*`) or an IPv4 address or host
/// name: what the proxy may resolve and connect to. Anything else is refused before the proxy
/// changes anything.
pub fn upstream_name(s: &str) -> Result<String, ProtocolError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(ProtocolError::BadUpstream(truncate(s)))
    }
}

fn number(s: &str, what: &'static str) -> Result<u64, ProtocolError> {
    s.parse().map_err(|_| ProtocolError::BadNumber {
        value: truncate(s),
        what,
    })
}

/// Quote at most 64 characters of hostile input back in an error.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn version_0_lines_are_read_as_before() {
        // Exactly what the unversioned proxy (commit 8048024) writes.
        let status = Reply::parse(
            &Request::Status,
            "ok upstream=app-2026.01.10-abc1234-00aa11 inflight=2\n",
        )
        .unwrap();
        assert_eq!(
            status,
            Reply::Status {
                proto: 0,
                upstream: "app-2026.01.10-abc1234-00aa11".into(),
                inflight: 2
            }
        );
        let switch = Request::Switch {
            upstream: "b".into(),
            drain: Duration::from_secs(30),
        };
        assert_eq!(switch.words(), ["switch", "b", "30000"]);
        assert_eq!(
            Reply::parse(&switch, "ok from=a drained_ms=12 still_running=0").unwrap(),
            Reply::Switched {
                from: "a".into(),
                drained: Duration::from_millis(12),
                still_running: 0
            }
        );
        assert_eq!(
            Reply::parse(
                &switch,
                "err new upstream b:8080 does not accept connections"
            )
            .unwrap(),
            Reply::Refused("new upstream b:8080 does not accept connections".into())
        );
        assert_eq!(
            Reply::parse(&Request::Health, "ok").unwrap(),
            Reply::Healthy
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        assert_eq!(Request::parse(""), Err(ProtocolError::Empty));
        assert!(matches!(
            Request::parse("switch"),
            Err(ProtocolError::Arity { .. })
        ));
        assert!(matches!(
            Request::parse("switch a;rm 10"),
            Err(ProtocolError::BadUpstream(_))
        ));
        assert!(matches!(
            Request::parse("switch -a 10"),
            Err(ProtocolError::BadUpstream(_))
        ));
        assert!(matches!(
            Request::parse("switch a ten"),
            Err(ProtocolError::BadNumber { .. })
        ));
        assert!(matches!(
            Request::parse("reboot"),
            Err(ProtocolError::UnknownRequest(_))
        ));
        assert_eq!(
            Request::parse(&"x".repeat(MAX_LINE + 1)),
            Err(ProtocolError::TooLong)
        );
    }

    #[test]
    fn network_lines_need_the_token() {
        let line = with_token("s3cret", &Request::Status);
        assert_eq!(authenticate(&line, "s3cret"), Ok("status"));
        assert_eq!(
            authenticate(&line, "other!"),
            Err(ProtocolError::Unauthorized)
        );
        assert_eq!(
            authenticate("status", "s3cret"),
            Err(ProtocolError::Unauthorized)
        );
        assert_eq!(
            authenticate("auth  status", ""),
            Err(ProtocolError::Unauthorized)
        );
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::Status),
            Just(Request::Health),
            ("[a-zA-Z0-9][a-zA-Z0-9_.-]{0,80}", 0u64..10_000_000).prop_map(|(u, ms)| {
                Request::Switch {
                    upstream: u,
                    drain: Duration::from_millis(ms),
                }
            }),
            (0u64..100_000).prop_map(|s| Request::Metrics {
                window: Duration::from_secs(s)
            }),
        ]
    }

    fn reply_to(req: &Request) -> BoxedStrategy<Reply> {
        let refused = "[ -~]{0,100}".prop_map(|m| Reply::Refused(m.trim().to_string()));
        match req {
            Request::Health => prop_oneof![Just(Reply::Healthy), refused].boxed(),
            Request::Status => prop_oneof![
                (0u32..5, "[a-z0-9][a-z0-9_.-]{0,60}", any::<u64>()).prop_map(
                    |(proto, upstream, inflight)| Reply::Status {
                        proto,
                        upstream,
                        inflight
                    }
                ),
                refused
            ]
            .boxed(),
            Request::Metrics { .. } => prop_oneof![
                proptest::collection::vec(
                    (
                        "[a-z0-9][a-z0-9_.-]{0,40}",
                        proptest::array::uniform5(any::<u64>()),
                        proptest::array::uniform4(any::<u64>()),
                        proptest::option::of(0u64..1_000_000_000),
                    ),
                    0..4
                )
                .prop_map(|ups| Reply::Metrics(
                    ups.into_iter()
                        .map(|(u, st, w, q)| UpstreamMetrics {
                            upstream: u,
                            counters: crate::proxy::metrics::Snapshot {
                                requests: w[0],
                                status: st,
                                conn_errors: w[1],
                                window: crate::proxy::metrics::WindowStats {
                                    seconds: w[2],
                                    requests: w[3],
                                    status5xx: st[4],
                                    conn_errors: st[0],
                                    p50: q.map(Duration::from_micros),
                                    p95: q.map(Duration::from_micros),
                                    p99: None,
                                },
                            },
                        })
                        .collect()
                )),
                refused
            ]
            .boxed(),
            Request::Switch { .. } => prop_oneof![
                ("[a-z0-9][a-z0-9_.-]{0,60}", 0u64..1_000_000, any::<u64>()).prop_map(
                    |(from, ms, still)| Reply::Switched {
                        from,
                        drained: Duration::from_millis(ms),
                        still_running: still
                    }
                ),
                refused
            ]
            .boxed(),
        }
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in request()) {
            prop_assert_eq!(Request::parse(&req.words().join(" ")), Ok(req));
        }

        #[test]
        fn replies_round_trip((req, reply) in request().prop_flat_map(|r| (Just(r.clone()), reply_to(&r)))) {
            prop_assert_eq!(Reply::parse(&req, &reply.render()), Ok(reply));
        }

        /// Whatever arrives on the control port, parsing answers (Ok or a reason) and never panics.
        #[test]
        fn any_input_is_parsed_or_refused(line in "\\PC{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Request::parse(&line);
            let lossy = String::from_utf8_lossy(&bytes);
            let _ = Request::parse(&lossy);
            for req in [Request::Status, Request::Health, Request::Switch { upstream: "a".into(), drain: Duration::ZERO }, Request::Metrics { window: Duration::from_secs(30) }] {
                let _ = Reply::parse(&req, &line);
                let _ = Reply::parse(&req, &lossy);
            }
        }

        /// Words that look like a request but carry a bad upstream never become a switch.
        #[test]
        fn bad_upstreams_never_switch(up in "[^a-zA-Z0-9 \\t\\n\\r\\x0b\\x0c][\\PC]{0,40}") {
            let line = format!("switch {up} 100");
            if let Ok(Request::Switch { upstream, .. }) = Request::parse(&line) {
                prop_assert!(upstream.as_bytes()[0].is_ascii_alphanumeric());
            }
        }
    }
}
