//! The admin's accept loop: a connection cap and the three deadlines of a
//! request, which `axum::serve` has none of.
//!
//! - At most [`ServeLimits::max_connections`] connections are open; further
//!   clients wait in the kernel backlog rather than costing memory.
//! - Headers must arrive within [`ServeLimits::header_read_timeout`] of
//!   accept or of the previous answer (so it is also the idle keep-alive
//!   timeout: hyper re-arms its header timer when a connection goes idle).
//! - The body must arrive within [`ServeLimits::body_read_timeout`] of the
//!   headers: `408 request_timeout`, connection closed.
//! - The answer must be ready within [`ServeLimits::request_timeout`] of
//!   the headers: `503 deadline_exceeded` with `Retry-After`, connection
//!   closed. The late handler is not cancelled (it could be between a
//!   commit and the push that follows it); it finishes in the background.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use qyzar_shared::deadline::DeadlineBody;
use qyzar_shared::{ApiError, ErrorCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// Limits that protect the admin from slow or greedy clients.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Most connections open at once (`QYZAR_ADMIN_MAX_CONNECTIONS`,
    /// default 1024).
    pub max_connections: usize,
    /// Time to send a request's headers, from accept or from the previous
    /// answer (`QYZAR_ADMIN_IDLE_TIMEOUT_SECONDS`, default 10).
    pub header_read_timeout: Duration,
    /// Time to send the whole body once the headers are in
    /// (`QYZAR_ADMIN_BODY_TIMEOUT_SECONDS`, default 10).
    pub body_read_timeout: Duration,
    /// Time from the headers to a ready answer, body included
    /// (`QYZAR_ADMIN_REQUEST_TIMEOUT_SECONDS`, default 30: above the body
    /// timeout, and room for a Stripe or SMTP call).
    pub request_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and drains open connections (bounded by the request timeout).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let limits = limits.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            answer_within(app.clone(), limits.clone(), peer, req)
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("admin drained"),
        _ = tokio::time::sleep(limits.request_timeout) => tracing::warn!("admin drain timed out"),
    }
}

/// One request under the body and request deadlines.
async fn answer_within(
    app: Router,
    limits: ServeLimits,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response, std::convert::Infallible> {
    let late_body = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&late_body);
    let mut req = req.map(|b| {
        axum::body::Body::new(DeadlineBody::new(b, limits.body_read_timeout).with_flag(flag))
    });
    // The auth routes' per-IP limits read the peer from here.
    req.extensions_mut().insert(ConnectInfo(peer));
    let mut routed = Box::pin(app.oneshot(req));
    let res = match tokio::time::timeout(limits.request_timeout, &mut routed).await {
        // Whatever the handler made of a body cut off by its deadline
        // (usually `400 malformed_json`), the truth is a 408.
        Ok(_) if late_body.load(Ordering::Acquire) => error(ErrorCode::RequestTimeout),
        Ok(Ok(res)) => return Ok(res),
        Ok(Err(never)) => match never {},
        Err(_) => {
            tracing::warn!(timeout = ?limits.request_timeout, "a request passed the admin's deadline");
            tokio::spawn(routed);
            let mut res = error(ErrorCode::DeadlineExceeded);
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            res
        }
    };
    Ok(res)
}

/// A timeout answer in the shared shape; it closes the connection, whose
/// request body was left unread.
fn error(code: ErrorCode) -> Response {
    let mut res = Response::new(axum::body::Body::from(ApiError::new(code).to_json()));
    *res.status_mut() = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::REQUEST_TIMEOUT);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    res
}
