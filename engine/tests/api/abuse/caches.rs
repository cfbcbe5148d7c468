//! Abuse cases: caches. Idempotent answers go only to a caller holding the
//! same credential, and refused calls leave nothing behind; every cache is
//! bounded in bytes with a share per project, so one tenant's flood
//! (idempotent calls, large self-signed tokens, sessions, unknown ids)
//! never evicts another tenant's entries; numbers a token's signer chose
//! cannot overflow; single-use tokens stop being cached without costing
//! another tenant its cached ones.

use qyzar_engine::budget::Budget;
use qyzar_shared::crypto::{client_token_key, sign_hs256, Claims, ProjectSecret};
use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use qyzar_store::{DeviceInfo, Risk, Session};
use serde_json::{json, Value};

use crate::helpers::*;

/// Small budgets so a test can fill them: shares of 32 KiB (idempotency),
/// 128 KiB (tokens, sessions), and totals a little over two shares.
fn small_budgets() -> qyzar_engine::StateOptions {
    let kib = |total: u64, project: u64| Budget {
        total_bytes: total * 1024,
        project_bytes: project * 1024,
    };
    qyzar_engine::StateOptions {
        idempotency_cache: kib(48, 32),
        token_cache: kib(192, 128),
        session_cache: kib(192, 128),
        unknown_session_cache: kib(48, 16),
        ..Default::default()
    }
}

/// An engine on `kind` with three projects, `a`, `b` and `c`.
struct World {
    engine: TestEngine,
    a: TestProject,
    b: TestProject,
    c: TestProject,
}

async fn world(kind: Store) -> Option<World> {
    let (store, dir) = store(kind).await?;
    let engine = TestEngine::spawn_with_options(store, dir, small_budgets()).await;
    let (a, ca) = project(SETTINGS, false);
    let (b, cb) = project(SETTINGS, false);
    let (c, cc) = project(SETTINGS, false);
    install(&engine.engine, 1, vec![ca, cb, cc]);
    Some(World { engine, a, b, c })
}

impl World {
    async fn mint(
        &self,
        p: &TestProject,
        secret: Option<&str>,
        key: &str,
        md: &Value,
    ) -> TestResponse {
        let auth = secret.map(|s| format!("Bearer {s}"));
        let mut headers = vec![("idempotency-key", key)];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let body = json!({"projectId": p.id, "metadata": md}).to_string();
        request(
            "POST",
            &self.engine.url("/projects/client/token"),
            &headers,
            Some(&body),
        )
        .await
    }

    async fn verify_token(&self, p: &TestProject, token: &str) -> TestResponse {
        request(
            "POST",
            &self.engine.url("/projects/client/token-verify"),
            &[("authorization", &format!("Bearer {}", p.secret))],
            Some(&json!({"projectId": p.id, "clientToken": token}).to_string()),
        )
        .await
    }

    async fn verify_session(&self, p: &TestProject, sid: &str, token: &str) -> TestResponse {
        request(
            "POST",
            &self.engine.url("/projects/client/session-verify"),
            &[("authorization", &format!("Bearer {}", p.secret))],
            Some(&json!({"projectId": p.id, "sessionId": sid, "sessionToken": token}).to_string()),
        )
        .await
    }
}

fn timing(r: &TestResponse) -> &str {
    r.headers
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_answer_is_replayed_only_with_the_same_secret() {
    let w = world(Store::Embedded).await.unwrap();
    let md = json!({"identifier": "ann@example.com"});
    let first = w.mint(&w.a, Some(&w.a.secret), "k-1", &md).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let token = first.body["clientToken"].as_str().unwrap().to_owned();
    // The same key and body without the secret: refused, nothing replayed.
    let r = w.mint(&w.a, None, "k-1", &md).await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert!(r.body.get("clientToken").is_none());
    assert!(r.headers.get("idempotent-replayed").is_none());
    // A wrong secret, and another project's real secret: refused too.
    let wrong = ProjectSecret::generate();
    for secret in [wrong.expose(), w.b.secret.as_str()] {
        let r = w.mint(&w.a, Some(secret), "k-1", &md).await;
        assert_eq!(r.status, 401, "{:?}", r.body);
        assert!(r.body.get("clientToken").is_none());
    }
    // The owner's retry gets the first answer.
    let r = w.mint(&w.a, Some(&w.a.secret), "k-1", &md).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["idempotent-replayed"], "true");
    assert_eq!(r.body["clientToken"], token.as_str());
    assert_eq!(w.engine.engine.idempotency.len(), 1);
    w.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_replay_needs_the_origin_token_and_its_origin() {
    let w = world(Store::Embedded).await.unwrap();
    let body = json!({"projectId": w.a.id, "originToken": w.a.origin_token, "entropy": entropy()})
        .to_string();
    let connect = |origin: &'static str| {
        let url = w.engine.url("/connect");
        let body = body.clone();
        async move {
            request(
                "POST",
                &url,
                &[("origin", origin), ("idempotency-key", "c-1")],
                Some(&body),
            )
            .await
        }
    };
    let first = connect(ORIGIN).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let other = connect("https://evil.example").await;
    assert_eq!(other.status, 403, "{:?}", other.body);
    assert!(other.body.get("sessionToken").is_none());
    let again = connect(ORIGIN).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["sessionToken"], first.body["sessionToken"]);
    w.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_leave_no_idempotency_state() {
    let w = world(Store::Embedded).await.unwrap();
    let cache = &w.engine.engine.idempotency;
    // Unauthenticated 60 KB calls with fresh keys.
    let big = json!({"blob": "x".repeat(60_000)});
    for i in 0..100 {
        let r = w.mint(&w.a, None, &format!("fresh-{i}"), &big).await;
        assert!(r.status >= 400, "{:?}", r.body);
    }
    // Authenticated calls that fail: no answer kept, no empty slot.
    for i in 0..20 {
        let r = w
            .mint(&w.a, Some(&w.a.secret), &format!("bad-{i}"), &big)
            .await;
        assert_eq!(r.status, 422, "{:?}", r.body);
    }
    assert_eq!((cache.len(), cache.bytes()), (0, 0));
    // A failed key can be used again once the call succeeds.
    let ok = w
        .mint(&w.a, Some(&w.a.secret), "bad-0", &json!({"n": 1}))
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert!(ok.headers.get("idempotent-replayed").is_none());
    assert_eq!(cache.len(), 1);
    w.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idempotent_calls_keeps_another_tenants_answer() {
    let w = world(Store::Embedded).await.unwrap();
    let cache = &w.engine.engine.idempotency;
    let md = json!({"identifier": "bob@example.com"});
    let b_first = w.mint(&w.b, Some(&w.b.secret), "b-1", &md).await;
    assert_eq!(b_first.status, 200);
    // Two tenants send large answers with fresh keys: each far past its
    // share, together past the total.
    let blob = json!({"blob": "y".repeat(3000)});
    for i in 0..40 {
        for p in [&w.a, &w.c] {
            let r = w
                .mint(p, Some(&p.secret), &format!("flood-{i}"), &blob)
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
        assert!(cache.bytes() <= 48 * 1024, "{} bytes held", cache.bytes());
    }
    assert!(cache.project_bytes(&w.a.id) <= 32 * 1024);
    assert!(cache.project_len(&w.a.id) < 40, "a's oldest answers went");
    let b_retry = w.mint(&w.b, Some(&w.b.secret), "b-1", &md).await;
    assert_eq!(b_retry.headers["idempotent-replayed"], "true");
    assert_eq!(b_retry.body["clientToken"], b_first.body["clientToken"]);
    w.engine.stop().await;
}

/// A client token for `p` signed with its own key, as a tenant can sign
/// any token it likes offline.
fn self_signed(p: &TestProject, exp: i64, md: Value) -> String {
    let secret = ProjectSecret::parse(&p.secret).unwrap();
    let id = ProjectId::parse(&p.id).unwrap();
    let now = qyzar_shared::time::now_ms() / 1000;
    let claims = Claims {
        iss: "qyzar".into(),
        aud: p.id.clone(),
        sub: "anyone".into(),
        iat: now,
        exp,
        jti: qyzar_shared::crypto::random_token("tok_", 16),
        sid: None,
        md: Some(md),
    };
    sign_hs256(&claims, &client_token_key(&secret, &id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_self_signed_tokens_do_not_evict_another_tenants_tokens() {
    let w = world(Store::Embedded).await.unwrap();
    let tokens = &w.engine.engine.tokens;
    let b = w.mint(&w.b, Some(&w.b.secret), "b", &json!({"n": 1})).await;
    let b_token = b.body["clientToken"].as_str().unwrap().to_owned();
    let r = w.verify_token(&w.b, &b_token).await;
    assert_eq!(r.body["valid"], true);
    let exp = qyzar_shared::time::now_ms() / 1000 + 3600;
    for i in 0..60 {
        for p in [&w.a, &w.c] {
            // Near the 8 KiB limit, and heavy once decoded.
            let t = self_signed(p, exp, json!({"blob": "z".repeat(5000), "i": i}));
            assert!(t.len() > 6000 && t.len() <= 8192, "{}", t.len());
            let r = w.verify_token(p, &t).await;
            assert_eq!(r.body["valid"], true, "{:?}", r.body);
        }
        assert!(
            tokens.bytes() <= 192 * 1024,
            "{} bytes held",
            tokens.bytes()
        );
    }
    assert!(tokens.project_bytes(&w.a.id) <= 128 * 1024);
    let r = w.verify_token(&w.b, &b_token).await;
    assert_eq!(r.body["valid"], true);
    assert!(timing(&r).contains("token;desc=cached"), "{}", timing(&r));
    w.engine.stop().await;
}

/// Once the token cache is full, a tenant whose tokens are each verified
/// once has most of its misses left uncached (`qyzar_cache_declined`),
/// every answer the same as before; beside it, a tenant that verifies each
/// of its tokens twice keeps having the second verify answered from the
/// cache (`engine/src/budget/admission.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_tokens_stop_being_cached_while_reused_ones_still_are() {
    let w = world(Store::Embedded).await.unwrap();
    let tokens = &w.engine.engine.tokens;
    let exp = qyzar_shared::time::now_ms() / 1000 + 3600;
    let mut second_cached = 0;
    for i in 0..200 {
        // About 5 KiB an entry: a share holds about 25.
        let t = self_signed(&w.a, exp, json!({"blob": "z".repeat(2000), "i": i}));
        let r = w.verify_token(&w.a, &t).await;
        assert_eq!(
            (r.body["valid"].clone(), r.body["metadata"]["i"].clone()),
            (json!(true), json!(i))
        );
        let t = self_signed(&w.c, exp, json!({"blob": "y".repeat(2000), "i": i}));
        for verify in 0..2 {
            let r = w.verify_token(&w.c, &t).await;
            assert_eq!(
                (r.body["valid"].clone(), r.body["metadata"]["i"].clone()),
                (json!(true), json!(i))
            );
            if verify == 1 && timing(&r).contains("token;desc=cached") {
                second_cached += 1;
            }
        }
    }
    let declined = tokens
        .counters()
        .declined
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        declined >= 100,
        "{declined} of a's 200 single-use tokens declined"
    );
    assert!(
        second_cached >= 180,
        "{second_cached} of c's 200 second verifies cached"
    );
    assert!(tokens.bytes() <= 192 * 1024);
    w.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_exp_is_an_invalid_token_not_an_error() {
    let w = world(Store::Embedded).await.unwrap();
    for exp in [i64::MAX / 10, i64::MAX, 300_000_000_000] {
        let t = self_signed(&w.a, exp, json!({}));
        for _ in 0..2 {
            // Verified, then (were it cached) from the cache.
            let r = w.verify_token(&w.a, &t).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            assert_eq!(
                (r.body["valid"].clone(), r.body["reason"].clone()),
                (json!(false), json!("malformed"))
            );
        }
    }
    assert_eq!(w.engine.engine.tokens.len(), 0);
    w.engine.stop().await;
}

fn session(project: &str, id: &str, token: &str) -> Session {
    let now = qyzar_shared::time::now_ms();
    Session {
        project_id: ProjectId::parse(project).unwrap(),
        session_id: SessionId::parse(id).unwrap(),
        token_hash: qyzar_engine::routes::common::sha256(token.as_bytes()),
        device_id: DeviceId::from_digest(&[3; 32]),
        created_at: now,
        expires_at: now + 3_600_000,
        last_seen_at: now,
        revoked: false,
        ip: None,
        risk: Risk {
            score: 0,
            bot: false,
            signals: Vec::new(),
        },
        device: DeviceInfo {
            browser: "Chrome".into(),
            os: "Windows".into(),
            platform: "desktop".into(),
            region: None,
        },
    }
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Store::Embedded).await })*
        }
        mod cql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Store::Cql).await })*
        }
    };
}

on_both_stores!(
    unknown_ids_are_remembered_per_project,
    one_projects_sessions_do_not_evict_anothers,
);

async fn unknown_ids_are_remembered_per_project(kind: Store) {
    let Some(w) = world(kind).await else {
        return;
    };
    let sessions = &w.engine.engine.sessions;
    let id = "ses_SameIdInTwoProjects";
    // Unknown in a: remembered as unknown for a only.
    let r = w.verify_session(&w.a, id, "qz_st_a").await;
    assert_eq!(r.body["reason"], "not_found", "{:?}", r.body);
    assert_eq!(sessions.unknown_len(&w.a.id), 1);
    assert_eq!(sessions.unknown_len(&w.b.id), 0);
    // The same id created in b a moment later is found in b at once.
    w.engine
        .engine
        .store
        .put_session(&session(&w.b.id, id, "qz_st_b"))
        .await
        .unwrap();
    let r = w.verify_session(&w.b, id, "qz_st_b").await;
    assert_eq!(r.body["valid"], true, "{:?}", r.body);
    // And in a too, once it exists there: each project sees its own.
    let sid = "ses_AnotherIdInBothOfThem";
    for (p, tok) in [(&w.a, "qz_st_a2"), (&w.b, "qz_st_b2")] {
        sessions.put(session(&p.id, sid, tok)).await.unwrap();
    }
    for (p, tok) in [(&w.a, "qz_st_a2"), (&w.b, "qz_st_b2")] {
        let r = w.verify_session(p, sid, tok).await;
        assert_eq!(r.body["valid"], true, "{:?}", r.body);
        assert!(timing(&r).contains("cache;desc=hit"), "{}", timing(&r));
    }
    // A flood of unknown ids in a stays within a's share.
    for i in 0..600 {
        let r = w
            .verify_session(&w.a, &format!("ses_unknown{i:0>15}"), "x")
            .await;
        assert_eq!(r.body["reason"], "not_found");
    }
    let unknown = sessions.negative_counters();
    assert!(unknown.bytes.load(std::sync::atomic::Ordering::Relaxed) <= 16 * 1024);
    assert_eq!(sessions.unknown_len(&w.b.id), 0);
    w.engine.stop().await;
}

async fn one_projects_sessions_do_not_evict_anothers(kind: Store) {
    let Some(w) = world(kind).await else {
        return;
    };
    let sessions = &w.engine.engine.sessions;
    let b_sid = "ses_bbbbbbbbbbbbbbbbbbbbbb";
    sessions
        .put(session(&w.b.id, b_sid, "qz_st_b"))
        .await
        .unwrap();
    // What `/connect` floods do to memory, without the per-client limits
    // in the way: a and c cache many more sessions than their shares.
    for i in 0..2_000 {
        for p in [&w.a, &w.c] {
            sessions.cache(session(&p.id, &format!("ses_flood{i:0>17}"), "t"));
        }
    }
    let held = sessions
        .counters()
        .bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(held <= 192 * 1024, "{held} bytes held");
    assert!(sessions.project_len(&w.a.id) < 2_000);
    let r = w.verify_session(&w.b, b_sid, "qz_st_b").await;
    assert_eq!(r.body["valid"], true, "{:?}", r.body);
    assert!(timing(&r).contains("cache;desc=hit"), "{}", timing(&r));
    w.engine.stop().await;
}
