//! The engine's internal listener: configuration push from admin, the
//! served version, Prometheus metrics and a ping.
//!
//! It listens on its own address (`QYZAR_ENGINE_INTERNAL_ADDR`, default
//! `127.0.0.1:8090`), never the public port: the public port faces customer
//! backends, this one faces admin and the metrics scraper. It is a small
//! hyper server with a low connection cap, because its only callers are a
//! handful of internal services.
//!
//! Pushes carry every project's secret hashes and signing keys, so the
//! listener can speak TLS only ([`serve_internal`] with a rustls server
//! configuration, `QYZAR_ENGINE_INTERNAL_TLS_CERT_FILE` and `_KEY_FILE`): a
//! client that does not complete a handshake within the header timeout is
//! dropped, and a plain-HTTP client gets no answer at all. It runs on the
//! same accept loop as the public listener ([`crate::server::serve`]); the
//! paths, messages and key check are the control plane's
//! ([`qyzar_shared::control`]).
//!
//! Routes:
//! - `PUT /internal/snapshot`: an encoded full snapshot or delta (told apart
//!   by its header), authenticated with `Authorization: Bearer <push key>`;
//!   answers `{"version": n}`.
//! - `GET /internal/snapshot/version`: `{"version": n}`, 0 before the first.
//! - `GET /metrics`: the Prometheus text exposition (with
//!   `qyzar_store_ready` and `qyzar_config_version`, the two readiness
//!   signals of an engine that started while something was down).
//! - `GET /ping`.
//!
//! The pull side (the engine asking admin for the newest snapshot) lives in
//! `internal/pull.rs`; both apply bytes through the same function, so a
//! pushed and a pulled snapshot are checked identically, and both are
//! persisted to the engine's snapshot file (when set) once applied.

mod heartbeat;
mod pull;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use qyzar_shared::control::{self, paths, ChannelKey, Direction};
use qyzar_shared::snapshot::{decode_delta, decode_snapshot, SnapshotError, SnapshotKind};
use qyzar_shared::{ApiError, ErrorCode};
use tokio::net::TcpListener;

use crate::config_view::SwapError;
use crate::response::{self, Body};
use crate::server::ServerLimits;
use crate::state::Engine;

pub use heartbeat::{heartbeat_loop, Identity};
pub use pull::{admin_snapshot_uri, pull_loop, pull_loop_with, AdminLink, PULL_TIMEOUT};

/// Largest snapshot or delta accepted, pushed or pulled (64 MiB). A snapshot
/// carries every project, so it is far bigger than any public request body;
/// the cap still bounds what one caller can make the engine buffer. Admin
/// keeps its snapshots under it (see `admin/src/push.rs`).
pub const MAX_SNAPSHOT_BYTES: usize = qyzar_shared::snapshot::MAX_ENCODED_BYTES;

/// Most connections served at once: the callers are admin instances and a
/// metrics scraper, so a few dozen is plenty and bounds the memory a burst
/// of large pushes can take.
const MAX_CONNECTIONS: usize = 64;

/// Time a client has to send its request headers (and to finish a TLS
/// handshake).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Time given to in-flight requests (a large push being applied) after
/// shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the internal routes on `listener` until `shutdown` resolves, then
/// stops accepting and drains open connections.
///
/// With `push_key` `None` every push is refused with `401`: an
/// unauthenticated configuration port would let anyone who can reach it
/// rewrite every project's secrets and keys. Metrics, the version and ping
/// stay open, since they reveal nothing secret and scrapers rarely carry keys.
pub async fn run_internal(
    listener: TcpListener,
    engine: Arc<Engine>,
    push_key: Option<String>,
    shutdown: impl Future<Output = ()>,
) {
    serve_internal(listener, engine, push_key, None, shutdown).await
}

/// [`run_internal`], speaking TLS with `tls` when given (and nothing else),
/// on the engine's one accept loop ([`crate::server::serve`]).
pub async fn serve_internal(
    listener: TcpListener,
    engine: Arc<Engine>,
    push_key: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let key = push_key.map(|k| ChannelKey::new(&k, Direction::Push));
    serve_internal_with(listener, engine, key, tls, shutdown).await
}

/// [`serve_internal`] with the push key as the engine holds it: an engine
/// that advertises its URL also accepts the push key bound to that URL
/// ([`qyzar_shared::control::bound_push_key`], what admin sends engines it
/// learned of by heartbeat).
pub async fn serve_internal_with(
    listener: TcpListener,
    engine: Arc<Engine>,
    key: Option<ChannelKey>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    if key.is_none() {
        tracing::warn!(
            "no push key configured (QYZAR_ENGINE_PUSH_KEY): configuration pushes will be refused"
        );
    }
    let key: Option<Arc<ChannelKey>> = key.map(Arc::new);
    let limits = ServerLimits {
        max_connections: MAX_CONNECTIONS,
        header_read_timeout: HEADER_READ_TIMEOUT,
        drain_timeout: DRAIN_TIMEOUT,
        ..ServerLimits::default()
    };
    crate::server::serve(
        listener,
        &limits,
        tls.map(tokio_rustls::TlsAcceptor::from),
        "internal",
        move |req, _peer| route(Arc::clone(&engine), key.clone(), req),
        None,
        shutdown,
    )
    .await
}

/// Routes one internal request on `(method, path)`.
async fn route<B>(
    engine: Arc<Engine>,
    key: Option<Arc<ChannelKey>>,
    req: Request<B>,
) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    let m = &parts.method;
    match parts.uri.path() {
        paths::SNAPSHOT => match *m {
            Method::PUT => push(engine, key.as_deref(), &parts.headers, body).await,
            _ => response::method_not_allowed("PUT"),
        },
        paths::SNAPSHOT_VERSION => match *m {
            Method::GET | Method::HEAD => version_answer(engine.config.version()),
            _ => response::method_not_allowed("GET, HEAD"),
        },
        paths::METRICS => match *m {
            Method::GET | Method::HEAD => metrics(&engine),
            _ => response::method_not_allowed("GET, HEAD"),
        },
        paths::PING => match *m {
            Method::GET | Method::HEAD => response::pong(),
            _ => response::method_not_allowed("GET, HEAD"),
        },
        _ => response::error_code(ErrorCode::RouteNotFound),
    }
}

/// `PUT /internal/snapshot`: authorise → read → apply → answer the version.
/// The key is checked before the body is read, so an unauthenticated caller
/// cannot make the engine buffer 64 MiB.
async fn push<B>(
    engine: Arc<Engine>,
    key: Option<&ChannelKey>,
    headers: &HeaderMap,
    body: B,
) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Err(e) = control::authorise(key, Direction::Push, headers) {
        return response::error(&e);
    }
    let bytes = match read_snapshot_body(headers, body).await {
        Ok(b) => b,
        Err(e) => return response::error(&e),
    };
    let len = bytes.len();
    match apply_encoded(engine, bytes).await {
        Ok((kind, version)) => {
            tracing::info!(version, %kind, bytes = len, "configuration pushed");
            version_answer(version)
        }
        Err(e) => {
            if e.is_stale() {
                tracing::debug!(error = %e, "stale configuration push ignored");
            } else {
                tracing::warn!(error = %e, "configuration push refused");
            }
            response::error(&e.to_api_error())
        }
    }
}

/// Reads a snapshot body, refusing more than [`MAX_SNAPSHOT_BYTES`] with
/// `413` (a declared `Content-Length` is checked before reading).
async fn read_snapshot_body<B>(headers: &HeaderMap, body: B) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_SNAPSHOT_BYTES as u64) {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge));
    }
    match Limited::new(body, MAX_SNAPSHOT_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::new(ErrorCode::PayloadTooLarge))
        }
        Err(_) => Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "the snapshot body could not be read",
        )),
    }
}

/// Why encoded bytes were not applied, pushed or pulled.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// Refused by the snapshot checks or the version rule.
    #[error(transparent)]
    Refused(#[from] SwapError),
    /// Decoding panicked on the blocking pool: a bug, never the sender's
    /// fault, so it is a 500 and the served snapshot stays.
    #[error("applying the snapshot failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl ApplyError {
    /// Not newer than what is served: routine when a push and a pull race,
    /// so it is logged quietly.
    fn is_stale(&self) -> bool {
        matches!(
            self,
            ApplyError::Refused(SwapError::Stale { .. })
                | ApplyError::Refused(SwapError::Snapshot(SnapshotError::StaleVersion { .. }))
        )
    }

    /// The answer admin gets. Conflicts say what admin should do next: a
    /// stale version carries the served one, a delta on the wrong base asks
    /// for a full snapshot.
    fn to_api_error(&self) -> ApiError {
        match self {
            ApplyError::Refused(SwapError::Stale { current, offered })
            | ApplyError::Refused(SwapError::Snapshot(SnapshotError::StaleVersion {
                current,
                offered,
            })) => ApiError::with_message(
                ErrorCode::SnapshotNotNewer,
                format!("version {offered} is not newer than the served version {current}"),
            )
            // The field is what admins of earlier releases read.
            .field("version"),
            ApplyError::Refused(SwapError::NoBase) => ApiError::with_message(
                ErrorCode::SnapshotNeedsFull,
                "this engine holds no snapshot to apply a delta to; send a full snapshot",
            )
            .field("baseVersion"),
            ApplyError::Refused(SwapError::Snapshot(SnapshotError::BaseMismatch {
                current,
                base,
            })) => ApiError::with_message(
                ErrorCode::SnapshotNeedsFull,
                format!(
                    "the delta applies to version {base} but this engine holds version \
                     {current}; send a full snapshot"
                ),
            )
            .field("baseVersion"),
            ApplyError::Refused(SwapError::Snapshot(e)) => ApiError::with_message(
                ErrorCode::InvalidField,
                format!("the snapshot was refused: {e}"),
            ),
            ApplyError::Task(e) => {
                tracing::error!(error = %e, "applying a snapshot panicked");
                ApiError::new(ErrorCode::Internal)
            }
        }
    }
}

/// Decodes a full snapshot or a delta (told apart by the header) and swaps it
/// in. Runs on the blocking pool: decoding and indexing a large snapshot
/// (digest, bytecheck, key parsing per project) would otherwise stall a
/// runtime worker and the public requests queued on it.
async fn apply_encoded(
    engine: Arc<Engine>,
    bytes: Bytes,
) -> Result<(SnapshotKind, u64), ApplyError> {
    let applied = tokio::task::spawn_blocking(move || {
        let now = qyzar_shared::time::now_ms();
        let kind = SnapshotKind::of(&bytes).map_err(SwapError::from)?;
        let version = match kind {
            SnapshotKind::Full => engine.config.swap_full(decode_snapshot(&bytes)?, now)?,
            SnapshotKind::Delta => engine.config.apply_delta(&decode_delta(&bytes)?, now)?,
        };
        persist_applied(&engine, kind, &bytes, version, now);
        Ok::<_, SwapError>((kind, version))
    })
    .await?;
    Ok(applied?)
}

/// Writes the snapshot just applied at `version` to the engine's snapshot
/// file, if one is set: a full snapshot as received (already checked), a
/// delta as the whole snapshot it produced. A failed write is logged and
/// costs nothing but a stale file; the apply itself stands.
fn persist_applied(engine: &Engine, kind: SnapshotKind, bytes: &[u8], version: u64, now: i64) {
    let Some(file) = engine.config.snapshot_file() else {
        return;
    };
    let written = match kind {
        SnapshotKind::Full => file.save(version, bytes),
        SnapshotKind::Delta => match engine.config.current(now) {
            // A newer apply raced in: it persists its own snapshot.
            Some(live) if live.version() == version => {
                match qyzar_shared::snapshot::encode_snapshot(live.snapshot()) {
                    Ok(encoded) => file.save(version, &encoded),
                    Err(e) => Err(std::io::Error::other(e)),
                }
            }
            _ => Ok(false),
        },
    };
    match written {
        Ok(true) => tracing::debug!(version, path = %file.path().display(), "snapshot persisted"),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            error = %e,
            version,
            path = %file.path().display(),
            "could not persist the snapshot; a restart while admin is down would serve an older one"
        ),
    }
}

/// `{"version": n}` ([`control::VersionAnswer`]).
fn version_answer(version: u64) -> Response<Body> {
    let answer = serde_json::to_string(&control::VersionAnswer { version })
        .expect("a number always serialises");
    response::json(StatusCode::OK, answer)
}

/// `GET /metrics`: the request counters and latency histogram, plus gauges
/// read from the state at scrape time. Counts since start (cache hits and
/// misses, dropped writes) are exposed as gauges by [`crate::metrics`], so
/// they are named without `_total`.
fn metrics(engine: &Engine) -> Response<Body> {
    static TEXT: HeaderValue = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    let now = qyzar_shared::time::now_ms();
    let (hits, misses) = engine.sessions.stats();
    let limiter = engine.limiter.stats();
    let live = engine.config.current(now);
    let mut extra: Vec<(&str, &str, f64)> =
        vec![
        (
            "qyzar_config_version",
            "Version of the served configuration snapshot; 0 before the first.",
            live.as_ref().map_or(0, |l| l.version()) as f64,
        ),
        (
            "qyzar_session_cache_entries",
            "Sessions held in memory (approximate).",
            engine.sessions.len() as f64,
        ),
        (
            "qyzar_traffic_recorded",
            "Verifications counted for admin since start.",
            engine.traffic.recorded.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "qyzar_traffic_counted",
            "Hot-path answers counted for admin since start.",
            engine.traffic.counted.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "qyzar_traffic_folded",
            "Answers counted under a project's folded key (its share of distinct keys was used up).",
            engine.traffic.folded.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "qyzar_traffic_delivered_rows",
            "Traffic rows admin acknowledged since start.",
            engine.traffic.delivered_rows.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "qyzar_traffic_dropped",
            "Verifications counted but never delivered to admin (queue full or refused).",
            engine.traffic.dropped.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "qyzar_traffic_undelivered_rows",
            "Traffic rows counted and not yet acknowledged by admin.",
            engine.traffic.undelivered_rows() as f64,
        ),
        (
            "qyzar_session_cache_hits",
            "Session lookups answered from memory since start.",
            hits as f64,
        ),
        (
            "qyzar_session_cache_misses",
            "Session lookups that went to the store since start.",
            misses as f64,
        ),
        (
            "qyzar_background_dropped_writes",
            "Off-hot-path writes (last-seen, deny events, device index) dropped since start because their project's share of the pending batch, or the batch, was full.",
            engine.background.dropped() as f64,
        ),
        (
            "qyzar_deny_events_sampled_out",
            "Rate-limit and anti-ATO deny events not recorded since start because their project was denied more than its share of calls between two flushes; what is recorded is a uniform sample of them.",
            engine.background.denies_sampled_out() as f64,
        ),
        (
            "qyzar_store_ready",
            "Whether the data store is connected: 0 while it is still being connected in the background (store routes answer 503 store_unavailable meanwhile).",
            if engine.store.ready() { 1.0 } else { 0.0 },
        ),
        (
            "qyzar_limiter_entries",
            "Rate-limit keys held, expired ones included until the next sweep.",
            limiter.entries as f64,
        ),
        (
            "qyzar_limiter_untracked",
            "New rate-limit keys not tracked since start because their shard was full (fail open).",
            limiter.untracked as f64,
        ),
    ];
    if let Some(live) = &live {
        extra.push((
            "qyzar_config_age_seconds",
            "Seconds since admin built the served snapshot: a growing value means pushes and pulls are failing.",
            (now - live.snapshot().issued_at_ms()) as f64 / 1000.0,
        ));
    }
    let mut res = Response::new(Full::new(Bytes::from(engine.metrics.render(&extra))));
    res.headers_mut().insert(CONTENT_TYPE, TEXT.clone());
    res
}
