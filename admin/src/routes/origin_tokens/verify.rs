//! `POST /origin-tokens/verify {token, origin}`: whether a token is live and
//! bound to exactly this origin (the check `/connect` makes against the
//! `Origin` header).
//!
//! A verify-style answer: `200 {valid: true, projectId, origin, expiresAt}`
//! or `200 {valid: false, reason}` with reason `not_found`, `expired`,
//! `invalidated` or `origin_mismatch`. Origins compare byte for byte, as
//! browsers serialise them (`https://shop.example`, no trailing slash).

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::rfc3339;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::AdminResult;
use crate::extract::ApiJson;
use crate::AppState;

/// The request body.
#[derive(Deserialize)]
pub struct Input {
    token: String,
    origin: String,
}

/// Answers whether the token is valid for the origin.
pub async fn handle(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<Value>> {
    let now = qyzar_shared::time::now_ms();
    let Some(row) = super::find(&state.db, &input.token).await? else {
        return Ok(Json(json!({"valid": false, "reason": "not_found"})));
    };
    if let Some(reason) = super::dead_reason(&row, now) {
        return Ok(Json(json!({"valid": false, "reason": reason})));
    }
    if row.origin != input.origin {
        return Ok(Json(json!({"valid": false, "reason": "origin_mismatch"})));
    }
    Ok(Json(json!({
        "valid": true,
        "projectId": row.project_id,
        "origin": row.origin,
        "expiresAt": rfc3339(row.expires_at),
    })))
}
