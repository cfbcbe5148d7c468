//! The multi-bucket GCRA rate limiter behind `POST /projects/client/rate-limit-check`.
//!
//! # What it decides
//! One call names up to [`MAX_BUCKETS`] buckets (the `ip` bucket and one per
//! metadata field the project has a rule for), each a [`BucketCheck`]: the
//! [`BucketKey`] of (project, bucket, key) and the [`Rule`] in force. A rule
//! `{limit, windowSeconds}` allows a burst of `limit` cells and refills at
//! `limit / windowSeconds` cells per second (GCRA, arithmetic in
//! `limiter/gcra.rs`); the call costs `cost` cells in *every* bucket.
//! - All or nothing: the call is allowed only if every bucket allows it, and
//!   a denied call consumes from no bucket — not even from those that allowed.
//! - `dry_run` answers exactly what a real call would, and consumes nothing.
//! - `cost == 0` is a pure query: always allowed, consumes nothing.
//! - `cost > limit` is always denied, with `retry_after_ms: None` ("never"):
//!   no amount of waiting makes it fit.
//!
//! # A changed limit keeps its counter
//! The state of a key is its theoretical arrival time (TAT) plus the emission
//! interval `T` it was charged at; the rule itself is *not* stored but applied
//! at decision time. At a decision the debt `TAT − now` (time until full) is
//! converted to cells at the stored `T` and back to time at the rule's `T`,
//! rounded up: the number of spent cells carries over. Spend 5 of
//! `{10, 60 s}`, then the project moves to `{20, 60 s}`: 15 remain; moves to
//! `{3, 60 s}`: 5 > 3 are spent, so calls are denied until the debt drains.
//! Between two consuming calls the debt drains at the rate it was charged at;
//! the next consuming call re-charges it at the new rule's rate. A pure TAT
//! (no stored `T`) would keep the *time* until full instead, so 5 of 10 spent
//! would become 10 of 20 and 1.5 of 3: that loses the counter the product
//! promises. With an unchanged rule the stored `T` is inert and this is plain
//! GCRA, identical to governor's (pinned by a test).
//!
//! # Why not governor's keyed `RateLimiter`
//! Its quota is fixed per limiter: a changed limit means a new limiter whose
//! keys start empty (the counter is lost) or an old one that ignores the new
//! limit. And `check_key` tests *and* consumes in one step per limiter, so
//! checking several limiters and then consuming from all of them or none
//! cannot be done atomically: a check-then-consume races with other calls,
//! and there is no un-consume. The GCRA arithmetic here is governor's (a test
//! drives both over the same request times and compares every decision).
//!
//! # Concurrency: lock the involved shards in ascending order
//! State lives in a fixed number of shards, each a `Mutex<HashMap>` on its own
//! cache line; a key's shard is chosen by bits of its keyed hash. A call
//! locks the distinct shards of its buckets in ascending index order (so two
//! calls can never wait on each other in a cycle), decides every bucket and
//! commits all of them or none, then unlocks. Check and commit happen under
//! the same locks, so two racing calls cannot both take the last cell, and no
//! other call ever sees a half-applied call. The critical section is a few
//! hash lookups on 16-byte keys with no allocation beyond map growth.
//!
//! Why not `dashmap`: holding several entries at once needs its shard locks in
//! a fixed order, but two guards on keys of the same shard deadlock, and its
//! raw shard API exposes hashbrown's `RawTable`, which needs `unsafe` (the
//! workspace forbids it). A compare-and-swap loop over atomic TATs would need a
//! rollback when a later bucket fails, and meanwhile other calls would be
//! denied by cells that end up not spent.
//!
//! # Memory: a share per project, idle keys forgotten, no tenant fails another open
//! An entry whose TAT has passed is a full bucket, exactly like an absent
//! one: forgetting it loses nothing. Each project has a partition of its own
//! (a [`Limiter`] made by [`Limiters::project`]) holding at most its plan's
//! key budget (`PlanTier::limits().limiter_keys`), spread evenly over its
//! shards (the keyed hash spreads keys evenly and an attacker cannot aim at
//! one shard). All partitions draw on one engine-wide pool of
//! [`LimitersConfig::max_entries`] keys, the byte bound (about 64 bytes a
//! key with the hash table's slack).
//!
//! When a new key finds its project's shard full, that shard is cleaned on
//! the spot: every idle key goes; if none is idle, the project's own
//! most-refilled eighth of the shard (the lowest TATs: the keys closest to
//! a full bucket, so the least is lost by forgetting them) is evicted at
//! once, so the next new keys find room without another scan. A project at its budget
//! therefore limits its new keys exactly and only ever forgets its own
//! least-spent counters; no other project's key is touched and nobody fails
//! open. Why evict rather than refuse: refusing (fail closed) would deny the
//! project's new users for as long as a flood keeps its old keys busy;
//! evicting the most-refilled keys costs at most those keys' few spent cells.
//! The scan is one shard of the flooding project's own partition (a few
//! hundred entries), under that project's own lock, so its cost lands on the
//! flooder.
//!
//! When the engine-wide pool is full (many projects at their budgets at
//! once), a new key first drops its shard's idle keys, then evicts the
//! most-refilled key of the project holding the most keys (taken with
//! `try_lock`, so no lock order is needed); a project holding no more keys
//! than the asker is never charged: then the asker evicts its own. Only if
//! every shard that could give a key is locked by another call at that very
//! instant does the key go untracked, and [`LimiterStats::untracked`] counts
//! it (a sign the pool is too small, never something one tenant can force on
//! another while it is within its budget and the pool has room).
//! [`Limiters::sweep`] removes idle keys periodically, off the request path.
//!
//! # Time
//! `now_nanos` is a monotonic clock ([`Limiter::now_nanos`] gives one); the
//! answer carries durations (`retry_after_ms`, `reset_after_ms`), and the route
//! turns `reset_after_ms` into the wall-clock `resetAt`. A clock that went
//! backwards only makes buckets look emptier, never fuller.

mod gcra;
mod key;
mod projects;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub use gcra::{BucketOutcome, Rule};
pub use key::{BucketKey, KeyHasher, KeyTooLong, MAX_KEY_LEN};
pub use projects::{Limiters, LimitersConfig};

use gcra::State;
use key::KeyIdentityHasher;
use projects::Pool;

/// Most buckets one call may name: the `ip` bucket plus at most 16 metadata
/// buckets. Outcomes live in a fixed array of this size, so a decision never
/// allocates; settings validation must keep metadata rules within 16.
pub const MAX_BUCKETS: usize = 17;

/// Calls of up to this many buckets use scratch arrays of this size rather
/// than [`MAX_BUCKETS`]: `ip` plus a few metadata fields is the usual call.
const SMALL_CALL: usize = 4;

/// One bucket of a call: whose counter, under which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketCheck {
    /// The (project, bucket, key) counter.
    pub key: BucketKey,
    /// The rule in force for this call (project settings or the call's override).
    pub rule: Rule,
}

/// The answer to one call.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Whether the call was allowed (and, unless a dry run, consumed).
    pub allowed: bool,
    /// Index (into the call's checks) of the first bucket that denied it.
    pub denied_by: Option<usize>,
    /// How many of `outcomes` are in use.
    len: usize,
    /// One outcome per check, in the order given; inline so nothing allocates.
    outcomes: [BucketOutcome; MAX_BUCKETS],
}

impl Decision {
    /// An allowed decision over `len` buckets whose outcomes are still to be
    /// filled in. The unused slots are all zero bits, so the array is a
    /// plain memset.
    fn new(len: usize) -> Self {
        Self {
            allowed: true,
            denied_by: None,
            len,
            outcomes: [BucketOutcome::EMPTY; MAX_BUCKETS],
        }
    }

    /// Sets check `i`'s outcome; the first denying check denies the call.
    fn record(&mut self, i: usize, outcome: BucketOutcome) {
        if !outcome.allowed && self.allowed {
            self.allowed = false;
            self.denied_by = Some(i);
        }
        self.outcomes[i] = outcome;
    }

    /// In a denied call nothing is consumed, so `remaining` and
    /// `reset_after_ms` must describe bucket `i` as it stands (an allowing
    /// bucket was evaluated after consumption, a repeated key after the
    /// earlier check's): re-evaluated at cost 0 from its stored state.
    fn describe_as_is(&mut self, i: usize, stored: Option<State>, rule: Rule, now: u64) {
        let as_is = gcra::evaluate(stored, rule, 0, now).0;
        let outcome = &mut self.outcomes[i];
        outcome.remaining = as_is.remaining;
        outcome.reset_after_ms = as_is.reset_after_ms;
    }

    /// One outcome per check, in the order the checks were given.
    pub fn buckets(&self) -> &[BucketOutcome] {
        &self.outcomes[..self.len]
    }

    /// Index of the bucket the top-level `limit` / `remaining` / `resetAt`
    /// describe: the denying bucket, or else the one with the fewest cells
    /// left (the first of equals). `None` for a call with no buckets.
    pub fn primary(&self) -> Option<usize> {
        self.denied_by
            .or_else(|| (0..self.len).min_by_key(|&i| self.outcomes[i].remaining))
    }

    /// Milliseconds until the whole call would fit: `Some(0)` when allowed,
    /// else the longest wait among the denying buckets (all must allow at
    /// once), `None` when some bucket never will (cost above its limit).
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.buckets()
            .iter()
            .try_fold(0, |longest, o| o.retry_after_ms.map(|ms| longest.max(ms)))
    }
}

/// A call named more than [`MAX_BUCKETS`] buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyBuckets;

impl std::fmt::Display for TooManyBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a rate-limit check names more than 17 buckets")
    }
}

impl std::error::Error for TooManyBuckets {}

/// Sizing of a standalone [`Limiter`] (its own pool of `max_entries`); the
/// engine's per-project partitions are sized by [`Limiters::project`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Most keys held at once. An entry is 32 bytes of payload; with the
    /// hash table's spare room expect 40–80 bytes each, so the default
    /// (about a million keys) stays under 100 MB.
    pub max_entries: usize,
    /// Number of shards, rounded up to a power of two (at most 65 536). More
    /// shards mean less contention and shorter on-the-spot sweeps.
    pub shards: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            max_entries: 1 << 20,
            shards: 256,
        }
    }
}

/// What the metrics endpoint reports about a [`Limiter`] or [`Limiters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimiterStats {
    /// Keys currently held (idle ones included until the next sweep).
    pub entries: usize,
    /// New keys not recorded since the limiter started: only when the
    /// engine-wide pool was full and no key could be reclaimed at that
    /// instant. Non-zero means `max_entries` is too small.
    pub untracked: u64,
    /// Live keys forgotten to make room (a project at its budget with no
    /// idle key, or the largest project when the pool was full).
    pub evicted: u64,
    /// Projects with a partition.
    pub projects: usize,
}

/// One project's rate limiter (or a standalone one): a cheap-to-clone handle
/// on shared state.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Limiter {
    /// Sizes only: the entries are many and say nothing without the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("shards", &self.inner.shards.len())
            .field("shard_cap", &self.inner.shard_cap())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// Power-of-two many shards, indexed by `shard_bits & mask`.
    shards: Box<[Shard]>,
    /// `shards.len() - 1`: a power of two minus one, so indexing is a mask.
    mask: u64,
    /// Entries one shard may hold before it must make room: the project's
    /// budget over its shards. Changes when the project's plan does.
    shard_cap: AtomicUsize,
    /// The secret under which this limiter's bucket keys are hashed.
    hasher: KeyHasher,
    /// Keys held by this partition (all shards).
    entries: AtomicUsize,
    /// The engine-wide pool every partition draws on (and its clock).
    pool: Arc<Pool>,
    /// Set by every decision, taken by the cross-engine sync
    /// ([`Limiters::take_touched`]): which projects to fold other
    /// engines' counts into.
    touched: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    /// A dropped partition gives its keys back to the pool.
    fn drop(&mut self) {
        let n = *self.entries.get_mut();
        self.pool.release(n);
    }
}

/// One shard, on its own cache lines so neighbouring locks do not bounce.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<ShardMap>);

/// The state of one shard's keys.
#[derive(Default)]
struct ShardMap {
    /// TAT and charging interval per key; absent means a full bucket.
    entries: HashMap<BucketKey, State, BuildHasherDefault<KeyIdentityHasher>>,
}

impl Limiter {
    /// An empty standalone limiter (its own pool of `config.max_entries`)
    /// with a fresh random key for [`Limiter::bucket_key`].
    pub fn new(config: LimiterConfig) -> Self {
        let pool = Arc::new(Pool::new(config.max_entries));
        Self::in_pool(pool, config.max_entries, config.shards, KeyHasher::random())
    }

    /// A partition of `pool` holding at most `budget` keys over `shards`.
    fn in_pool(pool: Arc<Pool>, budget: usize, shards: usize, hasher: KeyHasher) -> Self {
        let shards = shards.clamp(1, 1 << 16).next_power_of_two();
        let limiter = Self {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Shard::default()).collect(),
                mask: shards as u64 - 1,
                shard_cap: AtomicUsize::new(budget.div_ceil(shards).max(1)),
                hasher,
                entries: AtomicUsize::new(0),
                touched: std::sync::atomic::AtomicBool::new(false),
                pool: Arc::clone(&pool),
            }),
        };
        pool.register(&limiter.inner);
        limiter
    }

    /// Sets the key budget (a plan change); keys above a lowered budget are
    /// forgotten as their shards next need room or are swept. Rounded down
    /// per shard, so the partition never holds more than `budget` keys.
    fn set_budget(&self, budget: usize) {
        let cap = (budget / self.inner.shards.len()).max(1);
        if self.inner.shard_cap.load(Ordering::Relaxed) != cap {
            self.inner.shard_cap.store(cap, Ordering::Relaxed);
        }
    }

    /// The key of `key` in `bucket` of `project_id`, under this limiter's
    /// secret (see `limiter/key.rs` for why a keyed hash).
    pub fn bucket_key(
        &self,
        project_id: &str,
        bucket: &str,
        key: &[u8],
    ) -> Result<BucketKey, KeyTooLong> {
        self.inner.hasher.bucket_key(project_id, bucket, key)
    }

    /// [`Limiter::bucket_key`] of the bucket named `bucket[0]` followed by
    /// `bucket[1]` (`"metadata:"`, `"email"`), without building the name.
    pub fn bucket_key_parts(
        &self,
        project_id: &str,
        bucket: [&str; 2],
        key: &[u8],
    ) -> Result<BucketKey, KeyTooLong> {
        self.inner.hasher.bucket_key_parts(project_id, bucket, key)
    }

    /// Nanoseconds since this limiter was made, on the monotonic clock: the
    /// `now_nanos` to pass to [`Limiter::check`] and [`Limiter::sweep`].
    pub fn now_nanos(&self) -> u64 {
        self.inner.pool.now_nanos()
    }

    /// [`Limiter::now_nanos`] of an instant already read (a request's
    /// arrival at the router), which saves the route a clock read.
    pub fn nanos_at(&self, at: std::time::Instant) -> u64 {
        self.inner.pool.nanos_at(at)
    }

    /// Decides one call over all its buckets, all or nothing, and consumes
    /// `cost` cells from each unless the call is denied or `dry_run`.
    ///
    /// A key named twice in one call is charged twice (each check sees the
    /// previous one's consumption).
    ///
    /// One bucket takes a path of its own (one lock, one map lookup, no lock
    /// ordering); a test drives it and the general path over the same calls
    /// and compares every answer. The general path sizes its scratch arrays
    /// for 4 buckets when that is enough (the usual `ip` plus a few metadata
    /// fields), so a call does not initialise 17 slots of each. Inlined so
    /// the [`Decision`] is built where the caller keeps it, not copied.
    #[inline]
    pub fn check(
        &self,
        now_nanos: u64,
        checks: &[BucketCheck],
        cost: u32,
        dry_run: bool,
    ) -> Result<Decision, TooManyBuckets> {
        // Read first: a store only when it changes, so the flag's cache line
        // is not written by every call on every core.
        if !self.inner.touched.load(Ordering::Relaxed) {
            self.inner.touched.store(true, Ordering::Relaxed);
        }
        match checks {
            [] => Ok(Decision::new(0)),
            [one] => Ok(self.check_one(now_nanos, *one, cost, dry_run)),
            _ if checks.len() <= SMALL_CALL => {
                Ok(self.check_many::<SMALL_CALL, true>(now_nanos, checks, cost, dry_run))
            }
            _ if checks.len() <= MAX_BUCKETS => {
                Ok(self.check_many::<MAX_BUCKETS, true>(now_nanos, checks, cost, dry_run))
            }
            _ => Err(TooManyBuckets),
        }
    }

    /// Whether a decision was made since the last call (and clears it).
    pub(crate) fn take_touched(&self) -> bool {
        self.inner.touched.swap(false, Ordering::Relaxed)
    }

    /// Charges `cells` consumed elsewhere (another engine, cross-engine
    /// limits) to `key`, at `interval` ns a cell: its debt grows exactly
    /// as if those calls had been decided here, so this engine's bucket
    /// tracks the consumption of every engine. A key not held yet is made
    /// (under the project's budget, like a local one).
    pub fn charge(&self, key: BucketKey, cells: u64, interval: u64, now_nanos: u64) {
        if cells == 0 {
            return;
        }
        let interval = interval.max(1);
        let inner = &*self.inner;
        let mut guard = lock(&inner.shards[inner.shard_index(key)]);
        let map = &mut *guard;
        let add = cells.saturating_mul(interval);
        match map.entries.get_mut(&key) {
            Some(slot) => {
                slot.tat = slot.tat.max(now_nanos).saturating_add(add);
                slot.interval = interval;
            }
            None => inner.insert_new(
                map,
                key,
                State {
                    tat: now_nanos.saturating_add(add),
                    interval,
                },
                now_nanos,
            ),
        }
    }

    /// One bucket: one shard, one lookup whose slot is updated in place. A
    /// denied single-bucket outcome already describes the bucket as it stands
    /// (nothing was consumed), so nothing is evaluated twice.
    fn check_one(&self, now: u64, c: BucketCheck, cost: u32, dry_run: bool) -> Decision {
        let inner = &*self.inner;
        let mut guard = lock(&inner.shards[inner.shard_index(c.key)]);
        let map = &mut *guard;
        let (outcome, new_key) = match map.entries.get_mut(&c.key) {
            Some(slot) => {
                let (outcome, next) = gcra::evaluate(Some(*slot), c.rule, cost, now);
                if let (Some(next), false) = (next, dry_run) {
                    *slot = next;
                }
                (outcome, None)
            }
            None => {
                let (outcome, next) = gcra::evaluate(None, c.rule, cost, now);
                (outcome, next.filter(|_| !dry_run))
            }
        };
        if let Some(next) = new_key {
            inner.insert_new(map, c.key, next, now);
        }
        drop(guard);
        let mut decision = Decision::new(1);
        decision.allowed = outcome.allowed;
        decision.denied_by = (!outcome.allowed).then_some(0);
        decision.outcomes[0] = outcome;
        decision
    }

    /// Any number of buckets up to `N` (≥ 2): lock the distinct shards in
    /// ascending order, decide every bucket, then commit all or none.
    ///
    /// `IN_PLACE` allows the single-lookup path; tests turn it off to compare
    /// both.
    fn check_many<const N: usize, const IN_PLACE: bool>(
        &self,
        now_nanos: u64,
        checks: &[BucketCheck],
        cost: u32,
        dry_run: bool,
    ) -> Decision {
        let n = checks.len();
        debug_assert!(n <= N);
        let inner = &*self.inner;

        // The distinct shards involved, ascending: the global lock order.
        let mut shard_of = [0usize; N];
        for (slot, c) in shard_of.iter_mut().zip(checks) {
            *slot = inner.shard_index(c.key);
        }
        let mut order = shard_of;
        let order = &mut order[..n];
        order.sort_unstable();
        let distinct = dedup_sorted(order);
        let order = &order[..distinct];
        let mut guards: [Option<MutexGuard<'_, ShardMap>>; N] = std::array::from_fn(|_| None);
        for (guard, &shard) in guards.iter_mut().zip(order) {
            *guard = Some(lock(&inner.shards[shard]));
        }
        // Which guard holds each check's shard (reusing `shard_of`).
        for shard in &mut shard_of[..n] {
            *shard = order.binary_search(shard).unwrap_or(0);
        }
        let guard_of = shard_of;

        // The usual call: every bucket in a shard of its own (so no key is
        // repeated) with room for a new key. Then each bucket's map slot is
        // held across the decision and written in place: one lookup each.
        let shard_cap = inner.shard_cap();
        let has_room = |g: &Option<MutexGuard<'_, ShardMap>>| {
            g.as_ref().is_some_and(|m| m.entries.len() < shard_cap)
        };
        if IN_PLACE && distinct == n && guards[..n].iter().all(has_room) && inner.pool.has_room(n) {
            return decide_in_place(
                inner,
                &mut guards,
                &guard_of[..n],
                checks,
                cost,
                dry_run,
                now_nanos,
            );
        }

        // Decide every bucket without writing anything.
        let mut decision = Decision::new(n);
        let mut in_map: [Option<State>; N] = [None; N];
        let mut pending: [Option<State>; N] = [None; N];
        for (i, c) in checks.iter().enumerate() {
            in_map[i] = guards[guard_of[i]]
                .as_ref()
                .and_then(|map| map.entries.get(&c.key).copied());
            // A key already named earlier in this call starts from what that
            // check would leave behind.
            let earlier = (0..i)
                .rev()
                .find(|&j| checks[j].key == c.key)
                .and_then(|j| pending[j]);
            let (outcome, next) = gcra::evaluate(earlier.or(in_map[i]), c.rule, cost, now_nanos);
            decision.record(i, outcome);
            pending[i] = next;
        }
        if !decision.allowed {
            // Nothing is consumed, so `remaining` and `reset_after_ms` describe
            // each bucket as it stands (an allowing bucket was evaluated after
            // consumption, a repeated key after the earlier check's).
            for (i, c) in checks.iter().enumerate() {
                decision.describe_as_is(i, in_map[i], c.rule, now_nanos);
            }
            return decision;
        }
        if dry_run {
            return decision;
        }

        // Commit, still under the same locks.
        for (i, c) in checks.iter().enumerate() {
            let Some(next) = pending[i] else { continue };
            if let Some(map) = guards[guard_of[i]].as_deref_mut() {
                inner.store(map, c.key, next, now_nanos);
            }
        }
        decision
    }

    /// Removes every entry whose TAT is at or before `now_nanos` (a full
    /// bucket, same as absent) and returns how many went. Locks one shard at
    /// a time; run it periodically off the request path (it visits every
    /// entry), e.g. every few seconds from a blocking task.
    pub fn sweep(&self, now_nanos: u64) -> usize {
        let inner = &*self.inner;
        inner
            .shards
            .iter()
            .map(|shard| inner.sweep_shard(&mut lock(shard), now_nanos))
            .sum()
    }

    /// Current size and counters of this limiter's pool, for metrics.
    /// `entries` is this limiter's own; the counters are the pool's.
    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            entries: self.entries(),
            ..self.inner.pool.stats()
        }
    }

    /// Keys this limiter holds now.
    pub fn entries(&self) -> usize {
        self.inner.entries.load(Ordering::Relaxed)
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(LimiterConfig::default())
    }
}

impl Inner {
    fn shard_index(&self, key: BucketKey) -> usize {
        // `mask` < 2¹⁶, so the cast cannot truncate.
        (key.shard_bits() & self.mask) as usize
    }

    fn shard_cap(&self) -> usize {
        self.shard_cap.load(Ordering::Relaxed)
    }

    /// Writes `state` for `key`; a new key goes through [`Inner::insert_new`].
    fn store(&self, map: &mut ShardMap, key: BucketKey, state: State, now: u64) {
        match map.entries.get_mut(&key) {
            Some(slot) => *slot = state,
            None => self.insert_new(map, key, state, now),
        }
    }

    /// Records a key not yet in `map`. A full shard makes room from this
    /// project's own keys ([`Inner::make_room`]); a full pool reclaims from
    /// the largest project ([`Pool::reclaim`]); only if both fail does the
    /// key go untracked.
    fn insert_new(&self, map: &mut ShardMap, key: BucketKey, state: State, now: u64) {
        if map.entries.len() >= self.shard_cap() && !self.make_room(map, now, true) {
            self.pool.untracked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !self.pool.try_reserve() {
            let freed = self.sweep_shard(map, now) > 0 || self.pool.reclaim(self, map, now);
            if !(freed && self.pool.try_reserve()) {
                self.pool.untracked.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        map.entries.insert(key, state);
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a key inserted where room was checked beforehand (the in-place
    /// path): the pool may overshoot by the calls racing past that check,
    /// at most a few keys per core.
    fn count_inserted(&self) {
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.pool.add(1);
    }

    /// Frees at least one slot of `map`: every idle key (a full bucket, so
    /// nothing is lost), or if none is idle the most-refilled (lowest TAT)
    /// live keys. For the asker's own shard (`own`) that is
    /// [`EVICT_SHARE`] of the shard at once: evicting one key at a time
    /// made every new key of a shard full of live keys scan the whole shard
    /// again, 11 % of the core under the instrument's rate-limit scenario (a
    /// new client address per call; BENCHMARKS.md), and one pass now makes
    /// room for the next `len / 8` new keys. From another project's shard
    /// (the pool's reclaim) exactly one key, as many as the asker needs:
    /// a tenant's new keys never cost another tenant more counters than
    /// they take. `false` only for an empty shard.
    fn make_room(&self, map: &mut ShardMap, now: u64, own: bool) -> bool {
        let before = map.entries.len();
        map.entries.retain(|_, s| s.tat > now);
        let mut removed = before - map.entries.len();
        if removed == 0 && !map.entries.is_empty() {
            let n = if own {
                (map.entries.len() / EVICT_SHARE).max(1)
            } else {
                1
            };
            let mut tats: Vec<u64> = map.entries.values().map(|s| s.tat).collect();
            let (lower, &mut cut, _) = tats.select_nth_unstable(n - 1);
            // Exactly `n` go: every key below the cut, then keys at the cut
            // (ties) until `n` are gone.
            let below = lower.iter().filter(|&&t| t < cut).count();
            let mut at_cut = n - below;
            map.entries.retain(|_, s| {
                if s.tat < cut {
                    return false;
                }
                if s.tat == cut && at_cut > 0 {
                    at_cut -= 1;
                    return false;
                }
                true
            });
            removed = n;
            self.pool.evicted.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.forget(removed);
        removed > 0
    }

    /// Removes the idle entries of one shard; returns how many went.
    fn sweep_shard(&self, map: &mut ShardMap, now: u64) -> usize {
        let before = map.entries.len();
        map.entries.retain(|_, s| s.tat > now);
        let removed = before - map.entries.len();
        self.forget(removed);
        removed
    }

    /// Gives `n` removed keys back to this partition's and the pool's counts.
    fn forget(&self, n: usize) {
        if n > 0 {
            self.entries.fetch_sub(n, Ordering::Relaxed);
            self.pool.release(n);
        }
    }
}

/// A shard full of live keys evicts `1 / EVICT_SHARE` of them at once (see
/// [`Inner::make_room`]).
const EVICT_SHARE: usize = 8;

/// Locks a shard, ignoring poison: every write is a single whole-`State`
/// store, so a panic elsewhere cannot leave a shard half-updated.
fn lock(shard: &Shard) -> MutexGuard<'_, ShardMap> {
    shard.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`Limiter::check_many`] when check `i` is alone in the shard of
/// `guards[guard_of[i]]` and every shard has room: each check's map entry is
/// taken once and read, then written through (or filled) at commit.
fn decide_in_place<const N: usize>(
    inner: &Inner,
    guards: &mut [Option<MutexGuard<'_, ShardMap>>; N],
    guard_of: &[usize],
    checks: &[BucketCheck],
    cost: u32,
    dry_run: bool,
    now: u64,
) -> Decision {
    let n = checks.len();
    // The guards in the checks' order: `guard_of` is a permutation here.
    let mut maps: [Option<&mut ShardMap>; N] = std::array::from_fn(|_| None);
    for (g, guard) in guards.iter_mut().enumerate().take(n) {
        if let Some(i) = guard_of.iter().position(|&gi| gi == g) {
            maps[i] = guard.as_deref_mut();
        }
    }
    let mut slots: [Option<Entry<'_, BucketKey, State>>; N] = std::array::from_fn(|_| None);
    for ((slot, map), c) in slots.iter_mut().zip(maps).zip(checks) {
        *slot = map.map(|m| m.entries.entry(c.key));
    }
    let stored = |slot: &Option<Entry<'_, BucketKey, State>>| match slot {
        Some(Entry::Occupied(o)) => Some(*o.get()),
        _ => None,
    };

    let mut decision = Decision::new(n);
    let mut pending: [Option<State>; N] = [None; N];
    for (i, c) in checks.iter().enumerate() {
        let (outcome, next) = gcra::evaluate(stored(&slots[i]), c.rule, cost, now);
        decision.record(i, outcome);
        pending[i] = next;
    }
    if !decision.allowed {
        for (i, c) in checks.iter().enumerate() {
            decision.describe_as_is(i, stored(&slots[i]), c.rule, now);
        }
        return decision;
    }
    if dry_run {
        return decision;
    }
    for (slot, next) in slots.into_iter().zip(pending) {
        match (slot, next) {
            (Some(Entry::Occupied(mut o)), Some(next)) => *o.get_mut() = next,
            (Some(Entry::Vacant(v)), Some(next)) => {
                v.insert(next);
                inner.count_inserted();
            }
            _ => {}
        }
    }
    decision
}

/// Removes adjacent duplicates in place; returns the new length.
fn dedup_sorted(xs: &mut [usize]) -> usize {
    let mut len = 0;
    for i in 0..xs.len() {
        if len == 0 || xs[len - 1] != xs[i] {
            xs[len] = xs[i];
            len += 1;
        }
    }
    len
}

#[cfg(test)]
mod fairness_tests;
#[cfg(test)]
mod tests;
