//! Property-based fuzzing of what the engine reads from outside: the
//! browser entropy (and the pure decisions made from it), and the whole
//! router in process with arbitrary method, path, query, headers and body.
//!
//! 256 cases per property unless `PROPTEST_CASES` says otherwise, e.g.
//! `PROPTEST_CASES=20000 cargo test -p qyzar-engine --test api fuzz::`.
//! The private parsers (query strings, cookies, the rate-limit body) have
//! their own properties beside their code: `engine/src/request/fuzz.rs`,
//! `engine/src/routes/rate_limit_check/fuzz.rs`.

mod entropy;
mod router;

use proptest::prelude::*;
use serde_json::{json, Value};

/// 256 cases, or `PROPTEST_CASES`; no failure files in the source tree
/// (a failure prints its minimal input, which is what a fix needs).
pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value a few levels deep. Floats are quarters, exact in binary
/// and in short decimal, so values read back bit for bit.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
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
