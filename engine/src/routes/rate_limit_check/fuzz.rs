//! Property-based fuzzing of the rate-limit body: any bytes parse or are
//! refused with a 4xx from the shared table; `settingsOverride` validates or
//! names its field; the IP is read back in canonical form; the buckets of
//! any metadata object are what a `serde_json::Map` would give, each key
//! bounded, never more than [`MAX_BUCKETS`]. `PROPTEST_CASES` raises the
//! default 256 cases.

use proptest::prelude::*;

use super::*;

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

fn json_headers() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h
}

fn member_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        " ?[A-Za-zÀ-ÿ0-9@._-]{0,20} ?".prop_map(|s| json!(s)),
        "x{250,270}".prop_map(|s| json!(s)),
        any::<i64>().prop_map(|n| json!(n)),
        (-1000i32..1000).prop_map(|n| json!(f64::from(n) / 4.0)),
        Just(json!(null)),
        Just(json!(true)),
        Just(json!([1, "a"])),
        Just(json!({"a": 1})),
    ]
}

/// A rule set with the fields the metadata may name (and some it may not).
fn rules() -> RateLimitSettings {
    let mut r = RateLimitSettings::default();
    for name in [
        "email", "userId", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j",
    ] {
        r.metadata.insert(
            name.to_owned(),
            qyzar_shared::settings::RateRule {
                limit: 5,
                window_seconds: 60,
            },
        );
    }
    r
}

const NAMES: &[&str] = &["email", "userId", "a", "b", "c", "EMAIL"];

fn body() -> impl Strategy<Value = Vec<u8>> {
    use serde_json::json;
    let metadata = prop::collection::vec(
        (
            prop_oneof![
                prop::sample::select(NAMES).prop_map(str::to_owned),
                "[a-j]{1,2}",
            ],
            member_value(),
        ),
        0..24,
    );
    let over = (
        any::<u32>(),
        any::<u32>(),
        prop::collection::btree_map("[a-zA-Z_:]{0,34}", (any::<u32>(), any::<u32>()), 0..20),
    )
        .prop_map(|(l, w, md)| {
            let md: serde_json::Map<String, serde_json::Value> = md
                .into_iter()
                .map(|(k, (l, w))| {
                    (
                        k,
                        json!({"limit": l % 2_000_000, "windowSeconds": w % 100_000}),
                    )
                })
                .collect();
            json!({"ip": {"limit": l % 2_000_000, "windowSeconds": w % 100_000}, "metadata": md})
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..120),
        6 => (
            prop_oneof![
                Just("203.0.113.9".to_owned()),
                Just(" 2001:DB8::0:1 ".to_owned()),
                "[0-9a-fA-F.:% ]{0,40}",
            ],
            metadata,
            proptest::option::of(0u32..2000),
            proptest::option::of(over),
            any::<bool>(),
        )
            .prop_map(|(ip, md, cost, over, dry)| {
                let members: Vec<String> = md
                    .iter()
                    .map(|(k, v)| format!("{}:{}", json!(k), v))
                    .collect();
                let mut doc = json!({"projectId": "prj_AAAAAAAAAAAAAAAAAAAAAA", "ip": ip, "dryRun": dry});
                if let Some(c) = cost {
                    doc["cost"] = json!(c);
                }
                if let Some(o) = over {
                    doc["settingsOverride"] = o;
                }
                // Members written by hand so repeated names stay repeated.
                let text = doc.to_string();
                format!("{},\"metadata\":{{{}}}}}", &text[..text.len() - 1], members.join(","))
                    .into_bytes()
            }),
    ]
}

fn is_4xx_shared(e: &ApiError) -> bool {
    (400..500).contains(&e.status()) && qyzar_shared::ErrorCode::ALL.contains(&e.code)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bodies_parse_or_are_refused_in_the_shared_shape(raw in body()) {
        let input: Input<'_> = match request::json_body(&Headers::map(&json_headers()), &raw) {
            Ok(i) => i,
            Err(e) => {
                prop_assert!(is_4xx_shared(&e), "{:?}", e);
                return Ok(());
            }
        };
        if let Some(o) = &input.settings_override {
            if let Err(e) = o.validate("settingsOverride") {
                prop_assert!(is_4xx_shared(&e));
                prop_assert!(e.field.as_deref().unwrap_or("").starts_with("settingsOverride."));
            }
        }
        if let Some(ip) = input.ip.as_deref() {
            match canonical_ip(ip) {
                Ok(c) => {
                    let parsed: IpAddr = ip.trim().parse().unwrap();
                    prop_assert_eq!(c.parse::<IpAddr>().unwrap(), parsed);
                    prop_assert_eq!(canonical_ip(&c).unwrap(), c.clone());
                }
                Err(e) => prop_assert_eq!(e.field.as_deref(), Some("ip")),
            }
        }
        let r = rules();
        let mut b = Buckets::new(Cow::Borrowed("203.0.113.9"), &r);
        match buckets(&mut b, &input.metadata, &r) {
            Ok(()) => {
                prop_assert!(b.len <= MAX_BUCKETS);
                // Sorted by field, one bucket per field, keys bounded and
                // already lower-case and trimmed.
                prop_assert!(b.fields[1..b.len].windows(2).all(|w| w[0] < w[1]));
                for key in &b.keys[1..b.len] {
                    prop_assert!(key.len() <= MAX_KEY_LEN);
                    prop_assert_eq!(&**key, key.trim());
                    prop_assert_eq!(key.to_lowercase(), key.to_string());
                }
            }
            Err(e) => {
                prop_assert!(is_4xx_shared(&e));
                prop_assert!(e.field.as_deref().unwrap_or("").starts_with("metadata"));
            }
        }
    }

    #[test]
    fn metadata_keeps_the_last_of_a_repeated_name_like_a_map(
        md in prop::collection::vec(("[a-c]", member_value()), 0..12),
    ) {
        let members: Vec<String> = md
            .iter()
            .map(|(k, v)| format!("{}:{}", serde_json::json!(k), v))
            .collect();
        let text = format!("{{{}}}", members.join(","));
        let ours: Metadata<'_> = serde_json::from_str(&text).unwrap();
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(ours.0.len(), map.len());
        for ((name, value), (k, v)) in ours.0.iter().zip(&map) {
            prop_assert_eq!(&**name, k.as_str());
            let same = match (value, v) {
                (Value::Str(s), serde_json::Value::String(t)) => &**s == t.as_str(),
                (Value::Num(n), serde_json::Value::Number(m)) => n == m,
                (Value::Null, serde_json::Value::Null) => true,
                (Value::Other, _) => !matches!(
                    v,
                    serde_json::Value::String(_) | serde_json::Value::Number(_) | serde_json::Value::Null
                ),
                _ => false,
            };
            prop_assert!(same, "{:?} vs {:?}", value, v);
        }
    }
}
