//! `compare`: the route against the hello-world baseline, interleaved.
//!
//! Two phases, each `rounds` × (baseline, route), alternating so that drift
//! on a shared machine (a build starting, thermal throttling) hits both
//! sides alike:
//! 1. closed loop at maximum throughput: the median requests/s of each side
//!    and the ratio (route ÷ baseline; 1.0 means the route costs nothing
//!    over a hello-world hyper server);
//! 2. open loop at a fixed rate of half the baseline's median maximum: the
//!    median p99 of each side, latency from the intended send time. Half of
//!    the maximum keeps the baseline well below saturation, so its p99 is the
//!    floor of what the machine and the generator can show.
//!
//! # Paired ratios, as the shared instrument takes them
//! The ratio is the median of the rounds' own ratios (each route run ÷ the
//! baseline run just before it), not the ratio of the two medians: that is
//! how `../shared/perf/ratio.py` computes it, and on a VM whose baseline
//! swings by a fifth between neighbouring 5 s runs the two estimators part.
//! A pair shares the machine's mood of those seconds; the medians of each
//! side pick their runs independently, so one slow baseline round and one
//! fast route round can make the headline. In a pass of 2026-12-05 the
//! cached-verify rounds read 0.797, 0.761 and 0.952 pairwise (median
//! 0.797) against a ratio of medians of 0.901. Both are reported; the
//! paired one is the headline. The p99 ratio of the fixed-rate phase is
//! paired the same way.
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

    /// The median over rounds of route ÷ baseline for `f`.
    fn paired(&self, f: impl Fn(&RunReport) -> f64) -> f64 {
        paired_median(
            &self.baseline.iter().map(&f).collect::<Vec<_>>(),
            &self.route.iter().map(&f).collect::<Vec<_>>(),
        )
    }

    fn json(&self, base: f64, route: f64, paired: f64, what: &str) -> Value {
        json!({
            "baseline": round2(base),
            "route": round2(route),
            "ratio": (paired * 1000.0).round() / 1000.0,
            "ratio_of_medians": (route / base * 1000.0).round() / 1000.0,
            "measure": what,
            "baseline_runs": self.baseline.iter().map(RunReport::json).collect::<Vec<_>>(),
            "route_runs": self.route.iter().map(RunReport::json).collect::<Vec<_>>(),
        })
    }
}

/// The median of the per-round ratios `route[i] / base[i]` (rounds with a
/// zero baseline are skipped); NaN without a complete pair.
pub fn paired_median(base: &[f64], route: &[f64]) -> f64 {
    let ratios: Vec<f64> = base
        .iter()
        .zip(route)
        .filter(|(b, _)| **b > 0.0)
        .map(|(b, r)| r / b)
        .collect();
    median(&ratios)
}

/// Runs the comparison and prints (and optionally writes) the report.
pub async fn compare(a: CompareArgs) -> Result<(), String> {
    let route = Arc::new(Plan::from_args(&a.request)?);
    let (base_url, baseline_child) = match &a.baseline_url {
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
    let servers = Servers {
        baseline: baseline_child.as_ref().map(|c| c.0.id()),
        route: None,
    };
    let o = interleave(a.rounds, &a.load, a.common.quiet, servers, &base, &route).await?;
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
            "server_cpu_us_per_answer": o.cpu_json(),
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
    /// Median over rounds of route ÷ baseline closed-loop requests/s: the
    /// headline ratio, taken as the shared instrument takes it.
    pub ratio_paired: f64,
    /// Median over rounds of route ÷ baseline p99 at `rate`.
    pub p99_ratio_paired: f64,
    /// Median achieved requests/s of the baseline at `rate`.
    pub tput_base: f64,
    /// Median achieved requests/s of the route at `rate`.
    pub tput_route: f64,
    /// Median non-2xx/3xx answers and transport errors per route run
    /// (closed loop).
    pub route_errors: f64,
    /// Median µs of the baseline's process CPU per answer, closed loop,
    /// when its process is known ([`crate::cpu`]).
    pub cpu_base: Option<f64>,
    /// The same for the route's server.
    pub cpu_route: Option<f64>,
    /// Median over rounds of route ÷ baseline CPU per answer.
    pub cpu_ratio_paired: Option<f64>,
    /// The closed-loop phase, every run included.
    pub max_json: Value,
    /// The fixed-rate phase, every run included.
    pub fixed_json: Value,
}

impl Outcome {
    /// Route ÷ baseline maximum throughput: the median of the rounds'
    /// own ratios (module docs).
    pub fn ratio(&self) -> f64 {
        self.ratio_paired
    }

    /// The median route requests/s ÷ the median baseline requests/s.
    pub fn ratio_of_medians(&self) -> f64 {
        self.max_route / self.max_base
    }

    /// The CPU-per-answer figures for the JSON reports (`null` where a
    /// side's process was not known).
    pub fn cpu_json(&self) -> Value {
        json!({
            "baseline": self.cpu_base.map(round2),
            "route": self.cpu_route.map(round2),
            "ratio": self.cpu_ratio_paired.map(|r| (r * 1000.0).round() / 1000.0),
            "measure": "median µs of the server process's CPU per answer, closed loop",
        })
    }

    /// The human summary.
    pub fn table(&self) -> String {
        let rate = self.rate;
        let cpu = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        let cpu_row = if self.cpu_base.is_some() || self.cpu_route.is_some() {
            format!(
                "{:<28} {:>10} {:>10} {:>8}\n",
                "server CPU per answer (µs)",
                cpu(self.cpu_base),
                cpu(self.cpu_route),
                self.cpu_ratio_paired
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.3}")),
            )
        } else {
            String::new()
        };
        let mut t = format!(
            "{:<28} {:>10} {:>10} {:>8} {:>8}\n\
             {:<28} {:>10.0} {:>10.0} {:>8.3} {:>8.3}\n\
             {:<28} {:>10.0} {:>10.0} {:>8.3} {:>8.3}\n\
             {:<28} {:>10.0} {:>10.0}\n",
            "medians",
            "baseline",
            "route",
            "paired",
            "÷medians",
            "max throughput (req/s)",
            self.max_base,
            self.max_route,
            self.ratio(),
            self.ratio_of_medians(),
            format!("p99 at {rate:.0} req/s (µs)"),
            self.p99_base,
            self.p99_route,
            self.p99_ratio_paired,
            self.p99_route / self.p99_base,
            "achieved at that rate",
            self.tput_base,
            self.tput_route,
        );
        t.push_str(&cpu_row);
        t
    }
}

/// The processes serving each side, when this binary started them: their
/// CPU per answer is then measured too.
#[derive(Debug, Clone, Copy, Default)]
pub struct Servers {
    /// The baseline's process.
    pub baseline: Option<u32>,
    /// The route's server's process.
    pub route: Option<u32>,
}

/// The load of one side's run (`label` is `baseline` or `route`), with the
/// process of that side's server when it is known.
fn side_spec(
    load: &LoadArgs,
    quiet: bool,
    servers: Servers,
    label: &str,
    pacing: Pacing,
) -> LoadSpec {
    LoadSpec {
        label: label.to_owned(),
        connections: load.connections,
        duration: load.duration,
        warmup: load.warmup,
        pacing,
        progress: !quiet,
        server_pid: if label == "baseline" {
            servers.baseline
        } else {
            servers.route
        },
    }
}

/// `rounds` × (baseline, route) at maximum throughput, then `rounds` ×
/// (baseline, route) open loop at half the baseline's median maximum.
pub async fn interleave(
    rounds: usize,
    load: &LoadArgs,
    quiet: bool,
    servers: Servers,
    base: &Arc<Plan>,
    route: &Arc<Plan>,
) -> Result<Outcome, String> {
    let spec = |label: &str, pacing| side_spec(load, quiet, servers, label, pacing);
    let max = phase(rounds, base, route, |l| spec(l, Pacing::Closed)).await?;
    let max_base = max.medians(RunReport::throughput).0;
    let rate = (max_base / 2.0).max(1.0);
    let fixed = phase(rounds, base, route, |l| spec(l, Pacing::Open { rate })).await?;
    Ok(outcome(&max, rate, &fixed))
}

/// `rounds` × (baseline, route) open loop at `rate` only: the tail at a
/// chosen rate, without the maximum-throughput rounds (and, for a route
/// slower than the baseline, the rounds it only queues) that
/// [`interleave`] runs before. Returns the median p99 of each side (µs)
/// and the JSON of the rounds.
pub async fn at_rate(
    rounds: usize,
    load: &LoadArgs,
    quiet: bool,
    servers: Servers,
    base: &Arc<Plan>,
    route: &Arc<Plan>,
    rate: f64,
) -> Result<(f64, f64, Value), String> {
    let spec = |label: &str| side_spec(load, quiet, servers, label, Pacing::Open { rate });
    let fixed = phase(rounds, base, route, spec).await?;
    let (p99_base, p99_route) = fixed.medians(|r| r.latency().p99 as f64);
    let paired = fixed.paired(|r| r.latency().p99 as f64);
    let json = fixed.json(p99_base, p99_route, paired, "median p99 µs, open loop");
    Ok((p99_base, p99_route, json))
}

/// The figures of a comparison from its two phases; `rate` is the fixed
/// phase's (half the baseline's median maximum).
fn outcome(max: &Phase, rate: f64, fixed: &Phase) -> Outcome {
    let (max_base, max_route) = max.medians(RunReport::throughput);
    let (p99_base, p99_route) = fixed.medians(|r| r.latency().p99 as f64);
    let ratio_paired = max.paired(RunReport::throughput);
    let p99_ratio_paired = fixed.paired(|r| r.latency().p99 as f64);
    let (tput_base, tput_route) = fixed.medians(RunReport::throughput);
    let (_, route_errors) = max.medians(|r| r.total.errors() as f64);
    // A side's CPU figure only when every one of its runs has one (its
    // process known, something answered): no median over a partial set.
    let cpu = |r: &RunReport| r.cpu_us_per_answer().unwrap_or(f64::NAN);
    let every = |runs: &[RunReport]| {
        !runs.is_empty() && runs.iter().all(|r| r.cpu_us_per_answer().is_some())
    };
    let (cpu_base, cpu_route) = max.medians(cpu);
    let cpu_base = every(&max.baseline).then_some(cpu_base);
    let cpu_route = every(&max.route).then_some(cpu_route);
    let cpu_ratio_paired = (cpu_base.is_some() && cpu_route.is_some())
        .then(|| max.paired(cpu))
        .filter(|r| r.is_finite());
    Outcome {
        max_base,
        max_route,
        rate,
        p99_base,
        p99_route,
        ratio_paired,
        p99_ratio_paired,
        tput_base,
        tput_route,
        route_errors,
        cpu_base,
        cpu_route,
        cpu_ratio_paired,
        max_json: max.json(
            max_base,
            max_route,
            ratio_paired,
            "median req/s, closed loop",
        ),
        fixed_json: json!({
            "rate": round2(rate),
            "p99_us": fixed.json(p99_base, p99_route, p99_ratio_paired, "median p99 µs, open loop"),
        }),
    }
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
                "  {:<24} {}{}",
                format!(
                    "{round} {:<8} {:>8.0}/s e{}",
                    side,
                    r.throughput(),
                    r.total.errors()
                ),
                report::latency_row(20, r.pacing.name(), &r.latency()),
                r.cpu_us_per_answer()
                    .map_or_else(String::new, |c| format!("  cpu {c:.2} µs/answer")),
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

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::{outcome, paired_median, Outcome, Phase};
    use crate::report::{median, Pacing, RunReport, Tally};

    /// A one-second run that answered `rps` requests, all with latency
    /// `p99_us` (so that is its p99).
    fn run(rps: u64, p99_us: u64) -> RunReport {
        let mut total = Tally::default();
        total.latency.record(p99_us).unwrap();
        total.status.insert("200".into(), rps);
        RunReport {
            label: "x".into(),
            target: "http://127.0.0.1:1".into(),
            pacing: Pacing::Closed,
            connections: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            total,
            server_cpu: None,
            entries: Vec::new(),
        }
    }

    /// One round: the baseline's and the route's `(requests/s, p99 µs)`.
    pub(crate) type Round = ((u64, u64), (u64, u64));

    /// An outcome from the rounds of both phases.
    pub(crate) fn outcome_of(max: &[Round], rate: f64, fixed: &[Round]) -> Outcome {
        let phase = |rounds: &[Round]| Phase {
            baseline: rounds.iter().map(|(b, _)| run(b.0, b.1)).collect(),
            route: rounds.iter().map(|(_, r)| run(r.0, r.1)).collect(),
        };
        outcome(&phase(max), rate, &phase(fixed))
    }

    /// CPU per answer is the median of each side's closed-loop runs, its
    /// ratio paired by round like the throughput's; a side whose process
    /// is unknown has none.
    #[test]
    fn cpu_per_answer_is_reported_when_both_servers_are_known() {
        let with_cpu = |rps: u64, cpu_ms: u64| {
            let mut r = run(rps, 100);
            r.server_cpu = Some(Duration::from_millis(cpu_ms));
            r
        };
        // Rounds: baseline 100 000 answers on 500 ms (5 µs each), route
        // 50 000 on 500 ms (10 µs); then 4 µs against 10 µs.
        let max = Phase {
            baseline: vec![with_cpu(100_000, 500), with_cpu(100_000, 400)],
            route: vec![with_cpu(50_000, 500), with_cpu(50_000, 500)],
        };
        let fixed = Phase {
            baseline: vec![run(50_000, 100), run(50_000, 100)],
            route: vec![run(50_000, 100), run(50_000, 100)],
        };
        let o = outcome(&max, 50_000.0, &fixed);
        assert_eq!(o.cpu_base, Some(4.5));
        assert_eq!(o.cpu_route, Some(10.0));
        // Per round 2.0 and 2.5: the median of the two.
        assert_eq!(o.cpu_ratio_paired, Some(2.25));
        assert!(
            o.table().contains("server CPU per answer (µs)"),
            "{}",
            o.table()
        );
        assert_eq!(o.cpu_json()["ratio"], 2.25);

        let mut unknown = max;
        unknown.route[1].server_cpu = None;
        let o = outcome(&unknown, 50_000.0, &fixed);
        assert_eq!((o.cpu_route, o.cpu_ratio_paired), (None, None));
        assert_eq!(o.cpu_base, Some(4.5));
    }

    /// The headline ratio, its JSON and the p99 ratio are the paired
    /// medians, not the ratios of the sides' medians (a pass's figures,
    /// where the two part by 0.1).
    #[test]
    fn the_outcome_reports_paired_ratios() {
        let o = outcome_of(
            &[
                ((133_682, 900), (106_548, 900)),
                ((114_662, 900), (87_279, 900)),
                ((108_481, 900), (103_268, 900)),
            ],
            57_000.0,
            &[
                ((57_000, 1_000), (57_000, 3_000)),
                ((57_000, 2_000), (57_000, 2_000)),
                ((57_000, 4_000), (57_000, 4_000)),
            ],
        );
        assert!(
            (o.ratio() - 106_548.0 / 133_682.0).abs() < 1e-9,
            "{}",
            o.ratio()
        );
        assert!((o.ratio_of_medians() - 103_268.0 / 114_662.0).abs() < 1e-9);
        assert_eq!(o.max_json["ratio"], 0.797);
        assert_eq!(o.max_json["ratio_of_medians"], 0.901);
        // Rounds' p99 ratios 3, 1, 1 → 1; the medians' ratio would be 1.5.
        assert!(
            (o.p99_ratio_paired - 1.0).abs() < 0.01,
            "{}",
            o.p99_ratio_paired
        );
        assert!((o.p99_route / o.p99_base - 1.5).abs() < 0.01);
    }

    /// The instrument's estimator: the median of the rounds' own ratios.
    /// A slow baseline round next to a fast route round moves the ratio of
    /// medians but not the paired one (the figures of a real pass).
    #[test]
    fn the_ratio_is_the_median_of_the_rounds_own_ratios() {
        let base = [133_682.0, 114_662.0, 108_481.0];
        let route = [106_548.0, 87_279.0, 103_268.0];
        let paired = paired_median(&base, &route);
        assert!((paired - 106_548.0 / 133_682.0).abs() < 1e-12, "{paired}");
        let of_medians = median(&route) / median(&base);
        assert!((of_medians - 103_268.0 / 114_662.0).abs() < 1e-12);
        assert!(of_medians - paired > 0.1);
        // Even round counts take the middle two; no pair, no ratio.
        assert!((paired_median(&[1.0, 1.0], &[0.5, 0.7]) - 0.6).abs() < 1e-12);
        assert!(paired_median(&[], &[]).is_nan());
        assert!(paired_median(&[0.0], &[5.0]).is_nan());
    }
}
