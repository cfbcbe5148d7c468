//! Abuse cases: edges. Slow clients must not keep connection slots (a
//! trickled body is cut off with `408`, an idle kept-alive connection is
//! closed, the cap holds), and a restart while admin or the store is down
//! still serves what it can (see `edges/restarts.rs`).

mod restarts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qyzar_engine::ServerLimits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A bound on how long a test waits for something that must happen; the
/// deadlines under test are a second or two, so this only stops a hang.
const BOUND: Duration = Duration::from_secs(20);

/// An engine over a fresh embedded store with `limits`, configured with
/// one project.
struct Limited {
    addr: SocketAddr,
    project: TestProject,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Limited {
    async fn spawn(limits: ServerLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(qyzar_store::EmbeddedStore::open(dir.path().join("engine.redb")).unwrap());
        let engine = qyzar_engine::Engine::new(store, Default::default());
        let (project, cfg) = project(SETTINGS, false);
        install(&engine, 1, vec![cfg]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(qyzar_engine::run(listener, engine, limits, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            project,
            _dir: dir,
            _stop: stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Reads from `stream` until the peer closes it (or [`BOUND`] passes).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the engine kept the connection open: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `/ping` from a fresh connection answers (bounded by [`BOUND`]).
async fn ping_answers(engine: &Limited) -> bool {
    tokio::time::timeout(BOUND, send("GET", &engine.url("/ping"), None))
        .await
        .is_ok_and(|r| r.status == 200)
}

/// Sends a token request's headers, then trickles its body one byte every
/// 200 ms (always progressing, never finishing in time), and returns what
/// the engine answered before closing the connection.
async fn trickled_answer(engine: &Limited) -> String {
    trickled(engine, false).await
}

/// [`trickled_answer`], the body sent `chunked` (one byte per chunk) when
/// `chunked`: such a request goes to hyper's path, where the route itself
/// waits for the body under the handler deadline.
async fn trickled(engine: &Limited, chunked: bool) -> String {
    let slow = TcpStream::connect(engine.addr).await.unwrap();
    let body = format!(
        r#"{{"projectId":"{}","sessionId":"ses_x"}}"#,
        engine.project.id
    );
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {}", body.len())
    };
    let head = format!(
        "POST /projects/client/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-qyzar-project-secret: {}\r\n{framing}\r\n\r\n",
        engine.project.secret,
    );
    let (mut rd, mut wr) = slow.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        for b in body.bytes() {
            let piece = if chunked {
                format!("1\r\n{}\r\n", b as char).into_bytes()
            } else {
                vec![b]
            };
            if wr.write_all(&piece).await.is_err() {
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
    let engine = Limited::spawn(ServerLimits {
        max_connections: 1,
        body_read_timeout: Duration::from_secs(1),
        handler_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let answer = trickled_answer(&engine).await;
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a trickled body is cut off: {answer:?}"
    );
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer:?}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"));
    assert!(
        ping_answers(&engine).await,
        "the single slot is free again for the next client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_handler_deadline_gets_503_deadline_exceeded() {
    // The handler is kept busy by the body it waits for: the handler
    // deadline, shorter here than the body's, fires first.
    let engine = Limited::spawn(ServerLimits {
        max_connections: 1,
        body_read_timeout: Duration::from_secs(60),
        handler_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    assert_deadline_exceeded(&trickled_answer(&engine).await);
    assert!(ping_answers(&engine).await, "the slot is free again");
}

/// The handler deadline's answer: 503 `deadline_exceeded`, `Retry-After: 1`,
/// and the connection closed.
fn assert_deadline_exceeded(answer: &str) {
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(
        answer.contains(r#""code":"deadline_exceeded""#),
        "{answer:?}"
    );
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{answer:?}");
    assert!(lower.contains("connection: close"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_still_waiting_at_the_handler_deadline_gets_503_on_hyper_s_path_too() {
    // Chunked: handed to hyper, where the token route waits for its body,
    // so the handler deadline is armed after the route's first poll.
    let engine = Limited::spawn(ServerLimits {
        max_connections: 1,
        body_read_timeout: Duration::from_secs(60),
        handler_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    assert_deadline_exceeded(&trickled(&engine, true).await);
    assert!(ping_answers(&engine).await, "the slot is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_and_frees_its_slot() {
    let engine = Limited::spawn(ServerLimits {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut idle = TcpStream::connect(engine.addr).await.unwrap();
    idle.write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // The answer, then nothing more: the client keeps the connection open.
    let rest = read_to_close(&mut idle).await;
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest:?}");
    assert!(
        ping_answers(&engine).await,
        "the idle connection's slot went to the next client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_until_a_slot_is_freed() {
    let engine = Limited::spawn(ServerLimits {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    // The one slot: a connection that has sent nothing yet.
    let holder = TcpStream::connect(engine.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = engine.url("/ping");
    let mut waiting = tokio::spawn(async move { send("GET", &url, None).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "a second connection is not served while the only slot is taken"
    );
    drop(holder);
    let r = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("served once the slot is free")
        .unwrap();
    assert_eq!(r.status, 200);
}
