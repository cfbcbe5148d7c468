//! `POST /auth/2fa/disable {password, code | recoveryCode}`: turns two-factor
//! authentication off for the signed-in user.
//!
//! parse (exactly one second factor, well formed) → authorise (dashboard
//! token, current password, then the code or recovery code, spent here) →
//! decide (seed and recovery codes deleted, pending sign-in challenges spent,
//! a notice mailed) → answer `{twoFactorEnabled: false}`. Asking for both
//! factors means a stolen token, or a stolen password, cannot strip the
//! second factor; a lost phone is covered by a recovery code.

use axum::extract::State;
use axum::Json;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::notices::{self, Notice};
use crate::auth::{reauth, tokens, CurrentUser};
use crate::error::AdminResult;
use crate::extract::{ApiJson, Redacted};
use crate::AppState;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    password: Redacted<String>,
    code: Option<Redacted<String>>,
    recovery_code: Option<Redacted<String>>,
}

/// `200 {twoFactorEnabled: false}`. `409 conflict` when two-factor
/// authentication is not on (a pending enrolment is simply dropped by
/// calling `2fa/create` again or left unconfirmed); `401
/// invalid_credentials` naming `password`, `code` (missing, wrong or already
/// used) or `recoveryCode`; `422` for a code or recovery code that cannot be
/// one, or both given; `429` after 5 wrong passwords or 10 wrong codes in 15
/// minutes.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<Body>,
) -> AdminResult<Json<Value>> {
    // parse
    let factor = reauth::parse_second_factor(body.code.as_ref(), body.recovery_code.as_ref())?;
    // authorise
    reauth::check_password(&state, &user, &body.password).await?;
    let mut tx = state.db.pool().begin().await?;
    if !reauth::two_factor_on(&mut tx, &user.user_id).await? {
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "two-factor authentication is not on",
        )
        .into());
    }
    reauth::spend_second_factor(&mut tx, &state, &user.user_id, factor.as_ref()).await?;
    // decide
    sqlx::query("DELETE FROM user_totp WHERE user_id = $1")
        .bind(&user.user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(&user.user_id)
        .execute(&mut *tx)
        .await?;
    tokens::spend_challenges(&mut tx, &user.user_id).await?;
    tx.commit().await?;
    notices::send(&state, &user.email, Notice::TwoFactorOff);
    tracing::info!(user_id = %user.user_id, "two-factor authentication off");
    // answer
    Ok(Json(json!({ "twoFactorEnabled": false })))
}
