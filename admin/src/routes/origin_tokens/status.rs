//! `GET /origin-tokens/status?token=`: whether a token is live.
//!
//! No credentials: the token itself is the only input and is already public
//! (it sits in the customer's page). A verify-style answer: `200 {live:
//! true, projectId, origin, expiresAt}` or `200 {live: false, reason}` with
//! reason `not_found`, `expired` or `invalidated`.

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::rfc3339;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::AdminResult;
use crate::extract::ApiQuery;
use crate::AppState;

/// The query.
#[derive(Deserialize)]
pub struct Query {
    token: String,
}

/// Answers whether the token is live.
pub async fn handle(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Json<Value>> {
    let now = qyzar_shared::time::now_ms();
    let Some(row) = super::find(&state.db, &q.token).await? else {
        return Ok(Json(json!({"live": false, "reason": "not_found"})));
    };
    Ok(Json(match super::dead_reason(&row, now) {
        Some(reason) => json!({"live": false, "reason": reason}),
        None => json!({
            "live": true,
            "projectId": row.project_id,
            "origin": row.origin,
            "expiresAt": rfc3339(row.expires_at),
        }),
    }))
}
