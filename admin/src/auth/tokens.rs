//! Dashboard bearer tokens and single-use tokens.
//!
//! Every token is 32 random bytes (base64url) behind a prefix that says what
//! it is for, and is stored only as the lowercase hex SHA-256 of its text: a
//! database leak yields nothing that signs anyone in. With 256-bit tokens a
//! plain digest is enough (no salt or slow hash needed), and looking a token
//! up by its digest through a unique index leaks nothing useful through
//! timing: an attacker would need a preimage of the digest.
//!
//! Helpers take `&mut AnyConnection` so a route can run several of them in
//! one transaction (`&mut *tx`) or on a pooled connection.

use qyzar_shared::crypto::random_token;
use qyzar_shared::time::now_ms;
use sqlx::AnyConnection;

use crate::error::AdminResult;

/// Prefix of dashboard tokens (`Authorization: Bearer qz_dt_…`).
pub const DASHBOARD_PREFIX: &str = "qz_dt_";
/// Dashboard tokens live a week; a new sign-in is needed after that.
pub const DASHBOARD_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// Random bytes in every token: 256 bits, unguessable.
const TOKEN_BYTES: usize = 32;
/// Longest token text accepted from a caller before anything is hashed or
/// looked up (ours are under 60 chars).
pub const MAX_TOKEN_LEN: usize = 128;

/// A freshly issued token: shown to its owner once, never stored in clear.
pub struct Issued {
    /// The token text.
    pub token: String,
    /// When it stops working (Unix ms).
    pub expires_at: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The stored form of a token: lowercase hex SHA-256 of its text.
pub fn hash(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `token` could be one of ours at all (prefix and length), so junk
/// is refused without a database round trip.
pub fn looks_like_dashboard_token(token: &str) -> bool {
    token.starts_with(DASHBOARD_PREFIX) && token.len() <= MAX_TOKEN_LEN
}

/// Issues a dashboard token for `user_id` and drops that user's expired and
/// revoked tokens, so the table does not grow with every sign-in.
pub async fn issue_dashboard_token(conn: &mut AnyConnection, user_id: &str) -> AdminResult<Issued> {
    let now = now_ms();
    sqlx::query("DELETE FROM dashboard_tokens WHERE user_id = $1 AND (expires_at <= $2 OR revoked_at IS NOT NULL)")
        .bind(user_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let token = random_token(DASHBOARD_PREFIX, TOKEN_BYTES);
    let expires_at = now + DASHBOARD_TTL_MS;
    sqlx::query("INSERT INTO dashboard_tokens (id, user_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(random_token("dtk_", 16))
        .bind(user_id)
        .bind(hash(&token))
        .bind(now)
        .bind(expires_at)
        .execute(&mut *conn)
        .await?;
    Ok(Issued { token, expires_at })
}

/// Revokes every live dashboard token of `user_id`, except `keep` (a token
/// id) when given; answers how many were revoked. Used by a password change
/// and a two-factor enrolment (both keep the caller's own session), a
/// password reset and `signout-all` (keep none).
pub async fn revoke_user_tokens(
    conn: &mut AnyConnection,
    user_id: &str,
    keep: Option<&str>,
) -> AdminResult<u64> {
    let res = sqlx::query("UPDATE dashboard_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3")
        .bind(now_ms())
        .bind(user_id)
        .bind(keep.unwrap_or(""))
        .execute(&mut *conn)
        .await?;
    Ok(res.rows_affected())
}

/// Revokes one dashboard token by id (`POST /auth/signout`).
pub async fn revoke_token(conn: &mut AnyConnection, token_id: &str) -> AdminResult<bool> {
    let res = sqlx::query(
        "UPDATE dashboard_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(token_id)
    .execute(&mut *conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// What a single-use token proves, with its prefix and lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The mailed link of a new account: 24 hours.
    VerifyEmail,
    /// The mailed password-reset link: 1 hour.
    PasswordReset,
    /// A sign-in that passed the password and awaits the second factor: 5 minutes.
    SigninChallenge,
}

impl Purpose {
    /// The value stored in `auth_tokens.purpose`.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::PasswordReset => "password_reset",
            Purpose::SigninChallenge => "signin_2fa",
        }
    }

    /// The token prefix, so a token pasted into the wrong route is obvious.
    pub fn prefix(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "qz_ev_",
            Purpose::PasswordReset => "qz_pr_",
            Purpose::SigninChallenge => "qz_2fa_",
        }
    }

    /// How long a token of this purpose lives.
    pub fn ttl_ms(self) -> i64 {
        match self {
            Purpose::VerifyEmail => 24 * 3600 * 1000,
            Purpose::PasswordReset => 3600 * 1000,
            Purpose::SigninChallenge => 5 * 60 * 1000,
        }
    }

    /// Whether `token` could be a token of this purpose (prefix and length).
    pub fn accepts(self, token: &str) -> bool {
        token.starts_with(self.prefix()) && token.len() <= MAX_TOKEN_LEN
    }
}

/// Creates a single-use token for `user_id` and drops that user's spent or
/// expired tokens.
pub async fn create_single_use(
    conn: &mut AnyConnection,
    purpose: Purpose,
    user_id: &str,
) -> AdminResult<Issued> {
    let now = now_ms();
    sqlx::query(
        "DELETE FROM auth_tokens WHERE user_id = $1 AND (expires_at <= $2 OR used_at IS NOT NULL)",
    )
    .bind(user_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let token = random_token(purpose.prefix(), TOKEN_BYTES);
    let expires_at = now + purpose.ttl_ms();
    sqlx::query("INSERT INTO auth_tokens (token_hash, purpose, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(hash(&token))
        .bind(purpose.as_str())
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *conn)
        .await?;
    Ok(Issued { token, expires_at })
}

/// The user a live (unused, unexpired) token belongs to, without using it:
/// for checks that must not burn the token on a typo (a wrong TOTP code).
pub async fn peek_single_use(
    conn: &mut AnyConnection,
    purpose: Purpose,
    token: &str,
) -> AdminResult<Option<String>> {
    if !purpose.accepts(token) {
        return Ok(None);
    }
    let user = sqlx::query_scalar(
        "SELECT user_id FROM auth_tokens WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(hash(token))
    .bind(purpose.as_str())
    .bind(now_ms())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(user)
}

/// Uses a live token up and answers its user, in one conditional `UPDATE …
/// RETURNING`: of two concurrent uses exactly one wins.
pub async fn consume_single_use(
    conn: &mut AnyConnection,
    purpose: Purpose,
    token: &str,
) -> AdminResult<Option<String>> {
    if !purpose.accepts(token) {
        return Ok(None);
    }
    let now = now_ms();
    let user = sqlx::query_scalar(
        "UPDATE auth_tokens SET used_at = $1 WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 \
         RETURNING user_id",
    )
    .bind(now)
    .bind(hash(token))
    .bind(purpose.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(user)
}

/// Spends every outstanding reset link and sign-in challenge of `user_id`:
/// after a password change, proofs issued against the old password (or to
/// whoever asked for a reset meanwhile) must stop working.
pub async fn spend_password_bound_tokens(
    conn: &mut AnyConnection,
    user_id: &str,
) -> AdminResult<()> {
    sqlx::query("UPDATE auth_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL AND purpose IN ($3, $4)")
        .bind(now_ms())
        .bind(user_id)
        .bind(Purpose::PasswordReset.as_str())
        .bind(Purpose::SigninChallenge.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Spends every pending sign-in challenge of `user_id`: after its second
/// factor changes (on, replaced, off) or all its sessions are signed out, a
/// challenge issued before must not complete a sign-in.
pub async fn spend_challenges(conn: &mut AnyConnection, user_id: &str) -> AdminResult<()> {
    sqlx::query(
        "UPDATE auth_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL AND purpose = $3",
    )
    .bind(now_ms())
    .bind(user_id)
    .bind(Purpose::SigninChallenge.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn purposes_have_distinct_prefixes_and_accept_only_their_own() {
        let all = [
            Purpose::VerifyEmail,
            Purpose::PasswordReset,
            Purpose::SigninChallenge,
        ];
        for p in all {
            let t = random_token(p.prefix(), TOKEN_BYTES);
            assert!(p.accepts(&t));
            for q in all.iter().filter(|q| **q != p) {
                assert!(!q.accepts(&t), "{q:?} accepted a {p:?} token");
            }
            assert!(!p.accepts(&format!("{t}{}", "A".repeat(MAX_TOKEN_LEN))));
        }
        assert!(looks_like_dashboard_token(&random_token(
            DASHBOARD_PREFIX,
            TOKEN_BYTES
        )));
        assert!(!looks_like_dashboard_token("qz_sk_abc"));
    }
}
