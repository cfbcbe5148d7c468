//! `POST /auth/signout-all`: ends every session of the account.
//!
//! authorise (the dashboard token) → decide (every live dashboard token of
//! the account is revoked, this one included, and pending sign-in challenges
//! are spent) → answer. No body is read. What an owner does on suspecting a
//! stolen token; a password change or reset, and turning two-factor
//! authentication on, do the same for the other sessions.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::auth::{tokens, CurrentUser};
use crate::error::AdminResult;
use crate::AppState;

/// `200 {signedOut: true, revokedTokens: n}` (n counts this token too); `401`
/// without a valid dashboard token.
pub async fn handle(State(state): State<AppState>, user: CurrentUser) -> AdminResult<Json<Value>> {
    let mut tx = state.db.pool().begin().await?;
    let revoked = tokens::revoke_user_tokens(&mut tx, &user.user_id, None).await?;
    tokens::spend_challenges(&mut tx, &user.user_id).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.user_id, revoked, "signed out everywhere");
    Ok(Json(json!({ "signedOut": true, "revokedTokens": revoked })))
}
