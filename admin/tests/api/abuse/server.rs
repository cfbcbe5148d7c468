//! Abuse cases: server. The admin's accept loop holds a slot only while a
//! client is doing something useful: a trickled body is cut off with `408
//! request_timeout`, a handler past its deadline answers `503
//! deadline_exceeded`, and the connection cap holds.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A bound on how long a test waits for something that must happen; the
/// deadlines under test are a second or two, so this only stops a hang.
const BOUND: Duration = Duration::from_secs(20);

async fn ping_answers(app: &TestApp) -> bool {
    tokio::time::timeout(BOUND, request("GET", &app.url("/ping"), &[], None))
        .await
        .is_ok_and(|r| r.status == 200)
}

/// Sends a sign-in's headers, then trickles its body one byte every 200 ms
/// (always progressing, never finishing in time), and returns what the
/// admin answered before closing the connection.
async fn trickled_answer(app: &TestApp) -> String {
    let body = r#"{"email":"ann@example.com","password":"correct horse battery staple"}"#;
    let head = format!(
        "POST /auth/signin HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let slow = TcpStream::connect(app.addr).await.unwrap();
    let (mut rd, mut wr) = slow.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        for b in body.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    // A reset after the answer is fine: what was read is kept.
    let read = tokio::time::timeout(BOUND, rd.read_to_end(&mut answer)).await;
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(read.is_ok(), "the connection was never closed: {answer:?}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_and_frees_its_slot() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.max_connections = 1;
        c.limits.body_read_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let answer = trickled_answer(&app).await;
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a trickled body is cut off: {answer:?}"
    );
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer:?}");
    assert!(ping_answers(&app).await, "the single slot is free again");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_gets_503_deadline_exceeded() {
    // The handler is kept busy by the body it waits for: the request
    // deadline, shorter here than the body's, fires first.
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.max_connections = 1;
        c.limits.body_read_timeout = Duration::from_secs(60);
        c.limits.request_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let answer = trickled_answer(&app).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(
        answer.contains(r#""code":"deadline_exceeded""#),
        "{answer:?}"
    );
    assert!(ping_answers(&app).await, "the slot is free again");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_the_cap_holds_until_then() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.max_connections = 1;
        c.limits.header_read_timeout = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    // The one slot: a connection that has sent nothing yet.
    let mut holder = TcpStream::connect(app.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = app.url("/ping");
    let mut waiting = tokio::spawn(async move { request("GET", &url, &[], None).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "a second connection is not served while the only slot is taken"
    );
    // The silent holder is dropped at the header deadline, and the waiting
    // client gets the slot.
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(BOUND, holder.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection is closed"
    );
    let r = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("served once the slot is free")
        .unwrap();
    assert_eq!(r.status, 200);
    app.stop().await;
}
