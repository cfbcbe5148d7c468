//! `GET /ping`: liveness for load balancers. No auth, no store, a fixed body.

use http::Response;

use crate::response::{self, Body};

/// Answers `200 {"ok":true,"service":"engine"}`.
pub fn handle() -> Response<Body> {
    response::pong()
}
