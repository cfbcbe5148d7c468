//! The hello-world baseline: hyper serving a fixed small JSON answer with the
//! same kinds of headers as the engine, on the same server settings as
//! `engine/src/server.rs` (HTTP/1.1 keep-alive, `TCP_NODELAY`, header-read
//! timeout). Measured with the same client settings, it says how much of a
//! route's cost is the route and how much is hyper, the kernel and the
//! generator itself.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, SERVER};
use http::Response;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// The answer body, of the engine's `/ping` size.
pub const BODY: &[u8] = br#"{"ok":true,"service":"baseline"}"#;

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static SERVER_NAME: HeaderValue = HeaderValue::from_static("qyzar-baseline");
static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
static TIMING: HeaderValue = HeaderValue::from_static("total;dur=0.001");

/// The fixed answer to every request, whatever its method or path.
pub fn answer() -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(BODY)));
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, JSON.clone());
    h.insert(SERVER, SERVER_NAME.clone());
    h.insert(&SERVER_TIMING, TIMING.clone());
    res
}

/// Serves `listener` until `shutdown` resolves. Open connections are simply
/// dropped then: the baseline holds no state worth draining.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(|_req| async { Ok::<_, Infallible>(answer()) }),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
