//! The Qyzar admin: the control plane behind the dashboard.
//!
//! An axum service over sqlx (PostgreSQL in production, SQLite as the
//! embedded default). It owns accounts, projects, settings and secrets, and
//! pushes every configuration change to the engines. The binary and the tests
//! start it the same way: [`run`] with a bound listener and a shutdown future.

pub mod config;
pub mod db;
pub mod routes;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The control-plane database.
    pub db: db::Db,
}

/// The admin's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ping", axum::routing::get(routes::ping::handle))
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
