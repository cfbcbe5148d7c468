//! `POST /projects/client/ato-login-attempt`: log a login attempt and say
//! whether it looks like an account takeover.
//!
//! parse (projectId, identifier, success, ip?, session from body or cookies,
//! deviceId?) → authorise (project secret) → decide (prior successful login,
//! failed-attempt velocity in the project's window, known/trusted device,
//! region change, bot flag → score, action, reasons, changes) → store the
//! attempt durably → answer.
//!
//! A session that does not verify is treated as absent (the attempt is
//! scored without its device) rather than refused: the login is the
//! customer's, and a missing device is itself a risk signal.

use std::net::IpAddr;

use http::{HeaderMap, Response, StatusCode};
use qyzar_shared::identifier::normalise;
use qyzar_shared::ids::DeviceId;
use qyzar_shared::store::LoginAttempt;
use qyzar_shared::time::rfc3339;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use super::common::{self, SessionCheck};
use super::connect;
use crate::decide::{self, Attempt, History, PriorSnapshot, Thresholds};
use crate::request;
use crate::response::{self, Body};
use crate::state::Engine;

/// Longest identifier once normalised (an email, a username, a user id).
pub const MAX_IDENTIFIER: usize = qyzar_shared::identifier::MAX_BYTES;
/// How many past attempts are read to find the prior login and the device history.
const HISTORY: usize = 200;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    project_id: Option<String>,
    identifier: Option<String>,
    success: Option<bool>,
    ip: Option<String>,
    session_id: Option<String>,
    session_token: Option<String>,
    device_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Prior {
    device_id: Option<String>,
    ip: Option<String>,
    region: Option<String>,
    platform: Option<String>,
    browser: Option<String>,
    at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    #[serde(flatten)]
    decision: decide::AtoDecision,
    last_login_at: Option<String>,
    prior_snapshot: Option<Prior>,
}

/// Parses an identifier field: present, and passing the checks that need
/// no project settings ([`qyzar_shared::identifier::precheck`]). The raw
/// text is returned; it is normalised once the project (and so its
/// `ato.caseSensitiveIdentifiers`) is known.
pub fn identifier(raw: Option<String>) -> Result<String, ApiError> {
    let id = raw.ok_or_else(|| ApiError::new(ErrorCode::MissingField).field("identifier"))?;
    qyzar_shared::identifier::precheck(&id)?;
    Ok(id)
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
    let identifier = identifier(input.identifier)?;
    let success = input
        .success
        .ok_or_else(|| ApiError::new(ErrorCode::MissingField).field("success"))?;
    let ip: Option<IpAddr> = match input.ip.as_deref() {
        Some(s) => Some(s.trim().parse().map_err(|_| {
            ApiError::with_message(ErrorCode::InvalidField, "ip is not an IP address").field("ip")
        })?),
        None => None,
    };
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
    let identifier = normalise(&identifier, cfg.settings.ato.case_sensitive_identifiers)?;
    // decide
    let (sid, token) = common::session_credentials(
        cfg,
        headers,
        input.session_id.as_deref(),
        input.session_token.as_deref(),
    );
    let session = match sid {
        Some(sid) => match common::check_session(engine, cfg, &project, sid, token, now)
            .await?
            .0
        {
            SessionCheck::Valid(s) => Some(s),
            SessionCheck::Invalid(_) => None,
        },
        None => None,
    };
    let device_id = session.as_ref().map(|s| s.to_device_id()).or(body_device);
    // The caller is the customer's backend: `X-Forwarded-For` would be its
    // address, so the database is asked about the body's `ip` only.
    let region = connect::region_for(engine, headers, ip)
        .or_else(|| session.as_ref().and_then(|s| s.region().map(str::to_owned)));
    let platform = session.as_ref().map(|s| s.platform().to_owned());
    let browser = session.as_ref().map(|s| s.browser().to_owned());
    let bot = session.as_ref().is_some_and(|s| s.risk_bot);

    let unavailable = |e: qyzar_shared::store::StoreError| {
        tracing::warn!(error = %e, "ato history read failed");
        ApiError::new(ErrorCode::StoreUnavailable)
    };
    let past = engine
        .store
        .recent_login_attempts(&project, &identifier, 0, HISTORY)
        .await
        .map_err(unavailable)?;
    let window_start = now.saturating_sub(
        i64::from(cfg.settings.ato.failed_attempts_window_seconds).saturating_mul(1000),
    );
    let recent_failures = past
        .iter()
        .filter(|a| !a.success && a.at >= window_start)
        .count() as u32;
    let prior_attempt = past.iter().find(|a| a.success);
    let prior = prior_attempt.map(PriorSnapshot::from_attempt);
    let known_device = device_id.as_ref().is_some_and(|d| {
        past.iter()
            .any(|a| a.success && a.device_id.as_ref() == Some(d))
    });
    let trusted = match &device_id {
        Some(d) => engine
            .store
            .trusted_identifiers(&project, d)
            .await
            .map_err(unavailable)?
            .contains(&identifier),
        None => false,
    };
    let thresholds = Thresholds {
        challenge: cfg.settings.ato.challenge_score.min(100) as u8,
        block: cfg.settings.ato.block_score.min(100) as u8,
    };
    let decision = decide::score_login(
        &Attempt {
            ip,
            region: region.as_deref(),
            device_id: device_id.as_ref(),
            platform: platform.as_deref(),
            browser: browser.as_deref(),
            bot,
            now,
        },
        &History {
            prior: prior.as_ref(),
            recent_failures,
            trusted,
            known_device,
        },
        thresholds,
    );
    // The attempt is durable before the answer.
    let attempt = LoginAttempt {
        project_id: project.clone(),
        identifier,
        at: now,
        attempt_id: LoginAttempt::new_id(),
        success,
        ip: ip.map(|i| i.to_string()),
        device_id,
        session_id: session.as_ref().map(|s| s.to_session_id()),
        region,
        platform,
        browser,
    };
    engine
        .store
        .record_login_attempt(&attempt)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "login attempt not stored");
            ApiError::new(ErrorCode::StoreUnavailable)
        })?;
    // answer
    let prior_snapshot = prior_attempt.map(|a| Prior {
        device_id: a.device_id.as_ref().map(|d| d.to_string()),
        ip: a.ip.clone(),
        region: a.region.clone(),
        platform: a.platform.clone(),
        browser: a.browser.clone(),
        at: rfc3339(a.at),
    });
    Ok(response::json_of(
        StatusCode::OK,
        &Output {
            decision,
            last_login_at: prior_attempt.map(|a| rfc3339(a.at)),
            prior_snapshot,
        },
    ))
}
