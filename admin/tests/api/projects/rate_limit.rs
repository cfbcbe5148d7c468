//! The dashboard's dry-run rate-limit check, answered by a running engine
//! without consuming anything.

use std::time::Duration;

use serde_json::json;

use super::{create_project, id_of, not_found, sign_up};
use crate::helpers::{Backend, TestApp};
use crate::push::{admin_for, eventually, TestEngine};

#[tokio::test]
async fn dry_run_rate_limit_check_goes_through_the_engine() {
    // Without an engine configured: a clear 503.
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let ann = sign_up(&app, "ann@example.com").await;
    let id = id_of(&create_project(&app, &ann.token, "Shop").await);
    let r = ann
        .send(
            &app,
            "POST",
            "/projects/rate-limit/check",
            json!({"projectId": id, "ip": "203.0.113.9"}),
        )
        .await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "store_unavailable");
    app.stop().await;

    let engine = TestEngine::spawn().await;
    let app = admin_for(
        Backend::Sqlite,
        &[engine.internal_url()],
        Some(format!("http://{}", engine.public)),
    )
    .await
    .unwrap();
    let ann = sign_up(&app, "ann@example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;
    let p = create_project(&app, &ann.token, "Shop").await;
    let (id, secret) = (id_of(&p), p["secret"].as_str().unwrap().to_owned());
    let r = ann.send(&app, "PATCH", "/projects/settings", json!({"projectId": id, "settings": {"rateLimit": {"ip": {"limit": 2, "windowSeconds": 60}}}})).await;
    assert_eq!(r.status, 200);
    let check = || {
        ann.send(
            &app,
            "POST",
            "/projects/rate-limit/check",
            json!({"projectId": id, "ip": "203.0.113.9", "metadata": {"email": "a@b.example"}}),
        )
    };
    assert!(
        eventually(Duration::from_secs(1), || async {
            check().await.body["buckets"][0]["limit"] == 2
        })
        .await
    );
    // Dry runs consume nothing: the same answer every time.
    for _ in 0..4 {
        let r = check().await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["allowed"], true);
        assert_eq!(r.body["remaining"], 1, "{:?}", r.body);
    }
    // An invalid field is the engine's 422, naming it.
    let r = ann
        .send(
            &app,
            "POST",
            "/projects/rate-limit/check",
            json!({"projectId": id, "ip": "nope"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], "ip");
    not_found(
        &bob.send(
            &app,
            "POST",
            "/projects/rate-limit/check",
            json!({"projectId": id, "ip": "203.0.113.9"}),
        )
        .await,
    );
    // The engine's own counters were never touched.
    let r = engine.rate_limit_check(&id, &secret, false).await;
    assert_eq!(r.body["remaining"], 1);
    engine.stop();
    app.stop().await;
}
