//! HMAC-SHA256, HKDF-SHA256 and the purpose-bound keys derived from a project
//! secret.
//!
//! One project secret feeds several keys. Each purpose has its own HKDF salt,
//! so a key for one purpose says nothing about another, and rotating the
//! secret rotates them all at once.

use ring::{hkdf, hmac};

use super::signing_keys::Hs256Key;
use super::{CryptoError, ProjectSecret};
use crate::ids::ProjectId;

/// HKDF salt of the client-token (HS256) key. Part of the public contract:
/// customer backends use it to derive the same key (see [`client_token_key`]).
pub const CLIENT_TOKEN_SALT: &str = "qyzar/client-token/v1";
/// HKDF salt of the opt-out link key (see [`opt_out_key`]).
pub const OPT_OUT_SALT: &str = "qyzar/opt-out/v1";

/// Longest HKDF-SHA256 output, RFC 5869 §2.3: 255 blocks of 32 bytes.
const HKDF_SHA256_MAX: usize = 255 * 32;

/// HMAC-SHA256 of `msg` under `key` (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `tag` is the HMAC-SHA256 of `msg` under `key`.
///
/// Goes through `ring::hmac::verify`, which compares in constant time: a
/// byte-by-byte `==` would let an attacker learn a valid tag one byte at a time.
pub fn hmac_verify(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), msg, tag).is_ok()
}

/// HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` to
/// `out_len` bytes.
///
/// Fails only when `out_len` exceeds RFC 5869's limit of 8160 bytes.
pub fn hkdf_sha256(
    ikm: &[u8],
    salt: &[u8],
    info: &[u8],
    out_len: usize,
) -> Result<Vec<u8>, CryptoError> {
    if out_len > HKDF_SHA256_MAX {
        return Err(CryptoError::HkdfLength);
    }
    let mut out = vec![0u8; out_len];
    hkdf_fill(ikm, salt, info, &mut out)?;
    Ok(out)
}

/// The HS256 key for a project's client tokens.
///
/// A customer backend holding the project secret can derive the very same
/// key and verify client tokens offline with any JWT library:
///
/// ```text
/// key = HKDF-SHA256(
///         IKM  = UTF-8 bytes of the project secret string, prefix included ("qz_sk_…", 49 chars),
///         salt = UTF-8 bytes of "qyzar/client-token/v1",
///         info = UTF-8 bytes of the project id ("prj_…"),
///         L    = 32)
/// ```
///
/// The 32 output bytes are the HMAC key itself (raw bytes, not hex or
/// base64). Verify with algorithm HS256 only and audience = the project id.
/// The token header's `kid` is `"hs1-"` followed by the first 8 lowercase hex
/// characters of SHA-256(key), so a backend can tell which secret signed a
/// token while a rotation is under way.
///
/// Node: `crypto.hkdfSync('sha256', secret, 'qyzar/client-token/v1', projectId, 32)`.
/// Python (`cryptography`): `HKDF(hashes.SHA256(), 32, b"qyzar/client-token/v1",
/// project_id.encode()).derive(secret.encode())`.
///
/// Test vector: secret `qz_sk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8`
/// (bytes 0..=31), project `prj_Vx3kQ9mZt2LpR8sY` →
/// key `a4b20fb27367541d68525bd0d81cc58aaa67500d12d57d3e9bd23d19ec447c4d`,
/// kid `hs1-7c7379c3`.
pub fn client_token_key(secret: &ProjectSecret, project_id: &ProjectId) -> Hs256Key {
    Hs256Key::from_raw(derive32(secret, CLIENT_TOKEN_SALT, project_id))
}

/// The HMAC key that signs a project's opt-out links, so `/opt-out/confirm`
/// can check a link without storing it. Same construction as
/// [`client_token_key`] with salt `"qyzar/opt-out/v1"`: a different salt makes
/// it independent of the token key, and it is never handed to customers.
pub fn opt_out_key(secret: &ProjectSecret, project_id: &ProjectId) -> [u8; 32] {
    derive32(secret, OPT_OUT_SALT, project_id)
}

/// HKDF-SHA256(ikm = secret string, salt, info = project id, L = 32).
fn derive32(secret: &ProjectSecret, salt: &str, project_id: &ProjectId) -> [u8; 32] {
    let mut out = [0u8; 32];
    hkdf_fill(
        secret.expose().as_bytes(),
        salt.as_bytes(),
        project_id.as_str().as_bytes(),
        &mut out,
    )
    .expect("32 bytes is within hkdf-sha256's output limit");
    out
}

/// Output length for `ring::hkdf`, which wants a `KeyType` rather than a number.
struct OutLen(usize);

impl hkdf::KeyType for OutLen {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf_fill(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let info = [info];
    prk.expand(&info, OutLen(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| CryptoError::HkdfLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_verify(b"Jefe", b"what do ya want for nothing?", &tag));
        assert!(!hmac_verify(b"Jefe", b"what do ya want for nothing!", &tag));
        assert!(!hmac_verify(b"jefe", b"what do ya want for nothing?", &tag));
        assert!(!hmac_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag[..31]
        ));
    }

    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        let ikm = [0x0bu8; 22];
        let salt = unhex("000102030405060708090a0b0c");
        let info = unhex("f0f1f2f3f4f5f6f7f8f9");
        let okm = hkdf_sha256(&ikm, &salt, &info, 42).unwrap();
        assert_eq!(
            hex(&okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn hkdf_refuses_overlong_output() {
        assert!(hkdf_sha256(b"k", b"s", b"i", HKDF_SHA256_MAX).is_ok());
        assert_eq!(
            hkdf_sha256(b"k", b"s", b"i", HKDF_SHA256_MAX + 1).unwrap_err(),
            CryptoError::HkdfLength
        );
    }

    #[test]
    fn documented_test_vector_holds() {
        // Computed independently with Python's hmac module and Node's hkdfSync.
        let secret =
            ProjectSecret::parse("qz_sk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
        let project = ProjectId::parse("prj_Vx3kQ9mZt2LpR8sY").unwrap();
        let key = client_token_key(&secret, &project);
        assert_eq!(
            hex(key.raw()),
            "a4b20fb27367541d68525bd0d81cc58aaa67500d12d57d3e9bd23d19ec447c4d"
        );
        assert_eq!(key.kid(), "hs1-7c7379c3");
        assert_eq!(
            hex(&opt_out_key(&secret, &project)),
            "eb256e905f5c6049690f83987837fd2a135e69355b3a92b5ce73d2943c2bfa42"
        );
    }

    #[test]
    fn keys_depend_on_secret_project_and_purpose() {
        let s1 = ProjectSecret::generate();
        let s2 = ProjectSecret::generate();
        let p1 = ProjectId::generate();
        let p2 = ProjectId::generate();
        let k = client_token_key(&s1, &p1);
        assert_ne!(k.raw(), client_token_key(&s2, &p1).raw());
        assert_ne!(k.raw(), client_token_key(&s1, &p2).raw());
        assert_ne!(k.kid(), client_token_key(&s2, &p1).kid());
        assert_ne!(k.raw(), &opt_out_key(&s1, &p1));
        assert_eq!(k.raw(), client_token_key(&s1, &p1).raw());
    }
}
