//! Turning histograms into numbers: percentiles, throughput, the JSON report
//! and the human table.
//!
//! Latencies are recorded in microseconds in HDR histograms with 3
//! significant digits (at most 0.1 % error at any magnitude, 1 µs resolution
//! below 2 ms) from 1 µs to one hour.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Highest latency a histogram holds (one hour, in µs); longer ones are
/// clamped to it rather than lost.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A fresh latency histogram.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// The percentiles a report carries, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// Largest recorded.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Reads the percentiles off `h`; all zero when it is empty.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                p50: 0,
                p90: 0,
                p99: 0,
                p99_9: 0,
                max: 0,
                mean: 0.0,
            };
        }
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "p50": self.p50, "p90": self.p90, "p99": self.p99,
            "p99_9": self.p99_9, "max": self.max, "mean": round2(self.mean),
        })
    }
}

/// How the requests were paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Each connection sends its next request when the previous answers.
    Closed,
    /// Closed loop at `rate` requests/s overall; latency from the actual
    /// send, corrected with the expected interval.
    ClosedPaced {
        /// Requests per second, all connections together.
        rate: f64,
    },
    /// Requests scheduled at `rate`/s regardless of answers; latency from
    /// the intended send time.
    Open {
        /// Requests per second.
        rate: f64,
    },
}

impl Pacing {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Pacing::Closed => "closed",
            Pacing::ClosedPaced { .. } => "closed-paced",
            Pacing::Open { .. } => "open",
        }
    }

    /// The target rate, if paced.
    pub fn rate(self) -> Option<f64> {
        match self {
            Pacing::Closed => None,
            Pacing::ClosedPaced { rate } | Pacing::Open { rate } => Some(rate),
        }
    }
}

/// Counts and latencies of one request entry (or of all of them).
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latencies of answered requests.
    pub latency: Histogram<u64>,
    /// Answers by status code, plus `io` for transport failures.
    pub status: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            latency: histogram(),
            status: BTreeMap::new(),
        }
    }
}

impl Tally {
    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &Tally) {
        self.latency
            .add(&other.latency)
            .expect("histograms of equal bounds always add");
        for (k, v) in &other.status {
            *self.status.entry(k.clone()).or_default() += v;
        }
    }

    /// Requests that got an answer or failed (synthetic correction samples
    /// are not requests and are not counted).
    pub fn requests(&self) -> u64 {
        self.status.values().sum()
    }

    /// Requests that got an HTTP answer, whatever its status.
    pub fn answered(&self) -> u64 {
        self.status
            .iter()
            .filter(|(k, _)| k.bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, v)| v)
            .sum()
    }

    /// Transport failures and answers outside 2xx/3xx.
    pub fn errors(&self) -> u64 {
        self.status
            .iter()
            .filter(|(k, _)| !(k.starts_with('2') || k.starts_with('3')))
            .map(|(_, v)| v)
            .sum()
    }
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Label (`route`, `baseline`, or the URL).
    pub label: String,
    /// Base URL loaded.
    pub target: String,
    /// How requests were paced.
    pub pacing: Pacing,
    /// Connections used.
    pub connections: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Everything together.
    pub total: Tally,
    /// CPU time the server's process ran over the measured time, when its
    /// process was known (`compare`'s and `engine-compare`'s own children).
    pub server_cpu: Option<Duration>,
    /// Per request entry, by name, when the plan has several.
    pub entries: Vec<(String, Tally)>,
}

impl RunReport {
    /// Answers per second over the measured time (transport failures are
    /// not throughput).
    pub fn throughput(&self) -> f64 {
        self.total.answered() as f64 / self.duration.as_secs_f64()
    }

    /// Microseconds of the server's CPU per answer over the measured time.
    pub fn cpu_us_per_answer(&self) -> Option<f64> {
        let answered = self.total.answered();
        self.server_cpu
            .filter(|_| answered > 0)
            .map(|c| c.as_secs_f64() * 1e6 / answered as f64)
    }

    /// The percentiles of all requests.
    pub fn latency(&self) -> Latency {
        Latency::of(&self.total.latency)
    }

    /// The JSON report.
    pub fn json(&self) -> Value {
        let tally = |t: &Tally| {
            json!({
                "requests": t.requests(),
                "answered": t.answered(),
                "errors": t.errors(),
                "status": t.status,
                "latency_us": Latency::of(&t.latency).json(),
            })
        };
        let mut v = tally(&self.total);
        let extra = json!({
            "label": self.label,
            "target": self.target,
            "mode": self.pacing.name(),
            "rate": self.pacing.rate(),
            "connections": self.connections,
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "throughput_rps": round2(self.throughput()),
            "server_cpu_us_per_answer": self.cpu_us_per_answer().map(round2),
            "entries": self.entries.iter().map(|(name, t)| {
                let mut e = tally(t);
                e["name"] = json!(name);
                e
            }).collect::<Vec<_>>(),
        });
        if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
            v.extend(extra);
        }
        v
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let rate = self
            .pacing
            .rate()
            .map_or_else(String::new, |r| format!(" at {r:.0} req/s"));
        let _ = writeln!(
            s,
            "{} ({}{rate}, {} connections, {:.1}s after {:.1}s warm-up)",
            self.target,
            self.pacing.name(),
            self.connections,
            self.duration.as_secs_f64(),
            self.warmup.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "  requests {}  throughput {:.0} req/s  errors {}  status {}",
            self.total.requests(),
            self.throughput(),
            self.total.errors(),
            status_line(&self.total.status)
        );
        let width = self
            .entries
            .iter()
            .map(|(name, _)| name.chars().count())
            .fold(20, usize::max);
        let _ = writeln!(s, "  {}", latency_header(width));
        let _ = writeln!(s, "  {}", latency_row(width, "all", &self.latency()));
        if self.entries.len() > 1 {
            for (name, t) in &self.entries {
                let _ = writeln!(
                    s,
                    "  {}",
                    latency_row(width, name, &Latency::of(&t.latency))
                );
            }
        }
        s
    }
}

/// Column titles of [`latency_row`], the first column `width` wide.
pub fn latency_header(width: usize) -> String {
    format!(
        "{:<width$} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "latency µs", "p50", "p90", "p99", "p99.9", "max", "mean"
    )
}

/// One line of percentiles under [`latency_header`].
pub fn latency_row(width: usize, name: &str, l: &Latency) -> String {
    format!(
        "{name:<width$} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8.1}",
        l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
    )
}

fn status_line(status: &BTreeMap<String, u64>) -> String {
    if status.is_empty() {
        return "-".into();
    }
    status
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The median; the mean of the middle two for an even count, `NaN` for none.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Two decimals, for tidy JSON.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_give_known_percentiles() {
        let mut h = histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let l = Latency::of(&h);
        // Below 2048 three significant digits are exact.
        assert_eq!(
            (l.p50, l.p90, l.p99, l.p99_9, l.max),
            (500, 900, 990, 999, 1000)
        );
        assert!((l.mean - 500.5).abs() < 0.01);
    }

    #[test]
    fn large_values_stay_within_a_tenth_of_a_percent() {
        let mut h = histogram();
        h.record(1_234_567).unwrap();
        let p = Latency::of(&h).p50 as f64;
        assert!((p - 1_234_567.0).abs() / 1_234_567.0 < 0.001, "{p}");
    }

    #[test]
    fn correction_fills_in_what_a_stalled_closed_loop_did_not_send() {
        // A 1000 µs stall with requests expected every 100 µs hides nine
        // requests that would have waited 900, 800, …, 100 µs.
        let mut h = histogram();
        h.record_correct(1000, 100).unwrap();
        assert_eq!(h.len(), 10);
        assert_eq!(h.value_at_quantile(0.5), 500);
        assert_eq!(h.min(), 100);
    }

    #[test]
    fn tallies_merge_and_count_errors() {
        let mut a = Tally::default();
        a.latency.record(10).unwrap();
        a.status.insert("200".into(), 1);
        let mut b = Tally::default();
        b.latency.record(30).unwrap();
        b.status.insert("503".into(), 2);
        b.status.insert("io".into(), 1);
        b.status.insert("304".into(), 1);
        a.merge(&b);
        assert_eq!((a.requests(), a.answered(), a.errors()), (5, 4, 3));
        assert_eq!(a.latency.len(), 2);
        assert_eq!(Latency::of(&Tally::default().latency).p99, 0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn report_json_has_the_documented_fields() {
        let mut total = Tally::default();
        for v in [100, 200, 300] {
            total.latency.record(v).unwrap();
        }
        total.status.insert("200".into(), 3);
        let r = RunReport {
            label: "route".into(),
            target: "http://127.0.0.1:1".into(),
            pacing: Pacing::Open { rate: 100.0 },
            connections: 2,
            duration: Duration::from_secs(2),
            warmup: Duration::from_secs(1),
            total,
            server_cpu: Some(Duration::from_millis(3)),
            entries: Vec::new(),
        };
        let j = r.json();
        assert_eq!(j["mode"], "open");
        assert_eq!(j["rate"], 100.0);
        assert_eq!(j["requests"], 3);
        assert_eq!(j["throughput_rps"], 1.5);
        assert_eq!(j["server_cpu_us_per_answer"], 1000.0);
        assert_eq!(j["latency_us"]["p50"], 200);
        assert_eq!(j["latency_us"]["max"], 300);
        assert_eq!(j["status"]["200"], 3);
        assert!(r.table().contains("throughput 2 req/s"));
    }
}
