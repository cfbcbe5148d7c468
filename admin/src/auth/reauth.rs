//! Fresh proof for sensitive account changes (turning two-factor
//! authentication on, replacing it, turning it off).
//!
//! A dashboard token alone is not enough for these: a stolen token (a copied
//! browser storage, a leaked log) would otherwise let its thief enrol their
//! own authenticator and lock the owner out for good. So they also ask for
//! the **current password**, and, once a second factor is on, a **current
//! TOTP code or an unused recovery code**. Wrong passwords and wrong codes
//! count against per-user limits, so a token is no password or code oracle.

use qyzar_shared::{ApiError, ErrorCode};
use sqlx::AnyConnection;

use super::totp::{self, CodeCheck};
use super::{passwords, tokens, CurrentUser};
use crate::error::{AdminError, AdminResult};
use crate::extract::Redacted;
use crate::throttle;
use crate::AppState;

fn invalid(field: &'static str, message: &'static str) -> AdminError {
    ApiError::with_message(ErrorCode::InvalidCredentials, message)
        .field(field)
        .into()
}

/// Checks the signed-in user's current password (field `password`): `401
/// invalid_credentials` when wrong, `429` after
/// [`throttle::REAUTH_PER_USER`] wrong tries. Accounts without a password
/// cannot pass it.
pub async fn check_password(
    state: &AppState,
    user: &CurrentUser,
    password: &Redacted<String>,
) -> AdminResult<()> {
    let hits = state
        .throttle
        .hit(&[(&throttle::REAUTH_PER_USER, user.user_id.as_str())])?;
    let stored: Option<String> =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
            .bind(&user.user_id)
            .fetch_optional(state.db.pool())
            .await?
            .flatten();
    let password = password.expose();
    let ok = password.chars().count() <= passwords::MAX_CHARS
        && passwords::verify(password.clone(), stored).await?;
    if !ok {
        return Err(invalid("password", "the password is not right"));
    }
    state.throttle.forgive(hits);
    Ok(())
}

/// A second factor as given in a body: a TOTP code or a recovery code,
/// both normalised.
#[derive(Clone, PartialEq, Eq)]
pub enum SecondFactor {
    /// Six digits.
    Code(String),
    /// A recovery code's 16 base32 characters.
    Recovery(String),
}

impl std::fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecondFactor::Code(_) => "Code(<redacted>)",
            SecondFactor::Recovery(_) => "Recovery(<redacted>)",
        })
    }
}

/// Parses the optional `code` / `recoveryCode` fields: `422 invalid_field`
/// naming the field when it cannot be one, or when both are given.
pub fn parse_second_factor(
    code: Option<&Redacted<String>>,
    recovery_code: Option<&Redacted<String>>,
) -> AdminResult<Option<SecondFactor>> {
    match (code, recovery_code) {
        (Some(_), Some(_)) => Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "give either a code or a recovery code, not both",
        )
        .field("recoveryCode")
        .into()),
        (Some(c), None) => totp::normalise_code(c.expose())
            .map(|c| Some(SecondFactor::Code(c)))
            .ok_or_else(|| totp::bad_code_format("code")),
        (None, Some(r)) => totp::normalise_recovery_code(r.expose())
            .map(|r| Some(SecondFactor::Recovery(r)))
            .ok_or_else(|| {
                ApiError::with_message(
                    ErrorCode::InvalidField,
                    "a recovery code looks like xxxx-xxxx-xxxx-xxxx",
                )
                .field("recoveryCode")
                .into()
            }),
        (None, None) => Ok(None),
    }
}

/// Whether the user's two-factor authentication is on (a confirmed TOTP).
pub async fn two_factor_on(conn: &mut AnyConnection, user_id: &str) -> AdminResult<bool> {
    let on: Option<i64> = sqlx::query_scalar(
        "SELECT confirmed_at FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(on.is_some())
}

/// Checks and spends the second factor of a user whose two-factor
/// authentication is on: the code's step is recorded (no replay), a recovery
/// code is used up. `401 invalid_credentials` naming `code` when none was
/// given or it is wrong, `recoveryCode` when that is wrong or used; `429`
/// after [`throttle::SECOND_FACTOR_PER_USER`] wrong ones. Run it inside the
/// transaction of the change it authorises, so a failed change spends nothing.
pub async fn spend_second_factor(
    conn: &mut AnyConnection,
    state: &AppState,
    user_id: &str,
    factor: Option<&SecondFactor>,
) -> AdminResult<()> {
    let Some(factor) = factor else {
        return Err(invalid(
            "code",
            "two-factor authentication is on: give a current code or a recovery code",
        ));
    };
    let hits = state
        .throttle
        .hit(&[(&throttle::SECOND_FACTOR_PER_USER, user_id)])?;
    match factor {
        SecondFactor::Code(code) => {
            match totp::verify_and_spend(conn, &state.secrets, user_id, code).await? {
                CodeCheck::Accepted => {}
                CodeCheck::Reused => {
                    return Err(invalid(
                        "code",
                        "this code was already used; wait for the next one",
                    ))
                }
                CodeCheck::Wrong | CodeCheck::NotEnabled => {
                    return Err(invalid("code", "the code is not right"))
                }
            }
        }
        SecondFactor::Recovery(code) => {
            let spent = sqlx::query(
                "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
            )
            .bind(qyzar_shared::time::now_ms())
            .bind(user_id)
            .bind(tokens::hash(code))
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if spent != 1 {
                return Err(invalid(
                    "recoveryCode",
                    "the recovery code is not right, or was already used",
                ));
            }
        }
    }
    state.throttle.forgive(hits);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_factors_parse_and_never_show() {
        let code = Redacted::new(" 123 456 ".to_owned());
        let f = parse_second_factor(Some(&code), None).unwrap().unwrap();
        assert_eq!(f, SecondFactor::Code("123456".into()));
        assert!(!format!("{f:?}").contains("123456"));
        let rec = Redacted::new("ABCD-EFGH-IJKL-MNOP".to_owned());
        let f = parse_second_factor(None, Some(&rec)).unwrap().unwrap();
        assert!(!format!("{f:?}").to_lowercase().contains("abcd"));
        assert!(parse_second_factor(Some(&code), Some(&rec)).is_err());
        assert!(parse_second_factor(Some(&rec), None).is_err());
        assert_eq!(parse_second_factor(None, None).unwrap(), None);
    }
}
