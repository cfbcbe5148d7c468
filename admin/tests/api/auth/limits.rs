//! Brute-force limits, and bad input on every route changing nothing.

use serde_json::{json, Value};

use super::*;
use crate::helpers::{request, Backend, TestApp};

on_both_stores!(brute_force_is_throttled, bad_input_changes_nothing);

async fn brute_force_is_throttled(backend: Backend) {
    // Behind a proxy on loopback, configured as trusted.
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.trusted_proxies = qyzar_admin::throttle::client_ip::parse_list("127.0.0.0/8").unwrap();
    })
    .await
    else {
        return;
    };
    let email = unique_email("victim");
    verified_user(&app, &email).await;
    for i in 0..10 {
        let r = signin(&app, &email, &format!("guess number {i}")).await;
        assert_eq!(r.status, 401, "{:?}", r.body);
    }
    let r = signin(&app, &email, "guess number 11").await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    assert_eq!(
        signin(&app, &email, PASSWORD).await.status,
        429,
        "even the right password waits"
    );
    // An unknown address is limited the same way, so a 429 tells nothing.
    let stranger = unique_email("stranger");
    for _ in 0..10 {
        assert_eq!(
            signin(&app, &stranger, "whatever password").await.status,
            401
        );
    }
    assert_eq!(
        signin(&app, &stranger, "whatever password").await.status,
        429
    );

    // Mail-sending routes: five per address per hour.
    let target = unique_email("inbox");
    for _ in 0..5 {
        assert_eq!(
            post(
                &app,
                "/auth/password-reset-request",
                json!({"email": target}),
                None
            )
            .await
            .status,
            202
        );
    }
    let r = post(
        &app,
        "/auth/verify-email/resend",
        json!({"email": target}),
        None,
    )
    .await;
    assert_eq!(r.status, 429);

    // Per client: wrong single-use tokens from one address (behind the
    // trusted proxy on loopback, X-Forwarded-For names the client).
    let xff = [("x-forwarded-for", "203.0.113.7")];
    for _ in 0..20 {
        let r = request(
            "POST",
            &app.url("/auth/verify-email"),
            &xff,
            Some(r#"{"token":"qz_ev_guess"}"#),
        )
        .await;
        assert_eq!(r.status, 401);
    }
    let r = request(
        "POST",
        &app.url("/auth/verify-email"),
        &xff,
        Some(r#"{"token":"qz_ev_guess"}"#),
    )
    .await;
    assert_eq!(r.status, 429);
    let r = request(
        "POST",
        &app.url("/auth/verify-email"),
        &[("x-forwarded-for", "203.0.113.8")],
        Some(r#"{"token":"qz_ev_guess"}"#),
    )
    .await;
    assert_eq!(r.status, 401, "another client is not affected");
    app.stop().await;
}

async fn bad_input_changes_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("bad");
    let dt = verified_user(&app, &email).await;
    let users = count(&app, "SELECT COUNT(*) FROM users").await;
    let tokens = count(&app, "SELECT COUNT(*) FROM dashboard_tokens").await;
    let auth_tokens = count(&app, "SELECT COUNT(*) FROM auth_tokens").await;
    let mails = mails_in(outbox(&app)).len();
    let phc: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();

    let routes: &[(&str, &str, bool)] = &[
        ("POST", "/auth/register", false),
        ("POST", "/auth/verify-email", false),
        ("POST", "/auth/verify-email/resend", false),
        ("POST", "/auth/signin", false),
        ("POST", "/auth/2fa/verify", true),
        ("POST", "/auth/2fa/create", true),
        ("POST", "/auth/2fa/disable", true),
        ("POST", "/auth/2fa/recovery", false),
        ("POST", "/auth/password-reset-request", false),
        ("POST", "/auth/password-reset-confirm", false),
        ("PATCH", "/auth/password", true),
    ];
    let auth = format!("Bearer {dt}");
    for (method, path, with_token) in routes {
        let headers: Vec<(&str, &str)> = if *with_token {
            vec![("authorization", auth.as_str())]
        } else {
            vec![]
        };
        let r = request(method, &app.url(path), &headers, Some("{not json")).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (400, Some("malformed_json")),
            "{path}"
        );
        let r = request(method, &app.url(path), &headers, Some("{}")).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (400, Some("missing_field")),
            "{path}"
        );
        let wrong_types = r#"{"email":1,"password":2,"token":3,"code":4,"challengeToken":5,"recoveryCode":6,"currentPassword":7,"newPassword":8}"#;
        let r = request(method, &app.url(path), &headers, Some(wrong_types)).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (422, Some("invalid_field")),
            "{path}"
        );
        let mut h = headers.clone();
        h.push(("content-type", "text/plain"));
        let r = request(method, &app.url(path), &h, Some("{}")).await;
        assert_eq!(r.status, 415, "{path}");
    }
    let checks: &[(&str, &str, Value, &str)] = &[
        (
            "POST",
            "/auth/register",
            json!({"email": unique_email("new"), "password": "123456789"}),
            "password",
        ),
        (
            "POST",
            "/auth/register",
            json!({"email": unique_email("new"), "password": "x".repeat(257)}),
            "password",
        ),
        (
            "POST",
            "/auth/register",
            json!({"email": "not-an-address", "password": PASSWORD}),
            "email",
        ),
        (
            "POST",
            "/auth/signin",
            json!({"email": "not-an-address", "password": PASSWORD}),
            "email",
        ),
        (
            "POST",
            "/auth/verify-email/resend",
            json!({"email": "@"}),
            "email",
        ),
        (
            "POST",
            "/auth/password-reset-request",
            json!({"email": ""}),
            "email",
        ),
        (
            "POST",
            "/auth/password-reset-confirm",
            json!({"token": "qz_pr_x", "password": "short"}),
            "password",
        ),
        (
            "POST",
            "/auth/verify-email",
            json!({"token": "x".repeat(500)}),
            "token",
        ),
        ("POST", "/auth/2fa/verify", json!({"code": "12345"}), "code"),
        (
            "POST",
            "/auth/2fa/verify",
            json!({"code": "abcdef", "challengeToken": "qz_2fa_x"}),
            "code",
        ),
        (
            "POST",
            "/auth/2fa/recovery",
            json!({"challengeToken": "qz_2fa_x", "recoveryCode": "nope"}),
            "recoveryCode",
        ),
        (
            "PATCH",
            "/auth/password",
            json!({"currentPassword": PASSWORD, "newPassword": "short"}),
            "newPassword",
        ),
    ];
    for (method, path, body, field) in checks {
        let r = send(&app, method, path, body.clone(), Some(&dt)).await;
        assert_eq!(
            (
                r.status,
                r.body["error"]["code"].as_str(),
                r.body["error"]["field"].as_str()
            ),
            (422, Some("invalid_field"), Some(*field)),
            "{path} {body}"
        );
    }
    let r = request("GET", &app.url("/auth/signin"), &[], None).await;
    assert_eq!(r.status, 405);

    assert_eq!(count(&app, "SELECT COUNT(*) FROM users").await, users);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM dashboard_tokens").await,
        tokens
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM auth_tokens").await,
        auth_tokens
    );
    assert_eq!(count(&app, "SELECT COUNT(*) FROM user_totp").await, 0);
    let after: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert_eq!(after, phc);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mails_in(outbox(&app)).len(), mails, "no mail went out");
    // None of it used up a budget: the user still signs in.
    assert_eq!(signin(&app, &email, PASSWORD).await.status, 200);
    app.stop().await;
}
