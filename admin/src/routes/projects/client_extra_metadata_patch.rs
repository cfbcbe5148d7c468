//! `PATCH /projects/client/extra-metadata {projectId, extraMetadata: <JSON
//! Merge Patch>}` with the project secret: a customer backend edits the
//! document (`413` past 32 KiB). A client JWT may only read: `403`.
//!
//! parse → credentials present (`401`) → project known (`404`) →
//! credentials right (`401`), and the secret (`403` for a token) → answer
//! the new document.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Deserialize;

use super::{check_client_credential, client_credential, ClientCredential};
use crate::error::AdminResult;
use crate::extract::ApiJson;
use crate::{projects, AppState};

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    project_id: String,
    extra_metadata: serde_json::Value,
}

/// Patches the document.
pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<serde_json::Value>> {
    // parse
    projects::parse_project_id(&input.project_id)?;
    let credential =
        client_credential(&headers, None).ok_or(ApiError::new(ErrorCode::MissingCredentials))?;
    // authorise
    let project = projects::by_id(state.db.pool(), &input.project_id).await?;
    check_client_credential(&state, &project, &credential).await?;
    if matches!(credential, ClientCredential::Token(_)) {
        return Err(ApiError::with_message(
            ErrorCode::Forbidden,
            "client tokens may only read the public part; write with the project secret",
        )
        .into());
    }
    // decide + answer
    Ok(Json(
        projects::patch_extra_metadata(&state.db, &project.id, &input.extra_metadata).await?,
    ))
}
