//! Property-based fuzzing of the shared parsers that take outside bytes:
//! client tokens (JWT verify), the snapshot wire format, the settings
//! document, ids and emails, and the error body.
//!
//! Each property holds for every input: no panic, a refusal is a typed
//! error (for settings, an [`ApiError`] from the one table with a 4xx
//! status), and where an encoding exists, encode → decode gives the value
//! back. 256 cases per property by default so the suite stays fast;
//! `PROPTEST_CASES=100000 cargo test -p qyzar-shared --test it fuzz::` digs
//! deeper.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proptest::prelude::*;
use qyzar_shared::crypto::{
    sign_eddsa, sign_hs256, verify, Claims, Ed25519Signer, Hs256Key, JwtError, VerifyKeys,
};
use qyzar_shared::ids::{DeviceId, Email, ProjectId, SessionId, UserId};
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::snapshot::wire::{FORMAT_VERSION, HEADER_LEN, MAGIC};
use qyzar_shared::snapshot::{
    decode_delta, decode_snapshot, encode_snapshot, provision, Snapshot, SnapshotError,
};
use qyzar_shared::{ApiError, ErrorCode};
use serde_json::{json, Value};

/// 256 cases unless `PROPTEST_CASES` says otherwise (proptest reads it).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, up to a few levels deep: the shape of hostile input.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        // Quarters: exact in binary and in short decimal, so a float reads
        // back bit for bit without serde_json's `float_roundtrip`.
        (-4_000_000i32..4_000_000).prop_map(|n| json!(f64::from(n) / 4.0)),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The error body every refusal is answered with.
fn assert_shared_shape(e: &ApiError) {
    assert!((400..500).contains(&e.status()), "{e:?} is not a 4xx");
    assert!(ErrorCode::ALL.contains(&e.code));
    let body: Value = serde_json::from_slice(&e.to_json()).expect("the error body is JSON");
    assert_eq!(body["error"]["code"], e.code.as_str());
    assert!(body["error"]["message"].is_string());
}

// ---------------------------------------------------------------- JWTs

fn hs_key() -> Hs256Key {
    Hs256Key::from_raw([7u8; 32])
}

fn ed_signer() -> &'static Ed25519Signer {
    static SIGNER: std::sync::OnceLock<Ed25519Signer> = std::sync::OnceLock::new();
    SIGNER.get_or_init(|| {
        Ed25519Signer::from_pkcs8(&Ed25519Signer::generate_pkcs8()).expect("a fresh key")
    })
}

fn keys() -> VerifyKeys {
    VerifyKeys::new()
        .with_hs256(hs_key())
        .with_ed25519(ed_signer().verifier().clone())
}

fn claims() -> impl Strategy<Value = Claims> {
    (
        ".{0,16}",
        ".{0,40}",
        any::<i64>(),
        any::<i64>(),
        ".{0,16}",
        proptest::option::of(".{0,16}"),
        proptest::option::of(json_value()),
    )
        .prop_map(|(iss, sub, iat, exp, jti, sid, md)| Claims {
            iss,
            aud: "prj_a".into(),
            sub,
            iat,
            exp,
            jti,
            sid,
            // `null` metadata reads back as "absent".
            md: md.filter(|v| !v.is_null()),
        })
}

/// Base64url segments joined by dots: syntactically a compact JWS, so the
/// input gets past the syntax check into key lookup and header decoding.
fn jws_shaped() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        json_value().prop_map(|v| URL_SAFE_NO_PAD.encode(v.to_string())),
        Just(URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"nope"}"#)),
        Just(URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#)),
        "[A-Za-z0-9_-]{0,80}",
    ];
    (
        header,
        "[A-Za-z0-9_-]{0,120}",
        "[A-Za-z0-9_-]{0,100}",
        0usize..3,
    )
        .prop_map(|(h, p, s, extra)| {
            let mut t = format!("{h}.{p}.{s}");
            for _ in 0..extra {
                t.push('.');
            }
            t
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn jwt_verify_refuses_arbitrary_text(token in prop_oneof![".{0,300}", jws_shaped()]) {
        // No key of ours signed it, so it can never verify; it must not panic.
        let err = verify(&token, &keys(), 0, "prj_a").unwrap_err();
        prop_assert!(matches!(err, JwtError::Malformed | JwtError::BadSignature));
        prop_assert!(!err.reason().is_empty());
    }

    #[test]
    fn jwt_sign_then_verify_gives_the_claims_back(c in claims(), eddsa in any::<bool>(), now in any::<i64>()) {
        let token = if eddsa { sign_eddsa(&c, ed_signer()) } else { sign_hs256(&c, &hs_key()) };
        if token.len() > qyzar_shared::crypto::MAX_TOKEN_LEN {
            prop_assert_eq!(verify(&token, &keys(), now, "prj_a"), Err(JwtError::Malformed));
            return Ok(());
        }
        match verify(&token, &keys(), now, "prj_a") {
            Ok(back) => {
                prop_assert!(now < c.exp);
                prop_assert_eq!(back, c);
            }
            Err(JwtError::Expired) => prop_assert!(now >= c.exp),
            Err(e) => prop_assert!(false, "{:?} for a token we signed", e),
        }
        prop_assert_eq!(verify(&token, &keys(), i64::MIN, "prj_b"), Err(JwtError::WrongProject));
    }

    #[test]
    fn jwt_mutated_tokens_never_verify(
        c in claims(),
        eddsa in any::<bool>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0u8..4,
    ) {
        let token = if eddsa { sign_eddsa(&c, ed_signer()) } else { sign_hs256(&c, &hs_key()) };
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        match how {
            0 => bytes[i] = byte,
            1 => bytes[i] ^= 1 << (byte % 8),
            2 => { bytes.remove(i); }
            _ => bytes.insert(i, byte),
        }
        let Ok(mutated) = String::from_utf8(bytes) else { return Ok(()) };
        if mutated != token {
            let r = verify(&mutated, &keys(), i64::MIN, "prj_a");
            prop_assert!(r.is_err(), "a mutated token verified: {mutated}");
        }
    }
}

// ------------------------------------------------------------ snapshots

/// A valid snapshot of one or two projects with real derived keys.
fn snapshot(version: u64, eddsa: bool, origins: usize) -> Snapshot {
    let mut projects = Vec::new();
    for i in 0..2 {
        let id = ProjectId::generate();
        let secret = qyzar_shared::crypto::ProjectSecret::generate();
        let settings = ProjectSettings {
            allowed_origins: (0..origins)
                .map(|o| format!("https://s{o}.example"))
                .collect(),
            ..ProjectSettings::default()
        };
        let pk = (eddsa && i == 0).then(Ed25519Signer::generate_pkcs8);
        let mut p = provision::project_config(&id, &secret, settings, pk.as_deref()).unwrap();
        p.origin_tokens
            .push(provision::origin_token("qz_ot_x", "https://s0.example", 5));
        projects.push(p);
    }
    Snapshot::new(version, 1_700_000_000_000, projects).unwrap()
}

/// `payload` framed as a full snapshot with a correct header and digest, so
/// only the archive validation stands between it and the engine.
fn frame_full(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(1);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, payload).as_ref());
    out.extend_from_slice(payload);
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn snapshot_decode_refuses_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(decode_snapshot(&bytes).is_err());
        prop_assert!(decode_delta(&bytes).is_err());
    }

    #[test]
    fn snapshot_decode_survives_arbitrary_payloads_with_a_valid_frame(
        payload in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        // The digest holds, so this is bytecheck's job: refuse, never panic.
        if let Ok(s) = decode_snapshot(&frame_full(&payload)) {
            let again = decode_snapshot(&encode_snapshot(&s).unwrap()).unwrap();
            prop_assert_eq!(again, s);
        }
    }

    #[test]
    fn snapshot_round_trips_and_any_flipped_bit_is_refused(
        version in any::<u64>(),
        eddsa in any::<bool>(),
        origins in 0usize..4,
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let snap = snapshot(version, eddsa, origins);
        let bytes = encode_snapshot(&snap).unwrap();
        prop_assert_eq!(decode_snapshot(&bytes).unwrap(), snap);
        let wrong_kind = matches!(decode_delta(&bytes), Err(SnapshotError::WrongKind { .. }));
        prop_assert!(wrong_kind);

        let i = at.index(bytes.len());
        let mut flipped = bytes.clone();
        flipped[i] ^= 1 << bit;
        prop_assert!(decode_snapshot(&flipped).is_err(), "a flip at byte {} was accepted", i);
        prop_assert!(decode_snapshot(&bytes[..i]).is_err(), "a cut at {} was accepted", i);

        // The same flip inside the payload with a recomputed digest: the
        // archive check must refuse it or decode a snapshot that keeps its
        // invariants (a flipped key byte is still a well-formed key).
        if i >= HEADER_LEN {
            if let Ok(s) = decode_snapshot(&frame_full(&flipped[HEADER_LEN..])) {
                prop_assert!(s.projects().windows(2).all(|w| w[0].project_id < w[1].project_id));
                let again = decode_snapshot(&encode_snapshot(&s).unwrap()).unwrap();
                prop_assert_eq!(again, s);
            }
        }
    }
}

// ------------------------------------------------------------- settings

/// A settings document: mostly the real keys with plausible or hostile
/// values, so cases reach range validation and not only the unknown-key
/// refusal.
fn settings_doc() -> impl Strategy<Value = Value> {
    let rule = prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(l, w)| json!({"limit": l % 2_000_000, "windowSeconds": w % 200_000})),
        json_value(),
    ];
    let member = prop_oneof![
        (0u32..10_000_000).prop_map(|n| ("sessionTtlSeconds".to_owned(), json!(n))),
        (0u32..200_000).prop_map(|n| ("clientTokenTtlSeconds".to_owned(), json!(n))),
        ("[a-z_]{0,70}", "[a-z_;= ]{0,10}").prop_map(|(a, b)| (
            "cookieNames".to_owned(),
            json!({"sessionId": a, "sessionToken": b})
        )),
        prop::collection::vec(
            prop_oneof![
                Just("https://shop.example".to_owned()),
                Just("http://localhost:3000".to_owned()),
                "(https?://)?[a-zA-Z0-9.:\\[\\]/-]{0,30}",
            ],
            0..4
        )
        .prop_map(|o| ("allowedOrigins".to_owned(), json!(o))),
        (
            rule.clone(),
            prop::collection::btree_map("[a-zA-Z_]{0,34}", rule, 0..4),
            any::<bool>()
        )
            .prop_map(|(ip, md, a)| (
                "rateLimit".to_owned(),
                json!({"ip": ip, "metadata": md, "analyticsOnDeny": a})
            )),
        (0u32..200, 0u32..200, 0u32..100_000, any::<bool>()).prop_map(|(c, b, w, cs)| (
            "ato".to_owned(),
            json!({"challengeScore": c, "blockScore": b, "failedAttemptsWindowSeconds": w,
                   "caseSensitiveIdentifiers": cs})
        )),
        prop_oneof![Just("HS256"), Just("EdDSA"), Just("RS256")]
            .prop_map(|a| ("tokenAlgorithm".to_owned(), json!(a))),
        (".{0,20}", json_value()).prop_map(|(k, v)| (k, v)),
    ];
    prop::collection::vec(member, 0..6).prop_map(|ms| Value::Object(ms.into_iter().collect()))
}

fn check_settings(bytes: &[u8]) -> Result<(), TestCaseError> {
    match ProjectSettings::parse_and_validate(bytes) {
        Ok(s) => {
            prop_assert!(s.validate().is_ok());
            // parse → display → parse: the stored form reads back the same.
            let back = ProjectSettings::parse_and_validate(&s.to_json()).unwrap();
            prop_assert_eq!(back, s);
        }
        Err(e) => {
            assert_shared_shape(&e);
            prop_assert!(matches!(
                e.code,
                ErrorCode::MalformedJson | ErrorCode::InvalidField | ErrorCode::PayloadTooLarge
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn settings_parse_refuses_arbitrary_bytes_in_the_shared_shape(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        check_settings(&bytes)?;
    }

    #[test]
    fn settings_documents_validate_or_are_refused_with_a_field(doc in settings_doc()) {
        check_settings(doc.to_string().as_bytes())?;
        if let Err(e) = ProjectSettings::parse_and_validate(doc.to_string().as_bytes()) {
            if e.code == ErrorCode::InvalidField {
                prop_assert!(e.field.is_some(), "{:?} names no field", e);
            }
        }
    }
}

// ------------------------------------------------------------------ ids

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ids_parse_only_what_they_print(
        s in prop_oneof![
            ".{0,80}",
            "(prj_|ses_|dev_|usr_|PRJ_)[A-Za-z0-9_-]{0,70}",
            "(prj_|ses_)[A-Za-z0-9_+/=. -]{14,20}",
        ],
    ) {
        macro_rules! check {
            ($t:ty) => {
                match <$t>::parse(&s) {
                    Ok(id) => {
                        prop_assert_eq!(id.to_string(), s.clone());
                        prop_assert_eq!(<$t>::check(&s), Ok(s.as_str()));
                        let json = serde_json::to_string(&id).unwrap();
                        prop_assert_eq!(serde_json::from_str::<$t>(&json).unwrap(), id);
                    }
                    Err(e) => {
                        prop_assert_eq!(<$t>::check(&s), Err(e));
                        prop_assert!(serde_json::from_value::<$t>(json!(s)).is_err());
                    }
                }
            };
        }
        check!(ProjectId);
        check!(SessionId);
        check!(DeviceId);
        check!(UserId);
    }

    #[test]
    fn generated_and_derived_ids_parse(digest in prop::collection::vec(any::<u8>(), 12..40)) {
        prop_assert!(ProjectId::parse(ProjectId::generate().as_str()).is_ok());
        let dev = DeviceId::from_digest(&digest);
        prop_assert!(DeviceId::parse(dev.as_str()).is_ok());
    }

    #[test]
    fn emails_normalise_once(
        s in prop_oneof![".{0,80}", "[ A-Za-z0-9.+_-]{0,20}@[A-Za-z0-9.-]{0,20}[ ]{0,2}"],
    ) {
        if let Ok(e) = Email::parse(&s) {
            prop_assert_eq!(e.as_str(), e.as_str().to_ascii_lowercase());
            prop_assert!(e.as_str().len() <= 254);
            prop_assert_eq!(Email::parse(e.as_str()).unwrap(), e);
        }
    }

    #[test]
    fn error_bodies_are_always_the_shared_shape(
        code in prop::sample::select(ErrorCode::ALL),
        message in ".{0,40}",
        field in proptest::option::of(".{0,20}"),
    ) {
        let mut e = ApiError::with_message(code, message.clone());
        if let Some(f) = &field {
            e = e.field(f.clone());
        }
        let body: Value = serde_json::from_slice(&e.to_json()).unwrap();
        prop_assert_eq!(&body["error"]["code"], code.as_str());
        prop_assert_eq!(&body["error"]["message"], &json!(message));
        let field = field.map(Value::String);
        prop_assert_eq!(body["error"].get("field"), field.as_ref());
    }
}
