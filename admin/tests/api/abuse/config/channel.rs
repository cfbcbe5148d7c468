//! Abuse cases: the internal channel seen from admin. Pushes go over TLS
//! only to an engine presenting the pinned certificate; the admin → engine
//! key opens nothing on admin; short or shared keys stop admin at start.

use std::sync::Arc;
use std::time::Duration;

use crate::helpers::{request, Backend, TestApp};
use crate::projects::{create_project, id_of, sign_up};
use crate::push::eventually;

/// An engine → admin key, distinct from [`STRONG_PUSH_KEY`], both ≥ 32 bytes.
const REPORT_KEY: &str = "report-key-0123456789abcdef01234567";
const STRONG_PUSH_KEY: &str = "push-key-0123456789abcdef0123456789";

/// A certificate for 127.0.0.1: (server configuration, certificate DER).
fn identity() -> (Arc<rustls::ServerConfig>, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let config = qyzar_shared::control::channel::server_config_from_pem(
        ck.cert.pem().as_bytes(),
        ck.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    (config, ck.cert.der().to_vec())
}

/// An engine whose internal listener speaks TLS only; answers the engine,
/// its `https://` base URL and the certificate's DER.
async fn tls_engine() -> (
    Arc<qyzar_engine::Engine>,
    String,
    Vec<u8>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(qyzar_store::EmbeddedStore::open(dir.path().join("engine.redb")).unwrap());
    let engine = qyzar_engine::Engine::new(store, Default::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (tls, der) = identity();
    tokio::spawn(qyzar_engine::internal::serve_internal(
        listener,
        Arc::clone(&engine),
        Some(STRONG_PUSH_KEY.to_owned()),
        Some(tls),
        std::future::pending(),
    ));
    (engine, url, der, dir)
}

#[tokio::test]
async fn admin_pushes_over_tls_only_to_the_pinned_engine() {
    let (pinned, pinned_url, pinned_der, _d1) = tls_engine().await;
    let (impostor, impostor_url, _, _d2) = tls_engine().await;
    let app = TestApp::spawn_with(Backend::Sqlite, move |c| {
        c.engine_urls = vec![pinned_url, impostor_url];
        c.push_key = Some(STRONG_PUSH_KEY.to_owned());
        c.report_key = Some(REPORT_KEY.to_owned());
        c.engine_tls = qyzar_shared::control::channel::Trust::Pins(vec![
            qyzar_shared::control::channel::pin_of(&pinned_der),
        ]);
    })
    .await
    .unwrap();
    let ann = sign_up(&app, "ann@example.com").await;
    let p = create_project(&app, &ann.token, "Over TLS").await;
    let version = app.state.pusher.version();
    assert!(
        eventually(Duration::from_secs(3), || async {
            pinned.config.version() == version
        })
        .await,
        "the engine with the pinned certificate got the snapshot over TLS"
    );
    assert!(pinned
        .config
        .current(qyzar_shared::time::now_ms())
        .unwrap()
        .project(&id_of(&p))
        .is_some());
    assert_eq!(
        impostor.config.version(),
        0,
        "an engine with another certificate gets nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn each_direction_has_its_own_key() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.push_key = Some(STRONG_PUSH_KEY.to_owned());
        c.report_key = Some(REPORT_KEY.to_owned());
    })
    .await
    .unwrap();
    let snapshot = app.url("/internal/snapshot");
    let traffic = app.url("/internal/traffic");
    let bearer = |k: &str| format!("Bearer {k}");
    // The admin → engine key opens nothing on admin.
    let r = request(
        "GET",
        &snapshot,
        &[("authorization", &bearer(STRONG_PUSH_KEY))],
        None,
    )
    .await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    let r = request(
        "POST",
        &traffic,
        &[("authorization", &bearer(STRONG_PUSH_KEY))],
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    // The engine → admin key does.
    let r = request(
        "GET",
        &snapshot,
        &[("authorization", &bearer(REPORT_KEY))],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    app.stop().await;

    // Short or shared keys stop admin at start, naming the variable only.
    let dir = tempfile::tempdir().unwrap();
    for (push, report, why) in [
        (Some("short"), None, "at least 32 bytes"),
        (Some(STRONG_PUSH_KEY), Some("short"), "at least 32 bytes"),
        (Some(STRONG_PUSH_KEY), Some(STRONG_PUSH_KEY), "must differ"),
    ] {
        let mut config = qyzar_admin::config::AdminConfig::local(
            dir.path(),
            format!("sqlite:{}?mode=rwc", dir.path().join("a.sqlite").display()),
        );
        config.push_key = push.map(str::to_owned);
        config.report_key = report.map(str::to_owned);
        let err = qyzar_admin::config::start(config, async {})
            .await
            .expect_err("admin must not start")
            .to_string();
        assert!(err.contains(why), "{err}");
        assert!(!err.contains(STRONG_PUSH_KEY), "{err}");
    }
}
