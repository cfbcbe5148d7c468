//! Dashboard analytics read from the minute/hour/day rollups (migration
//! 0006) that [`crate::usage::ingest`] fills from the engines' traffic
//! batches.
//!
//! Every dashboard route asks for a time range; this module turns the
//! query's `from`/`to`/`bucket` into a bounded [`Window`] (which table to
//! read, aligned bucket edges), and runs the few grouped queries the routes
//! answer from. Each query is one indexed range scan of one project's rows
//! (the primary key leads with `(project_id, bucket_start)`), summed in the
//! database, so the cost follows the rows in the range, never the table.

use std::collections::HashMap;

use qyzar_shared::time::{parse_rfc3339, rfc3339};
use qyzar_shared::usage::{TrafficOutcome, TrafficRoute, DAY_MS, HOUR_MS, MINUTE_MS};
use qyzar_shared::{ApiError, ErrorCode};
use serde::Serialize;
use sqlx::Row as _;

use crate::db::Db;
use crate::error::AdminResult;

/// Longest range any dashboard route reads: a little more than a year, so
/// "this year against last year" works and no query scans without end.
pub const MAX_RANGE_MS: i64 = 400 * DAY_MS;
/// Most buckets one time series may have: enough for a day of minutes or
/// two months of hours on one chart, small enough for one answer.
pub const MAX_BUCKETS: i64 = 1_500;
/// Range used when the query gives no `from`: the last 24 hours.
pub const DEFAULT_RANGE_MS: i64 = 24 * HOUR_MS;
/// Latest time a query may name (year 9999), so arithmetic never overflows.
const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Which rollup table, and so the width of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// `analytics_minute`.
    Minute,
    /// `analytics_hour`.
    Hour,
    /// `analytics_day`.
    Day,
}

impl Grain {
    /// Every table, finest first.
    pub const ALL: [Grain; 3] = [Grain::Minute, Grain::Hour, Grain::Day];

    /// `minute`, `hour` or `day`, as the `bucket` parameter spells it.
    pub fn parse(s: &str) -> Option<Grain> {
        match s {
            "minute" => Some(Grain::Minute),
            "hour" => Some(Grain::Hour),
            "day" => Some(Grain::Day),
            _ => None,
        }
    }

    /// The name answers use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Grain::Minute => "minute",
            Grain::Hour => "hour",
            Grain::Day => "day",
        }
    }

    /// The table holding this grain.
    pub const fn table(self) -> &'static str {
        match self {
            Grain::Minute => "analytics_minute",
            Grain::Hour => "analytics_hour",
            Grain::Day => "analytics_day",
        }
    }

    /// Width of one bucket.
    pub const fn ms(self) -> i64 {
        match self {
            Grain::Minute => MINUTE_MS,
            Grain::Hour => HOUR_MS,
            Grain::Day => DAY_MS,
        }
    }

    /// How long housekeeping keeps this table's rows: minutes for a week
    /// of live charts, hours for a quarter, days for three years.
    pub const fn retention_ms(self) -> i64 {
        match self {
            Grain::Minute => 7 * DAY_MS,
            Grain::Hour => 90 * DAY_MS,
            Grain::Day => 3 * 366 * DAY_MS,
        }
    }

    /// The finest grain that still has rows for `from` (retention) and
    /// draws `[from, to)` in at most [`MAX_BUCKETS`] buckets: minutes up
    /// to 25 hours, hours up to 62 days, days beyond.
    pub fn auto(from: i64, to: i64, now: i64) -> Grain {
        Grain::ALL
            .into_iter()
            .find(|g| {
                from >= now.saturating_sub(g.retention_ms()) && buckets(*g, from, to) <= MAX_BUCKETS
            })
            .unwrap_or(Grain::Day)
    }

    /// Start of the bucket `ms` falls in.
    pub fn floor(self, ms: i64) -> i64 {
        ms - ms.rem_euclid(self.ms())
    }

    /// Start of the first bucket at or after `ms`.
    pub fn ceil(self, ms: i64) -> i64 {
        let f = self.floor(ms);
        if f == ms {
            f
        } else {
            f + self.ms()
        }
    }
}

fn buckets(g: Grain, from: i64, to: i64) -> i64 {
    (g.ceil(to) - g.floor(from)) / g.ms()
}

/// A checked range: `[from, to)` widened to whole buckets of `grain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First bucket start (inclusive).
    pub from: i64,
    /// End (exclusive), a bucket edge.
    pub to: i64,
    /// The table read.
    pub grain: Grain,
}

impl Window {
    /// Parses `from`, `to` (RFC 3339 or Unix milliseconds; `to` defaults to
    /// now, `from` to 24 hours before `to`) and `bucket` (`minute`, `hour`,
    /// `day`; chosen by [`Grain::auto`] when absent), naming the field at
    /// fault. `series` adds the [`MAX_BUCKETS`] bound, which totals do not
    /// need.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        bucket: Option<&str>,
        series: bool,
        now: i64,
    ) -> Result<Window, ApiError> {
        let to = match to {
            Some(t) => parse_time(t, "to")?,
            None => now,
        };
        let from = match from {
            Some(f) => parse_time(f, "from")?,
            None => to.saturating_sub(DEFAULT_RANGE_MS).max(0),
        };
        if from >= to {
            return Err(invalid("from", "from must be before to"));
        }
        if to - from > MAX_RANGE_MS {
            return Err(invalid("from", "the range from..to is at most 400 days"));
        }
        let grain = match bucket {
            Some(b) => Grain::parse(b)
                .ok_or_else(|| invalid("bucket", "bucket must be minute, hour or day"))?,
            None => Grain::auto(from, to, now),
        };
        if series && buckets(grain, from, to) > MAX_BUCKETS {
            return Err(invalid(
                "bucket",
                "the range holds more than 1500 buckets of this size; choose a larger bucket",
            ));
        }
        Ok(Window {
            from: grain.floor(from),
            to: grain.ceil(to),
            grain,
        })
    }

    /// The period of the same length just before this one.
    pub fn previous(&self) -> Window {
        Window {
            from: self.from - (self.to - self.from),
            to: self.from,
            grain: self.grain,
        }
    }

    /// Bucket starts, in order.
    pub fn bucket_starts(&self) -> impl Iterator<Item = i64> + '_ {
        (self.from..self.to).step_by(self.grain.ms() as usize)
    }

    /// Number of buckets.
    pub fn len(&self) -> usize {
        ((self.to - self.from) / self.grain.ms()) as usize
    }

    /// Whether the window holds no bucket (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn invalid(field: &'static str, msg: &'static str) -> ApiError {
    ApiError::with_message(ErrorCode::InvalidField, msg).field(field)
}

/// A time as the dashboard routes take it: Unix milliseconds (digits) or
/// RFC 3339, between 1970 and 9999.
fn parse_time(s: &str, field: &'static str) -> Result<i64, ApiError> {
    let ms = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<i64>().ok()
    } else {
        parse_rfc3339(s)
    };
    ms.filter(|ms| (0..=MAX_TIME_MS).contains(ms))
        .ok_or_else(|| {
            invalid(
                field,
                "must be an RFC 3339 time or Unix milliseconds, 1970 to 9999",
            )
        })
}

/// Counts per (route, outcome) in one period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(HashMap<(TrafficRoute, TrafficOutcome), i64>);

impl Counts {
    /// The count of `route` answered with `outcome`.
    pub fn get(&self, route: TrafficRoute, outcome: TrafficOutcome) -> i64 {
        self.0.get(&(route, outcome)).copied().unwrap_or(0)
    }

    /// Every answer of `route`.
    pub fn route(&self, route: TrafficRoute) -> i64 {
        self.0
            .iter()
            .filter(|((r, _), _)| *r == route)
            .map(|(_, n)| n)
            .sum()
    }

    /// The headline numbers.
    pub fn totals(&self) -> Totals {
        use TrafficOutcome as O;
        use TrafficRoute as R;
        Totals {
            requests: self.0.values().sum(),
            verifications: self.get(R::Connect, O::Ok) + self.get(R::Reverify, O::Ok),
            refused: self.get(R::Connect, O::Refused) + self.get(R::Reverify, O::Refused),
            errors: self
                .0
                .iter()
                .filter(|((_, o), _)| *o == O::Error)
                .map(|(_, n)| n)
                .sum(),
            ato_allowed: self.get(R::AtoLoginAttempt, O::Allowed),
            ato_challenged: self.get(R::AtoLoginAttempt, O::Challenged),
            ato_blocked: self.get(R::AtoLoginAttempt, O::Blocked),
            rate_limit_allowed: self.get(R::RateLimitCheck, O::Allowed),
            rate_limit_denied: self.get(R::RateLimitCheck, O::Denied),
        }
    }
}

/// The headline numbers of a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Every counted answer of every route.
    pub requests: i64,
    /// Sessions opened or extended (`connect`/`reverify` answered ok): what
    /// the plan counts.
    pub verifications: i64,
    /// Browser verifications refused by policy (throttled, captcha failed,
    /// quota used up).
    pub refused: i64,
    /// Answers the engine could not give (store unavailable).
    pub errors: i64,
    /// Login attempts let through.
    pub ato_allowed: i64,
    /// Login attempts to challenge.
    pub ato_challenged: i64,
    /// Login attempts to refuse.
    pub ato_blocked: i64,
    /// Rate-limit checks allowed.
    pub rate_limit_allowed: i64,
    /// Rate-limit checks denied.
    pub rate_limit_denied: i64,
}

/// Change from `previous` to `current` in percent, one decimal; `None`
/// when the previous period had none (no meaningful percentage).
pub fn change_percent(current: i64, previous: i64) -> Option<f64> {
    (previous != 0).then(|| {
        let pct = (current - previous) as f64 * 100.0 / previous as f64;
        (pct * 10.0).round() / 10.0
    })
}

/// [`Totals`] changes in percent, field by field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TotalsChange {
    requests: Option<f64>,
    verifications: Option<f64>,
    refused: Option<f64>,
    errors: Option<f64>,
    ato_allowed: Option<f64>,
    ato_challenged: Option<f64>,
    ato_blocked: Option<f64>,
    rate_limit_allowed: Option<f64>,
    rate_limit_denied: Option<f64>,
}

impl TotalsChange {
    /// From `previous` to `current`.
    pub fn between(current: &Totals, previous: &Totals) -> Self {
        let c = |f: fn(&Totals) -> i64| change_percent(f(current), f(previous));
        Self {
            requests: c(|t| t.requests),
            verifications: c(|t| t.verifications),
            refused: c(|t| t.refused),
            errors: c(|t| t.errors),
            ato_allowed: c(|t| t.ato_allowed),
            ato_challenged: c(|t| t.ato_challenged),
            ato_blocked: c(|t| t.ato_blocked),
            rate_limit_allowed: c(|t| t.rate_limit_allowed),
            rate_limit_denied: c(|t| t.rate_limit_denied),
        }
    }
}

/// Counts per (route, outcome) of `window` and of the period before it,
/// in one range scan.
pub async fn counts_with_previous(
    db: &Db,
    project: &str,
    window: &Window,
) -> AdminResult<(Counts, Counts)> {
    let prev = window.previous();
    let rows = sqlx::query(&format!(
        "SELECT route, outcome, CAST(CASE WHEN bucket_start >= $2 THEN 1 ELSE 0 END AS BIGINT), \
         CAST(SUM(requests) AS BIGINT) FROM {} \
         WHERE project_id = $1 AND bucket_start >= $3 AND bucket_start < $4 \
         GROUP BY route, outcome, CASE WHEN bucket_start >= $2 THEN 1 ELSE 0 END",
        window.grain.table()
    ))
    .bind(project)
    .bind(window.from)
    .bind(prev.from)
    .bind(window.to)
    .fetch_all(db.pool())
    .await?;
    let (mut cur, mut before) = (Counts::default(), Counts::default());
    for r in rows {
        let (route, outcome): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        // Names the engines wrote from the same enums; a name this admin
        // does not know (a newer engine) is left out rather than guessed.
        let (Some(route), Some(outcome)) = (
            TrafficRoute::ALL.into_iter().find(|x| x.as_str() == route),
            TrafficOutcome::ALL
                .into_iter()
                .find(|x| x.as_str() == outcome),
        ) else {
            continue;
        };
        let key = (route, outcome);
        let is_cur: i64 = r.try_get(2)?;
        let n: i64 = r.try_get(3)?;
        let side = if is_cur == 1 { &mut cur } else { &mut before };
        *side.0.entry(key).or_default() += n;
    }
    Ok((cur, before))
}

/// Which column a breakdown groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Country or region.
    Region,
    /// Form factor.
    Platform,
    /// Browser.
    Browser,
}

impl Dimension {
    fn column(self) -> &'static str {
        match self {
            Dimension::Region => "region",
            Dimension::Platform => "platform",
            Dimension::Browser => "browser",
        }
    }
}

/// The browser-facing routes: breakdowns by region, platform and browser
/// read only these, since the server-side routes are called by a
/// customer's backend and describe no visitor.
pub const BROWSER_ROUTES: &str = "('connect', 'reverify')";

/// One value of a breakdown and its share.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Share {
    /// The value (`DE`, `Chrome`, `desktop`); `unknown` when the engine did
    /// not know it, `OTHER`/`other` for counts the engine folded.
    pub name: String,
    /// Browser-facing calls with that value.
    pub count: i64,
    /// Percent of all browser-facing calls in the range, one decimal.
    pub percent: f64,
}

/// Browser-facing calls in `window` by `dim`, largest first, at most
/// `limit` values (ties by name, so answers are stable).
pub async fn breakdown(
    db: &Db,
    project: &str,
    window: &Window,
    dim: Dimension,
    limit: usize,
) -> AdminResult<(i64, Vec<Share>)> {
    let col = dim.column();
    let rows = sqlx::query(&format!(
        "SELECT {col}, CAST(SUM(requests) AS BIGINT) FROM {} \
         WHERE project_id = $1 AND bucket_start >= $2 AND bucket_start < $3 \
         AND route IN {BROWSER_ROUTES} GROUP BY {col}",
        window.grain.table()
    ))
    .bind(project)
    .bind(window.from)
    .bind(window.to)
    .fetch_all(db.pool())
    .await?;
    let mut all = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r.try_get(0)?;
        let count: i64 = r.try_get(1)?;
        all.push((display_name(name), count));
    }
    let total: i64 = all.iter().map(|(_, n)| n).sum();
    Ok((total, top_shares(all, total, limit)))
}

/// Browser-facing calls in `window` by region, by platform and by browser
/// (in that order), each largest first and at most `limit` long: one scan
/// for the three, where [`breakdown`] three times would read the range
/// three times.
pub async fn breakdowns(
    db: &Db,
    project: &str,
    window: &Window,
    limit: usize,
) -> AdminResult<[Vec<Share>; 3]> {
    let rows = sqlx::query(&format!(
        "SELECT region, platform, browser, CAST(SUM(requests) AS BIGINT) FROM {} \
         WHERE project_id = $1 AND bucket_start >= $2 AND bucket_start < $3 \
         AND route IN {BROWSER_ROUTES} GROUP BY region, platform, browser",
        window.grain.table()
    ))
    .bind(project)
    .bind(window.from)
    .bind(window.to)
    .fetch_all(db.pool())
    .await?;
    let mut sums: [HashMap<String, i64>; 3] = Default::default();
    let mut total = 0;
    for r in rows {
        let count: i64 = r.try_get(3)?;
        total += count;
        for (i, sum) in sums.iter_mut().enumerate() {
            *sum.entry(display_name(r.try_get::<String, _>(i)?))
                .or_default() += count;
        }
    }
    Ok(sums.map(|sum| top_shares(sum.into_iter().collect(), total, limit)))
}

/// The largest `limit` of `all` (ties by name, so answers are stable) with
/// their percent of `total`.
fn top_shares(mut all: Vec<(String, i64)>, total: i64, limit: usize) -> Vec<Share> {
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.into_iter()
        .take(limit)
        .map(|(name, count)| Share {
            name,
            count,
            percent: percent_of(count, total),
        })
        .collect()
}

/// `count` as a percentage of `total`, one decimal (0 of nothing is 0).
pub fn percent_of(count: i64, total: i64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (count as f64 * 1000.0 / total as f64).round() / 10.0
    }
}

fn display_name(name: String) -> String {
    if name.is_empty() {
        "unknown".to_owned()
    } else {
        name
    }
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// What the line counts (`DE / desktop`, `Chrome`, `verifications`).
    pub label: String,
    /// The region, for traffic lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The platform, for traffic lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The browser, for browser lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
    /// Sum of the points.
    pub total: i64,
    /// One count per bucket, in the order of the answer's `buckets`.
    pub points: Vec<i64>,
}

/// Most lines one chart answer carries; the smaller ones are summed into
/// one `other` line so the answer stays bounded whatever the cardinality.
pub const MAX_SERIES: usize = 20;

/// Time series of browser-facing calls in `window`, one line per distinct
/// value of `dims` (region and platform, or browser), the largest
/// [`MAX_SERIES`] kept and the rest summed into an `other` line.
pub async fn series_by(
    db: &Db,
    project: &str,
    window: &Window,
    dims: &[Dimension],
) -> AdminResult<Vec<Series>> {
    let cols: Vec<&str> = dims.iter().map(|d| d.column()).collect();
    let cols = cols.join(", ");
    let rows = sqlx::query(&format!(
        "SELECT bucket_start, {cols}, CAST(SUM(requests) AS BIGINT) FROM {} \
         WHERE project_id = $1 AND bucket_start >= $2 AND bucket_start < $3 \
         AND route IN {BROWSER_ROUTES} GROUP BY bucket_start, {cols}",
        window.grain.table()
    ))
    .bind(project)
    .bind(window.from)
    .bind(window.to)
    .fetch_all(db.pool())
    .await?;
    let n = window.len();
    let mut lines: HashMap<Vec<String>, Vec<i64>> = HashMap::new();
    for r in rows {
        let start: i64 = r.try_get(0)?;
        let mut key = Vec::with_capacity(dims.len());
        for i in 0..dims.len() {
            key.push(display_name(r.try_get::<String, _>(i + 1)?));
        }
        let count: i64 = r.try_get(dims.len() + 1)?;
        let idx = ((start - window.from) / window.grain.ms()) as usize;
        if idx < n {
            lines.entry(key).or_insert_with(|| vec![0; n])[idx] += count;
        }
    }
    let mut lines: Vec<(Vec<String>, Vec<i64>, i64)> = lines
        .into_iter()
        .map(|(k, p)| {
            let total = p.iter().sum();
            (k, p, total)
        })
        .collect();
    lines.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let mut out: Vec<Series> = Vec::with_capacity(MAX_SERIES + 1);
    let mut rest: Option<Vec<i64>> = None;
    for (i, (key, points, total)) in lines.into_iter().enumerate() {
        if i >= MAX_SERIES {
            let r = rest.get_or_insert_with(|| vec![0; n]);
            for (a, b) in r.iter_mut().zip(&points) {
                *a += b;
            }
            continue;
        }
        let mut s = Series {
            label: key.join(" / "),
            region: None,
            platform: None,
            browser: None,
            total,
            points,
        };
        for (d, v) in dims.iter().zip(key) {
            match d {
                Dimension::Region => s.region = Some(v),
                Dimension::Platform => s.platform = Some(v),
                Dimension::Browser => s.browser = Some(v),
            }
        }
        out.push(s);
    }
    if let Some(points) = rest {
        out.push(Series {
            label: "other".to_owned(),
            region: None,
            platform: None,
            browser: None,
            total: points.iter().sum(),
            points,
        });
    }
    Ok(out)
}

/// Time series of named (route, outcome) counts in `window`: one line per
/// entry of `lines`, each summing the pairs it lists.
pub async fn series_of(
    db: &Db,
    project: &str,
    window: &Window,
    lines: &[(&str, &[(TrafficRoute, TrafficOutcome)])],
) -> AdminResult<Vec<Series>> {
    let rows = sqlx::query(&format!(
        "SELECT bucket_start, route, outcome, CAST(SUM(requests) AS BIGINT) FROM {} \
         WHERE project_id = $1 AND bucket_start >= $2 AND bucket_start < $3 \
         GROUP BY bucket_start, route, outcome",
        window.grain.table()
    ))
    .bind(project)
    .bind(window.from)
    .bind(window.to)
    .fetch_all(db.pool())
    .await?;
    let n = window.len();
    let mut out: Vec<Series> = lines
        .iter()
        .map(|(label, _)| Series {
            label: (*label).to_owned(),
            region: None,
            platform: None,
            browser: None,
            total: 0,
            points: vec![0; n],
        })
        .collect();
    for r in rows {
        let start: i64 = r.try_get(0)?;
        let (route, outcome): (String, String) = (r.try_get(1)?, r.try_get(2)?);
        let count: i64 = r.try_get(3)?;
        let idx = ((start - window.from) / window.grain.ms()) as usize;
        if idx >= n {
            continue;
        }
        for (s, (_, pairs)) in out.iter_mut().zip(lines) {
            if pairs
                .iter()
                .any(|(r, o)| r.as_str() == route && o.as_str() == outcome)
            {
                s.points[idx] += count;
                s.total += count;
            }
        }
    }
    Ok(out)
}

/// Bucket starts of `window` as RFC 3339 strings, for an answer.
pub fn bucket_labels(window: &Window) -> Vec<String> {
    window.bucket_starts().map(rfc3339).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000_000;

    fn field(r: Result<Window, ApiError>) -> String {
        r.unwrap_err().field.unwrap().into_owned()
    }

    #[test]
    fn ranges_are_bounded_and_name_the_field_at_fault() {
        let w = Window::parse(None, None, None, true, NOW).unwrap();
        assert_eq!(w.grain, Grain::Minute);
        assert_eq!(w.len(), 24 * 60 + 1, "widened to whole minutes");
        let t = |ms: i64| ms.to_string();
        assert_eq!(
            field(Window::parse(Some(&t(NOW)), Some(&t(NOW)), None, true, NOW)),
            "from"
        );
        assert_eq!(
            field(Window::parse(
                Some(&t(NOW - 401 * DAY_MS)),
                Some(&t(NOW)),
                None,
                false,
                NOW
            )),
            "from"
        );
        assert_eq!(
            field(Window::parse(None, None, Some("week"), true, NOW)),
            "bucket"
        );
        assert_eq!(
            field(Window::parse(
                Some(&t(NOW - 3 * DAY_MS)),
                None,
                Some("minute"),
                true,
                NOW
            )),
            "bucket"
        );
        // Totals may read many minutes: no bucket bound without a series.
        assert!(
            Window::parse(Some(&t(NOW - 3 * DAY_MS)), None, Some("minute"), false, NOW).is_ok()
        );
        assert_eq!(
            field(Window::parse(Some("yesterday"), None, None, true, NOW)),
            "from"
        );
        assert_eq!(
            field(Window::parse(None, Some("-5"), None, true, NOW)),
            "to"
        );
        assert_eq!(
            field(Window::parse(
                None,
                Some("99999999999999999999"),
                None,
                true,
                NOW
            )),
            "to"
        );
        let w = Window::parse(
            Some("2026-11-01T00:00:00Z"),
            Some("2026-11-02T00:00:00.000Z"),
            Some("hour"),
            true,
            NOW,
        )
        .unwrap();
        assert_eq!((w.len(), w.grain), (24, Grain::Hour));
        assert_eq!(w.previous().to, w.from);
        assert_eq!(w.previous().len(), 24);
    }

    #[test]
    fn the_table_read_follows_the_range_and_retention() {
        assert_eq!(Grain::auto(NOW - 2 * HOUR_MS, NOW, NOW), Grain::Minute);
        assert_eq!(Grain::auto(NOW - 2 * DAY_MS, NOW, NOW), Grain::Hour);
        assert_eq!(Grain::auto(NOW - 30 * DAY_MS, NOW, NOW), Grain::Hour);
        assert_eq!(Grain::auto(NOW - 80 * DAY_MS, NOW, NOW), Grain::Day);
        // An hour 10 days ago: its minutes are pruned, its hours are not.
        assert_eq!(
            Grain::auto(NOW - 10 * DAY_MS, NOW - 10 * DAY_MS + HOUR_MS, NOW),
            Grain::Hour
        );
        assert_eq!(
            Grain::auto(NOW - 100 * DAY_MS, NOW - 99 * DAY_MS, NOW),
            Grain::Day
        );
    }

    #[test]
    fn changes_and_shares_round_and_know_when_they_mean_nothing() {
        assert_eq!(change_percent(150, 100), Some(50.0));
        assert_eq!(change_percent(1, 3), Some(-66.7));
        assert_eq!(change_percent(5, 0), None);
        assert_eq!(percent_of(1, 3), 33.3);
        assert_eq!(percent_of(0, 0), 0.0);
    }
}
