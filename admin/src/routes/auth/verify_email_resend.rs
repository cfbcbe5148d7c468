//! `POST /auth/verify-email/resend {email}`: mails a new verification link.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use sqlx::Row as _;

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

/// `202 {accepted: true}` whatever the address (a link is mailed only to an
/// account that exists and is not verified yet); `422` for a malformed
/// address; `429` past the per-address and per-client limits. The lookup
/// runs after the answer, so its timing tells nothing either.
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
            let row = sqlx::query(&format!(
                "SELECT id, {} FROM users WHERE email = $1",
                crate::auth::EMAIL_VERIFIED_AS_INT
            ))
            .bind(email.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else { return Ok(()) };
            let (user_id, verified): (String, bool) =
                (row.try_get(0)?, crate::auth::flag(&row, 1)?);
            if !verified {
                let issued =
                    tokens::create_single_use(&mut conn, Purpose::VerifyEmail, &user_id).await?;
                state
                    .mailer
                    .send_in_background(state.mailer.verification(email, &issued.token));
            }
            Ok::<_, crate::error::AdminError>(())
        };
        if let Err(e) = work.await {
            tracing::warn!(error = %e, "verification resend failed");
        }
    });
    Ok(super::accepted())
}
