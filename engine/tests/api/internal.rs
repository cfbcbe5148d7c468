//! The internal listener: authenticated snapshot push (full and delta),
//! the served version, metrics, and the pull loop against a fake admin.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use qyzar_shared::crypto::{client_token_key, opt_out_key, ProjectSecret};
use qyzar_shared::ids::ProjectId;
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::snapshot::{
    encode_delta, encode_snapshot, Hs256KeyEntry, ProjectConfig, Snapshot, SnapshotBuilder,
    SnapshotDelta,
};

use crate::helpers::{send, TestEngine};

const KEY: &str = "test-push-key-0123456789";

/// The internal listener of a [`TestEngine`], on its own random port.
struct Internal {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Internal {
    async fn spawn(engine: &TestEngine, key: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(qyzar_engine::internal::run_internal(
            listener,
            Arc::clone(&engine.engine),
            key.map(str::to_owned),
            async {
                let _ = stopped.await;
            },
        ));
        Self { addr, _stop: stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `PUT /internal/snapshot` with `bytes`, bearing `key` when given.
    async fn push(&self, key: Option<&str>, bytes: Vec<u8>) -> Answer {
        let mut req = http::Request::put(self.url("/internal/snapshot"))
            .header("content-type", "application/octet-stream");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        request(req.body(Full::new(Bytes::from(bytes))).unwrap()).await
    }

    async fn get(&self, path: &str) -> Answer {
        request(
            http::Request::get(self.url(path))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
    }
}

/// An answer whose body may be JSON or text.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or(serde_json::Value::Null)
    }
}

async fn request(req: http::Request<Full<Bytes>>) -> Answer {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let res = client.request(req).await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A project as admin would put it in a snapshot.
fn project() -> (ProjectId, ProjectConfig) {
    let id = ProjectId::generate();
    let secret = ProjectSecret::generate();
    let key = client_token_key(&secret, &id);
    let hs = Hs256KeyEntry {
        kid: key.kid().to_owned(),
        key: *key.raw(),
        valid_until_ms: None,
    };
    let cfg = ProjectConfig::new(
        &id,
        *secret.hash().as_bytes(),
        hs,
        opt_out_key(&secret, &id),
        ProjectSettings::default(),
    );
    (id, cfg)
}

fn snapshot(version: u64, projects: &[&ProjectConfig]) -> Snapshot {
    projects
        .iter()
        .fold(
            SnapshotBuilder::new(version, qyzar_shared::time::now_ms()),
            |b, p| b.project((*p).clone()),
        )
        .build()
        .unwrap()
}

fn jwks_url(engine: &TestEngine, id: &ProjectId) -> String {
    engine.url(&format!("/projects/client/jwks?projectId={id}"))
}

#[tokio::test]
async fn pushes_without_the_right_key_are_refused_and_change_nothing() {
    let engine = TestEngine::spawn().await;
    let (_, p) = project();
    let bytes = encode_snapshot(&snapshot(1, &[&p])).unwrap();

    // No key configured: nothing is accepted, whatever is presented.
    let keyless = Internal::spawn(&engine, None).await;
    let r = keyless.push(Some(KEY), bytes.clone()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_credentials");

    let internal = Internal::spawn(&engine, Some(KEY)).await;
    let r = internal.push(None, bytes.clone()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "missing_credentials");
    let r = internal.push(Some("not-the-key"), bytes.clone()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_credentials");
    let r = internal.push(Some(&format!("{KEY}x")), bytes).await;
    assert_eq!(r.status, 401);

    assert_eq!(engine.engine.config.version(), 0);
    let r = internal.get("/internal/snapshot/version").await;
    assert_eq!((r.status, r.json()["version"].as_u64()), (200, Some(0)));
    engine.stop().await;
}

#[tokio::test]
async fn a_full_push_configures_the_hot_path_and_versions_only_move_forward() {
    let engine = TestEngine::spawn().await;
    let internal = Internal::spawn(&engine, Some(KEY)).await;
    let (id, p) = project();

    let r = send("GET", &jwks_url(&engine, &id), None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"]["code"], "not_configured");

    let r = internal
        .push(Some(KEY), encode_snapshot(&snapshot(5, &[&p])).unwrap())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["version"], 5);
    assert_eq!(engine.engine.config.version(), 5);
    let r = internal.get("/internal/snapshot/version").await;
    assert_eq!(r.json()["version"], 5);

    let r = send("GET", &jwks_url(&engine, &id), None).await;
    assert_eq!(r.status, 200);
    assert!(r.body["keys"].is_array());

    for stale in [4, 5] {
        let r = internal
            .push(Some(KEY), encode_snapshot(&snapshot(stale, &[])).unwrap())
            .await;
        assert_eq!(r.status, 409, "version {stale}");
        let body = r.json();
        assert_eq!(body["error"]["code"], "snapshot_not_newer");
        assert_eq!(
            body["error"]["field"], "version",
            "what earlier admins read"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains('5'),
            "the message names the served version: {body}"
        );
    }
    assert_eq!(engine.engine.config.version(), 5);
    let r = send("GET", &jwks_url(&engine, &id), None).await;
    assert_eq!(r.status, 200, "a refused push must not drop the project");
    engine.stop().await;
}

#[tokio::test]
async fn a_delta_applies_on_its_base_and_a_wrong_base_asks_for_a_full_snapshot() {
    let engine = TestEngine::spawn().await;
    let internal = Internal::spawn(&engine, Some(KEY)).await;
    let (a_id, a) = project();
    let (b_id, b) = project();
    let v1 = snapshot(1, &[&a]);
    let v2 = snapshot(2, &[&a, &b]);
    let delta = SnapshotDelta::between(&v1, &v2).unwrap();

    // A delta with nothing to apply it to.
    let r = internal
        .push(Some(KEY), encode_delta(&delta).unwrap())
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "snapshot_needs_full");
    assert!(r.text.contains("full snapshot"), "{}", r.text);
    assert_eq!(engine.engine.config.version(), 0);

    let r = internal
        .push(Some(KEY), encode_snapshot(&v1).unwrap())
        .await;
    assert_eq!(r.status, 200);
    let r = send("GET", &jwks_url(&engine, &b_id), None).await;
    assert_eq!(r.body["error"]["code"], "project_not_found");

    let r = internal
        .push(Some(KEY), encode_delta(&delta).unwrap())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["version"], 2);
    assert_eq!(engine.engine.config.version(), 2);
    assert_eq!(
        send("GET", &jwks_url(&engine, &b_id), None).await.status,
        200
    );
    assert_eq!(
        send("GET", &jwks_url(&engine, &a_id), None).await.status,
        200
    );

    // Built on version 1 while 2 is held.
    let v3 = snapshot(3, &[&b]);
    let wrong_base = SnapshotDelta::between(&v1, &v3).unwrap();
    let r = internal
        .push(Some(KEY), encode_delta(&wrong_base).unwrap())
        .await;
    assert_eq!(r.status, 409);
    let body = r.json();
    assert_eq!(body["error"]["code"], "snapshot_needs_full");
    assert_eq!(
        body["error"]["field"], "baseVersion",
        "what earlier admins read"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("send a full snapshot"),
        "{body}"
    );
    assert_eq!(engine.engine.config.version(), 2);
    assert_eq!(
        send("GET", &jwks_url(&engine, &a_id), None).await.status,
        200
    );
    engine.stop().await;
}

#[tokio::test]
async fn corrupt_bytes_are_refused_and_change_nothing() {
    let engine = TestEngine::spawn().await;
    let internal = Internal::spawn(&engine, Some(KEY)).await;
    let (_, p) = project();
    let r = internal
        .push(Some(KEY), encode_snapshot(&snapshot(1, &[&p])).unwrap())
        .await;
    assert_eq!(r.status, 200);

    let mut flipped = encode_snapshot(&snapshot(2, &[&p])).unwrap();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    let mut truncated = encode_snapshot(&snapshot(3, &[&p])).unwrap();
    truncated.truncate(truncated.len() / 2);
    for bytes in [flipped, truncated, b"not a snapshot".to_vec(), Vec::new()] {
        let r = internal.push(Some(KEY), bytes).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.json()["error"]["code"], "invalid_field");
    }
    assert_eq!(engine.engine.config.version(), 1);
    engine.stop().await;
}

#[tokio::test]
async fn metrics_ping_and_unknown_routes_on_the_internal_port() {
    let engine = TestEngine::spawn().await;
    let internal = Internal::spawn(&engine, Some(KEY)).await;
    assert_eq!(send("GET", &engine.url("/ping"), None).await.status, 200);

    let r = internal.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        r.text
            .contains("qyzar_requests_total{route=\"ping\",status=\"200\"} 1"),
        "{}",
        r.text
    );
    for gauge in [
        "qyzar_config_version 0",
        "qyzar_session_cache_entries ",
        "qyzar_session_cache_hits ",
        "qyzar_session_cache_misses ",
        "qyzar_background_dropped_writes ",
        "qyzar_deny_events_sampled_out 0",
        "qyzar_limiter_entries ",
    ] {
        assert!(r.text.contains(gauge), "missing {gauge:?} in\n{}", r.text);
    }

    let r = internal.get("/ping").await;
    assert_eq!((r.status, r.json()["ok"].as_bool()), (200, Some(true)));
    let r = internal.get("/internal/snapshot").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "PUT");
    let r = internal.get("/projects/client/jwks").await;
    assert_eq!(r.status, 404, "public routes are not served internally");
    assert_eq!(r.json()["error"]["code"], "route_not_found");
    engine.stop().await;
}

/// A stand-in for admin's `GET /internal/snapshot`: checks the key, answers
/// 304 to a matching `If-None-Match`, otherwise the encoded snapshot.
async fn fake_admin(bytes: Vec<u8>, version: u64, not_modified: Arc<AtomicUsize>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bytes = Bytes::from(bytes);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (bytes, not_modified) = (bytes.clone(), Arc::clone(&not_modified));
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let (bytes, not_modified) = (bytes.clone(), Arc::clone(&not_modified));
                async move {
                    let h = req.headers();
                    let status = if req.uri().path() != "/internal/snapshot" {
                        404
                    } else if h.get("authorization").and_then(|v| v.to_str().ok())
                        != Some(&format!("Bearer {KEY}"))
                    {
                        401
                    } else if h.get("if-none-match").and_then(|v| v.to_str().ok())
                        == Some(&format!("\"{version}\""))
                    {
                        not_modified.fetch_add(1, Ordering::SeqCst);
                        304
                    } else {
                        200
                    };
                    let body = if status == 200 { bytes } else { Bytes::new() };
                    let mut res = http::Response::new(Full::new(body));
                    *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    Ok::<_, std::convert::Infallible>(res)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_pull_loop_takes_the_newest_snapshot_from_admin_and_then_asks_if_modified() {
    let engine = TestEngine::spawn().await;
    let (id, p) = project();
    let not_modified = Arc::new(AtomicUsize::new(0));
    let admin = fake_admin(
        encode_snapshot(&snapshot(7, &[&p])).unwrap(),
        7,
        Arc::clone(&not_modified),
    )
    .await;

    // A wrong key is refused by admin and changes nothing.
    let (stop_wrong, stopped) = tokio::sync::oneshot::channel::<()>();
    let wrong = tokio::spawn(qyzar_engine::internal::pull_loop(
        Arc::clone(&engine.engine),
        format!("http://{admin}"),
        Some("wrong".into()),
        Duration::from_millis(50),
        async {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(engine.engine.config.version(), 0);
    let _ = stop_wrong.send(());
    wrong.await.unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pulling = tokio::spawn(qyzar_engine::internal::pull_loop(
        Arc::clone(&engine.engine),
        format!("http://{admin}/"),
        Some(KEY.into()),
        Duration::from_millis(50),
        async {
            let _ = stopped.await;
        },
    ));
    eventually("the pulled snapshot", || {
        engine.engine.config.version() == 7
    })
    .await;
    assert_eq!(send("GET", &jwks_url(&engine, &id), None).await.status, 200);
    eventually("a conditional pull", || {
        not_modified.load(Ordering::SeqCst) > 0
    })
    .await;
    let _ = stop.send(());
    pulling.await.unwrap();
    assert_eq!(engine.engine.config.version(), 7);
    engine.stop().await;
}

#[test]
fn admin_urls_must_be_http_or_https_without_credentials() {
    use qyzar_engine::internal::admin_snapshot_uri;
    assert_eq!(
        admin_snapshot_uri("http://admin.internal:8091/")
            .unwrap()
            .to_string(),
        "http://admin.internal:8091/internal/snapshot"
    );
    assert!(admin_snapshot_uri("https://admin.internal").is_ok());
    assert!(admin_snapshot_uri("ftp://admin.internal").is_err());
    assert!(admin_snapshot_uri("http://user:pw@admin.internal").is_err());
    assert!(admin_snapshot_uri("admin.internal").is_err());
}
