//! What the proxy counts, per release (per upstream container): requests, responses by
//! status class, connection errors to the app, and latency over a sliding window — what
//! `status`, `metrics` and `deploy --watch` read.
//!
//! Counting must cost next to nothing per request: totals are atomics; the window is one
//! slot per second (the last [`WINDOW_SLOTS`] seconds), each a fixed log-scale latency
//! histogram plus counts, behind a mutex held for a few nanoseconds. Quantiles come from the
//! histogram: within 10% of the true value, which is what a "p95 doubled" verdict needs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest window a reader may ask for, in seconds.
pub const WINDOW_SLOTS: usize = 300;
/// Latency buckets: bucket `i` holds latencies below `1.1^i` µs; 200 of them reach ~190 s.
const BUCKETS: usize = 200;
const RATIO: f64 = 1.1;

/// One upstream's counters.
pub struct Counters {
    started: Instant,
    requests: AtomicU64,
    /// 1xx … 5xx.
    status: [AtomicU64; 5],
    conn_errors: AtomicU64,
    window: Mutex<Window>,
}

struct Slot {
    /// Seconds since `started` this slot holds (slots are reused round-robin).
    second: u64,
    requests: u32,
    status5xx: u32,
    conn_errors: u32,
    latency: [u32; BUCKETS],
}

struct Window {
    slots: Vec<Slot>,
}

/// What a reader gets: totals since the proxy counted this upstream, and the last
/// `window` seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub requests: u64,
    /// Responses by class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub status: [u64; 5],
    pub conn_errors: u64,
    pub window: WindowStats,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    pub seconds: u64,
    pub requests: u64,
    pub status5xx: u64,
    pub conn_errors: u64,
    /// Latency quantiles over the window (time to the response's headers), when any
    /// response came.
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters::new()
    }
}

impl Counters {
    pub fn new() -> Counters {
        Counters {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            status: Default::default(),
            conn_errors: AtomicU64::new(0),
            window: Mutex::new(Window {
                slots: (0..WINDOW_SLOTS)
                    .map(|_| Slot {
                        second: u64::MAX,
                        requests: 0,
                        status5xx: 0,
                        conn_errors: 0,
                        latency: [0; BUCKETS],
                    })
                    .collect(),
            }),
        }
    }

    /// A response came back: its status and how long it took to its headers.
    pub fn response(&self, status: u16, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.status[class].fetch_add(1, Ordering::Relaxed);
        let bucket = bucket_of(latency);
        self.with_slot(|s| {
            s.requests += 1;
            if class == 4 {
                s.status5xx += 1;
            }
            s.latency[bucket] += 1;
        });
    }

    /// The app could not be reached (connect or send failed): the client got a 502.
    pub fn conn_error(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.conn_errors.fetch_add(1, Ordering::Relaxed);
        self.with_slot(|s| {
            s.requests += 1;
            s.conn_errors += 1;
        });
    }

    fn with_slot(&self, f: impl FnOnce(&mut Slot)) {
        let second = self.started.elapsed().as_secs();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut w.slots[(second % WINDOW_SLOTS as u64) as usize];
        if slot.second != second {
            slot.second = second;
            slot.requests = 0;
            slot.status5xx = 0;
            slot.conn_errors = 0;
            slot.latency = [0; BUCKETS];
        }
        f(slot);
    }

    pub fn snapshot(&self, window: Duration) -> Snapshot {
        let seconds = window.as_secs().clamp(1, WINDOW_SLOTS as u64);
        let now = self.started.elapsed().as_secs();
        let oldest = (now + 1).saturating_sub(seconds);
        let mut stats = WindowStats {
            seconds,
            ..WindowStats::default()
        };
        let mut hist = [0u64; BUCKETS];
        {
            let w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            for s in w
                .slots
                .iter()
                .filter(|s| s.second != u64::MAX && s.second >= oldest && s.second <= now)
            {
                stats.requests += u64::from(s.requests);
                stats.status5xx += u64::from(s.status5xx);
                stats.conn_errors += u64::from(s.conn_errors);
                for (h, n) in hist.iter_mut().zip(s.latency.iter()) {
                    *h += u64::from(*n);
                }
            }
        }
        stats.p50 = quantile(&hist, 0.50);
        stats.p95 = quantile(&hist, 0.95);
        stats.p99 = quantile(&hist, 0.99);
        Snapshot {
            requests: self.requests.load(Ordering::Relaxed),
            status: std::array::from_fn(|i| self.status[i].load(Ordering::Relaxed)),
            conn_errors: self.conn_errors.load(Ordering::Relaxed),
            window: stats,
        }
    }
}

fn bucket_of(latency: Duration) -> usize {
    let micros = latency.as_micros().max(1) as f64;
    ((micros.ln() / RATIO.ln()).ceil() as usize).min(BUCKETS - 1)
}

/// The upper edge of a bucket: the latency the quantile reports.
fn bucket_top(i: usize) -> Duration {
    Duration::from_micros(RATIO.powi(i as i32).round() as u64)
}

fn quantile(hist: &[u64; BUCKETS], q: f64) -> Option<Duration> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_top(i));
        }
    }
    Some(bucket_top(BUCKETS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class_and_quantiles_within_ten_percent() {
        let c = Counters::new();
        for i in 0..100u64 {
            // 1 ms … 100 ms.
            c.response(200, Duration::from_millis(i + 1));
        }
        c.response(503, Duration::from_millis(5));
        c.response(404, Duration::from_millis(5));
        c.conn_error();
        let s = c.snapshot(Duration::from_secs(30));
        assert_eq!(s.requests, 103);
        assert_eq!(s.status, [0, 100, 0, 1, 1]);
        assert_eq!(s.conn_errors, 1);
        assert_eq!(s.window.requests, 103);
        assert_eq!(s.window.status5xx, 1);
        assert_eq!(s.window.conn_errors, 1);
        // The true quantiles of what was recorded (the conn error has no latency).
        let mut all: Vec<f64> = (1..=100).map(f64::from).chain([5.0, 5.0]).collect();
        all.sort_by(f64::total_cmp);
        let truth = |q: f64| all[((all.len() as f64 * q).ceil() as usize).max(1) - 1];
        // A bucket's top is at most 10% above anything in it, never below.
        let near = |d: Option<Duration>, q: f64| {
            let got = d.unwrap().as_secs_f64() * 1000.0;
            let want = truth(q);
            assert!(
                got >= want * 0.999 && got <= want * 1.1 + 0.001,
                "q{q}: {got} ms for a true {want} ms"
            );
        };
        near(s.window.p50, 0.50);
        near(s.window.p95, 0.95);
        near(s.window.p99, 0.99);
    }

    #[test]
    fn an_empty_window_has_no_quantiles() {
        let s = Counters::new().snapshot(Duration::from_secs(30));
        assert_eq!(s.window.requests, 0);
        assert!(s.window.p95.is_none());
    }
}
