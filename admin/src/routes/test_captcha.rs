//! `POST /test/captcha {projectId, outcome: "pass" | "fail"}`: a test
//! captcha token that the engine's `/connect` accepts for projects in
//! `testMode`, so customers can exercise both captcha outcomes in CI
//! without a real captcha.
//!
//! No dashboard credentials, as the route table says: the token is only
//! honoured by a project in test mode, which by definition protects
//! nothing real, and a test pipeline should not need a dashboard login.
//!
//! parse → authorise (project known `404`; in `testMode`, else `403`) →
//! decide (sign with the project's opt-out key, as
//! `qyzar_shared::captcha` describes; valid 5 minutes) → answer
//! `{captchaToken, expiresAt}`.

use axum::extract::State;
use axum::Json;
use qyzar_shared::captcha::{self, Outcome};
use qyzar_shared::crypto::opt_out_key;
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::time::rfc3339;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::error::{AdminError, AdminResult};
use crate::extract::ApiJson;
use crate::{projects, AppState};

/// How long a test captcha token lives: one test's worth.
pub const TOKEN_TTL_SECONDS: i64 = 300;

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    project_id: String,
    outcome: String,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    captcha_token: String,
    expires_at: String,
}

/// Issues a test captcha token.
pub async fn handle(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<Output>> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let outcome = match input.outcome.as_str() {
        "pass" => Outcome::Pass,
        "fail" => Outcome::Fail,
        _ => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "outcome must be \"pass\" or \"fail\"",
            )
            .field("outcome")
            .into())
        }
    };
    // authorise
    let project = projects::by_id(state.db.pool(), &input.project_id).await?;
    let settings: ProjectSettings =
        serde_json::from_str(&project.settings_json).map_err(AdminError::internal)?;
    if !settings.test_mode {
        return Err(ApiError::with_message(
            ErrorCode::Forbidden,
            "test captcha tokens are issued only for projects in test mode (settings.testMode)",
        )
        .field("projectId")
        .into());
    }
    // decide
    let generations =
        projects::generations(state.db.pool(), &state.secrets, &project.id, now).await?;
    let current = generations
        .iter()
        .find(|g| g.valid_until.is_none())
        .ok_or_else(|| AdminError::internal("project has no current secret"))?;
    let exp = now / 1000 + TOKEN_TTL_SECONDS;
    let token = captcha::issue(
        &opt_out_key(&current.secret, &project.id),
        project.id.as_str(),
        outcome,
        exp,
    );
    // answer
    Ok(Json(Output {
        captcha_token: token,
        expires_at: rfc3339(exp * 1000),
    }))
}
