//! `/auth/*`: dashboard accounts, one file per route.
//!
//! Choices every route here shares (also in the admin's OpenAPI document):
//! - **Membership never leaks.** `register`, `verify-email/resend` and
//!   `password-reset-request` answer the same for known and unknown emails,
//!   and send their mail from a background task, so neither the body nor the
//!   timing tells whether an address has an account. `signin` answers one
//!   `401 invalid_credentials` for a wrong password and an unknown email,
//!   after the same argon2 work.
//! - **Unverified accounts cannot sign in**: `signin` with the right password
//!   answers `403 email_not_verified` until the mailed link is opened (so an
//!   account pre-registered with someone else's address is useless to whoever
//!   made it). A password reset through the mailed link also proves the
//!   address and marks it verified.
//! - **Brute-force limits** ([`crate::throttle`]) on every credential route
//!   answer `429 rate_limited` with `Retry-After`. Input is validated first,
//!   so a malformed request neither changes anything nor uses up a budget.
//! - Proof tokens in bodies (`token`, `challengeToken`) that are unknown,
//!   spent or expired answer `401 invalid_credentials` naming the field.
//! - **A token alone changes no second factor.** `2fa/create` and
//!   `2fa/disable` also ask for the current password, and a current code or
//!   recovery code once two-factor authentication is on
//!   ([`crate::auth::reauth`]); turning it on signs out every other session;
//!   every such change, and a password reset, mails the owner a notice.
//! - **Sessions end on demand**: `signout` revokes the request's token,
//!   `signout-all` every token of the account.
//! - Credentials in request bodies are [`crate::extract::Redacted`]: a
//!   `Debug` of a body never shows a password, code or token.

pub mod me;
pub mod password;
pub mod password_reset_confirm;
pub mod password_reset_request;
pub mod register;
pub mod signin;
pub mod signout;
pub mod signout_all;
pub mod two_factor_create;
pub mod two_factor_disable;
pub mod two_factor_recovery;
pub mod two_factor_verify;
pub mod verify_email;
pub mod verify_email_resend;

use axum::http::StatusCode;
use axum::Json;
use qyzar_shared::ids::Email;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::tokens::Issued;
use crate::error::AdminError;

/// Parses an email field: `422 invalid_field` naming `email` when it is not
/// an address. Saying so leaks nothing about membership.
fn parse_email(raw: &str) -> Result<Email, AdminError> {
    Email::parse(raw).map_err(|_| {
        ApiError::with_message(ErrorCode::InvalidField, "not an email address")
            .field("email")
            .into()
    })
}

/// `401 invalid_credentials` naming the field whose proof failed.
fn invalid(field: &'static str, message: &'static str) -> AdminError {
    ApiError::with_message(ErrorCode::InvalidCredentials, message)
        .field(field)
        .into()
}

/// `422 invalid_field` for a token field longer than any token we issue;
/// refused before it is hashed or looked up.
fn check_token_len(token: &str, field: &'static str) -> Result<(), AdminError> {
    if token.is_empty() || token.len() > crate::auth::tokens::MAX_TOKEN_LEN {
        return Err(
            ApiError::with_message(ErrorCode::InvalidField, "not a token of this service")
                .field(field)
                .into(),
        );
    }
    Ok(())
}

/// The `202 {"accepted": true}` of routes whose effect must not be told.
fn accepted() -> (StatusCode, Json<Value>) {
    (StatusCode::ACCEPTED, Json(json!({ "accepted": true })))
}

/// A signed-in answer: the dashboard token and when it expires (no
/// `Debug`: it holds a live token).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignedIn {
    token: String,
    expires_at: String,
}

impl From<Issued> for SignedIn {
    fn from(issued: Issued) -> Self {
        Self {
            expires_at: qyzar_shared::time::rfc3339(issued.expires_at),
            token: issued.token,
        }
    }
}
