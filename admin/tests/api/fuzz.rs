//! Property-based fuzzing of admin's parsers of outside bytes that need no
//! database: the `Stripe-Signature` header and the settings merge patch.
//!
//! - any header, body, secret and clock: `verify` answers without a panic
//!   (the timestamp is an attacker's `i64`; `now - t` once overflowed), and
//!   a header signed as Stripe signs verifies exactly within the tolerance;
//! - any merge patch over a valid settings document: the merged document is
//!   accepted or refused with a 4xx from the shared table naming a field,
//!   applying the patch twice changes nothing more, and what is stored
//!   reads back the same.
//!
//! 256 cases per property; `PROPTEST_CASES` raises it.

use proptest::prelude::*;
use qyzar_admin::billing::signature::{verify, SignatureError, TOLERANCE_SECS};
use qyzar_admin::projects::merge_patch;
use qyzar_shared::crypto::hmac_sha256;
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::ErrorCode;
use serde_json::{json, Value};

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (0u32..200_000).prop_map(|n| json!(n)),
        "[ -~]{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A merge patch in the settings vocabulary: nulls remove, objects merge,
/// anything else replaces.
fn settings_patch() -> impl Strategy<Value = Value> {
    let small = prop_oneof![
        Just(Value::Null),
        (0u32..10_000_000).prop_map(|n| json!(n)),
        json_value(),
    ];
    let rule = prop_oneof![
        Just(Value::Null),
        (0u32..2_000_000, 0u32..100_000).prop_map(|(l, w)| json!({"limit": l, "windowSeconds": w})),
        (0u32..2_000_000).prop_map(|l| json!({"limit": l})),
    ];
    let member = prop_oneof![
        small
            .clone()
            .prop_map(|v| ("sessionTtlSeconds".to_owned(), v)),
        small
            .clone()
            .prop_map(|v| ("clientTokenTtlSeconds".to_owned(), v)),
        prop::collection::vec("https://[a-z]{1,6}\\.example", 0..3)
            .prop_map(|o| ("allowedOrigins".to_owned(), json!(o))),
        (
            rule.clone(),
            prop::collection::btree_map("[a-zA-Z_]{1,6}", rule, 0..3)
        )
            .prop_map(|(ip, md)| ("rateLimit".to_owned(), json!({"ip": ip, "metadata": md}))),
        (small.clone(), small.clone()).prop_map(|(c, b)| (
            "ato".to_owned(),
            json!({"challengeScore": c, "blockScore": b})
        )),
        ("[a-zA-Z_]{1,8}", "[a-zA-Z_]{1,8}").prop_map(|(a, b)| (
            "cookieNames".to_owned(),
            json!({"sessionId": a, "sessionToken": b})
        )),
        ("[a-zA-Z]{1,12}", small).prop_map(|(k, v)| (k, v)),
    ];
    prop::collection::vec(member, 0..5).prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn stripe_signature_refuses_any_header_without_a_panic(
        header in prop_oneof![
            "[ -~]{0,120}",
            "(t=-?[0-9]{1,20}|v1=[0-9a-fA-Fz]{0,66}|v0=[0-9a-f]{0,8}|[a-z]{0,3}=?)(,( )?(t=-?[0-9]{1,20}|v1=[0-9a-f]{0,66}|x=y)){0,4}",
        ],
        body in prop::collection::vec(any::<u8>(), 0..64),
        now in any::<i64>(),
    ) {
        // No v1 here is the HMAC of the body under this secret.
        let r = verify(&header, &body, "whsec_fuzz", now);
        prop_assert!(r.is_err(), "{header}");
    }

    #[test]
    fn stripe_signature_verifies_exactly_within_the_tolerance(
        t in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), -1_000i64..1_000],
        skew in prop_oneof![any::<i64>(), -400i64..400],
        body in prop::collection::vec(any::<u8>(), 0..64),
        junk_first in any::<bool>(),
        any_clock in any::<bool>(),
    ) {
        let secret = "whsec_fuzz";
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(&body);
        let tag = hex(&hmac_sha256(secret.as_bytes(), &signed));
        let header = if junk_first {
            format!("v0=00, v1=zz, v1={}, t={t}, v1={tag}", "00".repeat(32))
        } else {
            format!("t={t},v1={tag}")
        };
        // Near `t`, or anywhere: `now - t` then spans all of i128.
        let now = if any_clock { skew } else { t.saturating_add(skew) };
        let within = i128::from(now).abs_diff(i128::from(t)) <= TOLERANCE_SECS as u128;
        let r = verify(&header, &body, secret, now);
        if within {
            prop_assert_eq!(r, Ok(()));
        } else {
            prop_assert_eq!(r, Err(SignatureError::OutsideTolerance));
        }
        if within && !body.is_empty() {
            let mut other = body.clone();
            other[0] ^= 1;
            prop_assert_eq!(verify(&header, &other, secret, now), Err(SignatureError::NoMatch));
        }
    }

    #[test]
    fn merge_patch_is_idempotent(target in json_value(), patch in json_value()) {
        let mut once = target;
        merge_patch(&mut once, &patch);
        let mut twice = once.clone();
        merge_patch(&mut twice, &patch);
        prop_assert_eq!(&twice, &once);
        // A patch that is an object leaves an object, with no member the
        // patch set to null.
        if let Value::Object(p) = &patch {
            let merged = once.as_object().expect("an object patch gives an object");
            for (k, v) in p {
                prop_assert_eq!(v.is_null(), !merged.contains_key(k));
            }
        }
    }

    #[test]
    fn settings_patches_are_accepted_whole_or_refused_in_the_shared_shape(
        patch in settings_patch(),
    ) {
        let stored = ProjectSettings::default().to_json();
        let mut doc: Value = serde_json::from_slice(&stored).unwrap();
        merge_patch(&mut doc, &patch);
        let merged = serde_json::to_vec(&doc).unwrap();
        match ProjectSettings::parse_and_validate(&merged) {
            Ok(s) => {
                // Stored normalised, then patched again: nothing changes.
                let mut again: Value = serde_json::from_slice(&s.to_json()).unwrap();
                merge_patch(&mut again, &patch);
                let s2 = ProjectSettings::parse_and_validate(&serde_json::to_vec(&again).unwrap());
                prop_assert_eq!(s2.as_ref(), Ok(&s));
            }
            Err(e) => {
                prop_assert!((400..500).contains(&e.status()), "{:?}", e);
                prop_assert!(matches!(
                    e.code,
                    ErrorCode::InvalidField | ErrorCode::MalformedJson | ErrorCode::PayloadTooLarge
                ));
                if e.code == ErrorCode::InvalidField {
                    prop_assert!(e.field.is_some(), "{:?}", e);
                }
            }
        }
    }
}
