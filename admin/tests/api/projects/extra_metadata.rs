//! Extra metadata: the dashboard pair (merge patch, 32 KiB cap) and the
//! client pair (project secret reads and writes; a client JWT reads the
//! `public` part only).

use serde_json::json;

use super::{create_project, id_of, not_found, sign_up};
use crate::helpers::{request, Backend, TestApp};

async fn extra_metadata(backend: Backend) {
    use qyzar_shared::crypto::{client_token_key, sign_hs256, Claims, ProjectSecret};
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let ann = sign_up(&app, "ann@example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;
    let p = create_project(&app, &ann.token, "Shop").await;
    let (id, secret) = (id_of(&p), p["secret"].as_str().unwrap().to_owned());
    let path = format!("/projects/extra-metadata?projectId={id}");
    assert_eq!(ann.get(&app, &path).await.body, json!({}));

    let r = ann.send(&app, "PATCH", "/projects/extra-metadata", json!({"projectId": id, "extraMetadata": {"public": {"theme": "dark"}, "internal": {"crm": 42}}})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = ann
        .send(
            &app,
            "PATCH",
            "/projects/extra-metadata",
            json!({"projectId": id, "extraMetadata": {"internal": null, "public": {"lang": "fr"}}}),
        )
        .await;
    assert_eq!(r.body, json!({"public": {"theme": "dark", "lang": "fr"}}));
    assert_eq!(ann.get(&app, &path).await.body, r.body);
    // 32 KiB cap on the result: refused whole.
    let r = ann
        .send(
            &app,
            "PATCH",
            "/projects/extra-metadata",
            json!({"projectId": id, "extraMetadata": {"blob": "x".repeat(33 * 1024)}}),
        )
        .await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    let r = ann
        .send(
            &app,
            "PATCH",
            "/projects/extra-metadata",
            json!({"projectId": id, "extraMetadata": "text"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        ann.get(&app, &path).await.body,
        json!({"public": {"theme": "dark", "lang": "fr"}})
    );
    not_found(&bob.get(&app, &path).await);
    not_found(
        &bob.send(
            &app,
            "PATCH",
            "/projects/extra-metadata",
            json!({"projectId": id, "extraMetadata": {"x": 1}}),
        )
        .await,
    );

    // The client pair: the secret reads and writes everything.
    let client = format!("/projects/client/extra-metadata?projectId={id}");
    let r = request(
        "GET",
        &app.url(&client),
        &[("x-qyzar-project-secret", &secret)],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["public"]["lang"], "fr");
    let body = json!({"projectId": id, "extraMetadata": {"plan": "gold"}}).to_string();
    let r = request(
        "PATCH",
        &app.url("/projects/client/extra-metadata"),
        &[("authorization", &format!("Bearer {secret}"))],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["plan"], "gold");
    // A client JWT reads only the public part, and cannot write.
    let key = client_token_key(
        &ProjectSecret::parse(&secret).unwrap(),
        &qyzar_shared::ids::ProjectId::parse(&id).unwrap(),
    );
    let now = qyzar_shared::time::now_ms() / 1000;
    let claims = |aud: &str, exp: i64| Claims {
        iss: "test".into(),
        aud: aud.into(),
        sub: "user-1".into(),
        iat: now,
        exp,
        jti: "j1".into(),
        sid: None,
        md: None,
    };
    let jwt = sign_hs256(&claims(&id, now + 300), &key);
    let r = request(
        "GET",
        &app.url(&client),
        &[("authorization", &format!("Bearer {jwt}"))],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({"public": {"theme": "dark", "lang": "fr"}}));
    let r = request(
        "GET",
        &app.url(&format!("{client}&clientToken={jwt}")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body, json!({"public": {"theme": "dark", "lang": "fr"}}));
    let r = request(
        "PATCH",
        &app.url("/projects/client/extra-metadata"),
        &[("authorization", &format!("Bearer {jwt}"))],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 403);
    // Wrong or missing credentials.
    let expired = sign_hs256(&claims(&id, now - 1), &key);
    let other = sign_hs256(&claims("prj_BBBBBBBBBBBBBBBBBBBBBB", now + 300), &key);
    for bad in [expired, other, "not.a.jwt".into()] {
        let r = request(
            "GET",
            &app.url(&client),
            &[("x-qyzar-client-token", &bad)],
            None,
        )
        .await;
        assert_eq!(r.status, 401, "{bad}: {:?}", r.body);
    }
    let wrong = qyzar_shared::crypto::ProjectSecret::generate();
    let r = request(
        "GET",
        &app.url(&client),
        &[("x-qyzar-project-secret", wrong.expose())],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = request("GET", &app.url(&client), &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "missing_credentials");
    let r = request(
        "GET",
        &app.url("/projects/client/extra-metadata?projectId=prj_AAAAAAAAAAAAAAAAAAAAAA"),
        &[("x-qyzar-project-secret", &secret)],
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    app.stop().await;
}

#[tokio::test]
async fn extra_metadata_on_sqlite() {
    extra_metadata(Backend::Sqlite).await;
}

#[tokio::test]
async fn extra_metadata_on_postgres() {
    extra_metadata(Backend::Postgres).await;
}
