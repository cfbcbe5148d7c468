//! Abuse cases: limits.
//!
//! - One tenant flooding the rate limiter with unique keys stays inside its
//!   plan's key budget and changes no decision of another tenant (it used to
//!   fill one shared map, after which every tenant's new keys went untracked).
//! - A `settingsOverride` asking more than the plan allows is refused.
//! - `X-Forwarded-For` and `CF-IPCountry` count only from trusted proxies.
//! - A burst of `/connect` or `/connect/reverify` from one client IP is
//!   throttled (429 + `Retry-After`), not counted, stores nothing; entropy
//!   snapshots are capped per device.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use qyzar_engine::client_addr::TrustedProxies;
use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use qyzar_shared::settings::PlanTier;
use qyzar_store::MAX_ENTROPY_SNAPSHOTS_PER_DAY;
use serde_json::{json, Value};

use crate::helpers::*;

/// One keep-alive client for many calls (the shared helper opens a
/// connection per call, too many for a flood).
#[derive(Clone)]
struct Pooled(Client<HttpConnector, Full<bytes::Bytes>>);

impl Pooled {
    fn new() -> Self {
        Self(Client::builder(TokioExecutor::new()).build_http())
    }

    async fn post(&self, url: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
        let mut req = http::Request::builder()
            .method("POST")
            .uri(url)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        let res = self.0.request(req).await.expect("request");
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

async fn engine_with(options: qyzar_engine::StateOptions) -> TestEngine {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(qyzar_store::EmbeddedStore::open(dir.path().join("engine.redb")).unwrap());
    TestEngine::spawn_with_options(store, dir, options).await
}

fn check_url(e: &TestEngine) -> String {
    e.url("/projects/client/rate-limit-check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_at_its_budget_changes_no_decision_of_another() {
    let e = engine_with(Default::default()).await;
    let (a, a_cfg) = project(SETTINGS, false);
    let (b, b_cfg) = project(SETTINGS, false);
    install(&e.engine, 1, vec![a_cfg, b_cfg]);
    let client = Pooled::new();
    let url = check_url(&e);
    let b_auth = format!("Bearer {}", b.secret);
    let b_check = |ip: &'static str| {
        let (client, url, auth, id) = (client.clone(), url.clone(), b_auth.clone(), b.id.clone());
        async move {
            let (s, body) = client
                .post(
                    &url,
                    &[("authorization", &auth)],
                    &json!({"projectId": id, "ip": ip}),
                )
                .await;
            assert_eq!(s, 200, "{body:?}");
            body["allowed"].as_bool().unwrap()
        }
    };
    // B spends 3 of its ip limit of 5 before the flood.
    for _ in 0..3 {
        assert!(b_check("198.51.100.20").await);
    }
    // A floods unique IPs with the longest window its (free) plan allows,
    // past its key budget, from 8 connections.
    let budget = PlanTier::Free.limits().limiter_keys;
    let total = budget + budget / 10;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (client, url) = (client.clone(), url.clone());
            let (auth, id) = (format!("Bearer {}", a.secret), a.id.clone());
            tokio::spawn(async move {
                for i in (t..total).step_by(8) {
                    let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
                    let body = json!({"projectId": id, "ip": ip,
                        "settingsOverride": {"ip": {"limit": 1, "windowSeconds": 3600}, "metadata": {}}});
                    let (s, r) = client
                        .post(&url, &[("authorization", &auth)], &body)
                        .await;
                    assert_eq!((s, &r["allowed"]), (200, &json!(true)), "{r:?}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let held = e.engine.limiter.project_entries(&a.id);
    assert!(held <= budget, "A holds {held} keys, budget {budget}");
    let stats = e.engine.limiter.stats();
    assert_eq!(stats.untracked, 0, "nobody failed open");
    assert!(
        stats.evicted > 0,
        "A forgot its own keys: {stats:?}, {held}"
    );
    // B is exactly where it was: 2 left on its spent key, then denied; a
    // fresh key of B is tracked (limited after its 5 calls).
    assert!(b_check("198.51.100.20").await);
    assert!(b_check("198.51.100.20").await);
    assert!(!b_check("198.51.100.20").await, "B's counter survived");
    for _ in 0..5 {
        assert!(b_check("198.51.100.21").await);
    }
    assert!(!b_check("198.51.100.21").await, "B's new key is tracked");
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_beyond_the_plan_is_refused_naming_the_field() {
    let e = engine_with(Default::default()).await;
    let (free, free_cfg) = project(SETTINGS, false);
    let (pro, mut pro_cfg) = project(SETTINGS, false);
    pro_cfg.plan = PlanTier::Pro;
    install(&e.engine, 1, vec![free_cfg, pro_cfg]);
    let client = Pooled::new();
    let call = |p: &TestProject, over: Value| {
        let body = json!({"projectId": p.id, "ip": "203.0.113.7", "settingsOverride": over});
        let auth = format!("Bearer {}", p.secret);
        let (client, url) = (client.clone(), check_url(&e));
        async move { client.post(&url, &[("authorization", &auth)], &body).await }
    };
    let rule = |limit: u32, window: u32| json!({"limit": limit, "windowSeconds": window});
    let five: serde_json::Map<String, Value> =
        (0..5).map(|i| (format!("b{i}"), rule(1, 60))).collect();
    for (over, field) in [
        (
            json!({"ip": rule(1, 7_200), "metadata": {}}),
            "settingsOverride.ip.windowSeconds",
        ),
        (
            json!({"ip": rule(20_000, 60), "metadata": {}}),
            "settingsOverride.ip.limit",
        ),
        (
            json!({"ip": rule(1, 60), "metadata": {"email": rule(1, 86_400)}}),
            "settingsOverride.metadata.email.windowSeconds",
        ),
        (
            json!({"ip": rule(1, 60), "metadata": five}),
            "settingsOverride.metadata",
        ),
    ] {
        let (s, body) = call(&free, over.clone()).await;
        assert_eq!(s, 422, "{over}: {body:?}");
        assert_eq!(
            (&body["error"]["code"], &body["error"]["field"]),
            (&json!("invalid_field"), &json!(field)),
            "{body:?}"
        );
        // The same override is within the pro plan.
        let (s, body) = call(&pro, over.clone()).await;
        assert_eq!(s, 200, "{over}: {body:?}");
    }
    // Nothing was recorded for the refused calls.
    assert_eq!(e.engine.limiter.project_entries(&free.id), 0);
    e.stop().await;
}

/// `/connect` with extra headers; the stored session's (ip, region).
async fn connect_seen_as(
    e: &TestEngine,
    p: &TestProject,
    headers: &[(&str, &str)],
) -> (Option<String>, Option<String>) {
    let body =
        json!({"projectId": p.id, "originToken": p.origin_token, "entropy": entropy()}).to_string();
    let mut all = vec![("origin", ORIGIN)];
    all.extend_from_slice(headers);
    let c = request("POST", &e.url("/connect"), &all, Some(&body)).await;
    assert_eq!(c.status, 201, "{:?}", c.body);
    let pid = ProjectId::parse(&p.id).unwrap();
    let sid = SessionId::parse(c.body["sessionId"].as_str().unwrap()).unwrap();
    let s = e
        .engine
        .store
        .get_session(&pid, &sid)
        .await
        .unwrap()
        .expect("stored");
    (s.ip, s.device.region)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let spoof = [
        ("x-forwarded-for", "6.6.6.6, 203.0.113.5"),
        ("cf-ipcountry", "US"),
    ];
    // Nothing trusted (the default): the socket address, no header region.
    let e = engine_with(Default::default()).await;
    let (p, cfg) = project(SETTINGS, false);
    install(&e.engine, 1, vec![cfg]);
    assert_eq!(
        connect_seen_as(&e, &p, &spoof).await,
        (Some("127.0.0.1".into()), None)
    );
    // Rotating the forwarded address buys no fresh throttle bucket.
    let (p2, mut cfg2) = project(SETTINGS, false);
    cfg2.settings.browser_rate_limit.connect.limit = 2;
    install(&e.engine, 2, vec![cfg2]);
    let body = json!({"projectId": p2.id, "originToken": p2.origin_token, "entropy": entropy()})
        .to_string();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let xff = format!("198.51.100.{i}");
        let r = request(
            "POST",
            &e.url("/connect"),
            &[("origin", ORIGIN), ("x-forwarded-for", &xff)],
            Some(&body),
        )
        .await;
        statuses.push(r.status);
    }
    assert_eq!(statuses, [201, 201, 429, 429]);
    e.stop().await;

    // Loopback trusted (as under `qyzar dev`): the right-most untrusted hop
    // and the proxy's region header.
    let e = engine_with(qyzar_engine::StateOptions {
        trusted_proxies: TrustedProxies::loopback(),
        ..Default::default()
    })
    .await;
    let (p, cfg) = project(SETTINGS, false);
    install(&e.engine, 1, vec![cfg]);
    assert_eq!(
        connect_seen_as(&e, &p, &spoof).await,
        (Some("203.0.113.5".into()), Some("US".into()))
    );
    // Behind the trusted proxy each forwarded client has its own throttle
    // buckets, on /connect and /connect/reverify alike (the router hands
    // both routes the resolved address).
    let (p3, mut cfg3) = project(SETTINGS, false);
    cfg3.settings.browser_rate_limit.connect.limit = 1;
    cfg3.settings.browser_rate_limit.reverify.limit = 1;
    install(&e.engine, 2, vec![cfg3]);
    let body = json!({"projectId": p3.id, "originToken": p3.origin_token, "entropy": entropy()})
        .to_string();
    let clients = ["198.51.100.1", "198.51.100.2", "198.51.100.1"];
    let mut statuses = Vec::new();
    let mut jwt = None;
    for xff in clients {
        let r = request(
            "POST",
            &e.url("/connect"),
            &[("origin", ORIGIN), ("x-forwarded-for", xff)],
            Some(&body),
        )
        .await;
        if jwt.is_none() && r.status == 201 {
            jwt = r.body["sessionJwt"].as_str().map(str::to_owned);
        }
        statuses.push(r.status);
    }
    assert_eq!(
        statuses,
        [201, 201, 429],
        "one connect per forwarded client"
    );
    let rbody = json!({"sessionJwt": jwt.expect("a session"), "entropy": entropy()}).to_string();
    let mut statuses = Vec::new();
    for xff in clients {
        let r = request(
            "POST",
            &e.url("/connect/reverify"),
            &[("origin", ORIGIN), ("x-forwarded-for", xff)],
            Some(&rbody),
        )
        .await;
        statuses.push(r.status);
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "one reverify per forwarded client"
    );
    e.stop().await;
}

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
    a_connect_burst_is_throttled_uncounted_and_stores_nothing,
    entropy_snapshots_are_capped_per_device,
);

async fn spawn_on(kind: Store) -> Option<TestEngine> {
    let (store, dir) = store(kind).await?;
    Some(TestEngine::spawn_with(store, dir).await)
}

async fn a_connect_burst_is_throttled_uncounted_and_stores_nothing(kind: Store) {
    let Some(e) = spawn_on(kind).await else {
        return;
    };
    let settings = SETTINGS.replacen(
        "{\"allowedOrigins\"",
        r#"{"browserRateLimit":{"connect":{"limit":5,"windowSeconds":3600},"reverify":{"limit":3,"windowSeconds":3600}},"allowedOrigins""#,
        1,
    );
    let (p, cfg) = project(&settings, false);
    install(&e.engine, 1, vec![cfg]);
    e.engine.traffic.enable();
    let pid = ProjectId::parse(&p.id).unwrap();
    let body =
        json!({"projectId": p.id, "originToken": p.origin_token, "entropy": entropy()}).to_string();
    let mut created = Vec::new();
    let mut throttled = 0;
    for _ in 0..12 {
        let r = request(
            "POST",
            &e.url("/connect"),
            &[("origin", ORIGIN)],
            Some(&body),
        )
        .await;
        match r.status {
            201 => created.push(r.body),
            429 => {
                throttled += 1;
                assert_eq!(r.body["error"]["code"], "rate_limited", "{:?}", r.body);
                let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=3600).contains(&wait), "Retry-After {wait}");
                assert_eq!(
                    r.headers["access-control-allow-origin"], ORIGIN,
                    "the page can read the answer"
                );
                assert!(r.headers.get("set-cookie").is_none());
            }
            s => panic!("{s}: {:?}", r.body),
        }
    }
    assert_eq!((created.len(), throttled), (5, 7));
    // Only the five sessions were counted and stored.
    assert_eq!(e.engine.traffic.recorded.load(Ordering::Relaxed), 5);
    let device = DeviceId::parse(created[0]["deviceId"].as_str().unwrap()).unwrap();
    let snaps = e
        .engine
        .store
        .list_entropy_snapshots(&pid, &device, 1000)
        .await
        .unwrap();
    assert_eq!(snaps.len(), 5, "throttled calls stored no entropy");

    // Reverify: 3 per client IP, then 429, uncounted.
    let jwt = created[0]["sessionJwt"].as_str().unwrap().to_owned();
    let rbody = json!({"sessionJwt": jwt, "entropy": entropy()}).to_string();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = request(
            "POST",
            &e.url("/connect/reverify"),
            &[("origin", ORIGIN)],
            Some(&rbody),
        )
        .await;
        if r.status == 429 {
            assert!(r.headers.contains_key("retry-after"));
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(e.engine.traffic.recorded.load(Ordering::Relaxed), 5 + 3);
    e.stop().await;
}

async fn entropy_snapshots_are_capped_per_device(kind: Store) {
    let Some(e) = spawn_on(kind).await else {
        return;
    };
    // Default browser limits: a real site's rate, far above the cap's need.
    let (p, cfg) = project(SETTINGS, false);
    install(&e.engine, 1, vec![cfg]);
    let pid = ProjectId::parse(&p.id).unwrap();
    let body =
        json!({"projectId": p.id, "originToken": p.origin_token, "entropy": entropy()}).to_string();
    let mut device = None;
    for _ in 0..MAX_ENTROPY_SNAPSHOTS_PER_DAY + 6 {
        let r = request(
            "POST",
            &e.url("/connect"),
            &[("origin", ORIGIN)],
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        device = Some(DeviceId::parse(r.body["deviceId"].as_str().unwrap()).unwrap());
    }
    let snaps = e
        .engine
        .store
        .list_entropy_snapshots(&pid, &device.unwrap(), 1000)
        .await
        .unwrap();
    assert_eq!(snaps.len(), MAX_ENTROPY_SNAPSHOTS_PER_DAY);
    e.stop().await;
}

/// A trusted-proxy list that does not parse stops the start: guessing would
/// trust nobody (breaking a real proxy) or everybody (trusting clients).
#[test]
fn the_engine_does_not_start_over_a_bad_trusted_proxy_list() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qyzar-engine"))
        .env("QYZAR_ENGINE_TRUSTED_PROXIES", "10.0.0.0/8, 10.0.0.1/8")
        .env("QYZAR_ENGINE_DATA", dir.path().join("engine.redb"))
        .env("QYZAR_ENGINE_ADDR", "127.0.0.1:0")
        .env("QYZAR_ENGINE_INTERNAL_ADDR", "127.0.0.1:0")
        .env_remove("QYZAR_ENGINE_CQL_NODES")
        .env_remove("QYZAR_ENGINE_ADMIN_URL")
        .env_remove("QYZAR_ENGINE_GEOIP_DB")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // An engine that did start would serve forever: stop it and fail.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("the engine started over a bad trusted-proxy list");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("QYZAR_ENGINE_TRUSTED_PROXIES") && err.contains("10.0.0.1/8"),
        "{err}"
    );
}
