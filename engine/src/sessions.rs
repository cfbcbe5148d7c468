//! The session cache: sessions in memory, the store behind them.
//!
//! - **Positive cache**: a session stays readable until its `expires_at`
//!   plus [`EXPIRED_GRACE`], so a verify shortly after expiry can still
//!   answer `expired` (not `not_found`) from memory. Expiry is checked on
//!   every read: an entry past its grace is dropped there and the store is
//!   asked (it never returns an expired session, so the answer becomes
//!   `not_found`). Writes go to the store first and then to the cache
//!   (write-through); a miss reads through.
//! - **Negative cache**: unknown ids are remembered for [`NEGATIVE_TTL`] so a
//!   flood of random ids costs one store read per id per second, not one per
//!   request. It is kept short because another engine may have created the
//!   session a moment ago. Each entry holds the time it stops counting, also
//!   checked on read.
//! - **Bounded by bytes, per project**: both maps are
//!   [`ProjectCache`]s ([`crate::budget`]): each project's sessions weigh
//!   against its own share, so one project's `/connect` flood evicts only
//!   its own sessions, and past the total the project holding the most
//!   gives way. Within a project, quick_cache's CLOCK-PRO policy keeps
//!   recently read entries and evicts the rest first. Neither map has
//!   timers, so an expired entry that is never read again is not removed at
//!   its expiry; it is the first kind of entry the clock hand evicts once
//!   the share is full, because nobody reads it. Expired entries therefore
//!   never hold more memory than the budget allows, and cost nothing while
//!   there is room.
//!
//! ## Why quick_cache (the numbers)
//!
//! `cargo bench -p qyzar-benches --bench structures -- session_
//! --warm-up-time 1 --measurement-time 4`: one lookup among 100 000 real
//! sessions, keys walked in a pseudo-random order, every map behind one
//! `SessionMap` trait; medians of one run on 2 shared, busy cores (load 2–3;
//! BENCHMARKS.md says how noisy):
//!
//! | map | hit, 1 thread | miss, 1 thread | hit, all cores |
//! |---|---:|---:|---:|
//! | `Mutex<HashMap>` (baseline, unbounded) | 510 ns | 168 ns | 2.52 M/s |
//! | `dashmap` (unbounded) | 368 ns | 336 ns | 2.20 M/s |
//! | `moka` (bounded, per-entry timers; the previous choice) | 1 821 ns | 767 ns | 0.59 M/s |
//! | `quick_cache` (bounded, CLOCK-PRO) | 325 ns | 81 ns | 5.13 M/s |
//! | this cache: `quick_cache`, inline keys, [`CachedSession`] | 311 ns | 45 ns | 3.49 M/s |
//!
//! quick_cache is the fastest map measured and bounds memory, which the
//! plain maps do not; moka's timers and access-order deques cost it 5–6× per
//! hit. A hit over 100 000 random keys waits on main memory (hash table,
//! slab slot, the value's `Arc`): the same cache holding 1 000 sessions,
//! all in the CPU caches, answers a hit in 22 ns (`session_cache_1k`). The
//! 200 ns target is met there, not on the random 100k walk. On all cores
//! this cache served fewer lookups than plain quick_cache in the same run
//! (3.5 against 5.1 M/s, while one thread was on par); not explained yet,
//! to be rerun on a quiet machine.
//!
//! Values are [`CachedSession`]: one `Arc` plus one packed text buffer
//! instead of a `Session`'s nine heap strings, and keys hold the id inline.
//! That is for memory: 1M cached sessions take 350 MiB RSS (`cargo run
//! --release -p qyzar-benches --bin session_rss -- 1000000`), against
//! 967 MiB with moka over `Arc<Session>` and 665 MiB for the unpacked
//! sessions in a plain `HashMap`.
//!
//! Sessions are found by (project, id): the project picks the project's map
//! (a lock-free load and one hash of the project id), the id the entry, so a
//! hit needs no allocation. A session id looked up under another project is
//! not found there, in memory as in the store: no tenant learns whether an
//! id exists in another tenant's project. (The numbers above were measured
//! on the single map keyed by id alone, before the per-project maps.)

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quick_cache::{Equivalent, Weighter};
use qyzar_shared::ids::{DeviceId, ParseError, ProjectId, SessionId};
use qyzar_store::{DataStore, DeviceInfo, Risk, Session, StoreError};

use crate::budget::{Budget, CacheCounters, ProjectCache};

/// How long after expiry a cached session still answers `expired`.
pub const EXPIRED_GRACE: Duration = Duration::from_secs(600);
/// How long an unknown id is remembered as unknown.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);

const EXPIRED_GRACE_MS: i64 = EXPIRED_GRACE.as_millis() as i64;
const NEGATIVE_TTL_MS: i64 = NEGATIVE_TTL.as_millis() as i64;

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

/// The text fields of a [`CachedSession`], in the order they are packed.
#[derive(Clone, Copy)]
enum Part {
    Project,
    Session,
    Device,
    Browser,
    Os,
    Platform,
    Ip,
    Region,
    /// The risk signals as their JSON array, exactly as a `Session`'s
    /// `risk.signals` serialises: answers copy it, nothing parses it on a hit.
    Signals,
}

/// Fields packed before [`Part::Signals`], whose end is the text's end.
const ENDS: usize = Part::Signals as usize;

const HAS_IP: u8 = 1;
const HAS_REGION: u8 = 2;

/// A [`Session`] as the cache keeps it: the fixed-size facts inline and all
/// text (ids, device strings, IP, signals) packed into one buffer, so a
/// session costs two allocations (this struct in its `Arc`, and the text)
/// instead of ten, and a verify reads two places in memory.
///
/// It holds everything a `Session` does: [`CachedSession::to_session`] gives
/// the same session back.
#[derive(Debug)]
pub struct CachedSession {
    /// When `/connect` created it (Unix ms).
    pub created_at: i64,
    /// When it stops being valid (Unix ms).
    pub expires_at: i64,
    /// Moved forward in place by [`CachedSession::touch`], so a verify that
    /// refreshes it does not copy the session.
    last_seen_at: AtomicI64,
    /// SHA-256 of the session token.
    pub token_hash: [u8; 32],
    text: Box<str>,
    ends: [u32; ENDS],
    /// Revoked explicitly.
    pub revoked: bool,
    /// Risk score, 0 to 100.
    pub risk_score: u8,
    /// Whether the engine concluded this is automation.
    pub risk_bot: bool,
    has: u8,
}

/// An id read back from a [`CachedSession`]: it was a parsed id when the
/// session was cached, so parsing again cannot fail.
fn reparse<T>(r: Result<T, ParseError>) -> T {
    r.expect("a cached session holds ids that were parsed when it was cached")
}

impl CachedSession {
    /// Packs `s`.
    pub fn from_session(s: &Session) -> Self {
        let signals = serde_json::to_string(&s.risk.signals).unwrap_or_else(|_| "[]".to_owned());
        let parts: [&str; ENDS] = [
            s.project_id.as_str(),
            s.session_id.as_str(),
            s.device_id.as_str(),
            &s.device.browser,
            &s.device.os,
            &s.device.platform,
            s.ip.as_deref().unwrap_or(""),
            s.device.region.as_deref().unwrap_or(""),
        ];
        let mut text =
            String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + signals.len());
        let mut ends = [0u32; ENDS];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            *end = text.len() as u32;
        }
        text.push_str(&signals);
        Self {
            created_at: s.created_at,
            expires_at: s.expires_at,
            last_seen_at: AtomicI64::new(s.last_seen_at),
            token_hash: s.token_hash,
            text: text.into_boxed_str(),
            ends,
            revoked: s.revoked,
            risk_score: s.risk.score,
            risk_bot: s.risk.bot,
            has: (s.ip.is_some() as u8 * HAS_IP) | (s.device.region.is_some() as u8 * HAS_REGION),
        }
    }

    /// The session as the stores know it (allocates; not for hot paths).
    pub fn to_session(&self) -> Session {
        Session {
            project_id: self.to_project_id(),
            session_id: self.to_session_id(),
            token_hash: self.token_hash,
            device_id: self.to_device_id(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_seen_at: self.last_seen_at(),
            revoked: self.revoked,
            ip: self.ip().map(str::to_owned),
            risk: Risk {
                score: self.risk_score,
                bot: self.risk_bot,
                signals: serde_json::from_str(self.signals_json()).unwrap_or_default(),
            },
            device: DeviceInfo {
                browser: self.browser().to_owned(),
                os: self.os().to_owned(),
                platform: self.platform().to_owned(),
                region: self.region().map(str::to_owned),
            },
        }
    }

    fn part(&self, p: Part) -> &str {
        let i = p as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(self.text.len(), |e| *e as usize);
        &self.text[start..end]
    }

    /// The owning project's id.
    pub fn project_id(&self) -> &str {
        self.part(Part::Project)
    }
    /// The session id.
    pub fn session_id(&self) -> &str {
        self.part(Part::Session)
    }
    /// The device id.
    pub fn device_id(&self) -> &str {
        self.part(Part::Device)
    }
    /// Browser family.
    pub fn browser(&self) -> &str {
        self.part(Part::Browser)
    }
    /// Operating system family.
    pub fn os(&self) -> &str {
        self.part(Part::Os)
    }
    /// `desktop`, `mobile`, … .
    pub fn platform(&self) -> &str {
        self.part(Part::Platform)
    }
    /// Client IP at connect, when known.
    pub fn ip(&self) -> Option<&str> {
        (self.has & HAS_IP != 0).then(|| self.part(Part::Ip))
    }
    /// Coarse region, when known.
    pub fn region(&self) -> Option<&str> {
        (self.has & HAS_REGION != 0).then(|| self.part(Part::Region))
    }
    /// The risk signals as a JSON array (`[]` when none fired).
    pub fn signals_json(&self) -> &str {
        self.part(Part::Signals)
    }
    /// Last verify or reverify seen (Unix ms).
    pub fn last_seen_at(&self) -> i64 {
        self.last_seen_at.load(Ordering::Relaxed)
    }

    /// Moves `last_seen_at` from `seen` to `now`. `false` when another
    /// request moved it first, so concurrent verifies queue one touch.
    pub fn touch(&self, seen: i64, now: i64) -> bool {
        self.last_seen_at
            .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// The project id, typed (allocates).
    pub fn to_project_id(&self) -> ProjectId {
        reparse(ProjectId::parse(self.project_id()))
    }
    /// The session id, typed (allocates).
    pub fn to_session_id(&self) -> SessionId {
        reparse(SessionId::parse(self.session_id()))
    }
    /// The device id, typed (allocates).
    pub fn to_device_id(&self) -> DeviceId {
        reparse(DeviceId::parse(self.device_id()))
    }

    fn revoked_copy(&self) -> Self {
        Self {
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_seen_at: AtomicI64::new(self.last_seen_at()),
            token_hash: self.token_hash,
            text: self.text.clone(),
            ends: self.ends,
            revoked: true,
            risk_score: self.risk_score,
            risk_bot: self.risk_bot,
            has: self.has,
        }
    }

    /// Bytes it holds: the struct in its `Arc` and its text.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + 16 + self.text.len()
    }

    /// Whether the cache may still answer with it at `now_ms`.
    fn readable(&self, now_ms: i64) -> bool {
        now_ms < self.expires_at.saturating_add(EXPIRED_GRACE_MS)
    }
}

/// Longest id kept inline in a key: `ses_` and a generated 22-character
/// body fit; longer ids (accepted up to 68 bytes) go to the heap.
const INLINE_KEY: usize = 30;

/// A session id as a map key: inline for generated ids, so a lookup
/// compares bytes in the map's own slot instead of following a pointer.
#[derive(Clone)]
pub enum SessionKey {
    /// Up to [`INLINE_KEY`] bytes, with their length.
    Inline(u8, [u8; INLINE_KEY]),
    /// A longer id.
    Heap(Box<[u8]>),
}

impl SessionKey {
    fn new(id: &str) -> Self {
        let b = id.as_bytes();
        if b.len() <= INLINE_KEY {
            let mut a = [0; INLINE_KEY];
            a[..b.len()].copy_from_slice(b);
            Self::Inline(b.len() as u8, a)
        } else {
            Self::Heap(b.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline(n, a) => &a[..usize::from(*n)],
            Self::Heap(b) => b,
        }
    }
}

impl PartialEq for SessionKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for SessionKey {}

impl Hash for SessionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
    }
}

/// What a map slot costs besides its key and value (the hash table entry,
/// the slab's links and CLOCK-PRO state).
const SLOT_OVERHEAD: usize = 48;

impl SessionKey {
    /// Bytes it holds, inline or on the heap.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + match self {
                Self::Inline(..) => 0,
                Self::Heap(b) => b.len(),
            }
    }
}

/// Weighs a cached session: key, session, slot.
#[derive(Clone, Copy)]
pub struct SessionWeight;

impl Weighter<SessionKey, Arc<CachedSession>> for SessionWeight {
    fn weight(&self, key: &SessionKey, s: &Arc<CachedSession>) -> u64 {
        (key.bytes() + s.bytes() + SLOT_OVERHEAD) as u64
    }
}

/// Weighs an unknown id: key, deadline, slot.
#[derive(Clone, Copy)]
pub struct UnknownWeight;

impl Weighter<SessionKey, i64> for UnknownWeight {
    fn weight(&self, key: &SessionKey, _: &i64) -> u64 {
        (key.bytes() + 8 + SLOT_OVERHEAD) as u64
    }
}

/// A borrowed id to look a [`SessionKey`] up by, hashed the same way.
struct IdRef<'a>(&'a [u8]);

impl Hash for IdRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

impl Equivalent<SessionKey> for IdRef<'_> {
    fn equivalent(&self, key: &SessionKey) -> bool {
        self.0 == key.as_bytes()
    }
}

/// Sessions in memory over a [`DataStore`].
pub struct SessionCache {
    positive: ProjectCache<SessionKey, Arc<CachedSession>, SessionWeight>,
    /// Unknown ids, with the time (Unix ms) they stop counting as unknown.
    negative: ProjectCache<SessionKey, i64, UnknownWeight>,
    store: Arc<dyn DataStore>,
}

impl SessionCache {
    /// A cache holding sessions within `sessions` and unknown ids within
    /// `unknown` (both in bytes, in all and per project).
    pub fn new(store: Arc<dyn DataStore>, sessions: Budget, unknown: Budget) -> Self {
        Self {
            positive: ProjectCache::new(sessions, SessionWeight, 350),
            negative: ProjectCache::new(unknown, UnknownWeight, 96),
            store,
        }
    }

    /// The session `id` of `project` if memory has it and it is still
    /// readable (before expiry plus [`EXPIRED_GRACE`]). No allocation, no
    /// lock, no store.
    pub fn cached(&self, project: &str, id: &str, now_ms: i64) -> Option<Arc<CachedSession>> {
        let key = IdRef(id.as_bytes());
        let s = self.positive.get(project, &key)?;
        if s.readable(now_ms) {
            return Some(s);
        }
        // Past its grace: the store would not return it either, and
        // dropping it here frees its memory before the clock hand would.
        self.positive.remove(project, &key);
        None
    }

    /// The session `id` of `project`, reading through to the store on a
    /// miss. `project` must be authenticated (a project of the served
    /// configuration): it gets memory here. Text that is not a session id
    /// (or a project id) is unknown without asking the store. `Err` only
    /// when the store had to be asked and is down: the caller must answer
    /// 503, never "not found". Allocates only on a miss.
    pub async fn lookup(
        &self,
        project: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<(Option<Arc<CachedSession>>, CacheStatus), StoreError> {
        if let Some(s) = self.cached(project, id, now_ms) {
            self.positive.counters().hit();
            return Ok((Some(s), CacheStatus::Hit));
        }
        if self
            .negative
            .get(project, &IdRef(id.as_bytes()))
            .is_some_and(|until| now_ms < until)
        {
            self.positive.counters().hit();
            self.negative.counters().hit();
            return Ok((None, CacheStatus::NegativeHit));
        }
        let (Ok(pid), Ok(sid)) = (ProjectId::parse(project), SessionId::parse(id)) else {
            return Ok((None, CacheStatus::Hit));
        };
        self.positive.counters().miss();
        self.negative.counters().miss();
        match self.store.get_session(&pid, &sid).await? {
            Some(s) if s.project_id.as_str() == project => {
                let s = Arc::new(CachedSession::from_session(&s));
                self.positive
                    .insert(project, SessionKey::new(id), Arc::clone(&s));
                Ok((Some(s), CacheStatus::Miss))
            }
            _ => {
                self.negative.insert(
                    project,
                    SessionKey::new(id),
                    now_ms.saturating_add(NEGATIVE_TTL_MS),
                );
                Ok((None, CacheStatus::Miss))
            }
        }
    }

    /// [`SessionCache::lookup`] with typed ids, answering full `Session`s
    /// (converted, so it allocates): for tests and tools, not hot paths.
    pub async fn get(
        &self,
        project: &ProjectId,
        id: &SessionId,
    ) -> Result<(Option<Arc<Session>>, CacheStatus), StoreError> {
        let (s, status) = self.lookup(project.as_str(), id.as_str(), now_ms()).await?;
        Ok((s.map(|s| Arc::new(s.to_session())), status))
    }

    /// Stores a new or changed session durably, then caches it.
    pub async fn put(&self, session: Session) -> Result<Arc<CachedSession>, StoreError> {
        self.store.put_session(&session).await?;
        Ok(self.cache(session))
    }

    /// Caches a session already made durable elsewhere (e.g. by a batched
    /// touch), replacing any older copy.
    pub fn cache(&self, session: Session) -> Arc<CachedSession> {
        let project = session.project_id.as_str();
        let id = session.session_id.as_str();
        self.negative.remove(project, &IdRef(id.as_bytes()));
        let s = Arc::new(CachedSession::from_session(&session));
        self.positive
            .insert(project, SessionKey::new(id), Arc::clone(&s));
        s
    }

    /// Revokes a session in the store, then in memory.
    pub async fn revoke(&self, project: &ProjectId, id: &SessionId) -> Result<bool, StoreError> {
        let found = self.store.revoke_session(project, id).await?;
        let key = IdRef(id.as_str().as_bytes());
        if let Some(s) = self.positive.peek(project.as_str(), &key) {
            let s = Arc::new(s.revoked_copy());
            self.positive
                .insert(project.as_str(), SessionKey::new(id.as_str()), s);
        }
        Ok(found)
    }

    /// Drops any cached copy so the next read goes to the store (walks the
    /// projects: for tests and tools).
    pub fn forget(&self, id: &SessionId) {
        self.positive
            .remove_everywhere(&IdRef(id.as_str().as_bytes()));
    }

    /// The sessions map's counters (bytes, evictions) for metrics.
    pub fn counters(&self) -> &Arc<CacheCounters> {
        self.positive.counters()
    }

    /// The unknown-id map's counters for metrics.
    pub fn negative_counters(&self) -> &Arc<CacheCounters> {
        self.negative.counters()
    }

    /// Unknown ids remembered for `project` (expired ones not yet evicted
    /// included).
    pub fn unknown_len(&self, project: &str) -> usize {
        self.negative.project_len(project)
    }

    /// Sessions of `project` in memory.
    pub fn project_len(&self, project: &str) -> usize {
        self.positive.project_len(project)
    }

    /// (hits, misses) since start, for the metrics endpoint.
    pub fn stats(&self) -> (u64, u64) {
        let c = self.positive.counters();
        (
            c.hits.load(Ordering::Relaxed),
            c.misses.load(Ordering::Relaxed),
        )
    }

    /// Sessions currently cached (expired ones not yet evicted included;
    /// walks the projects).
    pub fn len(&self) -> u64 {
        self.positive.len() as u64
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

#[cfg(test)]
mod tests;
