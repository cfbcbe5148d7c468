//! Starting an engine for a test on a random port, and a small HTTP client.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A running engine; stops and drains when dropped or on [`TestEngine::stop`].
pub struct TestEngine {
    pub addr: SocketAddr,
    pub engine: std::sync::Arc<qyzar_engine::Engine>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestEngine {
    /// An engine over a fresh embedded store.
    pub async fn spawn() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(
            qyzar_store::EmbeddedStore::open(dir.path().join("engine.redb")).unwrap(),
        );
        Self::spawn_with(store, dir).await
    }

    /// An engine over `store`.
    pub async fn spawn_with(
        store: std::sync::Arc<dyn qyzar_store::DataStore>,
        dir: tempfile::TempDir,
    ) -> Self {
        Self::spawn_with_options(store, dir, Default::default()).await
    }

    /// An engine over `store` with non-default state options (e.g. a GeoIP
    /// database).
    pub async fn spawn_with_options(
        store: std::sync::Arc<dyn qyzar_store::DataStore>,
        dir: tempfile::TempDir,
        options: qyzar_engine::StateOptions,
    ) -> Self {
        let engine = qyzar_engine::Engine::new(store, options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(qyzar_engine::run(
            listener,
            std::sync::Arc::clone(&engine),
            Default::default(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            engine,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Asks for shutdown and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// The answer to a test request.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: serde_json::Value,
}

/// Sends `method url` with an optional JSON body.
pub async fn send(method: &str, url: &str, body: Option<&str>) -> TestResponse {
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.unwrap_or("").to_owned())))
        .unwrap();
    let res = client.request(req).await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    TestResponse {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

/// Sends a request with extra headers and an optional raw body.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> TestResponse {
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    let mut has_ct = false;
    for (k, v) in headers {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        req = req.header(*k, *v);
    }
    if body.is_some() && !has_ct {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.unwrap_or("").to_owned())))
        .unwrap();
    let res = client.request(req).await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    TestResponse {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

/// Which data store a test engine runs on.
#[derive(Clone, Copy, Debug)]
pub enum Store {
    Embedded,
    Cql,
}

/// A store of the given kind, or `None` (with a printed skip line) when the
/// CQL server is not configured and not required.
pub async fn store(
    kind: Store,
) -> Option<(
    std::sync::Arc<dyn qyzar_store::DataStore>,
    tempfile::TempDir,
)> {
    let dir = tempfile::tempdir().unwrap();
    match kind {
        Store::Embedded => {
            let s = qyzar_store::EmbeddedStore::open(dir.path().join("engine.redb")).unwrap();
            Some((std::sync::Arc::new(s), dir))
        }
        Store::Cql => {
            let node =
                qyzar_shared::testing::backend("QYZAR_TEST_CQL_NODE", "engine routes on CQL")?;
            let mut cfg = qyzar_store::ScyllaConfig::new(
                vec![node],
                qyzar_shared::testing::unique_name("qz_eng_"),
            );
            cfg.replication_factor = 1;
            cfg.write_consistency = qyzar_store::Consistency::One;
            cfg.read_consistency = qyzar_store::Consistency::One;
            cfg.request_timeout = std::time::Duration::from_secs(10);
            let s = qyzar_store::ScyllaStore::connect(cfg)
                .await
                .expect("CQL server at QYZAR_TEST_CQL_NODE is reachable");
            Some((std::sync::Arc::new(s), dir))
        }
    }
}

/// A project as a test sees it: its id, secret and origin token.
pub struct TestProject {
    pub id: String,
    pub secret: String,
    pub origin_token: String,
}

pub const ORIGIN: &str = "https://shop.example";

/// Builds a project entry with the test origin allowed and an origin token.
pub fn project(
    settings_json: &str,
    eddsa: bool,
) -> (TestProject, qyzar_shared::snapshot::ProjectConfig) {
    use qyzar_shared::crypto::{random_token, Ed25519Signer, ProjectSecret};
    use qyzar_shared::ids::ProjectId;
    use qyzar_shared::snapshot::provision;
    let id = ProjectId::generate();
    let secret = ProjectSecret::generate();
    let settings =
        qyzar_shared::settings::ProjectSettings::parse_and_validate(settings_json.as_bytes())
            .expect("valid settings");
    let pk = eddsa.then(Ed25519Signer::generate_pkcs8);
    let mut cfg = provision::project_config(&id, &secret, settings, pk.as_deref()).unwrap();
    let origin_token = random_token("qz_ot_", 24);
    cfg.origin_tokens.push(provision::origin_token(
        &origin_token,
        ORIGIN,
        qyzar_shared::time::now_ms() + 3_600_000,
    ));
    (
        TestProject {
            id: id.to_string(),
            secret: secret.expose().to_owned(),
            origin_token,
        },
        cfg,
    )
}

/// Default test settings: the test origin allowed, tight limits.
pub const SETTINGS: &str = r#"{"allowedOrigins":["https://shop.example"],
  "rateLimit":{"ip":{"limit":5,"windowSeconds":60},"metadata":{"email":{"limit":3,"windowSeconds":300},"userId":{"limit":10,"windowSeconds":60}},"analyticsOnDeny":true},
  "ato":{"challengeScore":40,"blockScore":85,"failedAttemptsWindowSeconds":900}}"#;

/// Installs a snapshot with `projects` at `version`.
pub fn install(
    engine: &qyzar_engine::Engine,
    version: u64,
    projects: Vec<qyzar_shared::snapshot::ProjectConfig>,
) {
    let snap =
        qyzar_shared::snapshot::Snapshot::new(version, qyzar_shared::time::now_ms(), projects)
            .unwrap();
    engine
        .config
        .swap_full(snap, qyzar_shared::time::now_ms())
        .unwrap();
}

/// A realistic Chrome-on-Windows entropy document.
pub fn entropy() -> serde_json::Value {
    serde_json::json!({
        "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "languages": ["en-US", "en"], "timezone": "Europe/Paris",
        "screen": {"width": 1920, "height": 1080, "colorDepth": 24, "pixelRatio": 1},
        "hardwareConcurrency": 8, "deviceMemory": 8, "platform": "Win32",
        "canvasHash": "a1b2c3d4", "webglVendor": "Google Inc. (NVIDIA)", "webglRenderer": "ANGLE (NVIDIA GeForce RTX 3060)",
        "audioHash": "124.04347", "fonts": ["Arial", "Calibri", "Segoe UI"], "touchPoints": 0, "webdriver": false, "cookiesEnabled": true
    })
}
