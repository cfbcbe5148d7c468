//! The anti-ATO profile on CQL: one row per (project, identifier), one cell
//! per profile cell, and write timestamps chosen so that CQL's
//! last-write-wins per cell *is* the profile's join (see
//! [`profile`](crate::profile)). No read-before-write and no
//! lightweight transaction: any number of engines write concurrently and
//! every replica ends with the same cells whatever order the writes land in.
//!
//! Timestamp rules (microseconds, like real CQL timestamps):
//!
//! | cell | write timestamp | delete (`forget`) timestamp | TTL |
//! |---|---|---|---|
//! | `last_success` | `at`·1000 + [`id_tiebreak`] | never deleted | retention from `at` |
//! | `devices[id]` | `last_seen`·1000 + min(successes, 999) | cut `last_seen`·1000 + 999 | retention from `last_seen` |
//! | `regions[r]` | `last_seen`·1000 | cut `last_seen`·1000 + 999 | retention from `last_seen` |
//! | `trusted[id]` | [`TRUST_TS_BASE`] − `since`·1000 | base − cut `since`·1000 | none |
//! | `failures[writer]` | `start`·1000 + min(current, 999 999) | TTL only | until `start` + 2 × window |
//!
//! Cassandra resolves two writes of one cell by timestamp, and only an
//! exact tie by its own deterministic rule (expiry, then the greater value),
//! which every replica applies alike; the encodings put the merge order in
//! the value's bytes too where that is cheap (devices, regions, failures).

use std::collections::BTreeMap;

use ::scylla::serialize::row::SerializeRow;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::DeserializeRow;
use qyzar_shared::ids::DeviceId;

use super::schema::Statements;
use super::ttl_until;
use crate::profile::{FailureCell, KnownDevice, KnownRegion, LoginRecord, TrustedDevice};
use crate::{AtoProfile, ProfileUpdate, StoreError, PROFILE_RETENTION_MS};

/// The base of trusted cells' timestamps. A trusted device merges to the
/// *earliest* `since`, the opposite of last-write-wins, so the timestamp
/// runs backwards: `base − since_µs`, and a smaller `since` writes with a
/// larger timestamp and wins whatever the order. With a base of 0 every
/// such timestamp is negative, below any real-time write or deletion, so
/// a future whole-row delete (written at real time) still removes them.
pub(super) const TRUST_TS_BASE: i64 = 0;

/// Most failures one writer can count in one window with distinct
/// timestamps: a window is at least a second (1 000 000 µs), so
/// `start`·1000 + `current` stays below the next window's first timestamp.
/// (Right after a window-length change the start is not aligned and the
/// next window may begin sooner; a writer that counted more than 1000
/// failures per millisecond of that gap could then keep its old cell until
/// the next write: a bounded undercount, never a lost device or success.)
const MAX_FAILURE_TICKS: i64 = 999_999;

/// A deterministic 0..=999 from the first two bytes of an attempt id that
/// never decreases as the id grows (byte order), so within one millisecond
/// the greater id gets the greater (or an equal) timestamp, as
/// [`LoginRecord::is_newer_than`] wants. Ids sharing a bucket in one ms
/// are left to CQL's tie rule.
pub(super) fn id_tiebreak(id: &str) -> i64 {
    let b = id.as_bytes();
    let hi = i64::from(b.first().copied().unwrap_or(0));
    let lo = i64::from(b.get(1).copied().unwrap_or(0));
    (hi * 256 + lo) * 1000 / 65_536
}

fn us(ms: i64) -> i64 {
    ms.saturating_mul(1000)
}

/// `last_success`: the newer by (`at`, `attempt_id`) has the greater timestamp.
pub(super) fn last_success_ts(r: &LoginRecord) -> i64 {
    us(r.at).saturating_add(id_tiebreak(&r.attempt_id))
}

/// A device: the later `last_seen` wins, then more successes. Its value
/// carries `first_seen` and `successes` of the winning writer, which is
/// the join whenever that writer had read the stored cell before counting
/// (the engine reads the profile before it records); two engines racing on
/// one device may keep the later writer's `first_seen` (within the race)
/// and undercount successes, as the profile module allows.
pub(super) fn device_ts(d: &KnownDevice) -> i64 {
    us(d.last_seen).saturating_add(i64::from(d.successes.min(999)))
}

/// A region: the later `last_seen` wins.
pub(super) fn region_ts(r: &KnownRegion) -> i64 {
    us(r.last_seen)
}

/// Deletes a device or region cell only if its `last_seen` is not after
/// the cut one: a tombstone shadows every write with a timestamp up to and
/// including its own, and every such cell was written at most `seen`·1000 + 999.
pub(super) fn seen_cut_ts(seen: i64) -> i64 {
    us(seen).saturating_add(999)
}

/// A trusted device: the earliest `since` gets the greatest timestamp (see
/// [`TRUST_TS_BASE`]); a delete at the cut's own timestamp removes only
/// cells whose `since` is not earlier than the cut.
pub(super) fn trusted_ts(since: i64) -> i64 {
    TRUST_TS_BASE.saturating_sub(us(since))
}

/// A writer's failure cell: the writer only moves forward (a later window,
/// then more failures), so its timestamp grows with each of its writes.
/// Spent cells are not deleted: their TTL ends when they stop counting,
/// and the reader bounds what lingers.
pub(super) fn failure_ts(c: &FailureCell) -> i64 {
    us(c.start).saturating_add(i64::from(c.current).min(MAX_FAILURE_TICKS))
}

/// When a failure cell stops counting (see [`FailureCell::is_spent`]).
pub(super) fn failure_deadline(c: &FailureCell) -> i64 {
    c.start.saturating_add(c.window_ms.max(1).saturating_mul(2))
}

/// When a device, region or last success written at `t` expires.
pub(super) fn retained_until(t: i64) -> i64 {
    t.saturating_add(PROFILE_RETENTION_MS)
}

/// An `i64` whose big-endian bytes sort like the number.
fn ordered(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_ordered(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// Device value: `last_seen`, `successes`, then `first_seen` inverted, so
/// on a timestamp tie the greater bytes are the later, busier, older device.
pub(super) fn encode_device(d: &KnownDevice) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&ordered(d.last_seen));
    v.extend_from_slice(&d.successes.to_be_bytes());
    v.extend_from_slice(&ordered(!d.first_seen));
    v
}

fn decode_device(id: &str, b: &[u8]) -> Result<KnownDevice, StoreError> {
    let bad = || StoreError::Corrupt("an ato profile device cell is malformed".into());
    let (last, rest) = b.split_first_chunk::<8>().ok_or_else(bad)?;
    let (succ, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let first = <[u8; 8]>::try_from(rest).map_err(|_| bad())?;
    Ok(KnownDevice {
        device_id: DeviceId::parse(id).map_err(|_| bad())?,
        first_seen: !from_ordered(first),
        last_seen: from_ordered(*last),
        successes: u32::from_be_bytes(*succ),
    })
}

/// Region value: `last_seen`, then `first_seen` inverted.
pub(super) fn encode_region(r: &KnownRegion) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&ordered(r.last_seen));
    v.extend_from_slice(&ordered(!r.first_seen));
    v
}

fn decode_region(region: String, b: &[u8]) -> Result<KnownRegion, StoreError> {
    let bad = || StoreError::Corrupt("an ato profile region cell is malformed".into());
    let (last, rest) = b.split_first_chunk::<8>().ok_or_else(bad)?;
    let first = <[u8; 8]>::try_from(rest).map_err(|_| bad())?;
    Ok(KnownRegion {
        region,
        first_seen: !from_ordered(first),
        last_seen: from_ordered(*last),
    })
}

/// Failure value: (`start`, `current`, `previous`, `window_ms`) big-endian,
/// signed values sign-flipped, so byte order is [`FailureCell::newer`]'s
/// order and a timestamp tie keeps the newer state.
pub(super) fn encode_failure(c: &FailureCell) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&ordered(c.start));
    v.extend_from_slice(&c.current.to_be_bytes());
    v.extend_from_slice(&c.previous.to_be_bytes());
    v.extend_from_slice(&ordered(c.window_ms));
    v
}

fn decode_failure(writer: i64, b: &[u8]) -> Result<FailureCell, StoreError> {
    let bad = || StoreError::Corrupt("an ato profile failure cell is malformed".into());
    let (start, rest) = b.split_first_chunk::<8>().ok_or_else(bad)?;
    let (cur, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let (prev, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let window = <[u8; 8]>::try_from(rest).map_err(|_| bad())?;
    Ok(FailureCell {
        writer: writer as u64,
        window_ms: from_ordered(window),
        start: from_ordered(*start),
        current: u32::from_be_bytes(*cur),
        previous: u32::from_be_bytes(*prev),
    })
}

/// The last success as JSON (it carries optional text fields; no order is
/// needed in its bytes, the timestamp decides).
pub(super) fn encode_record(r: &LoginRecord) -> Vec<u8> {
    // Plain struct of strings and numbers: serialisation cannot fail.
    serde_json::to_vec(r).expect("a login record always serialises")
}

/// The profile row as read.
#[derive(DeserializeRow)]
pub(super) struct ProfileRow {
    last_success: Option<Vec<u8>>,
    devices: Option<BTreeMap<String, Vec<u8>>>,
    regions: Option<BTreeMap<String, Vec<u8>>>,
    trusted: Option<BTreeMap<String, i64>>,
    failures: Option<BTreeMap<i64, Vec<u8>>>,
}

impl ProfileRow {
    /// Every cell decoded, in the profile's canonical order (not yet
    /// expired or bounded).
    pub(super) fn into_profile(self) -> Result<AtoProfile, StoreError> {
        let mut cells = AtoProfile::default();
        if let Some(b) = self.last_success {
            cells.last_success = Some(serde_json::from_slice(&b).map_err(|_| {
                StoreError::Corrupt("an ato profile last success is malformed".into())
            })?);
        }
        for (id, b) in self.devices.unwrap_or_default() {
            cells.devices.push(decode_device(&id, &b)?);
        }
        for (r, b) in self.regions.unwrap_or_default() {
            cells.regions.push(decode_region(r, &b)?);
        }
        for (id, since) in self.trusted.unwrap_or_default() {
            cells.trusted.push(TrustedDevice {
                device_id: DeviceId::parse(&id).map_err(|_| {
                    StoreError::Corrupt("an ato profile trusted device id does not parse".into())
                })?,
                since,
            });
        }
        for (w, b) in self.failures.unwrap_or_default() {
            cells.failures.push(decode_failure(w, &b)?);
        }
        // The join of an empty profile with the cells sorts them.
        let mut p = AtoProfile::default();
        p.join(&cells);
        Ok(p)
    }
}

/// One statement's bound values in a batch of differently shaped statements.
pub(super) type Values<'a> = Box<dyn SerializeRow + Send + Sync + 'a>;

/// The statements and values of one update: a write per changed cell (none
/// for a cell already past its retention) and a delete per forgotten one.
/// `forget.failures` (spent cells) needs no delete: their TTL ends when
/// they stop counting, and a reader drops what lingers.
pub(super) fn profile_writes<'a>(
    st: &'a Statements,
    p: &'a str,
    i: &'a str,
    update: &'a ProfileUpdate,
    now: i64,
) -> Vec<(&'a PreparedStatement, Values<'a>)> {
    let mut writes: Vec<(&PreparedStatement, Values<'_>)> = Vec::new();
    let c = &update.cells;
    if let Some(r) = &c.last_success {
        if let Some(ttl) = ttl_until(retained_until(r.at), now) {
            let v = (last_success_ts(r), ttl, encode_record(r), p, i);
            writes.push((&st.set_last_success, Box::new(v)));
        }
    }
    for d in &c.devices {
        if let Some(ttl) = ttl_until(retained_until(d.last_seen), now) {
            let v = (
                device_ts(d),
                ttl,
                d.device_id.as_str(),
                encode_device(d),
                p,
                i,
            );
            writes.push((&st.set_device, Box::new(v)));
        }
    }
    for r in &c.regions {
        if let Some(ttl) = ttl_until(retained_until(r.last_seen), now) {
            let v = (region_ts(r), ttl, r.region.as_str(), encode_region(r), p, i);
            writes.push((&st.set_region, Box::new(v)));
        }
    }
    for t in &c.trusted {
        let v = (trusted_ts(t.since), t.device_id.as_str(), t.since, p, i);
        writes.push((&st.set_trusted, Box::new(v)));
    }
    for f in &c.failures {
        if let Some(ttl) = ttl_until(failure_deadline(f), now) {
            // The writer id is a u64; CQL has only signed bigints, and
            // the cast round-trips.
            let v = (failure_ts(f), ttl, f.writer as i64, encode_failure(f), p, i);
            writes.push((&st.set_failure, Box::new(v)));
        }
    }
    let f = &update.forget;
    for (d, seen) in &f.devices {
        let v = (d.as_str(), seen_cut_ts(*seen), p, i);
        writes.push((&st.del_device, Box::new(v)));
    }
    for (r, seen) in &f.regions {
        let v = (r.as_str(), seen_cut_ts(*seen), p, i);
        writes.push((&st.del_region, Box::new(v)));
    }
    for (d, since) in &f.trusted {
        let v = (d.as_str(), trusted_ts(*since), p, i);
        writes.push((&st.del_trusted, Box::new(v)));
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiebreak_never_decreases_with_the_id() {
        let mut ids = ["", "A", "AB", "Az", "a", "a-", "zz", "__", "\u{7f}"].to_vec();
        ids.sort_unstable();
        let t: Vec<i64> = ids.iter().map(|i| id_tiebreak(i)).collect();
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "{ids:?} -> {t:?}");
        assert!(t.iter().all(|x| (0..1000).contains(x)));
    }

    #[test]
    fn failure_bytes_sort_like_newer() {
        let c = |start, current, previous, window_ms| FailureCell {
            writer: 1,
            window_ms,
            start,
            current,
            previous,
        };
        let cells = [
            c(-5, 9, 9, 60_000),
            c(0, 0, 0, 60_000),
            c(0, 1, 0, 1_000),
            c(0, 1, 5, 60_000),
            c(60_000, 0, 2, 60_000),
        ];
        for a in &cells {
            for b in &cells {
                assert_eq!(a.newer(b), encode_failure(a) > encode_failure(b));
            }
            assert_eq!(decode_failure(1, &encode_failure(a)).ok(), Some(*a));
        }
    }

    #[test]
    fn devices_and_regions_round_trip() {
        let d = KnownDevice {
            device_id: DeviceId::generate(),
            first_seen: 5,
            last_seen: 1_700_000_000_000,
            successes: 3,
        };
        assert_eq!(
            decode_device(d.device_id.as_str(), &encode_device(&d)).ok(),
            Some(d.clone())
        );
        let r = KnownRegion {
            region: "FR".into(),
            first_seen: 0,
            last_seen: 7,
        };
        assert_eq!(decode_region("FR".into(), &encode_region(&r)).ok(), Some(r));
    }

    #[test]
    fn earlier_trust_wins_and_stays_below_real_time() {
        assert!(trusted_ts(1_000) > trusted_ts(2_000));
        assert!(trusted_ts(0) <= 0);
    }
}
