//! The launcher behind the `qyzar` binary: which services to start and how
//! they share one shutdown signal.

use tokio::sync::watch;

pub mod dev;

/// Any startup error, with its message for the terminal.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Engine and admin in one process on embedded defaults. Ctrl-C (or SIGTERM)
/// stops both: each drains its connections, then the process exits.
pub async fn dev() -> Result<(), Error> {
    let mut engine_cfg = qyzar_engine::config::EngineConfig::from_env()?;
    let admin_cfg = qyzar_admin::config::AdminConfig::from_env()?;
    let (project, snapshot) = dev::prepare(
        std::path::Path::new(".qyzar"),
        &format!("http://{}", engine_cfg.public_addr),
        &format!("http://{}", admin_cfg.addr),
    )?;
    if engine_cfg.snapshot_file.is_none() {
        engine_cfg.snapshot_file = Some(snapshot);
    }
    eprintln!(
        "qyzar dev: engine {} · admin {}\n  projectId     {}\n  projectSecret {}\n  originToken   {} (origin {})\n  (all in .qyzar/dev.json)",
        project.engine_url, project.admin_url, project.project_id, project.project_secret, project.origin_token, project.origin
    );
    let (tx, rx) = watch::channel(false);
    let mut engine = tokio::spawn(qyzar_engine::config::start(engine_cfg, wait(rx.clone())));
    let mut admin = tokio::spawn(qyzar_admin::config::start(admin_cfg, wait(rx)));
    // If one service fails to start (a port taken, say), stop the other too.
    let (mut engine_done, mut admin_done) = (None, None);
    tokio::select! {
        _ = qyzar_shared::telemetry::ctrl_c() => tracing::info!("shutting down"),
        r = &mut engine => engine_done = Some(r),
        r = &mut admin => admin_done = Some(r),
    }
    let _ = tx.send(true);
    let e = match engine_done {
        Some(r) => r,
        None => engine.await,
    };
    let a = match admin_done {
        Some(r) => r,
        None => admin.await,
    };
    e??;
    a??;
    Ok(())
}

/// The engine alone.
pub async fn engine() -> Result<(), Error> {
    let cfg = qyzar_engine::config::EngineConfig::from_env()?;
    qyzar_engine::config::start(cfg, qyzar_shared::telemetry::ctrl_c()).await
}

/// The admin alone.
pub async fn admin() -> Result<(), Error> {
    let cfg = qyzar_admin::config::AdminConfig::from_env()?;
    qyzar_admin::config::start(cfg, qyzar_shared::telemetry::ctrl_c()).await
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
