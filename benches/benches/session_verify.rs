//! `session-verify` in process (no socket): the route's handler called as
//! the router calls it, on a cache hit and on a cache miss that reads
//! through to the embedded store in a temporary directory.
//!
//! The engine is built with the public API the tests and `engine-serve`
//! use: `Engine::new` over the store, a snapshot swapped in, sessions put.
//! What is measured: body parse, project id check, secret check (SHA-256 +
//! constant-time compare), session lookup and checks, the answer's JSON and
//! `Server-Timing`; not the router's body read, metrics or total timing.
//!
//! Run: `cargo bench -p qyzar-benches --bench session_verify`.
//!
//! - `cache_hit`: 256 sessions in memory, walked in turn (the handler's
//!   own cost: everything stays in the CPU caches);
//! - `cache_hit_100k_random`: 100 000 sessions in memory, a pseudo-random
//!   walk (each call waits on main memory for its session and its body);
//! - `cache_miss`: the same 256 sessions, each forgotten before its call
//!   (outside the timing), so every call reads the embedded store.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use qyzar_benches::fixtures::SplitMix;
use qyzar_benches::session_map::session_ids;
use qyzar_engine::request::Headers;
use qyzar_engine::routes::session_verify;
use qyzar_engine::Engine;
use qyzar_shared::crypto::ProjectSecret;
use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use qyzar_store::{DataStore, DeviceInfo, EmbeddedStore, Risk, Session};

/// Sessions in memory for the hit bench, walked in a pseudo-random order.
const CACHED: usize = 100_000;
/// Sessions only in the store for the miss bench (each is one durable
/// write to set up).
const STORED: usize = 256;

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn now() -> i64 {
    qyzar_shared::time::now_ms()
}

fn token(id: &str) -> String {
    format!("st_{}", &id[4..])
}

fn session(project: &ProjectId, id: &str, now: i64) -> Session {
    Session {
        project_id: project.clone(),
        session_id: SessionId::parse(id).expect("session_ids makes ids"),
        token_hash: sha256(token(id).as_bytes()),
        device_id: DeviceId::from_digest(&sha256(id.as_bytes())),
        created_at: now,
        expires_at: now + 7 * 86_400_000,
        // Far in the future, so no call is the once-a-minute touch.
        last_seen_at: now + 86_400_000,
        revoked: false,
        ip: Some("203.0.113.7".into()),
        risk: Risk {
            score: 3,
            bot: false,
            signals: Vec::new(),
        },
        device: DeviceInfo {
            browser: "Chrome".into(),
            os: "Windows".into(),
            platform: "desktop".into(),
            region: Some("DE".into()),
        },
    }
}

struct Fixture {
    engine: Arc<Engine>,
    project: ProjectId,
    headers: HeaderMap,
    cached: Vec<(Box<str>, Bytes)>,
    stored: Vec<(SessionId, Bytes)>,
    _dir: tempfile::TempDir,
}

fn fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store =
            Arc::new(EmbeddedStore::open(dir.path().join("engine.redb")).expect("embedded store"));
        let engine = Engine::new(Arc::clone(&store) as Arc<dyn DataStore>, Default::default());
        let now = qyzar_shared::time::now_ms();
        let project = ProjectId::generate();
        let secret = ProjectSecret::generate();
        let settings = qyzar_shared::settings::ProjectSettings::parse_and_validate(
            br#"{"allowedOrigins":["https://shop.example"]}"#,
        )
        .expect("settings");
        let cfg =
            qyzar_shared::snapshot::provision::project_config(&project, &secret, settings, None)
                .expect("project config");
        let snap = qyzar_shared::snapshot::Snapshot::new(1, now, vec![cfg]).expect("snapshot");
        engine.config.swap_full(snap, now).expect("snapshot swap");
        let body = |id: &str| {
            Bytes::from(
                serde_json::json!({"projectId": project.as_str(), "sessionId": id, "sessionToken": token(id)})
                    .to_string(),
            )
        };
        let cached = session_ids(CACHED, 11)
            .into_iter()
            .map(|id| {
                engine.sessions.cache(session(&project, &id, now));
                let b = body(&id);
                (id, b)
            })
            .collect();
        let mut stored = Vec::new();
        for id in session_ids(STORED, 12) {
            let s = session(&project, &id, now);
            store.put_session(&s).await.expect("session stored");
            stored.push((s.session_id, body(&id)));
        }
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "x-qyzar-project-secret",
            HeaderValue::from_str(secret.expose()).expect("secret header"),
        );
        Fixture {
            engine,
            project,
            headers,
            cached,
            stored,
            _dir: dir,
        }
    })
}

fn handlers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let f = fixture(&rt);
    let order: Vec<usize> = {
        let mut rng = SplitMix::new(5);
        (0..CACHED).map(|_| rng.below(CACHED)).collect()
    };
    let call = |body: &Bytes| {
        rt.block_on(session_verify::handle(
            &f.engine,
            &Method::POST,
            None,
            &Headers::map(&f.headers),
            body,
        ))
    };
    // Every fixture answers `valid: true` before anything is measured.
    for b in f
        .cached
        .iter()
        .take(3)
        .map(|(_, b)| b)
        .chain(f.stored.iter().take(3).map(|(_, b)| b))
    {
        let res = call(b);
        let body = rt
            .block_on(http_body_util::BodyExt::collect(res.into_body()))
            .expect("body")
            .to_bytes();
        assert!(
            body.starts_with(br#"{"valid":true"#),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }

    let mut g = c.benchmark_group("session_verify");
    // The handler's own cost: the 256 sessions of the miss bench, cached,
    // so hit and miss walk the same small set and differ by the store read.
    for (id, b) in &f.stored {
        let _ = call(b);
        assert!(f
            .engine
            .sessions
            .cached(f.project.as_str(), id.as_str(), now())
            .is_some());
    }
    let mut j = 0;
    g.bench_function("cache_hit", |b| {
        b.iter(|| {
            j = (j + 1) % STORED;
            black_box(call(&f.stored[j].1))
        })
    });
    // The same over 100k sessions in a pseudo-random order: every call
    // misses the CPU caches for its session and its request body, as a
    // uniform load over a large population would.
    let mut i = 0;
    g.bench_function("cache_hit_100k_random", |b| {
        b.iter(|| {
            i = (i + 1) % CACHED;
            black_box(call(&f.cached[order[i]].1))
        })
    });
    // Each call finds its session forgotten (set up outside the timing),
    // so it reads through the store and caches the session again.
    g.bench_function("cache_miss", |b| {
        b.iter_batched(
            || {
                j = (j + 1) % STORED;
                f.engine.sessions.forget(&f.stored[j].0);
                j
            },
            |j| black_box(call(&f.stored[j].1)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, handlers);
criterion_main!(benches);
