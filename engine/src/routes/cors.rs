//! CORS for the browser routes (`/connect`, `/connect/reverify`): reflect an
//! origin only when a project allows it, with credentials, never `*`.

use http::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ORIGIN,
    VARY,
};
use http::{Response, StatusCode};
use qyzar_shared::ErrorCode;

use super::common;
use crate::request::Headers;
use crate::response::{self, Body};
use crate::state::Engine;

/// The request's `Origin`, if it is a plain header value.
pub fn origin<'h>(headers: &'h Headers<'_>) -> Option<&'h str> {
    headers.get(&ORIGIN).and_then(|v| v.to_str().ok())
}

/// Adds the CORS answer headers for an allowed `origin`.
pub fn allow(mut res: Response<Body>, origin: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(origin) {
        let h = res.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.append(VARY, HeaderValue::from_static("Origin"));
    }
    res
}

/// `OPTIONS` on a browser route: `204` with the allowed method and headers
/// when some project allows the origin (a preflight carries no project id);
/// `403 origin_not_allowed` otherwise.
pub fn preflight(engine: &Engine, headers: &Headers<'_>) -> Response<Body> {
    let now = qyzar_shared::time::now_ms();
    let live = match common::live(engine, now) {
        Ok(l) => l,
        Err(e) => return response::error(&e),
    };
    let Some(o) = origin(headers).filter(|o| live.any_project_allows(o)) else {
        return response::error_code(ErrorCode::OriginNotAllowed);
    };
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, idempotency-key"),
    );
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    allow(res, o)
}

/// Reflects the request's `Origin` on an answer when some project allows it:
/// used for every answer of the browser routes, errors and idempotent
/// replays included, so the script can read why a call failed. Origins no
/// project allows get no CORS headers at all.
pub fn reflect_if_allowed(
    engine: &Engine,
    headers: &Headers<'_>,
    res: Response<Body>,
) -> Response<Body> {
    let Some(o) = origin(headers) else { return res };
    match engine.config.current(qyzar_shared::time::now_ms()) {
        Some(live) if live.any_project_allows(o) => allow(res, o),
        _ => res,
    }
}
