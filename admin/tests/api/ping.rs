//! `GET /ping` on a running admin.

use crate::helpers::{Backend, TestDb};

#[tokio::test]
async fn ping_answers_ok_when_the_database_answers() {
    let t = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite is always available");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = qyzar_admin::AppState { db: t.db.clone() };
    let server = tokio::spawn(qyzar_admin::run(listener, state, async {
        let _ = stopped.await;
    }));

    let (status, body) = crate::helpers::get(&format!("http://{addr}/ping")).await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true);
    assert_eq!(body["service"], "admin");

    // With the database gone, ping must say so instead of claiming health.
    t.db.pool().close().await;
    let (status, body) = crate::helpers::get(&format!("http://{addr}/ping")).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "store_unavailable");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
