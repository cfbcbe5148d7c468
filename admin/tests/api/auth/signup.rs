//! Register, verify the address, sign in, `GET /auth/me`; answers that must
//! not reveal membership.

use serde_json::{json, Value};

use super::*;
use crate::helpers::{request, Backend, TestApp};

on_both_stores!(
    register_verify_signin_me,
    duplicate_register_answers_the_same,
    wrong_password_and_unknown_email_answer_the_same
);

async fn register_verify_signin_me(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("ann");

    let r = register(&app, &format!("  {}", email.to_uppercase()), PASSWORD).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["email"], email.as_str(), "stored normalised");
    assert_eq!(r.body["emailVerified"], false);
    assert!(r.body["userId"].as_str().unwrap().starts_with("usr_"));
    let user_id = r.body["userId"].as_str().unwrap().to_owned();

    // Right password, unverified address: refused until the link is opened.
    let r = signin(&app, &email, PASSWORD).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "email_not_verified");

    let mail = wait_for_mails(outbox(&app), &email, "/verify-email?token=", 1)
        .await
        .remove(0);
    assert!(
        mail.contains("Subject: Verify your Qyzar email address"),
        "{mail}"
    );
    let token = link_token(&mail, "/verify-email");
    assert!(token.starts_with("qz_ev_"), "{token} in {mail}");
    let r = post(&app, "/auth/verify-email", json!({"token": token}), None).await;
    assert_eq!((r.status, &r.body), (200, &json!({"emailVerified": true})));
    let r = post(&app, "/auth/verify-email", json!({"token": token}), None).await;
    assert_eq!(r.status, 401, "a verification link works once");
    assert_eq!(r.body["error"]["code"], "invalid_credentials");
    assert_eq!(r.body["error"]["field"], "token");

    let r = signin(&app, &email, PASSWORD).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let dt = r.body["token"].as_str().unwrap().to_owned();
    assert!(dt.starts_with("qz_dt_"));
    assert!(r.body["expiresAt"].as_str().unwrap().ends_with('Z'));

    let r = me(&app, &dt).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["userId"], user_id.as_str());
    assert_eq!(r.body["email"], email.as_str());
    assert_eq!(r.body["emailVerified"], true);
    assert_eq!(r.body["twoFactorEnabled"], false);
    assert_eq!(r.body["passwordAuth"], true);
    assert!(r.body["createdAt"].as_str().unwrap().ends_with('Z'));

    let r = request("GET", &app.url("/auth/me"), &[], None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (401, Some("missing_credentials"))
    );
    for bad in [
        "Bearer qz_dt_nope",
        "Bearer qz_sk_nope",
        "Basic abc",
        "Bearer",
    ] {
        let r = request("GET", &app.url("/auth/me"), &[("authorization", bad)], None).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (401, Some("invalid_credentials")),
            "{bad}"
        );
    }

    // Nothing is stored in clear.
    let stored: String = sqlx::query_scalar("SELECT token_hash FROM dashboard_tokens")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), 64);
    assert_ne!(stored, dt);
    let phc: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert!(phc.starts_with("$argon2id$"));
    app.stop().await;
}

async fn duplicate_register_answers_the_same(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("dup");
    let first = register(&app, &email, PASSWORD).await;
    let second = register(&app, &email, "another password entirely").await;
    assert_eq!((first.status, second.status), (201, 201));
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&first.body), keys(&second.body));
    assert_eq!(first.body["email"], second.body["email"]);
    assert_eq!(second.body["emailVerified"], false);
    assert_ne!(
        first.body["userId"], second.body["userId"],
        "the second id is a decoy"
    );
    assert_eq!(count(&app, "SELECT COUNT(*) FROM users").await, 1);

    // The owner of the inbox hears about the attempt; no second link is made.
    let notice = wait_for_mails(outbox(&app), &email, "already has one", 1)
        .await
        .remove(0);
    assert!(!notice.contains("token="), "{notice}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM auth_tokens").await, 1);

    // The first password is the one that counts.
    let mail = wait_for_mails(outbox(&app), &email, "/verify-email?token=", 1)
        .await
        .remove(0);
    post(
        &app,
        "/auth/verify-email",
        json!({"token": link_token(&mail, "/verify-email")}),
        None,
    )
    .await;
    assert_eq!(
        signin(&app, &email, "another password entirely")
            .await
            .status,
        401
    );
    assert_eq!(signin(&app, &email, PASSWORD).await.status, 200);
    app.stop().await;
}

async fn wrong_password_and_unknown_email_answer_the_same(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("known");
    verified_user(&app, &email).await;
    let wrong = signin(&app, &email, "not the password").await;
    let unknown = signin(&app, &unique_email("stranger"), "not the password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!((wrong.status, &wrong.body), (unknown.status, &unknown.body));
    assert_eq!(wrong.body["error"]["code"], "invalid_credentials");
    let long = signin(&app, &email, &"x".repeat(300)).await;
    assert_eq!((long.status, &long.body), (401, &wrong.body));
    app.stop().await;
}
