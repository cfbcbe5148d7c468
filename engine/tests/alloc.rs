//! Allocations on session-verify's cache-hit path, counted.
//!
//! Its own test binary because it replaces the global allocator with
//! `stats_alloc`'s counting wrapper around the system allocator (no
//! `unsafe` here), and because the count is process-wide: this binary runs
//! one test on a current-thread runtime, so nothing else allocates while a
//! call is measured.
//!
//! What is allowed, exactly: what a fixed answer costs (the `HeaderMap` of
//! any `http::Response` with a `Content-Type` allocates its index table and
//! entry vector on the first insert; hyper's hello-world baseline pays the
//! same), measured here on `/ping`'s answer, **plus one allocation for the
//! body**. Parsing the body (borrowed ids and token), checking the ids, the
//! secret check, the cache lookup, the three timestamps and
//! `Server-Timing: cache;desc=hit` allocate nothing.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use qyzar_shared::crypto::ProjectSecret;
use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use qyzar_store::{DeviceInfo, EmbeddedStore, Risk, Session};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Allocations (fresh or grown) made by `f`, and its result.
fn count<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let region = Region::new(GLOBAL);
    let out = f();
    let s = region.change();
    (s.allocations + s.reallocations, out)
}

#[test]
fn session_verify_cache_hit_allocates_only_its_answer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path().join("engine.redb")).unwrap());
        let engine = qyzar_engine::Engine::new(store, Default::default());
        let now = qyzar_shared::time::now_ms();
        let project = ProjectId::generate();
        let secret = ProjectSecret::generate();
        let settings = qyzar_shared::settings::ProjectSettings::parse_and_validate(
            br#"{"allowedOrigins":["https://shop.example"]}"#,
        )
        .unwrap();
        let cfg = qyzar_shared::snapshot::provision::project_config(
            &project, &secret, settings, None,
        )
        .unwrap();
        let snap = qyzar_shared::snapshot::Snapshot::new(1, now, vec![cfg]).unwrap();
        engine.config.swap_full(snap, now).unwrap();
        let sid = SessionId::generate();
        let token = "st_alloc-test-token-0123456789";
        engine.sessions.cache(Session {
            project_id: project.clone(),
            session_id: sid.clone(),
            token_hash: sha256(token.as_bytes()),
            device_id: DeviceId::from_digest(&[4; 32]),
            created_at: now,
            expires_at: now + 3_600_000,
            // Seen just now, so this verify is not the once-a-minute touch
            // (which queues a background write and does allocate).
            last_seen_at: now,
            revoked: false,
            ip: Some("203.0.113.7".into()),
            risk: Risk {
                score: 3,
                bot: false,
                signals: vec!["headless_ua".into()],
            },
            device: DeviceInfo {
                browser: "Chrome".into(),
                os: "Windows".into(),
                platform: "desktop".into(),
                region: Some("DE".into()),
            },
        });

        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "x-qyzar-project-secret",
            HeaderValue::from_str(secret.expose()).unwrap(),
        );
        let body = Bytes::from(
            serde_json::json!({"projectId": project.as_str(), "sessionId": sid.as_str(), "sessionToken": token})
                .to_string(),
        );
        let call = || {
            let h = qyzar_engine::request::Headers::map(&headers);
            let fut = qyzar_engine::routes::session_verify::handle(
                &engine,
                &Method::POST,
                None,
                &h,
                &body,
            );
            poll_once(fut)
        };
        // Once to warm what is set up once per thread (the answer's scratch
        // buffer), as a serving worker has.
        let res = call();
        assert_eq!(res.status(), 200);

        let (fixed, res) = count(qyzar_engine::response::pong);
        drop(res);
        let (hit, res) = count(call);
        let timing = res.headers()["server-timing"].clone();
        let body = http_body_util::BodyExt::collect(res.into_body());
        let body = poll_once(body).unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(timing, "cache;desc=hit");
        eprintln!("allocations: fixed answer {fixed}, session-verify cache hit {hit}");
        assert_eq!(
            hit,
            fixed + 1,
            "a cache hit allocates what a fixed answer does ({fixed}) plus its body"
        );
    });
}

/// Polls a future that completes without waiting (a cache hit never
/// yields), so the measured call runs inline on this thread.
fn poll_once<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("a cache hit never waits"),
    }
}
