//! `POST /origin-tokens/invalidate {token}`: revokes an origin token.
//!
//! parse → authorise (the token's project belongs to the caller; an
//! unknown token and another account's token are the same `404`) → decide
//! (mark it invalidated, rebuild and push: engines refuse it at `/connect`
//! within the push latency) → answer `204`. Invalidating twice is harmless.

use axum::extract::State;
use axum::http::StatusCode;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Deserialize;

use crate::auth::CurrentUser;
use crate::error::AdminResult;
use crate::extract::ApiJson;
use crate::{projects, push, AppState};

/// The request body.
#[derive(Deserialize)]
pub struct Input {
    token: String,
}

/// Invalidates an origin token.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<StatusCode> {
    let now = qyzar_shared::time::now_ms();
    let hash = projects::hex(&projects::sha256(input.token.trim().as_bytes()));
    // authorise + decide in one statement: only the owner's token matches.
    let changed = sqlx::query(
        "UPDATE origin_tokens SET invalidated_at = $1 \
         WHERE token_hash = $2 AND invalidated_at IS NULL \
         AND project_id IN (SELECT id FROM projects WHERE owner_id = $3)",
    )
    .bind(now)
    .bind(&hash)
    .bind(&user.user_id)
    .execute(state.db.pool())
    .await?
    .rows_affected();
    if changed == 0 {
        let owned = sqlx::query(
            "SELECT 1 FROM origin_tokens WHERE token_hash = $1 AND project_id IN (SELECT id FROM projects WHERE owner_id = $2)",
        )
        .bind(&hash)
        .bind(&user.user_id)
        .fetch_optional(state.db.pool())
        .await?;
        if owned.is_none() {
            return Err(
                ApiError::with_message(ErrorCode::NotFound, "no such origin token")
                    .field("token")
                    .into(),
            );
        }
        return Ok(StatusCode::NO_CONTENT);
    }
    push::after_change(&state).await;
    Ok(StatusCode::NO_CONTENT)
}
