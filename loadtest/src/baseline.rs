//! The hello-world baselines a route is measured against. Measured with the
//! same client settings, a baseline says how much of a route's cost is the
//! route and how much is hyper, the kernel and the generator itself.
//!
//! - [`Kind::Strict`], the default: the shared instrument's hello-world
//!   (`../shared/perf/hello-baseline`), byte for byte in behaviour: a
//!   current-thread Tokio runtime, hyper's default HTTP/1 settings (no
//!   timer, no header-read timeout), the body read as a real route would,
//!   and `{"valid":true}` with one header. It is the fastest honest server
//!   hyper makes, so a ratio against it is the strictest; this is what
//!   `../shared/perf/engine_ratios.py` divides by.
//! - [`Kind::EngineLike`]: the earlier baseline, kept for reference: the
//!   engine's own server settings (`TCP_NODELAY`, a header-read timeout
//!   with its timer) and answer headers, on the caller's runtime (the
//!   multi-thread one `qyzar-loadtest` builds). It serves markedly fewer
//!   requests per second on the same core, which made every ratio look
//!   better than the strict one (BENCHMARKS.md, issue 14).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, SERVER};
use http::Response;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// The engine-like answer body, of the engine's `/ping` size.
pub const BODY: &[u8] = br#"{"ok":true,"service":"baseline"}"#;
/// The strict answer body, the shared instrument's.
pub const STRICT_BODY: &[u8] = br#"{"valid":true}"#;

/// Which hello-world to serve (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// The shared instrument's current-thread hello-world.
    #[default]
    Strict,
    /// The earlier baseline with the engine's server settings.
    EngineLike,
}

impl Kind {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Strict => "strict",
            Kind::EngineLike => "engine-like",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Kind::Strict),
            "engine-like" => Ok(Kind::EngineLike),
            other => Err(format!(
                "unknown baseline `{other}` (strict or engine-like)"
            )),
        }
    }
}

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

/// The strict answer: the body read first, then `{"valid":true}`.
async fn strict_answer(
    req: http::Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = req.into_body().collect().await;
    let mut res = Response::new(Full::new(Bytes::from_static(STRICT_BODY)));
    res.headers_mut().insert(CONTENT_TYPE, JSON.clone());
    Ok(res)
}

/// Serves `listener` until `shutdown` resolves. Open connections are simply
/// dropped then: the baseline holds no state worth draining. The strict
/// kind belongs on a current-thread runtime (the `baseline` command builds
/// one); on another it measures that runtime instead.
pub async fn serve(listener: TcpListener, kind: Kind, shutdown: impl Future<Output = ()>) {
    match kind {
        // As `../shared/perf/hello-baseline` has it: default builder, no
        // `TCP_NODELAY`, the body read.
        Kind::Strict => {
            accept_each(listener, shutdown, |stream| async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(strict_answer))
                    .await;
            })
            .await
        }
        Kind::EngineLike => {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(true);
            accept_each(listener, shutdown, move |stream| {
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection(
                    TokioIo::new(stream),
                    service_fn(|_req| async { Ok::<_, Infallible>(answer()) }),
                );
                async move {
                    let _ = conn.await;
                }
            })
            .await
        }
    }
}

/// Accepts until `shutdown`, running `serve` for each connection on its own
/// task (a failed accept backs off 10 ms).
async fn accept_each<F, Fut>(listener: TcpListener, shutdown: impl Future<Output = ()>, serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
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
        tokio::spawn(serve(stream));
    }
}
