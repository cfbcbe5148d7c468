//! Abuse cases: configuration safety and the internal channel.
//!
//! - a leaked secret is killed everywhere at once by a rotation without
//!   grace, cached client tokens of its key included;
//! - one tenant's opt-out links are throttled, capped and built together,
//!   so they cannot make admin rebuild without end or grow the snapshot
//!   past what engines accept;
//! - a change that would pass the snapshot budget is refused alone, and
//!   every other change keeps reaching the engines;
//! - the internal channel (`channel`): admin pushes over TLS only to an
//!   engine with the pinned certificate; each direction has its own key,
//!   and short or shared keys stop admin at start.

mod channel;

use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use sqlx::Row as _;

use crate::helpers::{request, Backend, TestApp};
use crate::projects::{create_project, id_of, sign_up};
use crate::push::{admin_for, eventually, snapshot_project, TestEngine, PUSH_KEY};

/// A reveal grant for `email` on `project`, written as
/// `POST /projects/secret/2fa` writes it (the TOTP step is covered by the
/// secret-reveal tests; here it would only add noise).
async fn grant(app: &TestApp, email: &str, project: &str) -> String {
    let token = qyzar_shared::crypto::random_token("qz_rg_", 24);
    let pool = app.state.db.pool();
    let user: String = sqlx::query("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0);
    sqlx::query("INSERT INTO secret_reveal_grants (grant_hash, project_id, user_id, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(qyzar_admin::projects::hex(&qyzar_admin::projects::sha256(token.as_bytes())))
        .bind(project)
        .bind(user)
        .bind(qyzar_shared::time::now_ms() + 60_000)
        .execute(pool)
        .await
        .unwrap();
    token
}

async fn emergency_rotation(backend: Backend) {
    let engine = TestEngine::spawn().await;
    let Some(app) = admin_for(backend, &[engine.internal_url()], None).await else {
        engine.stop();
        return;
    };
    let ann = sign_up(&app, "ann@example.com").await;
    let p = create_project(&app, &ann.token, "Leaky").await;
    let (id, old) = (id_of(&p), p["secret"].as_str().unwrap().to_owned());
    assert!(
        eventually(Duration::from_secs(2), || async {
            engine.rate_limit_check(&id, &old, true).await.status == 200
        })
        .await
    );
    // A client token under the old key, verified twice: the second answer
    // comes from the engine's verified-token cache.
    let r = request(
        "POST",
        &engine.url("/projects/client/token"),
        &[("x-qyzar-project-secret", &old)],
        Some(&json!({"projectId": id}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let token = r.body["clientToken"].as_str().unwrap().to_owned();
    let verify_url = engine.url(&format!(
        "/projects/client/token-verify?projectId={id}&clientToken={token}"
    ));
    let verify = |secret: String| {
        let url = verify_url.clone();
        async move { request("GET", &url, &[("x-qyzar-project-secret", &secret)], None).await }
    };
    assert_eq!(verify(old.clone()).await.body["valid"], true);
    let cached = verify(old.clone()).await;
    assert_eq!(cached.body["valid"], true);
    assert!(cached.headers["server-timing"]
        .to_str()
        .unwrap()
        .starts_with("token;desc=cached"));

    // graceSeconds is checked before any grant is spent.
    for body in [
        json!({"projectId": id, "grantToken": "x", "rotate": true, "graceSeconds": 86_401}),
        json!({"projectId": id, "grantToken": "x", "rotate": true, "graceSeconds": -1}),
        json!({"projectId": id, "grantToken": "x", "graceSeconds": 0}),
    ] {
        let r = ann
            .send(&app, "POST", "/projects/secret/reveal", body)
            .await;
        assert_eq!(r.status, 422, "{:?}", r.body);
        assert_eq!(r.body["error"]["field"], "graceSeconds");
    }

    // The emergency rotation.
    let g = grant(&app, "ann@example.com", &id).await;
    let r = ann
        .send(
            &app,
            "POST",
            "/projects/secret/reveal",
            json!({"projectId": id, "grantToken": g, "rotate": true, "graceSeconds": 0}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let new = r.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let snap = snapshot_project(&app, &id).unwrap();
    assert_eq!(
        snap.secret_hashes.len(),
        1,
        "the old secret left the snapshot"
    );
    assert_eq!(snap.hs256_keys.len(), 1, "and so did its HS256 key");

    // Right after the push the engine refuses the old secret …
    let version = app.state.pusher.version();
    assert!(
        eventually(Duration::from_secs(1), || async {
            engine.engine.config.version() >= version
        })
        .await,
        "the rotation was pushed at once"
    );
    assert_eq!(engine.rate_limit_check(&id, &old, true).await.status, 401);
    assert_eq!(engine.rate_limit_check(&id, &new, true).await.status, 200);
    // … and the token of the dropped key, although it was cached.
    let r = verify(new.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["valid"], false, "{:?}", r.body);
    assert_eq!(r.body["reason"], "bad_signature");
    // Admin's own client routes refuse the old secret as well.
    let client = app.url(&format!("/projects/client/extra-metadata?projectId={id}"));
    for (secret, status) in [(&old, 401), (&new, 200)] {
        let r = request("GET", &client, &[("x-qyzar-project-secret", secret)], None).await;
        assert_eq!(r.status, status, "{:?}", r.body);
    }
    engine.stop();
    app.stop().await;
}

#[tokio::test]
async fn a_rotation_without_grace_kills_the_old_secret_and_its_cached_tokens_on_sqlite() {
    emergency_rotation(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_rotation_without_grace_kills_the_old_secret_and_its_cached_tokens_on_postgres() {
    emergency_rotation(Backend::Postgres).await;
}

/// An opt-out link for a device, signed as a customer backend signs it.
fn opt_out_link(id: &str, secret: &str, device: &str) -> String {
    use qyzar_shared::crypto::{hmac_sha256, opt_out_key, ProjectSecret};
    let key = opt_out_key(
        &ProjectSecret::parse(secret).unwrap(),
        &qyzar_shared::ids::ProjectId::parse(id).unwrap(),
    );
    let exp = qyzar_shared::time::now_ms() / 1000 + 3600;
    let msg = format!("opt-out/v1|{id}|device:{device}|{exp}");
    let sig =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hmac_sha256(&key, msg.as_bytes()));
    format!("/opt-out/confirm?projectId={id}&deviceId={device}&exp={exp}&sig={sig}")
}

fn device(i: usize) -> String {
    format!("dev_{i:016}AAAAAAAA")
}

#[tokio::test]
async fn opt_out_links_are_throttled_capped_and_built_together() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let ann = sign_up(&app, "ann@example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;
    let pa = create_project(&app, &ann.token, "Ann's").await;
    let pb = create_project(&app, &bob.token, "Bob's").await;
    let (a, a_secret) = (id_of(&pa), pa["secret"].as_str().unwrap().to_owned());
    let (b, b_secret) = (id_of(&pb), pb["secret"].as_str().unwrap().to_owned());
    let limit = qyzar_admin::routes::opt_out::OPT_OUTS_PER_PROJECT.limit;

    // A burst of distinct signed links for Ann's project, all at once.
    let before = app.state.pusher.version();
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..=limit {
        let url = app.url(&opt_out_link(&a, &a_secret, &device(i)));
        burst.spawn(async move { request("GET", &url, &[], None).await });
    }
    let (mut ok, mut throttled) = (0, 0);
    while let Some(r) = burst.join_next().await {
        let r = r.unwrap();
        match r.status {
            200 => ok += 1,
            429 => {
                assert!(r.headers.contains_key("retry-after"));
                throttled += 1;
            }
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert_eq!((ok, throttled), (limit, 1));
    let builds = app.state.pusher.version() - before;
    assert!(
        builds < u64::try_from(limit).unwrap(),
        "{limit} opt-outs in a burst made {builds} snapshot builds, not one each"
    );
    let snap = snapshot_project(&app, &a).unwrap();
    assert_eq!(snap.opted_out_devices.len(), limit, "every one is built");
    // A link already followed is still answered (mail scanners prefetch).
    let again = request(
        "GET",
        &app.url(&opt_out_link(&a, &a_secret, &device(0))),
        &[],
        None,
    )
    .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    // Ann's burst does not throttle Bob's project.
    let r = request(
        "GET",
        &app.url(&opt_out_link(&b, &b_secret, &device(0))),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The free plan's cap: fill Bob's project up to one below it.
    let cap = qyzar_admin::projects::snapshot_caps("free").opt_outs;
    for i in 1..cap - 1 {
        sqlx::query("INSERT INTO opt_outs (project_id, kind, subject, created_at) VALUES ($1, 'device', $2, 0)")
            .bind(&b)
            .bind(device(i))
            .execute(app.state.db.pool())
            .await
            .unwrap();
    }
    let last = request(
        "GET",
        &app.url(&opt_out_link(&b, &b_secret, &device(cap - 1))),
        &[],
        None,
    )
    .await;
    assert_eq!(last.status, 200, "{:?}", last.body);
    let over = request(
        "GET",
        &app.url(&opt_out_link(&b, &b_secret, &device(cap))),
        &[],
        None,
    )
    .await;
    assert_eq!(over.status, 422, "{:?}", over.body);
    assert_eq!(over.body["error"]["code"], "quota_exceeded");
    assert_eq!(
        snapshot_project(&app, &b).unwrap().opted_out_devices.len(),
        cap
    );
    app.stop().await;
}

#[tokio::test]
async fn changes_arriving_together_cost_one_build() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let ann = sign_up(&app, "ann@example.com").await;
    create_project(&app, &ann.token, "Busy").await;
    let before = app.state.pusher.version();
    // Fifty committed changes ask for a build at once (this runtime has one
    // thread, so all of them are waiting before the build task runs).
    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let state = app.state.clone();
        waiting.spawn(async move { qyzar_admin::push::after_change(&state).await });
    }
    let mut versions = std::collections::BTreeSet::new();
    while let Some(v) = waiting.join_next().await {
        versions.insert(v.unwrap().expect("the build succeeded"));
    }
    let after = app.state.pusher.version();
    assert_eq!(
        versions.len(),
        1,
        "every caller got the same build: {versions:?}"
    );
    assert_eq!(after, before + 1, "fifty changes, one build");
    // The next change after it builds again (it is not lost in the debounce).
    assert_eq!(
        qyzar_admin::push::after_change(&app.state).await,
        Some(after + 1)
    );
    app.stop().await;
}

async fn set_settings(
    app: &TestApp,
    token: &str,
    project: &str,
    settings: serde_json::Value,
) -> crate::helpers::TestResponse {
    let body = json!({"projectId": project, "settings": settings}).to_string();
    request(
        "PATCH",
        &app.url("/projects/settings"),
        &[("authorization", &format!("Bearer {token}"))],
        Some(&body),
    )
    .await
}

#[tokio::test]
async fn a_change_past_the_snapshot_budget_is_refused_alone() {
    let engine = TestEngine::spawn().await;
    let url = engine.internal_url();
    let app = TestApp::spawn_with(Backend::Sqlite, move |c| {
        c.engine_urls = vec![url];
        c.push_key = Some(PUSH_KEY.to_owned());
        c.config_budget_bytes = 16 * 1024;
    })
    .await
    .unwrap();
    let ann = sign_up(&app, "ann@example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;
    let pa = create_project(&app, &ann.token, "Greedy").await;
    let pb = create_project(&app, &bob.token, "Modest").await;
    let (a, b) = (id_of(&pa), id_of(&pb));
    let b_secret = pb["secret"].as_str().unwrap().to_owned();

    // 100 long origins would take the snapshot past its 16 KiB budget.
    let origins: Vec<String> = (0..100)
        .map(|i| {
            let label = "o".repeat(60);
            format!("https://{i:03}{label}.{label}.{label}.example")
        })
        .collect();
    let r = set_settings(&app, &ann.token, &a, json!({"allowedOrigins": origins})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "config_budget_exceeded");
    assert!(snapshot_project(&app, &a)
        .unwrap()
        .settings
        .allowed_origins
        .is_empty());

    // Everybody else's changes, and Ann's small ones, still reach the engine.
    let r = set_settings(
        &app,
        &bob.token,
        &b,
        json!({"rateLimit": {"ip": {"limit": 7}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        eventually(Duration::from_secs(3), || async {
            let r = engine.rate_limit_check(&b, &b_secret, true).await;
            r.status == 200 && r.body["limit"] == 7
        })
        .await,
        "Bob's change reached the engine"
    );
    let r = set_settings(
        &app,
        &ann.token,
        &a,
        json!({"allowedOrigins": ["https://shop.example"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let version = app.state.pusher.version();
    assert!(
        eventually(Duration::from_secs(3), || async {
            engine.engine.config.version() >= version
        })
        .await
    );
    engine.stop();
    app.stop().await;
}
