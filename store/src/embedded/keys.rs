//! Byte keys of the embedded store's tables.
//!
//! A key is a sequence of components: strings as a big-endian `u16` length
//! then the bytes, numbers as 8 big-endian bytes. The length prefix makes the
//! encoding prefix-free, so "every row of (project, identifier)" is exactly
//! the keys starting with those two encoded components, whatever characters
//! an identifier holds. Times inside a partition are stored inverted
//! (`!at`), so a forward range scan returns the newest row first.

use redb::TableDefinition;

/// `project, session` → JSON [`Session`](crate::Session).
pub(super) const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// `project, device` then the identifier's raw bytes (last, so the scan
/// order is the identifier's byte order) → nothing.
pub(super) const TRUSTED: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("trusted_identifiers");
/// `project, device, !at, session` → JSON [`EntropySnapshot`](crate::EntropySnapshot).
pub(super) const SNAPSHOTS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("entropy_snapshots");
/// `project, identifier, !at, attempt_id` → JSON [`LoginAttempt`](crate::LoginAttempt).
pub(super) const ATTEMPTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("login_attempts");
/// `project, !newest at, seq` → [`LoginAttempt`](crate::LoginAttempt)s
/// the project logged through `record_ato`, in `log_row`'s compact
/// encoding (JSON arrays in rows of earlier builds). The journal makes one
/// row per project and group commit; written here they are joined per
/// project (`log_row::join`: up to 256 KiB a row, from one journal
/// generation, so about ten seconds of attempts at most). Not two B-tree
/// entries per attempt (the row and its expiry entry), because nothing on
/// the hot path reads attempts the identifier's profile already holds.
/// Keyed by project first, so listing one project's attempts never reads
/// another's. Newest first; the purge walks each project's range from its
/// oldest end and deletes a row once its newest attempt is past retention,
/// so an attempt can outlive retention by its row's span. Readers filter
/// by time attempt by attempt. Attempts written without a profile
/// (`record_login_attempt`, and rows from before profiles) stay in
/// [`ATTEMPTS`], the only table a lazy profile build reads.
pub(super) const ATTEMPT_LOG: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("login_attempt_log");
/// `project, jti` → `expires_at` (8 bytes BE).
pub(super) const REVOKED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("token_revocations");
/// `project, !at, seq` → JSON [`DenyEvent`](crate::DenyEvent).
pub(super) const DENIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("deny_events");
/// `project, identifier` → JSON [`AtoProfile`](crate::AtoProfile),
/// already bounded. Its [`EXPIRY`] entry is the earliest moment a cell of
/// it expires, so the purge visits a profile only when something in it is
/// due.
pub(super) const PROFILES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ato_profiles");
/// `project, day, shard, device` → JSON [`DeviceDay`](crate::DeviceDay):
/// the dashboard's device index, one row per device and UTC day.
pub(super) const DEVICE_DAYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("device_days");
/// Small named values of the store itself: [`JOURNAL_CHECKPOINTED`].
pub(super) const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("store_meta");
/// In [`META`]: the newest anti-ATO journal generation written to redb
/// (8 bytes, big-endian); replay starts after it (`journal.rs`).
pub(super) const JOURNAL_CHECKPOINTED: &[u8] = b"ato_journal_checkpointed";
/// `deadline, table tag, key in that table` → nothing: what to delete when.
/// Scanning it from the start finds everything due without touching live rows.
pub(super) const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("expiry_index");

/// Which table an [`EXPIRY`] entry points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Tag {
    Session = 1,
    Snapshot = 2,
    Attempt = 3,
    Revocation = 4,
    Deny = 5,
    Profile = 6,
    DeviceDay = 7,
    AttemptLog = 8,
}

impl Tag {
    pub(super) fn from_byte(b: u8) -> Option<Tag> {
        Some(match b {
            1 => Tag::Session,
            2 => Tag::Snapshot,
            3 => Tag::Attempt,
            4 => Tag::Revocation,
            5 => Tag::Deny,
            6 => Tag::Profile,
            7 => Tag::DeviceDay,
            8 => Tag::AttemptLog,
            _ => return None,
        })
    }
}

/// Builds one key, component by component.
#[derive(Debug, Default, Clone)]
pub(super) struct Key(Vec<u8>);

impl Key {
    pub(super) fn new() -> Self {
        Key(Vec::with_capacity(96))
    }

    /// A key built in `buf`, emptied first: a loop that builds one key per
    /// item then reuses one allocation.
    pub(super) fn reuse(mut buf: Vec<u8>) -> Self {
        buf.clear();
        Key(buf)
    }

    /// Appends a string. Inputs are validated to a few hundred bytes before
    /// they get here; longer ones are cut at `u16::MAX`, which would only
    /// merge two absurd keys, never split a real one.
    pub(super) fn str(mut self, s: &str) -> Self {
        let b = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
        let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&n.to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }

    pub(super) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a time so that later times sort first.
    pub(super) fn newest_first(self, at: i64) -> Self {
        self.u64(!time_bits(at))
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// A non-negative time as an unsigned number (inputs are validated `>= 0`).
pub(super) fn time_bits(at: i64) -> u64 {
    u64::try_from(at).unwrap_or(0)
}

/// The [`EXPIRY`] key for `key` in `tag`'s table, due at `deadline`.
pub(super) fn expiry_key(deadline: i64, tag: Tag, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.extend_from_slice(&time_bits(deadline).to_be_bytes());
    k.push(tag as u8);
    k.extend_from_slice(key);
    k
}

/// Splits an [`EXPIRY`] key into deadline, tag and the data key.
pub(super) fn split_expiry_key(k: &[u8]) -> Option<(i64, Tag, &[u8])> {
    let (deadline, rest) = k.split_first_chunk::<8>()?;
    let (tag, key) = rest.split_first()?;
    let deadline = i64::try_from(u64::from_be_bytes(*deadline)).unwrap_or(i64::MAX);
    Some((deadline, Tag::from_byte(*tag)?, key))
}

/// The partition prefix (the first string component, length included) of a
/// key that continues with at least an inverted time: for an
/// [`ATTEMPT_LOG`] key, its project's prefix. `None` for a key too short
/// to be one.
pub(super) fn partition_prefix(key: &[u8]) -> Option<&[u8]> {
    let (n, _) = key.split_first_chunk::<2>()?;
    let end = 2 + usize::from(u16::from_be_bytes(*n));
    (key.len() >= end + 8).then(|| &key[..end])
}

/// Reads the inverted time that starts `rest` (the part after a partition
/// prefix), giving back the original time.
pub(super) fn read_newest_first(rest: &[u8]) -> Option<i64> {
    let (t, _) = rest.split_first_chunk::<8>()?;
    i64::try_from(!u64::from_be_bytes(*t)).ok()
}

/// An 8-byte big-endian time value (the value of [`REVOKED`]).
pub(super) fn time_value(at: i64) -> [u8; 8] {
    at.to_be_bytes()
}

pub(super) fn read_time_value(v: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(*v.first_chunk::<8>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_do_not_bleed_into_longer_strings() {
        let a = Key::new().str("prj").str("ann").into_bytes();
        let b = Key::new()
            .str("prj")
            .str("anna")
            .newest_first(5)
            .into_bytes();
        assert!(
            !b.starts_with(&a),
            "ann's partition must not contain anna's rows"
        );
    }

    #[test]
    fn newer_times_sort_first_and_read_back() {
        let p = Key::new().str("p").into_bytes();
        let old = Key::new().str("p").newest_first(1_000).into_bytes();
        let new = Key::new().str("p").newest_first(2_000).into_bytes();
        assert!(new < old);
        assert_eq!(read_newest_first(&new[p.len()..]), Some(2_000));
    }

    #[test]
    fn expiry_keys_round_trip_and_sort_by_deadline() {
        let k = expiry_key(42, Tag::Attempt, b"abc");
        assert_eq!(split_expiry_key(&k), Some((42, Tag::Attempt, &b"abc"[..])));
        assert!(expiry_key(41, Tag::Deny, b"z") < k);
    }
}
