//! `POST /projects/secret/reveal {projectId, grantToken, rotate?,
//! graceSeconds?}`: the project secret, in exchange for a reveal grant from
//! `POST /projects/secret/2fa`; with `rotate: true` a new secret replaces it.
//!
//! parse (`graceSeconds` 0–86 400, only with `rotate`, default 86 400) →
//! authorise (owner, else `404`; the grant is consumed atomically: it must
//! be this user's, for this project, unused and unexpired, else
//! `401 grantToken`) → decide (read the current secret; or, rotating, end
//! the validity of every older generation at now + grace at the latest and
//! insert a new one, in the same transaction as the grant, then rebuild and
//! push at once, skipping the build debounce: engines accept the old
//! secrets and verify tokens of their HS256/Ed25519 keys until the grace
//! ends) → answer `{secret}` plus `{rotated: true, previousSecretValidUntil}`
//! on rotation.
//!
//! `graceSeconds: 0` is the emergency rotation for a leaked secret: the old
//! secret, its derived keys and any generation still in an earlier grace
//! leave the snapshot in this very build, so every engine refuses them as
//! soon as the push lands (well within a second on a healthy network), and
//! engines also refuse client tokens they had cached under a dropped key.

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::rfc3339;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::auth::CurrentUser;
use crate::error::{AdminError, AdminResult};
use crate::extract::ApiJson;
use crate::{projects, push, AppState};

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    project_id: String,
    grant_token: String,
    #[serde(default)]
    rotate: bool,
    /// How long the rotated-out secret keeps working, in seconds.
    grace_seconds: Option<i64>,
}

/// Longest grace a rotation may give the old secret: a day (the default).
pub const MAX_GRACE_SECONDS: i64 = projects::SECRET_GRACE_MS / 1000;

/// The grace asked for, checked: only with `rotate`, 0 to a day.
fn grace_ms(input: &Input) -> Result<i64, ApiError> {
    match input.grace_seconds {
        None => Ok(projects::SECRET_GRACE_MS),
        Some(_) if !input.rotate => Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "graceSeconds applies only with rotate: true",
        )
        .field("graceSeconds")),
        Some(s) if (0..=MAX_GRACE_SECONDS).contains(&s) => Ok(s * 1000),
        Some(_) => Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "graceSeconds must be between 0 and 86400",
        )
        .field("graceSeconds")),
    }
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    secret: String,
    rotated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret_valid_until: Option<String>,
}

/// Reveals (and optionally rotates) the project secret.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<Output>> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let grace = grace_ms(&input)?;
    // authorise
    let mut tx = state.db.pool().begin().await?;
    let project = projects::owned(&mut *tx, &user.user_id, &input.project_id).await?;
    let grant_hash = projects::hex(&projects::sha256(input.grant_token.trim().as_bytes()));
    let consumed = sqlx::query(
        "UPDATE secret_reveal_grants SET used_at = $1 \
         WHERE grant_hash = $2 AND project_id = $3 AND user_id = $4 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(&grant_hash)
    .bind(project.id.as_str())
    .bind(&user.user_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if consumed != 1 {
        return Err(ApiError::with_message(
            ErrorCode::InvalidCredentials,
            "the reveal grant is not valid: unknown, used, expired or for another project",
        )
        .field("grantToken")
        .into());
    }
    // decide
    let (secret, previous_until) = if input.rotate {
        // Every older generation ends at `until` at the latest: an
        // emergency rotation also cuts short an earlier rotation's grace.
        let until = now + grace;
        sqlx::query("UPDATE project_secrets SET valid_until = $1 WHERE project_id = $2 AND (valid_until IS NULL OR valid_until > $1)")
            .bind(until)
            .bind(project.id.as_str())
            .execute(&mut *tx)
            .await?;
        let secret = projects::insert_generation(&mut tx, &state.secrets, &project.id, now).await?;
        sqlx::query("UPDATE projects SET secret_rotated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(project.id.as_str())
            .execute(&mut *tx)
            .await?;
        (secret, Some(until))
    } else {
        let current = projects::generations(&mut *tx, &state.secrets, &project.id, now)
            .await?
            .into_iter()
            .find(|g| g.valid_until.is_none())
            .ok_or_else(|| AdminError::internal("project has no current secret"))?;
        (current.secret, None)
    };
    tx.commit().await?;
    if input.rotate {
        push::after_change_now(&state).await;
        tracing::info!(project = %project.id, user = %user.user_id, grace_ms = grace, "project secret rotated");
    } else {
        tracing::info!(project = %project.id, user = %user.user_id, "project secret revealed");
    }
    // answer
    Ok(Json(Output {
        secret: secret.expose().to_owned(),
        rotated: input.rotate,
        previous_secret_valid_until: previous_until.map(rfc3339),
    }))
}
