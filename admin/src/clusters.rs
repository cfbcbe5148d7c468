//! Clusters: devices that share most of their stable entropy but differ in
//! a few components — the signature of a bot farm (one machine image, the
//! user agent's patch version or the time zone varied per instance).
//!
//! Each device is a set of `component=value` tokens (its latest row in the
//! device index, [`DeviceDay::components`]). Similar sets are found with
//! MinHash and locality-sensitive hashing instead of comparing every pair:
//! [`HASHES`] min-hashes per device, split into [`BANDS`] bands; devices
//! that agree on a whole band land in the same bucket and become
//! candidates, and a candidate joins a cluster only when its exact Jaccard
//! similarity to the bucket's first device is at least [`MIN_JACCARD`] and
//! they share a high-entropy component (the canvas or the audio hash):
//! two ordinary people on the same laptop model share the platform and the
//! screen, not the canvas hash. Work is linear in the devices (each bucket
//! is compared against one representative), bounded by
//! [`MAX_DEVICES`] per project.
//!
//! [`Refresher`] recomputes, in the background, the clusters of the projects
//! that saw a device today, from the last [`WINDOW_DAYS`] days of the device
//! index; the analytics route answers from its cache. What it keeps between
//! passes is only each project's result (at most [`MAX_CLUSTERS`] clusters
//! of bounded size): signatures are recomputed each pass (32 hashes of about
//! a dozen tokens per device, milliseconds for [`MAX_DEVICES`]) rather than
//! cached, since a cache of every device of every project would not be
//! bounded by bytes per project.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use qyzar_shared::ids::{DeviceId, ProjectId};
use qyzar_store::{DataStore, DeviceDay, DAY_MS};
use serde::Serialize;

/// Min-hashes per device.
pub const HASHES: usize = 32;
/// LSH bands (of `HASHES / BANDS` rows each): 16 × 2 finds pairs of
/// similarity 0.6 with probability 1 − (1 − 0.36)^16 > 0.999.
pub const BANDS: usize = 16;
/// Smallest exact Jaccard similarity between a member and its bucket's
/// representative.
pub const MIN_JACCARD: f64 = 0.6;
/// Smallest cluster reported.
pub const MIN_SIZE: usize = 3;
/// Most devices one project's run considers (the newest first).
pub const MAX_DEVICES: usize = 20_000;
/// Most clusters kept per project (the largest).
pub const MAX_CLUSTERS: usize = 50;
/// Days of the device index a run reads.
pub const WINDOW_DAYS: i64 = 7;
/// How often the refresher runs.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Components whose sharing means "the same machine image".
/// (The WebGL renderer names a GPU model, which many people share.)
const HIGH_ENTROPY: [&str; 2] = ["canvasHash", "audioHash"];

/// One cluster, explained.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// Stable for the same members: the smallest member's device id.
    pub cluster_id: String,
    /// Devices in it.
    pub devices: usize,
    /// Device-days (a device seen on three days counts three).
    pub device_days: usize,
    /// Components every member has with the same value.
    pub shared: BTreeMap<String, String>,
    /// Components that differ, with how many distinct values and a few of
    /// them.
    pub varying: BTreeMap<String, Varying>,
    /// Earliest first seen, RFC 3339.
    pub first_seen: String,
    /// Latest last seen, RFC 3339.
    pub last_seen: String,
    /// Highest and mean bot score of the members.
    pub max_risk: u8,
    /// Mean bot score.
    pub mean_risk: u8,
    /// Members judged bots.
    pub bots: usize,
    /// Up to five member device ids.
    pub examples: Vec<String>,
}

/// A component that differs within a cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Varying {
    /// Distinct values among the members.
    pub distinct: usize,
    /// Up to three of them.
    pub examples: Vec<String>,
}

/// The min-hash signature of one component set.
pub type Signature = [u64; HASHES];

/// A fixed-key SipHash: the same token hashes alike in every run and
/// process, so cached signatures stay comparable.
fn token_hash(key: &str, value: &str) -> u64 {
    let mut h = std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().build_hasher();
    h.write(key.as_bytes());
    h.write_u8(0xff);
    h.write(value.as_bytes());
    h.finish()
}

/// The `i`-th hash of a token hash: a multiply-xorshift permutation per
/// index (odd multipliers from the golden ratio), cheap and well mixed.
fn nth(h: u64, i: usize) -> u64 {
    let a = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(2 * i as u64 + 1) | 1;
    let mut x = h.wrapping_mul(a) ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

/// The signature of a component set (all `u64::MAX` for an empty one,
/// which never matches anything: see [`clusters`]).
pub fn signature(components: &BTreeMap<String, String>) -> Signature {
    let mut sig = [u64::MAX; HASHES];
    for (k, v) in components {
        let h = token_hash(k, v);
        for (i, slot) in sig.iter_mut().enumerate() {
            *slot = (*slot).min(nth(h, i));
        }
    }
    sig
}

/// Exact Jaccard similarity of two component sets as `key=value` tokens.
pub fn jaccard(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> f64 {
    let same = a.iter().filter(|(k, v)| b.get(*k) == Some(*v)).count();
    let union = a.len() + b.len() - same;
    if union == 0 {
        0.0
    } else {
        same as f64 / union as f64
    }
}

fn shares_high_entropy(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    HIGH_ENTROPY
        .iter()
        .any(|k| a.get(*k).is_some_and(|v| b.get(*k) == Some(v)))
}

/// One device as clustered: its newest row, its days and its signature.
struct Member<'a> {
    latest: &'a DeviceDay,
    days: usize,
    first_seen: i64,
    sig: Signature,
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// The clusters among `rows` (device-days of one project), largest first,
/// at most [`MAX_CLUSTERS`]. `sig_of` supplies a device's signature (a
/// cache in the [`Refresher`], [`signature`] in tests).
pub fn clusters(
    rows: &[DeviceDay],
    mut sig_of: impl FnMut(&DeviceDay) -> Signature,
) -> Vec<Cluster> {
    // One member per device: its newest row.
    let mut by_device: HashMap<&DeviceId, usize> = HashMap::new();
    let mut members: Vec<Member<'_>> = Vec::new();
    for row in rows.iter().filter(|r| !r.components.is_empty()) {
        match by_device.get(&row.device_id) {
            Some(&i) => {
                let m = &mut members[i];
                m.days += 1;
                m.first_seen = m.first_seen.min(row.first_seen);
                if row.last_seen > m.latest.last_seen {
                    m.latest = row;
                }
            }
            None => {
                if members.len() >= MAX_DEVICES {
                    continue;
                }
                by_device.insert(&row.device_id, members.len());
                members.push(Member {
                    latest: row,
                    days: 1,
                    first_seen: row.first_seen,
                    sig: [0; HASHES],
                });
            }
        }
    }
    for m in &mut members {
        m.sig = sig_of(m.latest);
    }
    // LSH: per band, a bucket of members; each joins its bucket's first.
    let rows_per_band = HASHES / BANDS;
    let mut parent: Vec<usize> = (0..members.len()).collect();
    for band in 0..BANDS {
        let mut buckets: HashMap<&[u64], usize> = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            let key = &m.sig[band * rows_per_band..(band + 1) * rows_per_band];
            match buckets.get(key) {
                None => {
                    buckets.insert(key, i);
                }
                Some(&rep) => {
                    let (a, b) = (&members[rep].latest.components, &m.latest.components);
                    if jaccard(a, b) >= MIN_JACCARD && shares_high_entropy(a, b) {
                        let (ra, rb) = (find(&mut parent, rep), find(&mut parent, i));
                        if ra != rb {
                            parent[rb] = ra;
                        }
                    }
                }
            }
        }
    }
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..members.len() {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }
    let mut out: Vec<Cluster> = groups
        .into_values()
        .filter(|g| g.len() >= MIN_SIZE)
        .map(|g| explain(&members, &g))
        .collect();
    out.sort_by(|a, b| {
        b.devices
            .cmp(&a.devices)
            .then(a.cluster_id.cmp(&b.cluster_id))
    });
    out.truncate(MAX_CLUSTERS);
    out
}

fn explain(members: &[Member<'_>], group: &[usize]) -> Cluster {
    let mut values: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for &i in group {
        for (k, v) in &members[i].latest.components {
            *values.entry(k).or_default().entry(v).or_default() += 1;
        }
    }
    let mut shared = BTreeMap::new();
    let mut varying = BTreeMap::new();
    for (k, vals) in values {
        let present: usize = vals.values().sum();
        if vals.len() == 1 && present == group.len() {
            let v = vals.keys().next().copied().unwrap_or_default();
            shared.insert(k.to_owned(), v.to_owned());
        } else {
            varying.insert(
                k.to_owned(),
                Varying {
                    distinct: vals.len(),
                    examples: vals.keys().take(3).map(|v| (*v).to_owned()).collect(),
                },
            );
        }
    }
    let mut ids: Vec<&DeviceId> = group
        .iter()
        .map(|&i| &members[i].latest.device_id)
        .collect();
    ids.sort();
    let risks: Vec<u8> = group
        .iter()
        .map(|&i| members[i].latest.risk_score)
        .collect();
    let sum: usize = risks.iter().map(|r| usize::from(*r)).sum();
    Cluster {
        cluster_id: ids[0].to_string(),
        devices: group.len(),
        device_days: group.iter().map(|&i| members[i].days).sum(),
        shared,
        varying,
        first_seen: qyzar_shared::time::rfc3339(
            group
                .iter()
                .map(|&i| members[i].first_seen)
                .min()
                .unwrap_or(0),
        ),
        last_seen: qyzar_shared::time::rfc3339(
            group
                .iter()
                .map(|&i| members[i].latest.last_seen)
                .max()
                .unwrap_or(0),
        ),
        max_risk: risks.iter().copied().max().unwrap_or(0),
        mean_risk: u8::try_from(sum / group.len().max(1)).unwrap_or(100),
        bots: group.iter().filter(|&&i| members[i].latest.bot).count(),
        examples: ids.iter().take(5).map(|d| d.to_string()).collect(),
    }
}

/// One project's cached result.
#[derive(Default)]
struct ProjectClusters {
    clusters: Arc<Vec<Cluster>>,
    /// When they were computed, unix ms (0: never).
    computed_at: i64,
}

/// The clusters of every project, recomputed in the background.
#[derive(Default, Clone)]
pub struct Refresher {
    projects: Arc<RwLock<HashMap<ProjectId, ProjectClusters>>>,
}

impl Refresher {
    /// The project's clusters and when they were computed (`None` before
    /// the first run reached it).
    pub fn get(&self, project: &ProjectId) -> Option<(Arc<Vec<Cluster>>, i64)> {
        let map = self.projects.read().unwrap_or_else(|p| p.into_inner());
        map.get(project)
            .filter(|p| p.computed_at > 0)
            .map(|p| (Arc::clone(&p.clusters), p.computed_at))
    }

    /// Recomputes `project` from the last [`WINDOW_DAYS`] of the device
    /// index (at most [`MAX_DEVICES`] device-days read).
    pub async fn refresh(
        &self,
        store: &dyn DataStore,
        project: &ProjectId,
        now: i64,
    ) -> Result<(), qyzar_store::StoreError> {
        let today = now.div_euclid(DAY_MS);
        let mut rows: Vec<DeviceDay> = Vec::new();
        'days: for day in (today - WINDOW_DAYS + 1..=today).rev() {
            let mut after: Option<(u8, DeviceId)> = None;
            loop {
                let page = store
                    .list_device_days(project, day, after.as_ref().map(|(s, d)| (*s, d)), 1000)
                    .await?;
                let done = page.len() < 1000;
                after = page
                    .last()
                    .map(|r| (DeviceDay::shard(&r.device_id), r.device_id.clone()));
                rows.extend(page);
                if rows.len() >= MAX_DEVICES {
                    break 'days;
                }
                if done {
                    break;
                }
            }
        }
        let result = clusters(&rows, |row| signature(&row.components));
        let mut map = self.projects.write().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(project.clone()).or_default();
        entry.clusters = Arc::new(result);
        entry.computed_at = now;
        Ok(())
    }

    /// Forgets projects not in `live` (deleted ones).
    pub fn retain(&self, live: &std::collections::HashSet<ProjectId>) {
        let mut map = self.projects.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|p, _| live.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(components: &[(&str, &str)], at: i64, risk: u8) -> DeviceDay {
        DeviceDay {
            project_id: ProjectId::generate(),
            device_id: DeviceId::generate(),
            day: at.div_euclid(DAY_MS),
            first_seen: at,
            last_seen: at,
            browser: "Chrome".into(),
            os: "Linux".into(),
            platform: "desktop".into(),
            region: None,
            risk_score: risk,
            bot: risk >= 70,
            components: components
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn farm_member(k: usize, at: i64) -> DeviceDay {
        let ua = format!("HeadlessChrome/131.0.{}.{k}", 6700 + k % 7);
        let tz = ["UTC", "Europe/Amsterdam"][k % 2];
        device(
            &[
                ("userAgent", ua.as_str()),
                ("timezone", tz),
                ("platform", "Linux x86_64"),
                ("hardwareConcurrency", "2"),
                ("deviceMemory", "2"),
                ("screen", "800x600"),
                ("screen.colorDepth", "24"),
                ("canvasHash", "c0ffee01"),
                ("webglVendor", "Google Inc. (Google)"),
                ("webglRenderer", "SwiftShader"),
                ("audioHash", "a0b0c0"),
                ("fonts", "DejaVu Sans"),
            ],
            at + k as i64,
            80,
        )
    }

    fn person(k: usize, at: i64) -> DeviceDay {
        let canvas = format!("c{k:08x}");
        let audio = format!("a{k:06x}");
        let gpu = ["Intel", "NVIDIA", "AMD", "Apple"][k % 4];
        let screen = ["1920x1080", "2560x1440", "1512x982"][k % 3];
        let tz = ["Europe/Berlin", "Europe/Paris", "America/New_York"][k % 3];
        device(
            &[
                ("userAgent", "Mozilla/5.0 Chrome/131.0.0.0"),
                ("timezone", tz),
                ("platform", "Win32"),
                ("hardwareConcurrency", "8"),
                ("deviceMemory", "8"),
                ("screen", screen),
                ("screen.colorDepth", "24"),
                ("canvasHash", canvas.as_str()),
                ("webglVendor", "Google Inc."),
                ("webglRenderer", gpu),
                ("audioHash", audio.as_str()),
                ("fonts", "Arial,Helvetica"),
            ],
            at + k as i64,
            5,
        )
    }

    #[test]
    fn finds_the_farm_and_leaves_people_alone() {
        let at = 1_764_000_000_000;
        let mut rows: Vec<DeviceDay> = (0..40).map(|k| farm_member(k, at)).collect();
        rows.extend((0..300).map(|k| person(k, at)));
        let found = clusters(&rows, |r| signature(&r.components));
        assert_eq!(found.len(), 1, "{found:#?}");
        let c = &found[0];
        assert_eq!(c.devices, 40);
        assert_eq!(
            c.shared.get("canvasHash").map(String::as_str),
            Some("c0ffee01")
        );
        assert!(c.varying.contains_key("userAgent"));
        assert_eq!(c.varying["timezone"].distinct, 2);
        assert_eq!((c.max_risk, c.mean_risk, c.bots), (80, 80, 40));
        assert_eq!(c.examples.len(), 5);
        assert!(!c.shared.contains_key("userAgent"));
    }

    #[test]
    fn a_device_seen_on_several_days_counts_once() {
        let at = 1_764_000_000_000;
        let mut rows: Vec<DeviceDay> = (0..5).map(|k| farm_member(k, at)).collect();
        let again: Vec<DeviceDay> = rows
            .iter()
            .map(|r| DeviceDay {
                day: r.day - 1,
                first_seen: r.first_seen - DAY_MS,
                last_seen: r.last_seen - DAY_MS,
                ..r.clone()
            })
            .collect();
        rows.extend(again);
        let found = clusters(&rows, |r| signature(&r.components));
        assert_eq!(
            (found.len(), found[0].devices, found[0].device_days),
            (1, 5, 10)
        );
    }

    #[test]
    fn signatures_estimate_jaccard() {
        // MinHash's agreement rate estimates the Jaccard similarity.
        let at = 1_764_000_000_000;
        let (a, b) = (farm_member(0, at), farm_member(1, at));
        let (sa, sb) = (signature(&a.components), signature(&b.components));
        let agree = sa.iter().zip(&sb).filter(|(x, y)| x == y).count() as f64 / HASHES as f64;
        let exact = jaccard(&a.components, &b.components);
        assert!(
            (agree - exact).abs() < 0.3,
            "estimate {agree} vs exact {exact}"
        );
        assert_eq!(signature(&a.components), sa, "deterministic");
        assert!(clusters(&[], |r| signature(&r.components)).is_empty());
    }
}
