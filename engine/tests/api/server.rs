//! The server itself: routing, fixed answers, the error shape, drain.

use crate::helpers::{send, TestEngine};

#[tokio::test]
async fn ping_answers_and_unknown_paths_and_methods_get_the_error_shape() {
    let engine = TestEngine::spawn().await;

    let r = send("GET", &engine.url("/ping"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["ok"], true);
    assert_eq!(r.body["service"], "engine");

    let r = send("POST", &engine.url("/ping"), Some("{}")).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, HEAD");
    assert_eq!(r.body["error"]["code"], "method_not_allowed");

    let r = send("GET", &engine.url("/nope"), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "route_not_found");
    assert!(r.body["error"]["message"].is_string());

    engine.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let engine = TestEngine::spawn().await;
    let addr = engine.addr;
    engine.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener must be closed after shutdown"
    );
}
