//! `qyzar-engine`: the engine alone. Thin: telemetry, config, run.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    qyzar_shared::process::disable_transparent_huge_pages();
    qyzar_shared::telemetry::init();
    let config = qyzar_engine::config::EngineConfig::from_env()?;
    qyzar_engine::config::start(config, qyzar_shared::telemetry::ctrl_c()).await
}
