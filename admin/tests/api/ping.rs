//! `GET /ping` on a running admin.

use crate::helpers::{request, Backend, TestApp};

#[tokio::test]
async fn ping_answers_ok_when_the_database_answers() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite is always available");
    let r = request("GET", &app.url("/ping"), &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["ok"], true);
    assert_eq!(r.body["service"], "admin");

    // With the database gone, ping must say so instead of claiming health.
    app.state.db.pool().close().await;
    let r = request("GET", &app.url("/ping"), &[], None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"]["code"], "store_unavailable");
    app.stop().await;
}
