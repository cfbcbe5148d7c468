//! TOTP enrolment, sign-in through a challenge, replay refusal, recovery codes.

use serde_json::json;

use super::*;
use crate::helpers::{Backend, TestApp};

on_both_stores!(
    two_factor_enrolment_signin_and_replay,
    recovery_codes_work_once
);

async fn two_factor_enrolment_signin_and_replay(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("tfa");
    let dt = verified_user(&app, &email).await;

    // A token alone gets no seed: the password is asked for.
    let r = post(&app, "/auth/2fa/create", json!({}), Some(&dt)).await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (400, Some("password"))
    );
    let r = post(
        &app,
        "/auth/2fa/create",
        json!({"password": "not the password"}),
        Some(&dt),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (401, Some("password"))
    );
    // Pending enrolment: sign-in does not ask for a code yet.
    let r = post(
        &app,
        "/auth/2fa/create",
        json!({"password": PASSWORD}),
        Some(&dt),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let secret = r.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 32);
    let uri = r.body["otpauthUri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Qyzar:") && uri.contains(&format!("secret={secret}")),
        "{uri}"
    );
    assert_eq!(r.body["recoveryCodes"].as_array().unwrap().len(), 10);
    let sealed: String = sqlx::query_scalar("SELECT seed_sealed FROM user_totp")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert!(!sealed.contains(&secret), "the seed is stored sealed");
    assert_eq!(
        signin(&app, &email, PASSWORD).await.body["token"]
            .as_str()
            .map(|t| t.starts_with("qz_dt_")),
        Some(true)
    );
    assert_eq!(me(&app, &dt).await.body["twoFactorEnabled"], false);

    // Without a token, the enrolment step is refused; a wrong code is a bad value.
    let r = post(&app, "/auth/2fa/verify", json!({"code": "123456"}), None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (401, Some("missing_credentials"))
    );
    let now = now_secs();
    let wrong = if totp_code(&secret, now) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let r = post(&app, "/auth/2fa/verify", json!({"code": wrong}), Some(&dt)).await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("code"))
    );
    let enrol_code = totp_code(&secret, now);
    let r = post(
        &app,
        "/auth/2fa/verify",
        json!({"code": enrol_code}),
        Some(&dt),
    )
    .await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"twoFactorEnabled": true}))
    );
    assert_eq!(me(&app, &dt).await.body["twoFactorEnabled"], true);
    let r = post(
        &app,
        "/auth/2fa/create",
        json!({"password": PASSWORD}),
        Some(&dt),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (401, Some("code")),
        "an active second factor is not replaced without a code"
    );

    // Sign-in now stops at a challenge.
    let ch = challenge(&app, &email).await;
    assert!(ch.starts_with("qz_2fa_"));
    // The enrolment's code is spent: replaying it within its window fails.
    let r = post(
        &app,
        "/auth/2fa/verify",
        json!({"challengeToken": ch, "code": enrol_code}),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (401, Some("code")),
        "{:?}",
        r.body
    );
    // The next step's code is accepted (one step of skew).
    let next = totp_code(&secret, now_secs() + 30);
    let r = post(
        &app,
        "/auth/2fa/verify",
        json!({"challengeToken": ch, "code": next}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let dt2 = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(me(&app, &dt2).await.status, 200);
    // The challenge is spent, and so is that code.
    let r = post(
        &app,
        "/auth/2fa/verify",
        json!({"challengeToken": ch, "code": next}),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (401, Some("challengeToken"))
    );
    let ch2 = challenge(&app, &email).await;
    let r = post(
        &app,
        "/auth/2fa/verify",
        json!({"challengeToken": ch2, "code": next}),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (401, Some("code")),
        "a code works once"
    );

    // Guessing on one challenge: five wrong codes, then 429.
    let ch3 = challenge(&app, &email).await;
    for _ in 0..5 {
        let r = post(
            &app,
            "/auth/2fa/verify",
            json!({"challengeToken": ch3, "code": wrong}),
            None,
        )
        .await;
        assert_eq!(r.status, 401, "{:?}", r.body);
    }
    let r = post(
        &app,
        "/auth/2fa/verify",
        json!({"challengeToken": ch3, "code": wrong}),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    app.stop().await;
}

async fn recovery_codes_work_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let email = unique_email("rec");
    let dt = verified_user(&app, &email).await;
    let (_secret, codes) = enrol_two_factor(&app, &dt).await;
    assert!(
        codes
            .iter()
            .all(|c| c.len() == 19 && c.matches('-').count() == 3),
        "{codes:?}"
    );

    let ch = challenge(&app, &email).await;
    let r = post(
        &app,
        "/auth/2fa/recovery",
        json!({"challengeToken": ch, "recoveryCode": codes[0]}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["recoveryCodesLeft"], 9);
    assert_eq!(
        me(&app, r.body["token"].as_str().unwrap()).await.status,
        200
    );

    let ch = challenge(&app, &email).await;
    let r = post(
        &app,
        "/auth/2fa/recovery",
        json!({"challengeToken": ch, "recoveryCode": codes[0]}),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (401, Some("recoveryCode")),
        "a recovery code works once"
    );
    // Case and dashes do not matter; the failed try did not spend the challenge.
    let typed = codes[1].replace('-', " ").to_uppercase();
    let r = post(
        &app,
        "/auth/2fa/recovery",
        json!({"challengeToken": ch, "recoveryCode": typed}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["recoveryCodesLeft"], 8);
    let r = post(
        &app,
        "/auth/2fa/recovery",
        json!({"challengeToken": "qz_2fa_unknown", "recoveryCode": codes[2]}),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (401, Some("challengeToken"))
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM recovery_codes WHERE used_at IS NULL"
        )
        .await,
        8
    );
    app.stop().await;
}
