//! `GET /projects/devices-data`: the devices a project has seen, newest day
//! first, cursor-paged, with filters.
//!
//! parse (`projectId`; `seenSince` RFC 3339, default 7 days ago, at most
//! [`DEVICE_DAY_RETENTION_MS`] back; `limit` 1..=200, default 50; filters
//! `risk=low|medium|high`, `bot=true|false`, `region`, `browser`; `cursor`
//! from the previous page) → authorise (the signed-in owner, else `404`)
//! → decide (walk the engines' device index day by day from today, or from
//! the cursor, down to `seenSince`: each day is read in pages of its own
//! partitions, never a table scan; at most [`MAX_SCANNED`] rows per call,
//! so a filter that matches little answers a short page and a cursor
//! instead of reading a quarter's devices) → answer `{devices, nextCursor}`.
//!
//! A device appears once per UTC day it was seen (`seenOn`), with the
//! summary of its latest session that day. `nextCursor` is `null` when the
//! walk reached `seenSince`.

use axum::extract::State;
use axum::Json;
use qyzar_shared::ids::DeviceId;
use qyzar_shared::time::{now_ms, parse_rfc3339, rfc3339};
use qyzar_shared::{ApiError, ErrorCode};
use qyzar_store::{DeviceDay, DAY_MS, DEVICE_DAY_RETENTION_MS, DEVICE_DAY_SHARDS};
use serde::{Deserialize, Serialize};

use crate::auth::CurrentUser;
use crate::error::AdminResult;
use crate::extract::ApiQuery;
use crate::{projects, AppState};

/// Most device-day rows one call reads, matching or not.
pub const MAX_SCANNED: usize = 2_000;
/// Largest page.
pub const MAX_LIMIT: usize = 200;
/// Rows asked of the store at a time.
const STORE_PAGE: usize = 500;

/// The query.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    project_id: String,
    seen_since: Option<String>,
    limit: Option<String>,
    risk: Option<String>,
    bot: Option<String>,
    region: Option<String>,
    browser: Option<String>,
    cursor: Option<String>,
}

/// One device on one day.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    device_id: String,
    seen_on: String,
    first_seen: String,
    last_seen: String,
    browser: String,
    os: String,
    platform: String,
    region: Option<String>,
    risk_score: u8,
    /// `low` (< 30), `medium` (30–69) or `high` (≥ 70).
    risk: &'static str,
    bot: bool,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    devices: Vec<Device>,
    next_cursor: Option<String>,
}

/// The risk band of a bot score.
pub fn risk_band(score: u8) -> &'static str {
    match score {
        0..=29 => "low",
        30..=69 => "medium",
        _ => "high",
    }
}

/// Where a walk stands: a day, and within it the last row returned.
#[derive(Debug, Clone, PartialEq)]
struct Cursor {
    day: i64,
    after: Option<(u8, DeviceId)>,
}

impl Cursor {
    fn encode(&self) -> String {
        match &self.after {
            Some((shard, d)) => format!("{}.{shard}.{d}", self.day),
            None => format!("{}", self.day),
        }
    }

    fn parse(s: &str) -> Option<Cursor> {
        let mut parts = s.splitn(3, '.');
        let day = parts.next()?.parse().ok()?;
        match (parts.next(), parts.next()) {
            (None, None) => Some(Cursor { day, after: None }),
            (Some(shard), Some(device)) => {
                let shard: u8 = shard.parse().ok().filter(|s| *s < DEVICE_DAY_SHARDS)?;
                Some(Cursor {
                    day,
                    after: Some((shard, DeviceId::parse(device).ok()?)),
                })
            }
            _ => None,
        }
    }
}

/// The filters, parsed.
struct Filters {
    risk: Option<&'static str>,
    bot: Option<bool>,
    region: Option<String>,
    browser: Option<String>,
}

impl Filters {
    fn keep(&self, d: &DeviceDay) -> bool {
        self.risk.is_none_or(|r| risk_band(d.risk_score) == r)
            && self.bot.is_none_or(|b| d.bot == b)
            && self.region.as_deref().is_none_or(|r| {
                d.region
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(r))
            })
            && self
                .browser
                .as_deref()
                .is_none_or(|b| d.browser.eq_ignore_ascii_case(b))
    }
}

fn invalid(field: &'static str, message: &'static str) -> ApiError {
    ApiError::with_message(ErrorCode::InvalidField, message).field(field)
}

fn short(field: &'static str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(v) if v.is_empty() || v.len() > 64 => {
            Err(invalid(field, "must be 1 to 64 characters"))
        }
        v => Ok(v),
    }
}

/// Answers one page.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Json<Output>> {
    // parse
    let now = now_ms();
    let since = match q.seen_since.as_deref() {
        None => now - 7 * DAY_MS,
        Some(s) => parse_rfc3339(s)
            .ok_or_else(|| invalid("seenSince", "seenSince is not an RFC 3339 time"))?,
    };
    if since < now - DEVICE_DAY_RETENTION_MS || since > now {
        return Err(invalid("seenSince", "seenSince must be within the last 90 days").into());
    }
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| invalid("limit", "limit must be 1 to 200"))?,
    };
    let filters = Filters {
        risk: match q.risk.as_deref() {
            None => None,
            Some("low") => Some("low"),
            Some("medium") => Some("medium"),
            Some("high") => Some("high"),
            Some(_) => return Err(invalid("risk", "risk is low, medium or high").into()),
        },
        bot: match q.bot.as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => return Err(invalid("bot", "bot is true or false").into()),
        },
        region: short("region", q.region)?,
        browser: short("browser", q.browser)?,
    };
    let today = now.div_euclid(DAY_MS);
    let last_day = since.div_euclid(DAY_MS);
    let mut at = match q.cursor.as_deref() {
        None => Cursor {
            day: today,
            after: None,
        },
        Some(c) => Cursor::parse(c)
            .filter(|c| c.day <= today)
            .ok_or_else(|| invalid("cursor", "cursor is not one this route gave"))?,
    };
    // authorise
    let project = projects::owned(state.db.pool(), &user.user_id, &q.project_id).await?;
    let store = state.data.as_ref().ok_or_else(|| {
        ApiError::with_message(
            ErrorCode::StoreUnavailable,
            "no data store is configured for the dashboard",
        )
    })?;
    // decide
    let mut devices = Vec::new();
    let mut scanned = 0;
    let next_cursor = loop {
        if at.day < last_day {
            break None;
        }
        if devices.len() >= limit || scanned >= MAX_SCANNED {
            break Some(at.encode());
        }
        let want = STORE_PAGE.min(MAX_SCANNED - scanned);
        let rows = store
            .list_device_days(
                &project.id,
                at.day,
                at.after.as_ref().map(|(s, d)| (*s, d)),
                want,
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "device index read failed");
                ApiError::new(e.code())
            })?;
        let returned = rows.len();
        let mut consumed = 0;
        for row in rows {
            consumed += 1;
            scanned += 1;
            at.after = Some((DeviceDay::shard(&row.device_id), row.device_id.clone()));
            if row.last_seen >= since && filters.keep(&row) {
                devices.push(answer(row));
                if devices.len() >= limit {
                    break;
                }
            }
        }
        // Every row of the day read: go on with the day before. Otherwise
        // the cursor stays after the last row read, in this day.
        if consumed == returned && returned < want {
            at = Cursor {
                day: at.day - 1,
                after: None,
            };
        }
    };
    // answer
    Ok(Json(Output {
        devices,
        next_cursor,
    }))
}

fn answer(d: DeviceDay) -> Device {
    Device {
        device_id: d.device_id.to_string(),
        seen_on: rfc3339(d.day * DAY_MS)[..10].to_owned(),
        first_seen: rfc3339(d.first_seen),
        last_seen: rfc3339(d.last_seen),
        browser: d.browser,
        os: d.os,
        platform: d.platform,
        region: d.region,
        risk_score: d.risk_score,
        risk: risk_band(d.risk_score),
        bot: d.bot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        let d = DeviceId::generate();
        for c in [
            Cursor {
                day: 20_000,
                after: None,
            },
            Cursor {
                day: 20_000,
                after: Some((3, d)),
            },
        ] {
            assert_eq!(Cursor::parse(&c.encode()), Some(c));
        }
        for bad in [
            "",
            "x",
            "20000.9.dev_x",
            "20000.1",
            "20000.1.not-a-device",
            "1.2.3.4",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn risk_bands() {
        assert_eq!(
            [0, 29, 30, 69, 70, 100].map(risk_band),
            ["low", "low", "medium", "medium", "high", "high"]
        );
    }
}
