//! Verification usage: what engines report to admin about their traffic,
//! and the calendar-month arithmetic plan quotas are counted in.
//!
//! A **verification** is one browser verification an engine answered with
//! success: `POST /connect` (`201`, a new verify session) or
//! `POST /connect/reverify` (`200`, a session extended). Those are the calls
//! a plan's `monthlyVerifications` counts. Server-side checks of an open
//! session (session-verify, tokens, rate limits, ATO) are not counted: a
//! customer's backend may check a session on every request, and that must
//! not burn the quota.
//!
//! Engines count every answer of the hot-path routes in memory per
//! (project, UTC minute, route, outcome, region, platform, browser) — a
//! [`TrafficRow`] — and send them to admin in a [`TrafficBatch`] every few
//! seconds (`POST /internal/traffic`, push key). Each batch carries an id
//! the engine keeps across retries, so a batch whose answer was lost and is
//! sent again is counted once. Admin adds every row to its minute, hour and
//! day rollups (the dashboard's analytics), and the rows that are
//! verifications ([`TrafficRow::is_verification`]) to the owner's monthly
//! usage.
//!
//! Engines bound how many distinct (region, platform, browser) a project
//! may report in a minute; past that a project's counts are folded into
//! [`OTHER_REGION`] / [`OTHER_TAG`], so totals stay exact while detail is
//! capped.

use serde::{Deserialize, Serialize};

use crate::ids::ProjectId;
use crate::{ApiError, ErrorCode};

/// One minute in milliseconds: rows are bucketed by the UTC minute they fall in.
pub const MINUTE_MS: i64 = 60_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// Most rows in one batch. An engine splits a larger flush.
pub const MAX_BATCH_ROWS: usize = 5_000;
/// Largest count one row may carry: far above what one engine can answer
/// in a minute, low enough that sums of many rows stay far from `i64::MAX`.
pub const MAX_ROW_COUNT: u64 = 1_000_000_000;
/// The region a project's counts are folded into once it has reported its
/// share of distinct keys in a minute.
pub const OTHER_REGION: &str = "OTHER";
/// The platform and browser counts are folded into, like [`OTHER_REGION`].
pub const OTHER_TAG: &str = "other";
/// Longest platform or browser name a row may carry.
pub const MAX_TAG_LEN: usize = 24;

/// What engines send to `POST /internal/traffic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficBatch {
    /// Unique per batch and kept across retries (`<engine instance>-<seq>`):
    /// admin counts a batch id once.
    pub batch_id: String,
    /// The counts, one per (project, minute, route, outcome, region,
    /// platform, browser).
    pub rows: Vec<TrafficRow>,
}

/// Answers of one route with one outcome for one project in one UTC minute,
/// region, platform and browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficRow {
    /// The project (`prj_…`).
    pub project_id: String,
    /// Start of the UTC minute (Unix ms, a multiple of [`MINUTE_MS`]).
    pub minute_start_ms: i64,
    /// Which call.
    pub route: TrafficRoute,
    /// How it was answered.
    pub outcome: TrafficOutcome,
    /// Country or region code as the engine saw it; empty when unknown,
    /// [`OTHER_REGION`] when folded.
    pub region: String,
    /// Form factor from the user agent (`desktop`, `mobile`, …), `server`
    /// for calls from a customer's backend with no session to describe.
    pub platform: String,
    /// Browser name from the user agent (`Chrome`, …); empty when unknown.
    pub browser: String,
    /// How many, at least 1.
    pub count: u64,
}

impl TrafficRow {
    /// Whether the row counts toward the plan's `monthlyVerifications`:
    /// only verify sessions opened or extended (see the module docs).
    pub fn is_verification(&self) -> bool {
        matches!(self.route, TrafficRoute::Connect | TrafficRoute::Reverify)
            && self.outcome == TrafficOutcome::Ok
    }
}

/// The hot-path routes whose answers are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficRoute {
    /// `POST /connect`.
    Connect,
    /// `POST /connect/reverify`.
    Reverify,
    /// `GET|POST /projects/client/session-verify`.
    SessionVerify,
    /// `POST /projects/client/token` (client JWT minted).
    Token,
    /// `GET|POST /projects/client/token-verify`.
    TokenVerify,
    /// `POST /projects/client/rate-limit-check` (dry runs are not counted).
    RateLimitCheck,
    /// `POST /projects/client/ato-login-attempt`.
    AtoLoginAttempt,
}

impl TrafficRoute {
    /// Every route, in the order answers list them.
    pub const ALL: [TrafficRoute; 7] = [
        TrafficRoute::Connect,
        TrafficRoute::Reverify,
        TrafficRoute::SessionVerify,
        TrafficRoute::Token,
        TrafficRoute::TokenVerify,
        TrafficRoute::RateLimitCheck,
        TrafficRoute::AtoLoginAttempt,
    ];

    /// The name stored in admin's rollups.
    pub const fn as_str(self) -> &'static str {
        match self {
            TrafficRoute::Connect => "connect",
            TrafficRoute::Reverify => "reverify",
            TrafficRoute::SessionVerify => "session_verify",
            TrafficRoute::Token => "token",
            TrafficRoute::TokenVerify => "token_verify",
            TrafficRoute::RateLimitCheck => "rate_limit_check",
            TrafficRoute::AtoLoginAttempt => "ato_login_attempt",
        }
    }
}

/// How a counted call was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficOutcome {
    /// Success: a session opened or extended, a token minted, a session or
    /// token found valid.
    Ok,
    /// A session or token checked and found not valid (`valid: false`).
    Invalid,
    /// A rate-limit check or login attempt let through.
    Allowed,
    /// A login attempt the project should challenge.
    Challenged,
    /// A login attempt the project should refuse.
    Blocked,
    /// A rate-limit check that denied.
    Denied,
    /// A verification refused by policy (quota used up, bot, bad captcha).
    Refused,
    /// The engine could not answer (store unavailable).
    Error,
}

impl TrafficOutcome {
    /// Every outcome.
    pub const ALL: [TrafficOutcome; 8] = [
        TrafficOutcome::Ok,
        TrafficOutcome::Invalid,
        TrafficOutcome::Allowed,
        TrafficOutcome::Challenged,
        TrafficOutcome::Blocked,
        TrafficOutcome::Denied,
        TrafficOutcome::Refused,
        TrafficOutcome::Error,
    ];

    /// The name stored in admin's rollups.
    pub const fn as_str(self) -> &'static str {
        match self {
            TrafficOutcome::Ok => "ok",
            TrafficOutcome::Invalid => "invalid",
            TrafficOutcome::Allowed => "allowed",
            TrafficOutcome::Challenged => "challenged",
            TrafficOutcome::Blocked => "blocked",
            TrafficOutcome::Denied => "denied",
            TrafficOutcome::Refused => "refused",
            TrafficOutcome::Error => "error",
        }
    }
}

/// Whether `s` may be a row's region: empty or up to 8 of A-Z, 0-9, '-'.
pub fn valid_region(s: &str) -> bool {
    s.len() <= 8
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `s` may be a row's platform or browser: up to [`MAX_TAG_LEN`]
/// letters, digits, spaces, '-', '.', '_' (woothee's browser names).
pub fn valid_tag(s: &str) -> bool {
    s.len() <= MAX_TAG_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'-' | b'.' | b'_'))
}

impl TrafficBatch {
    /// Checks every field, naming the first one at fault (`rows[3].region`),
    /// so admin refuses a bad batch whole and writes nothing of it.
    /// `now_ms` bounds minutes from the future (one hour of clock skew allowed).
    pub fn validate(&self, now_ms: i64) -> Result<(), ApiError> {
        let bad = |field: String, msg: &'static str| {
            Err(ApiError::with_message(ErrorCode::InvalidField, msg).field(field))
        };
        if self.batch_id.is_empty()
            || self.batch_id.len() > 64
            || !self
                .batch_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad(
                "batchId".into(),
                "batchId must be 1-64 letters, digits, '-' or '_'",
            );
        }
        if self.rows.is_empty() || self.rows.len() > MAX_BATCH_ROWS {
            return bad("rows".into(), "rows must hold 1 to 5000 rows");
        }
        for (i, r) in self.rows.iter().enumerate() {
            if ProjectId::parse(&r.project_id).is_err() {
                return bad(format!("rows[{i}].projectId"), "not a project id");
            }
            if r.minute_start_ms < 0
                || r.minute_start_ms % MINUTE_MS != 0
                || r.minute_start_ms > now_ms + HOUR_MS
            {
                return bad(
                    format!("rows[{i}].minuteStartMs"),
                    "must be the start of a UTC minute, not in the future",
                );
            }
            if !valid_region(&r.region) {
                return bad(
                    format!("rows[{i}].region"),
                    "must be empty or up to 8 of A-Z, 0-9, '-'",
                );
            }
            if r.platform.is_empty() || !valid_tag(&r.platform) {
                return bad(
                    format!("rows[{i}].platform"),
                    "must be 1-24 of letters, digits, ' ', '-', '.', '_'",
                );
            }
            if !valid_tag(&r.browser) {
                return bad(
                    format!("rows[{i}].browser"),
                    "must be up to 24 of letters, digits, ' ', '-', '.', '_'",
                );
            }
            if r.count == 0 || r.count > MAX_ROW_COUNT {
                return bad(
                    format!("rows[{i}].count"),
                    "must be between 1 and 1000000000",
                );
            }
        }
        Ok(())
    }
}

/// Start of the UTC minute `ms` falls in.
pub fn minute_start_ms(ms: i64) -> i64 {
    ms - ms.rem_euclid(MINUTE_MS)
}

/// Start of the UTC day `ms` falls in.
pub fn day_start_ms(ms: i64) -> i64 {
    ms - ms.rem_euclid(DAY_MS)
}

/// Start of the UTC hour `ms` falls in.
pub fn hour_start_ms(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

/// Start of the UTC calendar month `ms` falls in (Unix ms).
pub fn month_start_ms(ms: i64) -> i64 {
    let (y, m, _) = crate::time::civil_from_days(ms.div_euclid(86_400_000));
    crate::time::days_from_civil(y, m, 1) * 86_400_000
}

/// Start of the UTC calendar month after the one `ms` falls in: when a
/// used-up monthly quota lifts by itself.
pub fn next_month_start_ms(ms: i64) -> i64 {
    let (y, m, _) = crate::time::civil_from_days(ms.div_euclid(86_400_000));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    crate::time::days_from_civil(y, m, 1) * 86_400_000
}

/// The month `ms` falls in as `YYYY-MM` (UTC): the key usage is summed by.
pub fn month_key(ms: i64) -> String {
    let (y, m, _) = crate::time::civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::rfc3339;

    fn row() -> TrafficRow {
        TrafficRow {
            project_id: ProjectId::generate().to_string(),
            minute_start_ms: 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS,
            route: TrafficRoute::Connect,
            outcome: TrafficOutcome::Ok,
            region: "DE".into(),
            platform: "desktop".into(),
            browser: "Chrome".into(),
            count: 3,
        }
    }

    #[test]
    fn months_start_and_end_where_the_calendar_says() {
        // 2026-11-26T04:00Z
        let t = 1_795_665_600_000;
        assert_eq!(rfc3339(month_start_ms(t)), "2026-11-01T00:00:00.000Z");
        assert_eq!(rfc3339(next_month_start_ms(t)), "2026-12-01T00:00:00.000Z");
        assert_eq!(month_key(t), "2026-11");
        // December rolls the year; February of a leap year has 29 days.
        let dec = 1_797_465_600_000; // 2026-12-17
        assert_eq!(
            rfc3339(next_month_start_ms(dec)),
            "2027-01-01T00:00:00.000Z"
        );
        let feb = 951_782_400_000; // 2000-02-29
        assert_eq!(rfc3339(month_start_ms(feb)), "2000-02-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(next_month_start_ms(feb)),
            "2000-03-01T00:00:00.000Z"
        );
        // The last millisecond of a month belongs to it.
        let end = next_month_start_ms(t) - 1;
        assert_eq!(month_key(end), "2026-11");
        assert_eq!(month_key(end + 1), "2026-12");
        assert_eq!(
            rfc3339(hour_start_ms(t + 1_234_567)),
            "2026-11-26T04:00:00.000Z"
        );
    }

    #[test]
    fn every_month_start_over_decades_is_day_one_midnight() {
        let mut t = 0i64;
        for _ in 0..(12 * 60) {
            let next = next_month_start_ms(t);
            let s = rfc3339(next);
            assert!(s.ends_with("-01T00:00:00.000Z"), "{s}");
            assert_eq!(month_start_ms(next), next);
            assert_eq!(month_start_ms(next - 1), month_start_ms(t));
            t = next;
        }
    }

    #[test]
    fn batches_are_checked_field_by_field() {
        let now = 1_700_000_000_000;
        let ok = TrafficBatch {
            batch_id: "eng_ab12-7".into(),
            rows: vec![row()],
        };
        assert!(ok.validate(now).is_ok());
        let field = |f: fn(&mut TrafficBatch)| {
            let mut b = ok.clone();
            f(&mut b);
            b.validate(now).unwrap_err().field.unwrap().into_owned()
        };
        assert_eq!(field(|b| b.batch_id = "a b".into()), "batchId");
        assert_eq!(field(|b| b.rows.clear()), "rows");
        assert_eq!(
            field(|b| b.rows[0].project_id = "x".into()),
            "rows[0].projectId"
        );
        assert_eq!(
            field(|b| b.rows[0].minute_start_ms += 1),
            "rows[0].minuteStartMs"
        );
        assert_eq!(
            field(|b| b.rows[0].minute_start_ms += 10 * HOUR_MS),
            "rows[0].minuteStartMs"
        );
        assert_eq!(
            field(|b| b.rows[0].browser = "<script>".into()),
            "rows[0].browser"
        );
        assert_eq!(field(|b| b.rows[0].region = "de".into()), "rows[0].region");
        assert_eq!(
            field(|b| b.rows[0].platform = String::new()),
            "rows[0].platform"
        );
        assert_eq!(field(|b| b.rows[0].count = 0), "rows[0].count");
        assert_eq!(
            field(|b| b.rows[0].count = MAX_ROW_COUNT + 1),
            "rows[0].count"
        );
        let json = serde_json::to_string(&ok).unwrap();
        assert!(json.contains("\"route\":\"connect\""), "{json}");
        assert!(json.contains("\"outcome\":\"ok\""), "{json}");
        assert!(json.contains("\"minuteStartMs\""), "{json}");
        assert!(ok.rows[0].is_verification());
        let mut check = ok.rows[0].clone();
        check.route = TrafficRoute::SessionVerify;
        assert!(
            !check.is_verification(),
            "server-side checks do not burn the quota"
        );
    }
}
