//! Prometheus metrics: requests by route and status, a latency histogram,
//! cache hit ratio and store errors. Plain atomics: recording a request is a
//! few relaxed increments, no lock, no allocation.
//!
//! The byte-budgeted caches ([`crate::budget`]) are watched here: each
//! scrape reads their bytes, hits, misses, evictions and the times the
//! total made the largest project give way.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::budget::CacheCounters;

/// The routes metrics are kept for.
pub const ROUTES: &[&str] = &[
    "connect",
    "connect_reverify",
    "connect_js",
    "session_verify",
    "token",
    "token_verify",
    "jwks",
    "rate_limit_check",
    "ato_login_attempt",
    "ato_add_identifier",
    "ping",
    "preflight",
    "other",
];

/// Status classes counted per route.
const STATUSES: &[u16] = &[
    200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503,
];

/// What is exposed of each watched cache (counts since start are gauges,
/// as for the other cache counters, so they carry no `_total`).
type CacheSeries = (&'static str, &'static str, fn(&CacheCounters) -> u64);
const CACHE_SERIES: &[CacheSeries] = &[
    (
        "qyzar_cache_bytes",
        "Bytes held by the cache (entry weights), all projects.",
        |c| c.bytes.load(Ordering::Relaxed),
    ),
    (
        "qyzar_cache_hits",
        "Lookups answered from the cache since start.",
        |c| c.hits.load(Ordering::Relaxed),
    ),
    (
        "qyzar_cache_misses",
        "Lookups the cache could not answer since start.",
        |c| c.misses.load(Ordering::Relaxed),
    ),
    (
        "qyzar_cache_evictions",
        "Entries dropped since start to keep a project's share or the total, or as too large.",
        |c| c.evictions.load(Ordering::Relaxed),
    ),
    (
        "qyzar_cache_replacements",
        "Values replaced by a newer one under the same key since start (nothing dropped).",
        |c| c.replacements.load(Ordering::Relaxed),
    ),
    (
        "qyzar_cache_budget_evictions",
        "Times the total byte budget was reached and the largest project gave way.",
        |c| c.budget_evictions.load(Ordering::Relaxed),
    ),
    (
        "qyzar_cache_declined",
        "Misses not cached since start: inserting would have evicted and the project's recent entries were rarely read again.",
        |c| c.declined.load(Ordering::Relaxed),
    ),
];

/// Latency bucket upper bounds in microseconds.
const BUCKETS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// The engine's counters.
pub struct Metrics {
    requests: Vec<AtomicU64>,
    latency: Vec<AtomicU64>,
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    /// Store calls that failed.
    pub store_errors: AtomicU64,
    /// Caches read at each scrape, by name (only locked to add and render).
    caches: Mutex<Vec<(&'static str, Arc<CacheCounters>)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let n = ROUTES.len() * (STATUSES.len() + 1);
        Self {
            requests: (0..n).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..=BUCKETS_US.len()).map(|_| AtomicU64::new(0)).collect(),
            latency_sum_us: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            caches: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Records one answered request.
    pub fn record(&self, route: &str, status: u16, micros: u64) {
        let r = ROUTES
            .iter()
            .position(|x| *x == route)
            .unwrap_or(ROUTES.len() - 1);
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUSES.len());
        self.requests[r * (STATUSES.len() + 1) + s].fetch_add(1, Ordering::Relaxed);
        let b = BUCKETS_US
            .iter()
            .position(|le| micros <= *le)
            .unwrap_or(BUCKETS_US.len());
        self.latency[b].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a cache to the scrape, as `cache="name"`.
    pub fn watch_cache(&self, name: &'static str, counters: &Arc<CacheCounters>) {
        self.caches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, Arc::clone(counters)));
    }

    /// Requests answered for `route` with `status` so far.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        let Some(r) = ROUTES.iter().position(|x| *x == route) else {
            return 0;
        };
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUSES.len());
        self.requests[r * (STATUSES.len() + 1) + s].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition, with the gauges passed in.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP qyzar_requests_total Requests answered, by route and status.\n# TYPE qyzar_requests_total counter\n");
        for (ri, route) in ROUTES.iter().enumerate() {
            for si in 0..=STATUSES.len() {
                let n = self.requests[ri * (STATUSES.len() + 1) + si].load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(si)
                    .map_or_else(|| "other".to_owned(), |s| s.to_string());
                let _ = writeln!(
                    out,
                    "qyzar_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP qyzar_request_duration_seconds Time from routing to answer.\n# TYPE qyzar_request_duration_seconds histogram\n");
        let mut cum = 0;
        for (i, le) in BUCKETS_US.iter().enumerate() {
            cum += self.latency[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "qyzar_request_duration_seconds_bucket{{le=\"{}\"}} {cum}",
                *le as f64 / 1e6
            );
        }
        cum += self.latency[BUCKETS_US.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "qyzar_request_duration_seconds_bucket{{le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            out,
            "qyzar_request_duration_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "qyzar_request_duration_seconds_count {}",
            self.latency_count.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE qyzar_store_errors_total counter\nqyzar_store_errors_total {}",
            self.store_errors.load(Ordering::Relaxed)
        );
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        for (metric, help, read) in CACHE_SERIES {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
            for (name, c) in caches.iter() {
                let _ = writeln!(out, "{metric}{{cache=\"{name}\"}} {}", read(c));
            }
        }
        drop(caches);
        for (name, help, v) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_caches_are_rendered_by_name() {
        let m = Metrics::default();
        let c = Arc::new(CacheCounters::default());
        c.bytes.store(1234, Ordering::Relaxed);
        c.hit();
        c.hit();
        c.miss();
        c.budget_evictions.store(3, Ordering::Relaxed);
        c.replacements.store(5, Ordering::Relaxed);
        c.declined.store(7, Ordering::Relaxed);
        m.watch_cache("token", &c);
        let text = m.render(&[]);
        for line in [
            "qyzar_cache_bytes{cache=\"token\"} 1234",
            "qyzar_cache_hits{cache=\"token\"} 2",
            "qyzar_cache_misses{cache=\"token\"} 1",
            "qyzar_cache_evictions{cache=\"token\"} 0",
            "qyzar_cache_replacements{cache=\"token\"} 5",
            "qyzar_cache_budget_evictions{cache=\"token\"} 3",
            "qyzar_cache_declined{cache=\"token\"} 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
