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
//! # Memory
//! An entry whose TAT has passed is a full bucket, exactly like an absent one:
//! [`Limiter::sweep`] removes those, and the engine calls it periodically (off
//! the request path: it visits every shard). The map is bounded by
//! [`LimiterConfig::max_entries`], spread evenly over the shards (the keyed
//! hash spreads keys evenly and an attacker cannot aim at one shard). When a
//! new key finds its shard full, that shard is swept on the spot (at most once
//! a second, so a flood cannot turn every call into a scan); if still full,
//! the call is decided as for a fresh bucket but the new key is **not
//! recorded** — fail open — and [`LimiterStats::untracked`] counts it for the
//! metrics. Why open: a full map means more keys live within their windows
//! than the engine was sized for, usually a flood of fresh keys; failing
//! closed would turn that memory pressure into denying every new user of
//! every project (an outage of the customers' sign-ins), while keys already
//! tracked (the flooding IPs among them) stay limited. The metric is the
//! signal to raise the cap.
//!
//! # Time
//! `now_nanos` is a monotonic clock ([`Limiter::now_nanos`] gives one); the
//! answer carries durations (`retry_after_ms`, `reset_after_ms`), and the route
//! turns `reset_after_ms` into the wall-clock `resetAt`. A clock that went
//! backwards only makes buckets look emptier, never fuller.

mod gcra;
mod key;

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub use gcra::{BucketOutcome, Rule};
pub use key::{BucketKey, KeyHasher, KeyTooLong, MAX_KEY_LEN};

use gcra::State;
use key::KeyIdentityHasher;

/// Most buckets one call may name: the `ip` bucket plus at most 16 metadata
/// buckets. Outcomes live in a fixed array of this size, so a decision never
/// allocates; settings validation must keep metadata rules within 16.
pub const MAX_BUCKETS: usize = 17;

/// Least time between two on-the-spot sweeps of one full shard: bounds the
/// scanning a flood of fresh keys can cause on the request path.
const FULL_SHARD_SWEEP_BACKOFF_NANOS: u64 = 1_000_000_000;

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

/// Sizing of a [`Limiter`].
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

/// What the metrics endpoint reports about a [`Limiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterStats {
    /// Keys currently held (expired ones included until the next sweep).
    pub entries: usize,
    /// New keys not recorded because their shard was full (fail open) since
    /// the limiter started. Non-zero means `max_entries` is too small.
    pub untracked: u64,
}

/// The rate limiter: a cheap-to-clone handle on shared state.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Limiter {
    /// Sizes only: the entries are many and say nothing without the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("shards", &self.inner.shards.len())
            .field("shard_cap", &self.inner.shard_cap)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// Power-of-two many shards, indexed by `shard_bits & mask`.
    shards: Box<[Shard]>,
    /// `shards.len() - 1`: a power of two minus one, so indexing is a mask.
    mask: u64,
    /// Entries one shard may hold before new keys go untracked.
    shard_cap: usize,
    /// The secret under which this limiter's bucket keys are hashed.
    hasher: KeyHasher,
    /// Origin of [`Limiter::now_nanos`].
    origin: Instant,
    /// New keys dropped at the cap (fail open), for [`LimiterStats`].
    untracked: AtomicU64,
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
    /// When this shard was last swept because it was full.
    full_sweep_at: Option<u64>,
}

impl Limiter {
    /// An empty limiter with a fresh random key for [`Limiter::bucket_key`].
    pub fn new(config: LimiterConfig) -> Self {
        let shards = config.shards.clamp(1, 1 << 16).next_power_of_two();
        Self {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Shard::default()).collect(),
                mask: shards as u64 - 1,
                shard_cap: config.max_entries.div_ceil(shards).max(1),
                hasher: KeyHasher::random(),
                origin: Instant::now(),
                untracked: AtomicU64::new(0),
            }),
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

    /// Nanoseconds since this limiter was made, on the monotonic clock: the
    /// `now_nanos` to pass to [`Limiter::check`] and [`Limiter::sweep`].
    pub fn now_nanos(&self) -> u64 {
        u64::try_from(self.inner.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Decides one call over all its buckets, all or nothing, and consumes
    /// `cost` cells from each unless the call is denied or `dry_run`.
    ///
    /// A key named twice in one call is charged twice (each check sees the
    /// previous one's consumption).
    pub fn check(
        &self,
        now_nanos: u64,
        checks: &[BucketCheck],
        cost: u32,
        dry_run: bool,
    ) -> Result<Decision, TooManyBuckets> {
        let n = checks.len();
        if n > MAX_BUCKETS {
            return Err(TooManyBuckets);
        }
        let inner = &*self.inner;

        // The distinct shards involved, ascending: the global lock order.
        let mut order = [0usize; MAX_BUCKETS];
        for (slot, c) in order.iter_mut().zip(checks) {
            *slot = inner.shard_index(c.key);
        }
        let order = &mut order[..n];
        order.sort_unstable();
        let distinct = dedup_sorted(order);
        let order = &order[..distinct];
        let mut guards: [Option<MutexGuard<'_, ShardMap>>; MAX_BUCKETS] = Default::default();
        for (guard, &shard) in guards.iter_mut().zip(order) {
            *guard = Some(lock(&inner.shards[shard]));
        }
        let guard_of = |key: BucketKey| order.binary_search(&inner.shard_index(key)).unwrap_or(0);

        // Decide every bucket without writing anything.
        let mut decision = Decision {
            allowed: true,
            denied_by: None,
            len: n,
            outcomes: [BucketOutcome::EMPTY; MAX_BUCKETS],
        };
        let mut in_map: [Option<State>; MAX_BUCKETS] = [None; MAX_BUCKETS];
        let mut pending: [Option<State>; MAX_BUCKETS] = [None; MAX_BUCKETS];
        for (i, c) in checks.iter().enumerate() {
            in_map[i] = guards[guard_of(c.key)]
                .as_ref()
                .and_then(|map| map.entries.get(&c.key).copied());
            // A key already named earlier in this call starts from what that
            // check would leave behind.
            let earlier = (0..i)
                .rev()
                .find(|&j| checks[j].key == c.key)
                .and_then(|j| pending[j]);
            let (outcome, next) = gcra::evaluate(earlier.or(in_map[i]), c.rule, cost, now_nanos);
            if !outcome.allowed && decision.allowed {
                decision.allowed = false;
                decision.denied_by = Some(i);
            }
            decision.outcomes[i] = outcome;
            pending[i] = next;
        }
        if !decision.allowed {
            // Nothing is consumed, so `remaining` and `reset_after_ms` describe
            // each bucket as it stands (an allowing bucket was evaluated after
            // consumption, a repeated key after the earlier check's).
            for (i, c) in checks.iter().enumerate() {
                let as_is = gcra::evaluate(in_map[i], c.rule, 0, now_nanos).0;
                let outcome = &mut decision.outcomes[i];
                outcome.remaining = as_is.remaining;
                outcome.reset_after_ms = as_is.reset_after_ms;
            }
            return Ok(decision);
        }
        if dry_run {
            return Ok(decision);
        }

        // Commit, still under the same locks.
        for (c, next) in checks.iter().zip(pending) {
            let Some(next) = next else { continue };
            if let Some(map) = guards[guard_of(c.key)].as_deref_mut() {
                inner.store(map, c.key, next, now_nanos);
            }
        }
        Ok(decision)
    }

    /// Removes every entry whose TAT is at or before `now_nanos` (a full
    /// bucket, same as absent) and returns how many went. Locks one shard at
    /// a time; run it periodically off the request path (it visits every
    /// entry), e.g. every few seconds from a blocking task.
    pub fn sweep(&self, now_nanos: u64) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| sweep_map(&mut lock(shard), now_nanos))
            .sum()
    }

    /// Current size and fail-open count, for metrics. Locks every shard in
    /// turn: call it from the metrics endpoint, not per request.
    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            entries: self
                .inner
                .shards
                .iter()
                .map(|shard| lock(shard).entries.len())
                .sum(),
            untracked: self.inner.untracked.load(Ordering::Relaxed),
        }
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

    /// Writes `state` for `key`; a new key finding its shard full triggers an
    /// on-the-spot sweep (rate-limited) and, failing that, goes untracked.
    fn store(&self, map: &mut ShardMap, key: BucketKey, state: State, now: u64) {
        if let Some(slot) = map.entries.get_mut(&key) {
            *slot = state;
            return;
        }
        if map.entries.len() >= self.shard_cap {
            let due = map
                .full_sweep_at
                .is_none_or(|at| now.saturating_sub(at) >= FULL_SHARD_SWEEP_BACKOFF_NANOS);
            if due {
                map.full_sweep_at = Some(now);
                sweep_map(map, now);
            }
            if map.entries.len() >= self.shard_cap {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        map.entries.insert(key, state);
    }
}

fn sweep_map(map: &mut ShardMap, now: u64) -> usize {
    let before = map.entries.len();
    map.entries.retain(|_, s| s.tat > now);
    before - map.entries.len()
}

/// Locks a shard, ignoring poison: every write is a single whole-`State`
/// store, so a panic elsewhere cannot leave a shard half-updated.
fn lock(shard: &Shard) -> MutexGuard<'_, ShardMap> {
    shard.0.lock().unwrap_or_else(PoisonError::into_inner)
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
mod tests;
