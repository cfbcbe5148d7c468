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
            qyzar_shared::store::EmbeddedStore::open(dir.path().join("engine.redb")).unwrap(),
        );
        Self::spawn_with(store, dir).await
    }

    /// An engine over `store`.
    pub async fn spawn_with(
        store: std::sync::Arc<dyn qyzar_shared::store::DataStore>,
        dir: tempfile::TempDir,
    ) -> Self {
        let engine = qyzar_engine::Engine::new(store, Default::default());
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
