//! Secrets, secrets at rest, HMAC/HKDF and client-token JWTs, all on `ring`.
//!
//! One file per concern:
//! - `secret.rs`: the project secret (`qz_sk_…`), its stored hash, constant-time
//!   comparison and other random single-use tokens;
//! - `aead.rs`: [`SecretBox`], AES-256-GCM for secrets kept at rest by admin;
//! - `keys.rs`: HMAC-SHA256, HKDF-SHA256 and the purpose-bound keys derived from
//!   a project secret (client-token key, opt-out key);
//! - `signing_keys.rs`: the HS256 and Ed25519 token keys, their `kid`s, the
//!   JWKS entry and the per-project set of keys a token may verify under;
//! - `jwt.rs`: the compact JWS client tokens (HS256 by default, EdDSA on demand)
//!   with a hand-written verify path for the engine's hot path.
//!
//! Everything here is synchronous and allocation-light so the engine can call
//! it inline on a request without a blocking pool.

mod aead;
mod jwt;
mod keys;
mod secret;
mod signing_keys;

pub use aead::SecretBox;
pub use jwt::{
    sign_eddsa, sign_hs256, signed_by_known_key, verify, verify_facts, verify_facts_with, Claims,
    ClaimsView, FactsRef, JwtError, TokenFacts, MAX_TOKEN_LEN,
};
pub use keys::{
    client_token_key, hkdf_sha256, hmac_sha256, hmac_verify, opt_out_key, CLIENT_TOKEN_SALT,
    OPT_OUT_SALT,
};
pub use secret::{ct_eq, random_token, ProjectSecret, SecretFormatError, SecretHash};
pub use signing_keys::{Ed25519Signer, Ed25519Verifier, Hs256Key, VerifyKeys};

/// Why a cryptographic operation outside the JWT hot path failed.
///
/// Deliberately vague: telling a caller *which* check failed on a sealed value
/// (tag, version, length) helps an attacker more than it helps an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// A sealed value is too short, has an unknown version byte, or its tag
    /// does not verify under this key and associated data.
    #[error("the sealed value could not be opened")]
    Open,
    /// Key material has the wrong length or encoding.
    #[error("the key material is not valid")]
    InvalidKey,
    /// An HKDF output length above 255 × 32 bytes (RFC 5869's limit) was asked for.
    #[error("the requested hkdf output is too long")]
    HkdfLength,
}

/// SHA-256 of `data`: how token, secret and channel-key digests are made
/// and compared (equal lengths, so [`ct_eq`] on them leaks nothing).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
