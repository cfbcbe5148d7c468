//! `PATCH /projects/extra-metadata {projectId, extraMetadata: <JSON Merge
//! Patch>}`: edits the document; `413` when the result would pass 32 KiB.
//! Answers the new document. Not part of the engine snapshot.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use crate::auth::CurrentUser;
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
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<serde_json::Value>> {
    let project = projects::owned(state.db.pool(), &user.user_id, &input.project_id).await?;
    Ok(Json(
        projects::patch_extra_metadata(&state.db, &project.id, &input.extra_metadata).await?,
    ))
}
