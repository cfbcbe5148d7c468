//! The session cache's map behind one trait: `Mutex<HashMap>` (the naive
//! baseline), `dashmap` (sharded locks), `moka::sync::Cache` (bounded,
//! LRU-ish eviction, per-entry expiry timers: the engine's first choice) and
//! `quick_cache::sync::Cache` (bounded, CLOCK-PRO eviction, no timers: what
//! the engine's `SessionCache` uses now, re-checking expiry on read).
//!
//! The engine needs a capacity bound, which the plain maps lack; the bench
//! says what each bounded map costs per lookup compared with them,
//! single-threaded and with every core reading. The engine's own cache (its
//! compact `CachedSession` values and inline keys) is measured next to them
//! in `benches/structures.rs` (`session_cache_100k`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use moka::sync::Cache;
use moka::Expiry;
use qyzar_engine::sessions::SessionCache;
use qyzar_store::EmbeddedStore;

/// A concurrent map from session id to a shared session.
pub trait SessionMap<V>: Send + Sync {
    /// The label in bench output.
    fn name(&self) -> &'static str;
    /// The value under `key`, cloned out as an `Arc` (one atomic increment).
    fn get(&self, key: &str) -> Option<Arc<V>>;
    /// Stores `value` under `key`, replacing any previous value.
    fn insert(&self, key: Box<str>, value: Arc<V>);
}

/// One lock around a std `HashMap`: the simplest thing that is correct.
pub struct MutexMap<V>(Mutex<HashMap<Box<str>, Arc<V>>>);

impl<V> MutexMap<V> {
    /// An empty map with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Mutex::new(HashMap::with_capacity(capacity)))
    }
}

impl<V: Send + Sync> SessionMap<V> for MutexMap<V> {
    fn name(&self) -> &'static str {
        "mutex_hashmap"
    }
    fn get(&self, key: &str) -> Option<Arc<V>> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key).cloned()
    }
    fn insert(&self, key: Box<str>, value: Arc<V>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(key, value);
    }
}

/// `dashmap`: a read-write lock per shard.
pub struct Dash<V>(DashMap<Box<str>, Arc<V>>);

impl<V> Dash<V> {
    /// An empty map with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(DashMap::with_capacity(capacity))
    }
}

impl<V: Send + Sync> SessionMap<V> for Dash<V> {
    fn name(&self) -> &'static str {
        "dashmap"
    }
    fn get(&self, key: &str) -> Option<Arc<V>> {
        self.0.get(key).map(|r| Arc::clone(r.value()))
    }
    fn insert(&self, key: Box<str>, value: Arc<V>) {
        self.0.insert(key, value);
    }
}

/// `moka::sync::Cache` built as the engine builds it: bounded at a capacity
/// and with a per-entry expiry (the engine's follows each session's
/// `expires_at`; a fixed hour here, which costs moka the same timer work).
pub struct Moka<V>(Cache<Box<str>, Arc<V>>);

/// Every entry lives an hour: longer than any bench, so nothing expires
/// while measured, but moka still keeps its per-entry timers.
struct AnHour;

impl<V> Expiry<Box<str>, Arc<V>> for AnHour {
    fn expire_after_create(&self, _: &Box<str>, _: &Arc<V>, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(3600))
    }
}

impl<V: Send + Sync + 'static> Moka<V> {
    /// An empty cache that evicts beyond `capacity` entries.
    pub fn with_capacity(capacity: u64) -> Self {
        Self(
            Cache::builder()
                .max_capacity(capacity)
                .expire_after(AnHour)
                .build(),
        )
    }
}

impl<V: Send + Sync + 'static> SessionMap<V> for Moka<V> {
    fn name(&self) -> &'static str {
        "moka"
    }
    fn get(&self, key: &str) -> Option<Arc<V>> {
        self.0.get(key)
    }
    fn insert(&self, key: Box<str>, value: Arc<V>) {
        self.0.insert(key, value);
    }
}

/// `quick_cache::sync::Cache`: bounded by entry count, sharded, reads under
/// a shared lock with a reference bit instead of an access-order list.
pub struct Quick<V>(quick_cache::sync::Cache<Box<str>, Arc<V>>);

impl<V> Quick<V> {
    /// An empty cache that evicts beyond `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(quick_cache::sync::Cache::new(capacity))
    }
}

impl<V: Send + Sync> SessionMap<V> for Quick<V> {
    fn name(&self) -> &'static str {
        "quick_cache"
    }
    fn get(&self, key: &str) -> Option<Arc<V>> {
        self.0.get(key)
    }
    fn insert(&self, key: Box<str>, value: Arc<V>) {
        self.0.insert(key, value);
    }
}

/// The four implementations, each sized for `n` entries (the bounded ones
/// with room to spare, so the bench measures lookups and not evictions).
pub fn all<V: Send + Sync + 'static>(n: usize) -> Vec<Box<dyn SessionMap<V>>> {
    vec![
        Box::new(MutexMap::with_capacity(n)),
        Box::new(Dash::with_capacity(n)),
        Box::new(Moka::with_capacity(2 * n as u64)),
        Box::new(Quick::with_capacity(2 * n)),
    ]
}

/// The engine's `SessionCache` over an embedded store in a temporary
/// directory (removed on drop). Lookups through [`SessionCache::cached`]
/// never reach the store.
pub struct EngineCache {
    cache: SessionCache,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for EngineCache {
    type Target = SessionCache;
    fn deref(&self) -> &SessionCache {
        &self.cache
    }
}

impl EngineCache {
    /// [`SessionCache::cached`] for the fixture project, which every
    /// [`crate::fixtures::session`] belongs to.
    pub fn cached(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Option<Arc<qyzar_engine::sessions::CachedSession>> {
        self.cache.cached(crate::fixtures::AUDIENCE, id, now_ms)
    }
}

/// An empty engine session cache with room for `2 * n` sessions of one
/// project (about 400 bytes each), like the bounded maps of [`all`].
pub fn engine_cache(n: usize) -> EngineCache {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(dir.path().join("engine.redb")).expect("embedded store");
    let bytes = 2 * n as u64 * 400;
    let budget = qyzar_engine::budget::Budget {
        total_bytes: bytes,
        project_bytes: bytes,
    };
    EngineCache {
        cache: SessionCache::new(Arc::new(store), budget, budget),
        _dir: dir,
    }
}

/// `n` distinct ids shaped like the engine's session ids (`ses_` and 22
/// base64url characters), from a deterministic sequence so every run looks
/// up the same keys.
pub fn session_ids(n: usize, seed: u64) -> Vec<Box<str>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = crate::fixtures::SplitMix::new(seed);
    (0..n)
        .map(|_| {
            let mut id = String::with_capacity(26);
            id.push_str("ses_");
            let (mut a, mut b) = (rng.next_u64(), rng.next_u64());
            for i in 0..22 {
                let bits = if i < 11 { &mut a } else { &mut b };
                id.push(char::from(ALPHABET[(*bits & 63) as usize]));
                *bits >>= 6;
            }
            id.into_boxed_str()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_finds_what_was_inserted_and_nothing_else() {
        let ids = session_ids(1000, 1);
        let absent = session_ids(100, 2);
        for map in all::<u64>(ids.len()) {
            for (i, id) in ids.iter().enumerate() {
                map.insert(id.clone(), Arc::new(i as u64));
            }
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(map.get(id).as_deref(), Some(&(i as u64)), "{}", map.name());
            }
            for id in &absent {
                assert!(map.get(id).is_none(), "{}", map.name());
            }
            map.insert(ids[0].clone(), Arc::new(u64::MAX));
            assert_eq!(
                map.get(&ids[0]).as_deref(),
                Some(&u64::MAX),
                "{}",
                map.name()
            );
        }
    }

    #[test]
    fn the_engine_cache_finds_what_the_maps_find() {
        let ids = session_ids(1000, 1);
        let absent = session_ids(100, 2);
        let cache = engine_cache(ids.len());
        for id in &ids {
            cache.cache(crate::fixtures::session(id));
        }
        let now = qyzar_engine::sessions::now_ms();
        for id in &ids {
            let s = cache.cached(id, now).expect("cached");
            assert_eq!(s.to_session(), crate::fixtures::session(id));
        }
        for id in &absent {
            assert!(cache.cached(id, now).is_none());
        }
    }

    #[test]
    fn session_ids_are_distinct_and_id_shaped() {
        let ids = session_ids(10_000, 3);
        let set: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
        assert!(ids
            .iter()
            .all(|id| qyzar_shared::ids::SessionId::parse(id).is_ok()));
    }
}
