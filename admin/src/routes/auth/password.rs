//! `PATCH /auth/password {currentPassword, newPassword}`: changes the
//! signed-in user's password.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{passwords, tokens, CurrentUser};
use crate::error::AdminResult;
use crate::extract::{ApiJson, Redacted};
use crate::throttle;
use crate::AppState;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    current_password: Redacted<String>,
    new_password: Redacted<String>,
}

/// `200 {passwordChanged: true}`: the password is replaced and every
/// **other** dashboard token of the user is revoked (this session stays
/// signed in), as are pending reset links and sign-in challenges. `422`
/// (field `newPassword`) for a new password outside 10–256 characters; `401
/// invalid_credentials` (field `currentPassword`) for a wrong current
/// password; `429` after 5 wrong current passwords in 15 minutes, so a stolen
/// dashboard token is no password oracle.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<Body>,
) -> AdminResult<Json<Value>> {
    passwords::check_policy(body.new_password.expose(), "newPassword")?;
    let hits = state
        .throttle
        .hit(&[(&throttle::REAUTH_PER_USER, user.user_id.as_str())])?;

    let stored: Option<String> =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
            .bind(&user.user_id)
            .fetch_optional(state.db.pool())
            .await?
            .flatten();
    let current = body.current_password.into_inner();
    let ok = current.chars().count() <= passwords::MAX_CHARS
        && passwords::verify(current, stored).await?;
    if !ok {
        return Err(super::invalid(
            "currentPassword",
            "the current password is not right",
        ));
    }
    let hash = passwords::hash(body.new_password.into_inner()).await?;

    let mut tx = state.db.pool().begin().await?;
    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(&user.user_id)
        .execute(&mut *tx)
        .await?;
    tokens::spend_password_bound_tokens(&mut tx, &user.user_id).await?;
    let revoked = tokens::revoke_user_tokens(&mut tx, &user.user_id, Some(&user.token_id)).await?;
    tx.commit().await?;
    state.throttle.forgive(hits);
    tracing::info!(user_id = %user.user_id, revoked, "password changed");
    Ok(Json(json!({ "passwordChanged": true })))
}
