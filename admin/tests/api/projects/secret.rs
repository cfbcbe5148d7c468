//! Secret reveal behind a fresh TOTP code, single-use grants, and rotation
//! with a grace period during which a running engine accepts both secrets
//! and tokens of the old key.

use std::time::Duration;

use serde_json::json;

use super::{create_project, id_of, not_found, sign_up};
use crate::helpers::{request, Backend};
use crate::push::{admin_for, eventually, snapshot_project, TestEngine};

/// The TOTP code of `step` (Unix seconds / 30) for a base32 seed, as an
/// authenticator app computes it.
fn totp_code(seed_b32: &str, step: u64) -> String {
    use totp_rs::{Algorithm, Secret, TOTP};
    let seed = Secret::Encoded(seed_b32.to_owned()).to_bytes().unwrap();
    TOTP::new(Algorithm::SHA1, 6, 1, 30, seed)
        .unwrap()
        .generate(step * 30)
}

fn step_now() -> u64 {
    (qyzar_shared::time::now_ms() / 1000 / 30) as u64
}

async fn secret_reveal_and_rotation(backend: Backend) {
    let engine = TestEngine::spawn().await;
    let Some(app) = admin_for(backend, &[engine.internal_url()], None).await else {
        engine.stop();
        return;
    };
    let ann = sign_up(&app, "ann@example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;
    let p = create_project(&app, &ann.token, "Shop").await;
    let (id, old_secret) = (id_of(&p), p["secret"].as_str().unwrap().to_owned());

    // No TOTP yet: no grant.
    let r = ann
        .send(
            &app,
            "POST",
            "/projects/secret/2fa",
            json!({"projectId": id, "code": "123456"}),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    // Enrol, confirming with the previous step's code, so the current and
    // the next step stay fresh for two grants (each code works once).
    let r = ann
        .send(
            &app,
            "POST",
            "/auth/2fa/create",
            json!({"password": super::PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seed = r.body["secret"].as_str().unwrap().to_owned();
    let r = ann
        .send(
            &app,
            "POST",
            "/auth/2fa/verify",
            json!({"code": totp_code(&seed, step_now() - 1)}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let r = ann
        .send(
            &app,
            "POST",
            "/projects/secret/2fa",
            json!({"projectId": id, "code": "12345"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], "code");
    let now_code = totp_code(&seed, step_now());
    let wrong = if now_code == "000000" {
        "111111"
    } else {
        "000000"
    };
    let r = ann
        .send(
            &app,
            "POST",
            "/projects/secret/2fa",
            json!({"projectId": id, "code": wrong}),
        )
        .await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(r.body["error"]["field"], "code");
    // Bob cannot even get that far with Ann's project.
    not_found(
        &bob.send(
            &app,
            "POST",
            "/projects/secret/2fa",
            json!({"projectId": id, "code": now_code}),
        )
        .await,
    );

    let r = ann
        .send(
            &app,
            "POST",
            "/projects/secret/2fa",
            json!({"projectId": id, "code": now_code}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let grant = r.body["grantToken"].as_str().unwrap().to_owned();
    assert!(r.body["expiresAt"].as_str().unwrap().ends_with('Z'));
    let r = ann
        .send(
            &app,
            "POST",
            "/projects/secret/2fa",
            json!({"projectId": id, "code": now_code}),
        )
        .await;
    assert_eq!(r.status, 401, "a code works once: {:?}", r.body);

    // Reveal: the grant is single-use and bound to its user and project.
    not_found(
        &bob.send(
            &app,
            "POST",
            "/projects/secret/reveal",
            json!({"projectId": id, "grantToken": grant}),
        )
        .await,
    );
    let r = ann
        .send(
            &app,
            "POST",
            "/projects/secret/reveal",
            json!({"projectId": id, "grantToken": "qz_rg_forged"}),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["field"], "grantToken");
    let r = ann
        .send(
            &app,
            "POST",
            "/projects/secret/reveal",
            json!({"projectId": id, "grantToken": grant}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({"secret": old_secret, "rotated": false}));
    let r = ann
        .send(
            &app,
            "POST",
            "/projects/secret/reveal",
            json!({"projectId": id, "grantToken": grant}),
        )
        .await;
    assert_eq!(r.status, 401, "a grant works once");

    // A client token minted under the old secret, before the rotation.
    assert!(
        eventually(Duration::from_secs(1), || async {
            engine.rate_limit_check(&id, &old_secret, true).await.status == 200
        })
        .await
    );
    let r = request(
        "POST",
        &engine.url("/projects/client/token"),
        &[("x-qyzar-project-secret", &old_secret)],
        Some(&json!({"projectId": id}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let old_token = r.body["clientToken"].as_str().unwrap().to_owned();

    // Rotate with a second grant.
    let r = ann
        .send(
            &app,
            "POST",
            "/projects/secret/2fa",
            json!({"projectId": id, "code": totp_code(&seed, step_now() + 1)}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let grant = r.body["grantToken"].as_str().unwrap().to_owned();
    let r = ann
        .send(
            &app,
            "POST",
            "/projects/secret/reveal",
            json!({"projectId": id, "grantToken": grant, "rotate": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let new_secret = r.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    assert_eq!(r.body["rotated"], true);
    assert!(r.body["previousSecretValidUntil"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(ann
        .get(&app, &format!("/projects/detail?projectId={id}"))
        .await
        .body["secretRotatedAt"]
        .is_string());
    let snap = snapshot_project(&app, &id).unwrap();
    assert_eq!(snap.secret_hashes.len(), 2);
    assert_eq!(snap.hs256_keys.len(), 2);
    assert!(
        snap.secret_hashes[1].valid_until_ms.unwrap()
            > qyzar_shared::time::now_ms() + 23 * 3600 * 1000
    );

    // During the grace period both secrets work at the engine, and tokens
    // of the old key still verify.
    let version = app.state.pusher.version();
    assert!(
        eventually(Duration::from_secs(1), || async {
            engine.engine.config.version() >= version
        })
        .await
    );
    assert_eq!(
        engine.rate_limit_check(&id, &new_secret, true).await.status,
        200
    );
    assert_eq!(
        engine.rate_limit_check(&id, &old_secret, true).await.status,
        200,
        "the old secret works in its grace period"
    );
    let random = qyzar_shared::crypto::ProjectSecret::generate();
    assert_eq!(
        engine
            .rate_limit_check(&id, random.expose(), true)
            .await
            .status,
        401
    );
    let url = engine.url(&format!(
        "/projects/client/token-verify?projectId={id}&clientToken={old_token}"
    ));
    let r = request(
        "GET",
        &url,
        &[("x-qyzar-project-secret", &new_secret)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["valid"], true,
        "a token of the old key verifies during the grace period: {:?}",
        r.body
    );
    // The admin's client routes accept both too.
    let client = format!("/projects/client/extra-metadata?projectId={id}");
    for s in [&old_secret, &new_secret] {
        assert_eq!(
            request(
                "GET",
                &app.url(&client),
                &[("x-qyzar-project-secret", s)],
                None
            )
            .await
            .status,
            200
        );
    }

    // When the grace period ends, the old secret stops working.
    sqlx::query("UPDATE project_secrets SET valid_until = $1 WHERE valid_until IS NOT NULL")
        .bind(qyzar_shared::time::now_ms() - 1)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    qyzar_admin::push::rebuild_and_push(&app.state)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || async {
            engine.rate_limit_check(&id, &old_secret, true).await.status == 401
        })
        .await,
        "the old secret is refused after its grace period"
    );
    assert_eq!(
        engine.rate_limit_check(&id, &new_secret, true).await.status,
        200
    );
    assert_eq!(
        request(
            "GET",
            &app.url(&client),
            &[("x-qyzar-project-secret", &old_secret)],
            None
        )
        .await
        .status,
        401
    );
    engine.stop();
    app.stop().await;
}

#[tokio::test]
async fn secret_reveal_and_rotation_on_sqlite() {
    secret_reveal_and_rotation(Backend::Sqlite).await;
}

#[tokio::test]
async fn secret_reveal_and_rotation_on_postgres() {
    secret_reveal_and_rotation(Backend::Postgres).await;
}
