//! `PATCH /projects {projectId, name}`: renames a project.
//!
//! parse → authorise (owner, else `404`) → decide (update the name) →
//! answer `{projectId, name, createdAt}`. Names are not part of the config
//! snapshot, so nothing is pushed.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::ProjectSummary;
use crate::auth::CurrentUser;
use crate::error::AdminResult;
use crate::extract::ApiJson;
use crate::{projects, AppState};

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    project_id: String,
    name: String,
}

/// Renames a project.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<ProjectSummary>> {
    // parse
    let name = projects::project_name(&input.name)?;
    // authorise
    let mut project = projects::owned(state.db.pool(), &user.user_id, &input.project_id).await?;
    // decide
    sqlx::query("UPDATE projects SET name = $1 WHERE id = $2 AND owner_id = $3")
        .bind(&name)
        .bind(project.id.as_str())
        .bind(&user.user_id)
        .execute(state.db.pool())
        .await?;
    project.name = name;
    // answer
    Ok(Json(ProjectSummary::from(&project)))
}
