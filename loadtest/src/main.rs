//! `qyzar-loadtest`: parse the arguments, pin the process if asked, build the
//! runtime, run the command. Everything else lives in the library.

use std::process::ExitCode;

use qyzar_loadtest::args::{self, Command};

/// The allocator `qyzar` ships with: `engine-compare`'s child engine is
/// this binary, and should measure what users run.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    qyzar_shared::process::disable_transparent_huge_pages();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let command = match args::parse(&argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qyzar-loadtest: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    if let Command::Help = command {
        print!("{}", args::USAGE);
        return ExitCode::SUCCESS;
    }
    let common = command.common();
    // Before the runtime exists: threads started later inherit the affinity.
    if let Some(cpus) = &common.pin_client {
        if let Err(e) = qyzar_loadtest::pin::pin_self(cpus) {
            eprintln!("qyzar-loadtest: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The strict and durable baselines are current-thread servers (what it measures is
    // hyper on one thread, not a scheduler); everything else multi-thread.
    let mut rt = match &command {
        Command::Baseline(b) if b.kind != qyzar_loadtest::baseline::Kind::EngineLike => {
            tokio::runtime::Builder::new_current_thread()
        }
        _ => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = common.threads {
                rt.worker_threads(n);
            }
            // The engine child runs as `qyzar` does: its store's anti-ATO
            // journal learns when the workers run out of work
            // (`qyzar_store::workers`).
            if matches!(command, Command::EngineServe(_)) {
                rt.on_thread_park(qyzar_store::workers::parked)
                    .on_thread_unpark(qyzar_store::workers::unparked);
            }
            rt
        }
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qyzar-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(qyzar_loadtest::execute(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qyzar-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}
