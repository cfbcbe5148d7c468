//! The shared hello-world with an answer of `HELLO_BYTES` bytes (default
//! 14, the original `{"valid":true}`): `{"valid":true,"pad":"xxx…"}`.
//!
//! ```sh
//! HELLO_BYTES=700 taskset -c 0 target/release/hello-sized 127.0.0.1:18181 &
//! QZ_BODY='{"projectId":"prj_x"}' taskset -c 1 wrk -t1 -c64 -d5s \
//!   -s ../shared/perf/wrk/post_json.lua http://127.0.0.1:18181/
//! ```
use std::convert::Infallible;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

static BODY: OnceLock<Bytes> = OnceLock::new();

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body as a real route would, then answer the padded document.
    let _ = req.into_body().collect().await;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(BODY.get().cloned().unwrap_or_default()))
        .unwrap())
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18181".into());
    let n: usize = std::env::var("HELLO_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(14);
    let body = if n <= 14 {
        String::from(r#"{"valid":true}"#)
    } else {
        let mut s = String::from(r#"{"valid":true,"pad":""#);
        while s.len() + 2 < n {
            s.push('x');
        }
        s.push_str("\"}");
        s
    };
    let _ = BODY.set(Bytes::from(body));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
}
