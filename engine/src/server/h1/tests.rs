//! The fast path against hyper: the same bytes sent to both, the same
//! request seen by the route and the same answers read by the client; what
//! it hands over; its deadlines and its stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use std::sync::atomic::Ordering;

/// What a route saw, as its answer: method, path, query, every header
/// field (by name, a name's values in order), the body; with a header and a
/// status of its own, so encoding is compared too. What the router reads
/// ([`Incoming`]), from the fast path's buffer or hyper's request.
async fn echo<B>(req: Incoming<'_, B>) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    let body = match req.body {
        RequestBody::Read(b) => Bytes::copy_from_slice(b),
        RequestBody::Stream(s) => s.collect().await.unwrap().to_bytes(),
    };
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    // hyper's map keeps a name's values together; the order of names is
    // not something a route can see.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let seen = serde_json::json!({
        "method": req.method.as_str(),
        "path": req.path,
        "query": req.query,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut res = Response::new(Full::new(Bytes::from(seen.to_string())));
    *res.status_mut() = match req.path {
        "/created" => StatusCode::CREATED,
        // As the CORS preflight answers: no content, whatever the body.
        "/none" => StatusCode::NO_CONTENT,
        _ => StatusCode::OK,
    };
    res.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    res.headers_mut().append("x-echo", "one".parse().unwrap());
    res.headers_mut().append("x-echo", "two".parse().unwrap());
    if req.path == "/bye" {
        res.headers_mut()
            .insert("connection", "close".parse().unwrap());
    }
    res
}

/// [`echo`] of a request hyper read, as the router reads one
/// (`router::route_timed`).
async fn echo_hyper<B>(req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = req.into_parts();
    echo(Incoming {
        method: parts.method.clone(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: crate::request::Headers::map(&parts.headers),
        body: RequestBody::Stream(body),
    })
    .await
}

/// The fast path's route in these tests: [`echo`].
struct Echo;

impl Route for Echo {
    async fn route<'a>(
        &'a self,
        req: Incoming<'a, NoBody>,
    ) -> (Response<Body>, crate::response::Timing) {
        let timing = crate::response::Timing {
            at: std::time::Instant::now(),
            total_micros: None,
        };
        (echo(req).await, timing)
    }
}

const DEADLINES: Deadlines = Deadlines {
    header: Duration::from_secs(10),
    body: Duration::from_secs(10),
    handler: Duration::from_secs(15),
};

/// A server on loopback: the fast path (handing over to hyper as the
/// engine does) when `fast`, hyper alone otherwise.
async fn spawn(fast: bool, deadlines: Deadlines, stop: Arc<Stop>) -> SocketAddr {
    spawn_counting(fast, deadlines, stop, Arc::default()).await
}

/// [`spawn`], counting the connections handed over to hyper in `handovers`.
async fn spawn_counting(
    fast: bool,
    deadlines: Deadlines,
    stop: Arc<Stop>,
    handovers: Arc<std::sync::atomic::AtomicUsize>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let stop = Arc::clone(&stop);
            let handovers = Arc::clone(&handovers);
            tokio::spawn(async move {
                let service = service_fn(|req| async move {
                    Ok::<_, std::convert::Infallible>(echo_hyper(req).await)
                });
                if !fast {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    return;
                }
                let late = |body_first: bool| {
                    let mut res = Response::new(Full::new(Bytes::from_static(b"late")));
                    *res.status_mut() = if body_first {
                        StatusCode::REQUEST_TIMEOUT
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    res
                };
                let end = serve(&mut stream, deadlines, &stop, &Echo, late).await;
                if let End::Handover(read) = end {
                    handovers.fetch_add(1, Ordering::SeqCst);
                    let io = TokioIo::new(Rewind::new(read, stream));
                    let _ = http1::Builder::new().serve_connection(io, service).await;
                }
            });
        }
    });
    addr
}

/// One answer as a client reads it: status, headers (sorted, `date`
/// left out, its presence kept), body.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// Sends `parts` (each its own write, 20 ms apart) and reads until the
/// server closes or 2 s pass; returns every answer and whether it closed.
async fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> (Vec<Answer>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if s.write_all(p).await.is_err() {
            break; // the server closed after an answer: read what it sent
        }
    }
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    (answers(&raw), closed)
}

fn answers(mut raw: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let mut h = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut h);
        let Ok(httparse::Status::Complete(len)) = res.parse(raw) else {
            // Not an answer where one should start: kept as it is (dates
            // masked), so the comparison shows it.
            let mut text = String::from_utf8_lossy(raw).into_owned();
            let mut from = 0;
            while let Some(i) = text[from..].find("date: ") {
                let at = from + i + "date: ".len();
                let end = (at + 29).min(text.len());
                text.replace_range(at..end, "<date>");
                from = at;
            }
            out.push(Answer {
                status: 0,
                headers: Vec::new(),
                body: text,
            });
            break;
        };
        let mut headers: Vec<(String, String)> = res
            .headers
            .iter()
            .map(|h| {
                let value = if h.name.eq_ignore_ascii_case("date") {
                    assert_eq!(h.value.len(), 29, "an IMF-fixdate");
                    "<date>".into()
                } else {
                    String::from_utf8_lossy(h.value).into_owned()
                };
                (h.name.to_ascii_lowercase(), value)
            })
            .collect();
        headers.sort();
        let n: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        // A `HEAD` answer declares a length it does not send.
        let end = (len + n).min(raw.len());
        out.push(Answer {
            status: res.code.unwrap(),
            headers,
            body: String::from_utf8_lossy(&raw[len..end]).into_owned(),
        });
        raw = &raw[end..];
    }
    out
}

/// The same exchange with both servers gives the same answers.
async fn same(parts: &[&[u8]]) -> Vec<Answer> {
    let fast = spawn(true, DEADLINES, Arc::default()).await;
    let hyper = spawn(false, DEADLINES, Arc::default()).await;
    let a = exchange(fast, parts).await;
    let b = exchange(hyper, parts).await;
    assert_eq!(a, b, "fast path and hyper differ for {parts:?}");
    a.0
}

#[tokio::test]
async fn the_route_sees_and_the_client_reads_what_hyper_gives() {
    let cases: &[&[&[u8]]] = &[
        &[b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"],
        &[b"POST /projects/client/session-verify?projectId=p&x=%20y HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 16\r\nAuthorization: Bearer sk_1\r\n\r\n{\"sessionId\":\"s\"}"],
        // Repeated fields keep their order; names are case-insensitive.
        &[b"GET / HTTP/1.1\r\nCookie: a=1\r\nX-Thing: 1\r\ncookie: b=2\r\nx-thing:2 \r\n\r\n"],
        // A body in several writes, and a head in two.
        &[b"POST /created HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234", b"56789"],
        &[b"POST /a HTTP/1.1\r\nConte", b"nt-Length: 2\r\n\r\nok"],
        // Pipelined: three requests in one write.
        &[b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\n\r\n"],
        // The client or the route closes.
        &[b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n"],
        &[b"GET /bye HTTP/1.1\r\n\r\nGET /never HTTP/1.1\r\n\r\n"],
        &[b"GET /x HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"],
        // A `204` in the middle of a keep-alive exchange: no length, no body.
        &[b"OPTIONS /none HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\nConnection: close\r\n\r\n"],
        // An absolute-form target, an empty body declared.
        &[b"GET http://example.com/abs?q=1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n"],
        // Handed over: chunked, `Expect`, `Upgrade`, HTTP/1.0, HEAD, a
        // duplicate or signed length, a parse error; after a fast request
        // on the same connection.
        &[b"GET /first HTTP/1.1\r\n\r\nPOST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"],
        &[b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", b"hi"],
        &[b"GET /u HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"],
        &[b"GET /old HTTP/1.0\r\n\r\n"],
        &[b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /again HTTP/1.1\r\n\r\n"],
        &[b"GET /first HTTP/1.1\r\n\r\nHEAD /h HTTP/1.1\r\n\r\n"],
        &[b"POST /d HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi"],
        &[b"POST /d HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi!"],
        &[b"POST /d HTTP/1.1\r\nContent-Length: +2\r\n\r\nhi"],
        &[b"GET /first HTTP/1.1\r\n\r\nGET /bad path HTTP/1.1\r\n\r\n"],
        &[b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"],
        &[b"BREW /pot HTTP/1.1\r\n\r\n"],
        // Targets: a fragment and bytes outside ASCII go to hyper; odd
        // ASCII, a second `?`, `//` and `*` are split as `Uri` splits them.
        &[b"GET /p?a=1#frag HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n"],
        &[b"GET /a{b}|\"^`[]?x=<>&y=?z HTTP/1.1\r\n\r\n"],
        &[b"GET //double?? HTTP/1.1\r\n\r\nGET /? HTTP/1.1\r\n\r\n"],
        &[b"GET /caf\xc3\xa9?q=\xc3\xa9 HTTP/1.1\r\n\r\n"],
        &[b"OPTIONS * HTTP/1.1\r\n\r\n"],
        // Field values with tabs and bytes that are not text.
        &[b"GET / HTTP/1.1\r\nX-A: a\tb\r\nX-B: caf\xc3\xa9\r\nx-a: \r\n\r\n"],
    ];
    for parts in cases {
        let got = same(parts).await;
        assert!(!got.is_empty(), "{parts:?} got an answer");
    }
}

#[tokio::test]
async fn simple_requests_stay_on_the_loop_and_the_others_go_to_hyper() {
    // Without this, every comparison with hyper would also pass if the loop
    // handed every connection over.
    let handovers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = spawn_counting(true, DEADLINES, Arc::default(), Arc::clone(&handovers)).await;
    let simple: &[&[u8]] = &[
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
        b"{}",
        b"GET /c HTTP/1.1\r\nConnection: close\r\n\r\n",
    ];
    let (got, closed) = exchange(addr, simple).await;
    assert!(closed);
    assert_eq!(got.len(), 3);
    assert_eq!(handovers.load(Ordering::SeqCst), 0, "served on the loop");
    let (got, _) = exchange(
        addr,
        &[b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"],
    )
    .await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        handovers.load(Ordering::SeqCst),
        1,
        "the chunked request went to hyper"
    );
}

#[tokio::test]
async fn a_request_the_route_would_not_take_keeps_the_bytes_after_it() {
    // The chunked request is handed over with the pipelined one behind it.
    let got = same(&[b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\nGET /3 HTTP/1.1\r\n\r\n"]).await;
    let paths: Vec<String> = got
        .iter()
        .map(|a| {
            serde_json::from_str::<serde_json::Value>(&a.body).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(paths, ["/1", "/2", "/3"]);
    let body: serde_json::Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(body["body"], "x");
}

#[test]
fn a_pipeline_that_always_ends_in_a_partial_request_does_not_grow_the_buffer() {
    // The loop's reads, simulated: the buffer fills, every whole request in
    // it is served, a partial one is left at its end, and more is needed.
    let mut buf = vec![0u8; READ_BUFFER];
    let mut end = READ_BUFFER;
    for round in 0..10_000 {
        let mut start = end - 100 - round % 1000;
        make_room(&mut buf, &mut start, &mut end);
        assert_eq!(start, 0);
        assert!(buf.len() <= READ_BUFFER, "round {round}: {}", buf.len());
        end = buf.len();
    }
}

#[test]
fn a_request_larger_than_the_buffer_grows_it_by_what_it_holds() {
    // A body arriving in full buffers: the unserved bytes are the request
    // so far, and the buffer stays within them plus one step.
    let mut buf = vec![0u8; READ_BUFFER];
    let (mut start, mut end) = (300, READ_BUFFER);
    while end < 80 * 1024 {
        make_room(&mut buf, &mut start, &mut end);
        assert_eq!(start, 0);
        assert!(buf.len() > end, "room for the next read");
        assert!(buf.len() <= end + READ_BUFFER);
        end = buf.len();
    }
}

#[test]
fn heads_are_taken_or_handed_over() {
    let mut h = Head::default();
    let mut take = |raw: &[u8]| match parse(raw, &mut h) {
        Parsed::Head => Some((h.len, h.body, h.close)),
        Parsed::Partial => None,
        Parsed::Other => panic!("handed over: {:?}", String::from_utf8_lossy(raw)),
    };
    let other = |raw: &[u8]| matches!(parse(raw, &mut Head::default()), Parsed::Other);
    assert_eq!(take(b"GET / HTTP/1.1\r\n\r\n"), Some((18, 0, false)));
    assert_eq!(take(b"GET / HTTP/1.1\r\nHost: x"), None);
    assert_eq!(take(b""), None);
    assert_eq!(
        take(b"POST / HTTP/1.1\r\ncontent-length: 65536\r\nconnection: close\r\n\r\n"),
        Some((61, 65536, true))
    );
    assert!(other(b"POST / HTTP/1.1\r\ncontent-length: 65537\r\n\r\n"));
    assert!(other(
        b"POST / HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n"
    ));
    assert!(other(b"POST / HTTP/1.1\r\ncontent-length: 1, 1\r\n\r\n"));
    assert!(other(b"POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n"));
    assert!(other(b"POST / HTTP/1.1\r\ncontent-length:\r\n\r\n"));
    assert!(other(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"));
    assert!(other(b"POST / HTTP/1.1\r\nexpect: 100-continue\r\n\r\n"));
    assert!(other(b"GET / HTTP/1.1\r\nupgrade: h2c\r\n\r\n"));
    assert!(other(
        b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n"
    ));
    assert!(other(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(other(b"HEAD / HTTP/1.1\r\n\r\n"));
    assert!(other(b"CONNECT x:443 HTTP/1.1\r\n\r\n"));
    assert!(other(b"GET / HTTP/1.1\r\nbad header: x\r\n\r\n"));
    let many: Vec<u8> = [&b"GET / HTTP/1.1\r\n"[..]]
        .into_iter()
        .chain(std::iter::repeat_n(&b"a: b\r\n"[..], MAX_HEADERS + 1))
        .chain([&b"\r\n"[..]])
        .flatten()
        .copied()
        .collect();
    assert!(other(&many), "more fields than the loop keeps");
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD));
    assert!(other(long.as_bytes()), "a head longer than the loop keeps");
}

/// Every target the loop takes is split into path and query as `Uri`
/// splits it: each byte in the path and in the query, alone and between
/// others.
#[test]
fn targets_split_as_uri_splits() {
    let mut taken = 0;
    for b in 0..=255u8 {
        let c = b as char;
        for t in [
            vec![b'/', b],
            vec![b'/', b'a', b, b'z'],
            vec![b'/', b'a', b'?', b'q', b, b'z'],
            vec![b'/', b'?', b],
            vec![b, b'/'],
        ] {
            let Some((path, query)) = target(&t) else {
                continue;
            };
            taken += 1;
            let uri = http::Uri::from_maybe_shared(Bytes::from(t.clone()))
                .unwrap_or_else(|e| panic!("{c:?} in {t:?}: taken here, refused by Uri: {e}"));
            assert_eq!((path, query), (uri.path(), uri.query()), "{c:?} in {t:?}");
        }
    }
    assert!(taken > 300, "visible ASCII is taken ({taken})");
    assert_eq!(target(b"/a#b"), None, "a fragment goes to hyper");
    assert_eq!(target(b"*"), None);
    assert_eq!(target(b"http://x/a"), None);
    assert_eq!(target(b"/caf\xc3\xa9"), None);
}

/// What `httparse` takes as a field's name and value, `HeaderName` and
/// `HeaderValue` take too (the loop no longer builds them, so a field they
/// refuse would otherwise reach a route): every byte in a name and in a
/// value.
#[test]
fn fields_the_loop_takes_are_fields_http_takes() {
    let mut taken = 0;
    for b in 0..=255u8 {
        for (name, value) in [
            (vec![b'x', b, b'y'], b"v".to_vec()),
            (vec![b], b"v".to_vec()),
            (b"x".to_vec(), vec![b'a', b, b'c']),
            (b"x".to_vec(), vec![b]),
        ] {
            let raw = [
                &b"GET / HTTP/1.1\r\n"[..],
                &name,
                b": ",
                &value,
                b"\r\n\r\n",
            ]
            .concat();
            let mut head = Head::default();
            if !matches!(parse(&raw, &mut head), Parsed::Head) {
                continue;
            }
            // A bare line feed in a name ends the head before the field.
            if head.count == 0 {
                assert_eq!(b, b'\n', "a field lost");
                continue;
            }
            taken += 1;
            // The field's bytes as the loop keeps them, not as `iter` shows
            // them (lower case): exactly one field, the one sent.
            assert_eq!(head.count, 1, "byte {b:#04x}");
            let (n, nl, v, vl) = head.headers.0[0];
            let field_name = &raw[n as usize..(n + nl) as usize];
            let field_value = &raw[v as usize..(v + vl) as usize];
            // The name as sent, up to a `:` in it.
            assert!(name.starts_with(field_name), "byte {b:#04x}");
            assert!(
                http::HeaderName::from_bytes(field_name).is_ok(),
                "byte {b:#04x}: name {field_name:?}"
            );
            assert!(
                http::HeaderValue::from_bytes(field_value).is_ok(),
                "byte {b:#04x}: value {field_value:?}"
            );
            // And the router reads it by name.
            let req = incoming(&raw, &head).unwrap();
            let lower = String::from_utf8(field_name.to_ascii_lowercase()).unwrap();
            let got = req
                .headers
                .get(&http::HeaderName::from_bytes(lower.as_bytes()).unwrap());
            assert_eq!(
                got.map(|v| v.as_bytes()),
                Some(field_value),
                "byte {b:#04x}"
            );
        }
    }
    // Every token character as a name, every visible byte and tab as a value.
    assert!(taken > 400, "only {taken} heads were taken");
}

#[tokio::test]
async fn a_head_longer_than_the_fast_path_keeps_goes_to_hyper_whole() {
    let long = format!(
        "GET /{} HTTP/1.1\r\nConnection: close\r\n\r\n",
        "a".repeat(MAX_HEAD + 100)
    );
    let got = same(&[long.as_bytes()]).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].status, 200);
}

#[tokio::test]
async fn the_header_deadline_runs_from_the_last_answer_and_closes_an_idle_connection() {
    let deadlines = Deadlines {
        header: Duration::from_millis(300),
        ..DEADLINES
    };
    let addr = spawn(true, deadlines, Arc::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Five requests 200 ms apart: 1 s in all, each within the deadline of
    // the answer before it, so the one timer moves with them.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"GET /k HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "kept alive");
    }
    // Then nothing: closed.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed after the idle deadline")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_late_body_gets_the_late_answer_and_a_close() {
    for (body, handler, status) in [(200, 5_000, 408), (5_000, 200, 503)] {
        let deadlines = Deadlines {
            header: Duration::from_secs(10),
            body: Duration::from_millis(body),
            handler: Duration::from_millis(handler),
        };
        let addr = spawn(true, deadlines, Arc::default()).await;
        let (got, closed) = exchange(
            addr,
            &[b"POST /slow HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123"],
        )
        .await;
        assert!(closed);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, status);
        assert!(got[0]
            .headers
            .contains(&("connection".into(), "close".into())));
    }
}

#[tokio::test]
async fn a_body_deadline_before_the_idle_one_still_fires() {
    // An idle timeout longer than the body's: after the first answer the
    // timer waits for the idle deadline, a minute away; the second
    // request's body deadline, 200 ms after its head, must move it back.
    let deadlines = Deadlines {
        header: Duration::from_secs(60),
        body: Duration::from_millis(200),
        handler: Duration::from_secs(5),
    };
    let addr = spawn(true, deadlines, Arc::default()).await;
    let (got, closed) = exchange(
        addr,
        &[
            b"GET /first HTTP/1.1\r\n\r\n",
            b"POST /slow HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123",
        ],
    )
    .await;
    assert!(closed, "closed after the late body: {got:?}");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].status, 408);
}

#[tokio::test]
async fn a_stop_closes_idle_connections_and_lets_a_started_request_finish() {
    let stop = Arc::new(Stop::default());
    let addr = spawn(true, DEADLINES, Arc::clone(&stop)).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /1 HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    assert!(idle.read(&mut buf).await.unwrap() > 0);
    let mut started = TcpStream::connect(addr).await.unwrap();
    started
        .write_all(b"POST /2 HTTP/1.1\r\nContent-Length: 4\r\n\r\nab")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.stop();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the idle connection is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    started.write_all(b"cd").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), started.read_to_end(&mut rest))
        .await
        .expect("the started request is answered, then closed")
        .unwrap();
    let got = answers(&rest);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].status, 200);
    assert!(got[0]
        .headers
        .contains(&("connection".into(), "close".into())));
}

#[test]
fn answers_are_encoded_with_their_length_date_and_close() {
    let mut out = Vec::new();
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("content-length", "999".parse().unwrap());
    encode(
        &mut out,
        StatusCode::NOT_FOUND,
        &headers,
        b"{}",
        true,
        untimed(),
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 2\r\ndate: "), "{text}");
    assert!(text.ends_with(" GMT\r\n\r\n{}"), "{text}");
    assert!(
        !text.contains("999"),
        "the route's own length is not repeated"
    );
    let mut out = Vec::new();
    encode(
        &mut out,
        StatusCode::NO_CONTENT,
        &http::HeaderMap::new(),
        b"x",
        false,
        untimed(),
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 204 No Content\r\ndate: "),
        "{text}"
    );
    assert!(
        text.ends_with(" GMT\r\n\r\n"),
        "no length and no body: {text}"
    );
}

/// Requests as a client library, a proxy or an attacker might write them:
/// any method of a few, odd paths, repeated and odd-cased fields, bodies
/// with a right, wrong, repeated or missing length, chunked ones, sent in
/// pieces; always ending with a `Connection: close` request so both
/// servers end the exchange. (`HEAD`, whose answer declares a length it
/// does not send, is left to the fixed cases, where it comes last.)
fn request_bytes() -> impl proptest::strategy::Strategy<Value = (Vec<u8>, Vec<usize>)> {
    use proptest::prelude::*;
    let method = prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW",
    ]);
    let path = "/[a-z0-9/?=&%.-]{0,24}";
    let field = (
        prop::sample::select(vec![
            "Host",
            "content-type",
            "X-Thing",
            "Cookie",
            "authorization",
            "Accept",
            "x_under",
            "Connection",
        ]),
        "[ -~]{0,20}",
    );
    let framing = prop::sample::select(vec!["none", "length", "short", "long", "twice", "chunked"]);
    let one = (
        method,
        path,
        prop::collection::vec(field, 0..5),
        framing,
        "[a-z{}\":,]{0,40}",
    )
        .prop_map(|(method, path, fields, framing, body)| {
            let mut r = format!("{method} /{path} HTTP/1.1\r\n");
            for (name, value) in fields {
                r.push_str(&format!("{name}: {}\r\n", value.trim()));
            }
            match framing {
                "length" => r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len())),
                "short" => r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len() / 2)),
                "long" => r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len() + 3)),
                "twice" => r.push_str(&format!(
                    "Content-Length: {0}\r\nContent-Length: {0}\r\n\r\n{body}",
                    body.len()
                )),
                "chunked" => r.push_str(&format!(
                    "Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                )),
                _ => r.push_str("\r\n"),
            }
            r.into_bytes()
        });
    (
        prop::collection::vec(one, 1..4),
        prop::collection::vec(1usize..200, 0..3),
    )
        .prop_map(|(requests, cuts)| {
            let mut all: Vec<u8> = requests.concat();
            all.extend_from_slice(b"GET /last HTTP/1.1\r\nConnection: close\r\n\r\n");
            (all, cuts)
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Whatever the bytes, the fast path (with its handover) answers as
    /// hyper alone does.
    #[test]
    fn any_request_bytes_get_the_answers_hyper_gives((bytes, cuts) in request_bytes()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut rest = &bytes[..];
            for cut in cuts {
                if cut < rest.len() {
                    let (a, b) = rest.split_at(cut);
                    parts.push(a);
                    rest = b;
                }
            }
            parts.push(rest);
            same(&parts).await;
        });
    }
}

/// The cached `Date` is the wall clock's second when the answer was made:
/// taken at many instants over more than two seconds (so the cache turns
/// over), it always names the second of the wall clock read just before or
/// just after, never an older one.
#[test]
fn the_cached_date_follows_the_wall_clock() {
    use std::time::{Duration, Instant, SystemTime};
    let end = Instant::now() + Duration::from_millis(2_300);
    let mut turned = 0;
    let mut last = Vec::new();
    while Instant::now() < end {
        let before = httpdate::fmt_http_date(SystemTime::now());
        let mut out = Vec::new();
        super::date::push(&mut out, Instant::now());
        let after = httpdate::fmt_http_date(SystemTime::now());
        let got = String::from_utf8(out.clone()).unwrap();
        assert!(
            got == before || got == after,
            "{got} not in [{before}, {after}]"
        );
        if out != last {
            turned += 1;
            last = out;
        }
        std::thread::sleep(Duration::from_millis(7));
    }
    assert!(turned >= 3, "the text changed {turned} times over 2.3 s");
}

fn untimed() -> crate::response::Timing {
    crate::response::Timing {
        at: std::time::Instant::now(),
        total_micros: None,
    }
}

/// The fast path writes the router's total as it encodes (no header map
/// rewrite); the bytes must be what encoding the answer after
/// [`crate::response::total_timing`] gives: with no `server-timing`, one
/// (`cache;desc=hit`) or two values, and around other headers.
#[test]
fn the_total_is_encoded_as_total_timing_would_add_it() {
    use crate::response::{total_timing, Timing};
    let at = std::time::Instant::now();
    let maps: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("content-type", "application/json")],
        vec![
            ("server-timing", "cache;desc=hit"),
            ("content-type", "application/json"),
        ],
        vec![
            ("content-type", "application/json"),
            ("server-timing", "cache;desc=miss, store;dur=0.41"),
        ],
        vec![
            ("server-timing", "a"),
            ("x-other", "1"),
            ("server-timing", "b"),
        ],
    ];
    for micros in [0, 7, 999, 1_000, 12_345, 4_000_001] {
        for map in &maps {
            let mut res = Response::new(crate::response::Body::new(Bytes::from_static(b"{}")));
            for (k, v) in map {
                res.headers_mut().append(
                    http::header::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                );
            }
            let mut fast = Vec::new();
            let timed = Timing {
                at,
                total_micros: Some(micros),
            };
            encode(
                &mut fast,
                StatusCode::OK,
                res.headers(),
                b"{}",
                false,
                timed,
            );
            let res = total_timing(res, micros);
            let mut slow = Vec::new();
            let untimed = Timing {
                at,
                total_micros: None,
            };
            encode(
                &mut slow,
                StatusCode::OK,
                res.headers(),
                b"{}",
                false,
                untimed,
            );
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(slow).unwrap(),
                "{micros} µs over {map:?}"
            );
        }
    }
}

/// A route still waiting at the handler deadline: the client gets the late
/// answer (`503`) with `connection: close` and the end of the stream at
/// once, while the route goes on in the connection's task and is not cut
/// off: it finishes when what it waits for comes.
#[tokio::test]
async fn a_route_past_the_handler_deadline_is_answered_late_and_still_finishes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r, f) = (Arc::clone(&release), Arc::clone(&finished));
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let deadlines = Deadlines {
            handler: Duration::from_millis(200),
            ..DEADLINES
        };
        /// Answers once `release` is notified, and says so in `finished`.
        struct Waits {
            release: Arc<tokio::sync::Notify>,
            finished: Arc<std::sync::atomic::AtomicBool>,
        }
        impl Route for Waits {
            async fn route<'a>(
                &'a self,
                _req: Incoming<'a, NoBody>,
            ) -> (Response<Body>, crate::response::Timing) {
                self.release.notified().await;
                self.finished.store(true, Ordering::SeqCst);
                (
                    Response::new(Body::new(Bytes::from_static(b"done"))),
                    untimed(),
                )
            }
        }
        let route = Waits {
            release: r,
            finished: f,
        };
        let late = |_body_first: bool| {
            let mut res = Response::new(Body::new(Bytes::from_static(b"late")));
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            res
        };
        serve(&mut stream, deadlines, &Stop::default(), &route, late).await
    });
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("the late answer and the end of the stream come while the route still waits")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("late"), "{answer}");
    assert!(
        !finished.load(Ordering::SeqCst),
        "the route is still waiting"
    );
    release.notify_one();
    let end = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the connection's task ends once the route has finished")
        .unwrap();
    assert!(matches!(end, End::Closed));
    assert!(finished.load(Ordering::SeqCst), "the route ran to its end");
}
