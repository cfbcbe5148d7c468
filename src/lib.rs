//! The launcher behind the `qyzar` binary: which services to start and how
//! they share one shutdown signal.

use tokio::sync::watch;

pub mod demo;
pub mod dev;

/// Any startup error, with its message for the terminal.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Engine and admin in one process on embedded defaults. The admin pushes
/// configuration to the engine over the engine's internal port with a push
/// key made for this run, and the engine pulls and reports traffic with a
/// second, different key (one per direction), exactly as separate services
/// would; keys given in the environment are kept. The dev account
/// and project are seeded on first start (see [`dev`]). Ctrl-C (or SIGTERM)
/// stops both: each drains its connections, then the process exits.
pub async fn dev() -> Result<(), Error> {
    let mut engine_cfg = qyzar_engine::config::EngineConfig::from_env()?;
    // On a developer machine a local proxy (if any) is on loopback: trust
    // its forwarding headers unless told otherwise.
    if std::env::var_os("QYZAR_ENGINE_TRUSTED_PROXIES").is_none() {
        engine_cfg.state.trusted_proxies = qyzar_engine::client_addr::TrustedProxies::loopback();
    }
    let mut admin_cfg = qyzar_admin::config::AdminConfig::from_env()?;
    let push_key = match (&engine_cfg.push_key, &admin_cfg.push_key) {
        (Some(k), _) | (None, Some(k)) => k.clone(),
        (None, None) => qyzar_shared::crypto::random_token("qz_pk_", 32),
    };
    let report_key = match (&engine_cfg.report_key, &admin_cfg.report_key) {
        (Some(k), _) | (None, Some(k)) => k.clone(),
        (None, None) => qyzar_shared::crypto::random_token("qz_rk_", 32),
    };
    engine_cfg.push_key = Some(push_key.clone());
    admin_cfg.push_key = Some(push_key);
    engine_cfg.report_key = Some(report_key.clone());
    admin_cfg.report_key = Some(report_key);
    engine_cfg.validate()?;
    admin_cfg.validate()?;
    if admin_cfg.engine_urls.is_empty() {
        admin_cfg.engine_urls = vec![format!("http://{}", engine_cfg.internal_addr)];
    }
    if engine_cfg.admin_url.is_none() {
        engine_cfg.admin_url = Some(format!("http://{}", admin_cfg.addr));
    }
    let engine_url = format!("http://{}", engine_cfg.public_addr);
    // The dashboard's dry-run rate-limit check asks this engine; without it
    // that route could only answer 503.
    if admin_cfg.engine_public_url.is_none() {
        admin_cfg.engine_public_url = Some(engine_url.clone());
    }
    let admin_url = format!("http://{}", admin_cfg.addr);

    let (tx, rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(admin_cfg.addr).await?;
    let engine_public = tokio::net::TcpListener::bind(engine_cfg.public_addr).await?;
    let engine_internal = tokio::net::TcpListener::bind(engine_cfg.internal_addr).await?;
    // One store for both: the admin's dashboard reads what the engine writes.
    let store = qyzar_engine::config::open_store(&engine_cfg.store).await?;
    let mut state = qyzar_admin::AppState::open(admin_cfg).await?;
    state.data = Some(std::sync::Arc::clone(&store));
    let mut admin = tokio::spawn(qyzar_admin::run(listener, state.clone(), wait(rx.clone())));
    let mut engine = tokio::spawn(qyzar_engine::config::start_with_store(
        engine_cfg,
        store,
        engine_public,
        engine_internal,
        wait(rx),
    ));

    let project = dev::ensure(
        std::path::Path::new(".qyzar"),
        &state,
        &engine_url,
        &admin_url,
    )
    .await?;
    eprintln!(
        "qyzar dev: engine {} · admin {}\n  dashboard     {}/ui/\n  account       {} / {}\n  projectId     {}\n  projectSecret {}\n  originToken   {} (origin {})\n  mail outbox   {}\n  (all in .qyzar/dev.json)",
        project.engine_url,
        project.admin_url,
        project.admin_url.trim_end_matches('/'),
        project.email,
        project.password,
        project.project_id,
        project.project_secret,
        project.origin_token,
        project.origin,
        project.outbox_dir
    );

    // If one service fails (a port taken, say), stop the other too.
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
