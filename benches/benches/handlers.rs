//! Hot routes in process, without a socket: each handler's own cost (parse,
//! secret check, decide, answer JSON) apart from hyper, TCP and the router.
//!
//! A real `qyzar_engine::Engine` over an embedded store in a temporary
//! directory, with a snapshot of [`PROJECTS`] projects made by the admin's
//! provisioning code (one in ten signs with EdDSA), each with the three
//! rate-limit rules of the load test's world (`ip`, `metadata.email`,
//! `metadata.userId`) and ATO settings, installed with
//! `ConfigView::swap_full` as `engine-serve` does. Requests are built once
//! and cycled through, so the bench measures the route, not the bench.
//!
//! The handlers are `async` but none of the benched paths waits on I/O
//! (the limiter, the token cache and the signature are in memory): each
//! call is polled once with a no-op waker and must finish then.
//!
//! Groups:
//! - `handler_rate_limit_check/{1_bucket,3_buckets}`: the route's `handle`;
//! - `handler_token_mint/{hs256,eddsa}`: `POST /projects/client/token`;
//! - `handler_token_verify/{hs256,eddsa}_{cached,uncached}`: uncached
//!   forces a verify by removing the token from the cache first (outside
//!   the timing); cached cycles through tokens verified once before;
//! - `rate_limit_decision/…`: `Limiter::check` alone at a fixed `now` (no
//!   clock read), over many subjects and over one (cache-hot) subject, so
//!   memory and fixed costs can be told apart;
//! - `ato_score`: `decide::ato::score_login`, the pure scoring;
//! - `config/{project_lookup,swap_full_100,swap_full_1k}`: the live config
//!   as every route reads it, and installing a new snapshot.
//!
//! Run: `cargo bench -p qyzar-benches --bench handlers`.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use qyzar_benches::fixtures::{self, SplitMix};
use qyzar_engine::decide::ato::{self, Attempt, History, PriorSnapshot, Thresholds};
use qyzar_engine::limiter::{BucketCheck, Rule};
use qyzar_engine::request::Headers;
use qyzar_engine::response::Body;
use qyzar_engine::routes::{rate_limit_check, token, token_verify};
use qyzar_engine::{Engine, StateOptions};
use qyzar_shared::crypto::{
    client_token_key, random_token, sign_eddsa, sign_hs256, Claims, Ed25519Signer, Hs256Key,
    ProjectSecret,
};
use qyzar_shared::ids::{DeviceId, ProjectId};
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::snapshot::{provision, ProjectConfig, Snapshot};
use serde_json::json;

/// Projects in the snapshot; every tenth signs client tokens with EdDSA.
const PROJECTS: usize = 100;
/// Distinct request bodies cycled through by the rate-limit benches.
const VARIANTS: usize = 10_000;
/// Distinct client tokens cycled through by the token-verify benches.
const TOKENS: usize = 1_000;

/// The load test's project settings (`loadtest/src/engine.rs`): limits high
/// enough that every check is allowed, the path real traffic mostly takes.
fn settings(eddsa: bool) -> ProjectSettings {
    let json = format!(
        r#"{{"allowedOrigins":["https://shop.example"],
  "rateLimit":{{"ip":{{"limit":1000000,"windowSeconds":60}},
    "metadata":{{"email":{{"limit":1000000,"windowSeconds":300}},"userId":{{"limit":1000000,"windowSeconds":60}}}}}},
  "ato":{{"challengeScore":40,"blockScore":85,"failedAttemptsWindowSeconds":900}}{}}}"#,
        if eddsa {
            r#","tokenAlgorithm":"EdDSA""#
        } else {
            ""
        }
    );
    ProjectSettings::parse_and_validate(json.as_bytes()).expect("the bench settings validate")
}

/// A project as a customer backend knows it.
struct Project {
    id: String,
    secret: HeaderValue,
    hs256: Hs256Key,
    ed25519: Option<Ed25519Signer>,
}

/// The engine and the projects it serves.
struct World {
    engine: Arc<Engine>,
    projects: Vec<Project>,
    configs: Vec<ProjectConfig>,
    _dir: tempfile::TempDir,
}

impl World {
    /// Must run inside a tokio runtime (the engine spawns its writers).
    fn new(options: StateOptions) -> Self {
        let now = qyzar_shared::time::now_ms();
        let mut projects = Vec::with_capacity(PROJECTS);
        let mut configs = Vec::with_capacity(PROJECTS);
        for i in 0..PROJECTS {
            let eddsa = i % 10 == 9;
            let id = ProjectId::generate();
            let secret = ProjectSecret::generate();
            let pk = eddsa.then(Ed25519Signer::generate_pkcs8);
            let cfg = provision::project_config(&id, &secret, settings(eddsa), pk.as_deref())
                .expect("a project config");
            configs.push(cfg);
            projects.push(Project {
                id: id.to_string(),
                secret: HeaderValue::from_str(secret.expose()).expect("ascii"),
                hs256: client_token_key(&secret, &id),
                ed25519: pk.map(|pk| Ed25519Signer::from_pkcs8(&pk).expect("a key")),
            });
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(
            qyzar_store::EmbeddedStore::open(dir.path().join("engine.redb"))
                .expect("an embedded store"),
        );
        let engine = Engine::new(store, options);
        let snap = Snapshot::new(1, now, configs.clone()).expect("a snapshot");
        engine
            .config
            .swap_full(snap, now)
            .expect("the first snapshot");
        Self {
            engine,
            projects,
            configs,
            _dir: dir,
        }
    }

    fn hs256(&self) -> impl Iterator<Item = &Project> {
        self.projects.iter().filter(|p| p.ed25519.is_none())
    }

    fn eddsa(&self) -> impl Iterator<Item = &Project> {
        self.projects.iter().filter(|p| p.ed25519.is_some())
    }
}

/// One request: the secret and content-type headers and a JSON body.
struct Req {
    headers: HeaderMap,
    body: Bytes,
}

fn req(p: &Project, body: serde_json::Value) -> Req {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        HeaderName::from_static("x-qyzar-project-secret"),
        p.secret.clone(),
    );
    Req {
        headers,
        body: Bytes::from(body.to_string()),
    }
}

/// Polls `fut` once: the benched paths never wait, so it must be ready.
fn now_or_never<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a benched handler waited on I/O"),
    }
}

/// The answer's status and JSON body, for the checks before measuring.
fn answer(res: Response<Body>) -> (StatusCode, serde_json::Value) {
    let status = res.status();
    let body = now_or_never(res.into_body().collect())
        .expect("a full body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&body).expect("a JSON answer"),
    )
}

fn rate_limit_requests(w: &World, buckets: usize) -> Vec<Req> {
    let mut rng = SplitMix::new(5);
    (0..VARIANTS)
        .map(|_| {
            let p = &w.projects[rng.below(w.projects.len())];
            let u = rng.below(VARIANTS * 2);
            let ip = format!("198.51.{}.{}", u / 250 % 250, u % 250);
            let body = if buckets == 1 {
                json!({"projectId": p.id, "ip": ip})
            } else {
                json!({
                    "projectId": p.id,
                    "ip": ip,
                    "metadata": {"email": format!("user{u}@example.com"), "userId": format!("u{u}")},
                })
            };
            req(p, body)
        })
        .collect()
}

fn rate_limit_check(c: &mut Criterion, w: &World) {
    let mut g = c.benchmark_group("handler_rate_limit_check");
    for (label, buckets) in [("1_bucket", 1), ("3_buckets", 3)] {
        let reqs = rate_limit_requests(w, buckets);
        let (status, body) = answer(now_or_never(rate_limit_check::handle(
            &w.engine,
            &Headers::map(&reqs[0].headers),
            &reqs[0].body,
            std::time::Instant::now(),
        )));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["allowed"], true, "{body}");
        assert_eq!(body["buckets"].as_array().map(Vec::len), Some(buckets));
        let mut i = 0;
        g.bench_function(label, |b| {
            b.iter(|| {
                i = (i + 1) % reqs.len();
                let r = &reqs[i];
                // The router reads the arrival time; so does the bench.
                let arrived = std::time::Instant::now();
                now_or_never(rate_limit_check::handle(
                    &w.engine,
                    &Headers::map(&r.headers),
                    &r.body,
                    arrived,
                ))
            })
        });
    }
    g.finish();
}

fn token_mint(c: &mut Criterion, w: &World) {
    let mut g = c.benchmark_group("handler_token_mint");
    for (label, eddsa) in [("hs256", false), ("eddsa", true)] {
        let pool: Vec<&Project> = if eddsa {
            w.eddsa().collect()
        } else {
            w.hs256().collect()
        };
        let reqs: Vec<Req> = (0..VARIANTS)
            .map(|u| {
                let p = pool[u % pool.len()];
                req(
                    p,
                    json!({"projectId": p.id, "metadata": {"identifier": format!("user{u}@example.com"), "plan": "pro"}}),
                )
            })
            .collect();
        let (status, body) = answer(now_or_never(token::handle(
            &w.engine,
            &Headers::map(&reqs[0].headers),
            &reqs[0].body,
        )));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["clientToken"].is_string(), "{body}");
        let mut i = 0;
        g.bench_function(label, |b| {
            b.iter(|| {
                i = (i + 1) % reqs.len();
                let r = &reqs[i];
                now_or_never(token::handle(&w.engine, &Headers::map(&r.headers), &r.body))
            })
        });
    }
    g.finish();
}

/// `TOKENS` tokens of the projects in `pool`, as the load test mints them.
fn verify_requests(pool: &[&Project]) -> Vec<(Req, (String, Box<str>))> {
    let now_s = fixtures::now_unix();
    (0..TOKENS)
        .map(|k| {
            let p = pool[k % pool.len()];
            let claims = Claims {
                iss: "qyzar".into(),
                aud: p.id.clone(),
                sub: format!("user{k}@example.com"),
                iat: now_s,
                exp: now_s + 3600,
                jti: random_token("tok_", 16),
                sid: None,
                md: Some(json!({"identifier": format!("user{k}@example.com"), "plan": "pro"})),
            };
            let token = match &p.ed25519 {
                Some(signer) => sign_eddsa(&claims, signer),
                None => sign_hs256(&claims, &p.hs256),
            };
            let r = req(p, json!({"projectId": p.id, "clientToken": token}));
            (r, (p.id.clone(), token.into_boxed_str()))
        })
        .collect()
}

fn token_verify(c: &mut Criterion, w: &World) {
    let mut g = c.benchmark_group("handler_token_verify");
    let verify = |r: &Req| {
        now_or_never(token_verify::handle(
            &w.engine,
            &Method::POST,
            None,
            &Headers::map(&r.headers),
            &r.body,
        ))
    };
    for (alg, eddsa) in [("hs256", false), ("eddsa", true)] {
        let pool: Vec<&Project> = if eddsa {
            w.eddsa().collect()
        } else {
            w.hs256().collect()
        };
        let reqs = verify_requests(&pool);
        for (r, _) in &reqs {
            let res = verify(r);
            assert!(res.headers()["server-timing"]
                .to_str()
                .is_ok_and(|t| t.contains("token;desc=")));
            let (status, body) = answer(res);
            assert_eq!((status, &body["valid"]), (StatusCode::OK, &json!(true)));
        }
        let mut i = 0;
        g.bench_function(format!("{alg}_cached"), |b| {
            b.iter(|| {
                i = (i + 1) % reqs.len();
                verify(&reqs[i].0)
            })
        });
        // Uncached: the token leaves the cache before each timed call, so
        // the call verifies the signature and inserts it again.
        g.bench_function(format!("{alg}_uncached"), |b| {
            b.iter_batched(
                || {
                    i = (i + 1) % reqs.len();
                    let (r, (project, token)) = &reqs[i];
                    w.engine
                        .tokens
                        .remove(project, &qyzar_engine::state::TokenRef(token));
                    r
                },
                verify,
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// `Limiter::check` without the clock: over many subjects (memory-bound,
/// as under real traffic) and over one subject (cache-hot: the fixed cost).
fn decision(c: &mut Criterion, w: &World) {
    // One project's partition, as the route takes it.
    let limiter = &w.engine.limiter.project(
        fixtures::AUDIENCE,
        qyzar_shared::settings::PlanTier::Enterprise
            .limits()
            .limiter_keys,
    );
    let rule = Rule::new(u32::MAX, 1);
    let subjects: Vec<[BucketCheck; 3]> = (0..VARIANTS)
        .map(|u| {
            ["ip", "metadata:email", "metadata:userId"].map(|b| BucketCheck {
                key: limiter
                    .bucket_key(fixtures::AUDIENCE, b, format!("subject{u}").as_bytes())
                    .expect("a short key"),
                rule,
            })
        })
        .collect();
    let mut rng = SplitMix::new(9);
    let order: Vec<usize> = (0..VARIANTS).map(|_| rng.below(VARIANTS)).collect();
    let now = limiter.now_nanos();
    let mut g = c.benchmark_group("rate_limit_decision");
    for n in [1, 3] {
        let mut i = 0;
        g.bench_function(format!("{n}_bucket_spread"), |b| {
            b.iter(|| {
                i = (i + 1) % VARIANTS;
                let d = limiter.check(now, &subjects[order[i]][..n], 1, false);
                d.is_ok_and(|d| d.allowed)
            })
        });
        g.bench_function(format!("{n}_bucket_hot"), |b| {
            b.iter(|| {
                let d = limiter.check(now, black_box(&subjects[0][..n]), 1, false);
                d.is_ok_and(|d| d.allowed)
            })
        });
    }
    g.finish();
}

/// The pure ATO scoring: a returning user on a new device from another
/// region (several reasons fire) and a known device (nothing fires).
fn ato_score(c: &mut Criterion) {
    let now = qyzar_shared::time::now_ms();
    let known = DeviceId::from_digest(&[1; 32]);
    let other = DeviceId::from_digest(&[2; 32]);
    let prior = PriorSnapshot {
        device_id: Some(known.clone()),
        ip: "203.0.113.7".parse().ok(),
        region: Some("DE".into()),
        platform: Some("desktop".into()),
        browser: Some("Chrome".into()),
        location: None,
        at: now - 3_600_000,
    };
    let thresholds = Thresholds {
        challenge: 40,
        block: 85,
    };
    let attempt = |device, region| Attempt {
        ip: "198.51.100.4".parse().ok(),
        region: Some(region),
        device_id: Some(device),
        platform: Some("desktop"),
        browser: Some("Chrome"),
        bot: false,
        location: None,
        now,
    };
    let cases = [
        (
            "new_device_new_region",
            attempt(&other, "FR"),
            History {
                prior: Some(&prior),
                recent_failures: 3,
                trusted: false,
                known_device: false,
                ..History::default()
            },
        ),
        (
            "known_device",
            attempt(&known, "DE"),
            History {
                prior: Some(&prior),
                recent_failures: 0,
                trusted: true,
                known_device: true,
                ..History::default()
            },
        ),
    ];
    let mut g = c.benchmark_group("ato_score");
    for (label, a, h) in &cases {
        g.bench_function(*label, |b| {
            b.iter(|| ato::score_login(black_box(a), black_box(h), thresholds))
        });
    }
    g.finish();
}

/// The live config as every route reads it (load the `Arc`, find the
/// project), and installing a newer snapshot (index + key decoding).
fn config(c: &mut Criterion, w: &World) {
    let mut g = c.benchmark_group("config");
    let ids: Vec<&str> = w.projects.iter().map(|p| p.id.as_str()).collect();
    let mut i = 0;
    g.bench_function("project_lookup", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            let live = w.engine.config.current(black_box(1)).expect("configured");
            live.project(ids[i]).is_some()
        })
    });
    let big: Vec<ProjectConfig> = fixtures::snapshot(1000).projects().to_vec();
    for (label, configs) in [("swap_full_100", &w.configs), ("swap_full_1k", &big)] {
        let view = qyzar_engine::config_view::ConfigView::default();
        let mut version = 0;
        let now = qyzar_shared::time::now_ms();
        g.bench_function(label, |b| {
            b.iter_batched(
                || {
                    version += 1;
                    Snapshot::new(version, now, configs.clone()).expect("a snapshot")
                },
                |snap| view.swap_full(snap, now).expect("a newer version"),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn handlers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let _guard = rt.enter();
    let world = World::new(StateOptions::default());
    rate_limit_check(c, &world);
    decision(c, &world);
    token_mint(c, &world);
    token_verify(c, &world);
    config(c, &world);
    ato_score(c);
}

criterion_group!(benches, handlers);
criterion_main!(benches);
