//! `GET|POST /projects/client/session-verify`: is this browser's verify
//! session real? Called by customer backends on every login and checkout.
//!
//! parse (projectId from query or body; session id/token from body or the
//! project's cookies) → authorise (project secret) → decide (cache, then
//! store; reason codes of PRODUCT.md) → answer (`valid` + session facts, or
//! `valid: false` + reason; 503 only when the store is down and nothing is
//! cached — never `valid: false` for a session that may exist).

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use qyzar_shared::time::rfc3339;
use serde::{Deserialize, Serialize};

use super::common::{self, SessionCheck};
use crate::request;
use crate::response::{self, Body};
use crate::sessions::CacheStatus;
use crate::state::Engine;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Input {
    project_id: Option<String>,
    session_id: Option<String>,
    session_token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Valid<'a> {
    valid: bool,
    session_id: &'a str,
    device_id: &'a str,
    created_at: String,
    expires_at: String,
    last_seen_at: String,
    risk: &'a qyzar_shared::store::Risk,
    device: &'a qyzar_shared::store::DeviceInfo,
}

#[derive(Serialize)]
struct Invalid {
    valid: bool,
    reason: &'static str,
}

/// Touches are written at most this often per session, so a session
/// verified on every request does not rewrite its row every request.
const TOUCH_EVERY_MS: i64 = 60_000;

/// Handles one call.
pub async fn handle(
    engine: &Engine,
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let now = qyzar_shared::time::now_ms();
    match run(engine, method, query, headers, &body, now).await {
        Ok(res) => res,
        Err(e) => response::error(&e),
    }
}

async fn run(
    engine: &Engine,
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Response<Body>, qyzar_shared::ApiError> {
    // parse
    let q_project = request::query_param(query, "projectId");
    let b: Input = if *method == Method::POST {
        request::json_body(headers, body)?
    } else {
        Input::default()
    };
    let project = common::project_id(b.project_id.as_deref().or(q_project.as_deref()))?;
    // authorise
    let live = common::live(engine, now)?;
    let (cfg, _) = common::authorise(&live, &project, headers, now)?;
    // Session credentials come from the body or the forwarded cookies,
    // never the query string: a token in a URL ends up in access logs.
    let (id, token) = common::session_credentials(
        cfg,
        headers,
        b.session_id.as_deref(),
        b.session_token.as_deref(),
    );
    let id = id.ok_or_else(|| {
        qyzar_shared::ApiError::new(qyzar_shared::ErrorCode::MissingField).field("sessionId")
    })?;
    // decide
    let started = std::time::Instant::now();
    let (check, status) = common::check_session(engine, cfg, &project, id, token, now).await?;
    let store_ms = (status == CacheStatus::Miss).then(|| started.elapsed().as_secs_f64() * 1000.0);
    // answer
    let res = match check {
        SessionCheck::Invalid(reason) => response::json_of(
            StatusCode::OK,
            &Invalid {
                valid: false,
                reason,
            },
        ),
        SessionCheck::Valid(s) => {
            if now - s.last_seen_at >= TOUCH_EVERY_MS {
                let mut fresh = (*s).clone();
                fresh.last_seen_at = now;
                engine.sessions.cache(fresh);
                engine
                    .background
                    .touch(&s.project_id, &s.session_id, now, s.expires_at);
            }
            response::json_of(
                StatusCode::OK,
                &Valid {
                    valid: true,
                    session_id: s.session_id.as_str(),
                    device_id: s.device_id.as_str(),
                    created_at: rfc3339(s.created_at),
                    expires_at: rfc3339(s.expires_at),
                    last_seen_at: rfc3339(s.last_seen_at),
                    risk: &s.risk,
                    device: &s.device,
                },
            )
        }
    };
    Ok(response::cache_timing(res, status, store_ms))
}
