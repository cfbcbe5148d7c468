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

use crate::args::CompareArgs;
use crate::load::{self, LoadSpec};
use crate::plan::{Plan, Target};
use crate::report::{self, median, round2, Pacing, RunReport};

/// The baseline child; killed and reaped when dropped, so no server
/// outlives the comparison, even on an error path.
struct BaselineChild(Child);

impl Drop for BaselineChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `qyzar-loadtest baseline --port 0` and reads the URL it prints.
fn spawn_baseline(pin: Option<&str>) -> Result<(String, BaselineChild), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let child = crate::pin::command(&exe, pin)?
        .args(["baseline", "--port", "0"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the baseline: {e}"))?;
    let mut child = BaselineChild(child);
    let stdout = child.0.stdout.take().ok_or("the baseline has no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading the baseline's address: {e}"))?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("the baseline did not start (said `{}`)", line.trim()))?
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
            let (u, c) = spawn_baseline(a.pin_server.as_deref())?;
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
    let spec = |label: &str, pacing| LoadSpec {
        label: label.to_owned(),
        connections: a.load.connections,
        duration: a.load.duration,
        warmup: a.load.warmup,
        pacing,
        progress: !a.common.quiet,
    };

    println!(
        "compare {} against the baseline {} ({} rounds, {} connections, {:.1}s + {:.1}s warm-up each)",
        route.target.url(),
        base.target.url(),
        a.rounds,
        a.load.connections,
        a.load.duration.as_secs_f64(),
        a.load.warmup.as_secs_f64()
    );
    let max = phase(&a, &base, &route, |l| spec(l, Pacing::Closed)).await?;
    let (max_base, max_route) = max.medians(RunReport::throughput);
    let rate = (max_base / 2.0).max(1.0);
    let fixed = phase(&a, &base, &route, |l| spec(l, Pacing::Open { rate })).await?;
    let (p99_base, p99_route) = fixed.medians(|r| r.latency().p99 as f64);
    let (tput_base, tput_route) = fixed.medians(RunReport::throughput);

    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>8}",
        "medians", "baseline", "route", "ratio"
    );
    println!(
        "{:<28} {max_base:>10.0} {max_route:>10.0} {:>8.3}",
        "max throughput (req/s)",
        max_route / max_base
    );
    println!(
        "{:<28} {p99_base:>10.0} {p99_route:>10.0} {:>8.3}",
        format!("p99 at {rate:.0} req/s (µs)"),
        p99_route / p99_base
    );
    println!(
        "{:<28} {tput_base:>10.0} {tput_route:>10.0}",
        "achieved at that rate"
    );
    if let Some(path) = &a.json {
        let v = json!({
            "route": route.target.url(),
            "baseline": base.target.url(),
            "rounds": a.rounds,
            "connections": a.load.connections,
            "duration_s": a.load.duration.as_secs_f64(),
            "warmup_s": a.load.warmup.as_secs_f64(),
            "max_throughput": max.json(max_base, max_route, "median req/s, closed loop"),
            "fixed_rate": {
                "rate": round2(rate),
                "p99_us": fixed.json(p99_base, p99_route, "median p99 µs, open loop"),
            },
        });
        crate::write_json(path, &v)?;
    }
    Ok(())
}

/// `rounds` × (baseline, route) with the spec `mk` makes for a label.
async fn phase(
    a: &CompareArgs,
    base: &Arc<Plan>,
    route: &Arc<Plan>,
    mk: impl Fn(&str) -> LoadSpec,
) -> Result<Phase, String> {
    let mut p = Phase {
        baseline: Vec::new(),
        route: Vec::new(),
    };
    println!("  {:<24} {}", "", report::latency_header(20));
    for round in 1..=a.rounds {
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
