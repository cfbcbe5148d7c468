//! `GET /ping`: liveness, and proof the database answers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// `200 {"ok":true,"service":"admin"}` when the database answers a trivial
/// query; `503 store_unavailable` otherwise, so a load balancer takes a
/// broken admin out of rotation.
pub async fn handle(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.db.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"ok": true, "service": "admin"})),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "database ping failed");
            let err = qyzar_shared::ApiError::new(qyzar_shared::ErrorCode::StoreUnavailable);
            let body: Value = serde_json::from_slice(&err.to_json()).unwrap_or(Value::Null);
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
    }
}
