//! The analytics that come from the engines' data-plane store rather than
//! the rollups: the devices seen in a range (counts by risk band, bot,
//! browser and region), the clusters, and the rate limiter's recent denies
//! by bucket and key. Every read is bounded: the device index is walked day
//! by day with at most [`MAX_SCANNED`] rows (the answer says when it was
//! cut), denies are the newest [`MAX_DENIES`].

use std::collections::{BTreeMap, HashMap};

use qyzar_shared::ids::{DeviceId, ProjectId};
use qyzar_shared::time::rfc3339;
use qyzar_store::{DataStore, DeviceDay, StoreError, DAY_MS};
use serde::Serialize;

use crate::clusters::{Cluster, Refresher};
use crate::routes::projects::devices_data::risk_band;

/// Most device-day rows one devices summary reads.
pub const MAX_SCANNED: usize = 20_000;
/// Most deny events one summary reads (the newest).
pub const MAX_DENIES: usize = 1_000;
/// Entries in each "top" list.
const TOP: usize = 10;

/// A label and its count.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Count {
    /// What is counted (a browser, a region, a bucket...).
    pub label: String,
    /// How many.
    pub count: u64,
}

/// The devices seen in a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicesSummary {
    /// Distinct devices.
    pub devices: u64,
    /// Device-days (a device seen on three days counts three).
    pub device_days: u64,
    /// Distinct devices judged bots in their latest session.
    pub bots: u64,
    /// Distinct devices by risk band (`low`, `medium`, `high`).
    pub by_risk: BTreeMap<&'static str, u64>,
    /// The most common browsers, by distinct devices.
    pub top_browsers: Vec<Count>,
    /// The most common regions, by distinct devices (`unknown` when none).
    pub top_regions: Vec<Count>,
    /// Devices per UTC day (`YYYY-MM-DD`, oldest first).
    pub per_day: Vec<Count>,
    /// The scan stopped at [`MAX_SCANNED`] rows: the counts are a lower bound.
    pub truncated: bool,
}

fn top(map: HashMap<String, u64>) -> Vec<Count> {
    let mut v: Vec<Count> = map
        .into_iter()
        .map(|(label, count)| Count { label, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.label.cmp(&b.label)));
    v.truncate(TOP);
    v
}

/// The devices the project saw between `from` and `to` (unix ms), from the
/// device index, newest day first.
pub async fn devices_summary(
    store: &dyn DataStore,
    project: &ProjectId,
    from: i64,
    to: i64,
) -> Result<DevicesSummary, StoreError> {
    let mut latest: HashMap<DeviceId, DeviceDay> = HashMap::new();
    let mut per_day = Vec::new();
    let mut device_days = 0u64;
    let mut truncated = false;
    let last_day = (to - 1).div_euclid(DAY_MS);
    'days: for day in (from.div_euclid(DAY_MS)..=last_day).rev() {
        let mut after: Option<(u8, DeviceId)> = None;
        let mut on_day = 0u64;
        loop {
            let page = store
                .list_device_days(project, day, after.as_ref().map(|(s, d)| (*s, d)), 1000)
                .await?;
            let done = page.len() < 1000;
            after = page
                .last()
                .map(|r| (DeviceDay::shard(&r.device_id), r.device_id.clone()));
            for row in page {
                if row.last_seen < from || row.first_seen >= to {
                    continue;
                }
                on_day += 1;
                device_days += 1;
                match latest.get(&row.device_id) {
                    Some(held) if held.last_seen >= row.last_seen => {}
                    _ => {
                        latest.insert(row.device_id.clone(), row);
                    }
                }
            }
            if device_days as usize >= MAX_SCANNED {
                truncated = true;
                per_day.push(Count {
                    label: rfc3339(day * DAY_MS)[..10].to_owned(),
                    count: on_day,
                });
                break 'days;
            }
            if done {
                break;
            }
        }
        per_day.push(Count {
            label: rfc3339(day * DAY_MS)[..10].to_owned(),
            count: on_day,
        });
    }
    per_day.reverse();
    let mut by_risk = BTreeMap::from([("low", 0), ("medium", 0), ("high", 0)]);
    let (mut browsers, mut regions) = (HashMap::new(), HashMap::new());
    let mut bots = 0;
    for d in latest.values() {
        *by_risk.entry(risk_band(d.risk_score)).or_default() += 1;
        bots += u64::from(d.bot);
        *browsers.entry(d.browser.clone()).or_default() += 1;
        *regions
            .entry(d.region.clone().unwrap_or_else(|| "unknown".into()))
            .or_default() += 1;
    }
    Ok(DevicesSummary {
        devices: latest.len() as u64,
        device_days,
        bots,
        by_risk,
        top_browsers: top(browsers),
        top_regions: top(regions),
        per_day,
        truncated,
    })
}

/// The project's clusters as last computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClustersSection {
    /// When they were computed (`null` before the first background pass
    /// reached the project, within a minute of start).
    pub computed_at: Option<String>,
    /// Largest first.
    pub clusters: Vec<Cluster>,
}

/// The cached clusters of `project`.
pub fn clusters_section(refresher: &Refresher, project: &ProjectId) -> ClustersSection {
    match refresher.get(project) {
        Some((clusters, at)) => ClustersSection {
            computed_at: Some(rfc3339(at)),
            clusters: clusters.as_ref().clone(),
        },
        None => ClustersSection {
            computed_at: None,
            clusters: Vec::new(),
        },
    }
}

/// Recent rate-limit denies by bucket and by key.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeniesSummary {
    /// Denies read (at most [`MAX_DENIES`], the newest since `since`).
    pub events: u64,
    /// By bucket (`ip`, `email`...).
    pub top_buckets: Vec<Count>,
    /// By `bucket:key` (the addresses and identifiers hammering the limiter).
    pub top_keys: Vec<Count>,
    /// Identifiers whose logins the anti-ATO challenged or blocked, by
    /// how many (the engine logs those as `ato:challenge` / `ato:block`
    /// denies; they are not in the rate limiter's lists above).
    pub top_identifiers: Vec<Count>,
    /// The oldest deny read, when any: where the window really starts if
    /// [`MAX_DENIES`] cut it.
    pub oldest: Option<String>,
}

/// The newest denies of `project` since `since` (unix ms), summarised.
pub async fn denies_summary(
    store: &dyn DataStore,
    project: &ProjectId,
    since: i64,
) -> Result<DeniesSummary, StoreError> {
    let events = store.list_deny_events(project, since, MAX_DENIES).await?;
    let (mut buckets, mut keys, mut identifiers) = (HashMap::new(), HashMap::new(), HashMap::new());
    for e in &events {
        if e.bucket.starts_with("ato:") {
            *identifiers.entry(e.key.clone()).or_default() += 1;
            continue;
        }
        *buckets.entry(e.bucket.clone()).or_default() += 1;
        *keys.entry(format!("{}:{}", e.bucket, e.key)).or_default() += 1;
    }
    Ok(DeniesSummary {
        events: events.len() as u64,
        top_buckets: top(buckets),
        top_keys: top(keys),
        top_identifiers: top(identifiers),
        oldest: events.iter().map(|e| e.at).min().map(rfc3339),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qyzar_store::{DenyEvent, EmbeddedStore};

    fn row(p: &ProjectId, d: &DeviceId, day: i64, browser: &str, risk: u8, bot: bool) -> DeviceDay {
        DeviceDay {
            project_id: p.clone(),
            device_id: d.clone(),
            day,
            first_seen: day * DAY_MS + 10,
            last_seen: day * DAY_MS + 20,
            browser: browser.into(),
            os: "Linux".into(),
            platform: "desktop".into(),
            region: Some("DE".into()),
            risk_score: risk,
            bot,
            components: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn devices_and_denies_are_summarised_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("d.redb")).unwrap();
        let p = ProjectId::generate();
        let today = qyzar_shared::time::now_ms().div_euclid(DAY_MS);
        let same = DeviceId::generate();
        let mut rows = vec![
            row(&p, &same, today - 1, "Chrome", 10, false),
            row(&p, &same, today, "Chrome", 10, false),
        ];
        for _ in 0..3 {
            rows.push(row(
                &p,
                &DeviceId::generate(),
                today,
                "HeadlessChrome",
                90,
                true,
            ));
        }
        store.record_device_days(&rows).await.unwrap();
        let s = devices_summary(&store, &p, (today - 2) * DAY_MS, (today + 1) * DAY_MS)
            .await
            .unwrap();
        assert_eq!((s.devices, s.device_days, s.bots), (4, 5, 3));
        assert_eq!(s.by_risk["high"], 3);
        assert_eq!(
            s.top_browsers[0],
            Count {
                label: "HeadlessChrome".into(),
                count: 3
            }
        );
        assert_eq!(
            s.per_day.iter().map(|c| c.count).collect::<Vec<_>>(),
            [0, 1, 4]
        );
        assert!(!s.truncated);

        let now = qyzar_shared::time::now_ms();
        let denies: Vec<DenyEvent> = (0..5)
            .map(|k| DenyEvent {
                project_id: p.clone(),
                at: now - 1000 + k,
                bucket: if k < 4 { "ip".into() } else { "email".into() },
                key: if k < 3 {
                    "45.155.205.10".into()
                } else {
                    format!("k{k}")
                },
                ip: None,
            })
            .collect();
        store.record_deny_events(&denies).await.unwrap();
        let d = denies_summary(&store, &p, now - 60_000).await.unwrap();
        assert_eq!(d.events, 5);
        assert_eq!(
            d.top_buckets[0],
            Count {
                label: "ip".into(),
                count: 4
            }
        );
        assert_eq!(
            d.top_keys[0],
            Count {
                label: "ip:45.155.205.10".into(),
                count: 3
            }
        );
    }
}
