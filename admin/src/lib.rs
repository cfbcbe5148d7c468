//! The Qyzar admin: the control plane behind the dashboard.
//!
//! An axum service over sqlx (PostgreSQL in production, SQLite as the
//! embedded default). It owns accounts, projects, settings and secrets, and
//! pushes every configuration change to the engines. The binary and the tests
//! start it the same way: [`run`] with a bound listener and a shutdown future.

pub mod analytics;
pub mod auth;
pub mod billing;
pub mod clusters;
pub mod config;
pub mod db;
pub mod device_analytics;
pub mod engines;
pub mod error;
pub mod extract;
pub mod mail;
pub mod maintenance;
pub mod projects;
pub mod push;
pub mod routes;
pub mod server;
pub mod throttle;
pub mod ui;
pub mod usage;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use qyzar_shared::control::paths;
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
    /// Builds config snapshots and pushes them to the engines.
    pub pusher: push::Pusher,
    /// Sends account mail (SMTP, or the outbox folder).
    pub mailer: Arc<mail::Mailer>,
    /// Brute-force limits of the credential routes.
    pub throttle: Arc<throttle::Throttle>,
    /// The Stripe client (when `STRIPE_SECRET_KEY` is set).
    pub billing: billing::Billing,
    /// The engines' data-plane store, read-only here (devices, sessions,
    /// entropy snapshots for the dashboard): the engine's own store in
    /// `qyzar dev`, a CQL cluster when `QYZAR_ADMIN_CQL_NODES` is set,
    /// else none and those routes answer 503 `store_unavailable`.
    pub data: Option<Arc<dyn qyzar_store::DataStore>>,
    /// Every project's device clusters, recomputed in the background from
    /// [`AppState::data`] ([`clusters::Refresher`]).
    pub clusters: clusters::Refresher,
}

impl AppState {
    /// Opens the database (creating an SQLite folder when needed) and the
    /// master key, and builds the state.
    pub async fn open(
        config: config::AdminConfig,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(path) = config.database_url.strip_prefix("sqlite:") {
            let file = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(file)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)?;
            }
        }
        config.validate()?;
        if config.report_key.is_none() && config.push_key.is_some() {
            tracing::warn!("QYZAR_ADMIN_ENGINE_REPORT_KEY is not set: engines' pulls and traffic reports are accepted with the push key; set a separate key per direction");
        }
        let db = db::Db::connect(&config.database_url, config.max_connections).await?;
        let key = config::master_key(&config)?;
        let pusher = push::Pusher::from_config(&config)?;
        let mailer = Arc::new(mail::Mailer::from_config(&config)?);
        let throttle = Arc::new(throttle::Throttle::new());
        let billing = billing::Billing::from_config(&config)?;
        // Connects in the background: the admin starts while the cluster
        // is still coming up, and those routes answer 503 until it is.
        let data = config
            .data_cql
            .clone()
            .map(|cfg| -> Arc<dyn qyzar_store::DataStore> {
                qyzar_store::BackgroundStore::spawn(move || {
                    let cfg = cfg.clone();
                    async move {
                        let store = qyzar_store::ScyllaStore::connect(cfg).await?;
                        Ok(Arc::new(store) as Arc<dyn qyzar_store::DataStore>)
                    }
                })
            });
        let state = Self {
            db,
            secrets: Arc::new(SecretBox::new(&key)),
            config: Arc::new(config),
            pusher,
            mailer,
            throttle,
            billing,
            data,
            clusters: clusters::Refresher::default(),
        };
        // A first build at start: engines get this admin's view (and a
        // version above any before the restart) without waiting for a change.
        push::after_change(&state).await;
        Ok(state)
    }
}

/// The admin's routes: the JSON API and the dashboard (`/ui/…`, and `/`
/// redirecting there), which calls the API in process.
///
/// The shared error shape is applied once more around both: the dashboard's
/// pages are HTML and pass through it untouched, while an unknown path
/// outside `/ui/` still gets the API's `route_not_found` body.
pub fn router(state: AppState) -> Router {
    let api = api_router(state.clone());
    ui::router(state, api.clone())
        .merge(api)
        .layer(axum::middleware::map_response(shared_error_shape))
}

/// The JSON API (documented in `admin/openapi.yaml`).
fn api_router(state: AppState) -> Router {
    Router::new()
        .route("/ping", axum::routing::get(routes::ping::handle))
        .route("/auth/register", post(routes::auth::register::handle))
        .route(
            "/auth/verify-email",
            post(routes::auth::verify_email::handle),
        )
        .route(
            "/auth/verify-email/resend",
            post(routes::auth::verify_email_resend::handle),
        )
        .route("/auth/signin", post(routes::auth::signin::handle))
        .route(
            "/auth/2fa/create",
            post(routes::auth::two_factor_create::handle),
        )
        .route(
            "/auth/2fa/verify",
            post(routes::auth::two_factor_verify::handle),
        )
        .route(
            "/auth/2fa/recovery",
            post(routes::auth::two_factor_recovery::handle),
        )
        .route(
            "/auth/2fa/disable",
            post(routes::auth::two_factor_disable::handle),
        )
        .route("/auth/signout", post(routes::auth::signout::handle))
        .route("/auth/signout-all", post(routes::auth::signout_all::handle))
        .route(
            "/auth/password-reset-request",
            post(routes::auth::password_reset_request::handle),
        )
        .route(
            "/auth/password-reset-confirm",
            post(routes::auth::password_reset_confirm::handle),
        )
        .route(
            "/auth/password",
            axum::routing::patch(routes::auth::password::handle),
        )
        .route("/auth/me", get(routes::auth::me::handle))
        .route(
            "/projects",
            get(routes::projects::list::handle)
                .post(routes::projects::create::handle)
                .patch(routes::projects::rename::handle)
                .delete(routes::projects::delete::handle),
        )
        .route("/projects/detail", get(routes::projects::detail::handle))
        .route(
            "/projects/devices-data",
            get(routes::projects::devices_data::handle),
        )
        .route(
            "/projects/entropy-snapshot",
            get(routes::projects::entropy_snapshot::handle),
        )
        .route(
            "/projects/overview-stats",
            get(routes::projects::overview_stats::handle),
        )
        .route(
            "/projects/dashboard-summary",
            get(routes::projects::dashboard_summary::handle),
        )
        .route(
            "/projects/analytics",
            get(routes::projects::analytics::handle),
        )
        .route(
            "/projects/browser-data",
            get(routes::projects::browser_data::handle),
        )
        .route(
            "/projects/settings",
            get(routes::projects::settings_get::handle)
                .patch(routes::projects::settings_patch::handle),
        )
        .route(
            "/projects/secret/2fa",
            post(routes::projects::secret_2fa::handle),
        )
        .route(
            "/projects/secret/reveal",
            post(routes::projects::secret_reveal::handle),
        )
        .route(
            "/projects/extra-metadata",
            get(routes::projects::extra_metadata_get::handle)
                .patch(routes::projects::extra_metadata_patch::handle),
        )
        .route(
            "/projects/client/extra-metadata",
            get(routes::projects::client_extra_metadata_get::handle)
                .patch(routes::projects::client_extra_metadata_patch::handle),
        )
        .route(
            "/projects/rate-limit/check",
            post(routes::projects::rate_limit_check::handle),
        )
        .route(
            "/origin-tokens",
            post(routes::origin_tokens::create::handle),
        )
        .route(
            "/origin-tokens/invalidate",
            post(routes::origin_tokens::invalidate::handle),
        )
        .route(
            "/origin-tokens/status",
            get(routes::origin_tokens::status::handle),
        )
        .route(
            "/origin-tokens/verify",
            post(routes::origin_tokens::verify::handle),
        )
        .route("/opt-out/confirm", get(routes::opt_out::handle))
        .route("/test/captcha", post(routes::test_captcha::handle))
        .route(paths::SNAPSHOT, get(routes::internal_snapshot::handle))
        .route(paths::ENGINES, post(routes::internal_engines::handle))
        .route(
            paths::TRAFFIC,
            post(routes::internal_traffic::handle).layer(DefaultBodyLimit::max(
                routes::internal_traffic::MAX_TRAFFIC_BODY,
            )),
        )
        .route("/billing/plans", get(routes::billing::plans::handle))
        .route("/billing/status", get(routes::billing::status::handle))
        .route("/billing/checkout", post(routes::billing::checkout::handle))
        .route("/billing/portal", post(routes::billing::portal::handle))
        .route(
            "/billing/subscriptions",
            get(routes::billing::subscriptions::handle),
        )
        .route(
            "/billing/subscription",
            axum::routing::patch(routes::billing::subscription_update::handle),
        )
        .route(
            "/billing/subscription/cancel",
            post(routes::billing::subscription_cancel::handle),
        )
        .route(
            "/billing/subscription/resume",
            post(routes::billing::subscription_resume::handle),
        )
        .route(
            "/stripe/webhook",
            post(routes::stripe_webhook::handle).layer(DefaultBodyLimit::max(
                routes::stripe_webhook::MAX_WEBHOOK_BODY,
            )),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(shared_error_shape))
        .with_state(state)
}

/// Serves the admin on `listener` until `shutdown` resolves, then drains;
/// runs [`maintenance`] hourly meanwhile. The connection cap and timeouts
/// are [`config::AdminConfig::limits`] (see [`server`]).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let housekeeping = tokio::spawn(maintenance::run_forever(
        state.db.clone(),
        state.config.billing_log_retention_days,
    ));
    let clustering = tokio::spawn(refresh_clusters(state.clone()));
    let registry = tokio::spawn(engines::reconcile_forever(state.clone()));
    let limits = state.config.limits.clone();
    server::serve(listener, router(state), limits, shutdown).await;
    housekeeping.abort();
    clustering.abort();
    registry.abort();
    Ok(())
}

/// Recomputes the device clusters of every project that saw a device today,
/// every [`config::AdminConfig::cluster_refresh`]; forgets deleted projects. A project's
/// failure is logged and retried on the next pass.
async fn refresh_clusters(state: AppState) {
    let Some(store) = state.data.clone() else {
        return;
    };
    loop {
        let now = qyzar_shared::time::now_ms();
        let today = now.div_euclid(qyzar_store::DAY_MS);
        match sqlx::query_scalar::<_, String>("SELECT id FROM projects")
            .fetch_all(state.db.pool())
            .await
        {
            Ok(ids) => {
                let live: std::collections::HashSet<qyzar_shared::ids::ProjectId> = ids
                    .iter()
                    .filter_map(|id| qyzar_shared::ids::ProjectId::parse(id).ok())
                    .collect();
                state.clusters.retain(&live);
                for project in &live {
                    // A one-row probe: only projects active today are redone.
                    let active = store
                        .list_device_days(project, today, None, 1)
                        .await
                        .is_ok_and(|r| !r.is_empty());
                    if !active && state.clusters.get(project).is_some() {
                        continue;
                    }
                    if let Err(e) = state.clusters.refresh(&*store, project, now).await {
                        tracing::warn!(error = %e, project = %project, "clusters not refreshed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "clusters: projects not listed"),
        }
        tokio::time::sleep(state.config.cluster_refresh).await;
    }
}

/// Gives axum's own bodiless answers the shared error shape: an unknown
/// path (404 `route_not_found`) and a wrong method (405
/// `method_not_allowed`, keeping the `Allow` header axum computed).
async fn shared_error_shape(res: axum::response::Response) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    let code = match res.status() {
        StatusCode::NOT_FOUND => qyzar_shared::ErrorCode::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => qyzar_shared::ErrorCode::MethodNotAllowed,
        // axum's body limit answers 413 in plain text for routes that read
        // the raw body (e.g. `DELETE /projects`).
        StatusCode::PAYLOAD_TOO_LARGE => qyzar_shared::ErrorCode::PayloadTooLarge,
        _ => return res,
    };
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // JSON is already the shape; HTML is a dashboard page (its own 404).
    if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
        return res;
    }
    let (mut parts, _) = res.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = qyzar_shared::ApiError::new(code).to_json();
    axum::response::Response::from_parts(parts, axum::body::Body::from(body))
}
