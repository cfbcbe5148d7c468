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
//! | `new_region` | 25 | the region differs from the last successful login's (both known) |
//! | `untrusted_identifier` | 15 | the identifier has logged in before and the device was not marked trusted for it (`ato-add-identifier`) |
//! | `failed_attempt_velocity` | 10 per failure beyond 2 in the window, at most 60 | guessing: two typos are normal, eight failures alone reach the default challenge score |
//! | `impossible_travel` | 40 | on top of `new_region`, when the last success was less than an hour ago |
//! | `bot` | 60 | the session's bot verdict: automation logging in is a challenge at the default threshold on its own |
//!
//! *Impossible travel is a region-only heuristic*: the engine has a coarse
//! region per IP, no coordinates, so it cannot compute a speed. A change of
//! region within an hour is treated as impossible; a VPN toggle trips it,
//! which is why it challenges (with `new_region`: 65) rather than blocks.
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
use qyzar_shared::store::LoginAttempt;
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
    /// When it happened, unix milliseconds (the answer shows RFC 3339).
    pub at: i64,
}

impl PriorSnapshot {
    /// The snapshot of a stored attempt; the caller passes the newest
    /// successful one. An IP the store holds that does not parse is dropped
    /// rather than compared as text.
    pub fn from_attempt(a: &LoginAttempt) -> Self {
        Self {
            device_id: a.device_id.clone(),
            ip: a.ip.as_deref().and_then(|ip| ip.parse().ok()),
            region: a.region.clone(),
            platform: a.platform.clone(),
            browser: a.browser.clone(),
            at: a.at,
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
    /// Now, unix milliseconds; passed in so the function stays pure.
    pub now: i64,
}

/// What the store knows about the identifier and the device.
#[derive(Debug, Clone, Copy, Default)]
pub struct History<'a> {
    /// The identifier's last successful login; `None` on first sight.
    pub prior: Option<&'a PriorSnapshot>,
    /// Failed attempts on the identifier within the project's
    /// `failedAttemptsWindowSeconds`, not counting this one.
    pub recent_failures: u32,
    /// The device's `trusted_identifiers` holds the identifier.
    pub trusted: bool,
    /// The device appears in the identifier's recent successful attempts.
    pub known_device: bool,
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
    let region_changed = known_and_differ(prior.and_then(|p| p.region.as_deref()), attempt.region);
    let recent = prior.is_some_and(|p| attempt.now.saturating_sub(p.at) < TRAVEL_WINDOW_MS);
    let velocity = velocity_weight(history.recent_failures);

    let checks = [
        (
            "new_device",
            NEW_DEVICE,
            prior.is_some() && !known && !history.trusted,
        ),
        ("new_region", NEW_REGION, region_changed),
        (
            "untrusted_identifier",
            UNTRUSTED_IDENTIFIER,
            prior.is_some() && !history.trusted,
        ),
        ("failed_attempt_velocity", velocity, velocity > 0),
        (
            "impossible_travel",
            IMPOSSIBLE_TRAVEL,
            region_changed && recent,
        ),
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
    AtoDecision {
        action,
        score,
        reasons,
        changes: changes(attempt, prior),
        trusted_device: history.trusted,
    }
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
