//! `POST /projects/secret/2fa {projectId, code}`: fresh proof of the
//! second factor, exchanged for a short-lived, single-use reveal grant.
//!
//! A dashboard token alone (which may have leaked from a browser) is not
//! enough to read a project secret: the user must type a current TOTP code.
//! parse (six digits, else `422 code`) → authorise (owner, else `404`; TOTP
//! enrolled, else `403`; wrong codes throttled per user with sign-in's
//! second-factor budget, `429`; the code checked and spent with the auth module's
//! replay guard, so one observed code yields one grant at most, wrong or
//! reused `401 code`) → decide (a grant bound to this user and project,
//! stored as SHA-256, valid 5 minutes, spent by `POST
//! /projects/secret/reveal`) → answer `{grantToken, expiresAt}`.

use axum::extract::State;
use axum::Json;
use qyzar_shared::crypto::random_token;
use qyzar_shared::time::rfc3339;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::auth::totp::{self, CodeCheck};
use crate::auth::CurrentUser;
use crate::error::AdminResult;
use crate::extract::ApiJson;
use crate::{projects, throttle, AppState};

/// How long a reveal grant lives: time to click "reveal", not to keep it.
pub const GRANT_TTL_MS: i64 = 5 * 60 * 1000;

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    project_id: String,
    code: String,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    grant_token: String,
    expires_at: String,
}

/// Exchanges a TOTP code for a reveal grant.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<Output>> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let code = totp::normalise_code(&input.code).ok_or_else(|| totp::bad_code_format("code"))?;
    // authorise: wrong codes count towards the same per-user budget as
    // sign-in's second factor, so this route is no way around it.
    let hits = state
        .throttle
        .hit(&[(&throttle::SECOND_FACTOR_PER_USER, user.user_id.as_str())])?;
    let mut tx = state.db.pool().begin().await?;
    let project = projects::owned(&mut *tx, &user.user_id, &input.project_id).await?;
    match totp::verify_and_spend(&mut tx, &state.secrets, &user.user_id, &code).await? {
        CodeCheck::Accepted => {}
        CodeCheck::NotEnabled => {
            return Err(ApiError::with_message(
                ErrorCode::Forbidden,
                "turn on two-factor authentication (POST /auth/2fa/create) before revealing project secrets",
            )
            .into())
        }
        CodeCheck::Wrong | CodeCheck::Reused => {
            return Err(ApiError::with_message(ErrorCode::InvalidCredentials, "the code is not valid (wrong, expired or already used)")
                .field("code")
                .into())
        }
    }
    // decide
    let grant = random_token("qz_rg_", 24);
    let expires_at = now + GRANT_TTL_MS;
    sqlx::query("INSERT INTO secret_reveal_grants (grant_hash, project_id, user_id, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(projects::hex(&projects::sha256(grant.as_bytes())))
        .bind(project.id.as_str())
        .bind(&user.user_id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state.throttle.forgive(hits);
    // answer
    Ok(Json(Output {
        grant_token: grant,
        expires_at: rfc3339(expires_at),
    }))
}
