//! Who is calling a dashboard route, and the credentials behind it.
//!
//! - [`CurrentUser`]: the extractor every `user` route takes;
//! - [`tokens`]: dashboard bearer tokens and the single-use tokens mailed or
//!   handed out during sign-in (all stored only as SHA-256);
//! - [`passwords`]: argon2id hashing and the password policy;
//! - [`totp`]: TOTP seeds (sealed at rest), codes with a replay guard, and
//!   recovery codes;
//! - [`reauth`]: the fresh proof (password, then a second factor) that
//!   sensitive changes ask for on top of a token;
//! - [`notices`]: the mails that tell an owner their account's security changed.

pub mod notices;
pub mod passwords;
pub mod reauth;
pub mod tokens;
pub mod totp;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use qyzar_shared::{ApiError, ErrorCode};
use sqlx::Row as _;

use crate::error::{AdminError, AdminResult};
use crate::AppState;

/// The signed-in dashboard user of a request, proven by
/// `Authorization: Bearer qz_dt_…` (a token from `/auth/signin` or the 2FA
/// steps that is known, not expired and not revoked).
///
/// Take it as a handler argument to make a route `user`-only: a request
/// without the header is answered `401 missing_credentials`, one with a bad,
/// expired or revoked token `401 invalid_credentials`, before the handler
/// runs. Tokens are only issued to users whose email is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    /// The user's id (`usr_…`); scope every query by it.
    pub user_id: String,
    /// The user's normalised email address.
    pub email: String,
    /// The id (`dtk_…`) of the dashboard token this request came with, so a
    /// route can act on "this session" (e.g. keep it while revoking others).
    pub token_id: String,
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.headers).await
    }
}

/// The bearer token of an `Authorization` header: `None` when the header is
/// absent, `Some(Err)` when it is present but not `Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err(()));
    };
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Some(Err(()));
    }
    Some(Ok(token.trim()))
}

/// Resolves the request's dashboard token to its user (what [`CurrentUser`]
/// does), for handlers where the header is optional, such as `2fa/verify`.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> AdminResult<CurrentUser> {
    let invalid = || AdminError::from(ApiError::new(ErrorCode::InvalidCredentials));
    let token = match bearer(headers) {
        None => return Err(ErrorCode::MissingCredentials.into()),
        Some(Err(())) => return Err(invalid()),
        Some(Ok(t)) => t,
    };
    if !tokens::looks_like_dashboard_token(token) {
        return Err(invalid());
    }
    let row = sqlx::query(
        "SELECT t.id, t.user_id, u.email FROM dashboard_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > $2",
    )
    .bind(tokens::hash(token))
    .bind(qyzar_shared::time::now_ms())
    .fetch_optional(state.db.pool())
    .await?
    .ok_or_else(invalid)?;
    Ok(CurrentUser {
        token_id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        email: row.try_get(2)?,
    })
}

/// Reads `users.email_verified` portably: sqlx's Any driver cannot map
/// SQLite's `BOOLEAN` column type, so queries select
/// [`EMAIL_VERIFIED_AS_INT`] and this turns the integer back into a bool.
pub fn flag(row: &sqlx::any::AnyRow, index: usize) -> Result<bool, sqlx::Error> {
    row.try_get::<i64, _>(index).map(|v| v != 0)
}

/// `users.email_verified` as an integer (0 or 1) in any dialect; see [`flag`].
pub const EMAIL_VERIFIED_AS_INT: &str = "CASE WHEN email_verified THEN 1 ELSE 0 END";

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(&HeaderMap::new()), None);
        assert_eq!(bearer(&headers("Bearer qz_dt_abc")), Some(Ok("qz_dt_abc")));
        assert_eq!(
            bearer(&headers("bearer   qz_dt_abc ")),
            Some(Ok("qz_dt_abc"))
        );
        assert_eq!(bearer(&headers("Basic dXNlcjpwYXNz")), Some(Err(())));
        assert_eq!(bearer(&headers("Bearer")), Some(Err(())));
        assert_eq!(bearer(&headers("qz_dt_abc")), Some(Err(())));
    }
}
