//! `GET /connect.js`: the browser script, embedded in the binary and served
//! with a short public cache so a fix reaches pages within the hour.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::response::{self, Body};

/// The script's source.
pub const SCRIPT: &str = include_str!("../../assets/connect.js");

/// Serves the script.
pub fn handle() -> Response<Body> {
    let mut res = response::json(StatusCode::OK, Bytes::from_static(SCRIPT.as_bytes()));
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}
