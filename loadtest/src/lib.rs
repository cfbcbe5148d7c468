//! `qyzar-loadtest`: a load generator for the engine's hot routes.
//!
//! - [`args`]: the command line, parsed by hand;
//! - [`plan`]: the target and the weighted requests (URL, built-in
//!   scenario, or mix file);
//! - [`load`]: the connection tasks, closed and open loop, coordinated
//!   omission handled (latency from the intended send time in open loop,
//!   `record_correct` in paced closed loop);
//! - [`report`]: HDR percentiles, the JSON report and the human table;
//! - [`baseline`]: the hello-world hyper server routes are compared with;
//! - [`compare`]: baseline and route interleaved, ratio of medians;
//! - [`engine`]: `engine-compare`, every hot engine route against the
//!   baseline on a generated world, with its own child engine;
//! - [`abuse`]: a victim tenant's traffic alone and under a hostile mix,
//!   on its own child engines: peak RSS, decisions, latency;
//! - [`pin`]: CPU pinning through `taskset`.
//!
//! BENCHMARKS.md at the workspace root has the commands and the numbers.

pub mod abuse;
pub mod args;
pub mod baseline;
pub mod compare;
pub mod cpu;
pub mod engine;
pub mod load;
pub mod pin;
pub mod plan;
pub mod raw;
pub mod report;

use std::path::Path;
use std::sync::Arc;

use args::{Command, LoadArgs, RunArgs};
use load::LoadSpec;
use plan::Plan;
use report::Pacing;

/// Runs a parsed command to completion.
pub async fn execute(command: Command) -> Result<(), String> {
    match command {
        Command::Run(a) => run(a).await,
        Command::Compare(a) => compare::compare(a).await,
        Command::Baseline(a) => {
            let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
                .await
                .map_err(|e| format!("cannot bind {}:{}: {e}", a.host, a.port))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            // `compare` reads this exact line from the child's stdout.
            println!("listening on http://{addr}");
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            baseline::serve(listener, a.kind, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
            Ok(())
        }
        Command::EngineCompare(a) => engine::engine_compare(a).await,
        Command::EngineServe(a) => engine::engine_serve(a).await,
        Command::Abuse(a) => abuse::abuse(a).await,
        Command::Help => {
            print!("{}", args::USAGE);
            Ok(())
        }
    }
}

/// How [`LoadArgs`] pace a run.
pub fn pacing(l: &LoadArgs) -> Pacing {
    match (l.rate, l.closed) {
        (None, _) => Pacing::Closed,
        (Some(rate), true) => Pacing::ClosedPaced { rate },
        (Some(rate), false) => Pacing::Open { rate },
    }
}

async fn run(a: RunArgs) -> Result<(), String> {
    let plan = Arc::new(Plan::from_args(&a.request)?);
    let status = load::probe(&plan).await?;
    if !(200..400).contains(&status) {
        eprintln!("warning: the first request was answered {status}");
    }
    let spec = LoadSpec {
        label: plan.target.authority.clone(),
        connections: a.load.connections,
        duration: a.load.duration,
        warmup: a.load.warmup,
        pacing: pacing(&a.load),
        progress: !a.common.quiet,
        server_pid: None,
    };
    let report = load::run(plan, &spec).await?;
    print!("{}", report.table());
    if let Some(path) = &a.json {
        write_json(path, &report.json())?;
    }
    Ok(())
}

/// Writes `v` pretty-printed to `path`.
pub fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}
