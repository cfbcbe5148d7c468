//! `GET /ping` on a running admin.

use crate::helpers::{request, Backend, TestApp};

#[tokio::test]
async fn ping_answers_ok_when_the_database_answers() {
    let app = TestApp::spawn(Backend::Sqlite)
        .await
        .expect("sqlite is always available");
    let r = request("GET", &app.url("/ping"), &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["ok"], true);
    assert_eq!(r.body["service"], "admin");

    // With the database gone, ping must say so instead of claiming health.
    app.state.db.pool().close().await;
    let r = request("GET", &app.url("/ping"), &[], None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"]["code"], "store_unavailable");
    app.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_in_the_shared_shape() {
    let app = TestApp::spawn(Backend::Sqlite)
        .await
        .expect("sqlite is always available");
    let r = request("GET", &app.url("/no-such-route"), &[], None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (404, serde_json::json!("route_not_found"))
    );
    let r = request("DELETE", &app.url("/ping"), &[], None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (405, serde_json::json!("method_not_allowed"))
    );
    assert!(r.headers["allow"].to_str().unwrap().contains("GET"));
    // The body limit answers in the shared shape too, even on a route that
    // reads its raw body.
    let big = format!("{{\"projectId\":\"{}\"}}", "x".repeat(70_000));
    let user = crate::projects::sign_up(&app, "limit@example.com").await;
    let r = request(
        "DELETE",
        &app.url("/projects"),
        &[("authorization", &user.auth())],
        Some(&big),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (413, serde_json::json!("payload_too_large"))
    );
    // A route's own 404 keeps its specific code.
    let r = request(
        "GET",
        &app.url("/origin-tokens/status?token=qz_ot_nope"),
        &[],
        None,
    )
    .await;
    assert_ne!(r.body["error"]["code"], "route_not_found");
    app.stop().await;
}
