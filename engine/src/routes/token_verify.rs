//! `GET|POST /projects/client/token-verify`: is this client JWT ours, for
//! this project, unexpired, and is its session still live?
//!
//! parse (token from query, body, `X-Qyzar-Client-Token`, or Bearer when the
//! secret travels in `X-Qyzar-Project-Secret`) → authorise (project secret)
//! → decide (verified-token cache, else signature + claims; bound tokens
//! follow their session) → answer `{valid, reason?, sessionId?, metadata,
//! expiresAt}`.

use std::sync::Arc;

use base64::Engine as _;
use http::{HeaderMap, Method, Response, StatusCode};
use qyzar_shared::crypto::{verify, JwtError};
use qyzar_shared::time::rfc3339;
use qyzar_shared::ApiError;
use serde::{Deserialize, Serialize};

use super::common::{self, SessionCheck};
use crate::request;
use crate::response::{self, Body};
use crate::sessions::CacheStatus;
use crate::state::{Engine, VerifiedToken};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Input {
    project_id: Option<String>,
    client_token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output<'a> {
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    metadata: &'a serde_json::Value,
    /// Always present (PRODUCT.md lists it); `null` on an invalid token,
    /// whose claims are not trusted.
    expires_at: Option<String>,
}

static NULL: serde_json::Value = serde_json::Value::Null;

/// Handles one call.
pub async fn handle(
    engine: &Engine,
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Body> {
    match run(engine, method, query, headers, body).await {
        Ok(r) => r,
        Err(e) => response::error(&e),
    }
}

fn invalid(reason: &'static str) -> Response<Body> {
    response::json_of(
        StatusCode::OK,
        &Output {
            valid: false,
            reason: Some(reason),
            session_id: None,
            metadata: &NULL,
            expires_at: None,
        },
    )
}

async fn run(
    engine: &Engine,
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let q_project = request::query_param(query, "projectId");
    let q_token = request::query_param(query, "clientToken");
    let b: Input = if *method == Method::POST {
        request::json_body(headers, body)?
    } else {
        Input::default()
    };
    let project = common::project_id(b.project_id.as_deref().or(q_project.as_deref()))?;
    let header_token = headers
        .get("x-qyzar-client-token")
        .and_then(|v| v.to_str().ok());
    let bearer_token = if headers.contains_key("x-qyzar-project-secret") {
        request::bearer(headers)
    } else {
        None
    };
    let token = b
        .client_token
        .as_deref()
        .or(q_token.as_deref())
        .or(header_token)
        .or(bearer_token);
    let token = token
        .ok_or_else(|| ApiError::new(qyzar_shared::ErrorCode::MissingField).field("clientToken"))?;
    // authorise
    let live = common::live(engine, now)?;
    let (cfg, keys) = common::authorise(&live, &project, headers, now)?;
    // decide: the cache skips the signature for a token verified before.
    let (verified, cache) = match engine.tokens.get(token) {
        Some(v) if *v.project == *project.as_str() => (v, CacheStatus::Hit),
        _ => match verify(token, &keys.verify, now / 1000, project.as_str()) {
            Ok(claims) => {
                let v = Arc::new(VerifiedToken {
                    claims,
                    project: project.as_str().into(),
                });
                engine.tokens.insert(token.into(), Arc::clone(&v));
                (v, CacheStatus::Miss)
            }
            Err(JwtError::BadSignature) if other_audience(token, project.as_str()) => {
                return Ok(invalid("wrong_project"))
            }
            Err(e) => return Ok(invalid(e.reason())),
        },
    };
    let claims = &verified.claims;
    if claims.exp * 1000 <= now {
        return Ok(invalid("expired"));
    }
    if let Some(sid) = &claims.sid {
        match common::session_state(engine, cfg, &project, sid, now).await {
            Ok((SessionCheck::Invalid("revoked" | "opted_out"), _)) => {
                return Ok(invalid("session_revoked"))
            }
            Ok((SessionCheck::Invalid("not_found" | "expired" | "project_mismatch"), _)) => {
                return Ok(invalid("session_expired"))
            }
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
    // answer
    let res = response::json_of(
        StatusCode::OK,
        &Output {
            valid: true,
            reason: None,
            session_id: claims.sid.as_deref(),
            metadata: claims.md.as_ref().unwrap_or(&NULL),
            expires_at: Some(rfc3339(claims.exp * 1000)),
        },
    );
    Ok(response::timing(
        res,
        if cache == CacheStatus::Hit {
            "token;desc=cached"
        } else {
            "token;desc=verified"
        },
    ))
}

/// Whether an unverifiable token names another audience. Reading `aud`
/// without trusting it only picks the reason code (`wrong_project` rather
/// than `bad_signature`); the token is refused either way.
fn other_audience(token: &str, project: &str) -> bool {
    let Some(payload) = token.split('.').nth(1) else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return false;
    };
    #[derive(Deserialize)]
    struct Aud {
        aud: Option<String>,
    }
    serde_json::from_slice::<Aud>(&bytes)
        .ok()
        .and_then(|a| a.aud)
        .is_some_and(|a| a != project)
}
