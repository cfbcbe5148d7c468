//! The rows of the data-plane tables, as both stores read and write them.
//!
//! Times are `i64` unix milliseconds everywhere: one integer is cheap to
//! compare on the hot path, and both stores keep millisecond precision
//! (CQL `timestamp`, big-endian keys in the embedded store).
//!
//! The serde form (camelCase) is what the embedded store writes to disk and
//! what the admin may answer with, so renaming a field is a storage change.

use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use serde::{Deserialize, Serialize};

use super::{StoreError, DAY_MS};

/// Longest free-text key (login identifier, rate-limit key, JWT id) a store
/// accepts. Identifiers are emails, usernames or phone numbers: 512 bytes is
/// generous, and a cap keeps partition and index keys small.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest short label (browser, os, platform, region, ip, risk signal,
/// rate-limit bucket, attempt id).
pub const MAX_LABEL_BYTES: usize = 256;
/// Most risk signals one session carries; the engine emits a handful.
pub const MAX_SIGNALS: usize = 64;
/// Largest entropy document a snapshot keeps. The engine caps the `/connect`
/// body far below this; the store refuses anything larger rather than
/// storing a row that would hurt every later read of the device.
pub const MAX_ENTROPY_BYTES: usize = 256 * 1024;

/// A verify session opened by `/connect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The project the session belongs to; part of every key, so the same
    /// session id in another project is another row.
    pub project_id: ProjectId,
    /// The public session id.
    pub session_id: SessionId,
    /// SHA-256 of the session token: the token itself is never stored, so a
    /// leaked table does not hand out live sessions.
    #[serde(with = "hash32")]
    pub token_hash: [u8; 32],
    /// The device the session was opened from.
    pub device_id: DeviceId,
    /// When `/connect` created it.
    pub created_at: i64,
    /// When it stops being valid; stores never return it afterwards.
    pub expires_at: i64,
    /// Last verify or reverify seen; moved forward by batched touches.
    pub last_seen_at: i64,
    /// Set by an explicit revoke; a revoked session is still returned so the
    /// engine can answer `revoked` rather than `not_found`.
    pub revoked: bool,
    /// Client IP at connect, when known.
    pub ip: Option<String>,
    /// The bot/risk score computed at connect.
    pub risk: Risk,
    /// What the user agent said about the device.
    pub device: DeviceInfo,
}

/// The risk verdict attached to a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Risk {
    /// 0 (clean) to 100 (certainly a bot).
    pub score: u8,
    /// Whether the engine concluded this is automation.
    pub bot: bool,
    /// Names of the signals that fired (`webdriver`, `headless_ua`, …).
    pub signals: Vec<String>,
}

/// Device facts parsed from the entropy, shown in verify answers and dashboards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// Browser family (`Chrome`, `Firefox`, …).
    pub browser: String,
    /// Operating system family.
    pub os: String,
    /// `desktop`, `mobile`, `tablet`, … as the engine classifies it.
    pub platform: String,
    /// Coarse region (country or country-subdivision) when the engine knows it.
    pub region: Option<String>,
}

/// One capture of a device's entropy, kept so drift and bot farms can be seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntropySnapshot {
    /// Owning project.
    pub project_id: ProjectId,
    /// The device the entropy describes.
    pub device_id: DeviceId,
    /// The session that sent it (also disambiguates two captures in one ms).
    pub session_id: SessionId,
    /// Capture time.
    pub at: i64,
    /// The entropy document as received (already size-capped by the engine);
    /// kept as text so unknown keys survive.
    pub entropy_json: String,
}

/// One login attempt reported by a customer backend (anti-ATO).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginAttempt {
    /// Owning project.
    pub project_id: ProjectId,
    /// The account identifier (email, username, …) the attempt was for.
    pub identifier: String,
    /// When the attempt happened.
    pub at: i64,
    /// Unique per attempt so concurrent attempts in the same millisecond are
    /// distinct rows; reusing an id on retry makes the write idempotent.
    /// [`LoginAttempt::new_id`] makes one.
    pub attempt_id: String,
    /// Whether the login succeeded.
    pub success: bool,
    /// Client IP, when reported.
    pub ip: Option<String>,
    /// Device, when the attempt came with a session or device id.
    pub device_id: Option<DeviceId>,
    /// Session, when the attempt came with one.
    pub session_id: Option<SessionId>,
    /// Coarse region of the IP, when known.
    pub region: Option<String>,
    /// Platform of the device, when known.
    pub platform: Option<String>,
    /// Browser of the device, when known.
    pub browser: Option<String>,
}

impl LoginAttempt {
    /// A fresh attempt id: 128 random bits from the system source,
    /// base64url.
    ///
    /// The bits are drawn 4 KiB at a time into a per-thread buffer and
    /// never reused: one `getrandom` call per 256 ids instead of one per
    /// login attempt (it was 1.3 % of the engine's CPU on the ATO route).
    pub fn new_id() -> String {
        use base64::Engine as _;
        use ring::rand::SecureRandom as _;
        use std::cell::RefCell;
        const POOL: usize = 4096;
        thread_local! {
            static BITS: RefCell<([u8; POOL], usize)> = const { RefCell::new(([0; POOL], POOL)) };
        }
        let b: [u8; 16] = BITS.with(|cell| {
            let (pool, used) = &mut *cell.borrow_mut();
            if *used + 16 > POOL {
                ring::rand::SystemRandom::new()
                    .fill(pool)
                    .expect("the system random source failed; no unique id can be made");
                *used = 0;
            }
            let mut b = [0u8; 16];
            b.copy_from_slice(&pool[*used..*used + 16]);
            // Spent bits are wiped so no later id repeats them.
            pool[*used..*used + 16].fill(0);
            *used += 16;
            b
        });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }
}

/// A rate-limit deny, recorded for analytics when the project asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DenyEvent {
    /// Owning project.
    pub project_id: ProjectId,
    /// When the call was denied.
    pub at: i64,
    /// The bucket that denied (`ip`, `metadata:email`, …).
    pub bucket: String,
    /// The bucket key that was over its limit (the IP, the email, …).
    pub key: String,
    /// Caller IP of the denied call.
    pub ip: Option<String>,
}

/// Shards of one project's UTC day in the device index: a project that sees
/// millions of devices a day spreads them over this many CQL partitions
/// instead of one (the dashboard's paging walks them in order).
pub const DEVICE_DAY_SHARDS: u8 = 8;
/// Most stable entropy components one device-day row keeps.
pub const MAX_DEVICE_COMPONENTS: usize = 16;
/// Longest component value kept (longer ones are cut by the engine).
pub const MAX_COMPONENT_BYTES: usize = 160;

/// One device as seen on one UTC day: the dashboard's time-bucketed device
/// index (`devices-data`, the clusters). Written off the hot path by the
/// engine when `/connect` opens a session; rows of one (project, day,
/// device) merge: first seen is the earliest, last seen the latest, and the
/// summary is the latest's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceDay {
    /// Owning project.
    pub project_id: ProjectId,
    /// The device.
    pub device_id: DeviceId,
    /// The UTC day: unix ms / 86 400 000.
    pub day: i64,
    /// Earliest session this day, unix ms.
    pub first_seen: i64,
    /// Latest session this day, unix ms.
    pub last_seen: i64,
    /// Browser, OS and platform of the latest session.
    pub browser: String,
    /// Operating system.
    pub os: String,
    /// `desktop`, `mobile`, ...
    pub platform: String,
    /// Coarse region of the latest session, when known.
    pub region: Option<String>,
    /// Bot score of the latest session, 0..=100.
    pub risk_score: u8,
    /// Whether the latest session was judged a bot.
    pub bot: bool,
    /// The stable entropy components by client name (`canvasHash`,
    /// `screen`...), for clusters; empty for an opted-out device.
    pub components: std::collections::BTreeMap<String, String>,
}

impl DeviceDay {
    /// Which of [`DEVICE_DAY_SHARDS`] partitions of its day the device is in
    /// (FNV-1a of the id: stable across processes and releases).
    pub fn shard(device: &DeviceId) -> u8 {
        let mut h: u32 = 0x811c_9dc5;
        for b in device.as_str().bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        (h % u32::from(DEVICE_DAY_SHARDS)) as u8
    }

    /// Joins `other` (the same project, day and device) into `self`.
    pub fn merge(&mut self, other: &DeviceDay) {
        let first = self.first_seen.min(other.first_seen);
        if other.last_seen > self.last_seen {
            *self = other.clone();
        }
        self.first_seen = first;
    }

    /// What both stores refuse in a row (`Invalid`): public so that a
    /// batch of many projects' rows can drop a bad one alone rather than
    /// have the store refuse the whole call.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_time("first_seen", self.first_seen)?;
        if self.first_seen > self.last_seen {
            return Err(StoreError::Invalid("first_seen is after last_seen".into()));
        }
        let day = self
            .day
            .checked_mul(DAY_MS)
            .ok_or_else(|| StoreError::Invalid("day is out of range".into()))?;
        if self.first_seen < day || self.last_seen >= day.saturating_add(DAY_MS) {
            return Err(StoreError::Invalid(
                "a device-day's times are outside its day".into(),
            ));
        }
        if self.risk_score > 100 {
            return Err(StoreError::Invalid("risk score is above 100".into()));
        }
        check_len("browser", &self.browser, MAX_LABEL_BYTES)?;
        check_len("os", &self.os, MAX_LABEL_BYTES)?;
        check_len("platform", &self.platform, MAX_LABEL_BYTES)?;
        check_opt("region", &self.region)?;
        if self.components.len() > MAX_DEVICE_COMPONENTS {
            return Err(StoreError::Invalid(format!(
                "more than {MAX_DEVICE_COMPONENTS} device components"
            )));
        }
        for (k, v) in &self.components {
            check_len("component name", k, MAX_LABEL_BYTES)?;
            check_len("component value", v, MAX_COMPONENT_BYTES)?;
        }
        Ok(())
    }
}

fn check_len(what: &'static str, s: &str, max: usize) -> Result<(), StoreError> {
    if s.len() > max {
        return Err(StoreError::Invalid(format!(
            "{what} is longer than {max} bytes"
        )));
    }
    Ok(())
}

fn check_key(what: &'static str, s: &str) -> Result<(), StoreError> {
    if s.is_empty() {
        return Err(StoreError::Invalid(format!("{what} is empty")));
    }
    check_len(what, s, MAX_KEY_BYTES)
}

fn check_opt(what: &'static str, s: &Option<String>) -> Result<(), StoreError> {
    s.as_deref()
        .map_or(Ok(()), |s| check_len(what, s, MAX_LABEL_BYTES))
}

fn check_time(what: &'static str, t: i64) -> Result<(), StoreError> {
    if t < 0 {
        return Err(StoreError::Invalid(format!("{what} is before 1970")));
    }
    Ok(())
}

/// Checks a login identifier or JWT id used as a key.
pub(crate) fn check_identifier(what: &'static str, s: &str) -> Result<(), StoreError> {
    check_key(what, s)
}

impl Session {
    /// Refuses values a store cannot key or that would bloat a row. Both
    /// stores call this before writing, so they refuse the same things.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        check_time("created_at", self.created_at)?;
        check_time("last_seen_at", self.last_seen_at)?;
        check_time("expires_at", self.expires_at)?;
        check_opt("ip", &self.ip)?;
        if self.risk.score > 100 {
            return Err(StoreError::Invalid("risk score is above 100".into()));
        }
        if self.risk.signals.len() > MAX_SIGNALS {
            return Err(StoreError::Invalid(format!(
                "more than {MAX_SIGNALS} risk signals"
            )));
        }
        for s in &self.risk.signals {
            check_len("risk signal", s, MAX_LABEL_BYTES)?;
        }
        check_len("browser", &self.device.browser, MAX_LABEL_BYTES)?;
        check_len("os", &self.device.os, MAX_LABEL_BYTES)?;
        check_len("platform", &self.device.platform, MAX_LABEL_BYTES)?;
        check_opt("region", &self.device.region)
    }
}

impl EntropySnapshot {
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        check_time("at", self.at)?;
        check_len("entropy", &self.entropy_json, MAX_ENTROPY_BYTES)
    }
}

impl LoginAttempt {
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        check_key("identifier", &self.identifier)?;
        check_time("at", self.at)?;
        if self.attempt_id.is_empty() {
            return Err(StoreError::Invalid("attempt_id is empty".into()));
        }
        check_len("attempt_id", &self.attempt_id, MAX_LABEL_BYTES)?;
        check_opt("ip", &self.ip)?;
        check_opt("region", &self.region)?;
        check_opt("platform", &self.platform)?;
        check_opt("browser", &self.browser)
    }
}

impl DenyEvent {
    /// What both stores refuse in an event (`Invalid`): public so that a
    /// batch of many projects' events can drop a bad one alone rather than
    /// have the store refuse the whole call.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_time("at", self.at)?;
        check_len("bucket", &self.bucket, MAX_LABEL_BYTES)?;
        check_key("key", &self.key)?;
        check_opt("ip", &self.ip)
    }
}

/// The token hash as 43 base64url characters instead of serde's 32-number
/// array: a third of the bytes in every stored session.
mod hash32 {
    use base64::Engine as _;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

    pub(super) fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(h))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let v = B64.decode(s.as_bytes()).map_err(D::Error::custom)?;
        v.try_into()
            .map_err(|_| D::Error::custom("token hash is not 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::LoginAttempt;

    /// Ids drawn across several refills of the per-thread pool, on two
    /// threads, are all distinct 128-bit values.
    #[test]
    fn attempt_ids_are_unique_across_pool_refills() {
        let draw = || {
            (0..2000)
                .map(|_| LoginAttempt::new_id())
                .collect::<Vec<_>>()
        };
        let other = std::thread::spawn(draw);
        let mut all = draw();
        all.extend(other.join().unwrap());
        assert!(all.iter().all(|id| id.len() == 22), "16 bytes, base64url");
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}

/// Length of one rate-limit usage slot ([`LimitUsage::slot`]): engines
/// publish cumulative counts per slot and keep two slots.
pub const LIMIT_SLOT_MS: i64 = 60_000;

/// Most usage rows one (project, slot) read returns: the partition holds
/// only keys past a share of their limit, bounded per engine.
pub const MAX_LIMIT_USAGE_ROWS: usize = 20_000;

/// One engine's consumption of one rate-limit key in one slot, shared
/// through the store so every engine can charge what the others consumed
/// (cross-engine limits). Cumulative within the slot: a later row from the
/// same engine replaces an earlier one, so a resend changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitUsage {
    /// Owning project.
    pub project_id: ProjectId,
    /// `unix ms / LIMIT_SLOT_MS`.
    pub slot: i64,
    /// The bucket key's 16 bytes (a keyed hash all engines share).
    pub key: [u8; 16],
    /// The publishing engine.
    pub engine_id: String,
    /// Cells it consumed from the key in this slot, so far.
    pub cells: i64,
    /// The emission interval (ns per cell) of the rule it consumed under.
    pub interval_ns: i64,
}
