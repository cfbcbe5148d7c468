//! `DELETE /projects` with `projectId` in the query or a JSON body: deletes
//! a project and everything hanging off it.
//!
//! parse → authorise (owner, else `404`) → decide (children and project in
//! one transaction; then the snapshot without the project is pushed, so
//! engines stop accepting its secret within the push latency) → answer `204`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Deserialize;

use crate::auth::CurrentUser;
use crate::error::AdminResult;
use crate::extract::ApiQuery;
use crate::{projects, push, AppState};

/// `projectId` in the query or the body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    project_id: Option<String>,
}

/// Deletes a project.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(query): ApiQuery<Target>,
    body: Bytes,
) -> AdminResult<StatusCode> {
    // parse: the query wins; a body is read only without one.
    let raw = match query.project_id {
        Some(id) => id,
        None if body.iter().all(u8::is_ascii_whitespace) => {
            return Err(ApiError::new(ErrorCode::MissingField)
                .field("projectId")
                .into());
        }
        None => serde_json::from_slice::<Target>(&body)
            .map_err(|_| ApiError::new(ErrorCode::MalformedJson))?
            .project_id
            .ok_or_else(|| ApiError::new(ErrorCode::MissingField).field("projectId"))?,
    };
    // authorise
    let mut tx = state.db.pool().begin().await?;
    let project = projects::owned(&mut *tx, &user.user_id, &raw).await?;
    // decide: children first, explicitly, rather than relying on SQLite's
    // foreign-key enforcement being switched on.
    for table in [
        "opt_outs",
        "origin_tokens",
        "secret_reveal_grants",
        "project_secrets",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE project_id = $1"))
            .bind(project.id.as_str())
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM projects WHERE id = $1")
        .bind(project.id.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    push::after_change(&state).await;
    tracing::info!(project = %project.id, user = %user.user_id, "project deleted");
    // answer
    Ok(StatusCode::NO_CONTENT)
}
