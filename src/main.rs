//! `qyzar`: one binary for every way of running Qyzar.
//!
//! - `qyzar dev` — engine (127.0.0.1:8080) and admin (127.0.0.1:8081) in one
//!   process on embedded defaults: no external server needed;
//! - `qyzar engine` — the engine alone (configured by `QYZAR_ENGINE_*`);
//! - `qyzar admin` — the admin alone (configured by `QYZAR_ADMIN_*`,
//!   `QYZAR_DATABASE_URL`);
//! - `qyzar demo-traffic` — realistic traffic for a running `qyzar dev`, so
//!   the dashboard has something to show.

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the engine's hot paths allocate
/// small request objects while the embedded store's writer allocates 4 KiB
/// pages, a mix glibc serves with frequent consolidation (BENCHMARKS.md,
/// "Anti-ATO v2").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: qyzar <dev|engine|admin|demo-traffic>\n\n  dev     engine and admin in one process on embedded defaults\n  engine  the engine alone (QYZAR_ENGINE_ADDR, ...)\n  admin   the admin alone (QYZAR_ADMIN_ADDR, QYZAR_DATABASE_URL, ...)\n  demo-traffic [--people N]\n          realistic traffic (people, a bot farm, credential stuffing)\n          for the running `qyzar dev`, so the dashboard has data\n";

fn main() -> ExitCode {
    qyzar_shared::process::disable_transparent_huge_pages();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.as_slice() {
        [c, rest @ ..] if c == "demo-traffic" => (c.as_str(), rest),
        [c] => (c.as_str(), &[][..]),
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if matches!(cmd, "-h" | "--help" | "help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    qyzar_shared::telemetry::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The embedded store's anti-ATO journal waits for a larger group
        // while the workers have work (`qyzar_store::workers`).
        .on_thread_park(qyzar_store::workers::parked)
        .on_thread_unpark(qyzar_store::workers::unparked)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qyzar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cmd {
            "dev" => qyzar::dev().await,
            "engine" => qyzar::engine().await,
            "admin" => qyzar::admin().await,
            "demo-traffic" => qyzar::demo::run(rest).await,
            other => Err(format!("unknown command `{other}`\n{USAGE}").into()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qyzar: {e}");
            ExitCode::FAILURE
        }
    }
}
