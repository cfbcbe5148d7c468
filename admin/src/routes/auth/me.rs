//! `GET /auth/me`: the signed-in user's account.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use sqlx::Row as _;

use crate::auth::CurrentUser;
use crate::error::{AdminError, AdminResult};
use crate::AppState;

/// The answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    user_id: String,
    email: String,
    email_verified: bool,
    two_factor_enabled: bool,
    /// True when the account signs in with a password (not only through a
    /// future identity provider).
    password_auth: bool,
    created_at: String,
}

/// `200 {userId, email, emailVerified, twoFactorEnabled, passwordAuth,
/// createdAt}`; `401` without a valid dashboard token.
pub async fn handle(State(state): State<AppState>, user: CurrentUser) -> AdminResult<Json<Me>> {
    let row = sqlx::query(
        "SELECT CASE WHEN u.email_verified THEN 1 ELSE 0 END, u.password_hash, u.created_at, t.confirmed_at \
         FROM users u LEFT JOIN user_totp t ON t.user_id = u.id WHERE u.id = $1",
    )
    .bind(&user.user_id)
    .fetch_optional(state.db.pool())
    .await?
    // The token resolved a moment ago, so the user exists unless deleted meanwhile.
    .ok_or_else(|| AdminError::from(qyzar_shared::ErrorCode::InvalidCredentials))?;
    Ok(Json(Me {
        email_verified: crate::auth::flag(&row, 0)?,
        password_auth: row.try_get::<Option<String>, _>(1)?.is_some(),
        created_at: qyzar_shared::time::rfc3339(row.try_get(2)?),
        two_factor_enabled: row.try_get::<Option<i64>, _>(3)?.is_some(),
        user_id: user.user_id,
        email: user.email,
    }))
}
