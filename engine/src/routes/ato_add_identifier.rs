//! `POST /projects/client/ato-add-identifier`: mark an identifier as trusted
//! on a device (after the customer's own step-up, say). Idempotent.
//!
//! parse (projectId, identifier, deviceId or sessionId + sessionToken) →
//! authorise (project secret; the session must verify when used) → store
//! durably, in the device's trusted set (what the answer lists) and in the
//! identifier's anti-ATO profile (what `ato-login-attempt` reads) → answer
//! `{deviceId, trustedIdentifiers}`.

use http::{Response, StatusCode};
use qyzar_shared::identifier::normalise;
use qyzar_shared::ids::DeviceId;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use super::ato_login_attempt::identifier;
use super::common::{self, SessionCheck};
use crate::request;
use crate::request::Headers;
use crate::response::{self, Body};
use crate::state::Engine;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    project_id: Option<String>,
    identifier: Option<String>,
    device_id: Option<String>,
    session_id: Option<String>,
    session_token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output<'a> {
    device_id: &'a str,
    trusted_identifiers: Vec<String>,
}

/// Handles one call; the body has been read by the router.
pub async fn handle(engine: &Engine, headers: &Headers<'_>, body: &[u8]) -> Response<Body> {
    match run(engine, headers, body).await {
        Ok(r) => r,
        Err(e) => response::error(&e),
    }
}

async fn run(
    engine: &Engine,
    headers: &Headers<'_>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let input: Input = request::json_body(headers, body)?;
    let project = common::project_id(input.project_id.as_deref())?;
    let identifier = identifier(input.identifier.as_deref())?;
    let body_device = match input.device_id.as_deref() {
        Some(d) => Some(DeviceId::parse(d).map_err(|_| {
            ApiError::with_message(ErrorCode::InvalidField, "deviceId is not a device id")
                .field("deviceId")
        })?),
        None => None,
    };
    // authorise
    let live = common::live(engine, now)?;
    let (cfg, _) = common::authorise(&live, &project, headers, now)?;
    let identifier = normalise(identifier, cfg.settings.ato.case_sensitive_identifiers)?;
    let device = match body_device {
        Some(d) => d,
        None => {
            let (sid, token) = common::session_credentials(
                cfg,
                headers,
                input.session_id.as_deref(),
                input.session_token.as_deref(),
            );
            let sid = sid.ok_or_else(|| {
                ApiError::with_message(
                    ErrorCode::MissingField,
                    "deviceId or sessionId + sessionToken is required",
                )
                .field("deviceId")
            })?;
            match common::check_session(engine, cfg, &project, sid, token, now)
                .await?
                .0
            {
                SessionCheck::Valid(s) => s.to_device_id(),
                SessionCheck::Invalid(reason) => {
                    return Err(ApiError::with_message(
                        ErrorCode::InvalidField,
                        format!("the session is not valid: {reason}"),
                    )
                    .field("sessionId"));
                }
            }
        }
    };
    // decide: durable before the answer; adding twice changes nothing.
    let unavailable = |e: qyzar_store::StoreError| {
        tracing::warn!(error = %e, "trusted identifier not stored");
        ApiError::new(ErrorCode::StoreUnavailable)
    };
    let trusted = engine
        .store
        .add_trusted_identifier(&project, &device, &identifier)
        .await
        .map_err(unavailable)?;
    let window_ms = i64::from(cfg.settings.ato.failed_attempts_window_seconds).saturating_mul(1000);
    let (loaded, _) = engine
        .profiles
        .get(
            &*engine.store,
            &project,
            &identifier,
            &identifier,
            window_ms,
            now,
        )
        .await
        .map_err(unavailable)?;
    let update = engine
        .profiles
        .hold(&project, &identifier, loaded)
        .trust(&device, now);
    if update != Default::default() {
        if let Err(e) = engine
            .store
            .record_ato(&project, &identifier, None, update)
            .await
        {
            engine.profiles.forget(&project, &identifier);
            return Err(unavailable(e));
        }
    }
    // answer
    Ok(response::json_of(
        StatusCode::OK,
        &Output {
            device_id: device.as_str(),
            trusted_identifiers: trusted,
        },
    ))
}
