//! Anti-ATO profiles in memory, write-through over the store.
//!
//! `ato-login-attempt` decides from one [`AtoProfile`] per (project,
//! identifier) (see [`qyzar_store::profile`] for what it holds and
//! why it merges). This cache keeps them in memory so the hot path reads no
//! store at all once an identifier is warm:
//!
//! - **Bounded**: a [`ProjectCache`] by bytes with a share per project
//!   (`QYZAR_ENGINE_PROFILE_CACHE_MIB`, default 256/32, about 530 bytes a
//!   typical profile, so some 60 000 per project), so one tenant's 10 million identifiers evict only
//!   its own profiles. Only authenticated calls reach it.
//! - **Write-through**: [`Profiles::record`] updates the cached profile and
//!   returns the [`ProfileUpdate`] the caller writes durably before it
//!   answers. A write that fails drops the cached profile
//!   ([`Profiles::forget`]), so the next attempt reloads what the store has.
//! - **One loader**: concurrent misses on one identifier wait for one load
//!   ([`ProjectCache::get_or_guard`]).
//! - **Lazy build**: an identifier without a profile (its attempts predate
//!   profiles) is built from its logged attempts and the trust its devices
//!   carry, then written whole with the next attempt, so nothing recorded
//!   before is lost.
//! - **Fresh across engines**: with a store other engines also write (CQL),
//!   a profile older than `refresh` is joined with the store's on its next
//!   use; the join is commutative, so nothing this engine wrote is lost.
//!   With the embedded store this engine is the only writer and never
//!   re-reads.
//!
//! Updates to one profile are serialised by a striped lock held only for
//! the in-memory decide-and-update (no `.await` under it); the durable
//! writes of concurrent attempts then share the store's group commit.

use std::sync::{Arc, Mutex, MutexGuard};

use quick_cache::Weighter;
use qyzar_shared::ids::{DeviceId, ProjectId};
use qyzar_store::profile::{AtoProfile, AttemptFacts, ProfileUpdate};
use qyzar_store::{DataStore, LoginAttempt, StoreError, MAX_LIST_LIMIT};

use crate::budget::{Budget, ProjectCache};

/// Lock stripes: enough that unrelated identifiers rarely share one.
const STRIPES: usize = 256;

/// A profile as cached: immutable, replaced whole by each update (so its
/// weight is exact for the cache's byte accounting).
#[derive(Debug, Clone)]
pub struct CachedProfile {
    /// The profile.
    pub profile: AtoProfile,
    /// When it was last joined with the store's, unix ms.
    pub loaded_at: i64,
    /// Built from attempt rows and not yet written: the next write sends
    /// every cell.
    pub unsaved: bool,
}

/// Weighs a cached profile as the memory it holds: the identifier's text,
/// the `Arc`'s allocation (its two counters and the [`CachedProfile`],
/// which holds the profile's struct), what the profile points to, and a
/// slot's overhead. The profile's struct is counted once, inside the
/// `CachedProfile`.
#[derive(Clone, Copy)]
pub struct ProfileWeight;

impl Weighter<Box<str>, Arc<CachedProfile>> for ProfileWeight {
    fn weight(&self, key: &Box<str>, v: &Arc<CachedProfile>) -> u64 {
        profile_weight(key, v) as u64
    }
}

/// Slot overhead of one cache entry: the key's and value's pointers, the
/// cache's own bookkeeping.
const SLOT_BYTES: usize = 64;

fn profile_weight(key: &str, v: &CachedProfile) -> usize {
    key.len()
        + 2 * std::mem::size_of::<usize>()
        + std::mem::size_of::<CachedProfile>()
        + v.profile.heap_bytes()
        + SLOT_BYTES
}

/// The cache and what it needs to load and count.
pub struct Profiles {
    cache: ProjectCache<Box<str>, Arc<CachedProfile>, ProfileWeight>,
    stripes: Vec<Mutex<()>>,
    /// Picks an identifier's stripe: one hasher for the cache's life (a
    /// fresh `default()` may be seeded anew, which would put one identifier
    /// on different stripes and lock nothing).
    stripe_hasher: quick_cache::DefaultHashBuilder,
    /// This process's failure-counter cell ([`qyzar_store::profile::new_writer_id`]).
    writer: u64,
    /// How stale a profile may be before it is joined with the store's;
    /// `None` when this engine is the store's only writer.
    refresh_ms: Option<i64>,
}

/// One identifier's profile, loaded and locked for one attempt.
pub struct Held<'a> {
    profiles: &'a Profiles,
    _lock: MutexGuard<'a, ()>,
    project: &'a ProjectId,
    identifier: &'a str,
    current: Arc<CachedProfile>,
}

impl Profiles {
    /// An empty cache within `budget`.
    pub fn new(budget: Budget, refresh_ms: Option<i64>) -> Self {
        Self {
            cache: ProjectCache::new(budget, ProfileWeight, 512),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            stripe_hasher: quick_cache::DefaultHashBuilder::default(),
            writer: qyzar_store::profile::new_writer_id(),
            refresh_ms,
        }
    }

    /// The cache's counters, for `/metrics`.
    pub fn counters(&self) -> &Arc<crate::budget::CacheCounters> {
        self.cache.counters()
    }

    /// The profile of (`project`, `identifier`), from memory or loaded
    /// (see the module docs); `raw` is the identifier as sent, whose
    /// pre-normalisation attempt rows a lazy build also reads. Whether it
    /// came from memory is the second value.
    pub async fn get(
        &self,
        store: &dyn DataStore,
        project: &ProjectId,
        identifier: &str,
        raw: &str,
        window_ms: i64,
        now: i64,
    ) -> Result<(Arc<CachedProfile>, bool), StoreError> {
        let shard = self.cache.shard(project.as_str());
        let key: Box<str> = identifier.into();
        let cached = match self.cache.get_or_guard(&shard, &key).await {
            Ok(v) => v,
            Err(guard) => {
                self.cache.counters().miss();
                let loaded = Arc::new(
                    self.load(store, project, identifier, raw, window_ms, now)
                        .await?,
                );
                guard.insert(Arc::clone(&loaded));
                return Ok((loaded, false));
            }
        };
        self.cache.counters().hit();
        match self.refresh_ms {
            Some(ms) if now.saturating_sub(cached.loaded_at) >= ms => {
                // Claim the refresh first so concurrent attempts do not all
                // read; then join the store's profile into the newest cached.
                self.replace(project, &key, |c| c.loaded_at = now);
                if let Some(stored) = store.ato_profile(project, identifier).await? {
                    let joined = self.replace(project, &key, |c| {
                        c.profile.join(&stored);
                        c.profile.bound(now);
                    });
                    return Ok((joined.unwrap_or(cached), true));
                }
                Ok((cached, true))
            }
            _ => Ok((cached, true)),
        }
    }

    /// Locks the identifier's profile for one decide-and-update; the
    /// profile is the newest cached (or `fallback` when it was evicted
    /// meanwhile).
    pub fn hold<'a>(
        &'a self,
        project: &'a ProjectId,
        identifier: &'a str,
        fallback: Arc<CachedProfile>,
    ) -> Held<'a> {
        let lock = self.stripe(project, identifier);
        let current = self
            .cache
            .peek(project.as_str(), identifier)
            .unwrap_or(fallback);
        Held {
            profiles: self,
            _lock: lock,
            project,
            identifier,
            current,
        }
    }

    /// Drops the cached profile (after a failed write), so the next use
    /// reloads the store's.
    pub fn forget(&self, project: &ProjectId, identifier: &str) {
        let _lock = self.stripe(project, identifier);
        self.cache.remove(project.as_str(), identifier);
    }

    fn stripe(&self, project: &ProjectId, identifier: &str) -> MutexGuard<'_, ()> {
        use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
        let mut h = self.stripe_hasher.build_hasher();
        project.as_str().hash(&mut h);
        identifier.hash(&mut h);
        let i = (h.finish() as usize) % self.stripes.len();
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to a copy of the cached profile and caches the copy,
    /// under the identifier's stripe; `None` when it is no longer cached.
    fn replace(
        &self,
        project: &ProjectId,
        key: &str,
        f: impl FnOnce(&mut CachedProfile),
    ) -> Option<Arc<CachedProfile>> {
        let _lock = self.stripe(project, key);
        let current = self.cache.peek(project.as_str(), key)?;
        let mut next = (*current).clone();
        f(&mut next);
        let next = Arc::new(next);
        self.cache
            .insert(project.as_str(), key.into(), Arc::clone(&next));
        Some(next)
    }

    /// Reads the stored profile, or builds one from attempt rows.
    async fn load(
        &self,
        store: &dyn DataStore,
        project: &ProjectId,
        identifier: &str,
        raw: &str,
        window_ms: i64,
        now: i64,
    ) -> Result<CachedProfile, StoreError> {
        if let Some(mut profile) = store.ato_profile(project, identifier).await? {
            profile.bound(now);
            return Ok(CachedProfile {
                profile,
                loaded_at: now,
                unsaved: false,
            });
        }
        let since = now.saturating_sub(qyzar_store::LOGIN_ATTEMPT_RETENTION_MS);
        let mut rows: Vec<LoginAttempt> = store
            .unprofiled_login_attempts(project, identifier, since, MAX_LIST_LIMIT)
            .await?;
        if raw != identifier {
            rows.extend(
                store
                    .unprofiled_login_attempts(project, raw, since, MAX_LIST_LIMIT)
                    .await?,
            );
        }
        let mut profile = AtoProfile::from_attempts(&rows, self.writer, window_ms);
        let devices: Vec<DeviceId> = profile
            .devices
            .iter()
            .map(|d| d.device_id.clone())
            .collect();
        for d in devices {
            let trusted = store.trusted_identifiers(project, &d).await?;
            if trusted.iter().any(|t| t == identifier || t == raw) {
                profile.trust(&d, now);
            }
        }
        profile.bound(now);
        let unsaved = profile != AtoProfile::default();
        Ok(CachedProfile {
            profile,
            loaded_at: now,
            unsaved,
        })
    }
}

impl Held<'_> {
    /// The profile as it stands, for the decision.
    pub fn profile(&self) -> &AtoProfile {
        &self.current.profile
    }

    /// Joins `facts` into the cached profile and returns what the store
    /// must write (every cell when the profile was built lazily).
    pub fn record(self, facts: &AttemptFacts<'_>, window_ms: i64) -> ProfileUpdate {
        let writer = self.profiles.writer;
        self.update(|p| p.record(facts, writer, window_ms))
    }

    /// Marks `device` trusted and returns what the store must write.
    pub fn trust(self, device: &DeviceId, now: i64) -> ProfileUpdate {
        self.update(|p| p.trust(device, now))
    }

    /// Applies `f` to the cached profile in place when this is its only
    /// holder (no copy of the profile, the common case: on one worker an
    /// attempt runs from its lookup to here without yielding), else to a
    /// copy that replaces it; to a copy of the held one, inserted again,
    /// when it was evicted meanwhile.
    fn update(self, f: impl FnOnce(&mut AtoProfile) -> ProfileUpdate) -> ProfileUpdate {
        let Held {
            profiles,
            _lock,
            project,
            identifier,
            current,
        } = self;
        let apply = |c: &mut CachedProfile| {
            let mut update = f(&mut c.profile);
            if c.unsaved {
                update.cells = c.profile.clone();
                c.unsaved = false;
            }
            update
        };
        let mut mine = Some(current);
        let mut apply = Some(apply);
        let key: Box<str> = identifier.into();
        let done = profiles.cache.update(project.as_str(), &key, |cached| {
            let held = mine.take().expect("taken once");
            // The one decided from (under the stripe, only an eviction and
            // a reload could have put another there).
            if !Arc::ptr_eq(cached, &held) {
                *cached = Arc::clone(&held);
            }
            drop(held);
            (apply.take().expect("called once"))(Arc::make_mut(cached))
        });
        match done {
            Some(update) => update,
            None => {
                let held = mine.take().expect("not taken: the entry was absent");
                let mut next = (*held).clone();
                let update = (apply.take().expect("not called"))(&mut next);
                profiles.cache.insert(project.as_str(), key, Arc::new(next));
                update
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qyzar_store::profile::AttemptFacts;

    /// An identifier after a few logins from one IP, no device: the
    /// 50 000-identifier benchmark's profile, and a common one.
    fn typical() -> CachedProfile {
        let mut profile = AtoProfile::default();
        for (k, success) in [true, false, true].into_iter().enumerate() {
            let attempt = attempt(
                "user123@example.com",
                1_700_000_000_000 + k as i64,
                success,
                None,
            );
            profile.record(
                &AttemptFacts {
                    attempt: &attempt,
                    location: None,
                },
                7,
                900_000,
            );
        }
        CachedProfile {
            profile,
            loaded_at: 0,
            unsaved: false,
        }
    }

    /// The struct is counted once: what a profile adds over an empty one is
    /// exactly what it points to.
    #[test]
    fn the_profile_struct_is_weighed_once() {
        let key = "user123@example.com";
        let empty = CachedProfile {
            profile: AtoProfile::default(),
            loaded_at: 0,
            unsaved: false,
        };
        let full = typical();
        assert_eq!(
            profile_weight(key, &full) - profile_weight(key, &empty),
            full.profile.heap_bytes()
        );
        assert_eq!(
            profile_weight(key, &empty),
            key.len() + 16 + std::mem::size_of::<CachedProfile>() + SLOT_BYTES
        );
    }

    /// The docs' "about 530 bytes a typical profile" holds, so the default
    /// 32 MiB share keeps some 60 000 of them (it kept under 40 000 when
    /// the struct was weighed twice).
    #[test]
    fn a_typical_profile_weighs_about_530_bytes() {
        let w = profile_weight("user123@example.com", &typical());
        assert!((450..=620).contains(&w), "weighs {w}");
    }

    /// An attempt from one IP without a device or session.
    fn attempt(identifier: &str, at: i64, success: bool, region: Option<&str>) -> LoginAttempt {
        LoginAttempt {
            project_id: ProjectId::generate(),
            identifier: identifier.into(),
            at,
            attempt_id: LoginAttempt::new_id(),
            success,
            ip: Some("198.51.100.23".into()),
            device_id: None,
            session_id: None,
            region: region.map(str::to_owned),
            platform: None,
            browser: None,
        }
    }

    fn profiles() -> Profiles {
        Profiles::new(
            Budget {
                total_bytes: 1 << 20,
                project_bytes: 1 << 20,
            },
            None,
        )
    }

    /// An attempt changes the cached profile in place when nobody else
    /// holds it, makes a copy when someone does (whose view then stays as
    /// it was), and puts a copy back when it was evicted meanwhile; the
    /// cache's byte count is the profile's weight every time.
    #[test]
    fn an_attempt_updates_in_place_unless_the_profile_is_shared() {
        let p = profiles();
        let project = ProjectId::generate();
        let key = "user123@example.com";
        let record = |at: i64| {
            let fallback = p.cache.peek(project.as_str(), key).expect("cached");
            let a = attempt(key, at, true, Some("DE"));
            p.hold(&project, key, fallback).record(
                &AttemptFacts {
                    attempt: &a,
                    location: None,
                },
                900_000,
            );
        };
        p.cache
            .insert(project.as_str(), key.into(), Arc::new(typical()));
        let weighs = || {
            let c = p.cache.peek(project.as_str(), key).expect("cached");
            assert_eq!(
                p.cache.project_bytes(project.as_str()),
                profile_weight(key, &c) as u64
            );
        };
        let before = Arc::as_ptr(&p.cache.peek(project.as_str(), key).unwrap());
        record(1_700_000_100_000);
        let after = p.cache.peek(project.as_str(), key).unwrap();
        assert_eq!(Arc::as_ptr(&after), before, "changed in place");
        assert_eq!(
            after.profile.last_success.as_ref().unwrap().at,
            1_700_000_100_000
        );
        drop(after);
        weighs();

        let reader = p.cache.peek(project.as_str(), key).unwrap();
        record(1_700_000_200_000);
        let after = p.cache.peek(project.as_str(), key).unwrap();
        assert!(!Arc::ptr_eq(&after, &reader), "copied while shared");
        assert_eq!(
            reader.profile.last_success.as_ref().unwrap().at,
            1_700_000_100_000
        );
        assert_eq!(
            after.profile.last_success.as_ref().unwrap().at,
            1_700_000_200_000
        );
        drop(after);
        weighs();

        let held = p.hold(&project, key, Arc::clone(&reader));
        p.cache.remove(project.as_str(), key);
        let a = attempt(key, 1_700_000_300_000, true, Some("DE"));
        held.record(
            &AttemptFacts {
                attempt: &a,
                location: None,
            },
            900_000,
        );
        let back = p.cache.peek(project.as_str(), key).expect("inserted again");
        assert_eq!(
            back.profile.last_success.as_ref().unwrap().at,
            1_700_000_300_000
        );
        drop(back);
        weighs();
    }
}
