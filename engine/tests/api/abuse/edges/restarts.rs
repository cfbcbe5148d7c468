//! Restarts while something is down: an engine restarted while admin is
//! unreachable serves its last applied snapshot from disk (a damaged file
//! is refused, never served), and an engine whose CQL cluster is down still
//! starts, answers what its configuration allows, `503 store_unavailable`
//! for the rest, and connects once the cluster answers.

use std::net::SocketAddr;
use std::time::Duration;

use qyzar_engine::config::{EngineConfig, StoreChoice};
use qyzar_shared::snapshot::{encode_snapshot, ProjectConfig, Snapshot};
use serde_json::json;

use crate::helpers::*;

/// Long enough for any push key rule.
const KEY: &str = "test-push-key-0123456789-0123456789-abcdef";

/// An engine started the way the binary starts it ([`config::start_on`]).
struct Started {
    public: SocketAddr,
    internal: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Started {
    async fn spawn(config: EngineConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (public, internal_addr) = (
            listener.local_addr().unwrap(),
            internal.local_addr().unwrap(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            qyzar_engine::config::start_on(config, listener, internal, async {
                let _ = stopped.await;
            })
            .await
            .expect("the engine starts");
        });
        let me = Self {
            public,
            internal: internal_addr,
            stop: Some(stop),
            task,
        };
        for _ in 0..200 {
            if send("GET", &me.url("/ping"), None).await.status == 200 {
                return me;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the engine never answered /ping");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }

    fn internal_url(&self, path: &str) -> String {
        format!("http://{}{}", self.internal, path)
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap();
    }

    async fn metrics(&self) -> String {
        use http_body_util::BodyExt as _;
        let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let res = client
            .get(self.internal_url("/metrics").parse().unwrap())
            .await
            .unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The value of one metric line.
    async fn metric(&self, name: &str) -> String {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} is on /metrics: {text}"))
            .to_owned()
    }

    async fn push(&self, snapshot: &Snapshot) -> u16 {
        use http_body_util::BodyExt as _;
        let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let req = http::Request::put(self.internal_url("/internal/snapshot"))
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/octet-stream")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                encode_snapshot(snapshot).unwrap(),
            )))
            .unwrap();
        let res = client.request(req).await.unwrap();
        let status = res.status().as_u16();
        let _ = res.into_body().collect().await;
        status
    }
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An engine configuration under `dir` whose admin is unreachable.
fn admin_down(dir: &std::path::Path, data: &str) -> EngineConfig {
    let mut c = EngineConfig::local(dir);
    c.store = StoreChoice::Embedded(dir.join(data));
    c.snapshot_path = Some(dir.join("engine-snapshot.qzs"));
    c.push_key = Some(KEY.into());
    c.admin_url = Some(format!("http://127.0.0.1:{}", closed_port()));
    c.pull_every = Duration::from_secs(1);
    c
}

fn snapshot(version: u64, projects: Vec<ProjectConfig>) -> Snapshot {
    Snapshot::new(version, qyzar_shared::time::now_ms(), projects).unwrap()
}

async fn jwks_status(engine: &Started, project: &str) -> (u16, serde_json::Value) {
    let r = send(
        "GET",
        &engine.url(&format!("/projects/client/jwks?projectId={project}")),
        None,
    )
    .await;
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_restarted_while_admin_is_down_serves_its_last_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (p, cfg) = project(SETTINGS, false);
    let first = Started::spawn(admin_down(dir.path(), "one.redb")).await;
    assert_eq!(
        jwks_status(&first, &p.id).await.0,
        503,
        "nothing pushed yet"
    );
    assert_eq!(first.push(&snapshot(7, vec![cfg.clone()])).await, 200);
    assert_eq!(first.push(&snapshot(9, vec![cfg])).await, 200);
    assert_eq!(jwks_status(&first, &p.id).await.0, 200);
    first.stop().await;

    let second = Started::spawn(admin_down(dir.path(), "two.redb")).await;
    let (status, body) = jwks_status(&second, &p.id).await;
    assert_eq!(status, 200, "served from the persisted snapshot: {body}");
    assert_eq!(
        second.metric("qyzar_config_version").await,
        "9",
        "the newest applied version was persisted"
    );
    // Versions only move forward from there.
    let (_, cfg) = project(SETTINGS, false);
    assert_eq!(second.push(&snapshot(8, vec![cfg])).await, 409);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_truncated_snapshot_file_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (p, cfg) = project(SETTINGS, false);
    let good = encode_snapshot(&snapshot(4, vec![cfg])).unwrap();
    let path = dir.path().join("engine-snapshot.qzs");
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    for (what, bytes) in [
        ("flipped", flipped),
        ("truncated", good[..good.len() - 9].to_vec()),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let engine = Started::spawn(admin_down(dir.path(), &format!("{what}.redb"))).await;
        let (status, body) = jwks_status(&engine, &p.id).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (503, json!("not_configured")),
            "a {what} file is refused"
        );
        // The next applied snapshot replaces it.
        let (_, cfg) = project(SETTINGS, false);
        assert_eq!(engine.push(&snapshot(2, vec![cfg])).await, 200);
        engine.stop().await;
        assert!(qyzar_shared::snapshot::decode_snapshot(&std::fs::read(&path).unwrap()).is_ok());
    }
}

/// Forwards every connection on `listener` to `target`.
async fn forward(listener: tokio::net::TcpListener, target: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_starts_while_cql_is_down_and_connects_when_it_appears() {
    let Some(node) = qyzar_shared::testing::backend("QYZAR_TEST_CQL_NODE", "start without CQL")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (p, cfg) = project(SETTINGS, false);
    // Configuration is on disk; the CQL contact point is a closed port.
    let path = dir.path().join("engine-snapshot.qzs");
    std::fs::write(&path, encode_snapshot(&snapshot(3, vec![cfg])).unwrap()).unwrap();
    let port = closed_port();
    let mut cql = qyzar_store::ScyllaConfig::new(
        vec![format!("127.0.0.1:{port}")],
        qyzar_shared::testing::unique_name("qz_eng_"),
    );
    cql.replication_factor = 1;
    cql.write_consistency = qyzar_store::Consistency::One;
    cql.read_consistency = qyzar_store::Consistency::One;
    cql.request_timeout = Duration::from_secs(10);
    cql.connect_timeout = Duration::from_secs(2);
    let mut config = admin_down(dir.path(), "unused.redb");
    config.store = StoreChoice::Scylla(cql);
    let engine = Started::spawn(config).await;

    assert_eq!(engine.metric("qyzar_store_ready").await, "0");
    assert_eq!(
        jwks_status(&engine, &p.id).await.0,
        200,
        "config-only routes answer"
    );
    let unknown = qyzar_shared::ids::SessionId::generate().to_string();
    let verify = || async {
        let body =
            json!({"projectId": p.id, "sessionId": unknown, "sessionToken": "st_x"}).to_string();
        request(
            "POST",
            &engine.url("/projects/client/session-verify"),
            &[("x-qyzar-project-secret", &p.secret)],
            Some(&body),
        )
        .await
    };
    let r = verify().await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (503, json!("store_unavailable")),
        "an unknown session is not called invalid while the store is unreachable"
    );
    let connect = request(
        "POST",
        &engine.url("/connect"),
        &[("origin", ORIGIN)],
        Some(
            &json!({"projectId": p.id, "originToken": p.origin_token, "entropy": entropy()})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(
        connect.body["error"]["code"], "store_unavailable",
        "{:?}",
        connect.body
    );

    // The cluster "comes back" on the configured address.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let proxy = tokio::spawn(forward(listener, node));
    let mut ready = false;
    for _ in 0..240 {
        if engine.metric("qyzar_store_ready").await == "1" {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ready, "the store connected in the background");
    let r = verify().await;
    assert_ne!(r.status, 503, "the store answers now: {:?}", r.body);
    let connect = request(
        "POST",
        &engine.url("/connect"),
        &[("origin", ORIGIN)],
        Some(
            &json!({"projectId": p.id, "originToken": p.origin_token, "entropy": entropy()})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(connect.status, 201, "{:?}", connect.body);
    engine.stop().await;
    proxy.abort();
}
