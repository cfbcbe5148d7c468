//! Configuration push and pull against real engines started in-process:
//! a settings change reaches a running engine's decisions within a second,
//! an engine started later gets the snapshot by pulling, an engine that is
//! down during a change gets it by retry, versions continue upward across
//! an admin restart, and `GET /internal/snapshot` guards and caches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{request, Backend, TestApp};
use crate::projects::{create_project, sign_up};

pub const PUSH_KEY: &str = "test-push-key-0123456789abcdef";

/// An engine with its public and internal listeners on random ports.
pub struct TestEngine {
    pub engine: Arc<qyzar_engine::Engine>,
    pub public: SocketAddr,
    pub internal: SocketAddr,
    _dir: tempfile::TempDir,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl TestEngine {
    /// An engine over a fresh embedded store, accepting pushes with [`PUSH_KEY`].
    pub async fn spawn() -> Self {
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::spawn_on(internal).await
    }

    /// Like [`TestEngine::spawn`], with the internal listener given.
    pub async fn spawn_on(internal: tokio::net::TcpListener) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(qyzar_store::EmbeddedStore::open(dir.path().join("engine.redb")).unwrap());
        // Loopback is trusted as a proxy, as under `qyzar dev`, so the
        // tests' region header counts.
        let options = qyzar_engine::StateOptions {
            trusted_proxies: qyzar_engine::client_addr::TrustedProxies::loopback(),
            ..Default::default()
        };
        let engine = qyzar_engine::Engine::new(store, options);
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (public_addr, internal_addr) =
            (public.local_addr().unwrap(), internal.local_addr().unwrap());
        let (stop_public, stopped_public) = tokio::sync::oneshot::channel::<()>();
        let (stop_internal, stopped_internal) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(qyzar_engine::run(
            public,
            Arc::clone(&engine),
            Default::default(),
            async {
                let _ = stopped_public.await;
            },
        ));
        // As `qyzar engine` holds it when it advertises its URL: the plain
        // push key (static `engine_urls`) and the one bound to its URL
        // (what admin sends engines registered by heartbeat).
        let key = qyzar_shared::control::ChannelKey::new(
            PUSH_KEY,
            qyzar_shared::control::Direction::Push,
        )
        .also_accepting(&qyzar_shared::control::bound_push_key(
            PUSH_KEY,
            &format!("http://{internal_addr}"),
        ));
        tokio::spawn(qyzar_engine::internal::serve_internal_with(
            internal,
            Arc::clone(&engine),
            Some(key),
            None,
            async {
                let _ = stopped_internal.await;
            },
        ));
        Self {
            engine,
            public: public_addr,
            internal: internal_addr,
            _dir: dir,
            stop: vec![stop_public, stop_internal],
        }
    }

    /// Starts pulling from `admin` every `every` (the engine's own loop).
    pub fn pull_from(&mut self, admin: &TestApp, every: Duration) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(qyzar_engine::internal::pull_loop(
            Arc::clone(&self.engine),
            format!("http://{}", admin.addr),
            Some(PUSH_KEY.to_owned()),
            every,
            async {
                let _ = stopped.await;
            },
        ));
        self.stop.push(stop);
    }

    /// Starts reporting verification traffic to `admin` every `every` (the
    /// engine's own loop); stopped with the engine, after a last report.
    pub fn report_to(&mut self, admin: &TestApp, every: Duration) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(qyzar_engine::traffic::report_loop(
            Arc::clone(&self.engine.traffic),
            format!("http://{}", admin.addr),
            Some(PUSH_KEY.to_owned()),
            every,
            async {
                let _ = stopped.await;
            },
        ));
        self.stop.push(stop);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }

    pub fn internal_url(&self) -> String {
        format!("http://{}", self.internal)
    }

    /// `POST /projects/client/rate-limit-check` with `secret`.
    pub async fn rate_limit_check(
        &self,
        project: &str,
        secret: &str,
        dry_run: bool,
    ) -> crate::helpers::TestResponse {
        let body =
            json!({"projectId": project, "ip": "203.0.113.7", "dryRun": dry_run}).to_string();
        request(
            "POST",
            &self.url("/projects/client/rate-limit-check"),
            &[("x-qyzar-project-secret", secret)],
            Some(&body),
        )
        .await
    }

    /// Stops `stop`'s task with the engine.
    pub fn keep(&mut self, stop: tokio::sync::oneshot::Sender<()>) {
        self.stop.push(stop);
    }

    pub fn stop(self) {
        for s in self.stop {
            let _ = s.send(());
        }
    }
}

/// An admin pushing to `engines`, with the push key and the first engine's
/// public URL for dry-run checks.
pub async fn admin_for(
    backend: Backend,
    engines: &[String],
    public: Option<String>,
) -> Option<TestApp> {
    let engines = engines.to_vec();
    TestApp::spawn_with(backend, move |c| {
        c.engine_urls = engines;
        c.push_key = Some(PUSH_KEY.to_owned());
        c.engine_public_url = public;
    })
    .await
}

/// Polls `check` every 20 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `limit` a running engine decides with for `project` (dry run).
async fn engine_limit(engine: &TestEngine, project: &str, secret: &str) -> Option<u64> {
    let r = engine.rate_limit_check(project, secret, true).await;
    (r.status == 200)
        .then(|| r.body["limit"].as_u64())
        .flatten()
}

async fn set_ip_limit(app: &TestApp, token: &str, project: &str, limit: u32) {
    let body = json!({"projectId": project, "settings": {"rateLimit": {"ip": {"limit": limit}}}})
        .to_string();
    let r = request(
        "PATCH",
        &app.url("/projects/settings"),
        &[("authorization", &format!("Bearer {token}"))],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["rateLimit"]["ip"]["limit"], limit);
}

async fn changes_reach_engines(backend: Backend) {
    let running = TestEngine::spawn().await;
    let Some(app) = admin_for(backend, &[running.internal_url()], None).await else {
        running.stop();
        return;
    };
    let user = sign_up(&app, "pusher@example.com").await;
    let project = create_project(&app, &user.token, "Pushed").await;
    let (id, secret) = (
        project["projectId"].as_str().unwrap().to_owned(),
        project["secret"].as_str().unwrap().to_owned(),
    );

    // The new project reaches the running engine by push.
    assert!(
        eventually(Duration::from_secs(1), || async {
            engine_limit(&running, &id, &secret).await == Some(60)
        })
        .await,
        "the created project with default limits reached the engine within a second"
    );
    // A rate-limit change is the engine's next decision within a second.
    set_ip_limit(&app, &user.token, &id, 7).await;
    assert!(
        eventually(Duration::from_secs(1), || async {
            engine_limit(&running, &id, &secret).await == Some(7)
        })
        .await,
        "the new limit decides at the engine within a second"
    );
    // And the next one, as a delta on the version the engine holds.
    set_ip_limit(&app, &user.token, &id, 3).await;
    assert!(
        eventually(Duration::from_secs(1), || async {
            engine_limit(&running, &id, &secret).await == Some(3)
        })
        .await
    );
    let version = app.state.pusher.version();
    assert!(
        eventually(Duration::from_secs(1), || async {
            running.engine.config.version() == version
        })
        .await
    );
    // The version shows in the project detail.
    let r = request(
        "GET",
        &app.url(&format!("/projects/detail?projectId={id}")),
        &[("authorization", &format!("Bearer {}", user.token))],
        None,
    )
    .await;
    assert_eq!(r.body["configVersion"], version);

    // An engine started after the change gets it at start, by pulling.
    let mut late = TestEngine::spawn().await;
    assert_eq!(late.engine.config.version(), 0);
    late.pull_from(&app, Duration::from_secs(30));
    assert!(
        eventually(Duration::from_secs(2), || async {
            late.engine.config.version() == version
        })
        .await,
        "the late engine pulled version {version}"
    );
    assert_eq!(engine_limit(&late, &id, &secret).await, Some(3));

    // A deleted project stops being accepted.
    let r = request(
        "DELETE",
        &app.url(&format!("/projects?projectId={id}")),
        &[("authorization", &format!("Bearer {}", user.token))],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(
        eventually(Duration::from_secs(1), || async {
            running.rate_limit_check(&id, &secret, true).await.status == 404
        })
        .await,
        "the deleted project is gone from the engine"
    );
    running.stop();
    late.stop();
    app.stop().await;
}

#[tokio::test]
async fn changes_reach_engines_on_sqlite() {
    changes_reach_engines(Backend::Sqlite).await;
}

#[tokio::test]
async fn changes_reach_engines_on_postgres() {
    changes_reach_engines(Backend::Postgres).await;
}

#[tokio::test]
async fn an_engine_that_was_down_gets_the_change_by_retry() {
    // Reserve a port, free it, and point admin at it: pushes are refused
    // until the engine comes up there.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let app = admin_for(Backend::Sqlite, &[format!("http://{addr}")], None)
        .await
        .unwrap();
    let user = sign_up(&app, "retry@example.com").await;
    let project = create_project(&app, &user.token, "Retried").await;
    let id = project["projectId"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let engine = TestEngine::spawn_on(tokio::net::TcpListener::bind(addr).await.unwrap()).await;
    let version = app.state.pusher.version();
    // Backoff starts at 200 ms and doubles; a few seconds cover the retries.
    assert!(
        eventually(Duration::from_secs(5), || async {
            engine.engine.config.version() == version
        })
        .await,
        "the engine got version {version} by retry"
    );
    assert!(engine
        .engine
        .config
        .current(qyzar_shared::time::now_ms())
        .unwrap()
        .project(&id)
        .is_some());
    engine.stop();
    app.stop().await;
}

#[tokio::test]
async fn versions_continue_upward_across_a_restart() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let first = app
        .state
        .pusher
        .rebuild(&app.state.db, &app.state.secrets)
        .await
        .unwrap()
        .version;
    // A new pusher over the same database is what a restarted admin has.
    let restarted = qyzar_admin::push::Pusher::new(&[], None);
    assert_eq!(restarted.version(), 0);
    let second = restarted
        .rebuild(&app.state.db, &app.state.secrets)
        .await
        .unwrap()
        .version;
    assert!(second > first, "{second} > {first}");
    app.stop().await;
}

#[tokio::test]
async fn internal_snapshot_needs_the_key_and_answers_304_when_current() {
    let app = admin_for(Backend::Sqlite, &[], None).await.unwrap();
    let url = app.url("/internal/snapshot");
    let r = request("GET", &url, &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "missing_credentials");
    let r = request("GET", &url, &[("authorization", "Bearer wrong-key")], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "invalid_credentials");

    let auth = format!("Bearer {PUSH_KEY}");
    let (status, headers, body) = raw_get(&url, &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let snapshot = qyzar_shared::snapshot::decode_snapshot(&body).expect("a valid snapshot");
    assert_eq!(etag, format!("\"{}\"", snapshot.version()));
    // The same version, or a newer one, is "not modified".
    let (status, _, body) =
        raw_get(&url, &[("authorization", &auth), ("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    let newer = format!("\"{}\"", snapshot.version() + 5);
    assert_eq!(
        raw_get(&url, &[("authorization", &auth), ("if-none-match", &newer)])
            .await
            .0,
        304
    );
    // An older one gets the snapshot.
    assert_eq!(
        raw_get(
            &url,
            &[("authorization", &auth), ("if-none-match", "\"0\"")]
        )
        .await
        .0,
        200
    );
    app.stop().await;

    // Without a configured key nobody may pull.
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let r = request(
        "GET",
        &app.url("/internal/snapshot"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    app.stop().await;
}

/// A GET answering raw bytes (the snapshot is not JSON).
pub async fn raw_get(url: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, bytes::Bytes) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::new(bytes::Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (
        status,
        headers,
        res.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// The project `id` in the newest snapshot admin built.
pub fn snapshot_project(app: &TestApp, id: &str) -> Option<qyzar_shared::snapshot::ProjectConfig> {
    app.state.pusher.latest()?.snapshot.project(id).cloned()
}
