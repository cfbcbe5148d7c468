//! `POST /auth/2fa/create`: starts a TOTP enrolment for the signed-in user.

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::now_ms;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Serialize;

use crate::auth::{tokens, totp, CurrentUser};
use crate::error::AdminResult;
use crate::AppState;

/// The answer: everything the user must copy now; none of it is shown again.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrolment {
    /// The TOTP seed, base32 (for typing into an app).
    secret: String,
    /// The `otpauth://totp/…` URI (for a QR code).
    otpauth_uri: String,
    /// Ten single-use recovery codes for when the phone is gone.
    recovery_codes: Vec<String>,
}

/// `200 {secret, otpauthUri, recoveryCodes}`. The enrolment is **pending**
/// (sign-in does not ask for a code) until `POST /auth/2fa/verify {code}`
/// proves the app holds the seed; calling this again while pending replaces
/// seed and codes. `409 conflict` when two-factor authentication is already
/// on: replacing it would let a stolen dashboard token take over the second
/// factor. `401` without a valid dashboard token.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
) -> AdminResult<Json<Enrolment>> {
    let seed = totp::new_seed();
    let codes = totp::new_recovery_codes();
    let now = now_ms();

    let mut tx = state.db.pool().begin().await?;
    sqlx::query("DELETE FROM user_totp WHERE user_id = $1 AND confirmed_at IS NULL")
        .bind(&user.user_id)
        .execute(&mut *tx)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO user_totp (user_id, seed_sealed, created_at) VALUES ($1, $2, $3) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(&user.user_id)
    .bind(totp::seal(&state.secrets, &user.user_id, &seed))
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "two-factor authentication is already on",
        )
        .into());
    }
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(&user.user_id)
        .execute(&mut *tx)
        .await?;
    for code in &codes {
        let normalised = totp::normalise_recovery_code(code).unwrap_or_default();
        sqlx::query(
            "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&user.user_id)
        .bind(tokens::hash(&normalised))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let secret = totp::base32(&seed);
    Ok(Json(Enrolment {
        otpauth_uri: totp::otpauth_uri(&user.email, &secret),
        secret,
        recovery_codes: codes,
    }))
}
