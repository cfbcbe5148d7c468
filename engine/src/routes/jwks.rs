//! `GET /projects/client/jwks?projectId=`: the project's Ed25519 public keys
//! (current and in-grace), so backends can verify EdDSA client tokens
//! offline. Public: no secret needed. The body is built once per snapshot.

use http::{Response, StatusCode};

use super::common;
use crate::request;
use crate::response::{self, Body};
use crate::state::Engine;

/// Handles one call.
pub fn handle(engine: &Engine, query: Option<&str>) -> Response<Body> {
    let now = qyzar_shared::time::now_ms();
    let run = || {
        let project = common::project_id(request::query_param(query, "projectId").as_deref())?;
        let live = common::live(engine, now)?;
        let (_, keys) = live
            .project(project.as_str())
            .ok_or(qyzar_shared::ApiError::new(
                qyzar_shared::ErrorCode::ProjectNotFound,
            ))?;
        Ok::<_, qyzar_shared::ApiError>(response::json(StatusCode::OK, keys.jwks.clone()))
    };
    run().unwrap_or_else(|e| response::error(&e))
}
