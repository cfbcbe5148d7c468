//! Byte budgets for everything the engine remembers per project.
//!
//! Every cache the engine keeps for callers (sessions, unknown session ids,
//! verified client tokens, idempotent answers) is a [`ProjectCache`]: one
//! quick_cache per project, each weighed in bytes, under two limits:
//!
//! - **A share per project** ([`Budget::project_bytes`]): a project's own
//!   inserts evict only its own entries once it holds its share. One
//!   tenant's flood (fresh idempotency keys, large self-signed tokens, a
//!   burst of `/connect`) therefore never pushes out another tenant's
//!   entries through the share.
//! - **A total** ([`Budget::total_bytes`]): shares may add up to more than
//!   the total (most projects use little). When an insert takes the total
//!   over, the project holding the **most bytes** gives way (its coldest
//!   entries go, by CLOCK-PRO), which may be the inserting project itself;
//!   when it holds less than a walk frees, the next largest follow, in
//!   order. A project never loses entries while one holding more than it
//!   keeps all of its, so a tenant filling its share costs the others
//!   nothing until the total is reached, and even then the largest holders
//!   shrink first.
//!
//! Why this shape: one global map evicts whoever is coldest, so a tenant
//! inserting fast pushes out every other tenant's entries; a fixed split
//! (total / projects) wastes memory on idle projects and lets whoever signs
//! up many projects shrink everyone. Per-project maps with their own
//! weight and a largest-gives-way total have neither problem.
//!
//! A cache whose entries may never be read again (verified client tokens)
//! is filled through [`ProjectCache::offer`] instead of `insert`: once it
//! is full, a project's misses go in only while its recent entries were
//! found again often enough (`budget/admission.rs`), judged from that
//! project's own counts.
//!
//! Accounting is exact: each entry's weight is added before it goes in and
//! taken off in quick_cache's eviction hook (which sees evictions, replaced
//! values and refused oversize values alike) or when it is removed, so the
//! byte counters never drift. The hook cannot tell a replaced value from an
//! evicted one, so an insert tells it which key it brings ([`Replacing`]):
//! `evictions` then counts entries lost to the budget, not a profile
//! written back after every login. Weights must be a fair estimate of the heap an
//! entry holds (key, value, and a fixed overhead for the map's slot).
//!
//! Lookups take no lock and allocate nothing beyond quick_cache's own read
//! path: the project map is an [`ArcSwap`] (a lock-free load), replaced
//! whole when a project is first seen. Projects get a map only on insert,
//! and callers insert only after authentication, so the number of maps is
//! bounded by the projects in the served configuration. A map's own
//! bookkeeping (its quick_cache shards, a few hundred bytes each, and
//! "ghost" records of recently evicted keys, a few percent of a share) is
//! outside the budget; a project removed from the configuration keeps its
//! (no longer read) map until the engine restarts, its entries going first
//! whenever the total is reached and it is the largest.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use admission::Admission;
use arc_swap::ArcSwap;
use quick_cache::sync::{Cache, EntryAction, EntryResult, PlaceholderGuard};
use quick_cache::{DefaultHashBuilder, Equivalent, Lifecycle, OptionsBuilder, Weighter};

/// Bytes of a mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// How many bytes a cache may hold, in all and per project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// All projects together.
    pub total_bytes: u64,
    /// One project at most (never more than `total_bytes`).
    pub project_bytes: u64,
}

impl Budget {
    /// `total` MiB in all, `project` MiB per project.
    pub const fn mib(total: u64, project: u64) -> Self {
        Self {
            total_bytes: total.saturating_mul(MIB),
            project_bytes: project.saturating_mul(MIB),
        }
    }

    /// Parses `TOTAL` or `TOTAL/PROJECT`, both in MiB (e.g. `512/64`); a
    /// bare total gives each project a quarter of it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let num = |s: &str| -> Result<u64, String> {
            let n: u64 = s
                .trim()
                .parse()
                .map_err(|e| format!("{s:?} is not a number of MiB: {e}"))?;
            if n == 0 {
                return Err("a budget of 0 MiB caches nothing; give at least 1".into());
            }
            n.checked_mul(MIB)
                .ok_or_else(|| format!("{n} MiB is too large"))
        };
        let (total, project) = match text.split_once('/') {
            Some((t, p)) => (num(t)?, num(p)?),
            None => {
                let t = num(text)?;
                (t, (t / 4).max(1))
            }
        };
        if project > total {
            return Err("the per-project share is larger than the total".into());
        }
        Ok(Self {
            total_bytes: total,
            project_bytes: project,
        })
    }

    /// `total/project` in MiB, as [`Budget::parse`] reads it.
    pub fn to_text(self) -> String {
        format!("{}/{}", self.total_bytes / MIB, self.project_bytes / MIB)
    }
}

/// Counters of one cache, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Bytes held now (by the weights).
    pub bytes: AtomicU64,
    /// Lookups answered from memory (counted by the cache's users).
    pub hits: AtomicU64,
    /// Lookups memory could not answer.
    pub misses: AtomicU64,
    /// Entries dropped by the cache to stay within a project's share or
    /// the total, or refused as larger than a share allows.
    pub evictions: AtomicU64,
    /// Values replaced by a newer one under the same key (nothing lost).
    pub replacements: AtomicU64,
    /// Times the total was reached and the largest project gave way.
    pub budget_evictions: AtomicU64,
    /// Misses offered and not cached: an insert would have evicted and
    /// the project's recent entries were rarely read again
    /// ([`ProjectCache::offer`]).
    pub declined: AtomicU64,
}

impl CacheCounters {
    /// Counts a lookup answered from memory.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }
    /// Counts a lookup memory could not answer.
    pub fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }
}

/// quick_cache's eviction hook: takes each leaving entry's weight off its
/// project's and the cache's byte counts, and counts it as evicted or
/// replaced.
#[derive(Clone)]
pub struct Accounting<W> {
    weigher: W,
    /// Hashes keys for [`Replacing`] (the cache's one builder, so an
    /// insert and the hook agree).
    hasher: DefaultHashBuilder,
    project: Arc<AtomicU64>,
    counters: Arc<CacheCounters>,
}

/// What one insert tells the eviction hook: the hash of the key it brings.
/// quick_cache hands a replaced value to the same hook as an evicted one;
/// the first leaving entry under the inserted key is the value it
/// replaces, everything else was evicted. Armed only when the new value
/// cannot be refused as too heavy (which also leaves under that key):
/// see [`ProjectCache::insert`]. One race is left to the counters: while
/// the total makes a project's map shrink for a moment
/// ([`ProjectCache::keep_total`]), an insert racing it into that project
/// may be refused under a smaller bound and counted as a replacement. The
/// byte counts stay exact either way; only the two counters can differ by
/// such an insert.
#[derive(Default)]
pub struct Replacing {
    key: Option<u64>,
    seen: bool,
}

impl<K: Hash, V, W: Weighter<K, V>> Lifecycle<K, V> for Accounting<W> {
    type RequestState = Replacing;

    fn on_evict(&self, state: &mut Replacing, key: K, val: V) {
        let w = self.weigher.weight(&key, &val);
        self.project.fetch_sub(w, Relaxed);
        self.counters.bytes.fetch_sub(w, Relaxed);
        if let Some(h) = state.key {
            if !state.seen && self.hasher.hash_one(&key) == h {
                state.seen = true;
                self.counters.replacements.fetch_add(1, Relaxed);
                return;
            }
        }
        self.counters.evictions.fetch_add(1, Relaxed);
    }
}

type Inner<K, V, W> = Cache<K, V, W, DefaultHashBuilder, Accounting<W>>;

/// One project's entries and its byte count.
pub struct ProjectShard<K, V, W> {
    cache: Inner<K, V, W>,
    bytes: Arc<AtomicU64>,
    /// Whether its misses are worth caching ([`ProjectCache::offer`]).
    admission: Admission,
}

impl<K, V, W> ProjectShard<K, V, W>
where
    K: Eq + Hash + Clone,
    V: Clone,
    W: Weighter<K, V> + Clone,
{
    /// Bytes this project holds.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Entries this project holds.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether this project holds nothing.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

type ShardMap<K, V, W> = HashMap<Box<str>, Arc<ProjectShard<K, V, W>>, DefaultHashBuilder>;

/// A byte-budgeted cache with a share per project (see the module docs).
pub struct ProjectCache<K, V, W> {
    budget: Budget,
    weigher: W,
    /// A typical entry's weight, to size quick_cache's bookkeeping.
    typical_weight: u64,
    shards: ArcSwap<ShardMap<K, V, W>>,
    /// The hasher every project's [`Accounting`] shares.
    hasher: DefaultHashBuilder,
    /// Heaviest value an insert tells the hook about ([`Replacing`]):
    /// half of the smallest quick_cache shard a share is split into, far
    /// below what quick_cache refuses (97 % of a shard).
    replacing_up_to: u64,
    /// Serialises adding a project (a copy of the map), never lookups.
    adding: Mutex<()>,
    counters: Arc<CacheCounters>,
}

/// quick_cache shards inside one project's map: one per 4 MiB of share, at
/// most 16, so a small share costs little bookkeeping (a few hundred bytes a
/// shard, outside the budget, for each project that has entries) and one
/// busy project with a large share is not one lock.
fn inner_shards(project_bytes: u64) -> usize {
    usize::try_from(project_bytes / (4 * MIB)).map_or(16, |n| n.clamp(1, 16))
}

/// Share of quick_cache's "ghost" records (keys recently evicted, kept to
/// recognise a returning key) against the items a share holds: each costs a
/// map slot outside the budget, so they are kept to a few percent.
const GHOST_ALLOCATION: f64 = 0.05;

impl<K, V, W> ProjectCache<K, V, W>
where
    K: Eq + Hash + Clone,
    V: Clone,
    W: Weighter<K, V> + Clone,
{
    /// An empty cache under `budget`, weighing entries with `weigher`;
    /// `typical_weight` is a usual entry's weight (for sizing only).
    pub fn new(budget: Budget, weigher: W, typical_weight: u64) -> Self {
        let project_bytes = budget.project_bytes.min(budget.total_bytes).max(1);
        Self {
            budget: Budget {
                total_bytes: budget.total_bytes.max(1),
                project_bytes,
            },
            weigher,
            typical_weight: typical_weight.max(1),
            shards: ArcSwap::from_pointee(ShardMap::default()),
            hasher: DefaultHashBuilder::default(),
            replacing_up_to: project_bytes / inner_shards(project_bytes) as u64 / 2,
            adding: Mutex::new(()),
            counters: Arc::default(),
        }
    }

    /// The limits this cache keeps.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Its counters (bytes, hits, misses, evictions).
    pub fn counters(&self) -> &Arc<CacheCounters> {
        &self.counters
    }

    /// The value under `key` in `project`'s entries. No lock, no allocation
    /// beyond cloning the value.
    #[inline]
    pub fn get<Q>(&self, project: &str, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.shards.load().get(project)?.cache.get(key)
    }

    /// [`ProjectCache::get`] for caches filled through `offer`: the entry
    /// only if `usable` accepts it, and then counted as a hit towards the
    /// project's admission ([`ProjectCache::offer`]). An entry the caller
    /// cannot use (a token whose signing key has since been retired) saved
    /// nothing, so it must not keep admission open.
    #[inline]
    pub fn get_counted<Q>(
        &self,
        project: &str,
        key: &Q,
        usable: impl FnOnce(&V) -> bool,
    ) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let shards = self.shards.load();
        let shard = shards.get(project)?;
        let v = shard.cache.get(key).filter(usable)?;
        shard.admission.hit();
        Some(v)
    }

    /// Like [`ProjectCache::get`], without marking the entry as used.
    pub fn peek<Q>(&self, project: &str, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.shards.load().get(project)?.cache.peek(key)
    }

    /// Removes `key` from `project`'s entries.
    pub fn remove<Q>(&self, project: &str, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let shard = Arc::clone(self.shards.load().get(project)?);
        let (k, v) = shard.cache.remove(key)?;
        let w = self.weigher.weight(&k, &v);
        shard.bytes.fetch_sub(w, Relaxed);
        self.counters.bytes.fetch_sub(w, Relaxed);
        Some(v)
    }

    /// Removes `key` from every project's entries (walks the projects: for
    /// tests and tools, not request paths).
    pub fn remove_everywhere<Q>(&self, key: &Q)
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        for shard in self.shards.load().values() {
            if let Some((k, v)) = shard.cache.remove(key) {
                let w = self.weigher.weight(&k, &v);
                shard.bytes.fetch_sub(w, Relaxed);
                self.counters.bytes.fetch_sub(w, Relaxed);
            }
        }
    }

    /// Stores `val` under `key` for `project` (replacing any older value),
    /// within the project's share and the total. A value heavier than a
    /// project's share allows is not kept.
    pub fn insert(&self, project: &str, key: K, val: V) {
        let shard = self.shard(project);
        let w = self.weigher.weight(&key, &val);
        self.put(&shard, key, val, w);
    }

    /// Puts `val` (weighing `w`) into `shard`, then keeps the total.
    fn put(&self, shard: &ProjectShard<K, V, W>, key: K, val: V, w: u64) {
        self.add(shard, w);
        let mut replacing = Replacing {
            key: (w <= self.replacing_up_to).then(|| self.hasher.hash_one(&key)),
            seen: false,
        };
        shard.cache.insert_with_lifecycle(key, val, &mut replacing);
        self.keep_total();
    }

    /// [`ProjectCache::insert`] for a value that may never be read again:
    /// while inserting it would evict (the project's share or the total
    /// is full: within 1/16 of either), it goes in only if the project's recent entries were
    /// found again often enough by [`ProjectCache::get_counted`] (see
    /// `budget/admission.rs`). Returns whether it went in. Declining
    /// changes only speed: the caller computes the value again next time.
    pub fn offer(&self, project: &str, key: K, val: V) -> bool {
        let shard = self.shard(project);
        let w = self.weigher.weight(&key, &val);
        let evicts = near(shard.bytes(), w, self.budget.project_bytes)
            || near(self.bytes(), w, self.budget.total_bytes);
        if !shard.admission.admit(evicts) {
            self.counters.declined.fetch_add(1, Relaxed);
            return false;
        }
        self.put(&shard, key, val, w);
        true
    }

    /// Changes the value under `key` in `project`'s entries in place, under
    /// its map's lock, and weighs it again: `None`, without calling `f`,
    /// when the key is not there (or another caller is loading it). Unlike
    /// a [`ProjectCache::get`] and an [`ProjectCache::insert`] of a copy,
    /// nothing is copied and the entry is looked up once. A value that grew
    /// is inserted again (its own `Arc`), since quick_cache evicts only on
    /// an insert: the share and the total hold after an update as after
    /// an insert.
    pub fn update<Q, T>(&self, project: &str, key: &Q, f: impl FnOnce(&mut V) -> T) -> Option<T>
    where
        Q: Hash + Equivalent<K> + ToOwned<Owned = K> + ?Sized,
    {
        let shards = self.shards.load();
        let shard = shards.get(project)?;
        let mut change = (0u64, 0u64);
        let mut grown = None;
        let result = shard.cache.entry(key, Some(Duration::ZERO), |k, v| {
            let before = self.weigher.weight(k, v);
            let out = f(v);
            let after = self.weigher.weight(k, v);
            change = (before, after);
            if after > before {
                grown = Some(v.clone());
            }
            EntryAction::Retain(out)
        });
        let out = match result {
            EntryResult::Retained(out) => out,
            // Absent: the placeholder is dropped unfilled (whoever waits on
            // it gets the next guard), nothing is inserted.
            EntryResult::Vacant(_) | EntryResult::Timeout => return None,
            EntryResult::Removed(..) | EntryResult::Replaced(..) => {
                unreachable!("the callback only retains")
            }
        };
        // The counters follow the new weight, as quick_cache's own did.
        let (before, after) = change;
        if after >= before {
            self.add(shard, after - before);
        } else {
            shard.bytes.fetch_sub(before - after, Relaxed);
            self.counters.bytes.fetch_sub(before - after, Relaxed);
        }
        if let Some(v) = grown {
            // Replaces itself: the eviction hook takes off what the insert
            // adds (counted as a replacement), and quick_cache evicts what
            // is now over.
            self.insert(project, key.to_owned(), v);
        }
        Some(out)
    }

    /// The value under `key` for `project`, or a guard to compute it with:
    /// concurrent callers for the same key wait for the first guard's value
    /// (or, if it is dropped unfilled, one of them gets the next guard).
    pub async fn get_or_guard<'a>(
        &'a self,
        shard: &'a ProjectShard<K, V, W>,
        key: &K,
    ) -> Result<V, Guard<'a, K, V, W>> {
        match shard.cache.get_value_or_guard_async(key).await {
            Ok(v) => Ok(v),
            Err(inner) => Err(Guard {
                inner,
                key: key.clone(),
                shard,
                owner: self,
            }),
        }
    }

    /// `project`'s entries, created when first needed. Callers must have
    /// authenticated the project: every project named here gets a map.
    pub fn shard(&self, project: &str) -> Arc<ProjectShard<K, V, W>> {
        if let Some(s) = self.shards.load().get(project) {
            return Arc::clone(s);
        }
        let _adding = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.shards.load_full();
        if let Some(s) = current.get(project) {
            return Arc::clone(s);
        }
        let bytes = Arc::new(AtomicU64::new(0));
        let cap = self.budget.project_bytes;
        let options = OptionsBuilder::new()
            .shards(inner_shards(cap))
            .ghost_allocation(GHOST_ALLOCATION)
            .estimated_items_capacity(usize::try_from(cap / self.typical_weight).unwrap_or(1 << 20))
            .weight_capacity(cap)
            .build()
            .expect("the options are valid: a positive capacity and a power-of-two shard count");
        let shard = Arc::new(ProjectShard {
            cache: Cache::with_options(
                options,
                self.weigher.clone(),
                DefaultHashBuilder::default(),
                Accounting {
                    weigher: self.weigher.clone(),
                    hasher: self.hasher.clone(),
                    project: Arc::clone(&bytes),
                    counters: Arc::clone(&self.counters),
                },
            ),
            bytes,
            admission: Admission::default(),
        });
        let mut next = ShardMap::clone(&current);
        next.insert(project.into(), Arc::clone(&shard));
        self.shards.store(Arc::new(next));
        shard
    }

    /// Bytes `project` holds.
    pub fn project_bytes(&self, project: &str) -> u64 {
        self.shards.load().get(project).map_or(0, |s| s.bytes())
    }

    /// Entries `project` holds.
    pub fn project_len(&self, project: &str) -> usize {
        self.shards.load().get(project).map_or(0, |s| s.len())
    }

    /// Bytes all projects hold.
    pub fn bytes(&self) -> u64 {
        self.counters.bytes.load(Relaxed)
    }

    /// Entries all projects hold (walks the projects).
    pub fn len(&self) -> usize {
        self.shards.load().values().map(|s| s.len()).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add(&self, shard: &ProjectShard<K, V, W>, w: u64) {
        shard.bytes.fetch_add(w, Relaxed);
        self.counters.bytes.fetch_add(w, Relaxed);
    }

    /// Past the total, the project holding the most bytes gives way: its
    /// map is shrunk (quick_cache evicts its coldest entries), then given
    /// its share back. What is freed is what is over plus 1/64 of the
    /// total, so the walk over the projects happens about once per that
    /// many bytes inserted. When the largest holds less than that (many
    /// projects, each holding a little), the next largest give way too, in
    /// order, from the same walk: taking only the largest's bytes made a
    /// cache of 4 MiB over 1 000 projects walk all of them every few
    /// inserts (BENCHMARKS.md, "Uncached token-verify's cache").
    fn keep_total(&self) {
        let total = self.bytes();
        let Some(over) = total
            .checked_sub(self.budget.total_bytes)
            .filter(|o| *o > 0)
        else {
            return;
        };
        let map = self.shards.load();
        let mut free = over.saturating_add(self.budget.total_bytes / 64);
        for shard in largest(map.values().map(|s| (s.bytes(), s))) {
            if free == 0 {
                break;
            }
            let holds = shard.bytes();
            shard.cache.set_capacity(holds.saturating_sub(free));
            shard.cache.set_capacity(self.budget.project_bytes);
            free = free.saturating_sub(holds - shard.bytes().min(holds));
        }
        self.counters.budget_evictions.fetch_add(1, Relaxed);
    }
}

/// Whether `held` bytes and `w` more come within 1/16 of `limit`: a full
/// cache, as [`ProjectCache::offer`] judges it. Past the total, a walk of
/// [`ProjectCache::keep_total`] frees 1/64 of it more than is over, so a
/// full cache sits just below its total most of the time, and within a
/// project's share quick_cache evicts per inner shard, each of which may
/// fill before the project's sum reaches its share.
fn near(held: u64, w: u64, limit: u64) -> bool {
    held.saturating_add(w) > limit - limit / 16
}

/// Projects one walk of [`ProjectCache::keep_total`] may shrink, at most.
const GIVE_WAY: usize = 8;

/// The [`GIVE_WAY`] heaviest of `items`, heaviest first (ties in walk
/// order): one pass, a few comparisons per item, no allocation.
fn largest<T: Copy>(items: impl Iterator<Item = (u64, T)>) -> impl Iterator<Item = T> {
    let mut top: [Option<(u64, T)>; GIVE_WAY] = [None; GIVE_WAY];
    for (w, item) in items {
        if top[GIVE_WAY - 1].is_some_and(|(least, _)| least >= w) {
            continue;
        }
        let at = top
            .iter()
            .position(|t| t.is_none_or(|(tw, _)| tw < w))
            .unwrap_or(GIVE_WAY - 1);
        top[at..].rotate_right(1);
        top[at] = Some((w, item));
    }
    top.into_iter().map_while(|t| t.map(|(_, item)| item))
}

/// The right to fill a key nobody holds yet (see
/// [`ProjectCache::get_or_guard`]). Dropped unfilled, it leaves nothing.
pub struct Guard<'a, K, V, W> {
    inner: PlaceholderGuard<'a, K, V, W, DefaultHashBuilder, Accounting<W>>,
    key: K,
    shard: &'a ProjectShard<K, V, W>,
    owner: &'a ProjectCache<K, V, W>,
}

impl<K, V, W> Guard<'_, K, V, W>
where
    K: Eq + Hash + Clone,
    V: Clone,
    W: Weighter<K, V> + Clone,
{
    /// Stores `val` and hands it to whoever waits for it.
    pub fn insert(self, val: V) {
        let w = self.owner.weigher.weight(&self.key, &val);
        self.owner.add(self.shard, w);
        if self.inner.insert(val).is_err() {
            // The slot was removed meanwhile: nothing went in.
            self.shard.bytes.fetch_sub(w, Relaxed);
            self.owner.counters.bytes.fetch_sub(w, Relaxed);
        }
        self.owner.keep_total();
    }
}

mod admission;
#[cfg(test)]
mod tests;
