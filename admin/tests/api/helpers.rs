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

/// `GET url` → (status, JSON body).
pub async fn get(url: &str) -> (u16, serde_json::Value) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let res = client.get(url.parse().unwrap()).await.expect("request");
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}
