//! Abuse cases: accounts. A stolen dashboard token cannot take over the
//! second factor, sessions can be ended, a stranger cannot lock an owner out
//! of sign-in (nor wipe the counters that slow them), `X-Forwarded-For` is
//! believed only from configured proxies, the traffic intake refuses a
//! keyless caller before reading its body, and credentials never show in
//! `Debug`.

use serde_json::json;

use crate::auth::{
    enrol_two_factor, me, now_secs, outbox, post, signin, totp_code, unique_email, verified_user,
    wait_for_mails, PASSWORD,
};
use crate::helpers::{request, Backend, TestApp, TestResponse};

/// One `#[tokio::test]` per case and database, named `<store>::<case>`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Backend::Postgres).await })*
        }
    };
}

mod redaction;
mod throttling;

on_both_stores!(
    stolen_token_cannot_enrol_or_replace_two_factor,
    enrolling_revokes_the_other_tokens,
    disable_needs_password_and_a_second_factor,
    lost_phone_recovery_path,
    signout_revokes_this_token_only,
    signout_all_revokes_every_token,
);

fn err(r: &TestResponse) -> (u16, Option<&str>, Option<&str>) {
    (
        r.status,
        r.body["error"]["code"].as_str(),
        r.body["error"]["field"].as_str(),
    )
}

/// A six-digit code that is not the secret's for the current step or one
/// either side.
fn wrong_code(secret: &str) -> String {
    let now = now_secs();
    let live: Vec<String> = [now - 30, now, now + 30]
        .iter()
        .map(|t| totp_code(secret, *t))
        .collect();
    ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|c| !live.iter().any(|l| l == c))
        .unwrap()
        .to_owned()
}

async fn totp_rows(app: &TestApp) -> i64 {
    crate::auth::count(app, "SELECT COUNT(*) FROM user_totp").await
}

async fn stolen_token_cannot_enrol_or_replace_two_factor(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("owner");
    let stolen = verified_user(&app, &email).await;
    // The token alone: no seed, nothing stored.
    let r = post(&app, "/auth/2fa/create", json!({}), Some(&stolen)).await;
    assert_eq!(err(&r), (400, Some("missing_field"), Some("password")));
    let r = post(
        &app,
        "/auth/2fa/create",
        json!({"password": "a guess at it"}),
        Some(&stolen),
    )
    .await;
    assert_eq!(
        err(&r),
        (401, Some("invalid_credentials"), Some("password"))
    );
    assert!(r.body.get("secret").is_none());
    assert_eq!(totp_rows(&app).await, 0);
    // Five wrong passwords, then the token is no longer a password oracle.
    for _ in 0..4 {
        let r = post(
            &app,
            "/auth/2fa/create",
            json!({"password": "another guess"}),
            Some(&stolen),
        )
        .await;
        assert_eq!(r.status, 401);
    }
    let r = post(
        &app,
        "/auth/2fa/create",
        json!({"password": PASSWORD}),
        Some(&stolen),
    )
    .await;
    assert_eq!(
        err(&r).1,
        Some("rate_limited"),
        "even the right one waits now"
    );
    app.stop().await;

    // The owner (another app, fresh limits) turns 2FA on; a thief holding a
    // token AND the password still cannot replace it without a code.
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let owner = verified_user(&app, &email).await;
    let (secret, _codes) = enrol_two_factor(&app, &owner).await;
    let r = post(
        &app,
        "/auth/2fa/create",
        json!({"password": PASSWORD}),
        Some(&owner),
    )
    .await;
    assert_eq!(err(&r), (401, Some("invalid_credentials"), Some("code")));
    let r = post(
        &app,
        "/auth/2fa/create",
        json!({"password": PASSWORD, "code": wrong_code(&secret)}),
        Some(&owner),
    )
    .await;
    assert_eq!(err(&r), (401, Some("invalid_credentials"), Some("code")));
    assert_eq!(
        me(&app, &owner).await.body["twoFactorEnabled"],
        true,
        "still the owner's factor"
    );
    app.stop().await;
}

async fn enrolling_revokes_the_other_tokens(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("enrol");
    let here = verified_user(&app, &email).await;
    let elsewhere = signin(&app, &email, PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(me(&app, &elsewhere).await.status, 200);
    enrol_two_factor(&app, &here).await;
    let r = me(&app, &elsewhere).await;
    assert_eq!(
        err(&r),
        (401, Some("invalid_credentials"), None),
        "the other session ended"
    );
    assert_eq!(
        me(&app, &here).await.status,
        200,
        "the enrolling session stays"
    );
    wait_for_mails(
        outbox(&app),
        &email,
        "Two-factor authentication was turned on for",
        1,
    )
    .await;
    app.stop().await;
}

async fn disable_needs_password_and_a_second_factor(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("off");
    let dt = verified_user(&app, &email).await;
    let (secret, codes) = enrol_two_factor(&app, &dt).await;
    let code = totp_code(&secret, now_secs() + 30);
    let cases = [
        (
            json!({"code": code}),
            (400, Some("missing_field"), Some("password")),
        ),
        (
            json!({"password": PASSWORD}),
            (401, Some("invalid_credentials"), Some("code")),
        ),
        (
            json!({"password": "not the password", "code": code}),
            (401, Some("invalid_credentials"), Some("password")),
        ),
        (
            json!({"password": PASSWORD, "recoveryCode": "aaaa-aaaa-aaaa-aaaa"}),
            (401, Some("invalid_credentials"), Some("recoveryCode")),
        ),
        (
            json!({"password": PASSWORD, "code": code, "recoveryCode": codes[0]}),
            (422, Some("invalid_field"), Some("recoveryCode")),
        ),
    ];
    for (body, want) in cases {
        let r = post(&app, "/auth/2fa/disable", body.clone(), Some(&dt)).await;
        assert_eq!(err(&r), want, "{body}");
        assert_eq!(me(&app, &dt).await.body["twoFactorEnabled"], true, "{body}");
    }
    let r = post(
        &app,
        "/auth/2fa/disable",
        json!({"password": PASSWORD, "code": code}),
        None,
    )
    .await;
    assert_eq!(err(&r).1, Some("missing_credentials"));

    let r = post(
        &app,
        "/auth/2fa/disable",
        json!({"password": PASSWORD, "code": code}),
        Some(&dt),
    )
    .await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"twoFactorEnabled": false}))
    );
    assert_eq!(me(&app, &dt).await.body["twoFactorEnabled"], false);
    assert_eq!(totp_rows(&app).await, 0);
    assert!(
        signin(&app, &email, PASSWORD).await.body["token"].is_string(),
        "no challenge now"
    );
    let r = post(
        &app,
        "/auth/2fa/disable",
        json!({"password": PASSWORD, "code": code}),
        Some(&dt),
    )
    .await;
    assert_eq!(err(&r).0, 409, "nothing left to turn off");
    wait_for_mails(
        outbox(&app),
        &email,
        "Two-factor authentication was turned off for",
        1,
    )
    .await;
    app.stop().await;
}

/// Phone lost: a recovery code signs in and re-enrols a new phone; a reset
/// by mail keeps the factor (and says so in its notice).
async fn lost_phone_recovery_path(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("lost");
    let dt = verified_user(&app, &email).await;
    let (old_secret, codes) = enrol_two_factor(&app, &dt).await;

    let ch = crate::auth::challenge(&app, &email).await;
    let r = post(
        &app,
        "/auth/2fa/recovery",
        json!({"challengeToken": ch, "recoveryCode": codes[0]}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rec = r.body["token"].as_str().unwrap().to_owned();
    let r = post(
        &app,
        "/auth/2fa/create",
        json!({"password": PASSWORD, "recoveryCode": codes[1]}),
        Some(&rec),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let new_secret = r.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    wait_for_mails(
        outbox(&app),
        &email,
        "A new authenticator is being set up",
        1,
    )
    .await;
    let r = post(
        &app,
        "/auth/2fa/verify",
        json!({"code": totp_code(&new_secret, now_secs())}),
        Some(&rec),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(me(&app, &dt).await.status, 401, "older sessions ended");
    // The old codes died with the old factor.
    let ch = crate::auth::challenge(&app, &email).await;
    let r = post(
        &app,
        "/auth/2fa/recovery",
        json!({"challengeToken": ch, "recoveryCode": codes[2]}),
        None,
    )
    .await;
    assert_eq!(err(&r).2, Some("recoveryCode"));

    // A reset by mail keeps two-factor authentication on.
    let r = post(
        &app,
        "/auth/password-reset-request",
        json!({"email": email}),
        None,
    )
    .await;
    assert_eq!(r.status, 202);
    let mail = wait_for_mails(outbox(&app), &email, "/reset-password?token=", 1)
        .await
        .remove(0);
    let token = crate::auth::link_token(&mail, "/reset-password");
    let r = post(
        &app,
        "/auth/password-reset-confirm",
        json!({"token": token, "password": "a brand new password"}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_for_mails(
        outbox(&app),
        &email,
        "was reset through the link we mailed",
        1,
    )
    .await;
    let r = signin(&app, &email, "a brand new password").await;
    assert_eq!(r.body["twoFactorRequired"], true, "{:?}", r.body);
    app.stop().await;
}

async fn signout_revokes_this_token_only(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("out");
    let a = verified_user(&app, &email).await;
    let b = signin(&app, &email, PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = post(&app, "/auth/signout", json!({}), Some(&a)).await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"signedOut": true, "revokedTokens": 1}))
    );
    assert_eq!(
        err(&me(&app, &a).await),
        (401, Some("invalid_credentials"), None)
    );
    assert_eq!(me(&app, &b).await.status, 200);
    let r = post(&app, "/auth/signout", json!({}), Some(&a)).await;
    assert_eq!(r.status, 401, "a revoked token cannot sign out again");
    // No body at all is fine too.
    let auth = format!("Bearer {b}");
    let r = request(
        "POST",
        &app.url("/auth/signout"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(me(&app, &b).await.status, 401);
    let r = request("POST", &app.url("/auth/signout"), &[], None).await;
    assert_eq!(err(&r).1, Some("missing_credentials"));
    app.stop().await;
}

async fn signout_all_revokes_every_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("all");
    let other = unique_email("bystander");
    let a = verified_user(&app, &email).await;
    let bystander = verified_user(&app, &other).await;
    let mut tokens = vec![a.clone()];
    for _ in 0..2 {
        tokens.push(
            signin(&app, &email, PASSWORD).await.body["token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let r = post(&app, "/auth/signout-all", json!({}), Some(&tokens[1])).await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"signedOut": true, "revokedTokens": 3}))
    );
    for t in &tokens {
        assert_eq!(me(&app, t).await.status, 401);
    }
    assert_eq!(
        me(&app, &bystander).await.status,
        200,
        "another account is untouched"
    );
    // Signing in again works.
    assert!(signin(&app, &email, PASSWORD).await.body["token"].is_string());
    app.stop().await;
}
