//! Client-token signing and verification behind one trait: the hand-written
//! path in `qyzar_shared::crypto` against the `jsonwebtoken` crate.
//!
//! Both sides do the same checks on verify (signature, `aud`, `exp` with no
//! leeway) and produce the same [`Claims`], so the bench measures what the
//! hand-written path saves: no JSON parse of headers we minted ourselves, a
//! precomputed HMAC key, one allocation for the payload.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use qyzar_shared::crypto::{
    sign_eddsa, sign_hs256, verify, verify_facts, Claims, Ed25519Signer, Hs256Key, TokenFacts,
    VerifyKeys,
};

use crate::fixtures::AUDIENCE;

/// Signs and verifies client tokens under one key.
pub trait TokenCodec {
    /// The label in bench output.
    fn name(&self) -> &'static str;
    /// A compact JWS of `claims`.
    fn sign(&self, claims: &Claims) -> String;
    /// The claims of a valid token for [`AUDIENCE`], or `None`.
    fn verify(&self, token: &str) -> Option<Claims>;
}

/// Qyzar's own HS256 path.
pub struct QyzarHs256 {
    key: Hs256Key,
    keys: VerifyKeys,
    now: i64,
}

impl QyzarHs256 {
    /// A codec for `raw`, verifying as of `now` (Unix seconds).
    pub fn new(raw: [u8; 32], now: i64) -> Self {
        let key = Hs256Key::from_raw(raw);
        Self {
            keys: VerifyKeys::new().with_hs256(key.clone()),
            key,
            now,
        }
    }

    /// What `token-verify` runs on a cache miss: the same checks, keeping
    /// only the answer's facts (`verify_facts`).
    pub fn verify_facts(&self, token: &str) -> Option<TokenFacts> {
        verify_facts(token, &self.keys, self.now, AUDIENCE).ok()
    }
}

impl TokenCodec for QyzarHs256 {
    fn name(&self) -> &'static str {
        "qyzar"
    }
    fn sign(&self, claims: &Claims) -> String {
        sign_hs256(claims, &self.key)
    }
    fn verify(&self, token: &str) -> Option<Claims> {
        verify(token, &self.keys, self.now, AUDIENCE).ok()
    }
}

/// Qyzar's own EdDSA path.
pub struct QyzarEdDsa {
    signer: Ed25519Signer,
    keys: VerifyKeys,
    now: i64,
}

impl QyzarEdDsa {
    /// A codec for a PKCS#8 Ed25519 key, verifying as of `now`.
    pub fn new(pkcs8: &[u8], now: i64) -> Self {
        let signer = Ed25519Signer::from_pkcs8(pkcs8).expect("a freshly generated key loads");
        Self {
            keys: VerifyKeys::new().with_ed25519(signer.verifier().clone()),
            signer,
            now,
        }
    }
}

impl TokenCodec for QyzarEdDsa {
    fn name(&self) -> &'static str {
        "qyzar"
    }
    fn sign(&self, claims: &Claims) -> String {
        sign_eddsa(claims, &self.signer)
    }
    fn verify(&self, token: &str) -> Option<Claims> {
        verify(token, &self.keys, self.now, AUDIENCE).ok()
    }
}

/// The `jsonwebtoken` crate with the same key, `kid`, and checks.
pub struct JwtCrate {
    header: Header,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtCrate {
    /// HS256 under `raw`, with the `kid` Qyzar would give that key.
    pub fn hs256(raw: [u8; 32]) -> Self {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(Hs256Key::from_raw(raw).kid().to_owned());
        Self::new(
            header,
            EncodingKey::from_secret(&raw),
            DecodingKey::from_secret(&raw),
        )
    }

    /// EdDSA under a PKCS#8 Ed25519 key.
    pub fn eddsa(pkcs8: &[u8]) -> Self {
        let signer = Ed25519Signer::from_pkcs8(pkcs8).expect("a freshly generated key loads");
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.kid().to_owned());
        Self::new(
            header,
            EncodingKey::from_ed_der(pkcs8),
            // ring (under jsonwebtoken) takes the raw 32-byte public key here.
            DecodingKey::from_ed_der(signer.verifier().public_key()),
        )
    }

    fn new(header: Header, encoding: EncodingKey, decoding: DecodingKey) -> Self {
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 0;
        Self {
            header,
            encoding,
            decoding,
            validation,
        }
    }
}

impl TokenCodec for JwtCrate {
    fn name(&self) -> &'static str {
        "jsonwebtoken"
    }
    fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&self.header, claims, &self.encoding).expect("claims serialize")
    }
    fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{claims, now_unix};

    fn pairs() -> Vec<(Box<dyn TokenCodec>, Box<dyn TokenCodec>)> {
        let now = now_unix();
        let pkcs8 = Ed25519Signer::generate_pkcs8();
        vec![
            (
                Box::new(QyzarHs256::new([7; 32], now)),
                Box::new(JwtCrate::hs256([7; 32])),
            ),
            (
                Box::new(QyzarEdDsa::new(&pkcs8, now)),
                Box::new(JwtCrate::eddsa(&pkcs8)),
            ),
        ]
    }

    /// Each side verifies the other's tokens, so both do the same work on
    /// the same input and the bench compares like with like.
    #[test]
    fn both_sides_accept_each_others_tokens() {
        let c = claims(now_unix());
        for (ours, theirs) in pairs() {
            assert_eq!(ours.verify(&ours.sign(&c)), Some(c.clone()));
            assert_eq!(theirs.verify(&theirs.sign(&c)), Some(c.clone()));
            assert_eq!(theirs.verify(&ours.sign(&c)), Some(c.clone()));
            assert_eq!(ours.verify(&theirs.sign(&c)), Some(c.clone()));
        }
    }

    #[test]
    fn both_sides_refuse_a_tampered_or_foreign_token() {
        let now = now_unix();
        let c = claims(now);
        for (ours, theirs) in pairs() {
            // Change one signature character well before the last one, whose
            // low bits are padding: the signature, not its encoding, must fail.
            let mut token = ours.sign(&c).into_bytes();
            let at = token.len() - 10;
            token[at] = if token[at] == b'A' { b'B' } else { b'A' };
            let token = String::from_utf8(token).expect("base64url is ascii");
            assert_eq!(ours.verify(&token), None);
            assert_eq!(theirs.verify(&token), None);
        }
        let mut other = c;
        other.aud = "prj_someone_else".into();
        let (ours, theirs) = (QyzarHs256::new([7; 32], now), JwtCrate::hs256([7; 32]));
        assert_eq!(ours.verify(&ours.sign(&other)), None);
        assert_eq!(theirs.verify(&theirs.sign(&other)), None);
    }
}
