//! `POST /connect`: the browser script opens a verify session.
//!
//! parse (projectId, originToken, captchaToken?, entropy; `Origin` header)
//! → authorise (the origin is allowed and the origin token is live and
//! bound to it; the client IP within the project's `browserRateLimit.connect`,
//! else `429 rate_limited` with `Retry-After`, nothing stored or counted;
//! test captcha tokens only in `testMode`; the owner's monthly
//! verifications not used up, else `429 verification_quota_exceeded`) → decide (device id
//! from the stable entropy, bot score, session + token hash stored durably,
//! entropy snapshot unless opted out) → answer `201` with both session
//! cookies and `{sessionId, sessionToken, sessionJwt, deviceId, expiresAt,
//! risk}`, CORS-reflected for the allowed origin; the verification is
//! counted for admin ([`crate::traffic`]).

use std::net::IpAddr;

use http::header::{HeaderValue, RETRY_AFTER, SET_COOKIE, USER_AGENT};
use http::{Response, StatusCode};
use qyzar_shared::captcha;
use qyzar_shared::crypto::{random_token, sign_hs256, Claims};
use qyzar_shared::ids::{ProjectId, SessionId};
use qyzar_shared::settings::RateRule;
use qyzar_shared::snapshot::ProjectConfig;
use qyzar_shared::time::rfc3339;
use qyzar_shared::usage::{TrafficOutcome, TrafficRoute};
use qyzar_shared::{ApiError, ErrorCode};
use qyzar_store::{DeviceDay, EntropySnapshot, Session};
use serde::{Deserialize, Serialize};

use super::{common, cors};
use crate::decide::{self, Entropy, UaInfo};
use crate::limiter::{BucketCheck, Rule};
use crate::request;
use crate::request::Headers;
use crate::response::{self, Body};
use crate::state::Engine;
use crate::traffic::Dims;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    project_id: Option<String>,
    origin_token: Option<String>,
    captcha_token: Option<String>,
    entropy: Option<Entropy>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output<'a> {
    session_id: &'a str,
    session_token: &'a str,
    session_jwt: String,
    device_id: &'a str,
    expires_at: String,
    risk: &'a decide::Risk,
}

/// Limiter bucket of `/connect` calls per client IP (distinct from the
/// rate-limit check's `ip` and `metadata:*` buckets).
pub(super) const BROWSER_CONNECT: &str = "route:connect";
/// Limiter bucket of `/connect/reverify` calls per client IP.
pub(super) const BROWSER_REVERIFY: &str = "route:reverify";

/// The `iss` of session JWTs.
pub const SESSION_ISSUER: &str = "qyzar-session";

/// Handles one call; the body has been read by the router. CORS headers
/// are added by the router (so idempotent replays carry them too).
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

async fn run(
    engine: &Engine,
    headers: &Headers<'_>,
    client: Option<IpAddr>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let input: Input = request::json_body(headers, body)?;
    let project = common::project_id(input.project_id.as_deref())?;
    let origin_token = input
        .origin_token
        .ok_or_else(|| ApiError::new(ErrorCode::MissingField).field("originToken"))?;
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
    // authorise
    let live = common::live(engine, now)?;
    let (cfg, keys) = live
        .project(project.as_str())
        .ok_or(ApiError::new(ErrorCode::ProjectNotFound))?;
    let origin = cors::origin(headers).ok_or(ApiError::new(ErrorCode::OriginNotAllowed))?;
    if !cfg.settings.allowed_origins.iter().any(|o| o == origin) {
        return Err(ApiError::new(ErrorCode::OriginNotAllowed));
    }
    let bound = cfg.origin_token(&common::sha256(origin_token.as_bytes()), now);
    if bound.is_none_or(|t| t.origin != origin) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidCredentials,
            "the origin token is not valid for this origin",
        )
        .field("originToken"));
    }
    // One client IP cannot open sessions in a loop: each would be counted
    // against the owner's monthly quota and store entropy for 90 days.
    if let Some(throttled) = throttle(
        engine,
        cfg,
        BROWSER_CONNECT,
        cfg.settings.browser_rate_limit.connect,
        client,
    ) {
        refused(engine, &project, now);
        return Ok(throttled);
    }
    if let Some(t) = &input.captcha_token {
        if !cfg.settings.test_mode {
            return Err(ApiError::with_message(
                ErrorCode::Forbidden,
                "test captcha tokens are accepted only in test mode",
            )
            .field("captchaToken"));
        }
        match captcha::verify(&cfg.opt_out_key, project.as_str(), t, now / 1000) {
            Some(captcha::Outcome::Pass) => {}
            Some(captcha::Outcome::Fail) => {
                refused(engine, &project, now);
                return Err(ApiError::with_message(
                    ErrorCode::Forbidden,
                    "the captcha was not solved",
                )
                .field("captchaToken"));
            }
            None => {
                return Err(ApiError::with_message(
                    ErrorCode::InvalidField,
                    "the captcha token is not valid",
                )
                .field("captchaToken"))
            }
        }
    }
    // A used-up monthly quota refuses new verifications (after the origin
    // checks, so only the project's own pages learn it); sessions already
    // open keep verifying on the server-side routes.
    if cfg.verifications_blocked(now) {
        refused(engine, &project, now);
        return Err(ApiError::new(ErrorCode::VerificationQuotaExceeded));
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
    let region = region_for(engine, headers, client);
    let device = ua.device_info(region.clone());
    let session_id = SessionId::generate();
    let session_token = random_token("qz_st_", 32);
    let ttl_ms = i64::from(cfg.settings.session_ttl_seconds) * 1000;
    let session = Session {
        project_id: project.clone(),
        session_id: session_id.clone(),
        token_hash: common::sha256(session_token.as_bytes()),
        device_id: device_id.clone(),
        created_at: now,
        expires_at: now + ttl_ms,
        last_seen_at: now,
        revoked: false,
        ip: client.map(qyzar_shared::net::ip_text),
        risk: (&risk).into(),
        device: device.clone(),
    };
    let snapshot = (!cfg.is_device_opted_out(device_id.as_str())).then(|| EntropySnapshot {
        project_id: project.clone(),
        device_id: device_id.clone(),
        session_id: session_id.clone(),
        at: now,
        entropy_json,
    });
    // Both writes are durable before the answer; they go out together.
    let (put, snap) = tokio::join!(engine.sessions.put(session), async {
        match &snapshot {
            Some(s) => engine.store.put_entropy_snapshot(s).await,
            None => Ok(()),
        }
    });
    put.and(snap).map_err(|e| {
        tracing::warn!(error = %e, "connect write failed");
        engine.traffic.record(
            project.as_str(),
            TrafficRoute::Connect,
            TrafficOutcome::Error,
            Dims::UNKNOWN,
            now,
        );
        ApiError::new(ErrorCode::StoreUnavailable)
    })?;
    let session_jwt = keys
        .session_sign
        .as_ref()
        .map(|k| {
            sign_hs256(
                &Claims {
                    iss: SESSION_ISSUER.to_owned(),
                    aud: project.to_string(),
                    sub: device_id.to_string(),
                    iat: now / 1000,
                    exp: (now + ttl_ms) / 1000,
                    jti: random_token("sj_", 12),
                    sid: Some(session_id.to_string()),
                    md: None,
                },
                k,
            )
        })
        .ok_or(ApiError::new(ErrorCode::NotConfigured))?;
    // The dashboard's device index, off the answer path; an opted-out
    // device is listed without its entropy components.
    let opted_out = snapshot.is_none();
    engine.background.device_seen(DeviceDay {
        project_id: project.clone(),
        device_id: device_id.clone(),
        day: now.div_euclid(qyzar_store::DAY_MS),
        first_seen: now,
        last_seen: now,
        browser: device.browser.clone(),
        os: device.os.clone(),
        platform: device.platform.clone(),
        region: device.region.clone(),
        risk_score: risk.score,
        bot: risk.bot,
        components: if opted_out {
            Default::default()
        } else {
            decide::device_id::components(&entropy)
        },
    });
    engine.traffic.record(
        project.as_str(),
        TrafficRoute::Connect,
        TrafficOutcome::Ok,
        Dims {
            region: region.as_deref(),
            platform: ua.platform.as_str(),
            browser: ua.browser,
        },
        now,
    );
    // answer
    let mut res = response::json_of(
        StatusCode::CREATED,
        &Output {
            session_id: session_id.as_str(),
            session_token: &session_token,
            session_jwt,
            device_id: device_id.as_str(),
            expires_at: rfc3339(now + ttl_ms),
            risk: &risk,
        },
    );
    let names = &cfg.settings.cookie_names;
    for (name, value) in [
        (&names.session_id, session_id.as_str()),
        (&names.session_token, session_token.as_str()),
    ] {
        let c = format!(
            "{name}={value}; Max-Age={}; Path=/; HttpOnly; Secure; SameSite=Lax",
            cfg.settings.session_ttl_seconds
        );
        if let Ok(v) = HeaderValue::from_str(&c) {
            res.headers_mut().append(SET_COOKIE, v);
        }
    }
    Ok(res)
}

/// Spends one cell of `rule` for the calling client IP in `bucket` of the
/// project's limiter partition (the same per-project key budget as the
/// rate-limit check); `Some(429 rate_limited)` with `Retry-After` (whole
/// seconds, rounded up) when it is spent. Called after the caller is
/// authorised and before anything is stored or counted. A request that did
/// not come through the server (no peer address) shares one bucket.
pub(super) fn throttle(
    engine: &Engine,
    cfg: &ProjectConfig,
    bucket: &str,
    rule: RateRule,
    client: Option<IpAddr>,
) -> Option<Response<Body>> {
    let limiter = engine
        .limiter
        .project(&cfg.project_id, cfg.plan.limits().limiter_keys);
    let subject = client
        .map(throttle_subject)
        .map(qyzar_shared::net::ip_text)
        .unwrap_or_default();
    let key = limiter
        .bucket_key(&cfg.project_id, bucket, subject.as_bytes())
        .ok()?;
    let rule = Rule::new(rule.limit, rule.window_seconds);
    let decision = limiter
        .check(limiter.now_nanos(), &[BucketCheck { key, rule }], 1, false)
        .ok()?;
    if decision.allowed {
        return None;
    }
    let wait_ms = decision
        .retry_after_ms()
        .unwrap_or(u64::from(rule.window_seconds) * 1000);
    let seconds = wait_ms.div_ceil(1000).max(1);
    let mut res = response::error(&ApiError::new(ErrorCode::RateLimited));
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    Some(res)
}

/// Whom a browser-route limit counts: an IPv4 address as is, an IPv6
/// address by its /64 (one subscriber's LAN: a single client can rotate
/// through 2⁶⁴ addresses of its own prefix, so a per-address key would give
/// it a fresh bucket per call).
fn throttle_subject(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// Counts a connect the project's policy refused (throttled, captcha
/// failed, quota used up): the dashboard's "under attack" signal.
fn refused(engine: &Engine, project: &ProjectId, now: i64) {
    engine.traffic.record(
        project.as_str(),
        TrafficRoute::Connect,
        TrafficOutcome::Refused,
        Dims::UNKNOWN,
        now,
    );
}

/// The region from the configured trusted header (e.g. `CF-IPCountry`),
/// upper-cased, letters and dashes only, at most 8 characters; when the
/// header gives nothing, the country of `ip` in the configured GeoIP
/// database (`QYZAR_ENGINE_GEOIP_DB`), if any. `ip` is the caller's choice
/// of address: the browser's for `/connect`, the one in the body for a
/// backend reporting a login.
pub fn region_for(engine: &Engine, headers: &Headers<'_>, ip: Option<IpAddr>) -> Option<String> {
    header_region(engine, headers).or_else(|| engine.options.geo.as_ref()?.country(ip?))
}

fn header_region(engine: &Engine, headers: &Headers<'_>) -> Option<String> {
    let name = engine.options.region_header.as_ref()?;
    let v = headers.get(name)?.to_str().ok()?.trim();
    (!v.is_empty() && v.len() <= 8 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .then(|| v.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let subject = |s: &str| throttle_subject(s.parse().unwrap()).to_string();
        assert_eq!(subject("203.0.113.7"), "203.0.113.7");
        assert_eq!(subject("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(
            subject("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "2001:db8:1:2::"
        );
        assert_eq!(
            subject("2001:db8:1:2::1"),
            subject("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(subject("2001:db8:1:2::1"), subject("2001:db8:1:3::1"));
    }
}
