//! `POST /projects/client/token`: mint a short-lived client JWT for a browser.
//!
//! parse (projectId, optional session, ttl, metadata) → authorise (project
//! secret) → decide (a bound token never outlives its session; HS256 with
//! the project's derived key unless the project chose EdDSA) → answer
//! `{clientToken, expiresAt, sessionId?}`. `Idempotency-Key` is honoured by
//! the router.

use http::{HeaderMap, Response, StatusCode};
use qyzar_shared::crypto::{random_token, sign_eddsa, sign_hs256, Claims};
use qyzar_shared::settings::TokenAlgorithm;
use qyzar_shared::time::rfc3339;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use super::common::{self, SessionCheck};
use crate::request;
use crate::response::{self, Body};
use crate::state::Engine;

/// Largest metadata document a token may carry: tokens travel in headers.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Shortest and longest lifetime a caller may ask for.
pub const TTL_RANGE: std::ops::RangeInclusive<u32> = 30..=86_400;
/// The `iss` of every client token.
pub const ISSUER: &str = "qyzar";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    project_id: Option<String>,
    session_id: Option<String>,
    session_token: Option<String>,
    ttl_seconds: Option<u32>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output<'a> {
    client_token: String,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
}

/// Handles one call; the body has been read by the router.
pub async fn handle(engine: &Engine, headers: &HeaderMap, body: &[u8]) -> Response<Body> {
    match run(engine, headers, body).await {
        Ok(r) => r,
        Err(e) => response::error(&e),
    }
}

async fn run(
    engine: &Engine,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let input: Input = request::json_body(headers, body)?;
    let project = common::project_id(input.project_id.as_deref())?;
    if let Some(t) = input.ttl_seconds {
        if !TTL_RANGE.contains(&t) {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "ttlSeconds must be between 30 and 86400",
            )
            .field("ttlSeconds"));
        }
    }
    let md_len = input
        .metadata
        .as_ref()
        .map_or(0, |m| serde_json::to_vec(m).map_or(usize::MAX, |v| v.len()));
    if md_len > MAX_METADATA_BYTES {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "metadata is larger than 4096 bytes",
        )
        .field("metadata"));
    }
    // authorise
    let live = common::live(engine, now)?;
    let (cfg, keys) = common::authorise(&live, &project, headers, now)?;
    // decide
    let ttl = input
        .ttl_seconds
        .unwrap_or(cfg.settings.client_token_ttl_seconds);
    let mut exp_ms = now + i64::from(ttl) * 1000;
    let (sid, token) = common::session_credentials(
        cfg,
        headers,
        input.session_id.as_deref(),
        input.session_token.as_deref(),
    );
    let mut bound = None;
    if let Some(sid) = sid {
        match common::check_session(engine, cfg, &project, sid, token, now)
            .await?
            .0
        {
            SessionCheck::Valid(s) => {
                exp_ms = exp_ms.min(s.expires_at);
                bound = Some(s);
            }
            SessionCheck::Invalid(reason) => {
                return Err(ApiError::with_message(
                    ErrorCode::InvalidField,
                    format!("the session is not valid: {reason}"),
                )
                .field("sessionId"));
            }
        }
    }
    let md = input.metadata.map(serde_json::Value::Object);
    let sub = md
        .as_ref()
        .and_then(|m| {
            ["identifier", "email", "phone"]
                .iter()
                .find_map(|k| m.get(*k).and_then(|v| v.as_str()))
        })
        .map(str::to_owned)
        .or_else(|| bound.as_ref().map(|s| s.device_id.to_string()))
        .unwrap_or_else(|| "anonymous".to_owned());
    let claims = Claims {
        iss: ISSUER.to_owned(),
        aud: project.to_string(),
        sub,
        iat: now / 1000,
        exp: exp_ms / 1000,
        jti: random_token("tok_", 16),
        sid: bound.as_ref().map(|s| s.session_id.to_string()),
        md,
    };
    let client_token = match cfg.settings.token_algorithm {
        TokenAlgorithm::Hs256 => keys.hs256.as_ref().map(|k| sign_hs256(&claims, k)),
        TokenAlgorithm::EdDsa => keys.ed25519.as_ref().map(|k| sign_eddsa(&claims, k)),
    };
    let client_token = client_token.ok_or_else(|| {
        tracing::error!(project = %project, "no signing key in the snapshot for the project's algorithm");
        ApiError::new(ErrorCode::NotConfigured)
    })?;
    // answer
    Ok(response::json_of(
        StatusCode::OK,
        &Output {
            client_token,
            expires_at: rfc3339(claims.exp * 1000),
            session_id: claims.sid.as_deref(),
        },
    ))
}
