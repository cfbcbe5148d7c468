//! The anti-ATO profile of one (project, identifier): everything
//! `ato-login-attempt` decides from, in one small record that every attempt
//! updates, so the hot path reads one profile instead of scanning attempts.
//!
//! # Why a join, not a read-modify-write
//!
//! Several engines may take attempts for one identifier at once, and the
//! CQL store has no lightweight transactions on the hot path. So the
//! profile is a state-based CRDT: a set of independent *cells*, each with a
//! merge rule that is commutative, associative and idempotent, and
//! [`AtoProfile::join`] merges two profiles cell by cell. An engine joins
//! its attempt into the profile it holds and sends the store only the cells
//! that changed (a [`ProfileUpdate`]); the store joins them into what it
//! holds (the embedded store in its single writer, the CQL store with one
//! map cell per key written `USING TIMESTAMP`, so last-write-wins is the
//! max). Whatever order the writes land in, every store ends with the same
//! profile, and no writer can erase another's device or newer success.
//!
//! | cell | key | merge |
//! |---|---|---|
//! | `last_success` | — | the newer by (`at`, `attempt_id`) |
//! | `devices` | device id | first seen: min, last seen: max, successes: max |
//! | `regions` | region | first seen: min, last seen: max |
//! | `trusted` | device id | earliest `since` |
//! | `failures` | writer (one engine process) | the writer's newer count ([`FailureCell::newer`]) |
//!
//! Successes per device take the max of the writers' views, so two engines
//! counting the same device's successes at the same instant may undercount
//! by one each; first/last seen, the devices themselves and the newest
//! success are never lost.
//!
//! # Failures: a sliding-window counter per writer
//!
//! Failed attempts count towards velocity over the project's
//! `failedAttemptsWindowSeconds`. Each writer keeps one [`FailureCell`]: the
//! count in its current fixed window and in the one before, and the
//! estimate is `previous × (1 − elapsed / window) + current` (the sliding
//! window counter of Cloudflare's rate limiter): no row scan, one small cell
//! per engine, exact for steady traffic and never under half of a burst
//! that fell just before the boundary. The profile's failure count is the
//! sum over writers (a G-counter of them). A writer is one engine process
//! ([`new_writer_id`]); only it writes its cell, so its own increments
//! never race on the store.
//!
//! # Bounds
//!
//! A profile holds at most [`MAX_PROFILE_DEVICES`] devices and
//! [`MAX_PROFILE_REGIONS`] regions (most recently seen kept),
//! [`MAX_PROFILE_TRUSTED`] trusted devices (earliest kept) and
//! [`MAX_FAILURE_CELLS`] failure cells (cells whose windows have passed
//! count nothing and are dropped first). Only successful logins add devices
//! and regions, so a flood of failures with invented device ids grows
//! nothing but one counter. [`AtoProfile::bound`] says what it cut, so the
//! store can delete those cells too.

use qyzar_shared::ids::DeviceId;
use serde::{Deserialize, Serialize};

use crate::LoginAttempt;

/// Most devices a profile keeps, most recently seen first.
pub const MAX_PROFILE_DEVICES: usize = 32;
/// Most regions a profile keeps, most recently seen first.
pub const MAX_PROFILE_REGIONS: usize = 16;
/// Most devices trusted for one identifier (`ato-add-identifier`).
pub const MAX_PROFILE_TRUSTED: usize = 64;
/// Most failure cells (one per engine process that counted failures).
pub const MAX_FAILURE_CELLS: usize = 64;

/// A point on Earth from a GeoIP City database, in 1/10 000 degree (about
/// 11 m: far finer than any IP location) so it compares and encodes as
/// integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeoPoint {
    /// Latitude × 10 000.
    pub lat_e4: i32,
    /// Longitude × 10 000.
    pub lon_e4: i32,
    /// The database's accuracy radius, kilometres.
    pub radius_km: u32,
}

impl GeoPoint {
    /// Great-circle distance in kilometres (haversine, mean Earth radius).
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        const R: f64 = 6371.0;
        let (la1, lo1) = (deg(self.lat_e4), deg(self.lon_e4));
        let (la2, lo2) = (deg(other.lat_e4), deg(other.lon_e4));
        let h = ((la2 - la1) / 2.0).sin().powi(2)
            + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
        2.0 * R * h.sqrt().min(1.0).asin()
    }
}

fn deg(e4: i32) -> f64 {
    (f64::from(e4) / 10_000.0).to_radians()
}

/// One successful login, as the profile remembers the last one.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginRecord {
    /// When, unix ms.
    pub at: i64,
    /// The attempt's id: breaks ties between two successes in one ms.
    pub attempt_id: String,
    /// The device, when known.
    pub device_id: Option<DeviceId>,
    /// The client IP, as reported.
    pub ip: Option<String>,
    /// The coarse region (ISO country code), when known.
    pub region: Option<String>,
    /// Coordinates, when a City database had them.
    pub location: Option<GeoPoint>,
    /// The device's platform, when known.
    pub platform: Option<String>,
    /// The device's browser, when known.
    pub browser: Option<String>,
}

/// Written out for [`Clone::clone_from`]: every success replaces the
/// profile's last one ([`AtoProfile::join`]), and the derived `clone_from`
/// drops the old strings and allocates new ones; this one copies into the
/// old strings' buffers when they are large enough (`String::clone_from`),
/// which a login from the same device usually finds. A test holds it equal
/// to `clone`.
impl Clone for LoginRecord {
    fn clone(&self) -> Self {
        Self {
            at: self.at,
            attempt_id: self.attempt_id.clone(),
            device_id: self.device_id.clone(),
            ip: self.ip.clone(),
            region: self.region.clone(),
            location: self.location,
            platform: self.platform.clone(),
            browser: self.browser.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        // Destructured, so a field added to the struct and not copied here
        // is a compile error rather than a stale value.
        let Self {
            at,
            attempt_id,
            device_id,
            ip,
            region,
            location,
            platform,
            browser,
        } = source;
        self.at = *at;
        self.attempt_id.clone_from(attempt_id);
        self.device_id.clone_from(device_id);
        self.ip.clone_from(ip);
        self.region.clone_from(region);
        self.location = *location;
        self.platform.clone_from(platform);
        self.browser.clone_from(browser);
    }
}

impl LoginRecord {
    /// The record of a stored attempt (no coordinates: the log has none).
    pub fn from_attempt(a: &LoginAttempt) -> Self {
        Self {
            at: a.at,
            attempt_id: a.attempt_id.clone(),
            device_id: a.device_id.clone(),
            ip: a.ip.clone(),
            region: a.region.clone(),
            location: None,
            platform: a.platform.clone(),
            browser: a.browser.clone(),
        }
    }

    /// The merge order of `last_success`: later, then the greater id.
    pub fn is_newer_than(&self, other: &LoginRecord) -> bool {
        (self.at, self.attempt_id.as_str()) > (other.at, other.attempt_id.as_str())
    }

    fn heap(&self) -> usize {
        self.attempt_id.len()
            + self.device_id.as_ref().map_or(0, |d| d.as_str().len())
            + [&self.ip, &self.region, &self.platform, &self.browser]
                .iter()
                .map(|s| s.as_ref().map_or(0, String::len))
                .sum::<usize>()
    }
}

/// A device the identifier logged in from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnownDevice {
    /// The device.
    pub device_id: DeviceId,
    /// First successful login from it, unix ms.
    pub first_seen: i64,
    /// Latest successful login from it, unix ms.
    pub last_seen: i64,
    /// Successful logins from it (see the module docs on races).
    pub successes: u32,
}

/// A region the identifier logged in from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnownRegion {
    /// ISO country code.
    pub region: String,
    /// First successful login from it, unix ms.
    pub first_seen: i64,
    /// Latest successful login from it, unix ms.
    pub last_seen: i64,
}

/// A device the customer marked trusted for the identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustedDevice {
    /// The device.
    pub device_id: DeviceId,
    /// When it was first trusted, unix ms.
    pub since: i64,
}

/// One writer's failed attempts: counts in its current fixed window and the
/// one before (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureCell {
    /// The engine process that counts into this cell.
    pub writer: u64,
    /// The window length the cell counts in, ms (the project's setting when
    /// it last counted).
    pub window_ms: i64,
    /// Start of the current window, unix ms, a multiple of `window_ms`
    /// (except just after the window length changed, see [`FailureCell::count`]).
    pub start: i64,
    /// Failures in `[start, start + window_ms)`.
    pub current: u32,
    /// Failures in the window before.
    pub previous: u32,
}

impl FailureCell {
    /// The cell as it stands at `now`: windows that have passed move
    /// `current` to `previous`, or drop both.
    pub fn rolled(&self, now: i64) -> FailureCell {
        let w = self.window_ms.max(1);
        let start = now - now.rem_euclid(w);
        if start <= self.start {
            return *self;
        }
        let previous = if start == self.start.saturating_add(w) {
            self.current
        } else {
            0
        };
        FailureCell {
            start,
            current: 0,
            previous,
            ..*self
        }
    }

    /// The sliding-window estimate of failures in the `window_ms` before
    /// `now`.
    pub fn estimate(&self, now: i64) -> f64 {
        let c = self.rolled(now);
        let w = c.window_ms.max(1) as f64;
        // A cell read back from a store is outside data: a window of zero
        // or less must not make `clamp` panic, nor a far start overflow.
        let elapsed = now.saturating_sub(c.start).clamp(0, c.window_ms.max(1)) as f64;
        f64::from(c.previous) * (1.0 - elapsed / w) + f64::from(c.current)
    }

    /// This writer's cell after one more failure at `now`, counting in
    /// windows of `window_ms`. A changed window length starts afresh, with
    /// the old estimate carried into the current window so a setting change
    /// does not forget a flood.
    pub fn count(&self, now: i64, window_ms: i64) -> FailureCell {
        let window_ms = window_ms.max(1);
        let mut c = if self.window_ms == window_ms {
            self.rolled(now)
        } else {
            // A longer window's aligned start can lie before this cell's,
            // and a cell that starts earlier is never the newer one in a
            // join: the count would be dropped. So the new window starts no
            // earlier than this cell (as rolled); with the estimate carried
            // in, the result is always newer. Such a start is not a
            // multiple of `window_ms`, which only means the first roll
            // after the change starts afresh instead of carrying `current`.
            let aligned = now - now.rem_euclid(window_ms);
            FailureCell {
                writer: self.writer,
                window_ms,
                start: aligned.max(self.rolled(now).start),
                current: self.estimate(now).round() as u32,
                previous: 0,
            }
        };
        c.current = c.current.saturating_add(1);
        c
    }

    /// A writer's first cell.
    pub fn empty(writer: u64, window_ms: i64, now: i64) -> FailureCell {
        let window_ms = window_ms.max(1);
        FailureCell {
            writer,
            window_ms,
            start: now - now.rem_euclid(window_ms),
            current: 0,
            previous: 0,
        }
    }

    /// The merge order of two states of one writer's cell: the writer only
    /// moves forward (later window, then more failures), so the greater
    /// (`start`, `current`, `previous`, `window_ms`) is the newer. The CQL
    /// store encodes cells so that byte order is this order.
    pub fn newer(&self, other: &FailureCell) -> bool {
        (self.start, self.current, self.previous, self.window_ms)
            > (other.start, other.current, other.previous, other.window_ms)
    }

    /// Whether the cell counts nothing at `now` or later.
    pub fn is_spent(&self, now: i64) -> bool {
        now >= self
            .start
            .saturating_add(self.window_ms.max(1).saturating_mul(2))
    }
}

/// A fresh writer id for this process: random, so two engines (or one
/// engine before and after a restart) never count into the same cell.
pub fn new_writer_id() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    // A failing system RNG leaves zeros: still a valid (shared) writer.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// Everything the anti-ATO decision knows about one identifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AtoProfile {
    /// The newest successful login.
    pub last_success: Option<LoginRecord>,
    /// Devices with a successful login, most recently seen first.
    pub devices: Vec<KnownDevice>,
    /// Regions with a successful login, most recently seen first.
    pub regions: Vec<KnownRegion>,
    /// Devices trusted for the identifier, earliest first.
    pub trusted: Vec<TrustedDevice>,
    /// Failure counters, one per writer.
    pub failures: Vec<FailureCell>,
}

/// What [`AtoProfile::bound`] cut: the store deletes these cells, each only
/// if it is not newer than what was cut (so a concurrent update survives).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forgotten {
    /// Devices cut, with the last seen they had.
    pub devices: Vec<(DeviceId, i64)>,
    /// Regions cut, with the last seen they had.
    pub regions: Vec<(String, i64)>,
    /// Trusted devices cut, with their `since`.
    pub trusted: Vec<(DeviceId, i64)>,
    /// Failure cells cut (spent ones), by writer.
    pub failures: Vec<u64>,
}

impl Forgotten {
    /// Whether nothing was cut.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.regions.is_empty()
            && self.trusted.is_empty()
            && self.failures.is_empty()
    }
}

/// What one write sends the store: the cells that changed (a partial
/// profile the store joins into its own) and the cells to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileUpdate {
    /// Cells to join.
    pub cells: AtoProfile,
    /// Cells to delete.
    pub forget: Forgotten,
}

/// The facts of one attempt that change a profile.
#[derive(Debug, Clone)]
pub struct AttemptFacts<'a> {
    /// The attempt as logged.
    pub attempt: &'a LoginAttempt,
    /// Coordinates of its IP, when known.
    pub location: Option<GeoPoint>,
}

impl AtoProfile {
    /// Merges `other` into `self`, cell by cell (see the module table). The
    /// result does not depend on the order of joins; it is not yet bounded.
    pub fn join(&mut self, other: &AtoProfile) {
        if let Some(o) = &other.last_success {
            match &mut self.last_success {
                Some(s) if !o.is_newer_than(s) => {}
                Some(s) => s.clone_from(o),
                None => self.last_success = Some(o.clone()),
            }
        }
        for d in &other.devices {
            match self.devices.iter_mut().find(|x| x.device_id == d.device_id) {
                Some(x) => {
                    x.first_seen = x.first_seen.min(d.first_seen);
                    x.last_seen = x.last_seen.max(d.last_seen);
                    x.successes = x.successes.max(d.successes);
                }
                None => self.devices.push(d.clone()),
            }
        }
        for r in &other.regions {
            match self.regions.iter_mut().find(|x| x.region == r.region) {
                Some(x) => {
                    x.first_seen = x.first_seen.min(r.first_seen);
                    x.last_seen = x.last_seen.max(r.last_seen);
                }
                None => self.regions.push(r.clone()),
            }
        }
        for t in &other.trusted {
            match self.trusted.iter_mut().find(|x| x.device_id == t.device_id) {
                Some(x) => x.since = x.since.min(t.since),
                None => self.trusted.push(t.clone()),
            }
        }
        for f in &other.failures {
            match self.failures.iter_mut().find(|x| x.writer == f.writer) {
                Some(x) if f.newer(x) => *x = *f,
                Some(_) => {}
                None => self.failures.push(*f),
            }
        }
        self.sort();
    }

    /// Applies deletions: a cell goes only if it is not newer than what was
    /// cut.
    pub fn forget(&mut self, f: &Forgotten) {
        self.devices.retain(|d| {
            !f.devices
                .iter()
                .any(|(id, seen)| *id == d.device_id && d.last_seen <= *seen)
        });
        self.regions.retain(|r| {
            !f.regions
                .iter()
                .any(|(id, seen)| *id == r.region && r.last_seen <= *seen)
        });
        self.trusted.retain(|t| {
            !f.trusted
                .iter()
                .any(|(id, since)| *id == t.device_id && t.since >= *since)
        });
        self.failures.retain(|c| !f.failures.contains(&c.writer));
    }

    /// A canonical order, so equal profiles compare and encode equal.
    fn sort(&mut self) {
        self.devices.sort_by(|a, b| {
            (b.last_seen, b.device_id.as_str()).cmp(&(a.last_seen, a.device_id.as_str()))
        });
        self.regions
            .sort_by(|a, b| (b.last_seen, &b.region).cmp(&(a.last_seen, &a.region)));
        self.trusted
            .sort_by(|a, b| (a.since, a.device_id.as_str()).cmp(&(b.since, b.device_id.as_str())));
        self.failures.sort_by_key(|c| c.writer);
    }

    /// Cuts the profile to its bounds at `now` and says what was cut.
    pub fn bound(&mut self, now: i64) -> Forgotten {
        self.sort();
        let mut cut = Forgotten::default();
        // Spent failure cells first, then the stalest beyond the cap.
        // In place: this runs for every attempt, on the serving thread and
        // again in the journal's, and a partition allocated two vectors.
        let mut live = std::mem::take(&mut self.failures);
        live.retain(|c| {
            let spent = c.is_spent(now);
            if spent {
                cut.failures.push(c.writer);
            }
            !spent
        });
        if live.len() > MAX_FAILURE_CELLS {
            live.sort_by(|a, b| b.start.cmp(&a.start).then(a.writer.cmp(&b.writer)));
            cut.failures
                .extend(live.drain(MAX_FAILURE_CELLS..).map(|c| c.writer));
            live.sort_by_key(|c| c.writer);
        }
        self.failures = live;
        if self.devices.len() > MAX_PROFILE_DEVICES {
            cut.devices.extend(
                self.devices
                    .drain(MAX_PROFILE_DEVICES..)
                    .map(|d| (d.device_id, d.last_seen)),
            );
        }
        if self.regions.len() > MAX_PROFILE_REGIONS {
            cut.regions.extend(
                self.regions
                    .drain(MAX_PROFILE_REGIONS..)
                    .map(|r| (r.region, r.last_seen)),
            );
        }
        if self.trusted.len() > MAX_PROFILE_TRUSTED {
            cut.trusted.extend(
                self.trusted
                    .drain(MAX_PROFILE_TRUSTED..)
                    .map(|t| (t.device_id, t.since)),
            );
        }
        cut
    }

    /// Joins one attempt into the profile: a success moves the last login
    /// and the device's and region's last seen; a failure counts in
    /// `writer`'s cell with windows of `window_ms`. Returns the update the
    /// store needs: the changed cells and what the bounds cut.
    pub fn record(
        &mut self,
        facts: &AttemptFacts<'_>,
        writer: u64,
        window_ms: i64,
    ) -> ProfileUpdate {
        let a = facts.attempt;
        let mut cells = AtoProfile::default();
        if a.success {
            let mut rec = LoginRecord::from_attempt(a);
            rec.location = facts.location;
            cells.last_success = Some(rec);
            if let Some(d) = &a.device_id {
                let known = self.device(d);
                cells.devices.push(KnownDevice {
                    device_id: d.clone(),
                    first_seen: known.map_or(a.at, |k| k.first_seen.min(a.at)),
                    last_seen: known.map_or(a.at, |k| k.last_seen.max(a.at)),
                    successes: known.map_or(0, |k| k.successes).saturating_add(1),
                });
            }
            if let Some(r) = &a.region {
                let known = self.regions.iter().find(|x| &x.region == r);
                cells.regions.push(KnownRegion {
                    region: r.clone(),
                    first_seen: known.map_or(a.at, |k| k.first_seen.min(a.at)),
                    last_seen: known.map_or(a.at, |k| k.last_seen.max(a.at)),
                });
            }
        } else {
            let mine = self
                .failures
                .iter()
                .find(|c| c.writer == writer)
                .copied()
                .unwrap_or_else(|| FailureCell::empty(writer, window_ms, a.at));
            cells.failures.push(mine.count(a.at, window_ms));
        }
        self.join(&cells);
        let forget = self.bound(a.at);
        ProfileUpdate { cells, forget }
    }

    /// Marks `device` trusted for the identifier at `now`; returns the
    /// update, empty of cells when it already was.
    pub fn trust(&mut self, device: &DeviceId, now: i64) -> ProfileUpdate {
        let mut cells = AtoProfile::default();
        if !self.is_trusted(device) {
            cells.trusted.push(TrustedDevice {
                device_id: device.clone(),
                since: now,
            });
        }
        self.join(&cells);
        let forget = self.bound(now);
        ProfileUpdate { cells, forget }
    }

    /// Failed attempts in the window before `now`, all writers together,
    /// rounded to the nearest whole attempt.
    pub fn failures_at(&self, now: i64) -> u32 {
        let sum: f64 = self.failures.iter().map(|c| c.estimate(now)).sum();
        sum.round().clamp(0.0, f64::from(u32::MAX)) as u32
    }

    /// The device's entry, when it has logged in successfully before.
    pub fn device(&self, d: &DeviceId) -> Option<&KnownDevice> {
        self.devices.iter().find(|x| &x.device_id == d)
    }

    /// Whether the region has seen a successful login.
    pub fn knows_region(&self, r: &str) -> bool {
        self.regions.iter().any(|x| x.region == r)
    }

    /// Whether the device is trusted for the identifier.
    pub fn is_trusted(&self, d: &DeviceId) -> bool {
        self.trusted.iter().any(|x| &x.device_id == d)
    }

    /// Builds a profile from logged attempts (any order), for identifiers
    /// whose attempts predate profiles. Failures are counted as if one
    /// writer (`writer`) had counted them with windows of `window_ms`.
    pub fn from_attempts(attempts: &[LoginAttempt], writer: u64, window_ms: i64) -> AtoProfile {
        let mut sorted: Vec<&LoginAttempt> = attempts.iter().collect();
        sorted.sort_by(|a, b| (a.at, &a.attempt_id).cmp(&(b.at, &b.attempt_id)));
        let mut p = AtoProfile::default();
        for a in sorted {
            p.record(
                &AttemptFacts {
                    attempt: a,
                    location: None,
                },
                writer,
                window_ms,
            );
        }
        p
    }

    /// Bytes the profile holds, for byte-bounded caches: the struct itself
    /// plus [`AtoProfile::heap_bytes`].
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.heap_bytes()
    }

    /// Bytes the profile points to outside its own struct: its vectors'
    /// capacity and the text of its strings. The newest success lives
    /// inside the struct (an `Option`, not a box), so only its text
    /// counts here; counting it again, and a cache counting the struct
    /// again on top of its own entry, had the profile cache charge about
    /// twice what a profile holds, so a 32 MiB share kept half the
    /// profiles it could (BENCHMARKS.md, "The profile cache's weights").
    pub fn heap_bytes(&self) -> usize {
        self.last_success.as_ref().map_or(0, LoginRecord::heap)
            + self.devices.capacity() * std::mem::size_of::<KnownDevice>()
            + self
                .devices
                .iter()
                .map(|d| d.device_id.as_str().len())
                .sum::<usize>()
            + self.regions.capacity() * std::mem::size_of::<KnownRegion>()
            + self.regions.iter().map(|r| r.region.len()).sum::<usize>()
            + self.trusted.capacity() * std::mem::size_of::<TrustedDevice>()
            + self
                .trusted
                .iter()
                .map(|t| t.device_id.as_str().len())
                .sum::<usize>()
            + self.failures.capacity() * std::mem::size_of::<FailureCell>()
    }
}

#[cfg(test)]
mod tests;
