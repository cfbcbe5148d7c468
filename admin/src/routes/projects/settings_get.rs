//! `GET /projects/settings?projectId=`: the project's settings document,
//! every field present (defaults filled in), exactly as engines get it.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

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

/// Answers the settings document.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Json<serde_json::Value>> {
    let project = projects::owned(state.db.pool(), &user.user_id, &q.project_id).await?;
    Ok(Json(
        serde_json::from_str(&project.settings_json).map_err(AdminError::internal)?,
    ))
}
