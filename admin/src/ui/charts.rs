//! What the analytics pages share: the time range a page shows (presets
//! from an hour to 30 days, or a custom `from`/`to`) and the chart data the
//! chart script draws (`admin/assets/qyzar-charts.js`: uPlot over the
//! API's `buckets` and `series`).

use qyzar_shared::time::{now_ms, parse_rfc3339, rfc3339};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Answer;

/// `?range=1h|24h|7d|30d|custom&from=&to=` of an analytics page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RangeQuery {
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// The presets, as (query value, label, length in ms).
pub(crate) const PRESETS: [(&str, &str, i64); 4] = [
    ("1h", "Last hour", 3_600_000),
    ("24h", "Last 24 hours", 86_400_000),
    ("7d", "Last 7 days", 7 * 86_400_000),
    ("30d", "Last 30 days", 30 * 86_400_000),
];

/// A resolved range.
#[derive(Debug, Clone)]
pub(crate) struct Range {
    /// The preset's key, or `custom`.
    pub key: String,
    /// RFC 3339 start, as the API takes it.
    pub from: String,
    /// RFC 3339 end.
    pub to: String,
    /// What a custom form shows (`YYYY-MM-DDTHH:MM`, UTC).
    pub from_input: String,
    /// As `from_input`.
    pub to_input: String,
    /// A message when the custom range could not be read (the page then
    /// shows the last 24 hours).
    pub error: Option<String>,
}

impl Range {
    /// The range a query asks for; a bad custom range falls back to the
    /// last 24 hours with a message (the API's own bounds still apply and
    /// its errors are shown as they come).
    pub(crate) fn from_query(q: &RangeQuery) -> Range {
        let now = now_ms();
        let key = q.range.as_deref().unwrap_or("24h");
        if key == "custom" {
            // `datetime-local` inputs carry no zone: read them as UTC.
            let read = |s: &Option<String>| {
                s.as_deref()
                    .and_then(|v| parse_rfc3339(v).or_else(|| parse_rfc3339(&format!("{v}:00Z"))))
            };
            match (read(&q.from), read(&q.to)) {
                (Some(f), Some(t)) if f < t => return Range::span("custom", f, t, None),
                _ => {
                    return Range::span(
                        "24h",
                        now - 86_400_000,
                        now,
                        Some("The custom range needs a start before its end (UTC); showing the last 24 hours.".into()),
                    )
                }
            }
        }
        let (k, _, len) = PRESETS
            .iter()
            .find(|(k, _, _)| *k == key)
            .copied()
            .unwrap_or(PRESETS[1]);
        Range::span(k, now - len, now, None)
    }

    fn span(key: &str, from: i64, to: i64, error: Option<String>) -> Range {
        Range {
            key: key.to_owned(),
            from: rfc3339(from),
            to: rfc3339(to),
            from_input: rfc3339(from)[..16].to_owned(),
            to_input: rfc3339(to)[..16].to_owned(),
            error,
        }
    }

    /// `from=…&to=…` for an API path.
    pub(crate) fn api_query(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("from", &self.from)
            .append_pair("to", &self.to)
            .finish()
    }

    /// This range as a page query (`range=7d`, or the custom bounds).
    pub(crate) fn page_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("range", &self.key);
        if self.key == "custom" {
            q.append_pair("from", &self.from_input);
            q.append_pair("to", &self.to_input);
        }
        q.finish()
    }
}

/// The chart data of an analytics answer (`buckets` and `series`, lines
/// with no count dropped), as the JSON the chart script reads; `None` when
/// the answer is an error.
pub(crate) fn chart(answer: &Answer, only: Option<&[&str]>) -> Option<String> {
    if !answer.ok() {
        return None;
    }
    let series: Vec<Value> = answer.body["series"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| only.is_none_or(|o| o.contains(&s["label"].as_str().unwrap_or(""))))
                .map(|s| json!({"label": s["label"], "points": s["points"]}))
                .collect()
        })
        .unwrap_or_default();
    Some(json!({"buckets": answer.body["buckets"], "series": series}).to_string())
}

/// A count and its change against the previous period, for a stat card.
#[derive(Debug, Clone)]
pub(crate) struct Stat {
    /// What it counts.
    pub label: &'static str,
    /// In the range.
    pub current: i64,
    /// In the period before, of the same length.
    pub previous: i64,
    /// `+12.5 %`, `−3 %`, or `new` when the previous period had none.
    pub change: String,
    /// Whether the change is up (for the arrow's colour).
    pub up: bool,
}

/// The stat of `key` (camelCase, as in the API's `current`) of an
/// overview-stats or dashboard-summary answer.
pub(crate) fn stat(answer: &Answer, key: &str, label: &'static str) -> Stat {
    let current = answer.body["current"][key].as_i64().unwrap_or(0);
    let previous = answer.body["previous"][key].as_i64().unwrap_or(0);
    let change = match answer.body["changePercent"][key].as_f64() {
        Some(p) => format!("{}{p:.1} %", if p > 0.0 { "+" } else { "" }),
        None if current > 0 => "new".to_owned(),
        None => "—".to_owned(),
    };
    Stat {
        label,
        current,
        previous,
        change,
        up: current > previous,
    }
}

/// One row of a "top" table (`name`, `count`, `percent`).
#[derive(Debug, Clone)]
pub(crate) struct TopRow {
    /// The value.
    pub name: String,
    /// Its count.
    pub count: i64,
    /// Its share, one decimal.
    pub percent: String,
}

/// The rows of the list `key` of an answer.
pub(crate) fn top(answer: &Answer, key: &str) -> Vec<TopRow> {
    top_in(&answer.body, key)
}

/// The rows of the list `key` of a JSON object.
pub(crate) fn top_in(v: &Value, key: &str) -> Vec<TopRow> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| TopRow {
                    name: r["name"]
                        .as_str()
                        .or(r["label"].as_str())
                        .unwrap_or("")
                        .to_owned(),
                    count: r["count"].as_i64().unwrap_or(0),
                    percent: r["percent"]
                        .as_f64()
                        .map(|p| format!("{p:.1} %"))
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_from_presets_and_custom_input() {
        let r = Range::from_query(&RangeQuery {
            range: Some("7d".into()),
            ..Default::default()
        });
        assert_eq!(r.key, "7d");
        assert_eq!(
            parse_rfc3339(&r.to).unwrap() - parse_rfc3339(&r.from).unwrap(),
            7 * 86_400_000
        );
        let r = Range::from_query(&RangeQuery {
            range: Some("custom".into()),
            from: Some("2026-11-01T10:00".into()),
            to: Some("2026-11-02T10:00".into()),
        });
        assert_eq!((r.key.as_str(), r.error.is_none()), ("custom", true));
        assert_eq!(r.from, "2026-11-01T10:00:00.000Z");
        assert!(r.page_query().contains("from=2026-11-01T10%3A00"));
        let bad = Range::from_query(&RangeQuery {
            range: Some("custom".into()),
            from: Some("2026-11-02T10:00".into()),
            to: Some("2026-11-01T10:00".into()),
        });
        assert_eq!((bad.key.as_str(), bad.error.is_some()), ("24h", true));
        let unknown = Range::from_query(&RangeQuery {
            range: Some("5y".into()),
            ..Default::default()
        });
        assert_eq!(unknown.key, "24h");
    }
}
