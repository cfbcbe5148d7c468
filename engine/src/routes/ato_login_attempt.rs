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

use http::{Response, StatusCode};
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
use crate::request::Headers;
use crate::request::{self, Text};
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

/// The body, borrowed from the request: no copy of its strings.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input<'a> {
    #[serde(borrow)]
    project_id: Option<Text<'a>>,
    #[serde(borrow)]
    identifier: Option<Text<'a>>,
    success: Option<bool>,
    #[serde(borrow)]
    ip: Option<Text<'a>>,
    #[serde(borrow)]
    session_id: Option<Text<'a>>,
    #[serde(borrow)]
    session_token: Option<Text<'a>>,
    #[serde(borrow)]
    device_id: Option<Text<'a>>,
}

/// `priorSnapshot`, borrowed from the profile's last success.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Prior<'a> {
    device_id: Option<&'a str>,
    ip: Option<String>,
    region: Option<&'a str>,
    platform: Option<&'a str>,
    browser: Option<&'a str>,
    at: &'a str,
}

/// The answer: the decision's fields, then `lastLoginAt` and
/// `priorSnapshot`. Listed here rather than `#[serde(flatten)]`ed, which
/// serialises through a map (a test holds the two equal).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output<'a> {
    action: decide::Action,
    score: u8,
    reasons: &'a [&'static str],
    changes: &'a [&'static str],
    trusted_device: bool,
    details: &'a decide::ato::Details,
    last_login_at: Option<&'a str>,
    prior_snapshot: Option<Prior<'a>>,
}

impl<'a> Prior<'a> {
    /// The snapshot's fields; `at` is its time as RFC 3339 (also the
    /// answer's `lastLoginAt`).
    fn of((p, at): (&'a PriorSnapshot, &'a str)) -> Self {
        Self {
            device_id: p.device_id.as_ref().map(DeviceId::as_str),
            ip: p.ip.map(qyzar_shared::net::ip_text),
            region: p.region.as_deref(),
            platform: p.platform.as_deref(),
            browser: p.browser.as_deref(),
            at,
        }
    }
}

impl<'a> Output<'a> {
    fn new(decision: &'a decide::AtoDecision, prior: Option<Prior<'a>>) -> Self {
        Self {
            action: decision.action,
            score: decision.score,
            reasons: &decision.reasons,
            changes: &decision.changes,
            trusted_device: decision.trusted_device,
            details: &decision.details,
            last_login_at: prior.as_ref().map(|p| p.at),
            prior_snapshot: prior,
        }
    }
}

impl Output<'_> {
    /// The answer's JSON, written by hand: what `serde_json` writes for
    /// this struct (`tests` holds the two equal over every reason), at about
    /// a third of its cost, since every key is a constant and only values
    /// are checked for escapes ([`response::push_json_str`]).
    fn write(&self, out: &mut Vec<u8>) {
        use response::push_json_str as string;
        out.extend_from_slice(b"{\"action\":\"");
        out.extend_from_slice(self.action.as_str().as_bytes());
        out.extend_from_slice(b"\",\"score\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.score).as_bytes());
        out.extend_from_slice(b",\"reasons\":");
        strings(out, self.reasons.iter().copied());
        out.extend_from_slice(b",\"changes\":");
        strings(out, self.changes.iter().copied());
        out.extend_from_slice(if self.trusted_device {
            b",\"trustedDevice\":true,\"details\":"
        } else {
            b",\"trustedDevice\":false,\"details\":"
        });
        write_details(out, self.details);
        out.extend_from_slice(b",\"lastLoginAt\":");
        optional(out, self.last_login_at, string);
        out.extend_from_slice(b",\"priorSnapshot\":");
        match &self.prior_snapshot {
            None => out.extend_from_slice(b"null"),
            Some(p) => {
                out.extend_from_slice(b"{\"deviceId\":");
                optional(out, p.device_id, string);
                out.extend_from_slice(b",\"ip\":");
                optional(out, p.ip.as_deref(), string);
                out.extend_from_slice(b",\"region\":");
                optional(out, p.region, string);
                out.extend_from_slice(b",\"platform\":");
                optional(out, p.platform, string);
                out.extend_from_slice(b",\"browser\":");
                optional(out, p.browser, string);
                out.extend_from_slice(b",\"at\":");
                string(out, p.at);
                out.push(b'}');
            }
        }
        out.push(b'}');
    }
}

/// `value` written by `write`, or `null`.
fn optional<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(v) => write(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON array of strings.
fn strings<'s>(out: &mut Vec<u8>, items: impl Iterator<Item = &'s str>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        response::push_json_str(out, item);
    }
    out.push(b']');
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `details`: one object per reason that fired, in the struct's order.
fn write_details(out: &mut Vec<u8>, d: &decide::ato::Details) {
    use response::push_json_str as string;
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, name: &[u8]| {
        out.extend_from_slice(if first { b"{\"" } else { b",\"" });
        first = false;
        out.extend_from_slice(name);
        out.extend_from_slice(b"\":");
    };
    if let Some(v) = &d.new_device {
        key(out, b"new_device");
        out.extend_from_slice(b"{\"deviceId\":");
        optional(out, v.device_id.as_deref(), string);
        out.extend_from_slice(b",\"knownDevices\":");
        number(out, v.known_devices);
        out.push(b'}');
    }
    if let Some(v) = &d.new_region {
        key(out, b"new_region");
        out.extend_from_slice(b"{\"region\":");
        string(out, &v.region);
        out.extend_from_slice(b",\"lastRegion\":");
        string(out, &v.last_region);
        out.extend_from_slice(b",\"knownRegions\":");
        strings(out, v.known_regions.iter().map(String::as_str));
        out.push(b'}');
    }
    if let Some(v) = &d.untrusted_identifier {
        key(out, b"untrusted_identifier");
        out.extend_from_slice(b"{\"deviceId\":");
        optional(out, v.device_id.as_deref(), string);
        out.extend_from_slice(b",\"trustedDevices\":");
        number(out, v.trusted_devices);
        out.push(b'}');
    }
    if let Some(v) = &d.failed_attempt_velocity {
        key(out, b"failed_attempt_velocity");
        out.extend_from_slice(b"{\"failures\":");
        number(out, v.failures);
        out.extend_from_slice(b",\"freeFailures\":");
        number(out, v.free_failures);
        out.extend_from_slice(b",\"windowSeconds\":");
        number(out, v.window_seconds);
        out.push(b'}');
    }
    if let Some(v) = &d.impossible_travel {
        key(out, b"impossible_travel");
        out.extend_from_slice(b"{\"fromRegion\":");
        optional(out, v.from_region.as_deref(), string);
        out.extend_from_slice(b",\"toRegion\":");
        optional(out, v.to_region.as_deref(), string);
        out.extend_from_slice(b",\"minutesSinceLastLogin\":");
        number(out, v.minutes_since_last_login);
        out.extend_from_slice(b",\"distanceKm\":");
        optional(out, v.distance_km, number);
        out.extend_from_slice(b",\"speedKmh\":");
        optional(out, v.speed_kmh, number);
        out.push(b'}');
    }
    if let Some(v) = &d.bot {
        key(out, b"bot");
        out.extend_from_slice(if v.session_flagged {
            b"{\"sessionFlagged\":true}"
        } else {
            b"{\"sessionFlagged\":false}"
        });
    }
    if first {
        out.push(b'{');
    }
    out.push(b'}');
}

/// Parses an identifier field: present, and passing the checks that need
/// no project settings ([`qyzar_shared::identifier::precheck`]). The raw
/// text is returned; it is normalised once the project (and so its
/// `ato.caseSensitiveIdentifiers`) is known.
pub fn identifier(raw: Option<&str>) -> Result<&str, ApiError> {
    let id = raw.ok_or_else(|| ApiError::new(ErrorCode::MissingField).field("identifier"))?;
    qyzar_shared::identifier::precheck(id)?;
    Ok(id)
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
    let input: Input<'_> = request::json_body(headers, body)?;
    let project = common::project_id(input.project_id.as_deref())?;
    let identifier = identifier(input.identifier.as_deref())?;
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
    let raw = identifier.trim();
    let identifier = normalise(identifier, cfg.settings.ato.case_sensitive_identifiers)?;
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
        .get(&*engine.store, &project, &identifier, raw, window_ms, now)
        .await
        .map_err(unavailable)?;
    let thresholds = Thresholds {
        challenge: cfg.settings.ato.challenge_score.min(100) as u8,
        block: cfg.settings.ato.block_score.min(100) as u8,
    };
    let attempt = LoginAttempt {
        project_id: project.clone(),
        identifier: identifier.clone(),
        at: now,
        attempt_id: LoginAttempt::new_id(),
        success,
        ip: ip.map(qyzar_shared::net::ip_text),
        device_id,
        session_id: session.as_ref().map(|s| s.to_session_id()),
        region: region.clone(),
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
    // The answer's body is written before the wait and sent only once the
    // write is durable: the answers of one group commit then leave back to
    // back, each task doing little more than its headers and send after
    // the wake.
    let prior_at = prior.as_ref().map(|p| rfc3339(p.at));
    let prior_snapshot = prior.as_ref().zip(prior_at.as_deref()).map(Prior::of);
    let output = Output::new(&decision, prior_snapshot);
    let body = response::scratch_body(|out| output.write(out));
    // The attempt and the profile are durable before the answer. They go
    // to the store as they are; what is needed after the write is kept
    // apart (`identifier`, `region`, `ip`, the session's platform and
    // browser).
    let write_started = std::time::Instant::now();
    if let Err(e) = engine
        .store
        .record_ato(&project, &identifier, Some(attempt), update)
        .await
    {
        tracing::warn!(error = %e, "login attempt not stored");
        engine.profiles.forget(&project, &identifier);
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
            region: region.as_deref(),
            platform: session.as_ref().map_or("server", |s| s.platform()),
            browser: session.as_ref().map_or("", |s| s.browser()),
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
        engine.background.deny(&project, || qyzar_store::DenyEvent {
            project_id: project.clone(),
            at: now,
            bucket: bucket.to_owned(),
            key: identifier,
            ip: ip.map(qyzar_shared::net::ip_text),
        });
    }
    // answer
    // Where the answer came from: the profile from memory or loaded, and
    // how long the durable write took.
    let mut entry = String::with_capacity(48);
    entry.push_str(if warm {
        "profile;desc=hit, store;dur="
    } else {
        "profile;desc=miss, store;dur="
    });
    response::push_millis(&mut entry, write_started.elapsed().as_micros() as u64);
    Ok(response::json_with_timing(StatusCode::OK, body, entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use decide::ato::{Bot, Details, NewDevice, NewRegion, Travel, Untrusted, Velocity};
    use decide::{Action, AtoDecision};

    /// The answer as it was written before: the decision flattened in by
    /// serde, owned copies of the snapshot's text.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Flattened {
        #[serde(flatten)]
        decision: AtoDecision,
        last_login_at: Option<String>,
        prior_snapshot: Option<OwnedPrior>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OwnedPrior {
        device_id: Option<String>,
        ip: Option<String>,
        region: Option<String>,
        platform: Option<String>,
        browser: Option<String>,
        at: String,
    }

    #[test]
    fn the_listed_answer_is_the_flattened_answer() {
        let full = Details {
            new_device: Some(NewDevice {
                device_id: Some("dev_x".into()),
                known_devices: 3,
            }),
            new_region: Some(NewRegion {
                region: "FR".into(),
                last_region: "DE".into(),
                known_regions: vec!["DE".into(), "AT\"".into()],
            }),
            untrusted_identifier: None,
            failed_attempt_velocity: Some(Velocity {
                failures: 12,
                free_failures: 5,
                window_seconds: 900,
            }),
            impossible_travel: Some(Travel {
                from_region: Some("DE".into()),
                to_region: None,
                minutes_since_last_login: 7,
                distance_km: Some(9000),
                speed_kmh: None,
            }),
            bot: None,
        };
        // Every reason alone, all of them, and none: the commas between
        // `details`' entries and every field's shape.
        let every = Details {
            untrusted_identifier: Some(Untrusted {
                device_id: None,
                trusted_devices: 2,
            }),
            bot: Some(Bot {
                session_flagged: true,
            }),
            new_region: Some(NewRegion {
                region: "US".into(),
                last_region: "DE".into(),
                known_regions: vec![],
            }),
            ..full.clone()
        };
        let mut cases = vec![
            (Action::Allow, vec![], vec![], Details::default()),
            (
                Action::Block,
                vec!["new_device", "new_region", "impossible_travel"],
                vec!["device", "ip"],
                full,
            ),
            (Action::Challenge, vec!["bot"], vec!["ip"], every.clone()),
        ];
        let alone: [fn(&Details) -> Details; 6] = [
            |d| Details {
                new_device: d.new_device.clone(),
                ..Details::default()
            },
            |d| Details {
                new_region: d.new_region.clone(),
                ..Details::default()
            },
            |d| Details {
                untrusted_identifier: d.untrusted_identifier.clone(),
                ..Details::default()
            },
            |d| Details {
                failed_attempt_velocity: d.failed_attempt_velocity.clone(),
                ..Details::default()
            },
            |d| Details {
                impossible_travel: d.impossible_travel.clone(),
                ..Details::default()
            },
            |d| Details {
                bot: d.bot.clone(),
                ..Details::default()
            },
        ];
        for one in alone {
            cases.push((Action::Challenge, vec!["x\"y"], vec![], one(&every)));
        }
        for (action, reasons, changes, details) in cases {
            let decision = AtoDecision {
                action,
                score: 87,
                reasons,
                changes,
                trusted_device: action == Action::Allow,
                details,
            };
            for prior in [
                None,
                Some(PriorSnapshot {
                    device_id: Some(DeviceId::from_digest(&[7; 32])),
                    ip: Some("2001:db8::1".parse().unwrap()),
                    region: Some("DE".into()),
                    platform: None,
                    browser: Some("Fire\"fox".into()),
                    location: None,
                    at: 1_764_120_000_123,
                }),
            ] {
                let want = serde_json::to_string(&Flattened {
                    decision: decision.clone(),
                    last_login_at: prior.as_ref().map(|p| rfc3339(p.at)),
                    prior_snapshot: prior.as_ref().map(|p| OwnedPrior {
                        device_id: p.device_id.as_ref().map(|d| d.to_string()),
                        ip: p.ip.map(|i| i.to_string()),
                        region: p.region.clone(),
                        platform: p.platform.clone(),
                        browser: p.browser.clone(),
                        at: rfc3339(p.at),
                    }),
                })
                .unwrap();
                let at = prior.as_ref().map(|p| rfc3339(p.at));
                let listed = prior.as_ref().zip(at.as_deref()).map(Prior::of);
                let output = Output::new(&decision, listed);
                let got = serde_json::to_string(&output).unwrap();
                assert_eq!(got, want);
                let mut by_hand = Vec::new();
                output.write(&mut by_hand);
                assert_eq!(String::from_utf8(by_hand).unwrap(), want, "written by hand");
            }
        }
    }
}
