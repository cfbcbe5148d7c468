//! Routing on `(method, path)`: a plain match, no framework, so the cost of
//! finding a route is a few string comparisons. The router also does what
//! every route needs: the body cap, `405` with `Allow`, `Idempotency-Key`
//! replay for mutating routes, metrics and the total in `Server-Timing`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use qyzar_shared::{ApiError, ErrorCode};

use crate::client_addr::PeerAddr;
use crate::request::Headers;
use crate::response::{self, Body};
use crate::routes::{self, common};
use crate::state::{Engine, IdempotencySlot, StoredAnswer};

/// Routes one request that came in from `peer` (the socket's address,
/// which decides whether forwarding headers are believed; `None` for a
/// request that did not come through the server). Passed as a value, not
/// in the request's extensions: the first extension allocates a map on
/// every request.
pub async fn route<B>(engine: &Engine, peer: Option<PeerAddr>, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (res, timing) = route_timed(engine, peer, req).await;
    timing.apply(res)
}

/// [`route`], with the total left out of `Server-Timing` and given apart,
/// with the clock read that ended it ([`response::Timing`]): hyper's path
/// adds it with [`response::Timing::apply`].
pub async fn route_timed<B>(
    engine: &Engine,
    peer: Option<PeerAddr>,
    req: Request<B>,
) -> (Response<Body>, response::Timing)
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    let req = Incoming {
        method: parts.method.clone(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: Headers::map(&parts.headers),
        body: RequestBody::Stream(body),
    };
    route_incoming(engine, peer, req).await
}

/// A request as the router reads it: its target split into path and query,
/// its header fields read in place ([`Headers`]), and its body, read whole
/// already (the HTTP/1.1 fast path) or still to read (hyper's path). The
/// fast path builds no `http::Request` at all: no `Uri`, no `HeaderMap`,
/// no copy of the request's bytes (BENCHMARKS.md, "Requests read in
/// place").
pub struct Incoming<'a, B> {
    /// The method.
    pub method: Method,
    /// The target's path (`/projects/client/session-verify`).
    pub path: &'a str,
    /// The target's query, without the `?`.
    pub query: Option<&'a str>,
    /// The header fields.
    pub headers: Headers<'a>,
    /// The body.
    pub body: RequestBody<'a, B>,
}

/// A request's body, read or to read.
pub enum RequestBody<'a, B> {
    /// Read whole, within the body cap, before routing.
    Read(&'a [u8]),
    /// To read when the route wants it ([`crate::request::read_body`]).
    Stream(B),
}

/// The body's bytes as a route takes them: borrowed from the connection's
/// buffer on the fast path, read into `Bytes` on hyper's.
enum BodyBytes<'a> {
    Borrowed(&'a [u8]),
    Read(Bytes),
}

impl std::ops::Deref for BodyBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Borrowed(b) => b,
            Self::Read(b) => b,
        }
    }
}

/// Routes `req`, with the router's total and the clock read that ended it
/// given apart ([`response::Timing`]): the HTTP/1.1 fast path writes the
/// total as it encodes the answer, dates the answer by that instant and
/// starts the connection's next header deadline from it, so a request there
/// costs two clock reads instead of four (they were 2–3 % of the core under
/// session-verify and rate-limit-check) and no header map rewrite.
pub async fn route_incoming<B>(
    engine: &Engine,
    peer: Option<PeerAddr>,
    req: Incoming<'_, B>,
) -> (Response<Body>, response::Timing)
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let (name, res) = dispatch(engine, peer, req, started).await;
    let answered = Instant::now();
    let micros = answered.saturating_duration_since(started).as_micros() as u64;
    engine.metrics.record(name, res.status().as_u16(), micros);
    let timing = response::Timing {
        at: answered,
        total_micros: Some(micros),
    };
    (res, timing)
}

async fn dispatch<B>(
    engine: &Engine,
    peer: Option<PeerAddr>,
    req: Incoming<'_, B>,
    started: Instant,
) -> (&'static str, Response<Body>)
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Incoming {
        method,
        path,
        query: q,
        mut headers,
        body,
    } = req;
    // Forwarding headers are believed only from trusted proxies; after this
    // every route may read the headers as they are, and the routes that need
    // the caller's address take `client` (see `client_addr.rs`).
    let client = crate::client_addr::normalise(
        &mut headers,
        peer,
        &engine.options.trusted_proxies,
        engine.options.region_header.as_ref(),
    );
    let m = &method;
    let h = &headers;
    macro_rules! body {
        () => {
            match body {
                RequestBody::Read(b) => BodyBytes::Borrowed(b),
                RequestBody::Stream(s) => match crate::request::read_body(h, s).await {
                    Ok(b) => BodyBytes::Read(b),
                    Err(e) => return ("other", response::error(&e)),
                },
            }
        };
    }
    // The routes whose state machines are large (`/connect`, the anti-ATO
    // routes, mint behind its idempotency wrapper) are boxed: otherwise
    // every request, `/ping` included, would allocate and copy a future of
    // their size (3 360 bytes instead of 1 600; `tests` below).
    match path {
        "/ping" => match *m {
            Method::GET | Method::HEAD => ("ping", routes::ping::handle()),
            _ => ("ping", response::method_not_allowed("GET, HEAD")),
        },
        "/projects/client/session-verify" => match *m {
            Method::GET => (
                "session_verify",
                routes::session_verify::handle(engine, m, q, h, &[]).await,
            ),
            Method::POST => {
                let b = body!();
                (
                    "session_verify",
                    routes::session_verify::handle(engine, m, q, h, &b).await,
                )
            }
            _ => ("session_verify", response::method_not_allowed("GET, POST")),
        },
        "/projects/client/token" => match *m {
            Method::POST => {
                let b = body!();
                (
                    "token",
                    Box::pin(idempotent(engine, "token", h, &b, || {
                        routes::token::handle(engine, h, &b)
                    }))
                    .await,
                )
            }
            _ => ("token", response::method_not_allowed("POST")),
        },
        "/projects/client/token-verify" => match *m {
            Method::GET => (
                "token_verify",
                routes::token_verify::handle(engine, m, q, h, &[]).await,
            ),
            Method::POST => {
                let b = body!();
                (
                    "token_verify",
                    routes::token_verify::handle(engine, m, q, h, &b).await,
                )
            }
            _ => ("token_verify", response::method_not_allowed("GET, POST")),
        },
        "/projects/client/jwks" => match *m {
            Method::GET => ("jwks", routes::jwks::handle(engine, q)),
            _ => ("jwks", response::method_not_allowed("GET")),
        },
        "/connect" => match *m {
            Method::POST => {
                let b = body!();
                let res = Box::pin(idempotent(engine, "connect", h, &b, || {
                    routes::connect::handle(engine, h, client.ip, &b)
                }))
                .await;
                ("connect", routes::cors::reflect_if_allowed(engine, h, res))
            }
            Method::OPTIONS => ("preflight", routes::cors::preflight(engine, h)),
            _ => ("connect", response::method_not_allowed("POST, OPTIONS")),
        },
        "/connect/reverify" => match *m {
            Method::POST => {
                let b = body!();
                let res = Box::pin(routes::reverify::handle(engine, h, client.ip, &b)).await;
                (
                    "connect_reverify",
                    routes::cors::reflect_if_allowed(engine, h, res),
                )
            }
            Method::OPTIONS => ("preflight", routes::cors::preflight(engine, h)),
            _ => (
                "connect_reverify",
                response::method_not_allowed("POST, OPTIONS"),
            ),
        },
        "/connect.js" => match *m {
            Method::GET | Method::HEAD => ("connect_js", routes::connect_js::handle()),
            _ => ("connect_js", response::method_not_allowed("GET, HEAD")),
        },
        "/projects/client/rate-limit-check" => match *m {
            Method::POST => {
                let b = body!();
                (
                    "rate_limit_check",
                    routes::rate_limit_check::handle(engine, h, &b, started).await,
                )
            }
            _ => ("rate_limit_check", response::method_not_allowed("POST")),
        },
        "/projects/client/ato-login-attempt" => match *m {
            Method::POST => {
                let b = body!();
                let f = || routes::ato_login_attempt::handle(engine, h, &b);
                (
                    "ato_login_attempt",
                    Box::pin(idempotent(engine, "ato_login_attempt", h, &b, f)).await,
                )
            }
            _ => ("ato_login_attempt", response::method_not_allowed("POST")),
        },
        "/projects/client/ato-add-identifier" => match *m {
            Method::POST => {
                let b = body!();
                let f = || routes::ato_add_identifier::handle(engine, h, &b);
                (
                    "ato_add_identifier",
                    Box::pin(idempotent(engine, "ato_add_identifier", h, &b, f)).await,
                )
            }
            _ => ("ato_add_identifier", response::method_not_allowed("POST")),
        },
        _ => ("other", response::error_code(ErrorCode::RouteNotFound)),
    }
}

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Runs `f` once per (project, route, credential, `Idempotency-Key`): a
/// retry gets the first answer back (status, body and cookies) and writes
/// nothing twice; the same key with a different body is `409`. Concurrent
/// retries wait for the first. Without the header, `f` just runs.
///
/// Authentication comes first: the project is read from the body and the
/// caller's credential checked against the served configuration (the
/// project secret; for `/connect`, which has none, the `Origin` must be
/// allowed and the origin token live and bound to it) before any state
/// exists. A caller that does not pass is answered by the route as if it
/// had sent no key (which refuses it) and leaves nothing behind.
///
/// What a key guarantees: a replay goes only to a caller of the same
/// project and route presenting the same credential (the same secret; for
/// `/connect` the same origin token from the same `Origin`) and the same
/// body. Only successful answers are kept, so a retry after a failure (a
/// 4xx, a 503) runs again. Answers are kept for at most
/// [`crate::state::StateOptions::idempotency_ttl`] and in memory only,
/// within the project's byte share of the idempotency cache
/// ([`crate::budget`]): when the project's share (or the engine's total)
/// is full, its least used answers go first, and an answer larger than a
/// share allows is not kept. A retry whose answer has gone, or that reaches
/// another engine or a restarted one, runs again; keys are a best-effort
/// guard against double writes, not a ledger.
pub async fn idempotent<F, Fut>(
    engine: &Engine,
    route: &str,
    headers: &Headers<'_>,
    body: &[u8],
    f: F,
) -> Response<Body>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Response<Body>>,
{
    static IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");
    let Some(key) = headers.get(&IDEMPOTENCY_KEY) else {
        return f().await;
    };
    let Ok(key) = key.to_str() else {
        return response::error(&ApiError::new(ErrorCode::InvalidField).field("Idempotency-Key"));
    };
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return response::error(
            &ApiError::with_message(
                ErrorCode::InvalidField,
                "Idempotency-Key must be 1 to 255 characters",
            )
            .field("Idempotency-Key"),
        );
    }
    let now = qyzar_shared::time::now_ms();
    let Some((project, caller)) = authenticated(engine, route, headers, body, now) else {
        return f().await;
    };
    let slot = IdempotencySlot {
        caller,
        key: key.into(),
    };
    let fingerprint = crate::routes::common::sha256(body);
    let cache = &engine.idempotency;
    let shard = cache.shard(&project);
    let ttl_ms = i64::try_from(engine.options.idempotency_ttl.as_millis()).unwrap_or(i64::MAX);
    let guard = loop {
        match cache.get_or_guard(&shard, &slot).await {
            Ok(stored) if now.saturating_sub(stored.stored_at) >= ttl_ms => {
                cache.remove(&project, &slot);
            }
            Ok(stored) => {
                cache.counters().hit();
                return replay(&stored, &fingerprint);
            }
            Err(guard) => break guard,
        }
    };
    cache.counters().miss();
    let res = f().await;
    if !res.status().is_success() {
        // Dropping the guard unfilled leaves no slot; a waiting retry runs.
        return res;
    }
    let (parts, body) = res.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    guard.insert(Arc::new(StoredAnswer {
        fingerprint,
        stored_at: now,
        status: parts.status.as_u16(),
        body: bytes.clone(),
        cookies: parts
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .cloned()
            .collect(),
    }));
    Response::from_parts(parts, http_body_util::Full::new(bytes))
}

/// The stored answer again, or `409` when the body differs.
fn replay(stored: &StoredAnswer, fingerprint: &[u8; 32]) -> Response<Body> {
    if stored.fingerprint != *fingerprint {
        return response::error(&ApiError::new(ErrorCode::IdempotencyKeyReused));
    }
    let mut res = response::json(
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
        stored.body.clone(),
    );
    for c in &stored.cookies {
        res.headers_mut()
            .append(http::header::SET_COOKIE, c.clone());
    }
    res.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    res
}

/// The project and a hash of (route, proven credential), when the caller
/// authenticates for `route`; `None` otherwise (the route then refuses it).
fn authenticated(
    engine: &Engine,
    route: &str,
    headers: &Headers<'_>,
    body: &[u8],
    now: i64,
) -> Option<(String, [u8; 32])> {
    let fields = serde_json::from_slice::<AuthFields<'_>>(body).ok()?;
    let project = common::project_id(fields.project_id.as_deref()).ok()?;
    let live = common::live(engine, now).ok()?;
    let mut caller = Vec::with_capacity(160);
    caller.extend_from_slice(route.as_bytes());
    caller.push(0);
    if route == "connect" {
        let (cfg, _) = live.project(project.as_str())?;
        let token = fields.origin_token.as_deref()?;
        let origin = common::origin_authenticated(cfg, headers, token, now)?;
        caller.extend_from_slice(token.as_bytes());
        caller.push(0);
        caller.extend_from_slice(origin.as_bytes());
    } else {
        common::authorise(&live, &project, headers, now).ok()?;
        caller.extend_from_slice(crate::request::project_secret(headers)?.as_bytes());
    }
    Some((project.to_string(), common::sha256(&caller)))
}

/// What authentication needs from a body, read leniently (the route
/// validates the body in full).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthFields<'a> {
    #[serde(borrow)]
    project_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    origin_token: Option<std::borrow::Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http::Request;
    use http_body_util::Full;
    use qyzar_store::EmbeddedStore;

    use crate::state::Engine;

    /// The router's future is copied into place for every request (into
    /// the connection's task on the fast path, into a box on hyper's), so
    /// its size is paid on every call of every route: it is the size of the
    /// largest route's state machine unless that route is boxed on its
    /// own. `/connect` and the anti-ATO routes made it 3 360 bytes; a route
    /// that grows past this bound should be boxed in `dispatch` too.
    #[test]
    fn the_router_future_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(EmbeddedStore::open(dir.path().join("engine.redb")).unwrap());
            let engine = Engine::new(store, Default::default());
            let req = Request::builder()
                .uri("/ping")
                .body(Full::new(Bytes::new()))
                .unwrap();
            // hyper's path: the request's parts are held beside the router.
            let f = super::route(&engine, None, req);
            let size = std::mem::size_of_val(&f);
            assert!(
                size <= 2304,
                "the router's future on hyper's path is {size} bytes"
            );
            assert_eq!(f.await.status(), 200);
            // The fast path's: the request as it lies in the buffer.
            let fields = http::HeaderMap::new();
            let req = super::Incoming::<http_body_util::Empty<Bytes>> {
                method: http::Method::GET,
                path: "/ping",
                query: None,
                headers: super::Headers::map(&fields),
                body: super::RequestBody::Read(&[]),
            };
            let f = super::route_incoming(&engine, None, req);
            let size = std::mem::size_of_val(&f);
            assert!(size <= 2048, "the router's future is {size} bytes");
            assert_eq!(f.await.0.status(), 200);
        });
    }
}
