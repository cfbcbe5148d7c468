//! The session cache: sessions in memory, the store behind them.
//!
//! - **Positive cache** (`moka`): each entry lives until its session's
//!   `expires_at` plus [`EXPIRED_GRACE`], so a verify shortly after expiry can
//!   still answer `expired` (not `not_found`) from memory. Writes go to the
//!   store first and then to the cache (write-through); a miss reads through.
//! - **Negative cache**: unknown ids are remembered for [`NEGATIVE_TTL`] so a
//!   flood of random ids costs one store read per id per second, not one per
//!   request. It is kept short because another engine may have created the
//!   session a moment ago.
//!
//! Why moka, and what the numbers say (`cargo bench -p qyzar-benches
//! --bench structures -- session_map`, BENCHMARKS.md): moka is the only
//! candidate measured that bounds memory *and* expires each entry at its own
//! time, which this cache needs. It is also the slowest: ~2.1 µs per hit on
//! one thread against ~0.5 µs for `dashmap` and `Mutex<HashMap>` (2 shared
//! cores, noisy), and 1M sessions cost ~967 MiB RSS against ~665 MiB in a
//! plain map. Those misses are open in the benchmark issue; the next step is
//! a bounded map without per-entry timers (expiry is already re-checked on
//! every read) measured through the same `SessionMap` trait.
//!
//! Keys are session ids alone: they are 128-bit random and globally unique,
//! so a hit needs no allocation, and a session cached under another project
//! is reported as `project_mismatch`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;
use qyzar_shared::ids::{ProjectId, SessionId};
use qyzar_shared::store::{DataStore, Session, StoreError};

/// How long after expiry a cached session still answers `expired`.
pub const EXPIRED_GRACE: Duration = Duration::from_secs(600);
/// How long an unknown id is remembered as unknown.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// Where an answer came from, for `Server-Timing` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from memory.
    Hit,
    /// Known-unknown: served from the negative cache.
    NegativeHit,
    /// Read through from the store.
    Miss,
}

impl CacheStatus {
    /// The `desc` used in `Server-Timing`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::NegativeHit => "negative-hit",
            CacheStatus::Miss => "miss",
        }
    }
}

struct UntilExpiry;

impl UntilExpiry {
    fn ttl(value: &Arc<Session>) -> Option<Duration> {
        let left_ms = value.expires_at.saturating_sub(now_ms()).max(0) as u64;
        Some(Duration::from_millis(left_ms) + EXPIRED_GRACE)
    }
}

impl Expiry<Box<str>, Arc<Session>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _k: &Box<str>,
        v: &Arc<Session>,
        _now: Instant,
    ) -> Option<Duration> {
        Self::ttl(v)
    }

    fn expire_after_update(
        &self,
        _k: &Box<str>,
        v: &Arc<Session>,
        _now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        // A reverify extends the session: the cache must follow.
        Self::ttl(v)
    }
}

/// Sessions in memory over a [`DataStore`].
pub struct SessionCache {
    positive: Cache<Box<str>, Arc<Session>>,
    negative: Cache<Box<str>, ()>,
    store: Arc<dyn DataStore>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl SessionCache {
    /// A cache holding at most `capacity` sessions (least recently used go first).
    pub fn new(store: Arc<dyn DataStore>, capacity: u64) -> Self {
        Self {
            positive: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .build(),
            negative: Cache::builder()
                .max_capacity(capacity / 4 + 1024)
                .time_to_live(NEGATIVE_TTL)
                .build(),
            store,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The session with this id as seen by `project`. A session cached
    /// under another project is returned as is: the caller answers
    /// `project_mismatch`. `Err` only when the store had to be asked and is
    /// down: the caller must answer 503, never "not found".
    pub async fn get(
        &self,
        project: &ProjectId,
        id: &SessionId,
    ) -> Result<(Option<Arc<Session>>, CacheStatus), StoreError> {
        if let Some(s) = self.positive.get(id.as_str()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((Some(s), CacheStatus::Hit));
        }
        if self.negative.contains_key(id.as_str()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((None, CacheStatus::NegativeHit));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        match self.store.get_session(project, id).await? {
            Some(s) => {
                let s = Arc::new(s);
                self.positive.insert(id.as_str().into(), Arc::clone(&s));
                Ok((Some(s), CacheStatus::Miss))
            }
            None => {
                self.negative.insert(id.as_str().into(), ());
                Ok((None, CacheStatus::Miss))
            }
        }
    }

    /// Stores a new or changed session durably, then caches it.
    pub async fn put(&self, session: Session) -> Result<Arc<Session>, StoreError> {
        self.store.put_session(&session).await?;
        Ok(self.cache(session))
    }

    /// Caches a session already made durable elsewhere (e.g. by a batched
    /// touch), replacing any older copy.
    pub fn cache(&self, session: Session) -> Arc<Session> {
        let key: Box<str> = session.session_id.as_str().into();
        self.negative.invalidate(&key);
        let s = Arc::new(session);
        self.positive.insert(key, Arc::clone(&s));
        s
    }

    /// Revokes a session in the store, then in memory.
    pub async fn revoke(&self, project: &ProjectId, id: &SessionId) -> Result<bool, StoreError> {
        let found = self.store.revoke_session(project, id).await?;
        if let Some(s) = self.positive.get(id.as_str()) {
            let mut s = (*s).clone();
            s.revoked = true;
            self.cache(s);
        }
        Ok(found)
    }

    /// Drops a cached copy so the next read goes to the store.
    pub fn forget(&self, id: &SessionId) {
        self.positive.invalidate(id.as_str());
    }

    /// (hits, misses) since start, for the metrics endpoint.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Sessions currently cached (approximate; moka counts lazily).
    pub fn len(&self) -> u64 {
        self.positive.entry_count()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
