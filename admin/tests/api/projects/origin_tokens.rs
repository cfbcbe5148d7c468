//! Origin tokens: create (validated origin and TTL), status and verify
//! without credentials, invalidate by the owner only, and the snapshot
//! carrying only the live ones.

use serde_json::json;

use super::{create_project, id_of, not_found, sign_up};
use crate::helpers::{request, Backend, TestApp};
use crate::push::snapshot_project;

async fn origin_tokens(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let ann = sign_up(&app, "ann@example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;
    let id = id_of(&create_project(&app, &ann.token, "Shop").await);

    let r = ann
        .send(
            &app,
            "POST",
            "/origin-tokens",
            json!({"projectId": id, "origin": "https://shop.example", "ttlSeconds": 3600}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let token = r.body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("qz_ot_"));
    assert_eq!(r.body["origin"], "https://shop.example");
    assert_eq!(r.body["originAllowed"], false);
    // Default TTL: 30 days.
    let r = ann
        .send(
            &app,
            "POST",
            "/origin-tokens",
            json!({"projectId": id, "origin": "http://localhost:3000"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let default_ttl = r.body["token"].as_str().unwrap().to_owned();
    for (body, field) in [
        (
            json!({"projectId": id, "origin": "https://shop.example/path"}),
            "origin",
        ),
        (
            json!({"projectId": id, "origin": "http://shop.example"}),
            "origin",
        ),
        (
            json!({"projectId": id, "origin": "https://shop.example", "ttlSeconds": 10}),
            "ttlSeconds",
        ),
        (
            json!({"projectId": id, "origin": "https://shop.example", "ttlSeconds": 366 * 86_400}),
            "ttlSeconds",
        ),
    ] {
        let r = ann.send(&app, "POST", "/origin-tokens", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {:?}", r.body);
        assert_eq!(r.body["error"]["field"], field);
    }
    not_found(
        &bob.send(
            &app,
            "POST",
            "/origin-tokens",
            json!({"projectId": id, "origin": "https://evil.example"}),
        )
        .await,
    );

    // The snapshot carries the live tokens, hashed.
    assert_eq!(snapshot_project(&app, &id).unwrap().origin_tokens.len(), 2);

    // Status and verify need no credentials.
    let r = request(
        "GET",
        &app.url(&format!("/origin-tokens/status?token={token}")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["live"], true);
    assert_eq!(r.body["projectId"], id.as_str());
    assert_eq!(r.body["origin"], "https://shop.example");
    let exp = r.body["expiresAt"].as_str().unwrap().to_owned();
    assert!(exp.ends_with('Z'));
    let r = request(
        "GET",
        &app.url("/origin-tokens/status?token=qz_ot_unknown"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body, json!({"live": false, "reason": "not_found"}));
    let verify = |token: String, origin: &'static str| {
        let url = app.url("/origin-tokens/verify");
        async move {
            request(
                "POST",
                &url,
                &[],
                Some(&json!({"token": token, "origin": origin}).to_string()),
            )
            .await
            .body
        }
    };
    let v = verify(token.clone(), "https://shop.example").await;
    assert_eq!(v["valid"], true);
    assert_eq!(v["expiresAt"], exp.as_str());
    assert_eq!(
        verify(token.clone(), "https://other.example").await,
        json!({"valid": false, "reason": "origin_mismatch"})
    );
    assert_eq!(
        verify(default_ttl.clone(), "http://localhost:3000").await["valid"],
        true
    );

    // Only the owner can invalidate; then it is dead everywhere.
    let r = bob
        .send(
            &app,
            "POST",
            "/origin-tokens/invalidate",
            json!({"token": token}),
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(
        verify(token.clone(), "https://shop.example").await["valid"],
        true
    );
    let r = ann
        .send(
            &app,
            "POST",
            "/origin-tokens/invalidate",
            json!({"token": token}),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = ann
        .send(
            &app,
            "POST",
            "/origin-tokens/invalidate",
            json!({"token": token}),
        )
        .await;
    assert_eq!(r.status, 204, "invalidating twice is harmless");
    assert_eq!(
        verify(token.clone(), "https://shop.example").await,
        json!({"valid": false, "reason": "invalidated"})
    );
    let r = request(
        "GET",
        &app.url(&format!("/origin-tokens/status?token={token}")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body, json!({"live": false, "reason": "invalidated"}));
    assert_eq!(snapshot_project(&app, &id).unwrap().origin_tokens.len(), 1);
    let r = request(
        "POST",
        &app.url("/origin-tokens/invalidate"),
        &[],
        Some(&json!({"token": default_ttl}).to_string()),
    )
    .await;
    assert_eq!(r.status, 401);
    app.stop().await;
}

#[tokio::test]
async fn origin_tokens_on_sqlite() {
    origin_tokens(Backend::Sqlite).await;
}

#[tokio::test]
async fn origin_tokens_on_postgres() {
    origin_tokens(Backend::Postgres).await;
}
