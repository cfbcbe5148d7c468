//! `POST /auth/password-reset-request {email}`: mails a password-reset link.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::tokens::{self, Purpose};
use crate::error::AdminResult;
use crate::extract::ApiJson;
use crate::throttle::{self, ClientIp};
use crate::AppState;

/// The request body.
#[derive(Debug, Deserialize)]
pub struct Body {
    email: String,
}

/// `202 {accepted: true}` whether or not the address has an account (the
/// product's rule); the link (single use, one hour) is mailed only when it
/// has. `422` for a malformed address; `429` past the per-address and
/// per-client limits. The lookup and the mail run after the answer, so the
/// timing is the same for members and strangers.
pub async fn handle(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<Body>,
) -> AdminResult<(StatusCode, Json<Value>)> {
    let email = super::parse_email(&body.email)?;
    let ip = ip.key();
    let _hits = state.throttle.hit(&throttle::with_ip(
        &ip,
        &throttle::MAIL_PER_IP,
        vec![(&throttle::MAIL_PER_EMAIL, email.as_str())],
    ))?;

    tokio::spawn(async move {
        let work = async {
            let mut conn = state.db.pool().acquire().await?;
            let user_id: Option<String> =
                sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
                    .bind(email.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
            if let Some(user_id) = user_id {
                let issued =
                    tokens::create_single_use(&mut conn, Purpose::PasswordReset, &user_id).await?;
                state
                    .mailer
                    .send_in_background(state.mailer.password_reset(email, &issued.token));
            }
            Ok::<_, crate::error::AdminError>(())
        };
        if let Err(e) = work.await {
            tracing::warn!(error = %e, "password reset request failed");
        }
    });
    Ok(super::accepted())
}
