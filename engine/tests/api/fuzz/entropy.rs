//! The `entropy` object of `/connect`: any JSON is parsed and validated
//! without a panic, a refusal is `422 invalid_field` naming an `entropy…`
//! field, and what validates is scored, hashed into a device id and written
//! back out as the same document.

use proptest::prelude::*;
use qyzar_engine::decide::{self, Entropy, UaInfo};
use qyzar_shared::ids::DeviceId;
use qyzar_shared::{ApiError, ErrorCode};
use serde_json::{json, Map, Value};

use super::{config, json_value};

/// An entropy document: the known keys with plausible, odd or hostile
/// values, plus unknown keys, so cases pass the type check and reach the caps.
fn entropy_doc() -> impl Strategy<Value = Value> {
    let text = prop_oneof![".{0,40}", ".{500,530}"];
    let list = prop::collection::vec(".{0,12}", 0..40);
    let num = prop_oneof![
        (0u32..70_000).prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        (-100i32..20_000).prop_map(|n| json!(f64::from(n) / 4.0)),
    ];
    let screen = prop::collection::btree_map(
        prop_oneof![
            Just("width".to_owned()),
            Just("height".to_owned()),
            Just("colorDepth".to_owned()),
            Just("pixelRatio".to_owned()),
            "[a-zA-Z]{1,70}",
        ],
        prop_oneof![num.clone(), json_value()],
        0..6,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    let member = prop_oneof![
        text.clone().prop_map(|s| ("userAgent".to_owned(), json!(s))),
        prop_oneof![
            Just("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36".to_owned()),
            Just("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1".to_owned()),
            Just("HeadlessChrome/120 curl/8.0 python-requests".to_owned()),
        ]
        .prop_map(|s| ("userAgent".to_owned(), json!(s))),
        list.clone().prop_map(|l| ("languages".to_owned(), json!(l))),
        list.prop_map(|l| ("fonts".to_owned(), json!(l))),
        text.clone().prop_map(|s| ("timezone".to_owned(), json!(s))),
        text.clone().prop_map(|s| ("platform".to_owned(), json!(s))),
        text.clone().prop_map(|s| ("canvasHash".to_owned(), json!(s))),
        text.prop_map(|s| ("webglRenderer".to_owned(), json!(s))),
        screen.prop_map(|s| ("screen".to_owned(), s)),
        num.clone().prop_map(|n| ("hardwareConcurrency".to_owned(), n)),
        num.clone().prop_map(|n| ("deviceMemory".to_owned(), n)),
        num.prop_map(|n| ("touchPoints".to_owned(), n)),
        any::<bool>().prop_map(|b| ("webdriver".to_owned(), json!(b))),
        ("[a-zA-Z]{1,70}", json_value()),
    ];
    prop::collection::vec(member, 0..10).prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn check(raw: &[u8]) -> Result<(), TestCaseError> {
    let Ok(e) = serde_json::from_slice::<Entropy>(raw) else {
        return Ok(());
    };
    match e.validate(raw.len()) {
        Ok(()) => {
            let ua = UaInfo::parse(e.user_agent.as_deref().unwrap_or(""));
            let risk = decide::score_bot(&e, &ua);
            prop_assert!(risk.score <= 100, "score {}", risk.score);
            let id = decide::device_id(&e);
            prop_assert!(DeviceId::parse(id.as_str()).is_ok());
            prop_assert_eq!(decide::device_id(&e), id);
            prop_assert!(decide::diff_keys(&e, &e).is_empty());
            // parse → write → parse: what is stored reads back the same.
            let text = serde_json::to_vec(&e).unwrap();
            let back: Entropy = serde_json::from_slice(&text).unwrap();
            prop_assert_eq!(&back, &e);
            prop_assert_eq!(back.validate(text.len()), Ok(()));
        }
        Err(err) => {
            prop_assert!(err.field.starts_with("entropy"));
            let api = ApiError::from(err);
            prop_assert_eq!(api.code, ErrorCode::InvalidField);
            prop_assert_eq!(api.status(), 422);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn entropy_from_arbitrary_bytes_never_panics(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        check(&raw)?;
    }

    #[test]
    fn entropy_documents_validate_or_name_their_field(doc in entropy_doc()) {
        check(doc.to_string().as_bytes())?;
    }

    #[test]
    fn deep_unknown_keys_are_refused_not_recursed_without_end(depth in 1usize..40) {
        let mut v = json!(1);
        for _ in 0..depth {
            let mut m = Map::new();
            m.insert("k".into(), v);
            v = Value::Object(m);
        }
        let doc = json!({"signal": v}).to_string();
        let e: Entropy = serde_json::from_str(&doc).unwrap();
        prop_assert_eq!(e.validate(doc.len()).is_ok(), depth <= 4);
    }
}
