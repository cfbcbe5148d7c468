//! Test captcha tokens from admin, accepted (and a `fail` refused) by a
//! running engine's `/connect` for a project in test mode.

use std::time::Duration;

use serde_json::{json, Value};

use super::{create_project, id_of, sign_up};
use crate::helpers::{request, Backend};
use crate::push::{admin_for, eventually, TestEngine};

/// A realistic browser entropy document for `/connect`.
pub fn entropy() -> Value {
    json!({
        "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "languages": ["en-US", "en"], "timezone": "Europe/Paris",
        "screen": {"width": 1920, "height": 1080, "colorDepth": 24, "pixelRatio": 1},
        "hardwareConcurrency": 8, "deviceMemory": 8, "platform": "Win32",
        "canvasHash": "a1b2c3d4", "webglVendor": "Google Inc. (NVIDIA)", "webglRenderer": "ANGLE (NVIDIA GeForce RTX 3060)",
        "audioHash": "124.04347", "fonts": ["Arial", "Calibri", "Segoe UI"], "touchPoints": 0, "webdriver": false, "cookiesEnabled": true
    })
}

#[tokio::test]
async fn test_captcha_tokens_are_accepted_by_a_running_engine_in_test_mode() {
    let engine = TestEngine::spawn().await;
    let app = admin_for(Backend::Sqlite, &[engine.internal_url()], None)
        .await
        .unwrap();
    let ann = sign_up(&app, "ann@example.com").await;
    let id = id_of(&create_project(&app, &ann.token, "Shop").await);
    let captcha = |outcome: &'static str| {
        let url = app.url("/test/captcha");
        let body = json!({"projectId": id, "outcome": outcome}).to_string();
        async move { request("POST", &url, &[], Some(&body)).await }
    };
    // Not in test mode: refused.
    let r = captcha("pass").await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(captcha("maybe").await.status, 422);
    let r = request(
        "POST",
        &app.url("/test/captcha"),
        &[],
        Some(&json!({"projectId": "prj_AAAAAAAAAAAAAAAAAAAAAA", "outcome": "pass"}).to_string()),
    )
    .await;
    assert_eq!(r.status, 404);

    let r = ann
        .send(&app, "PATCH", "/projects/settings", json!({"projectId": id, "settings": {"testMode": true, "allowedOrigins": ["https://shop.example"]}}))
        .await;
    assert_eq!(r.status, 200);
    let origin = ann
        .send(
            &app,
            "POST",
            "/origin-tokens",
            json!({"projectId": id, "origin": "https://shop.example"}),
        )
        .await;
    let origin_token = origin.body["token"].as_str().unwrap().to_owned();
    let pass = captcha("pass").await;
    assert_eq!(pass.status, 200, "{:?}", pass.body);
    assert!(pass.body["captchaToken"]
        .as_str()
        .unwrap()
        .starts_with("qz_tc_pass."));
    assert!(pass.body["expiresAt"].as_str().unwrap().ends_with('Z'));
    let fail = captcha("fail").await.body["captchaToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let version = app.state.pusher.version();
    assert!(
        eventually(Duration::from_secs(1), || async {
            engine.engine.config.version() >= version
        })
        .await
    );
    let connect = |captcha_token: String| {
        let url = engine.url("/connect");
        let body = json!({"projectId": id, "originToken": origin_token, "captchaToken": captcha_token, "entropy": entropy()}).to_string();
        async move {
            request(
                "POST",
                &url,
                &[("origin", "https://shop.example")],
                Some(&body),
            )
            .await
        }
    };
    let r = connect(pass.body["captchaToken"].as_str().unwrap().to_owned()).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(r.body["sessionId"].as_str().unwrap().starts_with("ses_"));
    let r = connect(fail).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    engine.stop();
    app.stop().await;
}
