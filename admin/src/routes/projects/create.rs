//! `POST /projects {name}`: a new project with a fresh secret.
//!
//! parse (name 1–100 characters) → authorise (the plan's project quota,
//! checked with the user's row locked so two concurrent creates cannot both
//! take the last slot) → decide (project, default settings and a first
//! secret generation in one transaction; then the snapshot is rebuilt and
//! pushed) → answer `201 {projectId, name, secret, createdAt, settings,
//! configVersion}`. The secret is in this answer and, afterwards, only
//! behind `POST /projects/secret/reveal`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use qyzar_shared::ids::ProjectId;
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::time::rfc3339;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::auth::CurrentUser;
use crate::error::AdminResult;
use crate::extract::ApiJson;
use crate::{projects, push, AppState};

/// The request body.
#[derive(Deserialize)]
pub struct Input {
    name: String,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    project_id: String,
    name: String,
    /// Shown once; stored only sealed.
    secret: String,
    created_at: String,
    settings: serde_json::Value,
    config_version: Option<u64>,
}

/// Creates a project.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<(StatusCode, Json<Output>)> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let name = projects::project_name(&input.name)?;
    // authorise: a no-op update locks the user's row until commit.
    let mut tx = state.db.pool().begin().await?;
    let plan: String = sqlx::query("UPDATE users SET plan = plan WHERE id = $1 RETURNING plan")
        .bind(&user.user_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::new(ErrorCode::InvalidCredentials))?
        .try_get("plan")?;
    let owned: i64 = sqlx::query("SELECT COUNT(*) FROM projects WHERE owner_id = $1")
        .bind(&user.user_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    let quota = projects::project_quota(&plan);
    if owned >= quota {
        return Err(ApiError::with_message(
            ErrorCode::QuotaExceeded,
            format!("the {plan} plan allows {quota} projects; delete one or upgrade"),
        )
        .into());
    }
    // A new project adds keys and default settings to every snapshot.
    push::admit(&state, push::NEW_PROJECT_BYTES)?;
    // decide
    let id = ProjectId::generate();
    let settings = ProjectSettings::default().to_json();
    sqlx::query(
        "INSERT INTO projects (id, owner_id, name, settings_json, extra_metadata, created_at) VALUES ($1, $2, $3, $4, '{}', $5)",
    )
    .bind(id.as_str())
    .bind(&user.user_id)
    .bind(&name)
    .bind(String::from_utf8_lossy(&settings).into_owned())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let secret = projects::insert_generation(&mut tx, &state.secrets, &id, now).await?;
    tx.commit().await?;
    let config_version = push::after_change(&state).await;
    tracing::info!(project = %id, user = %user.user_id, "project created");
    // answer
    Ok((
        StatusCode::CREATED,
        Json(Output {
            project_id: id.to_string(),
            name,
            secret: secret.expose().to_owned(),
            created_at: rfc3339(now),
            settings: serde_json::from_slice(&settings).unwrap_or_default(),
            config_version,
        }),
    ))
}
