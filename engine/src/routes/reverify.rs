//! `POST /connect/reverify`: the browser script re-proves its session.
//!
//! parse (sessionJwt, entropy) → authorise (the JWT verifies under its
//! project's session key; the `Origin` is one the project allows; the
//! client IP within the project's `browserRateLimit.reverify`, else `429
//! rate_limited` with `Retry-After`, nothing stored or counted; the
//! owner's monthly verifications not used up) → decide
//! (session still live? device drift? fresh bot score; the session is
//! extended durably and the new entropy recorded) → answer `{valid,
//! sessionId, deviceChanged, risk, expiresAt}` or `{valid: false, reason}`.

use std::net::IpAddr;

use base64::Engine as _;
use http::header::USER_AGENT;
use http::{Response, StatusCode};
use qyzar_shared::crypto::verify;
use qyzar_shared::ids::ProjectId;
use qyzar_shared::time::rfc3339;
use qyzar_shared::usage::{TrafficOutcome, TrafficRoute};
use qyzar_shared::{ApiError, ErrorCode};
use qyzar_store::EntropySnapshot;
use serde::{Deserialize, Serialize};

use super::{common, connect, cors};
use crate::decide::{self, Entropy, UaInfo};
use crate::request;
use crate::request::Headers;
use crate::response::{self, Body};
use crate::state::Engine;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    session_jwt: Option<String>,
    entropy: Option<Entropy>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output<'a> {
    valid: bool,
    session_id: &'a str,
    device_changed: bool,
    risk: &'a decide::Risk,
    expires_at: String,
}

#[derive(Serialize)]
struct Invalid {
    valid: bool,
    reason: &'static str,
}

/// Handles one call; the body has been read by the router. CORS headers
/// are added by the router for origins a project allows.
pub async fn handle(
    engine: &Engine,
    headers: &Headers<'_>,
    client: Option<IpAddr>,
    body: &[u8],
) -> Response<Body> {
    match run(engine, headers, client, body).await {
        Ok(r) => r,
        Err(e) => response::error(&e),
    }
}

fn invalid(reason: &'static str) -> Response<Body> {
    response::json_of(
        StatusCode::OK,
        &Invalid {
            valid: false,
            reason,
        },
    )
}

async fn run(
    engine: &Engine,
    headers: &Headers<'_>,
    client: Option<IpAddr>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let input: Input = request::json_body(headers, body)?;
    let jwt = input
        .session_jwt
        .ok_or_else(|| ApiError::new(ErrorCode::MissingField).field("sessionJwt"))?;
    let entropy = input
        .entropy
        .ok_or_else(|| ApiError::new(ErrorCode::MissingField).field("entropy"))?;
    // Serialised once: its length is checked here, the text is stored below.
    let entropy_json = serde_json::to_string(&entropy).unwrap_or_default();
    entropy.validate(if entropy_json.is_empty() {
        usize::MAX
    } else {
        entropy_json.len()
    })?;
    // authorise: the audience only chooses which keys to try.
    let Some(project) = peek_audience(&jwt) else {
        return Ok(invalid("malformed"));
    };
    let live = common::live(engine, now)?;
    let Some((cfg, keys)) = live.project(project.as_str()) else {
        return Ok(invalid("not_found"));
    };
    let origin = cors::origin(headers).ok_or(ApiError::new(ErrorCode::OriginNotAllowed))?;
    if !cfg.settings.allowed_origins.iter().any(|o| o == origin) {
        return Err(ApiError::new(ErrorCode::OriginNotAllowed));
    }
    let claims = match verify(&jwt, &keys.session_verify, now / 1000, project.as_str()) {
        Ok(c) if c.iss == connect::SESSION_ISSUER => c,
        Ok(_) => return Ok(invalid("bad_signature")),
        Err(e) => return Ok(invalid(e.reason())),
    };
    if let Some(throttled) = connect::throttle(
        engine,
        cfg,
        connect::BROWSER_REVERIFY,
        cfg.settings.browser_rate_limit.reverify,
        client,
    ) {
        return Ok(throttled);
    }
    if cfg.verifications_blocked(now) {
        return Err(ApiError::new(ErrorCode::VerificationQuotaExceeded));
    }
    let Some(sid) = claims.sid.as_deref() else {
        return Ok(invalid("malformed"));
    };
    let sid = qyzar_shared::ids::SessionId::parse(sid)
        .map_err(|_| ApiError::new(ErrorCode::InvalidField).field("sessionJwt"))?;
    let (found, _) = engine
        .sessions
        .get(&project, &sid)
        .await
        .map_err(|_| ApiError::new(ErrorCode::StoreUnavailable))?;
    let Some(session) = found else {
        return Ok(invalid("not_found"));
    };
    if session.revoked {
        return Ok(invalid("revoked"));
    }
    if cfg.is_device_opted_out(session.device_id.as_str()) {
        return Ok(invalid("opted_out"));
    }
    if session.expires_at <= now {
        return Ok(invalid("expired"));
    }
    // decide
    let ua_text = entropy
        .user_agent
        .as_deref()
        .or_else(|| headers.get(&USER_AGENT).and_then(|v| v.to_str().ok()))
        .unwrap_or("");
    let ua = UaInfo::parse(ua_text);
    let risk = decide::score_bot(&entropy, &ua);
    let device_id = decide::device_id(&entropy);
    let device_changed = device_id != session.device_id;
    let mut next = (*session).clone();
    next.expires_at = now.saturating_add(i64::from(cfg.settings.session_ttl_seconds) * 1000);
    next.last_seen_at = now;
    next.risk = (&risk).into();
    let snapshot = (!cfg.is_device_opted_out(device_id.as_str())).then(|| EntropySnapshot {
        project_id: project.clone(),
        device_id: device_id.clone(),
        session_id: sid.clone(),
        at: now,
        entropy_json,
    });
    let expires_at = next.expires_at;
    let (put, snap) = tokio::join!(engine.sessions.put(next), async {
        match &snapshot {
            Some(s) => engine.store.put_entropy_snapshot(s).await,
            None => Ok(()),
        }
    });
    put.and(snap)
        .map_err(|_| ApiError::new(ErrorCode::StoreUnavailable))?;
    engine.traffic.record(
        project.as_str(),
        TrafficRoute::Reverify,
        TrafficOutcome::Ok,
        crate::traffic::Dims {
            region: connect::region_for(engine, headers, client).as_deref(),
            platform: ua.platform.as_str(),
            browser: ua.browser,
        },
        now,
    );
    // answer
    Ok(response::json_of(
        StatusCode::OK,
        &Output {
            valid: true,
            session_id: sid.as_str(),
            device_changed,
            risk: &risk,
            expires_at: rfc3339(expires_at),
        },
    ))
}

/// The `aud` of a JWT, unverified: used only to pick the project whose keys
/// then verify the token.
fn peek_audience(token: &str) -> Option<ProjectId> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    #[derive(Deserialize)]
    struct Aud {
        aud: String,
    }
    ProjectId::parse(&serde_json::from_slice::<Aud>(&bytes).ok()?.aud).ok()
}
