//! `POST /auth/2fa/recovery {challengeToken, recoveryCode}`: completes a
//! sign-in with a recovery code instead of a TOTP code.

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::now_ms;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::tokens::{self, Purpose};
use crate::auth::totp;
use crate::error::AdminResult;
use crate::extract::{ApiJson, Redacted};
use crate::throttle::{self, ClientIp};
use crate::AppState;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    challenge_token: Redacted<String>,
    recovery_code: Redacted<String>,
}

/// `200 {token, expiresAt, recoveryCodesLeft}`: the code is spent for good
/// (each works once) and two-factor authentication stays on. `422` (field
/// `recoveryCode`) for text that cannot be a recovery code; `401
/// invalid_credentials` naming `challengeToken` or `recoveryCode`; `429`
/// with the same limits as `2fa/verify`.
pub async fn handle(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<Body>,
) -> AdminResult<Json<Value>> {
    let challenge = body.challenge_token.expose().as_str();
    super::check_token_len(challenge, "challengeToken")?;
    let code = totp::normalise_recovery_code(body.recovery_code.expose()).ok_or_else(|| {
        crate::error::AdminError::from(
            qyzar_shared::ApiError::with_message(
                qyzar_shared::ErrorCode::InvalidField,
                "a recovery code looks like xxxx-xxxx-xxxx-xxxx",
            )
            .field("recoveryCode"),
        )
    })?;
    let challenge_key = tokens::hash(challenge);
    let ip = ip.key();
    let challenge_hits = state.throttle.hit(&throttle::with_ip(
        &ip,
        &throttle::TOKEN_PER_IP,
        vec![(&throttle::CHALLENGE, challenge_key.as_str())],
    ))?;
    let invalid_challenge = || {
        super::invalid(
            "challengeToken",
            "the sign-in challenge is not valid, already used or expired; sign in again",
        )
    };

    let mut tx = state.db.pool().begin().await?;
    let Some(user_id) =
        tokens::peek_single_use(&mut tx, Purpose::SigninChallenge, challenge).await?
    else {
        return Err(invalid_challenge());
    };
    let user_hits = state
        .throttle
        .hit(&[(&throttle::SECOND_FACTOR_PER_USER, user_id.as_str())])?;
    let spent = sqlx::query("UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL")
        .bind(now_ms())
        .bind(&user_id)
        .bind(tokens::hash(&code))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if spent != 1 {
        return Err(super::invalid(
            "recoveryCode",
            "the recovery code is not right, or was already used",
        ));
    }
    if tokens::consume_single_use(&mut tx, Purpose::SigninChallenge, challenge)
        .await?
        .is_none()
    {
        return Err(invalid_challenge());
    }
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(&user_id)
    .fetch_one(&mut *tx)
    .await?;
    let issued = tokens::issue_dashboard_token(&mut tx, &user_id).await?;
    tx.commit().await?;
    state.throttle.forgive(challenge_hits);
    state.throttle.forgive(user_hits);
    tracing::info!(user_id = %user_id, left, "signed in with a recovery code");
    Ok(Json(json!({
        "token": issued.token,
        "expiresAt": qyzar_shared::time::rfc3339(issued.expires_at),
        "recoveryCodesLeft": left,
    })))
}
