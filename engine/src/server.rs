//! The accept loop: connection cap, header-read timeout, graceful drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::router;
use crate::state::Engine;

/// Limits that protect the engine from slow or greedy clients.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Most connections served at once; further accepts wait for a slot, so
    /// a flood queues in the kernel backlog instead of exhausting memory.
    pub max_connections: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Time given to in-flight requests after shutdown is asked for.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves, then stops
/// accepting and drains open connections (bounded by `drain_timeout`).
pub async fn run(
    listener: TcpListener,
    engine: Arc<Engine>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
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
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let engine = Arc::clone(&engine);
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                // The socket peer, for deciding whether forwarding headers
                // are believed (`client_addr.rs`).
                req.extensions_mut()
                    .insert(crate::client_addr::PeerAddr(peer));
                let engine = Arc::clone(&engine);
                async move { Ok::<_, std::convert::Infallible>(router::route(&engine, req).await) }
            }),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("engine drained"),
        _ = tokio::time::sleep(limits.drain_timeout) => tracing::warn!("engine drain timed out"),
    }
    // Queued last-seen updates and deny events are written before exit.
    engine.background.shutdown().await;
}
