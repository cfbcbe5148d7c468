//! Building answers: the shared error shape, JSON bodies, and the fixed
//! answers that are the same every time and so are built once.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, SERVER};
use http::{Response, StatusCode};
use http_body_util::Full;
use qyzar_shared::{ApiError, ErrorCode};

/// The body type of every engine answer: one contiguous buffer.
pub type Body = Full<Bytes>;

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static SERVER_NAME: HeaderValue = HeaderValue::from_static("qyzar-engine");

/// A JSON answer with the given status and pre-serialised body.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, JSON.clone());
    h.insert(SERVER, SERVER_NAME.clone());
    res
}

/// An answer in the shared error shape; the status comes from the code table.
pub fn error(err: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, err.to_json())
}

/// An error answer with the code's default message.
pub fn error_code(code: ErrorCode) -> Response<Body> {
    error(&ApiError::new(code))
}

/// `405` with the `Allow` header listing the methods the route takes.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = error_code(ErrorCode::MethodNotAllowed);
    res.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    res
}

/// `{"ok":true}`: the answer of `GET /ping`, fixed.
pub fn pong() -> Response<Body> {
    json(
        StatusCode::OK,
        Bytes::from_static(br#"{"ok":true,"service":"engine"}"#),
    )
}

/// Serialises `value` as the JSON body of a `status` answer.
pub fn json_of<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(b) => json(status, b),
        Err(e) => {
            tracing::error!(error = %e, "answer did not serialise");
            error_code(ErrorCode::Internal)
        }
    }
}

/// Adds a `Server-Timing` entry (e.g. `cache;desc=hit`) to an answer.
pub fn timing(mut res: Response<Body>, entry: &str) -> Response<Body> {
    use http::header::HeaderName;
    static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
    let value = match res
        .headers()
        .get(&SERVER_TIMING)
        .and_then(|v| v.to_str().ok())
    {
        Some(old) => format!("{old}, {entry}"),
        None => entry.to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(&SERVER_TIMING, v);
    }
    res
}

/// `Server-Timing` for an answer that came from the session cache or store.
pub fn cache_timing(
    res: Response<Body>,
    status: crate::sessions::CacheStatus,
    store_ms: Option<f64>,
) -> Response<Body> {
    let res = timing(res, &format!("cache;desc={}", status.as_str()));
    match store_ms {
        Some(ms) => timing(res, &format!("store;dur={ms:.2}")),
        None => res,
    }
}
