//! `POST /origin-tokens {projectId, origin, ttlSeconds?}`: a token the
//! browser script presents to `/connect` from pages on `origin`.
//!
//! parse (`origin` a serialised web origin as browsers send it, checked by
//! `validate_origin`; `ttlSeconds` 60 s – 1 year, default 30 days) →
//! authorise (owner, else `404`; at most the plan's live tokens per project
//! ([`projects::snapshot_caps`]: free 20, pro 200, enterprise 1 000),
//! `422 quota_exceeded`; room in the snapshot budget, else
//! `409 config_budget_exceeded`) → decide (store the token's SHA-256,
//! rebuild and push) → answer `201 {token, projectId, origin, expiresAt}`.
//! The token is shown once. `/connect` also needs the origin in the
//! project's `allowedOrigins`; `originAllowed` in the answer says whether
//! it is there yet.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use qyzar_shared::crypto::random_token;
use qyzar_shared::settings::{validate_origin, ProjectSettings};
use qyzar_shared::time::rfc3339;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::auth::CurrentUser;
use crate::error::{AdminError, AdminResult};
use crate::extract::ApiJson;
use crate::{projects, push, AppState};

/// Lifetime when none is asked for.
pub const DEFAULT_TTL_SECONDS: i64 = 30 * 24 * 3600;
/// Shortest lifetime.
pub const MIN_TTL_SECONDS: i64 = 60;
/// Longest lifetime: a token sits in public pages, so it must expire.
pub const MAX_TTL_SECONDS: i64 = 365 * 24 * 3600;
/// Most live tokens per project on any plan: every live token travels in
/// every snapshot to every engine (each plan's own cap is in
/// [`projects::snapshot_caps`]).
pub const MAX_LIVE_TOKENS: i64 = 1_000;

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    project_id: String,
    origin: String,
    ttl_seconds: Option<i64>,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    token: String,
    project_id: String,
    origin: String,
    expires_at: String,
    origin_allowed: bool,
}

/// Creates an origin token.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<(StatusCode, Json<Output>)> {
    let now = qyzar_shared::time::now_ms();
    // parse
    validate_origin(&input.origin)
        .map_err(|why| ApiError::with_message(ErrorCode::InvalidField, why).field("origin"))?;
    let ttl = input.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "ttlSeconds must be between 60 and 31536000 (one year)",
        )
        .field("ttlSeconds")
        .into());
    }
    // authorise
    let project = projects::owned(state.db.pool(), &user.user_id, &input.project_id).await?;
    let live: i64 = sqlx::query("SELECT COUNT(*) FROM origin_tokens WHERE project_id = $1 AND invalidated_at IS NULL AND expires_at > $2")
        .bind(project.id.as_str())
        .bind(now)
        .fetch_one(state.db.pool())
        .await?
        .try_get(0)?;
    let plan = projects::owner_plan(state.db.pool(), &project.id).await?;
    let cap = projects::snapshot_caps(&plan).origin_tokens as i64;
    if live >= cap.min(MAX_LIVE_TOKENS) {
        return Err(ApiError::with_message(
            ErrorCode::QuotaExceeded,
            format!(
                "the {plan} plan allows {cap} live origin tokens per project; invalidate some or upgrade"
            ),
        )
        .into());
    }
    push::admit(&state, push::ORIGIN_TOKEN_BYTES)?;
    // decide
    let token = random_token(super::TOKEN_PREFIX, 24);
    let expires_at = now + ttl * 1000;
    sqlx::query(
        "INSERT INTO origin_tokens (token_hash, project_id, origin, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(projects::hex(&projects::sha256(token.as_bytes())))
    .bind(project.id.as_str())
    .bind(&input.origin)
    .bind(&user.user_id)
    .bind(now)
    .bind(expires_at)
    .execute(state.db.pool())
    .await?;
    push::after_change(&state).await;
    // answer
    let settings: ProjectSettings =
        serde_json::from_str(&project.settings_json).map_err(AdminError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(Output {
            token,
            project_id: project.id.to_string(),
            origin_allowed: settings.allowed_origins.contains(&input.origin),
            origin: input.origin,
            expires_at: rfc3339(expires_at),
        }),
    ))
}
