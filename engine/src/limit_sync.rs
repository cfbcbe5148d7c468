//! Rate limits that hold across engines, without a network call on the hot
//! path and without CQL counters or LWT.
//!
//! Every engine decides locally, exactly as alone ([`crate::limiter`]). In
//! addition, when several engines share a CQL store:
//!
//! - **Shared key ids**: every engine hashes a key under the same
//!   per-project secret ([`crate::limiter::KeyHasher::shared`]), so one key
//!   is one [`BucketKey`] everywhere.
//! - **Publish**: a call that leaves a key past [`HOT_SHARE`] of its limit
//!   marks the key hot here ([`LimitSync::record`]), counting the cells this
//!   engine consumed from it in the current one-minute slot. Once every
//!   [`SYNC_EVERY`], the hot keys that changed are written to the store as
//!   cumulative counts per (project, slot, key, engine) (idempotent upserts,
//!   two slots' TTL). Keys that stay cold cost nothing: at most
//!   `HOT_SHARE × limit` per engine goes unpublished.
//! - **Fold**: in the same pass, for each project with hot keys here or a
//!   decision since the last pass, every
//!   other engine's rows of the current and the previous slot are read and
//!   what they consumed since the last read is charged to the local bucket
//!   ([`crate::limiter::Limiter::charge`]): each engine's bucket then tracks
//!   the consumption of all of them, and drains at the rule's rate once, so
//!   together they let through what one engine would, plus what arrives
//!   within one sync interval.
//! - **Restart**: an engine's id is new per process, so a restarted engine
//!   reads its predecessor's rows as another engine's and charges them: it
//!   loses at most one interval of counts.
//!
//! Bounded: at most [`KEYS_PER_PROJECT`] hot keys per project and
//! [`MAX_KEYS`] in all are tracked, and at most [`MAX_SEEN`] other engines'
//! counts remembered (each read returns at most `MAX_LIMIT_USAGE_ROWS`);
//! past that a key is decided on this engine's own count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use qyzar_shared::ids::ProjectId;
use qyzar_store::{DataStore, LimitUsage, LIMIT_SLOT_MS};

use crate::limiter::{BucketKey, Limiters};

/// How often an engine publishes and folds.
pub const SYNC_EVERY: Duration = Duration::from_millis(500);
/// A key is published once this share of its limit is spent here.
pub const HOT_SHARE: u32 = 20; // 1/20 = 5 %
/// Hot keys tracked per project.
pub const KEYS_PER_PROJECT: usize = 10_000;
/// Hot keys tracked in all.
pub const MAX_KEYS: usize = 200_000;
/// Other engines' (project, slot, key, engine) counts remembered, to charge
/// only what is new. Past it a row not seen before is not charged (its
/// key is then decided on this engine's own count): the bound holds
/// whatever the store returns.
pub const MAX_SEEN: usize = 400_000;

/// One hot key's local consumption in a slot.
#[derive(Debug, Clone, Copy)]
struct Local {
    slot: i64,
    cells: i64,
    interval: u64,
    dirty: bool,
}

#[derive(Default)]
struct State {
    local: HashMap<ProjectId, HashMap<BucketKey, Local>>,
    keys: usize,
    /// What was last charged per (project, slot, key, other engine).
    seen: HashMap<(ProjectId, i64, [u8; 16], String), i64>,
}

/// This engine's side of cross-engine limits.
pub struct LimitSync {
    engine_id: String,
    state: Mutex<State>,
}

/// What one allowed call consumed from one bucket, as the limiter decided it.
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    /// Cells the call took.
    pub cost: u32,
    /// The bucket's rule: cells per window.
    pub limit: u32,
    /// Cells left after the call.
    pub remaining: u32,
    /// Nanoseconds a cell takes to come back (the rule's emission interval).
    pub interval: u64,
}

impl LimitSync {
    /// Sync state for the engine `engine_id`.
    pub fn new(engine_id: String) -> Self {
        Self {
            engine_id,
            state: Mutex::default(),
        }
    }

    /// Notes what one call just consumed from `key`, if the key is hot. A
    /// key becoming hot starts from what it has spent here.
    pub fn record(&self, project: &ProjectId, key: BucketKey, used: Consumed, now_ms: i64) {
        let Consumed {
            cost,
            limit,
            remaining,
            interval,
        } = used;
        let spent = limit.saturating_sub(remaining);
        if spent < (limit / HOT_SHARE).max(1) {
            return;
        }
        let slot = now_ms.div_euclid(LIMIT_SLOT_MS);
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let st = &mut *st;
        let keys = st.local.entry(project.clone()).or_default();
        let room = st.keys < MAX_KEYS && keys.len() < KEYS_PER_PROJECT;
        match keys.get_mut(&key) {
            Some(l) if l.slot == slot => {
                l.cells = l.cells.saturating_add(i64::from(cost));
                l.interval = interval;
                l.dirty = true;
            }
            Some(l) => {
                *l = Local {
                    slot,
                    cells: i64::from(cost),
                    interval,
                    dirty: true,
                };
            }
            None if room => {
                keys.insert(
                    key,
                    Local {
                        slot,
                        cells: i64::from(spent),
                        interval,
                        dirty: true,
                    },
                );
                st.keys += 1;
            }
            None => {}
        }
    }

    /// One publish-and-fold pass at `now_ms`. Returns the cells charged
    /// from other engines.
    pub async fn sync_once(
        &self,
        store: &dyn DataStore,
        limiters: &Limiters,
        now_ms: i64,
    ) -> Result<u64, qyzar_store::StoreError> {
        let slot = now_ms.div_euclid(LIMIT_SLOT_MS);
        // Publish what changed; forget keys of slots before the previous one.
        let (rows, projects) = {
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let st = &mut *st;
            let mut rows = Vec::new();
            let mut dropped = 0;
            for (project, keys) in st.local.iter_mut() {
                keys.retain(|_, l| {
                    let keep = l.slot >= slot - 1;
                    dropped += usize::from(!keep);
                    keep
                });
                for (key, l) in keys.iter_mut().filter(|(_, l)| l.dirty) {
                    l.dirty = false;
                    rows.push(LimitUsage {
                        project_id: project.clone(),
                        slot: l.slot,
                        key: key.to_bytes(),
                        engine_id: self.engine_id.clone(),
                        cells: l.cells,
                        interval_ns: i64::try_from(l.interval).unwrap_or(i64::MAX),
                    });
                }
            }
            st.keys -= dropped;
            st.local.retain(|_, keys| !keys.is_empty());
            st.seen.retain(|(_, s, _, _), _| *s >= slot - 1);
            let mut projects: Vec<ProjectId> = st.local.keys().cloned().collect();
            for p in limiters.take_touched() {
                if let Ok(p) = ProjectId::parse(&p) {
                    if !st.local.contains_key(&p) {
                        projects.push(p);
                    }
                }
            }
            (rows, projects)
        };
        if !rows.is_empty() {
            if let Err(e) = store.publish_limit_usage(&rows).await {
                // Published again at the next pass.
                self.mark_dirty(&rows);
                return Err(e);
            }
        }
        // Fold the other engines' consumption in.
        let mut charged = 0u64;
        for project in projects {
            let Some(limiter) = limiters.existing(project.as_str()) else {
                continue;
            };
            for s in [slot - 1, slot] {
                let rows = store.read_limit_usage(&project, s).await?;
                let now_nanos = limiter.now_nanos();
                let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                for r in rows.into_iter().filter(|r| r.engine_id != self.engine_id) {
                    let id = (project.clone(), s, r.key, r.engine_id);
                    if st.seen.len() >= MAX_SEEN && !st.seen.contains_key(&id) {
                        continue;
                    }
                    let seen = st.seen.entry(id).or_insert(0);
                    let delta = r.cells.saturating_sub(*seen);
                    if delta > 0 {
                        *seen = r.cells;
                        let cells = u64::try_from(delta).unwrap_or(0);
                        limiter.charge(
                            BucketKey::from_bytes(r.key),
                            cells,
                            u64::try_from(r.interval_ns).unwrap_or(1),
                            now_nanos,
                        );
                        charged += cells;
                    }
                }
            }
        }
        Ok(charged)
    }

    fn mark_dirty(&self, rows: &[LimitUsage]) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for r in rows {
            if let Some(l) = st
                .local
                .get_mut(&r.project_id)
                .and_then(|k| k.get_mut(&BucketKey::from_bytes(r.key)))
            {
                l.dirty = true;
            }
        }
    }
}

/// Runs [`LimitSync::sync_once`] every [`SYNC_EVERY`] until `shutdown`;
/// returns at once for an engine without cross-engine limits.
pub async fn sync_loop(
    engine: Arc<crate::state::Engine>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Some(sync) = engine.limit_sync.clone() else {
        return;
    };
    let (store, limiters) = (&engine.store, &engine.limiter);
    let mut ticks = qyzar_shared::periodic::Periodic::new(SYNC_EVERY, shutdown);
    while ticks.tick().await {
        if !store.ready() {
            continue;
        }
        if let Err(e) = sync
            .sync_once(&**store, limiters, qyzar_shared::time::now_ms())
            .await
        {
            tracing::warn!(error = %e, "rate-limit sync failed; retried at the next pass");
        }
    }
}
