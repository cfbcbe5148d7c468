//! Password reset by mail and password change, and the tokens each revokes.

use serde_json::json;

use super::*;
use crate::helpers::{Backend, TestApp};

on_both_stores!(
    password_reset_revokes_every_token,
    password_change_revokes_the_other_tokens
);

async fn password_reset_revokes_every_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("reset");
    let old = verified_user(&app, &email).await;
    let stranger = unique_email("nobody");

    let known = post(
        &app,
        "/auth/password-reset-request",
        json!({"email": email}),
        None,
    )
    .await;
    let unknown = post(
        &app,
        "/auth/password-reset-request",
        json!({"email": stranger}),
        None,
    )
    .await;
    assert_eq!(
        (known.status, &known.body),
        (202, &json!({"accepted": true}))
    );
    assert_eq!(
        (unknown.status, &unknown.body),
        (known.status, &known.body),
        "same answer for strangers"
    );
    let mail = wait_for_mails(outbox(&app), &email, "/reset-password?token=", 1)
        .await
        .remove(0);
    let token = link_token(&mail, "/reset-password");
    assert!(token.starts_with("qz_pr_"));

    // A too-short password is refused before the link is spent.
    let r = post(
        &app,
        "/auth/password-reset-confirm",
        json!({"token": token, "password": "short"}),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("password"))
    );
    let r = post(
        &app,
        "/auth/password-reset-confirm",
        json!({"token": token, "password": "a brand new password"}),
        None,
    )
    .await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"passwordChanged": true}))
    );

    assert_eq!(
        me(&app, &old).await.status,
        401,
        "every old session is revoked"
    );
    assert_eq!(signin(&app, &email, PASSWORD).await.status, 401);
    assert_eq!(
        signin(&app, &email, "a brand new password").await.status,
        200
    );
    let r = post(
        &app,
        "/auth/password-reset-confirm",
        json!({"token": token, "password": "yet another password"}),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (401, Some("token")),
        "a reset link works once"
    );
    assert!(
        mails_in(outbox(&app))
            .iter()
            .all(|m| !m.contains(&stranger)),
        "no mail to an unknown address"
    );
    app.stop().await;
}

async fn password_change_revokes_the_other_tokens(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("change");
    let a = verified_user(&app, &email).await;
    let b = signin(&app, &email, PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = send(
        &app,
        "PATCH",
        "/auth/password",
        json!({"currentPassword": "wrong password", "newPassword": "a brand new password"}),
        Some(&a),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (401, Some("currentPassword"))
    );
    let r = send(
        &app,
        "PATCH",
        "/auth/password",
        json!({"currentPassword": PASSWORD, "newPassword": "short"}),
        Some(&a),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("newPassword"))
    );
    let r = send(
        &app,
        "PATCH",
        "/auth/password",
        json!({"currentPassword": PASSWORD, "newPassword": "a brand new password"}),
        None,
    )
    .await;
    assert_eq!(r.status, 401);

    let r = send(
        &app,
        "PATCH",
        "/auth/password",
        json!({"currentPassword": PASSWORD, "newPassword": "a brand new password"}),
        Some(&a),
    )
    .await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"passwordChanged": true}))
    );
    assert_eq!(me(&app, &a).await.status, 200, "this session stays");
    assert_eq!(me(&app, &b).await.status, 401, "the other one is revoked");
    assert_eq!(signin(&app, &email, PASSWORD).await.status, 401);
    assert_eq!(
        signin(&app, &email, "a brand new password").await.status,
        200
    );
    app.stop().await;
}
