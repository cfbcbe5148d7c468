//! `POST /auth/2fa/create {password, code?, recoveryCode?}`: starts a TOTP
//! enrolment for the signed-in user.
//!
//! parse (the second factor's format) → authorise (dashboard token, then the
//! current password, then, when two-factor authentication is already on, a
//! current code or an unused recovery code, spent here) → decide (a fresh
//! pending seed and ten fresh recovery codes replace whatever was there) →
//! answer (the seed and codes, shown once). A bearer token alone never gets a
//! seed: see [`crate::auth::reauth`].

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::now_ms;
use serde::{Deserialize, Serialize};

use crate::auth::notices::{self, Notice};
use crate::auth::{reauth, tokens, totp, CurrentUser};
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

/// The answer: everything the user must copy now; none of it is shown again
/// (no `Debug`: it holds the seed).
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
/// seed and codes.
///
/// When two-factor authentication is already on, this **replaces** it (a
/// new phone, or after signing in with a recovery code): it needs `code` or
/// `recoveryCode` besides the password, the old seed and recovery codes stop
/// working at once, the account is back to "pending" until the new seed is
/// confirmed, and the owner is mailed a notice.
///
/// `401 invalid_credentials` naming `password` (wrong), `code` (missing
/// while two-factor authentication is on, wrong, or already used) or
/// `recoveryCode`; `422` for a code or recovery code that cannot be one;
/// `429` after 5 wrong passwords or 10 wrong codes in 15 minutes.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<Body>,
) -> AdminResult<Json<Enrolment>> {
    // parse
    let factor = reauth::parse_second_factor(body.code.as_ref(), body.recovery_code.as_ref())?;
    // authorise
    reauth::check_password(&state, &user, &body.password).await?;
    let mut tx = state.db.pool().begin().await?;
    let replacing = reauth::two_factor_on(&mut tx, &user.user_id).await?;
    if replacing {
        reauth::spend_second_factor(&mut tx, &state, &user.user_id, factor.as_ref()).await?;
    }
    // decide
    let seed = totp::new_seed();
    let codes = totp::new_recovery_codes();
    let now = now_ms();
    // One upsert (not delete + insert), so two concurrent calls cannot
    // collide on the primary key: the later one wins whole.
    sqlx::query(
        "INSERT INTO user_totp (user_id, seed_sealed, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET seed_sealed = excluded.seed_sealed, \
         confirmed_at = NULL, last_used_step = NULL, created_at = excluded.created_at",
    )
    .bind(&user.user_id)
    .bind(totp::seal(&state.secrets, &user.user_id, &seed))
    .bind(now)
    .execute(&mut *tx)
    .await?;
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
    if replacing {
        tokens::spend_challenges(&mut tx, &user.user_id).await?;
    }
    tx.commit().await?;
    if replacing {
        notices::send(&state, &user.email, Notice::TwoFactorReplaced);
        tracing::info!(user_id = %user.user_id, "two-factor authentication being replaced");
    }
    // answer
    let secret = totp::base32(&seed);
    Ok(Json(Enrolment {
        otpauth_uri: totp::otpauth_uri(&user.email, &secret),
        secret,
        recovery_codes: codes,
    }))
}
