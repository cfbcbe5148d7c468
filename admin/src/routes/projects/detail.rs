//! `GET /projects/detail?projectId=`: one project with its settings and the
//! config version engines are being given.
//!
//! parse → authorise (owner, else `404`) → answer `{projectId, name,
//! createdAt, settings, configVersion, secretRotatedAt?}`. `configVersion`
//! is the newest snapshot version built by this admin (it includes every
//! committed change, this project's included); engines reach it within the
//! push latency.

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::rfc3339;
use serde::{Deserialize, Serialize};

use crate::auth::CurrentUser;
use crate::error::{AdminError, AdminResult};
use crate::extract::ApiQuery;
use crate::{projects, AppState};

/// The query.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    project_id: String,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    project_id: String,
    name: String,
    created_at: String,
    settings: serde_json::Value,
    config_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_rotated_at: Option<String>,
}

/// Answers one project.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Json<Output>> {
    let project = projects::owned(state.db.pool(), &user.user_id, &q.project_id).await?;
    Ok(Json(Output {
        project_id: project.id.to_string(),
        name: project.name,
        created_at: rfc3339(project.created_at),
        settings: serde_json::from_str(&project.settings_json).map_err(AdminError::internal)?,
        config_version: state.pusher.version(),
        secret_rotated_at: project.secret_rotated_at.map(rfc3339),
    }))
}
