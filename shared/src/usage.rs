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
//! Engines count verifications in memory per (project, UTC hour, kind,
//! region, platform) and send them to admin in a [`TrafficBatch`] every few
//! seconds (`POST /internal/traffic`, push key). Each batch carries an id
//! the engine keeps across retries, so a batch whose answer was lost and is
//! sent again is counted once. Admin adds the rows to its traffic rollups
//! (the dashboard's traffic analytics) and to each owner's monthly usage.

use serde::{Deserialize, Serialize};

use crate::ids::ProjectId;
use crate::{ApiError, ErrorCode};

/// One hour in milliseconds: rows are bucketed by the UTC hour they fall in.
pub const HOUR_MS: i64 = 3_600_000;
/// Most rows in one batch. An engine splits a larger flush.
pub const MAX_BATCH_ROWS: usize = 5_000;
/// Largest count one row may carry: far above what one engine can answer
/// in an hour, low enough that sums of many rows stay far from `i64::MAX`.
pub const MAX_ROW_COUNT: u64 = 1_000_000_000;

/// What engines send to `POST /internal/traffic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficBatch {
    /// Unique per batch and kept across retries (`<engine instance>-<seq>`):
    /// admin counts a batch id once.
    pub batch_id: String,
    /// The counts, one per (project, hour, kind, region, platform).
    pub rows: Vec<TrafficRow>,
}

/// Verifications of one kind for one project in one hour, region and platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficRow {
    /// The project (`prj_…`).
    pub project_id: String,
    /// Start of the UTC hour (Unix ms, a multiple of [`HOUR_MS`]).
    pub hour_start_ms: i64,
    /// Which call.
    pub kind: TrafficKind,
    /// Country or region code as the engine saw it; empty when unknown.
    pub region: String,
    /// Form factor from the user agent (`desktop`, `mobile`, …).
    pub platform: String,
    /// How many, at least 1.
    pub count: u64,
}

/// The calls that count as verifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficKind {
    /// `POST /connect` answered `201`.
    Connect,
    /// `POST /connect/reverify` answered `200`.
    Reverify,
}

impl TrafficKind {
    /// The name stored in admin's rollups.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficKind::Connect => "connect",
            TrafficKind::Reverify => "reverify",
        }
    }
}

impl TrafficBatch {
    /// Checks every field, naming the first one at fault (`rows[3].region`),
    /// so admin refuses a bad batch whole and writes nothing of it.
    /// `now_ms` bounds hours from the future (one hour of clock skew allowed).
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
            if r.hour_start_ms < 0
                || r.hour_start_ms % HOUR_MS != 0
                || r.hour_start_ms > now_ms + HOUR_MS
            {
                return bad(
                    format!("rows[{i}].hourStartMs"),
                    "must be the start of a UTC hour, not in the future",
                );
            }
            if r.region.len() > 8
                || !r
                    .region
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
            {
                return bad(
                    format!("rows[{i}].region"),
                    "must be empty or up to 8 of A-Z, 0-9, '-'",
                );
            }
            if r.platform.is_empty()
                || r.platform.len() > 32
                || !r
                    .platform
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return bad(
                    format!("rows[{i}].platform"),
                    "must be 1-32 of a-z, 0-9, '-'",
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

/// Start of the UTC hour `ms` falls in.
pub fn hour_start_ms(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

/// Start of the UTC calendar month `ms` falls in (Unix ms).
pub fn month_start_ms(ms: i64) -> i64 {
    let (y, m, _) = crate::time::civil_from_days(ms.div_euclid(86_400_000));
    days_from_civil(y, m, 1) * 86_400_000
}

/// Start of the UTC calendar month after the one `ms` falls in: when a
/// used-up monthly quota lifts by itself.
pub fn next_month_start_ms(ms: i64) -> i64 {
    let (y, m, _) = crate::time::civil_from_days(ms.div_euclid(86_400_000));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * 86_400_000
}

/// The month `ms` falls in as `YYYY-MM` (UTC): the key usage is summed by.
pub fn month_key(ms: i64) -> String {
    let (y, m, _) = crate::time::civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}")
}

/// Howard Hinnant's `days_from_civil`: (y, m, d) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::rfc3339;

    fn row() -> TrafficRow {
        TrafficRow {
            project_id: ProjectId::generate().to_string(),
            hour_start_ms: 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS,
            kind: TrafficKind::Connect,
            region: "DE".into(),
            platform: "desktop".into(),
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
            field(|b| b.rows[0].hour_start_ms += 1),
            "rows[0].hourStartMs"
        );
        assert_eq!(
            field(|b| b.rows[0].hour_start_ms += 10 * HOUR_MS),
            "rows[0].hourStartMs"
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
        assert!(json.contains("\"kind\":\"connect\""), "{json}");
        assert!(json.contains("\"hourStartMs\""), "{json}");
    }
}
