//! `POST /auth/register {email, password}`: creates an account and mails a
//! verification link.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use qyzar_shared::ids::UserId;
use qyzar_shared::time::now_ms;
use serde::{Deserialize, Serialize};

use crate::auth::{passwords, tokens};
use crate::error::AdminResult;
use crate::extract::{ApiJson, Redacted};
use crate::throttle::{self, ClientIp};
use crate::AppState;

/// The request body.
#[derive(Debug, Deserialize)]
pub struct Body {
    email: String,
    password: Redacted<String>,
}

/// `201`: the account as it now stands.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    user_id: String,
    email: String,
    email_verified: bool,
}

/// `201 {userId, email, emailVerified: false}`; `422` for an address that
/// is not one or a password outside 10–256 characters; `429` past the limits.
///
/// An address that already has an account gets the **same** answer (with a
/// fresh id that belongs to no account) and its owner gets an "already
/// registered" mail instead of a verification link: a `409` would tell
/// anyone which addresses are customers. The password is hashed either way,
/// so the timing matches too.
pub async fn handle(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<Body>,
) -> AdminResult<(StatusCode, Json<Registered>)> {
    let email = super::parse_email(&body.email)?;
    passwords::check_policy(body.password.expose(), "password")?;
    let ip = ip.key();
    let keys = throttle::with_ip(
        &ip,
        &throttle::REGISTER_PER_IP,
        vec![(&throttle::MAIL_PER_EMAIL, email.as_str())],
    );
    let _hits = state.throttle.hit(&keys)?;

    let hash = passwords::hash(body.password.into_inner()).await?;
    let user_id = UserId::generate();
    let mut tx = state.db.pool().begin().await?;
    let created = sqlx::query(
        "INSERT INTO users (id, email, password_hash, email_verified, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(user_id.as_str())
    .bind(email.as_str())
    .bind(hash)
    .bind(false)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let verify = if created {
        Some(
            tokens::create_single_use(&mut tx, tokens::Purpose::VerifyEmail, user_id.as_str())
                .await?,
        )
    } else {
        None
    };
    tx.commit().await?;

    let mail = match verify {
        Some(issued) => state.mailer.verification(email.clone(), &issued.token),
        None => state.mailer.already_registered(email.clone()),
    };
    state.mailer.send_in_background(mail);
    if created {
        tracing::info!(user_id = %user_id, "account registered");
    }
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            user_id: user_id.to_string(),
            email: email.to_string(),
            email_verified: false,
        }),
    ))
}
