//! Client tokens: compact JWS (RFC 7515) JWTs signed HS256 or EdDSA.
//!
//! Hand-written rather than a general JWT library because `token-verify` sits
//! on customers' hot paths: the verify path checks syntax, looks the key up by
//! `kid`, checks the signature over the token's own bytes, and only then
//! decodes the claims. A payload of ordinary size is decoded on the stack;
//! [`verify`] allocates the returned [`Claims`], and [`verify_facts`] only
//! what a verify answer carries.
//!
//! The algorithm is a property of the key, never of the token: the header's
//! `alg` must name the algorithm of the key its `kid` selects, so `alg: none`
//! and HS256/EdDSA confusion cannot work.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use super::signing_keys::{Ed25519Signer, Hs256Key, KeyRef, VerifyKeys};

/// Longest token accepted (8 KiB): our tokens are a few hundred bytes even
/// with metadata, and the cap bounds the work an attacker can ask for.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest base64url header accepted; ours is about 70 characters.
const MAX_HEADER_B64: usize = 512;
/// Base64url length of a 32-byte HS256 tag.
const HS256_SIG_B64: usize = 43;
/// Base64url length of a 64-byte Ed25519 signature.
const ED25519_SIG_B64: usize = 86;

/// Why a client token is not valid. Copy and allocation-free because
/// refusals are ordinary traffic on `token-verify`; [`JwtError::reason`] is
/// the `reason` code of the verify answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a compact JWS with a JSON header and the expected claims, or
    /// larger than [`MAX_TOKEN_LEN`].
    #[error("malformed")]
    Malformed,
    /// Unknown `kid`, an `alg` that is not the key's, or a signature that
    /// does not verify.
    #[error("bad_signature")]
    BadSignature,
    /// `exp` is at or before now; no leeway (see [`verify`]).
    #[error("expired")]
    Expired,
    /// The signature verifies but `aud` names another project.
    #[error("wrong_project")]
    WrongProject,
}

impl JwtError {
    /// The reason code `token-verify` answers with.
    pub const fn reason(self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::WrongProject => "wrong_project",
        }
    }
}

/// The claims of a client token (PRODUCT.md, "Client token").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the engine's public base URL.
    pub iss: String,
    /// Audience: the project id, so a token cannot be replayed elsewhere.
    pub aud: String,
    /// Subject: the identifier the customer minted the token for.
    pub sub: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds; bound tokens never outlive their session.
    pub exp: i64,
    /// Unique token id, for audit and revocation lists.
    pub jti: String,
    /// The verify session the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Customer metadata carried through verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md: Option<serde_json::Value>,
}

/// [`Claims`] borrowed, for signing without copying each field into a
/// `String` first (mint builds its claims from the project id, the
/// request's metadata and the session, all of which it already holds).
/// Serialises byte for byte as `Claims` with the same values (tested).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ClaimsView<'a> {
    /// As [`Claims::iss`].
    pub iss: &'a str,
    /// As [`Claims::aud`].
    pub aud: &'a str,
    /// As [`Claims::sub`].
    pub sub: &'a str,
    /// As [`Claims::iat`].
    pub iat: i64,
    /// As [`Claims::exp`].
    pub exp: i64,
    /// As [`Claims::jti`].
    pub jti: &'a str,
    /// As [`Claims::sid`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<&'a str>,
    /// As [`Claims::md`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md: Option<&'a serde_json::Value>,
}

/// Signs `claims` ([`Claims`] or a [`ClaimsView`]) as an HS256 token
/// under `key`.
pub fn sign_hs256(claims: &(impl Serialize + ?Sized), key: &Hs256Key) -> String {
    let mut token = signing_input(&key.header_b64, claims, HS256_SIG_B64);
    let tag = hmac::sign(&key.key, token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
    token
}

/// Signs `claims` ([`Claims`] or a [`ClaimsView`]) as an EdDSA (Ed25519)
/// token under `signer`.
pub fn sign_eddsa(claims: &(impl Serialize + ?Sized), signer: &Ed25519Signer) -> String {
    let mut token = signing_input(signer.header_b64(), claims, ED25519_SIG_B64);
    let sig = signer.pair.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut token);
    token
}

/// The JOSE header fields we read. Borrowed: values that would need JSON
/// escapes are refused as malformed, and no real `alg` or `kid` needs one.
#[derive(Deserialize)]
struct Header<'a> {
    alg: &'a str,
    #[serde(borrow, default)]
    kid: Option<&'a str>,
    /// RFC 7515 §4.1.11: extensions the verifier must understand. We
    /// understand none, so any `crit` makes the token unusable.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// Verifies a client token and returns its claims.
///
/// Order: size and syntax (`malformed`), key by `kid` and signature
/// (`bad_signature`), then the claims are decoded (`malformed`), `aud` must
/// equal `expected_aud` (`wrong_project`) and `exp` must be after `now_unix`
/// (`expired`). Nothing from the payload is looked at before the signature
/// holds. A header byte-identical to one we mint is matched against the
/// keys' precomputed headers and never parsed; any other header is decoded.
///
/// No leeway on `exp`: the engines that mint tokens are the ones that verify
/// them, on synchronised clocks, and any leeway would silently lengthen every
/// token's life. A token is expired from the second `exp` names on
/// (RFC 7519 §4.1.4: valid only while now is before `exp`).
pub fn verify(
    token: &str,
    keys: &VerifyKeys,
    now_unix: i64,
    expected_aud: &str,
) -> Result<Claims, JwtError> {
    verify_with(token, keys, |payload| {
        let claims: Claims = serde_json::from_slice(payload).map_err(|_| JwtError::Malformed)?;
        check_aud_exp(&claims.aud, claims.exp, now_unix, expected_aud)?;
        Ok(claims)
    })
}

/// [`verify`], keeping only what a verify answer carries ([`TokenFacts`]).
///
/// The same checks in the same order, over the same claims: every field
/// [`Claims`] requires must be there with its type, or the token is
/// `malformed`. But `iss`, `sub`, `jti` and `aud` are read in place and
/// dropped, and the metadata is kept as the signer wrote it rather than
/// built into a tree (it is read once more, keeping nothing, so metadata
/// a `Value` refuses, such as `1e400` or a lone surrogate escape, is
/// `malformed` here too; a repeated key, which a `Value` collapsed to its
/// last, is kept as written): an uncached `token-verify` allocated about a dozen
/// times for claims it never answers with, and freed as many when the
/// cached token was evicted (BENCHMARKS.md, "Uncached token-verify's
/// claims").
pub fn verify_facts(
    token: &str,
    keys: &VerifyKeys,
    now_unix: i64,
    expected_aud: &str,
) -> Result<TokenFacts, JwtError> {
    verify_facts_with(token, keys, now_unix, expected_aud, |f| TokenFacts {
        exp: f.exp,
        sid: f.sid.map(Into::into),
        md: f.md.map(ToOwned::to_owned),
    })
}

/// [`verify_facts`], handing the facts to `keep` as they lie in the
/// decoded payload, so a caller that stores them can copy them once into
/// a buffer of its own instead of into a `Box` each (the verified-token
/// cache keeps a token, its session and its metadata in one allocation).
pub fn verify_facts_with<R>(
    token: &str,
    keys: &VerifyKeys,
    now_unix: i64,
    expected_aud: &str,
    keep: impl FnOnce(FactsRef<'_>) -> R,
) -> Result<R, JwtError> {
    verify_with(token, keys, |payload| {
        let c: ClaimsRef<'_> = serde_json::from_slice(payload).map_err(|_| JwtError::Malformed)?;
        // A raw value is only scanned (`1e400` and a lone `\ud800` pass):
        // read it once more as `verify`'s `Value` is read, keeping nothing,
        // so the two refuse the same metadata.
        if let Some(md) = c.md {
            serde_json::from_str::<Checked>(md.get()).map_err(|_| JwtError::Malformed)?;
        }
        check_aud_exp(&c.aud, c.exp, now_unix, expected_aud)?;
        Ok(keep(FactsRef {
            exp: c.exp,
            sid: c.sid,
            md: c.md,
        }))
    })
}

/// [`TokenFacts`] borrowed from a verified token's decoded payload (see
/// [`verify_facts_with`]).
#[derive(Debug)]
pub struct FactsRef<'a> {
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// The verify session the token is bound to, if any (owned only when
    /// the token wrote it with escapes).
    pub sid: Option<std::borrow::Cow<'a, str>>,
    /// Customer metadata, the signer's JSON text.
    pub md: Option<&'a serde_json::value::RawValue>,
}

/// What a verifier keeps of a verified token: the session it is bound to,
/// the customer's metadata as the token carries it (valid JSON, never
/// `null`: a `null` or absent `md` is `None`), and its expiry in Unix
/// seconds.
#[derive(Debug, Clone)]
pub struct TokenFacts {
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// The verify session the token is bound to, if any.
    pub sid: Option<Box<str>>,
    /// Customer metadata, the signer's JSON text.
    pub md: Option<Box<serde_json::value::RawValue>>,
}

/// [`Claims`] read in place from a decoded payload: the same fields with
/// the same requirements (a derived `Deserialize` refuses a missing or
/// repeated field alike), the strings borrowed unless they hold escapes.
#[derive(Deserialize)]
#[allow(dead_code)] // `iss`, `sub`, `iat`, `jti`: required, never read
struct ClaimsRef<'a> {
    #[serde(borrow)]
    iss: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    aud: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    sub: std::borrow::Cow<'a, str>,
    iat: i64,
    exp: i64,
    #[serde(borrow)]
    jti: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    sid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    md: Option<&'a serde_json::value::RawValue>,
}

/// Any JSON value, read the way a `serde_json::Value` is read
/// (`deserialize_any`: numbers converted, so one out of `f64`'s range is
/// refused; string escapes decoded, so a lone surrogate is refused) and
/// kept nowhere. `IgnoredAny` would only scan, as `RawValue` does.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> serde::de::Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// `aud` must name `expected_aud`, and `exp` be after `now_unix`.
fn check_aud_exp(aud: &str, exp: i64, now_unix: i64, expected_aud: &str) -> Result<(), JwtError> {
    if aud != expected_aud {
        return Err(JwtError::WrongProject);
    }
    if now_unix >= exp {
        return Err(JwtError::Expired);
    }
    Ok(())
}

/// Decoded payloads up to this size are decoded on the stack (ours are
/// about 200 bytes with metadata); larger ones, up to what
/// [`MAX_TOKEN_LEN`] allows, into a buffer of their own.
const STACK_PAYLOAD: usize = 768;

/// The syntax, key and signature checks of [`verify`], then `read` over the
/// decoded payload.
fn verify_with<R>(
    token: &str,
    keys: &VerifyKeys,
    read: impl FnOnce(&[u8]) -> Result<R, JwtError>,
) -> Result<R, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    if !is_b64url_segment(header_b64)
        || !is_b64url_segment(payload_b64)
        || !is_b64url_segment(sig_b64)
        || header_b64.len() > MAX_HEADER_B64
    {
        return Err(JwtError::Malformed);
    }

    let key = match keys.find_by_header(header_b64) {
        Some(key) => key,
        None => key_from_header(keys, header_b64)?,
    };
    let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    check_signature(key, signing_input, sig_b64)?;

    // base64's own bound for the output (a whole group per partial one).
    if payload_b64.len().div_ceil(4) * 3 <= STACK_PAYLOAD {
        let mut buf = [0u8; STACK_PAYLOAD];
        let len = URL_SAFE_NO_PAD
            .decode_slice(payload_b64, &mut buf)
            .map_err(|_| JwtError::Malformed)?;
        read(&buf[..len])
    } else {
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| JwtError::Malformed)?;
        read(&payload)
    }
}

/// Whether the key named by `token`'s header is still among `keys`; the
/// signature is not checked. For caches of verified tokens: a token
/// verified before its key left the configuration (an emergency rotation)
/// must not keep being answered from the cache.
pub fn signed_by_known_key(token: &str, keys: &VerifyKeys) -> bool {
    let header_b64 = token.split('.').next().unwrap_or_default();
    if header_b64.len() > MAX_HEADER_B64 || !is_b64url_segment(header_b64) {
        return false;
    }
    keys.find_by_header(header_b64).is_some() || key_from_header(keys, header_b64).is_ok()
}

/// `header_b64 . payload_b64`, with room for the signature that follows.
fn signing_input(
    header_b64: &str,
    claims: &(impl Serialize + ?Sized),
    sig_b64_len: usize,
) -> String {
    let payload =
        serde_json::to_vec(claims).expect("claims always serialize: string keys, finite numbers");
    let payload_b64_len = (payload.len() * 4).div_ceil(3);
    let mut s = String::with_capacity(header_b64.len() + payload_b64_len + sig_b64_len + 2);
    s.push_str(header_b64);
    s.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut s);
    s
}

/// Decodes a header we did not mint byte for byte (another JWT library's
/// field order, extra fields) and finds its key. The key found by `kid`, not
/// the header, decides the algorithm; the header's `alg` must merely agree.
fn key_from_header<'k>(keys: &'k VerifyKeys, header_b64: &str) -> Result<KeyRef<'k>, JwtError> {
    let mut buf = [0u8; MAX_HEADER_B64 / 4 * 3];
    let len = URL_SAFE_NO_PAD
        .decode_slice(header_b64, &mut buf)
        .map_err(|_| JwtError::Malformed)?;
    let header: Header<'_> =
        serde_json::from_slice(&buf[..len]).map_err(|_| JwtError::Malformed)?;
    if header.crit.is_some() {
        return Err(JwtError::Malformed);
    }
    let kid = header.kid.ok_or(JwtError::BadSignature)?;
    match (keys.find(kid), header.alg) {
        (Some(key @ KeyRef::Hs256(_)), "HS256") | (Some(key @ KeyRef::Ed25519(_)), "EdDSA") => {
            Ok(key)
        }
        _ => Err(JwtError::BadSignature),
    }
}

/// Checks the signature of `input` with `key`, by the key's algorithm.
fn check_signature(key: KeyRef<'_>, input: &[u8], sig_b64: &str) -> Result<(), JwtError> {
    match key {
        KeyRef::Hs256(key) => {
            let mut sig = [0u8; 32];
            if !decode_exact(sig_b64, HS256_SIG_B64, &mut sig) {
                return Err(JwtError::BadSignature);
            }
            hmac::verify(&key.key, input, &sig).map_err(|_| JwtError::BadSignature)
        }
        KeyRef::Ed25519(key) => {
            let mut sig = [0u8; 64];
            if !decode_exact(sig_b64, ED25519_SIG_B64, &mut sig) {
                return Err(JwtError::BadSignature);
            }
            UnparsedPublicKey::new(&ED25519, &key.public)
                .verify(input, &sig)
                .map_err(|_| JwtError::BadSignature)
        }
    }
}

/// Non-empty, base64url alphabet only, and a length unpadded base64 can have.
///
/// Every byte is checked, without stopping at the first bad one: a loop
/// with no early exit is one LLVM vectorises (16 bytes a step), where
/// `.all(…)` tested a byte at a time. Over an uncached token-verify's
/// ~300 bytes the byte loop was about 95 % of `verify`'s own samples in a
/// `perf` profile of the route (BENCHMARKS.md, "Uncached token-verify:
/// the base64url check, vectorised": −15.7 % on the `token_hs256/verify`
/// criterion bench). A token
/// is at most [`MAX_TOKEN_LEN`] bytes, so reading a bad one to its end
/// costs nothing an attacker can grow.
fn is_b64url_segment(s: &str) -> bool {
    !s.is_empty() && s.len() % 4 != 1 && s.bytes().fold(true, |ok, b| ok & is_b64url_byte(b))
}

/// `b.is_ascii_alphanumeric() || b == b'-' || b == b'_'`, as range checks
/// with no branch (held equal over all 256 bytes by `tests`).
#[inline]
fn is_b64url_byte(b: u8) -> bool {
    (b.wrapping_sub(b'A') < 26)
        | (b.wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'_')
}

/// Decodes `s` into all of `out`, requiring the exact encoded length and
/// canonical trailing bits (one spelling per signature).
fn decode_exact(s: &str, encoded_len: usize, out: &mut [u8]) -> bool {
    s.len() == encoded_len && URL_SAFE_NO_PAD.decode_slice(s, out).ok() == Some(out.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The branch-free byte test is the alphabet the standard library's
    /// predicates spell, for every byte; and a segment is refused for one
    /// bad byte wherever it sits.
    #[test]
    fn the_base64url_alphabet_is_the_standard_predicates() {
        for b in 0..=255u8 {
            assert_eq!(
                is_b64url_byte(b),
                b.is_ascii_alphanumeric() || b == b'-' || b == b'_',
                "byte {b}"
            );
        }
        let good = "eyJhbGciOiJIUzI1NiJ9-_".repeat(20);
        assert!(is_b64url_segment(&good[..good.len() - 2]));
        for bad in [b'=', b'+', b'/', b'.', b' ', 0, 0x80, 0xff] {
            for at in [0, 1, 15, 16, 17, 200, 437] {
                let mut v = good.as_bytes()[..438].to_vec();
                v[at] = bad;
                let s = String::from_utf8_lossy(&v);
                assert!(!is_b64url_segment(&s), "byte {bad} at {at}");
            }
        }
        assert!(!is_b64url_segment(""));
        assert!(
            !is_b64url_segment("abcde"),
            "a length no unpadded base64 has"
        );
    }

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "https://engine.test".into(),
            aud: "prj_a".into(),
            sub: "user-1".into(),
            iat: 1_000,
            exp,
            jti: "tok_1".into(),
            sid: None,
            md: None,
        }
    }

    #[test]
    fn header_and_kid_have_the_documented_shape() {
        let key = Hs256Key::from_raw([7u8; 32]);
        assert!(key.kid().starts_with("hs1-"));
        assert_eq!(key.kid().len(), 12);
        let token = sign_hs256(&claims(2_000), &key);
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(header).unwrap(),
            format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, key.kid())
        );
        let signer = Ed25519Signer::from_pkcs8(&Ed25519Signer::generate_pkcs8()).unwrap();
        assert!(signer.kid().starts_with("ed1-"));
        assert_eq!(signer.kid().len(), 12);
    }

    #[test]
    fn a_token_is_known_only_while_its_key_is_among_the_keys() {
        let (old, new) = (Hs256Key::from_raw([7u8; 32]), Hs256Key::from_raw([8u8; 32]));
        let token = sign_hs256(&claims(2_000), &old);
        let both = VerifyKeys::new().with_hs256(new.clone()).with_hs256(old);
        assert!(signed_by_known_key(&token, &both));
        let rotated = VerifyKeys::new().with_hs256(new);
        assert!(!signed_by_known_key(&token, &rotated));
        assert!(!signed_by_known_key("not a token", &both));
        assert!(!signed_by_known_key("", &both));
    }

    #[test]
    fn none_fields_are_omitted() {
        let token = sign_hs256(&claims(2_000), &Hs256Key::from_raw([7u8; 32]));
        let payload = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert!(json.get("sid").is_none() && json.get("md").is_none());
    }

    #[test]
    fn expiry_has_zero_leeway() {
        let key = Hs256Key::from_raw([7u8; 32]);
        let keys = VerifyKeys::new().with_hs256(key.clone());
        let token = sign_hs256(&claims(2_000), &key);
        assert!(verify(&token, &keys, 1_999, "prj_a").is_ok());
        assert_eq!(
            verify(&token, &keys, 2_000, "prj_a"),
            Err(JwtError::Expired)
        );
        assert_eq!(
            verify(&token, &keys, 2_001, "prj_a"),
            Err(JwtError::Expired)
        );
    }

    #[test]
    fn reasons_match_the_product_contract() {
        for (e, r) in [
            (JwtError::Malformed, "malformed"),
            (JwtError::BadSignature, "bad_signature"),
            (JwtError::Expired, "expired"),
            (JwtError::WrongProject, "wrong_project"),
        ] {
            assert_eq!(e.reason(), r);
            assert_eq!(e.to_string(), r);
        }
    }

    #[test]
    fn crit_header_is_refused() {
        let key = Hs256Key::from_raw([7u8; 32]);
        let keys = VerifyKeys::new().with_hs256(key.clone());
        let header = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"HS256","kid":"{}","crit":["exp"]}}"#,
            key.kid()
        ));
        let token = sign_hs256(&claims(2_000), &key);
        let payload = token.split('.').nth(1).unwrap();
        let input = format!("{header}.{payload}");
        let tag = hmac::sign(&key.key, input.as_bytes());
        let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_eq!(
            verify(&forged, &keys, 1_500, "prj_a"),
            Err(JwtError::Malformed)
        );
    }

    /// Signs `payload` (any text) as an HS256 token under `key`.
    fn sign_payload(payload: &str, key: &Hs256Key) -> String {
        let header = sign_hs256(&claims(2_000), key);
        let header = header.split('.').next().unwrap();
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
        let tag = hmac::sign(&key.key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// `verify_facts` refuses what `verify` refuses, for the same reason,
    /// and keeps of what both accept the expiry, session and metadata
    /// `verify` gives: over missing, mistyped, repeated and escaped fields,
    /// `null` and nested metadata, and payloads on both sides of the stack
    /// buffer's size.
    #[test]
    fn verify_facts_decides_as_verify_does() {
        let key = Hs256Key::from_raw([7u8; 32]);
        let keys = VerifyKeys::new().with_hs256(key.clone());
        let base = r#""iss":"https://e","aud":"prj_a","sub":"u","iat":1000,"exp":2000,"jti":"t1""#;
        let long = "x".repeat(STACK_PAYLOAD);
        let mut payloads: Vec<String> = [
            format!("{{{base}}}"),
            format!(r#"{{{base},"sid":"ses_1","md":{{"plan":"pro","n":[1,2.5,null]}}}}"#),
            format!(r#"{{{base},"md":null,"sid":null}}"#),
            format!(r#"{{{base},"md":"plain","sid":"ses_"qé"}}"#),
            format!(r#"{{ {base} , "md" : {{ "b" : 1 , "a" : {{}} }} , "extra": [1] }}"#),
            format!(r#"{{{base},"md":{{"pad":"{long}"}}}}"#),
            r#"{"iss":"https://e","aud":"prj_a","sub":"u","iat":1000,"exp":2000,"jti":"t1"}"#
                .into(),
            r#"{"iss":"https://e","aud":"prj_b","sub":"u","iat":1000,"exp":2000,"jti":"t1"}"#
                .into(),
            r#"{"iss":"https://e","aud":"prj_a","sub":"u","iat":1000,"exp":1500,"jti":"t1"}"#
                .into(),
            r#"{"iss":"https://e","aud":"prj_a","iat":1000,"exp":2000,"jti":"t1"}"#.into(),
            r#"{"iss":"https://e","aud":"prj_a","sub":"u","iat":"1000","exp":2000,"jti":"t1"}"#
                .into(),
            format!(r#"{{{base},"aud":"prj_a"}}"#),
            format!(r#"{{{base},"md":{{"a":}}}}"#),
            format!(r#"{{{base},"sid":7}}"#),
            // Metadata a raw scan would pass and a parsed value refuses.
            format!(r#"{{{base},"md":{{"n":1e400}}}}"#),
            format!(r#"{{{base},"md":[-1e309]}}"#),
            format!(r#"{{{base},"md":"\ud800"}}"#),
            format!(r#"{{{base},"md":{{"s":"\udc00x"}}}}"#),
            format!(r#"{{{base},"md":{{"a":1,"a":2}}}}"#),
            format!("{{{base}}} trailing"),
            "[1,2]".into(),
            "not json".into(),
            String::new(),
        ]
        .into();
        // Payload lengths around the stack buffer's bound.
        for pad in STACK_PAYLOAD - 140..STACK_PAYLOAD - 100 {
            payloads.push(format!(r#"{{{base},"md":"{}"}}"#, "y".repeat(pad)));
        }
        for payload in &payloads {
            let token = sign_payload(payload, &key);
            let full = verify(&token, &keys, 1_600, "prj_a");
            let facts = verify_facts(&token, &keys, 1_600, "prj_a");
            match (&full, &facts) {
                (Ok(c), Ok(f)) => {
                    assert_eq!(f.exp, c.exp, "{payload}");
                    assert_eq!(f.sid.as_deref(), c.sid.as_deref(), "{payload}");
                    let md: Option<serde_json::Value> =
                        f.md.as_ref()
                            .map(|m| serde_json::from_str(m.get()).unwrap());
                    assert_eq!(md, c.md, "{payload}");
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "{payload}"),
                _ => panic!("{payload}: verify {full:?}, verify_facts {facts:?}"),
            }
        }
        // Not a vacuous table: some accepted, each refusal reason seen.
        let results: Vec<_> = payloads
            .iter()
            .map(|p| verify_facts(&sign_payload(p, &key), &keys, 1_600, "prj_a").err())
            .collect();
        assert!(results.iter().filter(|r| r.is_none()).count() >= 8);
        for e in [
            JwtError::Malformed,
            JwtError::Expired,
            JwtError::WrongProject,
        ] {
            assert!(results.contains(&Some(e)), "{e:?}");
        }
        // The metadata is kept as written (a repeated key too: a parsed
        // value kept the last).
        let token = sign_payload(&payloads[4], &key);
        let f = verify_facts(&token, &keys, 1_600, "prj_a").unwrap();
        assert_eq!(f.md.unwrap().get(), r#"{ "b" : 1 , "a" : {} }"#);
        let dup = format!(r#"{{{base},"md":{{"a":1,"a":2}}}}"#);
        let f = verify_facts(&sign_payload(&dup, &key), &keys, 1_600, "prj_a").unwrap();
        assert_eq!(f.md.unwrap().get(), r#"{"a":1,"a":2}"#);
        // The signature is checked: one flipped byte of it is refused.
        let token = sign_payload(&payloads[1], &key);
        let (rest, sig) = token.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        let forged = format!("{rest}.{flipped}{}", &sig[1..]);
        assert_eq!(
            verify_facts(&forged, &keys, 1_600, "prj_a").unwrap_err(),
            JwtError::BadSignature
        );
        let other = VerifyKeys::new().with_hs256(Hs256Key::from_raw([8u8; 32]));
        assert_eq!(
            verify_facts(&token, &other, 1_600, "prj_a").unwrap_err(),
            JwtError::BadSignature
        );
    }

    /// A view signs the very bytes its owned claims sign.
    #[test]
    fn a_claims_view_serialises_as_its_claims() {
        let key = Hs256Key::from_raw([7u8; 32]);
        for (sid, md) in [
            (None, None),
            (Some("ses_\"1\u{e9}"), None),
            (None, Some(serde_json::json!({"b": [1, 2.5], "a": "x\\y"}))),
            (Some("ses_2"), Some(serde_json::json!("plain"))),
        ] {
            let owned = Claims {
                iss: "qyzar".into(),
                aud: "prj_\u{2028}".into(),
                sub: "a@x".into(),
                iat: 1_000,
                exp: 2_000,
                jti: "tok_1".into(),
                sid: sid.map(str::to_owned),
                md: md.clone(),
            };
            let view = ClaimsView {
                iss: &owned.iss,
                aud: &owned.aud,
                sub: &owned.sub,
                iat: owned.iat,
                exp: owned.exp,
                jti: &owned.jti,
                sid,
                md: md.as_ref(),
            };
            assert_eq!(
                serde_json::to_string(&view).unwrap(),
                serde_json::to_string(&owned).unwrap()
            );
            assert_eq!(sign_hs256(&view, &key), sign_hs256(&owned, &key));
        }
    }
}
