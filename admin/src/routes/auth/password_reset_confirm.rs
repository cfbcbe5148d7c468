//! `POST /auth/password-reset-confirm {token, password}`: sets a new password
//! with the mailed reset link.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::notices::{self, Notice};
use crate::auth::passwords;
use crate::auth::tokens::{self, Purpose};
use crate::error::AdminResult;
use crate::extract::{ApiJson, Redacted};
use crate::throttle::{self, ClientIp};
use crate::AppState;

/// The request body.
#[derive(Debug, Deserialize)]
pub struct Body {
    token: Redacted<String>,
    password: Redacted<String>,
}

/// `200 {passwordChanged: true}`: the password is replaced, the token is
/// spent, **every** dashboard token of the user is revoked (whoever knew the
/// old password is signed out), other reset links and pending sign-in
/// challenges stop working, and the address counts as verified (the link
/// proved it). The owner is mailed a notice.
///
/// **Two-factor authentication stays on**, by design: the reset proves only
/// control of the inbox, and a second factor exists precisely so that one
/// stolen factor (a mailbox, a password) is not enough. Whoever lost both
/// phone and recovery codes signs in with the new password and a recovery
/// code if one is left, or goes through the operator (see README).
///
/// `422` for a password
/// outside 10–256 characters (checked first: a typo does not burn the link);
/// `401 invalid_credentials` (field `token`) for an unknown, spent or expired
/// token; `429` after too many wrong tokens from one client.
pub async fn handle(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<Body>,
) -> AdminResult<Json<Value>> {
    let token = body.token.expose().as_str();
    super::check_token_len(token, "token")?;
    passwords::check_policy(body.password.expose(), "password")?;
    let ip = ip.key();
    let hits = state
        .throttle
        .hit(&throttle::with_ip(&ip, &throttle::TOKEN_PER_IP, Vec::new()))?;
    let invalid = || {
        super::invalid(
            "token",
            "the link is not valid, already used or expired; ask for a new one",
        )
    };

    // Look before hashing, so junk tokens cost no argon2 work.
    let mut conn = state.db.pool().acquire().await?;
    if tokens::peek_single_use(&mut conn, Purpose::PasswordReset, token)
        .await?
        .is_none()
    {
        return Err(invalid());
    }
    drop(conn);
    let hash = passwords::hash(body.password.expose().clone()).await?;

    let mut tx = state.db.pool().begin().await?;
    let Some(user_id) = tokens::consume_single_use(&mut tx, Purpose::PasswordReset, token).await?
    else {
        return Err(invalid());
    };
    sqlx::query("UPDATE users SET password_hash = $1, email_verified = $2 WHERE id = $3")
        .bind(hash)
        .bind(true)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    tokens::spend_password_bound_tokens(&mut tx, &user_id).await?;
    let revoked = tokens::revoke_user_tokens(&mut tx, &user_id, None).await?;
    let email: Option<String> = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(&user_id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    state.throttle.forgive(hits);
    if let Some(email) = email {
        notices::send(&state, &email, Notice::PasswordReset);
    }
    tracing::info!(user_id = %user_id, revoked, "password reset");
    Ok(Json(json!({ "passwordChanged": true })))
}
