//! `POST /auth/verify-email {token}`: proves the address with the mailed link.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::tokens::{self, Purpose};
use crate::error::AdminResult;
use crate::extract::{ApiJson, Redacted};
use crate::throttle::{self, ClientIp};
use crate::AppState;

/// The request body.
#[derive(Debug, Deserialize)]
pub struct Body {
    token: Redacted<String>,
}

/// `200 {emailVerified: true}` and the token is spent; `401
/// invalid_credentials` (field `token`) for an unknown, spent or expired
/// token; `429` after too many wrong tokens from one client.
pub async fn handle(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<Body>,
) -> AdminResult<Json<Value>> {
    let token = body.token.expose().as_str();
    super::check_token_len(token, "token")?;
    let ip = ip.key();
    let hits = state
        .throttle
        .hit(&throttle::with_ip(&ip, &throttle::TOKEN_PER_IP, Vec::new()))?;

    let mut tx = state.db.pool().begin().await?;
    let Some(user_id) = tokens::consume_single_use(&mut tx, Purpose::VerifyEmail, token).await?
    else {
        return Err(super::invalid(
            "token",
            "the link is not valid, already used or expired; ask for a new one",
        ));
    };
    sqlx::query("UPDATE users SET email_verified = $1 WHERE id = $2")
        .bind(true)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state.throttle.forgive(hits);
    tracing::info!(user_id = %user_id, "email verified");
    Ok(Json(json!({ "emailVerified": true })))
}
