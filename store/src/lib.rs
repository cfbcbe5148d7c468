//! The data-plane store: sessions, trusted identifiers, entropy snapshots,
//! login attempts, token revocations and deny events.
//!
//! The engine owns this data (see `ARCHITECTURE.md`, Data ownership); the
//! admin reads it for dashboards through the same [`DataStore`] trait. Two
//! implementations pass one conformance suite (`store/tests/it/main.rs`):
//!
//! - [`ScyllaStore`]: production, on ScyllaDB (or Apache Cassandra 5, which
//!   the tests run against), prepared statements, token-aware routing, TTLs;
//! - [`EmbeddedStore`]: `qyzar dev`, one redb file, group commit.
//!
//! [`BackgroundStore`] wraps either so a process starts while its store is
//! down and connects once the store answers.
//!
//! Contract shared by both:
//! - every write returns only once it is durable (committed and fsynced, or
//!   acknowledged at the configured CQL consistency);
//! - times are unix milliseconds; "expired" means `expires_at <= now`;
//! - every list is newest first and takes a caller limit clamped to
//!   [`MAX_LIST_LIMIT`]; `since_ms` bounds are inclusive;
//! - data that expires is gone after its retention even if never read
//!   (CQL `USING TTL`; embedded [`EmbeddedStore::purge_expired`]);
//! - errors are a [`StoreError`]: `Unavailable` means "retry later, answer
//!   503", never "not found".

use async_trait::async_trait;
use qyzar_shared::error::ErrorCode;
use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};

mod background;
mod embedded;
mod model;
pub mod profile;
mod scylla;
pub mod workers;

pub use self::background::BackgroundStore;
pub use self::embedded::EmbeddedStore;
pub use self::model::{
    DenyEvent, DeviceDay, DeviceInfo, EntropySnapshot, LimitUsage, LoginAttempt, Risk, Session,
    DEVICE_DAY_SHARDS, LIMIT_SLOT_MS, MAX_COMPONENT_BYTES, MAX_DEVICE_COMPONENTS,
    MAX_ENTROPY_BYTES, MAX_KEY_BYTES, MAX_LABEL_BYTES, MAX_LIMIT_USAGE_ROWS, MAX_SIGNALS,
};
pub use self::profile::{AtoProfile, ProfileUpdate};
pub use self::scylla::{Consistency, ScyllaConfig, ScyllaStore};

/// Largest number of rows any list returns. Bigger caller limits are clamped:
/// one hot-path read must stay one bounded partition slice.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Longest a session may be valid from now (at put and at each touch).
/// It bounds how long a revocation mark must outlive a session in CQL
/// (see `ScyllaStore::revoke_session`) and is above any sensible
/// `sessionTtlSeconds`.
pub const MAX_SESSION_LIFETIME_MS: i64 = 366 * DAY_MS;

/// How long login attempts are kept: the anti-ATO look-back (velocity,
/// impossible travel, "last login") never needs more than a quarter.
pub const LOGIN_ATTEMPT_RETENTION_MS: i64 = 90 * DAY_MS;
/// How long the device index keeps a day: the dashboard's longest range.
pub const DEVICE_DAY_RETENTION_MS: i64 = 90 * DAY_MS;
/// How long entropy snapshots are kept: enough to see drift across months
/// without keeping fingerprints forever.
pub const ENTROPY_SNAPSHOT_RETENTION_MS: i64 = 90 * DAY_MS;
/// Most entropy snapshots kept per device in any 24 hours: a further
/// capture within the day is not stored (the call still succeeds). Drift
/// needs a few captures a day, not one per page view; without the cap one
/// script re-sending the same entropy fills a device's partition for 90 days.
/// Checked by reading the device's newest snapshots before writing, which
/// needs no lightweight transaction on CQL: concurrent captures of one
/// device may overshoot by the number of writers racing, never more (the
/// browser routes' per-IP limit keeps that small).
pub const MAX_ENTROPY_SNAPSHOTS_PER_DAY: usize = 24;
/// How long an anti-ATO profile's devices, regions and last success are kept
/// after they were last written (each success writes them again): a year,
/// so a user who logs in once a season is still known. Trusted devices are
/// kept until the profile goes; failure cells only as long as they count.
pub const PROFILE_RETENTION_MS: i64 = 365 * DAY_MS;
/// How long deny events are kept: they feed a 30-day analytics view.
pub const DENY_EVENT_RETENTION_MS: i64 = 30 * DAY_MS;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// Why a store call failed. Messages name the operation and the cause, never
/// a token, a hash or a bound value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time (connection
    /// refused, timeout, not enough replicas, closed). Transient: the engine
    /// answers 503 and the caller retries.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with data or an error that contradicts the schema
    /// (undecodable row, rejected statement). A bug or a damaged store.
    #[error("store data is corrupt or does not match the schema: {0}")]
    Corrupt(String),
    /// The caller passed a value the store refuses (too long, negative time,
    /// empty key). Nothing was written.
    #[error("invalid store input: {0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether this is the transient kind the engine answers with 503.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// The public error code for this failure: unavailability is the
    /// caller's to retry; anything else is ours and stays opaque.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Unavailable(_) => ErrorCode::StoreUnavailable,
            StoreError::Corrupt(_) => ErrorCode::Internal,
            StoreError::Invalid(_) => ErrorCode::InvalidField,
        }
    }
}

/// The data-plane tables the engine writes on its hot path and the admin
/// reads for dashboards.
///
/// Implementations are cheap to share (`Arc<dyn DataStore>`); every method
/// is safe to call concurrently, including many writers on one key.
#[async_trait]
pub trait DataStore: Send + Sync + 'static {
    /// Stores a new session; durable before it returns. Refused with
    /// `Invalid` when `expires_at` is not in the future or further than
    /// [`MAX_SESSION_LIFETIME_MS`] away.
    async fn put_session(&self, session: &Session) -> Result<(), StoreError>;

    /// The session, revoked or not, unless it is unknown or expired (an
    /// expired session is indistinguishable from an unknown one).
    async fn get_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
    ) -> Result<Option<Session>, StoreError>;

    /// Moves `last_seen_at` and `expires_at` forward (each only ever grows, so
    /// batched touches may arrive out of order). Returns `false`, writing
    /// nothing, when the session is unknown, expired or revoked.
    async fn touch_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
        last_seen_at: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError>;

    /// [`DataStore::touch_session`] for each of `touches`, one answer
    /// each in their order. The engine's last-seen batch calls it once a
    /// flush: one at a time, a flush of tens of thousands of sessions (the
    /// first minute of a tenant with that many active) made the embedded
    /// store's writer commit a transaction per session and wake and sleep
    /// as often, on the core that serves every tenant (BENCHMARKS.md,
    /// "Last-seen touches, one transaction each"). This default runs
    /// [`TOUCH_CONCURRENCY`] at a time; the embedded store writes a whole
    /// chunk in one transaction.
    async fn touch_sessions(&self, touches: &[SessionTouch]) -> Vec<Result<bool, StoreError>> {
        let mut out = Vec::with_capacity(touches.len());
        for chunk in touches.chunks(TOUCH_CONCURRENCY) {
            // A loop, not a closure: async_trait's boxed futures and a
            // closure over `&SessionTouch` do not agree on lifetimes.
            let mut each = Vec::with_capacity(chunk.len());
            for t in chunk {
                each.push(self.touch_session(&t.project, &t.session, t.last_seen_at, t.expires_at));
            }
            out.extend(futures::future::join_all(each).await);
        }
        out
    }

    /// Marks the session revoked; idempotent. Returns `false` when it is
    /// unknown or expired.
    async fn revoke_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
    ) -> Result<bool, StoreError>;

    /// Adds `identifier` to the device's trusted set (idempotent, durable)
    /// and returns the whole set, sorted, at most [`MAX_LIST_LIMIT`] entries.
    async fn add_trusted_identifier(
        &self,
        project: &ProjectId,
        device: &DeviceId,
        identifier: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// The device's trusted identifiers, sorted, at most [`MAX_LIST_LIMIT`].
    async fn trusted_identifiers(
        &self,
        project: &ProjectId,
        device: &DeviceId,
    ) -> Result<Vec<String>, StoreError>;

    /// Stores an entropy snapshot, kept [`ENTROPY_SNAPSHOT_RETENTION_MS`],
    /// unless the device already has [`MAX_ENTROPY_SNAPSHOTS_PER_DAY`]
    /// snapshots in the 24 hours before `at` (then nothing is written and
    /// the call succeeds).
    async fn put_entropy_snapshot(&self, snapshot: &EntropySnapshot) -> Result<(), StoreError>;

    /// The device's newest snapshot.
    async fn latest_entropy_snapshot(
        &self,
        project: &ProjectId,
        device: &DeviceId,
    ) -> Result<Option<EntropySnapshot>, StoreError>;

    /// The device's snapshots, newest first.
    async fn list_entropy_snapshots(
        &self,
        project: &ProjectId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<EntropySnapshot>, StoreError>;

    /// Stores a login attempt, durable before it returns, kept
    /// [`LOGIN_ATTEMPT_RETENTION_MS`]. Same `attempt_id` and `at` = same row.
    async fn record_login_attempt(&self, attempt: &LoginAttempt) -> Result<(), StoreError>;

    /// Attempts on `identifier` at or after `since_ms`, newest first.
    async fn recent_login_attempts(
        &self,
        project: &ProjectId,
        identifier: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<LoginAttempt>, StoreError>;

    /// The attempts on `identifier` at or after `since_ms` that no profile
    /// holds yet, newest first: what a lazy profile build
    /// ([`profile::AtoProfile::from_attempts`]) reads. Attempts logged by
    /// [`DataStore::record_ato`] were joined into the identifier's profile
    /// in the same write, so a store may leave them out; the embedded store
    /// does (it keeps them in a time-ordered log, so this stays one
    /// partition read on the hot path's profile miss). Default: every
    /// attempt, as [`DataStore::recent_login_attempts`].
    async fn unprofiled_login_attempts(
        &self,
        project: &ProjectId,
        identifier: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<LoginAttempt>, StoreError> {
        self.recent_login_attempts(project, identifier, since_ms, limit)
            .await
    }

    /// The anti-ATO profile of (`project`, `identifier`), the identifier
    /// already normalised by the caller; `None` when no profile was ever
    /// written for it (the caller then builds one from
    /// [`DataStore::unprofiled_login_attempts`], see
    /// [`profile::AtoProfile::from_attempts`]). Cells past their retention
    /// are not returned; the result is bounded ([`profile::AtoProfile::bound`]).
    async fn ato_profile(
        &self,
        project: &ProjectId,
        identifier: &str,
    ) -> Result<Option<AtoProfile>, StoreError>;

    /// Joins `update` into the identifier's profile (deleting the cells its
    /// `forget` names, each only if not newer) and, with `attempt`, logs the
    /// attempt as [`DataStore::record_login_attempt`] does; durable before
    /// it returns. Concurrent calls for one identifier, from any number of
    /// processes, end in the same profile whatever their order (the join of
    /// [`profile`]); a retried call changes nothing more. Takes the
    /// attempt and update by value: the embedded store hands them to its
    /// writer thread as they are, without a copy.
    async fn record_ato(
        &self,
        project: &ProjectId,
        identifier: &str,
        attempt: Option<LoginAttempt>,
        update: ProfileUpdate,
    ) -> Result<(), StoreError>;

    /// Revokes a client token (by `jti`) until `expires_at`, the token's own
    /// `exp`; after that the token is dead anyway and the mark vanishes. A
    /// token already expired is accepted and writes nothing.
    async fn revoke_token(
        &self,
        project: &ProjectId,
        jti: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// Whether a live revocation exists for `jti`.
    async fn is_token_revoked(&self, project: &ProjectId, jti: &str) -> Result<bool, StoreError>;

    /// Stores rate-limit denies, batched by the caller off the hot path;
    /// kept [`DENY_EVENT_RETENTION_MS`]. Not idempotent: analytics tolerate
    /// a duplicate after a retried batch better than a lost one.
    async fn record_deny_events(&self, events: &[DenyEvent]) -> Result<(), StoreError>;

    /// The project's denies at or after `since_ms`, newest first.
    async fn list_deny_events(
        &self,
        project: &ProjectId,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<DenyEvent>, StoreError>;

    /// Merges device-day rows into the device index ([`DeviceDay::merge`]),
    /// batched by the engine off the hot path; kept
    /// [`DEVICE_DAY_RETENTION_MS`] after their day. Idempotent: a retried
    /// batch changes nothing.
    async fn record_device_days(&self, rows: &[DeviceDay]) -> Result<(), StoreError>;

    /// One page of the devices seen on UTC `day`, in (shard, device id)
    /// order after `after` (the last row of the previous page), at most
    /// `limit` (clamped to [`MAX_LIST_LIMIT`]) rows. Reads only that day's
    /// partitions, from the cursor on: never a scan of the table.
    async fn list_device_days(
        &self,
        project: &ProjectId,
        day: i64,
        after: Option<(u8, &DeviceId)>,
        limit: usize,
    ) -> Result<Vec<DeviceDay>, StoreError>;

    /// Publishes this engine's rate-limit usage rows ([`LimitUsage`]),
    /// kept two slots. Only a store several engines share has anything to
    /// publish to: the embedded one (one engine per file) keeps the
    /// default, which stores nothing, and engines on it do not sync.
    async fn publish_limit_usage(&self, rows: &[LimitUsage]) -> Result<(), StoreError> {
        let _ = rows;
        Ok(())
    }

    /// Every engine's usage rows of `project` in `slot`, at most
    /// [`MAX_LIMIT_USAGE_ROWS`]. Empty on a store engines do not share.
    async fn read_limit_usage(
        &self,
        project: &ProjectId,
        slot: i64,
    ) -> Result<Vec<LimitUsage>, StoreError> {
        let _ = (project, slot);
        Ok(Vec::new())
    }

    /// Whether the store answers a trivial read; for readiness probes.
    async fn health(&self) -> Result<(), StoreError>;

    /// Whether the store is connected, without a round trip (for `/metrics`
    /// and readiness). `false` only while a [`BackgroundStore`] is still
    /// connecting.
    fn ready(&self) -> bool {
        true
    }
}

/// Current unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The caller's limit, clamped to [`MAX_LIST_LIMIT`].
pub(crate) fn clamp_limit(limit: usize) -> usize {
    limit.min(MAX_LIST_LIMIT)
}

/// Checks a session expiry against now: in the future, within the lifetime cap.
pub(crate) fn check_expiry(expires_at: i64, now: i64) -> Result<(), StoreError> {
    if expires_at <= now {
        return Err(StoreError::Invalid(
            "expires_at is not in the future".into(),
        ));
    }
    if expires_at - now > MAX_SESSION_LIFETIME_MS {
        return Err(StoreError::Invalid(
            "expires_at is beyond the longest session lifetime".into(),
        ));
    }
    Ok(())
}

/// One session's last-seen move, for [`DataStore::touch_sessions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTouch {
    /// The session's project.
    pub project: ProjectId,
    /// The session.
    pub session: SessionId,
    /// When it was last seen (unix ms); only ever moves forward.
    pub last_seen_at: i64,
    /// Its new expiry (unix ms); only ever moves forward.
    pub expires_at: i64,
}

/// Touches [`DataStore::touch_sessions`]'s default has in flight at once.
pub const TOUCH_CONCURRENCY: usize = 64;

/// A touch may not push a session past the lifetime cap; an `expires_at`
/// already past is allowed (it simply extends nothing).
pub(crate) fn check_touch(last_seen_at: i64, expires_at: i64, now: i64) -> Result<(), StoreError> {
    if last_seen_at < 0 || expires_at < 0 {
        return Err(StoreError::Invalid("touch times are before 1970".into()));
    }
    if expires_at.saturating_sub(now) > MAX_SESSION_LIFETIME_MS {
        return Err(StoreError::Invalid(
            "expires_at is beyond the longest session lifetime".into(),
        ));
    }
    Ok(())
}

/// Drops what a profile keeps no longer at `now`: devices, regions and the
/// last success not written for [`PROFILE_RETENTION_MS`], and failure cells
/// that count nothing any more. Both stores apply it on read (CQL TTLs have
/// one-second granularity; the embedded purge runs once a minute) and the
/// embedded purge applies it to stored rows, so both answer the same.
pub(crate) fn expire_profile(p: &mut AtoProfile, now: i64) {
    let live = |t: i64| t.saturating_add(PROFILE_RETENTION_MS) > now;
    if p.last_success.as_ref().is_some_and(|r| !live(r.at)) {
        p.last_success = None;
    }
    p.devices.retain(|d| live(d.last_seen));
    p.regions.retain(|r| live(r.last_seen));
    p.failures.retain(|c| !c.is_spent(now));
}

/// Whether a profile holds nothing at all (no cell, no trusted device): a
/// store then has no profile for the identifier and answers `None`.
pub(crate) fn profile_is_empty(p: &AtoProfile) -> bool {
    p.last_success.is_none()
        && p.devices.is_empty()
        && p.regions.is_empty()
        && p.trusted.is_empty()
        && p.failures.is_empty()
}

/// The checks both stores make before [`DataStore::record_ato`] writes: a
/// valid identifier, an attempt that belongs to this (project, identifier),
/// and region keys a store can hold.
pub(crate) fn check_ato_write(
    project: &ProjectId,
    identifier: &str,
    attempt: Option<&LoginAttempt>,
    update: &ProfileUpdate,
) -> Result<(), StoreError> {
    model::check_identifier("identifier", identifier)?;
    if let Some(a) = attempt {
        a.validate()?;
        if &a.project_id != project || a.identifier != identifier {
            return Err(StoreError::Invalid(
                "the attempt belongs to another project or identifier".into(),
            ));
        }
    }
    let c = &update.cells;
    for r in c
        .regions
        .iter()
        .map(|r| r.region.as_str())
        .chain(update.forget.regions.iter().map(|(r, _)| r.as_str()))
    {
        model::check_identifier("region", r)?;
    }
    if let Some(r) = &c.last_success {
        model::check_identifier("attempt_id", &r.attempt_id)?;
    }
    Ok(())
}

/// Whether a device whose newest snapshots were taken at `newest` (newest
/// first, at most [`MAX_ENTROPY_SNAPSHOTS_PER_DAY`] of them) already has its
/// day's worth of snapshots before a capture at `at`.
pub(crate) fn entropy_day_is_full(newest: &[i64], at: i64) -> bool {
    newest
        .get(MAX_ENTROPY_SNAPSHOTS_PER_DAY - 1)
        .is_some_and(|&t| t > at.saturating_sub(DAY_MS))
}
