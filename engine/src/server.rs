//! The accept loop of both listeners ([`serve`]): connection cap, TLS,
//! graceful drain; and the public one's three deadlines of a request
//! (headers, body, handler). The public listener serves plain HTTP/1.1
//! connections on its own loop (`server/h1.rs`) and gives hyper any
//! connection that sends a request that loop does not take; TLS and the
//! internal listener are hyper's.
//!
//! A connection slot is held only while a client is doing something useful:
//! - headers must arrive within [`ServerLimits::header_read_timeout`],
//!   counted from accept or, on a kept-alive connection, from the end of the
//!   previous answer, so the same bound is the idle keep-alive timeout
//!   (hyper re-arms its header timer as soon as a connection goes idle);
//! - the body must arrive within [`ServerLimits::body_read_timeout`] of the
//!   headers, else `408 request_timeout` and the connection is closed;
//! - the whole answer must be ready within [`ServerLimits::handler_timeout`]
//!   of the headers, else `503 deadline_exceeded` (with `Retry-After`) and
//!   the connection is closed. The late handler is not cancelled: it runs
//!   to its end in the background (every store call it makes has its own
//!   timeout), so it never stops between two writes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONNECTION, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use qyzar_shared::deadline::DeadlineBody;
use qyzar_shared::{ApiError, ErrorCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::client_addr::PeerAddr;
use crate::response::{self, Body};
use crate::router;
use crate::state::Engine;

mod h1;

/// Limits that protect the engine from slow or greedy clients.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Most connections served at once; further accepts wait for a slot, so
    /// a flood queues in the kernel backlog instead of exhausting memory.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from accept
    /// or from the end of the previous answer: also the idle keep-alive
    /// timeout (`QYZAR_ENGINE_IDLE_TIMEOUT_SECONDS`, default 10).
    pub header_read_timeout: Duration,
    /// Time a client has, once its headers are in, to send the whole body
    /// (`QYZAR_ENGINE_BODY_TIMEOUT_SECONDS`, default 10). A body is at most
    /// 64 KiB, so this only ever stops a stalled or trickling upload.
    pub body_read_timeout: Duration,
    /// Time from the headers to a ready answer, body read included
    /// (`QYZAR_ENGINE_HANDLER_TIMEOUT_SECONDS`, default 15): above the body
    /// timeout, so a slow upload is told 408, not 503.
    pub handler_timeout: Duration,
    /// Time given to in-flight requests after shutdown is asked for.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves the public routes on `listener` until `shutdown` resolves, then
/// stops accepting and drains open connections (bounded by
/// `drain_timeout`), and finally writes what the background queues hold.
pub async fn run(
    listener: TcpListener,
    engine: Arc<Engine>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let (body_timeout, handler_timeout) = (limits.body_read_timeout, limits.handler_timeout);
    let routes = Arc::clone(&engine);
    let fast = Fast {
        engine: Arc::clone(&engine),
        deadlines: h1::Deadlines {
            header: limits.header_read_timeout,
            body: body_timeout,
            handler: handler_timeout,
        },
        stop: Arc::default(),
    };
    serve(
        listener,
        &limits,
        None,
        "engine",
        move |req: Request<Incoming>, peer| {
            let req = req.map(|b| DeadlineBody::new(b, body_timeout));
            let routed = answer_within(handler_timeout, Arc::clone(&routes), PeerAddr(peer), req);
            async move {
                let (res, timing) = routed.await;
                timing.apply(res)
            }
        },
        Some(fast),
        shutdown,
    )
    .await;
    // Queued last-seen updates and deny events are written before exit.
    engine.background.shutdown().await;
}

/// The public listener's HTTP/1.1 fast path (`server/h1.rs`): the engine's
/// routes behind the same deadlines as hyper's path.
#[derive(Clone)]
pub(crate) struct Fast {
    engine: Arc<Engine>,
    deadlines: h1::Deadlines,
    stop: Arc<h1::Stop>,
}

impl Fast {
    /// Serves `stream` on the fast path until it closes or hands over.
    async fn serve(&self, stream: &mut tokio::net::TcpStream, peer: SocketAddr) -> h1::End {
        let d = self.deadlines;
        let route = Routed {
            engine: &self.engine,
            peer: PeerAddr(peer),
        };
        // The body did not arrive in time: `408` if its own deadline is
        // the shorter, else the handler's `503` (as `answer_within` answers).
        let late = |body_first: bool| {
            let (timeout, code) = if body_first {
                (d.body, ErrorCode::RequestTimeout)
            } else {
                (d.handler, ErrorCode::DeadlineExceeded)
            };
            let micros = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
            let mut res = response::error(&ApiError::new(code));
            self.engine
                .metrics
                .record("other", res.status().as_u16(), micros);
            if !body_first {
                res.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            res
        };
        h1::serve(stream, d, &self.stop, &route, late).await
    }
}

/// The router behind the fast path, for requests from `peer`.
struct Routed<'e> {
    engine: &'e Engine,
    peer: PeerAddr,
}

impl h1::Route for Routed<'_> {
    fn route<'a>(
        &'a self,
        req: router::Incoming<'a, h1::NoBody>,
    ) -> impl std::future::Future<Output = (http::Response<response::Body>, response::Timing)> + 'a
    {
        router::route_incoming(self.engine, Some(self.peer), req)
    }
}

/// The one accept loop of both listeners (public and internal): takes a
/// connection slot before accepting (so a flood waits in the kernel
/// backlog), speaks TLS when `tls` is given (the handshake bounded like a
/// header read, in the connection's own task), serves HTTP/1.1 with
/// `fast` when given (plain TCP only) and `handler` otherwise, and on
/// `shutdown` stops accepting and drains. `what` names the listener in logs.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    limits: &ServerLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    what: &'static str,
    handler: H,
    fast: Option<Fast>,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
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
                    // Usually EMFILE or a reset during the handshake; back off
                    // briefly rather than spin.
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let answer = handler(req, peer);
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        let Some(acceptor) = tls.clone() else {
            if let Some(fast) = fast.clone() {
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let mut stream = stream;
                    if let h1::End::Handover(read) = fast.serve(&mut stream, peer).await {
                        let io = TokioIo::new(h1::Rewind::new(read, stream));
                        if let Err(e) = watcher.watch(builder.serve_connection(io, service)).await {
                            tracing::debug!(listener = what, error = %e, "connection ended with an error");
                        }
                    }
                    drop(permit);
                });
                continue;
            }
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(listener = what, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
            continue;
        };
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let conn = watcher.watch(builder.serve_connection(TokioIo::new(tls), service));
                    if let Err(e) = conn.await {
                        tracing::debug!(listener = what, error = %e, "connection ended with an error");
                    }
                }
                Ok(Err(e)) => tracing::debug!(listener = what, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(listener = what, "TLS handshake timed out"),
            }
            drop(permit);
        });
    }
    drop(listener);
    if let Some(fast) = &fast {
        fast.stop.stop();
    }
    // Every connection holds a slot until it ends: all slots back is all
    // connections drained, on either path.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = async {
        graceful.shutdown().await;
        let _ = permits.acquire_many(all).await;
    };
    tokio::select! {
        _ = drained => tracing::info!(listener = what, "drained"),
        _ = tokio::time::sleep(limits.drain_timeout) => tracing::warn!(listener = what, "drain timed out"),
    }
}

/// Routes `req`, answering `503 deadline_exceeded` if no answer is ready
/// within `timeout`. The late route is moved to its own task and finishes
/// there (its answer is dropped, its own metrics still recorded when it
/// ends; the `503` is counted under `other`), so no route is ever cut off between two
/// store writes; an idempotent retry waits for it and replays its answer.
/// Both timeout answers (this one and a body's `408`) leave the request
/// body unread, so they close the connection instead of reusing a
/// half-read stream. Also says when the answer was made and the router's
/// total ([`router::route_timed`]).
async fn answer_within<B>(
    timeout: Duration,
    engine: Arc<Engine>,
    peer: PeerAddr,
    req: Request<B>,
) -> (Response<Body>, response::Timing)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let metrics = Arc::clone(&engine);
    let mut routed = Box::pin(async move { router::route_timed(&engine, Some(peer), req).await });
    // A route that answers without waiting (a cache hit) needs no timer:
    // it is polled once first, and the deadline is armed only if it waits.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(routed.as_mut().poll(cx))).await;
    let answered = match first {
        std::task::Poll::Ready(res) => Ok(res),
        std::task::Poll::Pending => tokio::time::timeout(timeout, &mut routed).await,
    };
    let (mut res, timing) = match answered {
        Ok((res, timing)) if res.status() != StatusCode::REQUEST_TIMEOUT => return (res, timing),
        Ok(answer) => answer,
        Err(_) => {
            tracing::warn!(?timeout, "a request passed the handler deadline");
            tokio::spawn(routed);
            let micros = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
            metrics.metrics.record("other", 503, micros);
            let mut res = response::error(&ApiError::new(ErrorCode::DeadlineExceeded));
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            let timing = response::Timing {
                at: Instant::now(),
                total_micros: None,
            };
            (res, timing)
        }
    };
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    (res, timing)
}
