//! `POST /auth/signout`: ends this session.
//!
//! authorise (the dashboard token) → decide (that token is revoked; the
//! account's other sessions stay) → answer. No body is read.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::auth::{tokens, CurrentUser};
use crate::error::AdminResult;
use crate::AppState;

/// `200 {signedOut: true, revokedTokens: 1}`: the token of this request
/// stops working at once (`401 invalid_credentials` from then on). `401`
/// without a valid dashboard token, so a second sign-out with the same token
/// is refused like any other request with it.
pub async fn handle(State(state): State<AppState>, user: CurrentUser) -> AdminResult<Json<Value>> {
    let mut conn = state.db.pool().acquire().await?;
    let revoked = u64::from(tokens::revoke_token(&mut conn, &user.token_id).await?);
    tracing::info!(user_id = %user.user_id, "signed out");
    Ok(Json(json!({ "signedOut": true, "revokedTokens": revoked })))
}
