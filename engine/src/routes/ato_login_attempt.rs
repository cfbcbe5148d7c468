//! `POST /projects/client/ato-login-attempt`: log a login attempt and say
//! whether it looks like an account takeover.
//!
//! parse (projectId, identifier, success, ip?, session from body or cookies,
//! deviceId?) → authorise (project secret) → decide from the identifier's
//! profile ([`crate::profiles`]: last successful login, known devices and
//! regions, trusted devices, failures in the project's window; the bot
//! flag → score, action, reasons, details, changes) → join the attempt into
//! the profile and store it with the attempt's log row, durably → answer.
//!
//! The profile is read from memory once warm, so the hot path does no
//! store read; the write goes through the store's group commit. A failed
//! attempt only counts a failure: it adds no device and no region, so a
//! flood of failures cannot push the real login out of the profile.
//!
//! A session that does not verify is treated as absent (the attempt is
//! scored without its device) rather than refused: the login is the
//! customer's, and a missing device is itself a risk signal.

use std::net::IpAddr;

use http::{HeaderMap, Response, StatusCode};
use qyzar_shared::identifier::normalise;
use qyzar_shared::ids::DeviceId;
use qyzar_shared::time::rfc3339;
use qyzar_shared::{ApiError, ErrorCode};
use qyzar_store::LoginAttempt;
use serde::{Deserialize, Serialize};

use qyzar_store::profile::AttemptFacts;

use super::common::{self, SessionCheck};
use super::connect;
use crate::decide::{self, Attempt, History, PriorSnapshot, Thresholds};
use crate::request;
use crate::response::{self, Body};
use crate::state::Engine;
use crate::traffic::Dims;
use qyzar_shared::usage::{TrafficOutcome, TrafficRoute};

/// Deny-event buckets of challenged and blocked logins (the rate limiter's
/// are named after their rule, never `ato:`).
pub const ATO_CHALLENGE_BUCKET: &str = "ato:challenge";
/// See [`ATO_CHALLENGE_BUCKET`].
pub const ATO_BLOCK_BUCKET: &str = "ato:block";

/// Longest identifier once normalised (an email, a username, a user id).
pub const MAX_IDENTIFIER: usize = qyzar_shared::identifier::MAX_BYTES;

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
    // The spelling as sent (trimmed) is kept only to find attempt rows
    // logged before identifiers were normalised (a lazy profile build).
    let raw = identifier.trim().to_owned();
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

    let unavailable = |e: qyzar_store::StoreError| {
        tracing::warn!(error = %e, "ato profile read failed");
        ApiError::new(ErrorCode::StoreUnavailable)
    };
    let window_seconds = cfg.settings.ato.failed_attempts_window_seconds;
    let window_ms = i64::from(window_seconds).saturating_mul(1000);
    let (loaded, warm) = engine
        .profiles
        .get(&*engine.store, &project, &identifier, &raw, window_ms, now)
        .await
        .map_err(unavailable)?;
    let thresholds = Thresholds {
        challenge: cfg.settings.ato.challenge_score.min(100) as u8,
        block: cfg.settings.ato.block_score.min(100) as u8,
    };
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
    // Coordinates from a City database, for the speed behind impossible travel.
    let location = match (engine.options.geo.as_ref(), ip) {
        (Some(geo), Some(ip)) => geo.locate(ip).and_then(|l| l.point),
        _ => None,
    };
    // Decide from the profile as it stands and join this attempt into it,
    // under the identifier's lock (no await until the write).
    let (prior, decision, update) = {
        let held = engine.profiles.hold(&project, &attempt.identifier, loaded);
        let profile = held.profile();
        let prior = profile
            .last_success
            .as_ref()
            .map(PriorSnapshot::from_record);
        let device = attempt.device_id.as_ref();
        let decision = decide::score_login(
            &Attempt {
                ip,
                region: attempt.region.as_deref(),
                device_id: device,
                platform: attempt.platform.as_deref(),
                browser: attempt.browser.as_deref(),
                bot,
                location,
                now,
            },
            &History {
                prior: prior.as_ref(),
                recent_failures: profile.failures_at(now),
                window_seconds,
                trusted: device.is_some_and(|d| profile.is_trusted(d)),
                known_device: device.is_some_and(|d| profile.device(d).is_some()),
                known_devices: profile.devices.len(),
                trusted_devices: profile.trusted.len(),
                known_regions: &profile.regions,
            },
            thresholds,
        );
        let update = held.record(
            &AttemptFacts {
                attempt: &attempt,
                location,
            },
            window_ms,
        );
        (prior, decision, update)
    };
    // The attempt and the profile are durable before the answer.
    let write_started = std::time::Instant::now();
    if let Err(e) = engine
        .store
        .record_ato(&project, &attempt.identifier, Some(&attempt), &update)
        .await
    {
        tracing::warn!(error = %e, "login attempt not stored");
        engine.profiles.forget(&project, &attempt.identifier);
        engine.traffic.record(
            project.as_str(),
            TrafficRoute::AtoLoginAttempt,
            TrafficOutcome::Error,
            Dims::SERVER,
            now,
        );
        return Err(ApiError::new(ErrorCode::StoreUnavailable));
    }
    engine.traffic.record(
        project.as_str(),
        TrafficRoute::AtoLoginAttempt,
        match decision.action {
            decide::Action::Allow => TrafficOutcome::Allowed,
            decide::Action::Challenge => TrafficOutcome::Challenged,
            decide::Action::Block => TrafficOutcome::Blocked,
        },
        // The visitor's region (from the body's ip or the session) and the
        // session's browser, not the calling backend's.
        Dims {
            region: attempt.region.as_deref(),
            platform: attempt.platform.as_deref().unwrap_or("server"),
            browser: attempt.browser.as_deref().unwrap_or(""),
        },
        now,
    );
    // A challenged or blocked login names the identifier under attack for
    // the dashboard (the deny-event log, per project and day, written off
    // the answer path like the rate limiter's denies).
    let refused = match decision.action {
        decide::Action::Allow => None,
        decide::Action::Challenge => Some(ATO_CHALLENGE_BUCKET),
        decide::Action::Block => Some(ATO_BLOCK_BUCKET),
    };
    if let Some(bucket) = refused {
        engine.background.deny(qyzar_store::DenyEvent {
            project_id: project.clone(),
            at: now,
            bucket: bucket.to_owned(),
            key: attempt.identifier.clone(),
            ip: attempt.ip.clone(),
        });
    }
    // answer
    let prior_snapshot = prior.as_ref().map(|p| Prior {
        device_id: p.device_id.as_ref().map(|d| d.to_string()),
        ip: p.ip.map(|i| i.to_string()),
        region: p.region.clone(),
        platform: p.platform.clone(),
        browser: p.browser.clone(),
        at: rfc3339(p.at),
    });
    let res = response::json_of(
        StatusCode::OK,
        &Output {
            decision,
            last_login_at: prior.as_ref().map(|p| rfc3339(p.at)),
            prior_snapshot,
        },
    );
    // Where the answer came from: the profile from memory or loaded, and
    // how long the durable write took.
    let mut entry = String::with_capacity(48);
    entry.push_str(if warm {
        "profile;desc=hit, store;dur="
    } else {
        "profile;desc=miss, store;dur="
    });
    response::push_millis(&mut entry, write_started.elapsed().as_micros() as u64);
    Ok(response::timing(res, &entry))
}
