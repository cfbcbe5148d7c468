//! Every engine route's happy path, reason codes and error statuses, run
//! against the embedded store and against the CQL server.

use serde_json::{json, Value};

use crate::helpers::*;

/// Generates one test per store for each scenario.
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
    connect_then_session_verify,
    session_reason_codes,
    connect_refusals,
    client_tokens_hs256,
    client_tokens_eddsa_and_jwks,
    bound_token_follows_its_session,
    rate_limit_decisions,
    ato_flow_and_idempotency,
    bad_requests_change_nothing,
    reverify_extends_and_detects_drift,
    connect_feeds_the_device_index,
);

/// `/connect` lists its device in the store's device index off the answer
/// path: one row per device and day however many sessions it opens, with
/// the browser summary and the stable components the clusters compare.
async fn connect_feeds_the_device_index(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS, false).await else {
        return;
    };
    let first = f.connect().await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let again = f.connect().await;
    assert_eq!(again.body["deviceId"], first.body["deviceId"]);
    f.engine.engine.background.flush().await;
    let pid = qyzar_shared::ids::ProjectId::parse(&f.p.id).unwrap();
    let day = qyzar_shared::time::now_ms().div_euclid(qyzar_store::DAY_MS);
    let mut rows = Vec::new();
    // The test may straddle midnight UTC: look at today and yesterday.
    for d in [day, day - 1] {
        rows.extend(
            f.engine
                .engine
                .store
                .list_device_days(&pid, d, None, 100)
                .await
                .unwrap(),
        );
    }
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        row.device_id.as_str(),
        first.body["deviceId"].as_str().unwrap()
    );
    assert!(row.first_seen <= row.last_seen);
    assert!(!row.browser.is_empty());
    assert_eq!(
        row.components.get("canvasHash").map(String::as_str),
        entropy()["canvasHash"].as_str()
    );
    assert!(row.components.contains_key("userAgent"));
    f.engine.stop().await;
}

struct Fixture {
    engine: TestEngine,
    p: TestProject,
}

async fn fixture(kind: Store, settings: &str, eddsa: bool) -> Option<Fixture> {
    let (store, dir) = store(kind).await?;
    let engine = TestEngine::spawn_with(store, dir).await;
    let (p, cfg) = project(settings, eddsa);
    install(&engine.engine, 1, vec![cfg]);
    Some(Fixture { engine, p })
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        self.engine.url(path)
    }

    async fn connect(&self) -> TestResponse {
        let body = json!({"projectId": self.p.id, "originToken": self.p.origin_token, "entropy": entropy()}).to_string();
        request(
            "POST",
            &self.url("/connect"),
            &[("origin", ORIGIN)],
            Some(&body),
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> TestResponse {
        request(
            "POST",
            &self.url(path),
            &[("authorization", &format!("Bearer {}", self.p.secret))],
            Some(&body.to_string()),
        )
        .await
    }
}

async fn connect_then_session_verify(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS, false).await else {
        return;
    };
    let r = f.connect().await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    for k in [
        "sessionId",
        "sessionToken",
        "sessionJwt",
        "deviceId",
        "expiresAt",
    ] {
        assert!(r.body[k].is_string(), "{k} in {:?}", r.body);
    }
    assert_eq!(r.body["risk"]["bot"], false);
    assert_eq!(r.headers["access-control-allow-origin"], ORIGIN);
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    let cookies: Vec<_> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies.len(), 2);
    for c in &cookies {
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=604800",
        ] {
            assert!(c.contains(attr), "{c} lacks {attr}");
        }
    }
    let sid = r.body["sessionId"].as_str().unwrap();
    let tok = r.body["sessionToken"].as_str().unwrap();

    // GET with forwarded cookies.
    let cookie = format!("qyzar_session_id={sid}; qyzar_session_token={tok}");
    let v = request(
        "GET",
        &f.url(&format!(
            "/projects/client/session-verify?projectId={}",
            f.p.id
        )),
        &[
            ("authorization", &format!("Bearer {}", f.p.secret)),
            ("cookie", &cookie),
        ],
        None,
    )
    .await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["valid"], true);
    assert_eq!(v.body["sessionId"], sid);
    assert_eq!(v.body["deviceId"], r.body["deviceId"]);
    assert_eq!(v.body["device"]["browser"], "Chrome");
    assert!(v.body["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(v.headers["server-timing"]
        .to_str()
        .unwrap()
        .contains("cache;desc=hit"));

    // POST with the secret in its own header and ids in the body; a cold
    // cache reads through the store.
    f.engine
        .engine
        .sessions
        .forget(&qyzar_shared::ids::SessionId::parse(sid).unwrap());
    let v = request(
        "POST",
        &f.url("/projects/client/session-verify"),
        &[("x-qyzar-project-secret", &f.p.secret)],
        Some(&json!({"projectId": f.p.id, "sessionId": sid, "sessionToken": tok}).to_string()),
    )
    .await;
    assert_eq!(v.body["valid"], true, "{:?}", v.body);
    assert!(v.headers["server-timing"]
        .to_str()
        .unwrap()
        .contains("cache;desc=miss"));
    f.engine.stop().await;
}

async fn session_reason_codes(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS, false).await else {
        return;
    };
    let (other, other_cfg) = project(SETTINGS, false);
    // Reinstall with a second project, to look a session up from the other.
    let (p, cfg) = project(SETTINGS, false);
    install(&f.engine.engine, 2, vec![cfg, other_cfg]);
    let f = Fixture {
        engine: f.engine,
        p,
    };
    let c = f.connect().await;
    let sid = c.body["sessionId"].as_str().unwrap().to_owned();
    let tok = c.body["sessionToken"].as_str().unwrap().to_owned();
    let verify = |project: String, secret: String, sid: String, tok: String| {
        let url = f.url("/projects/client/session-verify");
        async move {
            request(
                "POST",
                &url,
                &[("x-qyzar-project-secret", &secret)],
                Some(
                    &json!({"projectId": project, "sessionId": sid, "sessionToken": tok})
                        .to_string(),
                ),
            )
            .await
        }
    };
    let r = verify(
        f.p.id.clone(),
        f.p.secret.clone(),
        sid.clone(),
        "qz_st_wrong".into(),
    )
    .await;
    assert_eq!(
        (r.body["valid"].clone(), r.body["reason"].clone()),
        (json!(false), json!("token_mismatch"))
    );
    let r = verify(
        f.p.id.clone(),
        f.p.secret.clone(),
        "ses_AAAAAAAAAAAAAAAAAAAAAA".into(),
        tok.clone(),
    )
    .await;
    assert_eq!(r.body["reason"], "not_found");
    let r = verify(
        f.p.id.clone(),
        f.p.secret.clone(),
        "garbage".into(),
        tok.clone(),
    )
    .await;
    assert_eq!(r.body["reason"], "not_found");
    let r = verify(
        other.id.clone(),
        other.secret.clone(),
        sid.clone(),
        tok.clone(),
    )
    .await;
    // Another project's session is not found: sessions are cached per
    // project, and no tenant learns another's session ids.
    assert_eq!(r.body["reason"], "not_found", "{:?}", r.body);
    // Revoked.
    let pid = qyzar_shared::ids::ProjectId::parse(&f.p.id).unwrap();
    let s = qyzar_shared::ids::SessionId::parse(&sid).unwrap();
    assert!(f.engine.engine.sessions.revoke(&pid, &s).await.unwrap());
    let r = verify(f.p.id.clone(), f.p.secret.clone(), sid.clone(), tok.clone()).await;
    assert_eq!(r.body["reason"], "revoked");
    // Expired: a session whose life ends in a second.
    let c2 = f.connect().await;
    let sid2 = qyzar_shared::ids::SessionId::parse(c2.body["sessionId"].as_str().unwrap()).unwrap();
    let (mut sess, _) = f.engine.engine.sessions.get(&pid, &sid2).await.unwrap();
    let mut short = (*sess.take().unwrap()).clone();
    short.expires_at = qyzar_shared::time::now_ms() + 1_000;
    f.engine.engine.sessions.put(short).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let r = verify(
        f.p.id.clone(),
        f.p.secret.clone(),
        sid2.to_string(),
        c2.body["sessionToken"].as_str().unwrap().into(),
    )
    .await;
    assert_eq!(r.body["reason"], "expired");
    // Opted out: the device is in the snapshot's opt-out list.
    let c3 = f.connect().await;
    let current = f
        .engine
        .engine
        .config
        .current(qyzar_shared::time::now_ms())
        .unwrap();
    let mut projects = current.snapshot().projects().to_vec();
    let mine = projects
        .iter_mut()
        .find(|p| p.project_id == f.p.id)
        .unwrap();
    mine.opted_out_devices
        .push(c3.body["deviceId"].as_str().unwrap().to_owned());
    mine.normalise();
    install(&f.engine.engine, 3, projects);
    let r = verify(
        f.p.id.clone(),
        f.p.secret.clone(),
        c3.body["sessionId"].as_str().unwrap().into(),
        c3.body["sessionToken"].as_str().unwrap().into(),
    )
    .await;
    assert_eq!(r.body["reason"], "opted_out");
    f.engine.stop().await;
}

async fn connect_refusals(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS, false).await else {
        return;
    };
    let ok = json!({"projectId": f.p.id, "originToken": f.p.origin_token, "entropy": entropy()})
        .to_string();
    let r = request(
        "POST",
        &f.url("/connect"),
        &[("origin", "https://evil.example")],
        Some(&ok),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (403, json!("origin_not_allowed"))
    );
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let bad =
        json!({"projectId": f.p.id, "originToken": "qz_ot_nope", "entropy": entropy()}).to_string();
    let r = request(
        "POST",
        &f.url("/connect"),
        &[("origin", ORIGIN)],
        Some(&bad),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].clone()),
        (401, json!("originToken"))
    );
    assert_eq!(
        r.headers["access-control-allow-origin"], ORIGIN,
        "errors are readable by the allowed page's script"
    );
    let r = request(
        "POST",
        &f.url("/connect"),
        &[("origin", ORIGIN)],
        Some(&json!({"projectId": f.p.id, "originToken": f.p.origin_token}).to_string()),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].clone()),
        (400, json!("entropy"))
    );
    let r = request("POST", &f.url("/connect"), &[("origin", ORIGIN)], Some(&json!({"projectId": "prj_AAAAAAAAAAAAAAAAAAAAAA", "originToken": f.p.origin_token, "entropy": entropy()}).to_string())).await;
    assert_eq!(r.status, 404);
    // A test captcha token on a project not in test mode is refused.
    let r = request("POST", &f.url("/connect"), &[("origin", ORIGIN)], Some(&json!({"projectId": f.p.id, "originToken": f.p.origin_token, "captchaToken": "qz_tc_pass.1.AA", "entropy": entropy()}).to_string())).await;
    assert_eq!(r.status, 403);
    // Preflight: the allowed origin is reflected, others refused, never `*`.
    let r = request(
        "OPTIONS",
        &f.url("/connect"),
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["access-control-allow-origin"], ORIGIN);
    let r = request(
        "OPTIONS",
        &f.url("/connect"),
        &[("origin", "https://evil.example")],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    // A webdriver browser is scored as a bot.
    let mut e = entropy();
    e["webdriver"] = json!(true);
    e["userAgent"] = json!("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36");
    let r = request(
        "POST",
        &f.url("/connect"),
        &[("origin", ORIGIN)],
        Some(
            &json!({"projectId": f.p.id, "originToken": f.p.origin_token, "entropy": e})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["risk"]["bot"], true, "{:?}", r.body);
    f.engine.stop().await;
}

async fn client_tokens_hs256(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS, false).await else {
        return;
    };
    let md =
        json!({"identifier": "user-42", "email": "ann@example.com", "public": {"plan": "pro"}});
    let r = f
        .post(
            "/projects/client/token",
            json!({"projectId": f.p.id, "metadata": md}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let token = r.body["clientToken"].as_str().unwrap().to_owned();
    // Any JWT library verifies it offline with the documented derivation.
    let key = qyzar_shared::crypto::client_token_key(
        &qyzar_shared::crypto::ProjectSecret::parse(&f.p.secret).unwrap(),
        &qyzar_shared::ids::ProjectId::parse(&f.p.id).unwrap(),
    );
    let mut val = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    val.set_audience(&[&f.p.id]);
    let decoded = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(key.raw()),
        &val,
    )
    .expect("offline verify");
    assert_eq!(decoded.claims["sub"], "user-42");

    let verify = |t: String| {
        let url = f.url(&format!(
            "/projects/client/token-verify?projectId={}&clientToken={}",
            f.p.id, t
        ));
        let secret = f.p.secret.clone();
        async move {
            request(
                "GET",
                &url,
                &[("authorization", &format!("Bearer {secret}"))],
                None,
            )
            .await
        }
    };
    let v = verify(token.clone()).await;
    assert_eq!(v.body["valid"], true, "{:?}", v.body);
    assert_eq!(v.body["metadata"], md);
    assert!(v.headers["server-timing"]
        .to_str()
        .unwrap()
        .contains("token;desc=verified"));
    let v = verify(token.clone()).await;
    assert!(
        v.headers["server-timing"]
            .to_str()
            .unwrap()
            .contains("token;desc=cached"),
        "the second verify is served from cache"
    );
    // POST with the token in its header.
    let v = request(
        "POST",
        &f.url("/projects/client/token-verify"),
        &[
            ("x-qyzar-project-secret", &f.p.secret),
            ("x-qyzar-client-token", &token),
        ],
        Some(&json!({"projectId": f.p.id}).to_string()),
    )
    .await;
    assert_eq!(v.body["valid"], true);
    // Reasons.
    let mut tampered = token.clone();
    let n = tampered.len();
    tampered.replace_range(n - 2.., if token.ends_with("AA") { "BB" } else { "AA" });
    assert_eq!(verify(tampered).await.body["reason"], "bad_signature");
    assert_eq!(verify("not.a.jwt".into()).await.body["reason"], "malformed");
    let now = qyzar_shared::time::now_ms() / 1000;
    let expired = qyzar_shared::crypto::sign_hs256(
        &qyzar_shared::crypto::Claims {
            iss: "qyzar".into(),
            aud: f.p.id.clone(),
            sub: "x".into(),
            iat: now - 100,
            exp: now - 10,
            jti: "j".into(),
            sid: None,
            md: None,
        },
        &key,
    );
    assert_eq!(verify(expired).await.body["reason"], "expired");
    // A token of another project is `wrong_project`.
    let (other, other_cfg) = project(SETTINGS, false);
    let current = f
        .engine
        .engine
        .config
        .current(qyzar_shared::time::now_ms())
        .unwrap();
    let mine_cfg = current.snapshot().projects()[0].clone();
    install(&f.engine.engine, 2, vec![mine_cfg, other_cfg]);
    let r = request(
        "POST",
        &f.url("/projects/client/token"),
        &[("authorization", &format!("Bearer {}", other.secret))],
        Some(&json!({"projectId": other.id}).to_string()),
    )
    .await;
    let foreign = r.body["clientToken"].as_str().unwrap().to_owned();
    // Verified (and so cached) under its own project first: the cache keeps
    // each project's tokens apart, so that changes nothing for another.
    let r = request(
        "POST",
        &f.url("/projects/client/token-verify"),
        &[("authorization", &format!("Bearer {}", other.secret))],
        Some(&json!({"projectId": other.id, "clientToken": foreign}).to_string()),
    )
    .await;
    assert_eq!(r.body["valid"], true, "{}", r.body);
    assert_eq!(
        verify(foreign.clone()).await.body["reason"],
        "wrong_project"
    );
    assert_eq!(verify(foreign).await.body["reason"], "wrong_project");
    // ttl bounds.
    let r = f
        .post(
            "/projects/client/token",
            json!({"projectId": f.p.id, "ttlSeconds": 5}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].clone()),
        (422, json!("ttlSeconds"))
    );
    f.engine.stop().await;
}

async fn client_tokens_eddsa_and_jwks(kind: Store) {
    let settings = SETTINGS.replacen('{', r#"{"tokenAlgorithm":"EdDSA","#, 1);
    let Some(f) = fixture(kind, &settings, true).await else {
        return;
    };
    let r = f
        .post(
            "/projects/client/token",
            json!({"projectId": f.p.id, "metadata": {"email": "a@b.co"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let token = r.body["clientToken"].as_str().unwrap();
    let jwks = request(
        "GET",
        &f.url(&format!("/projects/client/jwks?projectId={}", f.p.id)),
        &[],
        None,
    )
    .await;
    assert_eq!(jwks.status, 200);
    let jwk = &jwks.body["keys"][0];
    assert_eq!(
        (jwk["kty"].clone(), jwk["crv"].clone()),
        (json!("OKP"), json!("Ed25519"))
    );
    // Offline verification with the published key.
    let key = jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut val = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    val.set_audience(&[&f.p.id]);
    assert!(jsonwebtoken::decode::<Value>(token, &key, &val).is_ok());
    let v = f
        .post(
            "/projects/client/token-verify",
            json!({"projectId": f.p.id, "clientToken": token}),
        )
        .await;
    assert_eq!(v.body["valid"], true, "{:?}", v.body);
    let r = request(
        "GET",
        &f.url("/projects/client/jwks?projectId=prj_AAAAAAAAAAAAAAAAAAAAAA"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    f.engine.stop().await;
}

async fn bound_token_follows_its_session(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS, false).await else {
        return;
    };
    let c = f.connect().await;
    let sid = c.body["sessionId"].as_str().unwrap().to_owned();
    let tok = c.body["sessionToken"].as_str().unwrap().to_owned();
    let r = f
        .post(
            "/projects/client/token",
            json!({"projectId": f.p.id, "sessionId": sid, "sessionToken": tok, "ttlSeconds": 600}),
        )
        .await;
    assert_eq!(r.body["sessionId"], sid.as_str());
    let token = r.body["clientToken"].as_str().unwrap().to_owned();
    let v = f
        .post(
            "/projects/client/token-verify",
            json!({"projectId": f.p.id, "clientToken": token}),
        )
        .await;
    assert_eq!(
        (v.body["valid"].clone(), v.body["sessionId"].clone()),
        (json!(true), json!(sid))
    );
    // A wrong session token refuses the mint.
    let r = f
        .post(
            "/projects/client/token",
            json!({"projectId": f.p.id, "sessionId": sid, "sessionToken": "qz_st_x"}),
        )
        .await;
    assert_eq!(r.status, 422);
    // Revoking the session invalidates the (cached) token.
    let pid = qyzar_shared::ids::ProjectId::parse(&f.p.id).unwrap();
    f.engine
        .engine
        .sessions
        .revoke(&pid, &qyzar_shared::ids::SessionId::parse(&sid).unwrap())
        .await
        .unwrap();
    let v = f
        .post(
            "/projects/client/token-verify",
            json!({"projectId": f.p.id, "clientToken": token}),
        )
        .await;
    assert_eq!(v.body["reason"], "session_revoked");
    // A bound token never outlives its session: minted on a session with
    // two seconds left, its expiry is capped to the session's.
    let c = f.connect().await;
    let sid2 = qyzar_shared::ids::SessionId::parse(c.body["sessionId"].as_str().unwrap()).unwrap();
    let tok2 = c.body["sessionToken"].as_str().unwrap().to_owned();
    let (s, _) = f.engine.engine.sessions.get(&pid, &sid2).await.unwrap();
    let session = (*s.unwrap()).clone();
    let mut short = session.clone();
    short.expires_at = qyzar_shared::time::now_ms() + 2_000;
    f.engine.engine.sessions.put(short.clone()).await.unwrap();
    let r = f
        .post("/projects/client/token", json!({"projectId": f.p.id, "sessionId": sid2.as_str(), "sessionToken": tok2, "ttlSeconds": 600}))
        .await;
    let capped = r.body["expiresAt"].as_str().unwrap().to_owned();
    assert!(
        capped <= qyzar_shared::time::rfc3339(short.expires_at),
        "{capped} outlives the session"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2_300)).await;
    let v = f
        .post(
            "/projects/client/token-verify",
            json!({"projectId": f.p.id, "clientToken": r.body["clientToken"]}),
        )
        .await;
    assert_eq!(v.body["reason"], "expired", "{:?}", v.body);

    // A token whose own expiry is still ahead turns invalid when its session
    // ends first (shortened after the mint, as an admin-side expiry would).
    let c = f.connect().await;
    let sid3 = qyzar_shared::ids::SessionId::parse(c.body["sessionId"].as_str().unwrap()).unwrap();
    let r = f
        .post(
            "/projects/client/token",
            json!({"projectId": f.p.id, "sessionId": sid3.as_str(), "sessionToken": c.body["sessionToken"], "ttlSeconds": 600}),
        )
        .await;
    let token3 = r.body["clientToken"].as_str().unwrap().to_owned();
    let v = f
        .post(
            "/projects/client/token-verify",
            json!({"projectId": f.p.id, "clientToken": token3}),
        )
        .await;
    assert_eq!(v.body["valid"], true, "{:?}", v.body);
    let (s, _) = f.engine.engine.sessions.get(&pid, &sid3).await.unwrap();
    let mut ending = (*s.unwrap()).clone();
    ending.expires_at = qyzar_shared::time::now_ms() + 1_000;
    f.engine.engine.sessions.put(ending).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let v = f
        .post(
            "/projects/client/token-verify",
            json!({"projectId": f.p.id, "clientToken": token3}),
        )
        .await;
    assert_eq!(
        (v.body["valid"].clone(), v.body["reason"].clone()),
        (json!(false), json!("session_expired")),
        "{:?}",
        v.body
    );
    assert!(
        v.body["expiresAt"].is_null() && v.body.get("expiresAt").is_some(),
        "every answer carries expiresAt: {:?}",
        v.body
    );
    f.engine.stop().await;
}

async fn rate_limit_decisions(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS, false).await else {
        return;
    };
    let check = |body: Value| f.post("/projects/client/rate-limit-check", body);
    // email limit 3: three allowed, the fourth denied by metadata:email.
    for i in 0..3 {
        let r = check(json!({"projectId": f.p.id, "ip": "203.0.113.7", "metadata": {"email": "Ann@Example.com", "userId": "u1"}})).await;
        assert_eq!(r.body["allowed"], true, "call {i}: {:?}", r.body);
        assert_eq!(r.body["buckets"].as_array().unwrap().len(), 3);
    }
    let r = check(json!({"projectId": f.p.id, "ip": "203.0.113.7", "metadata": {"email": "ann@example.com", "userId": "u1"}})).await;
    assert_eq!(r.body["allowed"], false);
    assert_eq!(r.body["deniedBy"], "metadata:email");
    assert!(r.body["retryAfterMs"].as_u64().unwrap() > 0);
    // The denied call consumed nothing: ip has 5 - 3 = 2 left, userId 7;
    // a dry run reports what would remain after it (1 and 6).
    let r = check(json!({"projectId": f.p.id, "ip": "203.0.113.7", "metadata": {"userId": "u1"}, "dryRun": true})).await;
    let b = r.body["buckets"].as_array().unwrap();
    assert_eq!(
        (b[0]["remaining"].clone(), b[1]["remaining"].clone()),
        (json!(1), json!(6)),
        "{:?}",
        r.body
    );
    // dryRun consumed nothing either.
    let r = check(json!({"projectId": f.p.id, "ip": "203.0.113.7", "cost": 2})).await;
    assert_eq!(
        (r.body["allowed"].clone(), r.body["remaining"].clone()),
        (json!(true), json!(0))
    );
    let r = check(json!({"projectId": f.p.id, "ip": "203.0.113.7"})).await;
    assert_eq!(
        (r.body["allowed"].clone(), r.body["deniedBy"].clone()),
        (json!(false), json!("ip"))
    );
    // A changed limit keeps the counter: raising ip to 8 leaves 3 (2 after
    // the dry run's one cell).
    let current = f
        .engine
        .engine
        .config
        .current(qyzar_shared::time::now_ms())
        .unwrap();
    let mut cfg = current.snapshot().projects()[0].clone();
    cfg.settings.rate_limit.ip.limit = 8;
    install(&f.engine.engine, 2, vec![cfg]);
    let r = check(json!({"projectId": f.p.id, "ip": "203.0.113.7", "dryRun": true})).await;
    assert_eq!(r.body["remaining"], 2, "{:?}", r.body);
    // settingsOverride is validated and used.
    let r = check(json!({"projectId": f.p.id, "ip": "198.51.100.1", "settingsOverride": {"ip": {"limit": 0, "windowSeconds": 60}}})).await;
    assert_eq!(r.status, 422);
    let r = check(json!({"projectId": f.p.id, "ip": "198.51.100.1", "settingsOverride": {"ip": {"limit": 1, "windowSeconds": 60}}})).await;
    assert_eq!(r.body["limit"], 1);
    // Bad input.
    let r = check(json!({"projectId": f.p.id, "ip": "not-an-ip"})).await;
    assert_eq!(
        (r.status, r.body["error"]["field"].clone()),
        (422, json!("ip"))
    );
    let r = check(json!({"projectId": f.p.id})).await;
    assert_eq!(r.status, 400);
    // Denies reach the store off the hot path.
    f.engine.engine.background.flush().await;
    let pid = qyzar_shared::ids::ProjectId::parse(&f.p.id).unwrap();
    let denies = f
        .engine
        .engine
        .store
        .list_deny_events(&pid, 0, 100)
        .await
        .unwrap();
    assert!(denies.len() >= 2, "{denies:?}");
    f.engine.stop().await;
}

async fn ato_flow_and_idempotency(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS, false).await else {
        return;
    };
    let c = f.connect().await;
    let sid = c.body["sessionId"].as_str().unwrap().to_owned();
    let tok = c.body["sessionToken"].as_str().unwrap().to_owned();
    let device = c.body["deviceId"].as_str().unwrap().to_owned();
    let attempt = |success: bool| json!({"projectId": f.p.id, "identifier": "ann@example.com", "success": success, "ip": "203.0.113.9", "sessionId": sid, "sessionToken": tok});
    let r = f
        .post("/projects/client/ato-login-attempt", attempt(true))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["action"], "allow");
    assert!(r.body["priorSnapshot"].is_null());
    let r = f
        .post("/projects/client/ato-login-attempt", attempt(true))
        .await;
    assert_eq!(r.body["priorSnapshot"]["deviceId"], device.as_str());
    assert!(r.body["lastLoginAt"].is_string());
    // A burst of failures raises the score to a challenge or block.
    let mut last = Value::Null;
    for _ in 0..8 {
        last = f
            .post("/projects/client/ato-login-attempt", attempt(false))
            .await
            .body;
    }
    assert!(
        last["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("failed_attempt_velocity")),
        "{last:?}"
    );
    assert_ne!(last["action"], "allow");
    // A login from an unknown device.
    let r = f.post("/projects/client/ato-login-attempt", json!({"projectId": f.p.id, "identifier": "ann@example.com", "success": true, "deviceId": "dev_ZZZZZZZZZZZZZZZZZZZZZZ"})).await;
    assert!(
        r.body["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("new_device")),
        "{:?}",
        r.body
    );
    assert!(r.body["changes"]
        .as_array()
        .unwrap()
        .contains(&json!("device")));
    // Trusted identifiers: idempotent.
    for _ in 0..2 {
        let r = f
            .post(
                "/projects/client/ato-add-identifier",
                json!({"projectId": f.p.id, "identifier": "ann@example.com", "deviceId": device}),
            )
            .await;
        assert_eq!(
            r.body["trustedIdentifiers"],
            json!(["ann@example.com"]),
            "{:?}",
            r.body
        );
    }
    let r = f.post("/projects/client/ato-add-identifier", json!({"projectId": f.p.id, "identifier": "bob", "sessionId": sid, "sessionToken": tok})).await;
    assert_eq!(
        r.body["trustedIdentifiers"],
        json!(["ann@example.com", "bob"])
    );
    let r = f
        .post("/projects/client/ato-login-attempt", attempt(true))
        .await;
    assert_eq!(r.body["trustedDevice"], true, "{:?}", r.body);
    // Idempotency-Key: a retry returns the first answer and writes once.
    let pid = qyzar_shared::ids::ProjectId::parse(&f.p.id).unwrap();
    let before = f
        .engine
        .engine
        .store
        .recent_login_attempts(&pid, "carol", 0, 100)
        .await
        .unwrap()
        .len();
    let body = json!({"projectId": f.p.id, "identifier": "carol", "success": true}).to_string();
    let hdrs = [
        ("authorization", format!("Bearer {}", f.p.secret)),
        ("idempotency-key", "retry-1".to_owned()),
    ];
    let hdrs: Vec<(&str, &str)> = hdrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = request(
        "POST",
        &f.url("/projects/client/ato-login-attempt"),
        &hdrs,
        Some(&body),
    )
    .await;
    let b = request(
        "POST",
        &f.url("/projects/client/ato-login-attempt"),
        &hdrs,
        Some(&body),
    )
    .await;
    assert_eq!(a.body, b.body);
    assert_eq!(b.headers["idempotent-replayed"], "true");
    let after = f
        .engine
        .engine
        .store
        .recent_login_attempts(&pid, "carol", 0, 100)
        .await
        .unwrap()
        .len();
    assert_eq!(after - before, 1, "the retry wrote nothing");
    let other = json!({"projectId": f.p.id, "identifier": "carol", "success": false}).to_string();
    let r = request(
        "POST",
        &f.url("/projects/client/ato-login-attempt"),
        &hdrs,
        Some(&other),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (409, json!("idempotency_key_reused"))
    );
    f.engine.stop().await;
}

async fn bad_requests_change_nothing(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS, false).await else {
        return;
    };
    let auth = format!("Bearer {}", f.p.secret);
    let url = f.url("/projects/client/ato-login-attempt");
    let pid = qyzar_shared::ids::ProjectId::parse(&f.p.id).unwrap();
    let count = || async {
        f.engine
            .engine
            .store
            .recent_login_attempts(&pid, "ann", 0, 100)
            .await
            .unwrap()
            .len()
    };
    let good = json!({"projectId": f.p.id, "identifier": "ann", "success": true}).to_string();
    let r = request("POST", &url, &[("authorization", &auth)], Some("{not json")).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (400, json!("malformed_json"))
    );
    let r = request(
        "POST",
        &url,
        &[("authorization", &auth), ("content-type", "text/plain")],
        Some(&good),
    )
    .await;
    assert_eq!(r.status, 415);
    let big = format!(
        r#"{{"projectId":"{}","identifier":"{}","success":true}}"#,
        f.p.id,
        "x".repeat(70_000)
    );
    let r = request("POST", &url, &[("authorization", &auth)], Some(&big)).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (413, json!("payload_too_large"))
    );
    let r = request("POST", &url, &[], Some(&good)).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (401, json!("missing_credentials"))
    );
    let r = request(
        "POST",
        &url,
        &[(
            "authorization",
            "Bearer qz_sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
        Some(&good),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (401, json!("invalid_credentials"))
    );
    let unknown =
        json!({"projectId": "prj_AAAAAAAAAAAAAAAAAAAAAA", "identifier": "ann", "success": true})
            .to_string();
    let r = request("POST", &url, &[("authorization", &auth)], Some(&unknown)).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (404, json!("project_not_found"))
    );
    let r = request(
        "POST",
        &url,
        &[("authorization", &auth)],
        Some(&json!({"projectId": f.p.id, "identifier": "ann"}).to_string()),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].clone()),
        (400, json!("success"))
    );
    let r = request(
        "POST",
        &url,
        &[("authorization", &auth)],
        Some(&json!({"projectId": f.p.id, "identifier": "ann", "success": "yes"}).to_string()),
    )
    .await;
    assert_eq!(r.status, 422);
    let r = request("GET", &url, &[("authorization", &auth)], None).await;
    assert_eq!(
        (r.status, r.headers["allow"].to_str().unwrap()),
        (405, "POST")
    );
    assert_eq!(count().await, 0, "no refused request wrote an attempt");
    // Every answer, refused or not, says where its time went.
    assert!(r.headers.contains_key("server-timing"));
    // Without a snapshot the engine refuses rather than guesses.
    let (store, dir) = store(kind).await.unwrap();
    let bare = TestEngine::spawn_with(store, dir).await;
    let r = request(
        "POST",
        &bare.url("/projects/client/ato-login-attempt"),
        &[("authorization", &auth)],
        Some(&good),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (503, json!("not_configured"))
    );
    bare.stop().await;
    f.engine.stop().await;
}

async fn reverify_extends_and_detects_drift(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS, false).await else {
        return;
    };
    let c = f.connect().await;
    let jwt = c.body["sessionJwt"].as_str().unwrap();
    let r = request(
        "POST",
        &f.url("/connect/reverify"),
        &[("origin", ORIGIN)],
        Some(&json!({"sessionJwt": jwt, "entropy": entropy()}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.body["valid"].clone(), r.body["deviceChanged"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(r.headers["access-control-allow-origin"], ORIGIN);
    let mut e = entropy();
    e["canvasHash"] = json!("ffffffff");
    let r = request(
        "POST",
        &f.url("/connect/reverify"),
        &[("origin", ORIGIN)],
        Some(&json!({"sessionJwt": jwt, "entropy": e}).to_string()),
    )
    .await;
    assert_eq!(r.body["deviceChanged"], true);
    // A session JWT is not a client token, and a forged one is refused.
    let v = f
        .post(
            "/projects/client/token-verify",
            json!({"projectId": f.p.id, "clientToken": jwt}),
        )
        .await;
    assert_eq!(v.body["valid"], false);
    let r = request(
        "POST",
        &f.url("/connect/reverify"),
        &[("origin", ORIGIN)],
        Some(&json!({"sessionJwt": "a.b.c", "entropy": entropy()}).to_string()),
    )
    .await;
    assert_eq!(r.body["valid"], false);
    f.engine.stop().await;
}
