//! `compare`: the route against the hello-world baseline, interleaved.
//!
//! Two phases, each `rounds` × (baseline, route), alternating so that drift
//! on a shared machine (a build starting, thermal throttling) hits both
//! sides alike:
//! 1. closed loop at maximum throughput: the median requests/s of each side
//!    and their ratio (route ÷ baseline; 1.0 means the route costs nothing
//!    over a hello-world hyper server);
//! 2. open loop at a fixed rate of half the baseline's median maximum: the
//!    median p99 of each side, latency from the intended send time. Half of
//!    the maximum keeps the baseline well below saturation, so its p99 is the
//!    floor of what the machine and the generator can show.
//!
//! The baseline runs as a child process (this binary's `baseline` command)
//! rather than inside the generator: like the engine it then has its own
//! runtime and threads, and `--pin-server` can pin it with `taskset`.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::args::{CompareArgs, LoadArgs};
use crate::load::{self, LoadSpec};
use crate::plan::{Plan, Target};
use crate::report::{self, median, round2, Pacing, RunReport};

/// The baseline child; killed and reaped when dropped, so no server
/// outlives the comparison, even on an error path.
pub(crate) struct BaselineChild(pub(crate) Child);

impl Drop for BaselineChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `qyzar-loadtest baseline --port 0 --kind K` and reads the URL it
/// prints.
pub(crate) fn spawn_baseline(
    pin: Option<&str>,
    kind: crate::baseline::Kind,
) -> Result<(String, BaselineChild), String> {
    spawn_child(pin, &["baseline", "--port", "0", "--kind", kind.name()])
}

/// Starts this binary with `args` and reads the `listening on URL` line it
/// prints first.
pub(crate) fn spawn_child(
    pin: Option<&str>,
    args: &[&str],
) -> Result<(String, BaselineChild), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let child = crate::pin::command(&exe, pin)?
        .args(args)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", args.join(" ")))?;
    let mut child = BaselineChild(child);
    let stdout = child.0.stdout.take().ok_or("the baseline has no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading the baseline's address: {e}"))?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| {
            format!(
                "`{}` did not start (said `{}`)",
                args.join(" "),
                line.trim()
            )
        })?
        .to_owned();
    Ok((url, child))
}

/// Medians of one phase.
struct Phase {
    baseline: Vec<RunReport>,
    route: Vec<RunReport>,
}

impl Phase {
    fn medians(&self, f: impl Fn(&RunReport) -> f64) -> (f64, f64) {
        let of = |runs: &[RunReport]| median(&runs.iter().map(&f).collect::<Vec<_>>());
        (of(&self.baseline), of(&self.route))
    }

    fn json(&self, base: f64, route: f64, what: &str) -> Value {
        json!({
            "baseline": round2(base),
            "route": round2(route),
            "ratio": round2(route / base),
            "measure": what,
            "baseline_runs": self.baseline.iter().map(RunReport::json).collect::<Vec<_>>(),
            "route_runs": self.route.iter().map(RunReport::json).collect::<Vec<_>>(),
        })
    }
}

/// Runs the comparison and prints (and optionally writes) the report.
pub async fn compare(a: CompareArgs) -> Result<(), String> {
    let route = Arc::new(Plan::from_args(&a.request)?);
    let (base_url, _child) = match &a.baseline_url {
        Some(u) => (u.clone(), None),
        None => {
            let (u, c) = spawn_baseline(a.pin_server.as_deref(), a.baseline)?;
            (u, Some(c))
        }
    };
    let base = Arc::new(route.retarget(Target::parse(&base_url)?)?);
    for (side, plan) in [("route", &route), ("baseline", &base)] {
        let status = load::probe(plan).await?;
        if !(200..400).contains(&status) {
            eprintln!("warning: the {side} answers {status} to the first request");
        }
    }
    println!(
        "compare {} against the baseline {} ({} rounds, {} connections, {:.1}s + {:.1}s warm-up each)",
        route.target.url(),
        base.target.url(),
        a.rounds,
        a.load.connections,
        a.load.duration.as_secs_f64(),
        a.load.warmup.as_secs_f64()
    );
    let o = interleave(a.rounds, &a.load, a.common.quiet, &base, &route).await?;
    println!();
    print!("{}", o.table());
    if let Some(path) = &a.json {
        let v = json!({
            "route": route.target.url(),
            "baseline": base.target.url(),
            "baseline_kind": a.baseline.name(),
            "rounds": a.rounds,
            "connections": a.load.connections,
            "duration_s": a.load.duration.as_secs_f64(),
            "warmup_s": a.load.warmup.as_secs_f64(),
            "max_throughput": o.max_json,
            "fixed_rate": o.fixed_json,
        });
        crate::write_json(path, &v)?;
    }
    Ok(())
}

/// The medians of one interleaved comparison.
pub struct Outcome {
    /// Median closed-loop requests/s of the baseline.
    pub max_base: f64,
    /// Median closed-loop requests/s of the route.
    pub max_route: f64,
    /// The fixed rate of the second phase: half of `max_base`.
    pub rate: f64,
    /// Median p99 (µs) of the baseline at `rate`.
    pub p99_base: f64,
    /// Median p99 (µs) of the route at `rate`.
    pub p99_route: f64,
    /// Median achieved requests/s of the baseline at `rate`.
    pub tput_base: f64,
    /// Median achieved requests/s of the route at `rate`.
    pub tput_route: f64,
    /// Median non-2xx/3xx answers and transport errors per route run
    /// (closed loop).
    pub route_errors: f64,
    /// The closed-loop phase, every run included.
    pub max_json: Value,
    /// The fixed-rate phase, every run included.
    pub fixed_json: Value,
}

impl Outcome {
    /// Route ÷ baseline maximum throughput.
    pub fn ratio(&self) -> f64 {
        self.max_route / self.max_base
    }

    /// The human summary.
    pub fn table(&self) -> String {
        let rate = self.rate;
        format!(
            "{:<28} {:>10} {:>10} {:>8}\n\
             {:<28} {:>10.0} {:>10.0} {:>8.3}\n\
             {:<28} {:>10.0} {:>10.0} {:>8.3}\n\
             {:<28} {:>10.0} {:>10.0}\n",
            "medians",
            "baseline",
            "route",
            "ratio",
            "max throughput (req/s)",
            self.max_base,
            self.max_route,
            self.ratio(),
            format!("p99 at {rate:.0} req/s (µs)"),
            self.p99_base,
            self.p99_route,
            self.p99_route / self.p99_base,
            "achieved at that rate",
            self.tput_base,
            self.tput_route,
        )
    }
}

/// `rounds` × (baseline, route) at maximum throughput, then `rounds` ×
/// (baseline, route) open loop at half the baseline's median maximum.
pub async fn interleave(
    rounds: usize,
    load: &LoadArgs,
    quiet: bool,
    base: &Arc<Plan>,
    route: &Arc<Plan>,
) -> Result<Outcome, String> {
    let spec = |label: &str, pacing| LoadSpec {
        label: label.to_owned(),
        connections: load.connections,
        duration: load.duration,
        warmup: load.warmup,
        pacing,
        progress: !quiet,
    };
    let max = phase(rounds, base, route, |l| spec(l, Pacing::Closed)).await?;
    let (max_base, max_route) = max.medians(RunReport::throughput);
    let rate = (max_base / 2.0).max(1.0);
    let fixed = phase(rounds, base, route, |l| spec(l, Pacing::Open { rate })).await?;
    let (p99_base, p99_route) = fixed.medians(|r| r.latency().p99 as f64);
    let (tput_base, tput_route) = fixed.medians(RunReport::throughput);
    let (_, route_errors) = max.medians(|r| r.total.errors() as f64);
    Ok(Outcome {
        max_base,
        max_route,
        rate,
        p99_base,
        p99_route,
        tput_base,
        tput_route,
        route_errors,
        max_json: max.json(max_base, max_route, "median req/s, closed loop"),
        fixed_json: json!({
            "rate": round2(rate),
            "p99_us": fixed.json(p99_base, p99_route, "median p99 µs, open loop"),
        }),
    })
}

/// `rounds` × (baseline, route) with the spec `mk` makes for a label.
async fn phase(
    rounds: usize,
    base: &Arc<Plan>,
    route: &Arc<Plan>,
    mk: impl Fn(&str) -> LoadSpec,
) -> Result<Phase, String> {
    let mut p = Phase {
        baseline: Vec::new(),
        route: Vec::new(),
    };
    println!("  {:<24} {}", "", report::latency_header(20));
    for round in 1..=rounds {
        for (side, plan) in [("baseline", base), ("route", route)] {
            let r = load::run(Arc::clone(plan), &mk(side)).await?;
            println!(
                "  {:<24} {}",
                format!(
                    "{round} {:<8} {:>8.0}/s e{}",
                    side,
                    r.throughput(),
                    r.total.errors()
                ),
                report::latency_row(20, r.pacing.name(), &r.latency())
            );
            if side == "baseline" {
                p.baseline.push(r);
            } else {
                p.route.push(r);
            }
        }
    }
    Ok(p)
}
