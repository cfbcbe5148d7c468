//! `GET /projects/extra-metadata?projectId=`: the project's extra-metadata
//! document (a free-form JSON object the customer keeps with the project;
//! its `public` member is what client tokens may read).

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

/// Answers the document.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Json<serde_json::Value>> {
    let project = projects::owned(state.db.pool(), &user.user_id, &q.project_id).await?;
    Ok(Json(
        serde_json::from_str(&project.extra_metadata).map_err(AdminError::internal)?,
    ))
}
