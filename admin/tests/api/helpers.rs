//! Starting an admin for a test: a fresh database, a random port.

use qyzar_admin::db::Db;
use qyzar_shared::testing;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database for one test; dropped (PostgreSQL) or deleted (SQLite
/// temp dir) when the guard goes.
pub struct TestDb {
    pub db: Db,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database on `backend`, or `None` when that backend is not
    /// configured (the skip line is printed by `testing::backend`).
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite:{}?mode=rwc",
                    dir.path().join("admin.sqlite").display()
                );
                let db = Db::connect(&url, 4)
                    .await
                    .expect("sqlite opens and migrates");
                Some(Self {
                    db,
                    _dir: Some(dir),
                    pg_admin: None,
                })
            }
            Backend::Postgres => {
                let url = testing::backend("QYZAR_TEST_PG_URL", "admin tests on PostgreSQL")?;
                let name = testing::unique_name("qz_t_");
                let admin = Db::connect(&url, 2)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at QYZAR_TEST_PG_URL unreachable: {e}"));
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(admin.pool())
                    .await
                    .expect("create test database");
                let (base, _) = url.rsplit_once('/').expect("url has a database path");
                let db = Db::connect(&format!("{base}/{name}"), 4)
                    .await
                    .expect("fresh database migrates");
                Some(Self {
                    db,
                    _dir: None,
                    pg_admin: Some((url, name)),
                })
            }
        }
    }

    /// Drops a PostgreSQL test database (best effort; names are unique anyway).
    pub async fn cleanup(self) {
        let Self { db, pg_admin, .. } = self;
        db.pool().close().await;
        if let Some((url, name)) = pg_admin {
            if let Ok(admin) = Db::connect(&url, 1).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(admin.pool())
                    .await;
            }
        }
    }
}

/// A running admin on a fresh database, on a random port.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub state: qyzar_admin::AppState,
    pub dir: tempfile::TempDir,
    db: Option<TestDb>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// An admin on `backend`, or `None` when that backend is not configured
    /// (the skip line is printed).
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Like [`TestApp::spawn`], adjusting the configuration first.
    pub async fn spawn_with(
        backend: Backend,
        adjust: impl FnOnce(&mut qyzar_admin::config::AdminConfig),
    ) -> Option<Self> {
        let t = TestDb::new(backend).await?;
        let dir = tempfile::tempdir().unwrap();
        let mut config = qyzar_admin::config::AdminConfig::local(dir.path(), String::new());
        adjust(&mut config);
        let key = qyzar_admin::config::master_key(&config).unwrap();
        let pusher = qyzar_admin::push::Pusher::from_config(&config).unwrap();
        let mailer = std::sync::Arc::new(qyzar_admin::mail::Mailer::from_config(&config).unwrap());
        let state = qyzar_admin::AppState {
            pusher,
            mailer,
            throttle: std::sync::Arc::new(qyzar_admin::throttle::Throttle::new()),
            billing: qyzar_admin::billing::Billing::from_config(&config).unwrap(),
            db: t.db.clone(),
            secrets: std::sync::Arc::new(qyzar_shared::crypto::SecretBox::new(&key)),
            config: std::sync::Arc::new(config),
            // The engines' data-plane store, as `qyzar dev` shares it: an
            // embedded store of this test's own.
            data: Some(std::sync::Arc::new(
                qyzar_store::EmbeddedStore::open(dir.path().join("data.redb")).unwrap(),
            )),
            clusters: qyzar_admin::clusters::Refresher::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(qyzar_admin::run(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Some(Self {
            addr,
            state,
            dir,
            db: Some(t),
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and drops the test database.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(db) = self.db.take() {
            db.cleanup().await;
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

/// Sends a request with headers and an optional raw body (JSON content
/// type unless a header says otherwise).
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> TestResponse {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
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
