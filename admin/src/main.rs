//! `qyzar-admin`: the admin alone. Thin: telemetry, config, run.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    qyzar_shared::telemetry::init();
    let config = qyzar_admin::config::AdminConfig::from_env()?;
    qyzar_admin::config::start(config, qyzar_shared::telemetry::ctrl_c()).await
}
