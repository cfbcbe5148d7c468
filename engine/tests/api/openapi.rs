//! `engine/openapi.yaml` against the engine itself: every (method, path) the
//! public listener serves is documented and every documented one is served,
//! and the error-code enum is the shared table.
//!
//! The document is read with a line scan, not a YAML parser: the workspace
//! has no YAML crate and this is not worth adding one for. That works
//! because the document is hand-written with a fixed layout, stated in its
//! header comment: `paths:` at column 0, each path at two spaces, each
//! operation (`get:`, `post:`, …) at four, and the `ErrorCode` schema's enum
//! as one `- code  # status` line per code. If the layout changes so that
//! the scan finds nothing, these tests fail loudly rather than pass.

use std::collections::{BTreeMap, BTreeSet};

use qyzar_shared::testing::openapi::{assert_error_codes_match, documented_operations, Operation};

use crate::helpers::{request, TestEngine, TestResponse};

const DOC: &str = include_str!("../../openapi.yaml");

/// Methods probed on every candidate path.
const PROBED: [&str; 7] = ["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"];

/// Paths probed besides the documented ones: every path the router matches,
/// so a route added there but not to the document is caught, and neighbours
/// that must not be served on the public listener (the internal listener's
/// paths, admin's paths, near misses).
const KNOWN_PATHS: &[&str] = &[
    // engine/src/router.rs
    "/ping",
    "/connect",
    "/connect/reverify",
    "/connect.js",
    "/projects/client/session-verify",
    "/projects/client/token",
    "/projects/client/token-verify",
    "/projects/client/jwks",
    "/projects/client/rate-limit-check",
    "/projects/client/ato-login-attempt",
    "/projects/client/ato-add-identifier",
    // the internal listener's (engine/src/internal.rs): never public
    "/metrics",
    "/internal/snapshot",
    "/internal/snapshot/version",
    // admin's
    "/",
    "/projects",
    "/projects/client",
    "/projects/client/extra-metadata",
    "/projects/rate-limit/check",
    "/origin-tokens/verify",
    "/opt-out/confirm",
    "/test/captcha",
    // near misses
    "/ping/",
    "/connect/",
    "/connect.js/",
    "/Connect",
    "/projects/client/token/",
];

fn error_code(r: &TestResponse) -> Option<&str> {
    r.body["error"]["code"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let documented = documented_operations(DOC);
    assert!(
        documented.len() >= 10,
        "the scan of openapi.yaml found only {documented:?}: has its layout changed?"
    );
    let candidates: BTreeSet<String> = documented
        .iter()
        .map(|(_, p)| p.clone())
        .chain(KNOWN_PATHS.iter().map(|p| (*p).to_owned()))
        .collect();

    // Probe with no snapshot installed: routes that need one still answer
    // (400, 503 not_configured, …), which is all that matters here. A route
    // is served for a method unless the answer is `404 route_not_found` or
    // `405`. HEAD answers have no body to read the code from; since
    // `route_not_found` depends on the path alone, a HEAD 404 counts as
    // served exactly when the path is known (GET did not get
    // `route_not_found`).
    let engine = TestEngine::spawn().await;
    let mut served = BTreeSet::new();
    let mut allow: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &candidates {
        let mut path_known = true;
        for method in PROBED {
            let r = request(method, &engine.url(path), &[], None).await;
            let is_served = match r.status {
                405 => {
                    let header = r
                        .headers
                        .get("allow")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let methods = header
                        .split(',')
                        .map(|m| m.trim().to_owned())
                        .filter(|m| !m.is_empty());
                    allow.entry(path.clone()).or_default().extend(methods);
                    if method != "HEAD" {
                        assert_eq!(
                            error_code(&r),
                            Some("method_not_allowed"),
                            "{method} {path}: {r:?}"
                        );
                    }
                    false
                }
                404 if method == "HEAD" && r.body.is_null() => path_known,
                404 if error_code(&r) == Some("route_not_found") => {
                    path_known = false;
                    false
                }
                _ => true,
            };
            if is_served {
                served.insert((method.to_owned(), path.clone()));
            }
        }
    }
    engine.stop().await;

    let show = |ops: Vec<&Operation>| -> String {
        if ops.is_empty() {
            return "    (none)\n".to_owned();
        }
        ops.iter().map(|(m, p)| format!("    {m} {p}\n")).collect()
    };
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    // The `Allow` of each 405 must list exactly the documented methods
    // (TRACE aside: it is not probed).
    let mut allow_diff = String::new();
    for (path, methods) in &allow {
        let doc_methods: BTreeSet<String> = documented
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.clone())
            .collect();
        if *methods != doc_methods {
            allow_diff.push_str(&format!(
                "    {path}: Allow {methods:?}, documented {doc_methods:?}\n"
            ));
        }
    }
    assert!(
        undocumented.is_empty() && unserved.is_empty() && allow_diff.is_empty(),
        "engine/openapi.yaml and the engine's router disagree\n  \
         served but not documented:\n{}  documented but not served:\n{}  \
         `Allow` of a 405 differs from the documented methods:\n{}",
        show(undocumented),
        show(unserved),
        if allow_diff.is_empty() {
            "    (none)\n".to_owned()
        } else {
            allow_diff
        },
    );
}

#[test]
fn error_code_enum_is_the_shared_table() {
    assert_error_codes_match(DOC, "engine/openapi.yaml");
}
