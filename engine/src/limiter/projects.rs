//! The engine's limiters: one partition per project, all drawing on one
//! engine-wide pool of keys (see "Memory" in `limiter.rs` for the policy).
//!
//! Why a partition per project rather than a project tag on each entry of
//! one map: a project's budget is enforced per shard of its own partition
//! with no shared counter on the decision path, making room scans only that
//! project's keys under that project's locks, and nothing a flooding project
//! does can lengthen another project's critical sections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError, Weak};
use std::time::Instant;

use super::{Inner, KeyHasher, Limiter, LimiterStats, ShardMap};

/// Keys a partition's shard should hold at most: making room scans one
/// shard, so this bounds that scan (a microsecond or two).
const KEYS_PER_SHARD: usize = 512;
/// Fewest and most shards a partition gets: small projects stay small in
/// memory, large ones keep contention low.
const MIN_SHARDS: usize = 4;
const MAX_SHARDS: usize = 256;

/// Sizing of [`Limiters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitersConfig {
    /// Most keys held by all projects together: the byte bound (about 64
    /// bytes a key with the hash tables' slack, so the default 2 Mi keys
    /// stay near 128 MiB).
    pub max_entries: usize,
}

impl Default for LimitersConfig {
    fn default() -> Self {
        Self {
            max_entries: 2 << 20,
        }
    }
}

/// The engine-wide pool: how many keys all partitions hold, the cap, the
/// clock every partition shares, and the partitions (weakly) for reclaiming.
pub(super) struct Pool {
    cap: usize,
    entries: AtomicUsize,
    origin: Instant,
    members: Mutex<Vec<Weak<Inner>>>,
    pub(super) untracked: AtomicU64,
    pub(super) evicted: AtomicU64,
}

impl Pool {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            entries: AtomicUsize::new(0),
            origin: Instant::now(),
            members: Mutex::new(Vec::new()),
            untracked: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    pub(super) fn now_nanos(&self) -> u64 {
        self.nanos_at(Instant::now())
    }

    pub(super) fn nanos_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn register(&self, inner: &Arc<Inner>) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members.retain(|w| w.strong_count() > 0);
        members.push(Arc::downgrade(inner));
    }

    /// Takes one slot if the pool has one.
    pub(super) fn try_reserve(&self) -> bool {
        self.entries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Whether `n` more keys fit now (racy by design: see `count_inserted`).
    pub(super) fn has_room(&self, n: usize) -> bool {
        self.entries.load(Ordering::Relaxed).saturating_add(n) <= self.cap
    }

    pub(super) fn add(&self, n: usize) {
        self.entries.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn release(&self, n: usize) {
        if n > 0 {
            let _ = self
                .entries
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| {
                    Some(e.saturating_sub(n))
                });
        }
    }

    /// The pool is full: evicts one key (idle or most-refilled) of the
    /// partition holding the most keys. `me` is the asking partition and
    /// `held` its shard already locked (used when `me` is the largest);
    /// other shards are only `try_lock`ed, so no lock order is needed and
    /// nothing waits. `false` when nothing could be evicted at this instant.
    pub(super) fn reclaim(&self, me: &Inner, held: &mut ShardMap, now: u64) -> bool {
        let largest = {
            let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
            members
                .iter()
                .filter_map(Weak::upgrade)
                .max_by_key(|m| m.entries.load(Ordering::Relaxed))
        };
        let Some(victim) = largest else {
            return false;
        };
        // The asker pays itself when it holds as many keys as anyone: never
        // charge a project holding no more keys than the asker.
        let target: &Inner = if std::ptr::eq(Arc::as_ptr(&victim), me)
            || victim.entries.load(Ordering::Relaxed) <= me.entries.load(Ordering::Relaxed)
        {
            if me.make_room(held, now, true) {
                return true;
            }
            me
        } else {
            &victim
        };
        // The asker's own held shard is skipped by `try_lock` (it would block).
        // Another project gives one key, the asker its usual share.
        let own = std::ptr::eq(target, me);
        target.shards.iter().any(|shard| match shard.0.try_lock() {
            Ok(mut map) => target.make_room(&mut map, now, own),
            Err(TryLockError::Poisoned(p)) => target.make_room(&mut p.into_inner(), now, own),
            Err(TryLockError::WouldBlock) => false,
        })
    }

    pub(super) fn stats(&self) -> LimiterStats {
        LimiterStats {
            entries: self.entries.load(Ordering::Relaxed),
            untracked: self.untracked.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            projects: 0,
        }
    }
}

/// Every project's limiter, over one pool: what the engine holds. A
/// cheap-to-clone handle.
#[derive(Clone)]
pub struct Limiters {
    pool: Arc<Pool>,
    projects: Arc<RwLock<HashMap<Box<str>, Limiter>>>,
    /// When set, partitions hash keys under a hasher every engine derives
    /// alike ([`KeyHasher::shared`]), so engines can add their counts up.
    shared_seed: Option<[u8; 32]>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("max_entries", &self.pool.cap)
            .finish_non_exhaustive()
    }
}

impl Default for Limiters {
    fn default() -> Self {
        Self::new(LimitersConfig::default())
    }
}

impl Limiters {
    /// No partitions yet; `config.max_entries` keys engine-wide.
    pub fn new(config: LimitersConfig) -> Self {
        Self {
            pool: Arc::new(Pool::new(config.max_entries)),
            projects: Arc::new(RwLock::new(HashMap::new())),
            shared_seed: None,
        }
    }

    /// Like [`Limiters::new`], with key ids every engine sharing `seed`
    /// derives alike (cross-engine limits).
    pub fn with_shared_ids(config: LimitersConfig, seed: [u8; 32]) -> Self {
        Self {
            shared_seed: Some(seed),
            ..Self::new(config)
        }
    }

    /// The projects whose partitions made a decision since the last call.
    pub fn take_touched(&self) -> Vec<Box<str>> {
        self.projects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, l)| l.take_touched())
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The partition of `project_id`, if one was made.
    pub fn existing(&self, project_id: &str) -> Option<Limiter> {
        self.projects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(project_id)
            .cloned()
    }

    /// The limiter of `project_id`, holding at most `budget` keys (its
    /// plan's `limiter_keys`). Call it only after the caller is
    /// authenticated for the project: a partition is state.
    pub fn project(&self, project_id: &str, budget: usize) -> Limiter {
        if let Some(l) = self
            .projects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(project_id)
        {
            l.set_budget(budget);
            return l.clone();
        }
        let mut projects = self
            .projects
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let hasher = match &self.shared_seed {
            Some(seed) => KeyHasher::shared(seed, project_id),
            None => KeyHasher::random(),
        };
        let l = projects.entry(project_id.into()).or_insert_with(|| {
            Limiter::in_pool(Arc::clone(&self.pool), budget, shards_for(budget), hasher)
        });
        l.set_budget(budget);
        l.clone()
    }

    /// Nanoseconds on the clock every partition shares.
    pub fn now_nanos(&self) -> u64 {
        self.pool.now_nanos()
    }

    /// Sweeps every partition's idle keys, then drops partitions left empty
    /// that no call is using. Returns the keys removed.
    pub fn sweep(&self, now_nanos: u64) -> usize {
        let all: Vec<Limiter> = self
            .projects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let removed = all.iter().map(|l| l.sweep(now_nanos)).sum();
        drop(all);
        self.projects
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            // Under the write lock nobody can take a new handle, so a count
            // of one means no call holds this partition.
            .retain(|_, l| l.entries() > 0 || Arc::strong_count(&l.inner) > 1);
        removed
    }

    /// Keys held engine-wide, partitions, and the pool's counters.
    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            projects: self
                .projects
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            ..self.pool.stats()
        }
    }

    /// Keys `project_id` holds now (0 without a partition).
    pub fn project_entries(&self, project_id: &str) -> usize {
        self.projects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(project_id)
            .map_or(0, Limiter::entries)
    }
}

/// Shards for a partition of `budget` keys: about [`KEYS_PER_SHARD`] each.
fn shards_for(budget: usize) -> usize {
    budget
        .div_ceil(KEYS_PER_SHARD)
        .clamp(MIN_SHARDS, MAX_SHARDS)
        .next_power_of_two()
}
