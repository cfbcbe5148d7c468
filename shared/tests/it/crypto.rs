//! Client tokens against an independent JWT implementation (`jsonwebtoken`),
//! the refusals `token-verify` must give, and the key derivation customers
//! are told to reproduce.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use qyzar_shared::crypto::{
    client_token_key, sign_eddsa, sign_hs256, verify, Claims, CryptoError, Ed25519Signer,
    Ed25519Verifier, Hs256Key, JwtError, ProjectSecret, VerifyKeys, CLIENT_TOKEN_SALT,
    MAX_TOKEN_LEN,
};
use qyzar_shared::ids::ProjectId;
use ring::hmac;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A project with its secret, HS256 key and an Ed25519 signer.
struct Project {
    id: ProjectId,
    secret: ProjectSecret,
    hs: Hs256Key,
    ed_pkcs8: Vec<u8>,
    ed: Ed25519Signer,
}

impl Project {
    fn new() -> Self {
        let id = ProjectId::generate();
        let secret = ProjectSecret::generate();
        let hs = client_token_key(&secret, &id);
        let ed_pkcs8 = Ed25519Signer::generate_pkcs8();
        let ed = Ed25519Signer::from_pkcs8(&ed_pkcs8).expect("fresh pkcs8 loads");
        Self {
            id,
            secret,
            hs,
            ed_pkcs8,
            ed,
        }
    }

    fn keys(&self) -> VerifyKeys {
        VerifyKeys::new()
            .with_hs256(self.hs.clone())
            .with_ed25519(self.ed.verifier().clone())
    }

    fn claims(&self) -> Claims {
        let now = now();
        Claims {
            iss: "https://engine.qyzar.test".into(),
            aud: self.id.as_str().into(),
            sub: "user-42".into(),
            iat: now,
            exp: now + 300,
            jti: "tok_abc".into(),
            sid: Some("ses_0123456789abcdef".into()),
            md: Some(serde_json::json!({"email": "a@b.test", "tier": {"level": 3}})),
        }
    }

    fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        verify(token, &self.keys(), now(), self.id.as_str())
    }
}

fn their_validation(alg: Algorithm, aud: &str) -> Validation {
    let mut v = Validation::new(alg);
    v.set_audience(&[aud]);
    v.leeway = 0;
    v
}

/// Re-signs `header_json.payload` with an arbitrary HMAC key, as an attacker
/// who controls the header would.
fn forge_hs256(header_json: &str, payload_b64: &str, hmac_key: &[u8]) -> String {
    let input = format!("{}.{payload_b64}", URL_SAFE_NO_PAD.encode(header_json));
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, hmac_key),
        input.as_bytes(),
    );
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fn segments(token: &str) -> Vec<&str> {
    token.split('.').collect()
}

// ---- interoperability -------------------------------------------------------

#[test]
fn our_hs256_tokens_verify_with_jsonwebtoken() {
    let p = Project::new();
    let claims = p.claims();
    let token = sign_hs256(&claims, &p.hs);
    let theirs = jsonwebtoken::decode::<Claims>(
        &token,
        &DecodingKey::from_secret(p.hs.raw()),
        &their_validation(Algorithm::HS256, p.id.as_str()),
    )
    .expect("jsonwebtoken accepts our HS256 token");
    assert_eq!(theirs.claims, claims);
    assert_eq!(theirs.header.kid.as_deref(), Some(p.hs.kid()));
    assert_eq!(theirs.header.alg, Algorithm::HS256);
}

#[test]
fn our_eddsa_tokens_verify_with_jsonwebtoken() {
    let p = Project::new();
    let claims = p.claims();
    let token = sign_eddsa(&claims, &p.ed);
    let validation = their_validation(Algorithm::EdDSA, p.id.as_str());
    let jwk = p.ed.verifier().jwk();
    let x = jwk["x"].as_str().expect("jwk has x");
    for key in [
        DecodingKey::from_ed_components(x).expect("jwk x decodes"),
        DecodingKey::from_ed_der(p.ed.verifier().public_key()),
    ] {
        let theirs = jsonwebtoken::decode::<Claims>(&token, &key, &validation)
            .expect("jsonwebtoken accepts our EdDSA token");
        assert_eq!(theirs.claims, claims);
        assert_eq!(theirs.header.kid.as_deref(), Some(p.ed.kid()));
    }
}

#[test]
fn jsonwebtoken_hs256_tokens_verify_with_ours() {
    let p = Project::new();
    let claims = p.claims();
    let header = Header {
        kid: Some(p.hs.kid().to_owned()),
        ..Header::new(Algorithm::HS256)
    };
    let token =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(p.hs.raw())).unwrap();
    assert_eq!(p.verify(&token), Ok(claims));
}

#[test]
fn jsonwebtoken_eddsa_tokens_verify_with_ours() {
    let p = Project::new();
    let claims = p.claims();
    let header = Header {
        kid: Some(p.ed.kid().to_owned()),
        ..Header::new(Algorithm::EdDSA)
    };
    let token =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&p.ed_pkcs8)).unwrap();
    assert_eq!(p.verify(&token), Ok(claims));
}

#[test]
fn round_trip_with_both_algorithms_and_minimal_claims() {
    let p = Project::new();
    let mut claims = p.claims();
    assert_eq!(p.verify(&sign_hs256(&claims, &p.hs)), Ok(claims.clone()));
    assert_eq!(p.verify(&sign_eddsa(&claims, &p.ed)), Ok(claims.clone()));
    claims.sid = None;
    claims.md = None;
    assert_eq!(p.verify(&sign_hs256(&claims, &p.hs)), Ok(claims));
}

#[test]
fn previous_key_still_verifies_after_rotation() {
    let p = Project::new();
    let rotated = client_token_key(&ProjectSecret::generate(), &p.id);
    assert_ne!(
        rotated.kid(),
        p.hs.kid(),
        "rotating the secret changes the kid"
    );
    let keys = VerifyKeys::new()
        .with_hs256(rotated.clone())
        .with_hs256(p.hs.clone());
    let claims = p.claims();
    for key in [&rotated, &p.hs] {
        let token = sign_hs256(&claims, key);
        assert_eq!(
            verify(&token, &keys, now(), p.id.as_str()),
            Ok(claims.clone())
        );
    }
    // Once the previous key is dropped, its tokens are refused.
    let only_new = VerifyKeys::new().with_hs256(rotated);
    let old = sign_hs256(&claims, &p.hs);
    assert_eq!(
        verify(&old, &only_new, now(), p.id.as_str()),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn jwks_entry_has_the_published_shape() {
    let p = Project::new();
    let v = p.ed.verifier();
    let jwk = v.jwk();
    assert_eq!(
        jwk,
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(v.public_key()),
            "kid": v.kid(),
            "alg": "EdDSA",
            "use": "sig",
        })
    );
    let back = Ed25519Verifier::from_public_key(
        &URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(&back, v);
}

#[test]
fn bad_key_material_is_refused() {
    assert_eq!(
        Ed25519Signer::from_pkcs8(b"not a key").unwrap_err(),
        CryptoError::InvalidKey
    );
    assert_eq!(
        Ed25519Verifier::from_public_key(&[0u8; 31]).unwrap_err(),
        CryptoError::InvalidKey
    );
}

// ---- refusals ---------------------------------------------------------------

#[test]
fn tampered_payload_is_refused() {
    let p = Project::new();
    for token in [
        sign_hs256(&p.claims(), &p.hs),
        sign_eddsa(&p.claims(), &p.ed),
    ] {
        let s = segments(&token);
        let mut evil = p.claims();
        evil.sub = "admin".into();
        let evil_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).unwrap());
        let forged = format!("{}.{evil_payload}.{}", s[0], s[2]);
        assert_eq!(p.verify(&forged), Err(JwtError::BadSignature));
    }
}

#[test]
fn tampered_signature_is_refused() {
    let p = Project::new();
    for token in [
        sign_hs256(&p.claims(), &p.hs),
        sign_eddsa(&p.claims(), &p.ed),
    ] {
        let s = segments(&token);
        let mut sig = URL_SAFE_NO_PAD.decode(s[2]).unwrap();
        sig[0] ^= 0x01;
        let forged = format!("{}.{}.{}", s[0], s[1], URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(p.verify(&forged), Err(JwtError::BadSignature));
        // A non-canonical spelling of the last character is refused too.
        let mut respelled = s[2].to_owned();
        let last = respelled.pop().unwrap();
        respelled.push(if last == 'A' { 'B' } else { 'A' });
        let forged = format!("{}.{}.{respelled}", s[0], s[1]);
        assert_eq!(p.verify(&forged), Err(JwtError::BadSignature));
        // Truncated signature.
        let forged = format!("{}.{}.{}", s[0], s[1], &s[2][..s[2].len() - 4]);
        assert_eq!(p.verify(&forged), Err(JwtError::BadSignature));
    }
}

#[test]
fn expired_token_is_refused() {
    let p = Project::new();
    let mut claims = p.claims();
    claims.exp = now() - 1;
    assert_eq!(
        p.verify(&sign_hs256(&claims, &p.hs)),
        Err(JwtError::Expired)
    );
    assert_eq!(
        p.verify(&sign_eddsa(&claims, &p.ed)),
        Err(JwtError::Expired)
    );
    // Zero leeway: expired from the very second `exp` names.
    claims.exp = 1_000;
    let token = sign_hs256(&claims, &p.hs);
    assert!(verify(&token, &p.keys(), 999, p.id.as_str()).is_ok());
    assert_eq!(
        verify(&token, &p.keys(), 1_000, p.id.as_str()),
        Err(JwtError::Expired)
    );
}

#[test]
fn alg_none_is_refused() {
    let p = Project::new();
    let token = sign_hs256(&p.claims(), &p.hs);
    let payload = segments(&token)[1];
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, p.hs.kid()));
    // Unsecured JWS has an empty signature: not even well-formed for us.
    assert_eq!(
        p.verify(&format!("{header}.{payload}.")),
        Err(JwtError::Malformed)
    );
    // With the original signature kept, `alg` no longer matches the key.
    let sig = segments(&token)[2];
    assert_eq!(
        p.verify(&format!("{header}.{payload}.{sig}")),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn algorithm_swap_is_refused() {
    let p = Project::new();
    let payload_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&p.claims()).unwrap());

    // HS256 token under the EdDSA kid, HMAC-keyed with the public key bytes
    // (the classic RS256/HS256 confusion, here with Ed25519).
    let forged = forge_hs256(
        &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, p.ed.kid()),
        &payload_b64,
        p.ed.verifier().public_key(),
    );
    assert_eq!(p.verify(&forged), Err(JwtError::BadSignature));

    // An EdDSA-signed token whose header names the HS256 kid.
    let header = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#,
        p.hs.kid()
    ));
    let input = format!("{header}.{payload_b64}");
    let eddsa_token = sign_eddsa(&p.claims(), &p.ed);
    let their = jsonwebtoken::encode(
        &Header {
            kid: Some(p.hs.kid().to_owned()),
            ..Header::new(Algorithm::EdDSA)
        },
        &p.claims(),
        &EncodingKey::from_ed_der(&p.ed_pkcs8),
    )
    .unwrap();
    assert_eq!(p.verify(&their), Err(JwtError::BadSignature));
    let sig = segments(&eddsa_token)[2];
    assert_eq!(
        p.verify(&format!("{input}.{sig}")),
        Err(JwtError::BadSignature)
    );

    // A genuine HS256 token relabelled as EdDSA.
    let hs_token = sign_hs256(&p.claims(), &p.hs);
    let s = segments(&hs_token);
    let relabelled = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#,
        p.hs.kid()
    ));
    assert_eq!(
        p.verify(&format!("{relabelled}.{}.{}", s[1], s[2])),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn wrong_key_is_refused() {
    let p = Project::new();
    let other = Project::new();
    // Another project's keys: unknown kids.
    assert_eq!(
        p.verify(&sign_hs256(&p.claims(), &other.hs)),
        Err(JwtError::BadSignature)
    );
    assert_eq!(
        p.verify(&sign_eddsa(&p.claims(), &other.ed)),
        Err(JwtError::BadSignature)
    );
    // Our kid in the header, signed with another key.
    let payload_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&p.claims()).unwrap());
    let forged = forge_hs256(
        &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, p.hs.kid()),
        &payload_b64,
        other.hs.raw(),
    );
    assert_eq!(p.verify(&forged), Err(JwtError::BadSignature));
    // The derivation is bound to the project id: same secret, other project.
    let sibling = client_token_key(&p.secret, &other.id);
    assert_eq!(
        p.verify(&sign_hs256(&p.claims(), &sibling)),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn unknown_or_missing_kid_is_refused() {
    let p = Project::new();
    let payload_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&p.claims()).unwrap());
    for header in [
        r#"{"alg":"HS256","typ":"JWT","kid":"hs1-00000000"}"#,
        r#"{"alg":"HS256","typ":"JWT"}"#,
    ] {
        let forged = forge_hs256(header, &payload_b64, p.hs.raw());
        assert_eq!(p.verify(&forged), Err(JwtError::BadSignature), "{header}");
    }
    let token = sign_hs256(&p.claims(), &p.hs);
    assert_eq!(
        verify(&token, &VerifyKeys::new(), now(), p.id.as_str()),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn wrong_audience_is_refused() {
    let p = Project::new();
    let token = sign_hs256(&p.claims(), &p.hs);
    assert_eq!(
        verify(&token, &p.keys(), now(), ProjectId::generate().as_str()),
        Err(JwtError::WrongProject)
    );
    let mut claims = p.claims();
    claims.aud = ProjectId::generate().as_str().into();
    assert_eq!(
        p.verify(&sign_eddsa(&claims, &p.ed)),
        Err(JwtError::WrongProject)
    );
}

#[test]
fn garbage_is_malformed() {
    let p = Project::new();
    let token = sign_hs256(&p.claims(), &p.hs);
    let s = segments(&token);
    let oversize = format!("{}.{}.{}", s[0], "A".repeat(MAX_TOKEN_LEN), s[2]);
    let cases = [
        String::new(),
        "garbage".into(),
        "a.b".into(),
        "..".into(),
        format!("{token}.{}", s[2]),
        format!("{}.{}", s[0], s[1]),
        format!("{}!.{}.{}", s[0], s[1], s[2]),
        format!("{}.{}.{}=", s[0], s[1], s[2]),
        format!("{} .{}.{}", s[0], s[1], s[2]),
        format!("{}A.{}.{}", s[0], s[1], s[2]),
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("not json"), s[1], s[2]),
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"kid":"x"}"#),
            s[1],
            s[2]
        ),
        format!("{}.{}.{}", "A".repeat(600), s[1], s[2]),
        oversize,
    ];
    for case in &cases {
        assert_eq!(
            p.verify(case),
            Err(JwtError::Malformed),
            "{}",
            &case[..case.len().min(80)]
        );
    }
}

#[test]
fn signed_but_invalid_claims_are_malformed() {
    let p = Project::new();
    let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, p.hs.kid());
    for payload in [
        "not json".to_owned(),
        r#"{"iss":"x","aud":"y"}"#.to_owned(),
        format!(
            r#"{{"iss":"x","aud":["{}"],"sub":"s","iat":1,"exp":9999999999,"jti":"j"}}"#,
            p.id
        ),
        format!(
            r#"{{"iss":"x","aud":"{0}","aud":"{0}","sub":"s","iat":1,"exp":9999999999,"jti":"j"}}"#,
            p.id
        ),
    ] {
        let forged = forge_hs256(&header, &URL_SAFE_NO_PAD.encode(&payload), p.hs.raw());
        assert_eq!(p.verify(&forged), Err(JwtError::Malformed), "{payload}");
    }
}

// ---- key derivation ---------------------------------------------------------

/// HKDF-SHA256 with L = 32 written out from RFC 5869 on top of plain HMAC:
/// PRK = HMAC(salt, IKM); OKM = T(1) = HMAC(PRK, info ‖ 0x01).
fn hkdf32_by_hand(ikm: &[u8], salt: &[u8], info: &[u8]) -> [u8; 32] {
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm);
    let mut msg = info.to_vec();
    msg.push(0x01);
    let t1 = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()), &msg);
    t1.as_ref().try_into().unwrap()
}

#[test]
fn documented_hs256_derivation_matches_an_independent_hkdf() {
    for _ in 0..8 {
        let p = Project::new();
        let expected = hkdf32_by_hand(
            p.secret.expose().as_bytes(),
            CLIENT_TOKEN_SALT.as_bytes(),
            p.id.as_str().as_bytes(),
        );
        assert_eq!(p.hs.raw(), &expected);
        assert_eq!(CLIENT_TOKEN_SALT, "qyzar/client-token/v1");
        // The documented kid: "hs1-" + 8 hex chars of SHA-256(key).
        let digest = ring::digest::digest(&ring::digest::SHA256, &expected);
        let hex: String = digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(p.hs.kid(), format!("hs1-{hex}"));
    }
}

#[test]
fn a_backend_with_only_the_secret_verifies_offline() {
    let p = Project::new();
    let token = sign_hs256(&p.claims(), &p.hs);
    // What a customer backend does: derive the key from the secret string and
    // project id it holds, then use any JWT library.
    let key = hkdf32_by_hand(
        p.secret.expose().as_bytes(),
        b"qyzar/client-token/v1",
        p.id.as_str().as_bytes(),
    );
    let theirs = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &DecodingKey::from_secret(&key),
        &their_validation(Algorithm::HS256, p.id.as_str()),
    )
    .expect("offline verification with the derived key");
    assert_eq!(theirs.claims["sub"], "user-42");
}
