//! `POST /auth/signin {email, password}`: the first step of a dashboard sign-in.

use axum::extract::State;
use axum::Json;
use qyzar_shared::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row as _;

use crate::auth::passwords;
use crate::auth::tokens::{self, Purpose};
use crate::error::AdminResult;
use crate::extract::{ApiJson, Redacted};
use crate::throttle::{self, ClientIp};
use crate::AppState;

/// The request body.
#[derive(Debug, Deserialize)]
pub struct Body {
    email: String,
    password: Redacted<String>,
}

/// - `200 {token, expiresAt}`: a dashboard token (`qz_dt_…`, 7 days).
/// - `200 {twoFactorRequired: true, challengeToken, expiresAt}` when TOTP is
///   on: the challenge (single use, 5 minutes) goes to `POST /auth/2fa/verify`
///   with a code, or to `POST /auth/2fa/recovery` with a recovery code.
/// - `401 invalid_credentials` for a wrong password **and** for an unknown
///   email, after the same argon2 work, so neither body nor timing tells them
///   apart.
/// - `403 email_not_verified` when the password is right but the address
///   is not verified yet (only someone who knows the password learns that).
/// - `422` for a malformed address; `429` with `Retry-After` while this
///   client owes a wait on this address (after 10 failures from it, or 1
///   once the address has 10 failures from anywhere in 15 minutes; the wait
///   starts at 5 s and doubles up to 15 minutes), or after 50 failures from
///   this client within 15 minutes. Successes do not count. A stranger's
///   failures never make the owner wait on another client's first try: see
///   [`crate::throttle::signin`].
pub async fn handle(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<Body>,
) -> AdminResult<Json<Value>> {
    let email = super::parse_email(&body.email)?;
    let ip = ip.key();
    let hits = state.throttle.hit(&throttle::with_ip(
        &ip,
        &throttle::SIGNIN_PER_IP,
        Vec::new(),
    ))?;
    let attempt = match state.throttle.signin_attempt(email.as_str(), ip.as_deref()) {
        Ok(a) => a,
        Err(wait) => {
            // A refused try checks nothing, so it costs the client nothing.
            state.throttle.forgive(hits);
            return Err(wait.into());
        }
    };

    let row = sqlx::query(&format!(
        "SELECT id, password_hash, {} FROM users WHERE email = $1",
        crate::auth::EMAIL_VERIFIED_AS_INT
    ))
    .bind(email.as_str())
    .fetch_optional(state.db.pool())
    .await?;
    let (user_id, stored, verified) = match row {
        Some(r) => (
            Some(r.try_get::<String, _>(0)?),
            r.try_get::<Option<String>, _>(1)?,
            crate::auth::flag(&r, 2)?,
        ),
        None => (None, None, false),
    };
    // Oversized passwords are wrong without hashing them (none can be set).
    let password = body.password.into_inner();
    let password_ok = password.chars().count() <= passwords::MAX_CHARS
        && passwords::verify(password, stored).await?;
    let Some(user_id) = user_id.filter(|_| password_ok) else {
        return Err(ErrorCode::InvalidCredentials.into());
    };
    state.throttle.forgive(hits);
    state.throttle.forgive_signin(attempt);
    if !verified {
        return Err(qyzar_shared::ApiError::with_message(
            ErrorCode::EmailNotVerified,
            "verify your email address first: open the link we mailed, or ask for a new one",
        )
        .into());
    }

    let two_factor: Option<i64> = sqlx::query_scalar(
        "SELECT confirmed_at FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL",
    )
    .bind(&user_id)
    .fetch_optional(state.db.pool())
    .await?;
    let mut conn = state.db.pool().acquire().await?;
    if two_factor.is_some() {
        let challenge =
            tokens::create_single_use(&mut conn, Purpose::SigninChallenge, &user_id).await?;
        return Ok(Json(json!({
            "twoFactorRequired": true,
            "challengeToken": challenge.token,
            "expiresAt": qyzar_shared::time::rfc3339(challenge.expires_at),
        })));
    }
    let issued = tokens::issue_dashboard_token(&mut conn, &user_id).await?;
    tracing::info!(user_id = %user_id, "signed in");
    Ok(Json(
        serde_json::to_value(super::SignedIn::from(issued))
            .map_err(crate::error::AdminError::internal)?,
    ))
}
