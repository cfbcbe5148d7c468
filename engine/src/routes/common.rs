//! Steps every secret-authenticated route shares: the served config, the
//! project, the secret, the session from body or cookies.

use std::sync::Arc;

use qyzar_shared::crypto::ct_eq;
use qyzar_shared::ids::ProjectId;
use qyzar_shared::snapshot::ProjectConfig;
use qyzar_shared::{ApiError, ErrorCode};

use crate::config_view::{LiveConfig, ProjectKeys};
use crate::request;
use crate::request::Headers;
use crate::sessions::{CacheStatus, CachedSession};
use crate::state::Engine;

/// The served configuration, or `503 not_configured`: no snapshot, no guess.
pub fn live(engine: &Engine, now_ms: i64) -> Result<Arc<LiveConfig>, ApiError> {
    engine
        .config
        .current(now_ms)
        .ok_or(ApiError::new(ErrorCode::NotConfigured))
}

/// Parses a project id from input; absent is `400`, malformed `422`.
pub fn project_id(raw: Option<&str>) -> Result<ProjectId, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::new(ErrorCode::MissingField).field("projectId"))?;
    ProjectId::parse(raw).map_err(|_| {
        ApiError::with_message(ErrorCode::InvalidField, "projectId is not a project id")
            .field("projectId")
    })
}

/// [`project_id`] without the allocation: the checked text, for hot paths
/// that pass the project on as `&str`.
pub fn project_ref(raw: Option<&str>) -> Result<&str, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::new(ErrorCode::MissingField).field("projectId"))?;
    ProjectId::check(raw).map_err(|_| {
        ApiError::with_message(ErrorCode::InvalidField, "projectId is not a project id")
            .field("projectId")
    })
}

/// The project, authenticated by its secret (constant-time on the hash).
/// Order: credentials present (401), project known (404), secret right (401).
/// `project` is a [`ProjectId`] or text already checked by [`project_ref`].
pub fn authorise<'a>(
    live: &'a LiveConfig,
    project: &(impl AsRef<str> + ?Sized),
    headers: &Headers<'_>,
    now_ms: i64,
) -> Result<(&'a ProjectConfig, &'a ProjectKeys), ApiError> {
    let secret =
        request::project_secret(headers).ok_or(ApiError::new(ErrorCode::MissingCredentials))?;
    let (cfg, keys) = live
        .project(project.as_ref())
        .ok_or(ApiError::new(ErrorCode::ProjectNotFound))?;
    let hash = sha256(secret.as_bytes());
    if !cfg.secret_matches(&hash, now_ms) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidCredentials,
            "the project secret is not valid",
        ));
    }
    Ok((cfg, keys))
}

/// How a browser route (`/connect`) is authenticated, which has no secret:
/// the request's `Origin` is one the project allows, and `origin_token` is
/// live and bound to that origin. The origin on success.
pub fn origin_authenticated<'h>(
    cfg: &ProjectConfig,
    headers: &'h Headers<'_>,
    origin_token: &str,
    now_ms: i64,
) -> Option<&'h str> {
    let origin = super::cors::origin(headers)?;
    if !cfg.settings.allowed_origins.iter().any(|o| o == origin) {
        return None;
    }
    let bound = cfg.origin_token(&sha256(origin_token.as_bytes()), now_ms)?;
    (bound.origin == origin).then_some(origin)
}

pub use qyzar_shared::crypto::sha256;

/// Session id and token from the body, else from the project's cookies.
pub fn session_credentials<'a>(
    cfg: &ProjectConfig,
    headers: &'a Headers<'_>,
    body_id: Option<&'a str>,
    body_token: Option<&'a str>,
) -> (Option<&'a str>, Option<&'a str>) {
    let id = body_id.or_else(|| request::cookie(headers, &cfg.settings.cookie_names.session_id));
    let token =
        body_token.or_else(|| request::cookie(headers, &cfg.settings.cookie_names.session_token));
    (id, token)
}

/// The outcome of checking a session presented by a customer backend.
pub enum SessionCheck {
    /// The session is live and the token matches.
    Valid(Arc<CachedSession>),
    /// Not valid, with the reason code of PRODUCT.md.
    Invalid(&'static str),
}

/// Checks `id` + `token` for `project`, reading through the cache.
/// Reasons in the order that leaks least: a caller without the right token
/// learns only `not_found`, `project_mismatch` or `token_mismatch`.
pub async fn check_session(
    engine: &Engine,
    cfg: &ProjectConfig,
    project: &(impl AsRef<str> + ?Sized),
    id: &str,
    token: Option<&str>,
    now_ms: i64,
) -> Result<(SessionCheck, CacheStatus), ApiError> {
    check(engine, cfg, project.as_ref(), id, Some(token), now_ms).await
}

/// The state of a session without proof of its token: for a client token
/// bound to it, whose signature already proves the token was shown at mint.
pub async fn session_state(
    engine: &Engine,
    cfg: &ProjectConfig,
    project: &(impl AsRef<str> + ?Sized),
    id: &str,
    now_ms: i64,
) -> Result<(SessionCheck, CacheStatus), ApiError> {
    check(engine, cfg, project.as_ref(), id, None, now_ms).await
}

/// No allocation when the session is in memory. Text that is not a session
/// id is `not_found` (the cache never asks the store about it).
async fn check(
    engine: &Engine,
    cfg: &ProjectConfig,
    project: &str,
    id: &str,
    token: Option<Option<&str>>,
    now_ms: i64,
) -> Result<(SessionCheck, CacheStatus), ApiError> {
    let (found, status) = engine
        .sessions
        .lookup(project, id, now_ms)
        .await
        .map_err(|e| {
            engine
                .metrics
                .store_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %e, "session read failed");
            ApiError::new(ErrorCode::StoreUnavailable)
        })?;
    let Some(s) = found else {
        return Ok((SessionCheck::Invalid("not_found"), status));
    };
    if s.project_id() != project {
        return Ok((SessionCheck::Invalid("project_mismatch"), status));
    }
    if let Some(token) = token {
        let presented = sha256(token.unwrap_or("").as_bytes());
        if token.is_none() || !ct_eq(&presented, &s.token_hash) {
            return Ok((SessionCheck::Invalid("token_mismatch"), status));
        }
    }
    if s.revoked {
        return Ok((SessionCheck::Invalid("revoked"), status));
    }
    if cfg.is_device_opted_out(s.device_id()) {
        return Ok((SessionCheck::Invalid("opted_out"), status));
    }
    if s.expires_at <= now_ms {
        return Ok((SessionCheck::Invalid("expired"), status));
    }
    Ok((SessionCheck::Valid(s), status))
}
