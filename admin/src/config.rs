//! Admin configuration: defaults, overridden by `QYZAR_ADMIN_*` variables.

use std::net::SocketAddr;

/// Everything the admin binary needs to start.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Listener for the API and dashboard (`QYZAR_ADMIN_ADDR`, default
    /// `127.0.0.1:8081`).
    pub addr: SocketAddr,
    /// `postgres://…` or `sqlite:…` (`QYZAR_DATABASE_URL`, default an SQLite
    /// file under `.qyzar/`).
    pub database_url: String,
    /// Pool size for PostgreSQL (`QYZAR_DATABASE_MAX_CONNECTIONS`).
    pub max_connections: u32,
}

/// A configuration value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{var} is not valid: {reason}")]
pub struct ConfigError {
    /// The variable at fault.
    pub var: &'static str,
    /// Why.
    pub reason: String,
}

impl AdminConfig {
    /// Defaults overridden by the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let addr = std::env::var("QYZAR_ADMIN_ADDR")
            .unwrap_or_else(|_| "127.0.0.1:8081".into())
            .parse()
            .map_err(|e: std::net::AddrParseError| ConfigError {
                var: "QYZAR_ADMIN_ADDR",
                reason: e.to_string(),
            })?;
        let database_url = std::env::var("QYZAR_DATABASE_URL")
            .unwrap_or_else(|_| "sqlite:.qyzar/admin.sqlite?mode=rwc".into());
        let max_connections = match std::env::var("QYZAR_DATABASE_MAX_CONNECTIONS") {
            Ok(v) => v
                .parse()
                .map_err(|e: std::num::ParseIntError| ConfigError {
                    var: "QYZAR_DATABASE_MAX_CONNECTIONS",
                    reason: e.to_string(),
                })?,
            Err(_) => 16,
        };
        Ok(Self {
            addr,
            database_url,
            max_connections,
        })
    }
}

/// Opens the database (creating the SQLite folder when needed), binds the
/// listener and serves until `shutdown` resolves.
pub async fn start(
    config: AdminConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if let Some(path) = config.database_url.strip_prefix("sqlite:") {
        let file = path.split('?').next().unwrap_or(path);
        if let Some(dir) = std::path::Path::new(file)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)?;
        }
    }
    let db = crate::db::Db::connect(&config.database_url, config.max_connections).await?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!(addr = %config.addr, backend = ?db.backend(), "admin listening");
    crate::run(listener, crate::AppState { db }, shutdown).await?;
    Ok(())
}
