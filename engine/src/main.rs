//! `qyzar-engine`: the engine alone. Thin: telemetry, config, run.

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    qyzar_shared::process::disable_transparent_huge_pages();
    qyzar_shared::telemetry::init();
    let config = qyzar_engine::config::EngineConfig::from_env()?;
    // The park hooks tell the embedded store's anti-ATO journal when the
    // workers have run out of work, so it commits larger groups while they
    // have not (`qyzar_store::workers`).
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(qyzar_store::workers::parked)
        .on_thread_unpark(qyzar_store::workers::unparked)
        .build()?
        .block_on(qyzar_engine::config::start(
            config,
            qyzar_shared::telemetry::ctrl_c(),
        ))
}
