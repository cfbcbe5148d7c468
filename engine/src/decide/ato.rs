//! The anti-account-takeover judgement of one login attempt
//! (`POST /projects/client/ato-login-attempt`).
//!
//! The route gathers the facts (the identifier's last successful login,
//! recent failures, the device's trust) and this module weighs them. The
//! score is the capped sum of the reasons that fired:
//!
//! | reason | weight | fires when |
//! |---|---|---|
//! | `new_device` | 30 | the identifier has logged in before, and never from this device (or the attempt names no device) |
//! | `new_region` | 25 | the region differs from the last successful login's (both known) and is none of the regions the identifier has logged in from |
//! | `untrusted_identifier` | 15 | the identifier has logged in before and the device was not marked trusted for it (`ato-add-identifier`) |
//! | `failed_attempt_velocity` | 10 per failure beyond 2 in the window, at most 60 | guessing: two typos are normal, eight failures alone reach the default challenge score |
//! | `impossible_travel` | 40 | the last success was less than an hour ago and far away: faster than [`MAX_TRAVEL_KMH`] between the two IPs' coordinates beyond their accuracy radii, or, without coordinates, in another region |
//! | `bot` | 60 | the session's bot verdict: automation logging in is a challenge at the default threshold on its own |
//!
//! *Impossible travel* is a speed when a GeoIP City database gives both
//! logins coordinates: the distance less both accuracy radii, over the time
//! between them, above [`MAX_TRAVEL_KMH`] (an airliner). Without coordinates
//! it falls back to a region heuristic: a change of region within an hour
//! is treated as impossible. A VPN toggle trips either, which is why it
//! challenges (with `new_region`: 65) rather than blocks.
//!
//! *Details*: every reason that fired has an entry in the answer's
//! `details` object, under the reason's code, with the values behind it
//! (the new region and the known ones, the failure count and window…), so
//! a dashboard or a support engineer can explain the decision.
//!
//! *First sight*: with no prior successful login the identifier has no
//! history to differ from, so `new_device`, `new_region`,
//! `untrusted_identifier` and `impossible_travel` cannot fire; a first
//! login is allowed unless it is a bot or comes after a run of failures.
//! Flagging every sign-up's first login would teach customers to ignore
//! the answer.
//!
//! *Trust*: a device trusted for the identifier gets 20 off, but never
//! below what `bot` and `failed_attempt_velocity` add: a device id derives
//! from entropy an attacker can replay, so trust forgives travel, not
//! automation or guessing.

use std::net::IpAddr;

use qyzar_shared::ids::DeviceId;
use qyzar_store::profile::{GeoPoint, KnownRegion, LoginRecord};
use serde::Serialize;

const NEW_DEVICE: u16 = 30;
const NEW_REGION: u16 = 25;
const UNTRUSTED_IDENTIFIER: u16 = 15;
const IMPOSSIBLE_TRAVEL: u16 = 40;
const BOT: u16 = 60;
/// Failures in the window that cost nothing: typos and a forgotten password.
const FREE_FAILURES: u32 = 2;
const PER_FAILURE: u16 = 10;
const MAX_VELOCITY: u16 = 60;
const TRUST_DISCOUNT: u16 = 20;
/// A region change sooner than this after the last success is "impossible".
pub const TRAVEL_WINDOW_MS: i64 = 60 * 60 * 1000;
/// Faster than this between two logins' coordinates is impossible travel:
/// an airliner's cruising speed, with no time on the ground.
pub const MAX_TRAVEL_KMH: f64 = 1000.0;

/// What the customer should do with the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it through.
    Allow,
    /// Ask for a second factor or another proof.
    Challenge,
    /// Refuse it.
    Block,
}

impl Action {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Challenge => "challenge",
            Action::Block => "block",
        }
    }
}

/// The project's `ato` thresholds. Plain numbers so this module does not
/// depend on the settings types; the settings validation guarantees
/// `challenge <= block`, and if it did not, `block` would win.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// `challengeScore`: at or above, challenge.
    pub challenge: u8,
    /// `blockScore`: at or above, block.
    pub block: u8,
}

/// The identifier's last successful login, as the answer's `priorSnapshot`
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorSnapshot {
    /// The device it came from, when known.
    pub device_id: Option<DeviceId>,
    /// Its client IP, when reported.
    pub ip: Option<IpAddr>,
    /// Its coarse region, when known.
    pub region: Option<String>,
    /// Its platform (`desktop`, `mobile`…), when known.
    pub platform: Option<String>,
    /// Its browser, when known.
    pub browser: Option<String>,
    /// Its IP's coordinates, when a City database had them.
    pub location: Option<GeoPoint>,
    /// When it happened, unix milliseconds (the answer shows RFC 3339).
    pub at: i64,
}

impl PriorSnapshot {
    /// The snapshot of the profile's last success. An IP the store holds
    /// that does not parse is dropped rather than compared as text.
    pub fn from_record(r: &LoginRecord) -> Self {
        Self {
            device_id: r.device_id.clone(),
            ip: r.ip.as_deref().and_then(|ip| ip.parse().ok()),
            region: r.region.clone(),
            platform: r.platform.clone(),
            browser: r.browser.clone(),
            location: r.location,
            at: r.at,
        }
    }
}

/// The attempt being judged, as the route resolved it.
///
/// The identifier and the success flag are not here: the identifier only
/// scopes the history the caller looked up, and the judgement of a context
/// does not depend on whether the password matched (failures count through
/// [`History::recent_failures`] on later attempts).
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// Client IP, parsed at the edge.
    pub ip: Option<IpAddr>,
    /// Coarse region of the IP, when the engine knows it.
    pub region: Option<&'a str>,
    /// The device, from the session or the body.
    pub device_id: Option<&'a DeviceId>,
    /// The device's platform, from its session.
    pub platform: Option<&'a str>,
    /// The device's browser, from its session.
    pub browser: Option<&'a str>,
    /// The session's bot verdict.
    pub bot: bool,
    /// The IP's coordinates, when a City database has them.
    pub location: Option<GeoPoint>,
    /// Now, unix milliseconds; passed in so the function stays pure.
    pub now: i64,
}

/// What the identifier's profile says, as the decision needs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct History<'a> {
    /// The identifier's last successful login; `None` on first sight.
    pub prior: Option<&'a PriorSnapshot>,
    /// Failed attempts on the identifier within the project's
    /// `failedAttemptsWindowSeconds`, not counting this one.
    pub recent_failures: u32,
    /// The project's `failedAttemptsWindowSeconds` (for the details).
    pub window_seconds: u32,
    /// The device is trusted for the identifier (`ato-add-identifier`).
    pub trusted: bool,
    /// The device has logged in successfully as the identifier before.
    pub known_device: bool,
    /// How many devices the identifier has logged in from (for details).
    pub known_devices: usize,
    /// How many devices are trusted for the identifier (for details).
    pub trusted_devices: usize,
    /// Regions the identifier has logged in from, most recent first.
    pub known_regions: &'a [KnownRegion],
}

/// The judgement, serialised into the answer (the route adds
/// `lastLoginAt` and `priorSnapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AtoDecision {
    /// From the score and the project's thresholds.
    pub action: Action,
    /// 0–100.
    pub score: u8,
    /// Reasons that fired, in the module table's order.
    pub reasons: Vec<&'static str>,
    /// What differs from the prior snapshot, where both sides are known:
    /// `device`, `ip`, `region`, `browser`.
    pub changes: Vec<&'static str>,
    /// The device is trusted for the identifier.
    pub trusted_device: bool,
    /// The values behind each reason that fired, keyed by its code.
    pub details: Details,
}

/// The values behind each reason, present only when it fired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Details {
    /// `new_device`.
    #[serde(rename = "new_device", skip_serializing_if = "Option::is_none")]
    pub new_device: Option<NewDevice>,
    /// `new_region`.
    #[serde(rename = "new_region", skip_serializing_if = "Option::is_none")]
    pub new_region: Option<NewRegion>,
    /// `untrusted_identifier`.
    #[serde(
        rename = "untrusted_identifier",
        skip_serializing_if = "Option::is_none"
    )]
    pub untrusted_identifier: Option<Untrusted>,
    /// `failed_attempt_velocity`.
    #[serde(
        rename = "failed_attempt_velocity",
        skip_serializing_if = "Option::is_none"
    )]
    pub failed_attempt_velocity: Option<Velocity>,
    /// `impossible_travel`.
    #[serde(rename = "impossible_travel", skip_serializing_if = "Option::is_none")]
    pub impossible_travel: Option<Travel>,
    /// `bot`.
    #[serde(rename = "bot", skip_serializing_if = "Option::is_none")]
    pub bot: Option<Bot>,
}

/// Why `new_device` fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewDevice {
    /// The attempt's device; `null` when it named none.
    pub device_id: Option<String>,
    /// Devices the identifier has logged in from.
    pub known_devices: usize,
}

/// Why `new_region` fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewRegion {
    /// The attempt's region.
    pub region: String,
    /// The last successful login's region.
    pub last_region: String,
    /// Every region the identifier has logged in from, most recent first.
    pub known_regions: Vec<String>,
}

/// Why `untrusted_identifier` fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Untrusted {
    /// The attempt's device; `null` when it named none.
    pub device_id: Option<String>,
    /// Devices trusted for the identifier.
    pub trusted_devices: usize,
}

/// Why `failed_attempt_velocity` fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Velocity {
    /// Failed attempts in the window (a sliding-window estimate).
    pub failures: u32,
    /// Failures that cost nothing.
    pub free_failures: u32,
    /// The project's `failedAttemptsWindowSeconds`.
    pub window_seconds: u32,
}

/// Why `impossible_travel` fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Travel {
    /// The last successful login's region, when known.
    pub from_region: Option<String>,
    /// The attempt's region, when known.
    pub to_region: Option<String>,
    /// Minutes since the last successful login.
    pub minutes_since_last_login: i64,
    /// Kilometres between the two IPs' coordinates, when both are known.
    pub distance_km: Option<u32>,
    /// The speed that travel would take, km/h, when the distance is known.
    pub speed_kmh: Option<u32>,
}

/// Why `bot` fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bot {
    /// Always true: the session's bot verdict.
    pub session_flagged: bool,
}

/// Weighs one login attempt against the identifier's history; see the
/// module docs for every weight and the reasons behind them.
pub fn score_login(
    attempt: &Attempt<'_>,
    history: &History<'_>,
    thresholds: Thresholds,
) -> AtoDecision {
    let prior = history.prior;
    let same_device = match (prior.and_then(|p| p.device_id.as_ref()), attempt.device_id) {
        (Some(p), Some(a)) => p == a,
        _ => false,
    };
    let known = history.known_device || same_device;
    let prior_region = prior.and_then(|p| p.region.as_deref());
    let region_changed = known_and_differ(prior_region, attempt.region);
    let region_known = attempt
        .region
        .is_some_and(|r| history.known_regions.iter().any(|k| k.region == r));
    let new_region = region_changed && !region_known;
    let since_ms = prior.map(|p| attempt.now.saturating_sub(p.at));
    let recent = since_ms.is_some_and(|ms| ms < TRAVEL_WINDOW_MS);
    let travel = travel(prior, attempt);
    let impossible = recent
        && match travel {
            Some((_, kmh)) => kmh > MAX_TRAVEL_KMH,
            None => region_changed,
        };
    let velocity = velocity_weight(history.recent_failures);

    let checks = [
        (
            "new_device",
            NEW_DEVICE,
            prior.is_some() && !known && !history.trusted,
        ),
        ("new_region", NEW_REGION, new_region),
        (
            "untrusted_identifier",
            UNTRUSTED_IDENTIFIER,
            prior.is_some() && !history.trusted,
        ),
        ("failed_attempt_velocity", velocity, velocity > 0),
        ("impossible_travel", IMPOSSIBLE_TRAVEL, impossible),
        ("bot", BOT, attempt.bot),
    ];
    let mut sum: u16 = 0;
    let mut reasons = Vec::new();
    for (name, weight, on) in checks {
        if on {
            sum += weight;
            reasons.push(name);
        }
    }
    if history.trusted {
        let floor = if attempt.bot { BOT } else { 0 } + velocity;
        sum = sum.saturating_sub(TRUST_DISCOUNT).max(floor);
    }
    let score = u8::try_from(sum.min(100)).unwrap_or(100);
    let action = if score >= thresholds.block {
        Action::Block
    } else if score >= thresholds.challenge {
        Action::Challenge
    } else {
        Action::Allow
    };
    let device = attempt.device_id.map(|d| d.to_string());
    let fired = |name: &str| reasons.contains(&name);
    let details = Details {
        new_device: fired("new_device").then(|| NewDevice {
            device_id: device.clone(),
            known_devices: history.known_devices,
        }),
        new_region: fired("new_region").then(|| NewRegion {
            region: attempt.region.unwrap_or_default().to_owned(),
            last_region: prior_region.unwrap_or_default().to_owned(),
            known_regions: history
                .known_regions
                .iter()
                .map(|k| k.region.clone())
                .collect(),
        }),
        untrusted_identifier: fired("untrusted_identifier").then(|| Untrusted {
            device_id: device.clone(),
            trusted_devices: history.trusted_devices,
        }),
        failed_attempt_velocity: fired("failed_attempt_velocity").then_some(Velocity {
            failures: history.recent_failures,
            free_failures: FREE_FAILURES,
            window_seconds: history.window_seconds,
        }),
        impossible_travel: fired("impossible_travel").then(|| Travel {
            from_region: prior_region.map(str::to_owned),
            to_region: attempt.region.map(str::to_owned),
            minutes_since_last_login: since_ms.unwrap_or(0).max(0) / 60_000,
            distance_km: travel.map(|(km, _)| km.round() as u32),
            speed_kmh: travel.map(|(_, kmh)| kmh.min(f64::from(u32::MAX)).round() as u32),
        }),
        bot: attempt.bot.then_some(Bot {
            session_flagged: true,
        }),
    };
    AtoDecision {
        action,
        score,
        reasons,
        changes: changes(attempt, prior),
        trusted_device: history.trusted,
        details,
    }
}

/// The distance beyond both accuracy radii (km) and the speed it implies
/// (km/h), when both logins have coordinates. A gap of under a minute
/// counts as a minute: two logins in one instant are not infinitely fast.
fn travel(prior: Option<&PriorSnapshot>, attempt: &Attempt<'_>) -> Option<(f64, f64)> {
    let p = prior?;
    let (from, to) = (p.location?, attempt.location?);
    let km = (from.distance_km(&to) - f64::from(from.radius_km) - f64::from(to.radius_km)).max(0.0);
    let hours = (attempt.now.saturating_sub(p.at).max(60_000) as f64) / 3_600_000.0;
    Some((km, km / hours))
}

/// 0 up to [`FREE_FAILURES`], then [`PER_FAILURE`] each, capped.
fn velocity_weight(failures: u32) -> u16 {
    let extra = u16::try_from(failures.saturating_sub(FREE_FAILURES)).unwrap_or(u16::MAX);
    extra.saturating_mul(PER_FAILURE).min(MAX_VELOCITY)
}

/// An unknown side proves no change: a missing region means no geo data,
/// not a move.
fn known_and_differ<T: PartialEq + ?Sized>(prior: Option<&T>, now: Option<&T>) -> bool {
    matches!((prior, now), (Some(p), Some(n)) if p != n)
}

fn changes(attempt: &Attempt<'_>, prior: Option<&PriorSnapshot>) -> Vec<&'static str> {
    let Some(p) = prior else { return Vec::new() };
    // `::ffff:1.2.3.4` and `1.2.3.4` are one client behind a dual stack.
    let ip = |ip: Option<IpAddr>| ip.map(|ip| ip.to_canonical());
    let mut out = Vec::new();
    let fields = [
        (
            "device",
            known_and_differ(p.device_id.as_ref(), attempt.device_id),
        ),
        (
            "ip",
            known_and_differ(ip(p.ip).as_ref(), ip(attempt.ip).as_ref()),
        ),
        (
            "region",
            known_and_differ(p.region.as_deref(), attempt.region),
        ),
        (
            "browser",
            known_and_differ(p.browser.as_deref(), attempt.browser),
        ),
    ];
    for (name, changed) in fields {
        if changed {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests;
