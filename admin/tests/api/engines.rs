//! Engines that announce themselves: admin learns the live set from their
//! heartbeats (no static list), pushes to each one, and an engine that
//! missed a push is told by the heartbeat's answer and pulls at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{request, Backend, TestApp};
use crate::projects::{create_project, sign_up};
use crate::push::{eventually, TestEngine, PUSH_KEY};

/// Starts `engine`'s heartbeat to `app` every 200 ms, advertising its
/// internal URL for pushes when `push` (else it is pull-only), and its pull
/// loop every `pull_every`.
fn beat(engine: &mut TestEngine, app: &TestApp, push: bool, pull_every: Duration) {
    let link = qyzar_engine::internal::AdminLink::new(
        format!("http://{}", app.addr),
        Some(PUSH_KEY.to_owned()),
    );
    let me = qyzar_engine::internal::Identity::random(push.then(|| engine.internal_url()));
    for task in [true, false] {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        if task {
            tokio::spawn(qyzar_engine::internal::heartbeat_loop(
                Arc::clone(&engine.engine),
                link.clone(),
                me.clone(),
                Duration::from_millis(200),
                stopped,
            ));
        } else {
            tokio::spawn(qyzar_engine::internal::pull_loop_with(
                Arc::clone(&engine.engine),
                link.clone(),
                pull_every,
                stopped,
            ));
        }
        engine.keep(stop);
    }
}

async fn admin(backend: Backend) -> Option<TestApp> {
    TestApp::spawn_with(backend, |c| {
        c.push_key = Some(PUSH_KEY.to_owned());
    })
    .await
}

#[tokio::test]
async fn a_change_reaches_five_registered_engines_and_a_pull_only_one_heals_by_heartbeat() {
    let Some(app) = admin(Backend::Sqlite).await else {
        return;
    };
    let user = sign_up(&app, "fleet@example.com").await;
    create_project(&app, &user.token, "First").await;
    let mut engines = Vec::new();
    for _ in 0..5 {
        let mut e = TestEngine::spawn().await;
        // Pulls only every hour: what reaches them fast is the push.
        beat(&mut e, &app, true, Duration::from_secs(3600));
        engines.push(e);
    }
    let version = app.state.pusher.version();
    let all_at = |v: u64| {
        let engines = &engines;
        move || async move { engines.iter().all(|e| e.engine.config.version() >= v) }
    };
    assert!(
        eventually(Duration::from_secs(10), all_at(version.max(1))).await,
        "every engine registered and got the snapshot"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            let rows = qyzar_admin::engines::list(&app.state.db).await.unwrap();
            rows.len() == 5 && rows.iter().all(|r| r.push_url.is_some())
        })
        .await,
        "all five registered with their push URLs"
    );
    // The reconciler picks them up within its next pass.
    tokio::time::sleep(qyzar_admin::engines::RECONCILE_EVERY * 2).await;

    // One change, timed to the moment the last of the five serves it.
    let started = Instant::now();
    let project = create_project(&app, &user.token, "Second").await;
    let version = app.state.pusher.version();
    assert!(project["projectId"].is_string());
    assert!(
        eventually(Duration::from_secs(10), all_at(version)).await,
        "the change reached all five engines"
    );
    println!(
        "config change reached 5 registered engines in {} ms (version {version})",
        started.elapsed().as_millis()
    );

    // A pull-only engine (admin cannot reach it) that pulls once an hour:
    // its heartbeat's answer names the newer version and it pulls at once.
    let mut lonely = TestEngine::spawn().await;
    beat(&mut lonely, &app, false, Duration::from_secs(3600));
    assert!(
        eventually(Duration::from_secs(10), || async {
            lonely.engine.config.version() >= version
        })
        .await,
        "the pull-only engine caught up through its heartbeat"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            let rows = qyzar_admin::engines::list(&app.state.db).await.unwrap();
            rows.len() == 6 && rows.iter().filter(|r| r.push_url.is_none()).count() == 1
        })
        .await
    );

    // An engine that stops beating is no longer live after three beats.
    let gone = engines.pop().unwrap();
    let gone_url = gone.internal_url();
    gone.stop();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let rows = qyzar_admin::engines::list(&app.state.db).await.unwrap();
    let targets = qyzar_admin::engines::push_targets(&rows, &[], qyzar_shared::time::now_ms());
    assert!(!targets.contains(&gone_url), "{targets:?}");
    assert_eq!(targets.len(), 4);
    for e in engines {
        e.stop();
    }
    lonely.stop();
}

#[tokio::test]
async fn heartbeats_are_checked_before_anything_is_recorded() {
    let Some(app) = admin(Backend::Sqlite).await else {
        return;
    };
    let url = app.url("/internal/engines");
    let auth = format!("Bearer {PUSH_KEY}");
    let good = json!({"engineId": "eng-1", "pushUrl": "http://127.0.0.1:9", "version": 0,
        "startedAtMs": 1, "heartbeatMs": 1000});
    let r = request("POST", &url, &[], Some(&good.to_string())).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "missing_credentials");
    let r = request(
        "POST",
        &url,
        &[("authorization", "Bearer wrong-key-0123456789abcdef0123")],
        Some(&good.to_string()),
    )
    .await;
    assert_eq!(r.status, 401);
    for (field, bad) in [
        ("engineId", json!({"engineId": "bad id!"})),
        ("engineId", json!({"engineId": "x".repeat(65)})),
        ("pushUrl", json!({"pushUrl": "ftp://127.0.0.1"})),
        ("pushUrl", json!({"pushUrl": "http://user:pw@127.0.0.1"})),
        ("heartbeatMs", json!({"heartbeatMs": 5})),
    ] {
        let mut body = good.clone();
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = request(
            "POST",
            &url,
            &[("authorization", &auth)],
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(r.status, 422, "{field}: {:?}", r.body);
        assert_eq!(r.body["error"]["field"], field);
    }
    let r = request(
        "POST",
        &url,
        &[("authorization", &auth)],
        Some("{\"engineId\":"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(qyzar_admin::engines::list(&app.state.db)
        .await
        .unwrap()
        .is_empty());

    let r = request(
        "POST",
        &url,
        &[("authorization", &auth)],
        Some(&good.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["newestVersion"].is_u64());
    let rows = qyzar_admin::engines::list(&app.state.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].push_url.as_deref(), Some("http://127.0.0.1:9"));
}

/// A URL registered by heartbeat (which takes only the report key) never
/// receives the plain push key: admin sends the push key bound to that URL,
/// which no other engine accepts. Here the "engine" is a bare listener that
/// records the `Authorization` of the push admin sends it.
#[tokio::test]
async fn a_registered_url_receives_a_key_bound_to_it_not_the_push_key() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(app) = admin(Backend::Sqlite).await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_url = format!("http://{}", listener.local_addr().unwrap());
    let capture = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the headers");
            head.extend_from_slice(&buf[..n]);
        }
        let _ = s
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        String::from_utf8_lossy(&head).into_owned()
    });
    // A build to push, and a heartbeat kept up so the URL stays live.
    let user = sign_up(&app, "capture@example.com").await;
    create_project(&app, &user.token, "Captured").await;
    let beat = json!({"engineId": "eng-capture", "pushUrl": push_url, "version": 0,
        "startedAtMs": 1, "heartbeatMs": 1000});
    let (url, body) = (app.url("/internal/engines"), beat.to_string());
    let beating = tokio::spawn(async move {
        loop {
            let r = request(
                "POST",
                &url,
                &[("authorization", &format!("Bearer {PUSH_KEY}"))],
                Some(&body),
            )
            .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let head = tokio::time::timeout(Duration::from_secs(20), capture)
        .await
        .expect("admin pushed to the registered URL")
        .unwrap();
    beating.abort();
    let auth = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_owned())
        })
        .expect("the push carries a key");
    assert!(
        !auth.contains(PUSH_KEY),
        "the plain push key went to a registered URL"
    );
    assert_eq!(
        auth,
        format!(
            "Bearer {}",
            qyzar_shared::control::bound_push_key(PUSH_KEY, &push_url)
        )
    );
}
