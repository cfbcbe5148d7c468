//! `GET|POST /projects/client/session-verify`: is this browser's verify
//! session real? Called by customer backends on every login and checkout.
//!
//! parse (projectId from query or body; session id/token from body or the
//! project's cookies) → authorise (project secret) → decide (cache, then
//! store; reason codes of PRODUCT.md) → answer (`valid` + session facts, or
//! `valid: false` + reason; 503 only when the store is down and nothing is
//! cached — never `valid: false` for a session that may exist).

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::common::{self, SessionCheck};
use crate::request::Headers;
use crate::request::{self, Text};
use crate::response::{self, Body};
use crate::sessions::{CacheStatus, CachedSession};
use crate::state::Engine;
use crate::traffic::Dims;
use qyzar_shared::usage::{TrafficOutcome, TrafficRoute};

/// The body, borrowed from the request: no copy of ids or tokens.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Input<'a> {
    #[serde(borrow)]
    project_id: Option<Text<'a>>,
    #[serde(borrow)]
    session_id: Option<Text<'a>>,
    #[serde(borrow)]
    session_token: Option<Text<'a>>,
}

#[derive(Serialize)]
struct Invalid {
    valid: bool,
    reason: &'static str,
}

/// Touches are written at most this often per session, so a session
/// verified on every request does not rewrite its row every request.
const TOUCH_EVERY_MS: i64 = 60_000;

fn count(engine: &Engine, project: &str, outcome: TrafficOutcome, dims: Dims<'_>, now: i64) {
    engine
        .traffic
        .record(project, TrafficRoute::SessionVerify, outcome, dims, now);
}

/// Handles one call.
pub async fn handle(
    engine: &Engine,
    method: &Method,
    query: Option<&str>,
    headers: &Headers<'_>,
    body: &[u8],
) -> Response<Body> {
    let now = qyzar_shared::time::now_ms();
    match run(engine, method, query, headers, body, now).await {
        Ok(res) => res,
        Err(e) => response::error(&e),
    }
}

async fn run(
    engine: &Engine,
    method: &Method,
    query: Option<&str>,
    headers: &Headers<'_>,
    body: &[u8],
    now: i64,
) -> Result<Response<Body>, qyzar_shared::ApiError> {
    // parse
    let q_project = request::query_param(query, "projectId");
    let b: Input<'_> = if *method == Method::POST {
        request::json_body(headers, body)?
    } else {
        Input::default()
    };
    let project = common::project_ref(b.project_id.as_deref().or(q_project.as_deref()))?;
    // authorise
    let live = common::live(engine, now)?;
    let (cfg, _) = common::authorise(&live, project, headers, now)?;
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
    let (check, status) = common::check_session(engine, cfg, project, id, token, now)
        .await
        .inspect_err(|_| count(engine, project, TrafficOutcome::Error, Dims::SERVER, now))?;
    let store_ms = (status == CacheStatus::Miss).then(|| started.elapsed().as_secs_f64() * 1000.0);
    // answer
    let res = match check {
        SessionCheck::Invalid(reason) => {
            count(engine, project, TrafficOutcome::Invalid, Dims::SERVER, now);
            let res = response::json_of(
                StatusCode::OK,
                &Invalid {
                    valid: false,
                    reason,
                },
            );
            return Ok(response::cache_timing(res, status, store_ms));
        }
        SessionCheck::Valid(s) => {
            // Counted with the browser the session was opened from: the
            // caller is the customer's backend.
            let dims = Dims {
                region: s.region(),
                platform: s.platform(),
                browser: s.browser(),
            };
            count(engine, project, TrafficOutcome::Ok, dims, now);
            // The answer shows the time seen before this verify, as it did
            // when the touch replaced the cached copy.
            let seen = s.last_seen_at();
            if now - seen >= TOUCH_EVERY_MS && s.touch(seen, now) {
                engine
                    .background
                    .touch(&s.to_project_id(), &s.to_session_id(), now, s.expires_at);
            }
            response::json_timed(StatusCode::OK, valid_body(&s, seen), status.into())
        }
    };
    Ok(response::store_timing(res, store_ms))
}

/// `{"valid":true,"sessionId":…,"deviceId":…,"createdAt":…,"expiresAt":…,
/// "lastSeenAt":…,"risk":{"score":…,"bot":…,"signals":[…]},
/// "device":{"browser":…,"os":…,"platform":…,"region":…|null}}`: the shape
/// serde gave a `Session`'s fields (a test holds the two equal), written by
/// hand so the only allocation is the body itself.
fn valid_body(s: &CachedSession, last_seen_at: i64) -> Bytes {
    response::scratch_body(|out| write_valid(out, s, last_seen_at))
}

fn write_valid(out: &mut Vec<u8>, s: &CachedSession, last_seen_at: i64) {
    use response::push_json_str as string;
    out.extend_from_slice(br#"{"valid":true,"sessionId":"#);
    string(out, s.session_id());
    out.extend_from_slice(br#","deviceId":"#);
    string(out, s.device_id());
    out.extend_from_slice(br#","createdAt":"#);
    response::push_rfc3339(out, s.created_at);
    out.extend_from_slice(br#","expiresAt":"#);
    response::push_rfc3339(out, s.expires_at);
    out.extend_from_slice(br#","lastSeenAt":"#);
    response::push_rfc3339(out, last_seen_at);
    out.extend_from_slice(br#","risk":{"score":"#);
    push_u8(out, s.risk_score);
    out.extend_from_slice(if s.risk_bot {
        br#","bot":true,"signals":"#
    } else {
        br#","bot":false,"signals":"#
    });
    out.extend_from_slice(s.signals_json().as_bytes());
    out.extend_from_slice(br#"},"device":{"browser":"#);
    string(out, s.browser());
    out.extend_from_slice(br#","os":"#);
    string(out, s.os());
    out.extend_from_slice(br#","platform":"#);
    string(out, s.platform());
    out.extend_from_slice(br#","region":"#);
    match s.region() {
        Some(r) => string(out, r),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}}");
}

/// Appends `v` in decimal.
fn push_u8(out: &mut Vec<u8>, v: u8) {
    if v >= 100 {
        out.push(b'0' + v / 100);
    }
    if v >= 10 {
        out.push(b'0' + v / 10 % 10);
    }
    out.push(b'0' + v % 10);
}

#[cfg(test)]
mod tests {
    use super::*;
    use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
    use qyzar_store::{DeviceInfo, Risk, Session};

    /// The answer serde gave before the hand-written writer.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Valid<'a> {
        valid: bool,
        session_id: &'a str,
        device_id: &'a str,
        created_at: String,
        expires_at: String,
        last_seen_at: String,
        risk: &'a Risk,
        device: &'a DeviceInfo,
    }

    #[test]
    fn the_written_answer_is_the_serde_answer() {
        for (score, bot, signals, region, browser) in [
            (0, false, vec![], None, "Chrome"),
            (
                7,
                true,
                vec!["webdriver".to_owned()],
                Some("DE".to_owned()),
                "Fire\"fox\u{1}",
            ),
            (
                42,
                false,
                vec!["a\\b".to_owned(), "ü".to_owned()],
                Some("".to_owned()),
                "",
            ),
            (100, true, vec![], Some("FR-75".to_owned()), "Safari"),
            (255, false, vec![], None, "x"),
        ] {
            let s = Session {
                project_id: ProjectId::generate(),
                session_id: SessionId::generate(),
                token_hash: [1; 32],
                device_id: DeviceId::from_digest(&[3; 32]),
                created_at: 1_764_120_000_123,
                expires_at: 1_764_724_800_000,
                last_seen_at: 1_764_120_060_009,
                revoked: false,
                ip: None,
                risk: Risk {
                    score,
                    bot,
                    signals,
                },
                device: DeviceInfo {
                    browser: browser.into(),
                    os: "Windows".into(),
                    platform: "desktop".into(),
                    region,
                },
            };
            let want = serde_json::to_vec(&Valid {
                valid: true,
                session_id: s.session_id.as_str(),
                device_id: s.device_id.as_str(),
                created_at: qyzar_shared::time::rfc3339(s.created_at),
                expires_at: qyzar_shared::time::rfc3339(s.expires_at),
                last_seen_at: qyzar_shared::time::rfc3339(s.last_seen_at),
                risk: &s.risk,
                device: &s.device,
            })
            .unwrap();
            let got = valid_body(&CachedSession::from_session(&s), s.last_seen_at);
            assert_eq!(
                std::str::from_utf8(&got).unwrap(),
                std::str::from_utf8(&want).unwrap()
            );
        }
    }
}
