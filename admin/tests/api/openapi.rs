//! `admin/openapi.yaml` against the admin itself: every (method, path) the
//! router serves is documented and every documented one is served, the
//! `Allow` of each 405 lists exactly the documented methods, the admin's
//! share of the public route table is served (but for the routes not built
//! yet, listed below), and the error-code enum is the shared table.
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

use crate::helpers::{request, Backend, TestApp, TestResponse};

const DOC: &str = include_str!("../../openapi.yaml");

/// Methods probed on every candidate path (GET first: it decides whether a
/// bodiless HEAD 404 means "unknown path").
const PROBED: [&str; 7] = ["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"];

/// The public route table (`shared/seeds/http-routes.md`), all 56 rows.
const ROUTE_TABLE: &[(&str, &str)] = &[
    ("GET", "/projects/client/extra-metadata"),
    ("PATCH", "/projects/client/extra-metadata"),
    ("GET", "/projects/client/session-verify"),
    ("POST", "/projects/client/session-verify"),
    ("POST", "/projects/client/token"),
    ("GET", "/projects/client/token-verify"),
    ("POST", "/projects/client/token-verify"),
    ("POST", "/auth/2fa/create"),
    ("POST", "/auth/2fa/recovery"),
    ("POST", "/auth/2fa/verify"),
    ("GET", "/auth/me"),
    ("PATCH", "/auth/password"),
    ("POST", "/auth/password-reset-confirm"),
    ("POST", "/auth/password-reset-request"),
    ("POST", "/auth/register"),
    ("POST", "/auth/signin"),
    ("POST", "/auth/verify-email"),
    ("POST", "/auth/verify-email/resend"),
    ("POST", "/billing/checkout"),
    ("GET", "/billing/plans"),
    ("POST", "/billing/portal"),
    ("GET", "/billing/status"),
    ("PATCH", "/billing/subscription"),
    ("POST", "/billing/subscription/cancel"),
    ("POST", "/billing/subscription/resume"),
    ("GET", "/billing/subscriptions"),
    ("POST", "/connect/reverify"),
    ("GET", "/opt-out/confirm"),
    ("POST", "/origin-tokens"),
    ("POST", "/origin-tokens/invalidate"),
    ("GET", "/origin-tokens/status"),
    ("POST", "/origin-tokens/verify"),
    ("GET", "/ping"),
    ("DELETE", "/projects"),
    ("GET", "/projects"),
    ("PATCH", "/projects"),
    ("POST", "/projects"),
    ("GET", "/projects/analytics"),
    ("GET", "/projects/browser-data"),
    ("POST", "/projects/client/ato-add-identifier"),
    ("POST", "/projects/client/ato-login-attempt"),
    ("POST", "/projects/client/rate-limit-check"),
    ("GET", "/projects/dashboard-summary"),
    ("GET", "/projects/detail"),
    ("GET", "/projects/devices-data"),
    ("GET", "/projects/entropy-snapshot"),
    ("GET", "/projects/extra-metadata"),
    ("PATCH", "/projects/extra-metadata"),
    ("GET", "/projects/overview-stats"),
    ("POST", "/projects/rate-limit/check"),
    ("POST", "/projects/secret/2fa"),
    ("POST", "/projects/secret/reveal"),
    ("GET", "/projects/settings"),
    ("PATCH", "/projects/settings"),
    ("POST", "/stripe/webhook"),
    ("POST", "/test/captcha"),
];

/// Rows of the table the engine serves (PRODUCT.md "Two services"); the
/// admin must not. `/ping` is in both services and so in neither list.
const ENGINE_ROWS: &[(&str, &str)] = &[
    ("GET", "/projects/client/session-verify"),
    ("POST", "/projects/client/session-verify"),
    ("POST", "/projects/client/token"),
    ("GET", "/projects/client/token-verify"),
    ("POST", "/projects/client/token-verify"),
    ("POST", "/connect/reverify"),
    ("POST", "/projects/client/ato-add-identifier"),
    ("POST", "/projects/client/ato-login-attempt"),
    ("POST", "/projects/client/rate-limit-check"),
];

/// Admin rows of the table not built yet: the analytics views. Remove a row here when its route lands (and document
/// it in openapi.yaml: the first test insists).
const NOT_BUILT_YET: &[(&str, &str)] = &[
    ("GET", "/projects/analytics"),
    ("GET", "/projects/browser-data"),
    ("GET", "/projects/dashboard-summary"),
    ("GET", "/projects/overview-stats"),
];

/// Paths probed besides the documented ones and the route table's: every
/// path admin/src/lib.rs routes, so a route added there but not to the
/// document is caught, and neighbours that must not be served (the
/// engine's own paths, near misses).
const KNOWN_PATHS: &[&str] = &[
    // admin/src/lib.rs
    "/ping",
    "/auth/register",
    "/auth/verify-email",
    "/auth/verify-email/resend",
    "/auth/signin",
    "/auth/2fa/create",
    "/auth/2fa/verify",
    "/auth/2fa/recovery",
    "/auth/2fa/disable",
    "/auth/signout",
    "/auth/signout-all",
    "/auth/password-reset-request",
    "/auth/password-reset-confirm",
    "/auth/password",
    "/auth/me",
    "/projects",
    "/projects/detail",
    "/projects/settings",
    "/projects/secret/2fa",
    "/projects/secret/reveal",
    "/projects/extra-metadata",
    "/projects/client/extra-metadata",
    "/projects/rate-limit/check",
    "/origin-tokens",
    "/origin-tokens/invalidate",
    "/origin-tokens/status",
    "/origin-tokens/verify",
    "/opt-out/confirm",
    "/test/captcha",
    "/internal/snapshot",
    "/internal/traffic",
    "/billing/plans",
    "/billing/status",
    "/billing/checkout",
    "/billing/portal",
    "/billing/subscriptions",
    "/billing/subscription",
    "/billing/subscription/cancel",
    "/billing/subscription/resume",
    "/stripe/webhook",
    // the engine's (public and internal listeners)
    "/connect",
    "/connect.js",
    "/projects/client/jwks",
    "/metrics",
    "/internal/snapshot/version",
    // near misses
    "/auth",
    "/auth/2fa",
    "/billing",
    "/billing/subscription/",
    "/stripe",
    "/projects/",
    "/projects/client",
    "/projects/secret",
    "/projects/rate-limit",
    "/Projects",
    "/ping/",
    "/origin-tokens/",
    "/opt-out",
    "/test",
    "/internal",
];

/// The one path outside `/ui/` the dashboard serves: `/` redirects browsers
/// to `/ui/`. The dashboard's HTML pages (all under `/ui/`, which no probed
/// path reaches) are not API: they are neither in the document nor probed.
const DASHBOARD_PATHS: &[&str] = &["/"];

fn error_code(r: &TestResponse) -> Option<&str> {
    r.body["error"]["code"].as_str()
}

fn ops(list: &[(&str, &str)]) -> BTreeSet<Operation> {
    list.iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect()
}

fn show<'a>(ops: impl IntoIterator<Item = &'a Operation>) -> String {
    let lines: String = ops
        .into_iter()
        .map(|(m, p)| format!("    {m} {p}\n"))
        .collect();
    if lines.is_empty() {
        "    (none)\n".to_owned()
    } else {
        lines
    }
}

/// What an admin serves among `paths` (probed with every method of
/// [`PROBED`], no credentials, no body), and the `Allow` header of each
/// 405, per path.
///
/// A (method, path) is served unless the answer is `404 route_not_found`
/// or `405` (which must say `method_not_allowed`). Routes answer without
/// credentials or input too (`400`, `401`, `415`, …), which is all that
/// matters here. HEAD answers have no body to read the code from; since
/// `route_not_found` depends on the path alone, a bodiless HEAD 404 counts
/// as served exactly when the path is known (GET did not get
/// `route_not_found`).
async fn probe(
    paths: &BTreeSet<String>,
) -> (BTreeSet<Operation>, BTreeMap<String, BTreeSet<String>>) {
    let app = TestApp::spawn(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let mut served = BTreeSet::new();
    let mut allow: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in paths {
        let mut path_known = true;
        for method in PROBED {
            let r = request(method, &app.url(path), &[], None).await;
            let is_served = match r.status {
                405 => {
                    let header = r
                        .headers
                        .get("allow")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let methods = header
                        .split(',')
                        .map(|m| m.trim().to_ascii_uppercase())
                        .filter(|m| !m.is_empty());
                    allow.entry(path.clone()).or_default().extend(methods);
                    if method != "HEAD" {
                        assert_eq!(
                            error_code(&r),
                            Some("method_not_allowed"),
                            "{method} {path}: a 405 must carry the shared error body: {r:?}"
                        );
                    }
                    false
                }
                404 if method == "HEAD" && r.body.is_null() => path_known,
                404 => match error_code(&r) {
                    Some("route_not_found") => {
                        path_known = false;
                        false
                    }
                    Some(_) => true,
                    None => panic!(
                        "{method} {path}: a 404 without the shared error body \
                         (expected `route_not_found` for an unknown path): {r:?}"
                    ),
                },
                _ => true,
            };
            if is_served {
                served.insert((method.to_owned(), path.clone()));
            }
        }
    }
    app.stop().await;
    (served, allow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let documented = documented_operations(DOC);
    assert!(
        documented.len() >= 30,
        "the scan of openapi.yaml found only {documented:?}: has its layout changed?"
    );
    let candidates: BTreeSet<String> = documented
        .iter()
        .map(|(_, p)| p.clone())
        .chain(ROUTE_TABLE.iter().map(|(_, p)| (*p).to_owned()))
        .chain(KNOWN_PATHS.iter().map(|p| (*p).to_owned()))
        .filter(|p| !DASHBOARD_PATHS.contains(&p.as_str()))
        .collect();
    let (served, allow) = probe(&candidates).await;

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
        "admin/openapi.yaml and the admin's router disagree\n  \
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_serves_its_rows_of_the_route_table_but_the_ones_not_built_yet() {
    let table = ops(ROUTE_TABLE);
    assert_eq!(table.len(), 56, "the route table has 56 distinct rows");
    let engine = ops(ENGINE_ROWS);
    let not_built = ops(NOT_BUILT_YET);
    assert!(
        engine.is_subset(&table) && not_built.is_subset(&table),
        "ENGINE_ROWS and NOT_BUILT_YET must be rows of ROUTE_TABLE"
    );
    let paths: BTreeSet<String> = table.iter().map(|(_, p)| p.clone()).collect();
    let (served, _) = probe(&paths).await;

    let admin_rows: BTreeSet<Operation> = table.difference(&engine).cloned().collect();
    let missing: Vec<_> = admin_rows
        .iter()
        .filter(|op| !served.contains(*op) && !not_built.contains(*op))
        .collect();
    let built_now: Vec<_> = not_built.intersection(&served).collect();
    let engine_served: Vec<_> = engine.intersection(&served).collect();
    assert!(
        missing.is_empty() && built_now.is_empty() && engine_served.is_empty(),
        "the admin's share of the route table (http-routes.md) is off\n  \
         admin rows not served (and not listed in NOT_BUILT_YET):\n{}  \
         served now, so remove from NOT_BUILT_YET (and document them):\n{}  \
         engine rows the admin serves:\n{}",
        show(missing),
        show(built_now),
        show(engine_served),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_not_in_the_document_and_lives_under_ui() {
    let documented = documented_operations(DOC);
    let leaked: Vec<_> = documented
        .iter()
        .filter(|(_, p)| p.starts_with("/ui") || DASHBOARD_PATHS.contains(&p.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "dashboard pages in openapi.yaml: {leaked:?}"
    );
    let app = TestApp::spawn(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let r = request("GET", &app.url("/"), &[], None).await;
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.headers.get("location").unwrap(), "/ui/");
    app.stop().await;
}

#[test]
fn error_code_enum_is_the_shared_table() {
    assert_error_codes_match(DOC, "admin/openapi.yaml");
}
