//! Property-based fuzzing of request reading: query strings, percent
//! decoding, cookies, credentials headers and JSON bodies. Every input is
//! read without a panic; a refused body is a 4xx from the shared table;
//! encode → decode gives back what was encoded. `PROPTEST_CASES` raises
//! the default 256 cases.

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, COOKIE};
use http::HeaderMap;
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

/// `application/x-www-form-urlencoded` as a browser writes it: every byte
/// that is not unreserved is `%XX`.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A header value made of any visible bytes (what `HeaderValue` admits).
fn header_text() -> impl Strategy<Value = String> {
    "[ -~]{0,120}"
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn query_param_reads_any_query(q in ".{0,200}", name in "[a-zA-Z%+]{0,8}") {
        let _ = query_param(Some(&q), &name);
        let _ = percent_decode(&q);
    }

    #[test]
    fn percent_encoded_pairs_decode_to_what_was_encoded(
        pairs in prop::collection::vec(("[a-zA-Z]{1,6}", ".{0,30}"), 1..6),
        pick in any::<prop::sample::Index>(),
    ) {
        let q = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let (name, _) = &pairs[pick.index(pairs.len())];
        // The last pair of that name wins.
        let expected = pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let found = query_param(Some(&q), name);
        prop_assert_eq!(found.as_deref(), expected);
    }

    #[test]
    fn percent_decode_round_trips_any_utf8(s in ".{0,60}") {
        prop_assert_eq!(percent_decode(&encode(&s)), s);
    }

    #[test]
    fn cookies_read_any_header(values in prop::collection::vec(header_text(), 0..4), name in "[ -~]{0,12}") {
        let mut h = HeaderMap::new();
        for v in &values {
            h.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        if let Some(v) = cookie(&Headers::map(&h), &name) {
            // A value never spans a separator.
            prop_assert!(!v.contains(';'));
        }
    }

    #[test]
    fn cookies_find_the_first_of_their_name(
        pairs in prop::collection::vec(("[a-zA-Z0-9_]{1,10}", "[!#-+\\--:<-\\[\\]-~]{0,20}"), 1..6),
        pick in any::<prop::sample::Index>(),
    ) {
        let header = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&header).unwrap());
        let (name, _) = &pairs[pick.index(pairs.len())];
        let expected = pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let h = Headers::map(&h);
        prop_assert_eq!(cookie(&h, name), expected);
    }

    #[test]
    fn credentials_read_any_header(auth in header_text(), secret in header_text()) {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(&auth).unwrap());
        if let Some(b) = bearer(&Headers::map(&h)) {
            prop_assert_eq!(b, b.trim());
        }
        if let Some(s) = project_secret(&Headers::map(&h)) {
            prop_assert!(s.starts_with("qz_sk_"));
        }
        h.insert("x-qyzar-project-secret", HeaderValue::from_str(&secret).unwrap());
        let h = Headers::map(&h);
        prop_assert_eq!(project_secret(&h), Some(secret.trim()));
    }

    #[test]
    fn json_bodies_are_parsed_or_refused_with_a_4xx(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            "\\{(\"[a-z]{1,3}\":( ?\"[a-z]{0,3}\"|[0-9-]{1,3}|null|true|\\[\\]|\\{\\}),?){0,4}\\}?"
                .prop_map(String::into_bytes),
        ],
        content_type in prop_oneof![
            Just("application/json".to_owned()),
            Just("application/problem+json; charset=utf-8".to_owned()),
            header_text(),
        ],
    ) {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct B<'a> {
            #[serde(borrow)]
            a: Text<'a>,
            b: Option<u32>,
        }
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(&content_type).unwrap());
        if let Err(e) = json_body::<B<'_>>(&Headers::map(&h), &body) {
            prop_assert!((400..500).contains(&e.status()), "{:?}", e);
            prop_assert!(matches!(
                e.code,
                ErrorCode::MalformedJson
                    | ErrorCode::MissingField
                    | ErrorCode::InvalidField
                    | ErrorCode::UnsupportedMediaType
            ));
            let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
            prop_assert_eq!(&v["error"]["code"], e.code.as_str());
        }
    }
}
