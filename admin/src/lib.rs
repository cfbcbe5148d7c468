//! The Qyzar admin: the control plane behind the dashboard.
//!
//! An axum service over sqlx (PostgreSQL in production, SQLite as the
//! embedded default). It owns accounts, projects, settings and secrets, and
//! pushes every configuration change to the engines. The binary and the tests
//! start it the same way: [`run`] with a bound listener and a shutdown future.

pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod routes;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use qyzar_shared::crypto::SecretBox;
use tokio::net::TcpListener;

/// Largest request body any admin route accepts.
pub const MAX_BODY: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The control-plane database.
    pub db: db::Db,
    /// Configuration.
    pub config: Arc<config::AdminConfig>,
    /// Seals secrets at rest (project secrets, TOTP seeds) under the master key.
    pub secrets: Arc<SecretBox>,
}

impl AppState {
    /// Opens the database (creating an SQLite folder when needed) and the
    /// master key, and builds the state.
    pub async fn open(config: config::AdminConfig) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(path) = config.database_url.strip_prefix("sqlite:") {
            let file = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
        }
        let db = db::Db::connect(&config.database_url, config.max_connections).await?;
        let key = config::master_key(&config)?;
        Ok(Self { db, secrets: Arc::new(SecretBox::new(&key)), config: Arc::new(config) })
    }
}

/// The admin's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ping", axum::routing::get(routes::ping::handle))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the admin on `listener` until `shutdown` resolves, then drains.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
