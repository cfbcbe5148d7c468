//! [`RawConn`] against hyper's client: the requests a hyper server reads,
//! and the answers parsed from the same bytes.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::RawConn;
use crate::plan::{Entry, Plan, Target, Variant};

/// What a server read: method, target, headers (sorted), body.
type Seen = (String, String, Vec<(String, String)>, Vec<u8>);

/// A hyper server that reports every request it reads and answers 200.
async fn recording_server() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes().to_vec();
                        let mut headers: Vec<(String, String)> = parts
                            .headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                            .collect();
                        headers.sort();
                        let _ = tx.send((
                            parts.method.to_string(),
                            parts.uri.to_string(),
                            headers,
                            body,
                        ));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

fn plan(addr: SocketAddr) -> Plan {
    let mut shared = HeaderMap::new();
    shared.insert("x-shared", HeaderValue::from_static("1"));
    shared.insert("authorization", HeaderValue::from_static("Bearer shared"));
    shared.insert("content-type", HeaderValue::from_static("application/json"));
    let variants = (0..2)
        .map(|k| Variant {
            body: Bytes::from(format!("{{\"n\":{k}}}")),
            headers: vec![(
                HeaderName::from_static("authorization"),
                HeaderValue::from_str(&format!("Bearer variant-{k}")).unwrap(),
            )],
        })
        .collect();
    let entries = vec![
        Entry::new(
            1,
            Method::POST,
            "/post?x=1",
            Bytes::from_static(b"{\"a\":1}"),
        )
        .unwrap(),
        Entry::new(1, Method::GET, "/get", Bytes::new()).unwrap(),
        Entry::new(1, Method::POST, "/empty-post", Bytes::new()).unwrap(),
        Entry::new(1, Method::DELETE, "/delete", Bytes::new()).unwrap(),
        Entry::with_variants("variants", Method::POST, "/v", variants).unwrap(),
    ];
    Plan::new(
        Target::parse(&format!("http://{addr}")).unwrap(),
        entries,
        shared,
    )
    .unwrap()
}

/// A hyper server reads the same request from [`Plan::write_request`]
/// through [`RawConn`] as from [`Plan::request_n`] through hyper's client,
/// for bodies, empty bodies on each kind of method, and variants whose
/// headers replace shared ones.
#[tokio::test]
async fn a_hyper_server_reads_the_same_request_from_both_clients() {
    let (addr, mut seen) = recording_server().await;
    let plan = plan(addr);
    let mut raw = RawConn::connect(addr).await.unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..plan.entries.len() {
        for n in 0..2 {
            let mut body = Vec::new();
            let answer = raw.send(&plan, i, n, Some(&mut body)).await.unwrap();
            assert_eq!((answer.status, answer.keep_alive), (200, true));
            assert_eq!(body, b"ok");
            let from_raw = seen.recv().await.unwrap();
            sender.ready().await.unwrap();
            let res = sender.send_request(plan.request_n(i, n)).await.unwrap();
            res.into_body().collect().await.unwrap();
            let from_hyper = seen.recv().await.unwrap();
            assert_eq!(from_raw, from_hyper, "entry {i}, request {n}");
        }
    }
}

/// Serves `answers` in order, one per request read, on one connection
/// (each request is read up to its blank line and `content-length` body).
async fn canned_server(answers: Vec<&'static [u8]>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        for answer in answers {
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() >= end + 4 + len {
                        buf.drain(..end + 4 + len);
                        break;
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            s.write_all(answer).await.unwrap();
        }
        // An answer framed by the close ends here.
    });
    addr
}

/// A [`canned_server`] for `answers`, a plan of `GET /` and `HEAD /`
/// against it, and a [`RawConn`] to it.
async fn canned(answers: Vec<&'static [u8]>) -> (Plan, RawConn) {
    let addr = canned_server(answers).await;
    let entries = vec![
        Entry::new(1, Method::GET, "/", Bytes::new()).unwrap(),
        Entry::new(1, Method::HEAD, "/", Bytes::new()).unwrap(),
    ];
    let target = Target::parse(&format!("http://{addr}")).unwrap();
    let plan = Plan::new(target, entries, HeaderMap::new()).unwrap();
    (plan, RawConn::connect(addr).await.unwrap())
}

/// What hyper's client makes of `answer`: status and body.
async fn hyper_reads(answer: &'static [u8], method: Method) -> (u16, Vec<u8>) {
    let addr = canned_server(vec![answer]).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri("/")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

/// Answers whose framing a parser can get wrong, each read as hyper reads
/// it, then the next answer on the same connection when it stays open.
#[tokio::test]
async fn answers_are_read_as_hyper_reads_them() {
    let cases: Vec<(&'static [u8], bool)> = vec![
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", true),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=1\r\nab\r\n3\r\ncde\r\n0\r\nx-trailer: 1\r\n\r\n",
            true,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", true),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok", true),
        (b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 4\r\n\r\ngone", false),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end", false),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold", false),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ncontent-length: 2\r\n\r\nnot two bytes",
            false,
        ),
    ];
    let next: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext";
    for (answer, keep_alive) in cases {
        let expected = hyper_reads(answer, Method::GET).await;
        // A closing answer is the server's last: it then closes.
        let answers = if keep_alive {
            vec![answer, next]
        } else {
            vec![answer]
        };
        let (plan, mut raw) = canned(answers).await;
        let mut body = Vec::new();
        let got = raw.send(&plan, 0, 0, Some(&mut body)).await.unwrap();
        let case = String::from_utf8_lossy(answer);
        assert_eq!((got.status, body), expected, "{case}");
        assert_eq!(got.keep_alive, keep_alive, "{case}");
        if keep_alive {
            let mut next = Vec::new();
            let got = raw.send(&plan, 0, 1, Some(&mut next)).await.unwrap();
            assert_eq!(
                (got.status, next.as_slice()),
                (200, &b"next"[..]),
                "after {case}"
            );
        }
    }
    // A HEAD answer's content-length announces a body that never comes.
    let answer: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n";
    let expected = hyper_reads(answer, Method::HEAD).await;
    let (plan, mut raw) = canned(vec![answer, next]).await;
    let mut body = Vec::new();
    let got = raw.send(&plan, 1, 0, Some(&mut body)).await.unwrap();
    assert_eq!((got.status, body), expected);
    let mut body = Vec::new();
    let got = raw.send(&plan, 0, 1, Some(&mut body)).await.unwrap();
    assert_eq!(
        (got.status, got.keep_alive, body.as_slice()),
        (200, true, &b"next"[..])
    );
}

/// A body larger than the read buffer, in content-length and chunked form.
#[tokio::test]
async fn large_bodies_are_read_whole() {
    static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let big = BIG.get_or_init(|| {
        let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut a =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        a.extend_from_slice(&body);
        a.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
                body.len()
            )
            .as_bytes(),
        );
        a.extend_from_slice(&body);
        a.extend_from_slice(b"\r\n0\r\n\r\n");
        a
    });
    let split = big.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4 + 200_000;
    let (first, second) = big.split_at(split);
    let (plan, mut raw) = canned(vec![first, second]).await;
    for n in 0..2 {
        let mut body = Vec::new();
        let got = raw.send(&plan, 0, n, Some(&mut body)).await.unwrap();
        assert_eq!(
            (got.status, got.keep_alive, body.len()),
            (200, true, 200_000),
            "answer {n}"
        );
        assert!(body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == b'a' + (i % 26) as u8));
    }
}

/// Garbage or a connection closed mid-answer is an error, not a hang.
#[tokio::test]
async fn a_broken_answer_is_an_error() {
    for answer in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
    ] {
        let (plan, mut raw) = canned(vec![answer]).await;
        assert!(
            raw.send(&plan, 0, 0, None).await.is_err(),
            "{}",
            String::from_utf8_lossy(answer)
        );
    }
}

/// The load loop opens a new connection after an answer that closes its
/// own, and counts that answer by its status, not as a transport error.
#[tokio::test]
async fn the_load_loop_reconnects_after_a_closing_answer() {
    use std::sync::Arc;
    use std::time::Duration;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    let entries = vec![Entry::new(1, Method::GET, "/", Bytes::new()).unwrap()];
    let target = Target::parse(&format!("http://{addr}")).unwrap();
    let plan = Arc::new(Plan::new(target, entries, HeaderMap::new()).unwrap());
    let spec = crate::load::LoadSpec {
        label: "closing".into(),
        connections: 2,
        duration: Duration::from_millis(300),
        warmup: Duration::ZERO,
        pacing: crate::report::Pacing::Closed,
        progress: false,
        server_pid: None,
    };
    let report = crate::load::run(plan, &spec).await.unwrap();
    let ok = report.total.status.get("200").copied().unwrap_or(0);
    assert!(ok >= 10, "{:?}", report.total.status);
    assert_eq!(report.total.status.len(), 1, "{:?}", report.total.status);
}
