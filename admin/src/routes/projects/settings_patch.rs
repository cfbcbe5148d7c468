//! `PATCH /projects/settings {projectId, settings: <JSON Merge Patch>}`.
//!
//! parse (`settings` is an object) → authorise (owner, else `404`; the row
//! is locked so concurrent patches apply one after the other) → decide
//! (merge RFC 7386 over the stored document, then
//! `ProjectSettings::parse_and_validate` on the merged bytes: the document
//! is refused whole, `422` naming the field as `settings.<path>`, and
//! nothing is written) → store the normalised document, rebuild and push →
//! answer the new document.

use axum::extract::State;
use axum::Json;
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Deserialize;

use crate::auth::CurrentUser;
use crate::error::{AdminError, AdminResult};
use crate::extract::ApiJson;
use crate::{projects, push, AppState};

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    project_id: String,
    settings: serde_json::Value,
}

/// Patches the settings document.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<serde_json::Value>> {
    // parse
    if !input.settings.is_object() {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "settings must be a JSON object (a merge patch)",
        )
        .field("settings")
        .into());
    }
    // authorise
    let mut tx = state.db.pool().begin().await?;
    let id = projects::parse_project_id(&input.project_id)?;
    let locked = sqlx::query(
        "UPDATE projects SET settings_json = settings_json WHERE id = $1 AND owner_id = $2",
    )
    .bind(id.as_str())
    .bind(&user.user_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if locked == 0 {
        return Err(ApiError::new(ErrorCode::ProjectNotFound).into());
    }
    let project = projects::owned(&mut *tx, &user.user_id, id.as_str()).await?;
    // decide
    let mut doc: serde_json::Value =
        serde_json::from_str(&project.settings_json).map_err(AdminError::internal)?;
    projects::merge_patch(&mut doc, &input.settings);
    let merged = serde_json::to_vec(&doc).map_err(AdminError::internal)?;
    let settings = ProjectSettings::parse_and_validate(&merged).map_err(|mut e| {
        e.field = Some(match e.field.take() {
            Some(f) => format!("settings.{f}").into(),
            None => "settings".into(),
        });
        e
    })?;
    let stored = String::from_utf8(settings.to_json()).map_err(AdminError::internal)?;
    let changed = stored != project.settings_json;
    if stored.len() > project.settings_json.len() {
        // Growing settings grow every engine's snapshot: admitted against
        // the budget (409 `config_budget_exceeded`, this change alone).
        push::admit(&state, stored.len() - project.settings_json.len())?;
    }
    if changed {
        sqlx::query("UPDATE projects SET settings_json = $1 WHERE id = $2")
            .bind(&stored)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if changed {
        push::after_change(&state).await;
    }
    // answer
    Ok(Json(
        serde_json::from_str(&stored).map_err(AdminError::internal)?,
    ))
}
