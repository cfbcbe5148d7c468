//! `GET /projects/entropy-snapshot`: what a device's browser reported, for
//! the dashboard's device drill-down.
//!
//! parse (`projectId`, and exactly one of `deviceId` or `sessionId`) →
//! authorise (the signed-in owner, else `404`) → decide (by device: its
//! newest snapshot; by session: the session's device and that session's
//! snapshot) → answer `{deviceId, sessionId, at, entropy, sessions}` where
//! `sessions` lists the device's recent snapshots (newest first, at most
//! [`MAX_SESSIONS`]) as `{sessionId, at}`: the device's sessions.
//!
//! `404 not_found` when the store holds nothing for it (an unknown id, an
//! opted-out device, or a snapshot past its 90-day retention).

use axum::extract::State;
use axum::Json;
use qyzar_shared::ids::{DeviceId, SessionId};
use qyzar_shared::time::rfc3339;
use qyzar_shared::{ApiError, ErrorCode};
use qyzar_store::{DataStore, EntropySnapshot, StoreError};
use serde::{Deserialize, Serialize};

use crate::auth::CurrentUser;
use crate::error::{AdminError, AdminResult};
use crate::extract::ApiQuery;
use crate::{projects, AppState};

/// Most sessions listed with a snapshot.
pub const MAX_SESSIONS: usize = 50;

/// The query.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    project_id: String,
    device_id: Option<String>,
    session_id: Option<String>,
}

/// One of the device's sessions.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRef {
    session_id: String,
    at: String,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    device_id: String,
    session_id: String,
    at: String,
    entropy: serde_json::Value,
    sessions: Vec<SessionRef>,
}

enum Subject {
    Device(DeviceId),
    Session(SessionId),
}

fn store_error(e: StoreError) -> AdminError {
    tracing::warn!(error = %e, "entropy snapshot read failed");
    ApiError::new(e.code()).into()
}

/// Answers one snapshot.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Json<Output>> {
    // parse
    let subject = match (q.device_id.as_deref(), q.session_id.as_deref()) {
        (Some(d), None) => Subject::Device(DeviceId::parse(d).map_err(|_| {
            ApiError::with_message(ErrorCode::InvalidField, "deviceId is not a device id")
                .field("deviceId")
        })?),
        (None, Some(s)) => Subject::Session(SessionId::parse(s).map_err(|_| {
            ApiError::with_message(ErrorCode::InvalidField, "sessionId is not a session id")
                .field("sessionId")
        })?),
        (None, None) => {
            return Err(ApiError::new(ErrorCode::MissingField)
                .field("deviceId")
                .into())
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "give deviceId or sessionId, not both",
            )
            .field("sessionId")
            .into())
        }
    };
    // authorise
    let project = projects::owned(state.db.pool(), &user.user_id, &q.project_id).await?;
    let store: &dyn DataStore = state.data.as_deref().ok_or_else(|| {
        ApiError::with_message(
            ErrorCode::StoreUnavailable,
            "no data store is configured for the dashboard",
        )
    })?;
    // decide
    let (device, wanted_session) = match subject {
        Subject::Device(d) => (d, None),
        Subject::Session(s) => {
            let session = store
                .get_session(&project.id, &s)
                .await
                .map_err(store_error)?
                .ok_or(ApiError::new(ErrorCode::NotFound))?;
            (session.device_id, Some(s))
        }
    };
    let recent = store
        .list_entropy_snapshots(&project.id, &device, MAX_SESSIONS)
        .await
        .map_err(store_error)?;
    let chosen: EntropySnapshot = match &wanted_session {
        None => recent.first().cloned(),
        Some(s) => recent.iter().find(|r| &r.session_id == s).cloned(),
    }
    .ok_or(ApiError::new(ErrorCode::NotFound))?;
    // The store keeps entropy as text and takes any (a row written by an
    // older engine, or damaged): one that is not a JSON object is shown as
    // `null`, as the OpenAPI document allows, rather than failing the whole
    // answer with a 500 or answering outside the schema.
    let entropy = match serde_json::from_str::<serde_json::Value>(&chosen.entropy_json) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        other => {
            tracing::warn!(
                device = %chosen.device_id,
                session = %chosen.session_id,
                parsed = other.is_ok(),
                "stored entropy snapshot is not a JSON object; answered as null"
            );
            serde_json::Value::Null
        }
    };
    // answer
    Ok(Json(Output {
        device_id: chosen.device_id.to_string(),
        session_id: chosen.session_id.to_string(),
        at: rfc3339(chosen.at),
        entropy,
        sessions: recent
            .iter()
            .map(|r| SessionRef {
                session_id: r.session_id.to_string(),
                at: rfc3339(r.at),
            })
            .collect(),
    }))
}
