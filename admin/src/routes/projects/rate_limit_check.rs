//! `POST /projects/rate-limit/check {projectId, ip, metadata?, cost?,
//! settingsOverride?}`: a dry-run rate-limit decision from the dashboard.
//!
//! The decision is the engine's own: the body is forwarded to an engine's
//! public `POST /projects/client/rate-limit-check` (`QYZAR_ENGINE_PUBLIC_URL`)
//! with `dryRun: true` forced and the project secret (opened from its sealed
//! copy) in `X-Qyzar-Project-Secret`, so nothing is consumed and no deny is
//! recorded, and admin never re-implements the limiter. The engine URL may
//! be `https://`; its certificate is checked like the internal pushes'
//! (`QYZAR_ENGINE_TLS_CA_FILE` / `QYZAR_ENGINE_TLS_PINS`), since the
//! request carries the project secret.
//!
//! parse → authorise (owner, else `404`) → decide (forward; no engine
//! configured or no answer → `503 store_unavailable`; an engine that does
//! not know the project yet → `503` too, since the dashboard user's
//! credentials are not at fault) → answer the engine's answer: `200` with
//! the decision, or its `4xx` naming the field at fault.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, Full};
use qyzar_shared::{ApiError, ErrorCode};
use serde_json::{Map, Value};

use crate::auth::CurrentUser;
use crate::error::{AdminError, AdminResult};
use crate::extract::ApiJson;
use crate::{projects, AppState};

/// Longest the dashboard waits for the engine.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

/// Forwards a dry-run check.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(mut body): ApiJson<Map<String, Value>>,
) -> AdminResult<Response> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let raw_id = match body.get("projectId") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "projectId must be a string",
            )
            .field("projectId")
            .into())
        }
        None => {
            return Err(ApiError::new(ErrorCode::MissingField)
                .field("projectId")
                .into())
        }
    };
    // authorise
    let project = projects::owned(state.db.pool(), &user.user_id, &raw_id).await?;
    // decide
    let Some(base) = state.config.engine_public_url.as_deref() else {
        return Err(ApiError::with_message(
            ErrorCode::StoreUnavailable,
            "no engine is configured for dry-run checks (set QYZAR_ENGINE_PUBLIC_URL)",
        )
        .into());
    };
    let secret = projects::generations(state.db.pool(), &state.secrets, &project.id, now)
        .await?
        .into_iter()
        .find(|g| g.valid_until.is_none())
        .ok_or_else(|| AdminError::internal("project has no current secret"))?
        .secret;
    body.insert("projectId".into(), Value::String(project.id.to_string()));
    body.insert("dryRun".into(), Value::Bool(true));
    let payload = serde_json::to_vec(&body).map_err(AdminError::internal)?;
    let mut secret_header = HeaderValue::from_str(secret.expose()).map_err(AdminError::internal)?;
    secret_header.set_sensitive(true);
    let req = http::Request::post(format!("{base}/projects/client/rate-limit-check"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-qyzar-project-secret", secret_header)
        .body(Full::new(Bytes::from(payload)))
        .map_err(AdminError::internal)?;
    let unavailable = |why: &str| {
        tracing::warn!(engine = %base, error = %why, "dry-run rate-limit check failed");
        AdminError::from(ApiError::with_message(
            ErrorCode::StoreUnavailable,
            "the engine did not answer the dry-run check; retry later",
        ))
    };
    let exchange = async {
        let res = state
            .pusher
            .http()
            .request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(ENGINE_TIMEOUT, exchange)
        .await
        .map_err(|_| unavailable("timed out"))?
        .map_err(|e| unavailable(&e))?;
    // answer
    match status.as_u16() {
        200 | 400 | 413 | 415 | 422 => {
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|_| unavailable("the engine answered something other than JSON"))?;
            Ok((status, Json(value)).into_response())
        }
        401 | 404 | 503 => Err(ApiError::with_message(
            ErrorCode::StoreUnavailable,
            "the engine does not have this project's configuration yet; retry in a moment",
        )
        .into()),
        other => Err(unavailable(&format!("engine answered {other}"))),
    }
}
