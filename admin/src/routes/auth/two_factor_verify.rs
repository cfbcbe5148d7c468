//! `POST /auth/2fa/verify`: a TOTP code, for one of two purposes.
//!
//! - `{challengeToken, code}` (no sign-in needed): completes a sign-in that
//!   `POST /auth/signin` answered with `twoFactorRequired`.
//! - `{code}` with `Authorization: Bearer qz_dt_…`: confirms the pending
//!   enrolment from `POST /auth/2fa/create`, which turns TOTP on, signs out
//!   every other session of the account (whoever else held a token must now
//!   pass the second factor) and mails the owner a notice.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use qyzar_shared::time::now_ms;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::notices::{self, Notice};
use crate::auth::tokens::{self, Purpose};
use crate::auth::totp::{self, CodeCheck};
use crate::error::{AdminError, AdminResult};
use crate::extract::{ApiJson, Redacted};
use crate::throttle::{self, ClientIp};
use crate::AppState;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    code: Redacted<String>,
    challenge_token: Option<Redacted<String>>,
}

/// See the module docs. `422` (field `code`) for a code that is not six
/// digits, in both uses.
///
/// Sign-in: `200 {token, expiresAt}`; `401 invalid_credentials` naming
/// `challengeToken` (unknown, spent or expired) or `code` (wrong, or already
/// used in its 30-second window); `429` after 5 wrong codes on one challenge
/// or 10 per user in 15 minutes. A wrong code does not spend the challenge.
///
/// Enrolment: `200 {twoFactorEnabled: true}`, every other dashboard token of
/// the account revoked (this one stays); `422 invalid_field` (field
/// `code`) for a wrong code (the caller is signed in; only the value is
/// wrong); `409 conflict` when nothing is pending; `401` without a valid
/// dashboard token; `429` after 10 wrong codes in 15 minutes.
pub async fn handle(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Body>,
) -> AdminResult<Json<Value>> {
    let code =
        totp::normalise_code(body.code.expose()).ok_or_else(|| totp::bad_code_format("code"))?;
    match body.challenge_token {
        Some(challenge) => complete_signin(&state, ip, challenge.expose(), &code).await,
        None => confirm_enrolment(&state, &headers, &code).await,
    }
}

async fn complete_signin(
    state: &AppState,
    ip: ClientIp,
    challenge: &str,
    code: &str,
) -> AdminResult<Json<Value>> {
    super::check_token_len(challenge, "challengeToken")?;
    let challenge_key = tokens::hash(challenge);
    let ip = ip.key();
    let challenge_hits = state.throttle.hit(&throttle::with_ip(
        &ip,
        &throttle::TOKEN_PER_IP,
        vec![(&throttle::CHALLENGE, challenge_key.as_str())],
    ))?;

    let mut tx = state.db.pool().begin().await?;
    let Some(user_id) =
        tokens::peek_single_use(&mut tx, Purpose::SigninChallenge, challenge).await?
    else {
        return Err(super::invalid(
            "challengeToken",
            "the sign-in challenge is not valid, already used or expired; sign in again",
        ));
    };
    let user_hits = state
        .throttle
        .hit(&[(&throttle::SECOND_FACTOR_PER_USER, user_id.as_str())])?;
    match totp::verify_and_spend(&mut tx, &state.secrets, &user_id, code).await? {
        CodeCheck::Accepted => {}
        CodeCheck::Reused => {
            return Err(super::invalid(
                "code",
                "this code was already used; wait for the next one",
            ))
        }
        CodeCheck::Wrong | CodeCheck::NotEnabled => {
            return Err(super::invalid("code", "the code is not right"))
        }
    }
    if tokens::consume_single_use(&mut tx, Purpose::SigninChallenge, challenge)
        .await?
        .is_none()
    {
        // Spent by a concurrent request meanwhile: this one loses.
        return Err(super::invalid(
            "challengeToken",
            "the sign-in challenge is not valid, already used or expired; sign in again",
        ));
    }
    let issued = tokens::issue_dashboard_token(&mut tx, &user_id).await?;
    tx.commit().await?;
    state.throttle.forgive(challenge_hits);
    state.throttle.forgive(user_hits);
    tracing::info!(user_id = %user_id, "signed in with a second factor");
    Ok(Json(
        serde_json::to_value(super::SignedIn::from(issued)).map_err(AdminError::internal)?,
    ))
}

async fn confirm_enrolment(
    state: &AppState,
    headers: &HeaderMap,
    code: &str,
) -> AdminResult<Json<Value>> {
    let user = crate::auth::authenticate(state, headers).await?;
    let hits = state
        .throttle
        .hit(&[(&throttle::SECOND_FACTOR_PER_USER, user.user_id.as_str())])?;

    let pending: Option<String> = sqlx::query_scalar(
        "SELECT seed_sealed FROM user_totp WHERE user_id = $1 AND confirmed_at IS NULL",
    )
    .bind(&user.user_id)
    .fetch_optional(state.db.pool())
    .await?;
    let Some(sealed) = pending else {
        state.throttle.forgive(hits);
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "no two-factor enrolment is pending; call /auth/2fa/create first",
        )
        .into());
    };
    let seed = totp::open(&state.secrets, &user.user_id, &sealed)?;
    let Some(step) = totp::matching_step(&seed, code, totp::now_secs()) else {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "the code is not right; check the app's clock",
        )
        .field("code")
        .into());
    };
    let mut tx = state.db.pool().begin().await?;
    let confirmed = sqlx::query(
        "UPDATE user_totp SET confirmed_at = $1, last_used_step = $2 WHERE user_id = $3 AND confirmed_at IS NULL AND seed_sealed = $4",
    )
    .bind(now_ms())
    .bind(i64::try_from(step).map_err(AdminError::internal)?)
    .bind(&user.user_id)
    .bind(&sealed)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    state.throttle.forgive(hits);
    if confirmed == 0 {
        // A concurrent create replaced the seed, or a concurrent verify won.
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "the enrolment changed meanwhile; start again",
        )
        .into());
    }
    // Sessions opened before the second factor existed (a stolen token
    // among them) must not outlive it; this one just proved both factors.
    let revoked = tokens::revoke_user_tokens(&mut tx, &user.user_id, Some(&user.token_id)).await?;
    tokens::spend_challenges(&mut tx, &user.user_id).await?;
    tx.commit().await?;
    notices::send(state, &user.email, Notice::TwoFactorOn);
    tracing::info!(user_id = %user.user_id, revoked, "two-factor authentication on");
    Ok(Json(json!({ "twoFactorEnabled": true })))
}
