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
//! - [`Kind::Durable`]: the strict hello-world whose answer also waits for
//!   the request's body to be durable, by the anti-ATO journal's group
//!   commit ([`durable`]): the ceiling of a route that must write before it
//!   answers, on this machine's disk.

pub mod durable;

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
    /// The strict hello-world, each body made durable before the answer.
    Durable,
}

impl Kind {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Strict => "strict",
            Kind::EngineLike => "engine-like",
            Kind::Durable => "durable",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Kind::Strict),
            "engine-like" => Ok(Kind::EngineLike),
            "durable" => Ok(Kind::Durable),
            other => Err(format!(
                "unknown baseline `{other}` (strict, engine-like or durable)"
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

/// The durable answer: the body read and made durable, then
/// `{"valid":true}`; 413 for a body over [`durable::MAX_BODY`], 503 when
/// the journal failed.
async fn durable_answer(
    journal: durable::Journal,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let refused = &br#"{"valid":false}"#[..];
    // Bounded, so that a frame (at most 1 024 bodies) stays far below the
    // 4 GiB its length field can say, and memory with it.
    // A declared length over the bound is refused before any of it is
    // read; `Limited` catches a chunked body that grows past it.
    if hyper::body::Body::size_hint(req.body()).lower() > durable::MAX_BODY as u64 {
        return Ok(fixed(http::StatusCode::PAYLOAD_TOO_LARGE, refused));
    }
    let body = match http_body_util::Limited::new(req.into_body(), durable::MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(fixed(http::StatusCode::PAYLOAD_TOO_LARGE, refused)),
    };
    let (status, text) = match journal.append(body).await {
        Ok(()) => (http::StatusCode::OK, STRICT_BODY),
        Err(()) => (http::StatusCode::SERVICE_UNAVAILABLE, refused),
    };
    Ok(fixed(status, text))
}

/// `text` as JSON with `status`.
fn fixed(status: http::StatusCode, text: &'static [u8]) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(text)));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, JSON.clone());
    res
}

/// Serves `listener` until `shutdown` resolves. Open connections are simply
/// dropped then: the baseline holds no state worth draining. The strict
/// kind belongs on a current-thread runtime (the `baseline` command builds
/// one); on another it measures that runtime instead. The durable kind
/// keeps its journal in a fresh directory under the system's temporary
/// directory (which must be on the disk being measured), removed when it
/// stops.
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
        Kind::Durable => {
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "qyzar-durable-baseline-{}-{port}",
                std::process::id()
            ));
            // A directory of this name is this process's own (pid and
            // port), left by nothing else.
            let _ = std::fs::remove_dir_all(&dir);
            let (journal, _dir) = match durable::Journal::start(&dir) {
                Ok(j) => j,
                Err(e) => {
                    eprintln!(
                        "durable baseline: cannot start a journal in {}: {e}",
                        dir.display()
                    );
                    return;
                }
            };
            accept_each(listener, shutdown, move |stream| {
                let journal = journal.clone();
                async move {
                    let _ = http1::Builder::new()
                        .serve_connection(
                            TokioIo::new(stream),
                            service_fn(move |req| durable_answer(journal.clone(), req)),
                        )
                        .await;
                }
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
