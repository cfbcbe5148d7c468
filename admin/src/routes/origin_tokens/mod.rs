//! Origin tokens: a public token bound to one origin of one project, which
//! the browser script presents to `/connect`. Only the token's SHA-256 is
//! stored here and pushed to engines.
//!
//! - `POST /origin-tokens` (user): create;
//! - `POST /origin-tokens/invalidate` (user, project owner): revoke;
//! - `GET /origin-tokens/status?token=` (none): is it live?
//! - `POST /origin-tokens/verify` (none): is it live and bound to this origin?

pub mod create;
pub mod invalidate;
pub mod status;
pub mod verify;

use sqlx::Row;

use crate::error::AdminResult;
use crate::projects;

/// Prefix of every origin token, so leaked tokens are recognisable.
pub const TOKEN_PREFIX: &str = "qz_ot_";

/// A stored origin token.
pub struct TokenRow {
    /// The project it belongs to.
    pub project_id: String,
    /// The origin it is bound to.
    pub origin: String,
    /// Expiry (Unix ms).
    pub expires_at: i64,
    /// When it was invalidated, if it was.
    pub invalidated_at: Option<i64>,
}

/// Why a token is not live, as `status` and `verify` name it.
pub fn dead_reason(row: &TokenRow, now: i64) -> Option<&'static str> {
    if row.invalidated_at.is_some() {
        Some("invalidated")
    } else if row.expires_at <= now {
        Some("expired")
    } else {
        None
    }
}

/// Finds a token by its SHA-256; tokens are random 192-bit values, so the
/// lookup needs no constant-time care (the hash is the index key).
pub async fn find(db: &crate::db::Db, token: &str) -> AdminResult<Option<TokenRow>> {
    let hash = projects::hex(&projects::sha256(token.trim().as_bytes()));
    let row = sqlx::query("SELECT project_id, origin, expires_at, invalidated_at FROM origin_tokens WHERE token_hash = $1")
        .bind(hash)
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| {
        Ok(TokenRow {
            project_id: r.try_get("project_id")?,
            origin: r.try_get("origin")?,
            expires_at: r.try_get("expires_at")?,
            invalidated_at: r.try_get("invalidated_at")?,
        })
    })
    .transpose()
}
