//! Second factor: TOTP (RFC 6238) and recovery codes.
//!
//! - Seeds are 160 random bits (RFC 4226's recommendation), shown once as
//!   base32 and an `otpauth://` URI, and stored sealed with the master key
//!   ([`qyzar_shared::crypto::SecretBox`], associated data = the user id, so a
//!   sealed seed copied onto another user's row does not open).
//! - Codes are what every authenticator app speaks: HMAC-SHA1, 6 digits,
//!   30-second steps, accepted one step either side for clock drift. The step
//!   a code matched is remembered, and a code is accepted only for a step
//!   later than the last one used, so an observed code cannot be replayed
//!   within its window.
//! - Recovery codes are 80 random bits each (`xxxx-xxxx-xxxx-xxxx`, base32),
//!   stored as SHA-256 and spent on use.

use base64::Engine as _;
use qyzar_shared::crypto::{ct_eq, SecretBox};
use qyzar_shared::{ApiError, ErrorCode};
use sqlx::AnyConnection;
use totp_rs::{Algorithm, Secret, TOTP};

use crate::error::{AdminError, AdminResult};

/// Seed length: 160 bits, as RFC 4226 recommends (and as authenticator apps expect).
const SEED_BYTES: usize = 20;
/// Digits per code.
const DIGITS: usize = 6;
/// Seconds per step.
const STEP_SECS: u64 = 30;
/// The issuer shown in authenticator apps.
const ISSUER: &str = "Qyzar";
/// Recovery codes handed out per enrolment.
pub const RECOVERY_CODES: usize = 10;
/// Random bytes per recovery code: 80 bits, 16 base32 characters.
const RECOVERY_CODE_BYTES: usize = 10;

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
        .expect("the system random source failed; no safe secret can be made");
    buf
}

/// A fresh TOTP seed.
pub fn new_seed() -> Vec<u8> {
    random_bytes(SEED_BYTES)
}

/// The seed as authenticator apps take it: RFC 4648 base32, no padding.
pub fn base32(seed: &[u8]) -> String {
    // `to_encoded` always answers `Encoded`, whose Display is the text.
    Secret::Raw(seed.to_vec()).to_encoded().to_string()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `otpauth://totp/…` URI (Google Authenticator's key-URI format) an app
/// can scan as a QR code; written here rather than through totp-rs's
/// `otpauth` feature, which would pull a URL parser in for one `format!`.
pub fn otpauth_uri(email: &str, secret_b32: &str) -> String {
    format!(
        "otpauth://totp/{ISSUER}:{}?secret={secret_b32}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        percent_encode(email)
    )
}

/// Seals a seed for storage (base64 text, as the other sealed columns).
pub fn seal(secrets: &SecretBox, user_id: &str, seed: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(secrets.seal(seed, user_id.as_bytes()))
}

/// Opens a sealed seed; failure means a wrong master key or a tampered row,
/// an operator problem answered as an opaque 500.
pub fn open(secrets: &SecretBox, user_id: &str, sealed: &str) -> AdminResult<Vec<u8>> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(AdminError::internal)?;
    secrets
        .open(&raw, user_id.as_bytes())
        .map_err(|e| AdminError::internal(format!("totp seed of {user_id}: {e}")))
}

/// A code as typed: spaces dropped, then exactly six ASCII digits.
pub fn normalise_code(code: &str) -> Option<String> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// The `422 invalid_field` for a code that is not six digits.
pub fn bad_code_format(field: &'static str) -> AdminError {
    ApiError::with_message(ErrorCode::InvalidField, "the code must be 6 digits")
        .field(field)
        .into()
}

/// The step (Unix seconds / 30) whose code `code` is, among the current step
/// and one either side, or `None`. All three candidates are compared in
/// constant time.
pub fn matching_step(seed: &[u8], code: &str, now_secs: u64) -> Option<u64> {
    let totp = TOTP::new(Algorithm::SHA1, DIGITS, 1, STEP_SECS, seed.to_vec()).ok()?;
    let current = now_secs / STEP_SECS;
    let mut found = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        let hit = ct_eq(totp.generate(step * STEP_SECS).as_bytes(), code.as_bytes());
        if hit && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    u64::try_from(qyzar_shared::time::now_ms() / 1000).unwrap_or(0)
}

/// What checking a user's TOTP code found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// Right, and now spent.
    Accepted,
    /// Not the code of any step in the window.
    Wrong,
    /// Right, but that step (or a later one) was already used.
    Reused,
    /// The user has no confirmed TOTP.
    NotEnabled,
}

/// Checks a code of a user whose two-factor authentication is on and, when
/// right, records its step so it cannot be used again. For sign-in and for
/// any route that wants fresh proof of the second factor (such as the
/// project-secret reveal). `code` must already be [`normalise_code`]d.
pub async fn verify_and_spend(
    conn: &mut AnyConnection,
    secrets: &SecretBox,
    user_id: &str,
    code: &str,
) -> AdminResult<CodeCheck> {
    let sealed: Option<String> = sqlx::query_scalar(
        "SELECT seed_sealed FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(sealed) = sealed else {
        return Ok(CodeCheck::NotEnabled);
    };
    let seed = open(secrets, user_id, &sealed)?;
    let Some(step) = matching_step(&seed, code, now_secs()) else {
        return Ok(CodeCheck::Wrong);
    };
    let step = i64::try_from(step).map_err(AdminError::internal)?;
    let res = sqlx::query(
        "UPDATE user_totp SET last_used_step = $1 WHERE user_id = $2 AND confirmed_at IS NOT NULL \
         AND (last_used_step IS NULL OR last_used_step < $1)",
    )
    .bind(step)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(if res.rows_affected() == 1 {
        CodeCheck::Accepted
    } else {
        CodeCheck::Reused
    })
}

/// Fresh recovery codes, formatted for display (`xxxx-xxxx-xxxx-xxxx`).
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let s = base32(&random_bytes(RECOVERY_CODE_BYTES)).to_ascii_lowercase();
            format!("{}-{}-{}-{}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
        })
        .collect()
}

/// A recovery code as typed, reduced to its 16 base32 characters (case,
/// dashes and spaces do not matter), or `None` when it cannot be one.
pub fn normalise_recovery_code(code: &str) -> Option<String> {
    let s: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)))
    .then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_sha1_vector() {
        // RFC 6238 appendix B, SHA1 seed, T = 59 s → 94287082 (8 digits);
        // the 6-digit code is its last six digits.
        let seed = b"12345678901234567890";
        let totp = TOTP::new(Algorithm::SHA1, 6, 1, 30, seed.to_vec()).unwrap();
        assert_eq!(totp.generate(59), "287082");
        assert_eq!(matching_step(seed, "287082", 59), Some(1));
        assert_eq!(
            matching_step(seed, "287082", 59 + 30),
            Some(1),
            "one step late is accepted"
        );
        assert_eq!(
            matching_step(seed, "287082", 59 + 60),
            None,
            "two steps late is not"
        );
        assert_eq!(matching_step(seed, "000000", 59), None);
    }

    #[test]
    fn seeds_round_trip_base32_and_the_seal() {
        let seed = new_seed();
        assert_eq!(seed.len(), 20);
        let b32 = base32(&seed);
        assert_eq!(b32.len(), 32);
        assert_eq!(Secret::Encoded(b32.clone()).to_bytes().unwrap(), seed);
        let sb = SecretBox::new(&SecretBox::generate_key());
        let sealed = seal(&sb, "usr_a", &seed);
        assert_eq!(open(&sb, "usr_a", &sealed).unwrap(), seed);
        assert!(open(&sb, "usr_b", &sealed).is_err(), "bound to its user");
        let uri = otpauth_uri("ann+x@example.com", &b32);
        assert!(
            uri.starts_with("otpauth://totp/Qyzar:ann%2Bx%40example.com?secret="),
            "{uri}"
        );
        assert!(uri.contains("&issuer=Qyzar&algorithm=SHA1&digits=6&period=30"));
    }

    #[test]
    fn codes_and_recovery_codes_normalise() {
        assert_eq!(normalise_code(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalise_code("12345"), None);
        assert_eq!(normalise_code("12345a"), None);
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        for c in &codes {
            assert_eq!(c.len(), 19);
            let n = normalise_recovery_code(c).unwrap();
            assert_eq!(
                normalise_recovery_code(&c.to_ascii_uppercase()).as_deref(),
                Some(n.as_str())
            );
        }
        assert_ne!(codes[0], codes[1]);
        assert_eq!(
            normalise_recovery_code("abcd-efgh-ijkl-mno1"),
            None,
            "1 is not base32"
        );
        assert_eq!(normalise_recovery_code("abcd"), None);
    }
}
