//! The keys client tokens are signed and verified with, and their `kid`s.
//!
//! A `kid` is a short hash of the key itself (`hs1-…`, `ed1-…`), so it needs
//! no registry, changes whenever the key does (a secret rotation), and lets a
//! verifier hold the current and previous keys side by side.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest;
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::CryptoError;

/// An HS256 key with its `kid`. Derived per project with
/// [`super::client_token_key`].
#[derive(Clone)]
pub struct Hs256Key {
    /// `"hs1-"` + 8 hex chars of SHA-256(raw): rotating the secret changes it.
    kid: String,
    /// The key in ring's precomputed form, so each sign or verify skips the
    /// HMAC key schedule.
    pub(super) key: hmac::Key,
    /// The raw key, for customers' offline verification and for tests.
    raw: [u8; 32],
    /// The encoded JWS header, built once per key instead of per token.
    pub(super) header_b64: String,
}

impl Hs256Key {
    /// Wraps 32 raw key bytes and computes the kid.
    pub fn from_raw(raw: [u8; 32]) -> Self {
        let kid = kid_for("hs1-", &raw);
        let header_b64 = encode_header("HS256", &kid);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
            kid,
            raw,
            header_b64,
        }
    }

    /// The key id carried in token headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw HMAC key bytes.
    pub fn raw(&self) -> &[u8; 32] {
        &self.raw
    }
}

impl std::fmt::Debug for Hs256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hs256Key({})", self.kid)
    }
}

/// An Ed25519 private key for projects that chose `tokenAlgorithm: EdDSA`,
/// so that third parties can verify tokens from the public JWKS without
/// holding the project secret.
pub struct Ed25519Signer {
    /// ring's key pair; never printed (see the `Debug` impl below).
    pub(super) pair: Ed25519KeyPair,
    /// The public half, with its kid.
    verifier: Ed25519Verifier,
}

impl Ed25519Signer {
    /// A fresh key pair as PKCS#8 v2 DER, to be sealed at rest and loaded
    /// with [`Ed25519Signer::from_pkcs8`].
    pub fn generate_pkcs8() -> Vec<u8> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .expect("the system random source failed; no safe key can be made")
            .as_ref()
            .to_vec()
    }

    /// Loads a PKCS#8 key (v2 as generated here, or v1 without the public
    /// key as other tools write it; a present public key is checked).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|_| CryptoError::InvalidKey)?;
        let verifier = Ed25519Verifier::from_public_key(pair.public_key().as_ref())?;
        Ok(Self { pair, verifier })
    }

    /// The encoded JWS header tokens of this key carry.
    pub(super) fn header_b64(&self) -> &str {
        &self.verifier.header_b64
    }

    /// The public half, to publish in the JWKS and to verify with.
    pub fn verifier(&self) -> &Ed25519Verifier {
        &self.verifier
    }

    /// The key id carried in token headers.
    pub fn kid(&self) -> &str {
        &self.verifier.kid
    }
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Signer({})", self.verifier.kid)
    }
}

/// An Ed25519 public key with its `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519Verifier {
    /// The raw 32-byte public key (RFC 8032).
    pub(super) public: [u8; 32],
    /// `"ed1-"` + 8 hex chars of SHA-256(public key).
    kid: String,
    /// The encoded JWS header, built once per key: the signer copies it into
    /// tokens and the verifier recognises it without parsing JSON.
    pub(super) header_b64: String,
}

impl Ed25519Verifier {
    /// Wraps a raw 32-byte public key; anything else is refused. Whether the
    /// bytes are a valid curve point is checked when verifying.
    pub fn from_public_key(public: &[u8]) -> Result<Self, CryptoError> {
        let public: [u8; 32] = public.try_into().map_err(|_| CryptoError::InvalidKey)?;
        let kid = kid_for("ed1-", &public);
        Ok(Self {
            header_b64: encode_header("EdDSA", &kid),
            kid,
            public,
        })
    }

    /// The raw public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// The key id carried in token headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// This key's entry in `GET /projects/client/jwks` (RFC 8037 OKP key).
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }
}

/// The keys a project's tokens may be verified with: usually the current and
/// the previous HS256 key (so tokens survive a secret rotation until they
/// expire), and/or the current and previous Ed25519 public keys.
#[derive(Debug, Clone, Default)]
pub struct VerifyKeys {
    /// HS256 keys, newest first; a handful at most, so a scan beats a map.
    hs256: Vec<Hs256Key>,
    /// Ed25519 public keys, newest first.
    ed25519: Vec<Ed25519Verifier>,
}

impl VerifyKeys {
    /// No keys: every token is refused with `bad_signature`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an HS256 key.
    pub fn with_hs256(mut self, key: Hs256Key) -> Self {
        self.hs256.push(key);
        self
    }

    /// Adds an Ed25519 public key.
    pub fn with_ed25519(mut self, key: Ed25519Verifier) -> Self {
        self.ed25519.push(key);
        self
    }

    /// The key named `kid`, if this project has one.
    pub(super) fn find(&self, kid: &str) -> Option<KeyRef<'_>> {
        if let Some(key) = self.hs256.iter().find(|k| k.kid == kid) {
            return Some(KeyRef::Hs256(key));
        }
        self.ed25519
            .iter()
            .find(|k| k.kid == kid)
            .map(KeyRef::Ed25519)
    }

    /// The key whose own encoded header is exactly `header_b64`: the fast
    /// path for tokens we minted, where those bytes already fix `alg` and
    /// `kid`, so no JSON needs parsing.
    pub(super) fn find_by_header(&self, header_b64: &str) -> Option<KeyRef<'_>> {
        if let Some(key) = self.hs256.iter().find(|k| k.header_b64 == header_b64) {
            return Some(KeyRef::Hs256(key));
        }
        self.ed25519
            .iter()
            .find(|k| k.header_b64 == header_b64)
            .map(KeyRef::Ed25519)
    }
}

/// A key found by `kid`; its variant, not the token header, fixes the
/// algorithm the signature is checked with.
#[derive(Clone, Copy)]
pub(super) enum KeyRef<'a> {
    /// An HMAC-SHA256 key.
    Hs256(&'a Hs256Key),
    /// An Ed25519 public key.
    Ed25519(&'a Ed25519Verifier),
}

/// Base64url of the header JSON. `kid` is our own `xx1-` + hex, so it needs
/// no JSON escaping.
fn encode_header(alg: &str, kid: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{kid}"}}"#))
}

/// `prefix` + the first 8 hex chars of SHA-256(`key`): short, stable, and
/// reveals nothing useful about the key.
fn kid_for(prefix: &str, key: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = digest::digest(&digest::SHA256, key);
    let mut kid = String::with_capacity(prefix.len() + 8);
    kid.push_str(prefix);
    for b in &digest.as_ref()[..4] {
        let _ = write!(kid, "{b:02x}");
    }
    kid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_a_stable_hash_of_the_key() {
        let a = Hs256Key::from_raw([1u8; 32]);
        assert_eq!(a.kid(), Hs256Key::from_raw([1u8; 32]).kid());
        assert_ne!(a.kid(), Hs256Key::from_raw([2u8; 32]).kid());
        assert!(a.kid().starts_with("hs1-"));
        assert!(a.kid()[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn find_selects_by_kid_across_algorithms() {
        let hs = Hs256Key::from_raw([1u8; 32]);
        let ed = Ed25519Signer::from_pkcs8(&Ed25519Signer::generate_pkcs8()).unwrap();
        let keys = VerifyKeys::new()
            .with_hs256(hs.clone())
            .with_ed25519(ed.verifier().clone());
        assert!(matches!(keys.find(hs.kid()), Some(KeyRef::Hs256(k)) if k.raw() == hs.raw()));
        assert!(matches!(keys.find(ed.kid()), Some(KeyRef::Ed25519(v)) if v == ed.verifier()));
        assert!(keys.find("hs1-00000000").is_none());
        assert!(VerifyKeys::new().find(hs.kid()).is_none());
    }

    #[test]
    fn debug_shows_only_the_kid() {
        let hs = Hs256Key::from_raw([9u8; 32]);
        assert_eq!(format!("{hs:?}"), format!("Hs256Key({})", hs.kid()));
        let ed = Ed25519Signer::from_pkcs8(&Ed25519Signer::generate_pkcs8()).unwrap();
        assert_eq!(format!("{ed:?}"), format!("Ed25519Signer({})", ed.kid()));
    }
}
