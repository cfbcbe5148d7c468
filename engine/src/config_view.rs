//! The configuration the engine serves from: the newest pushed snapshot,
//! indexed, with each project's keys made ready to use.
//!
//! Swapping is one `ArcSwap` store; requests in flight keep the snapshot
//! they started with, and the hot path takes no lock. Versions only move
//! forward: an older or equal version is refused.
//!
//! With a [`SnapshotFile`] set ([`ConfigView::persist_to`]), every applied
//! snapshot is also written to disk, so a restart while admin is down
//! starts from the last configuration (see [`persist`]).

mod persist;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use qyzar_shared::crypto::{Ed25519Signer, Ed25519Verifier, Hs256Key, VerifyKeys};
use qyzar_shared::snapshot::{ProjectConfig, Snapshot, SnapshotDelta, SnapshotError};

pub use persist::{LoadError, SnapshotFile};

/// A project's keys, decoded once per swap instead of once per request.
pub struct ProjectKeys {
    /// Keys a client token may verify under (current and in-grace ones).
    pub verify: VerifyKeys,
    /// The HS256 key new tokens are signed with.
    pub hs256: Option<Hs256Key>,
    /// The Ed25519 key new tokens are signed with, for `tokenAlgorithm: EdDSA`.
    pub ed25519: Option<Ed25519Signer>,
    /// `GET /projects/client/jwks` body, pre-serialised.
    pub jwks: Bytes,
    /// Key the `sessionJwt` of `/connect` is signed with. Derived from the
    /// HS256 client-token key with its own HKDF salt, so a session JWT can
    /// never pass as a client token or the other way round.
    pub session_sign: Option<Hs256Key>,
    /// Keys a `sessionJwt` may verify under.
    pub session_verify: VerifyKeys,
}

/// HKDF salt separating session-JWT keys from client-token keys.
pub const SESSION_JWT_SALT: &[u8] = b"qyzar/session-jwt/v1";

fn session_key(client_key: &[u8; 32], project: &str) -> Option<Hs256Key> {
    let raw =
        qyzar_shared::crypto::hkdf_sha256(client_key, SESSION_JWT_SALT, project.as_bytes(), 32)
            .ok()?;
    let raw: [u8; 32] = raw.try_into().ok()?;
    Some(Hs256Key::from_raw(raw))
}

/// One snapshot, indexed by project id, with keys ready.
pub struct LiveConfig {
    snapshot: Snapshot,
    /// Looked up on every request of every route: foldhash (seeded per
    /// process) instead of SipHash, about 200 instructions a lookup fewer
    /// for a 20-byte id under callgrind. The keys are the served
    /// configuration's project ids, inserted from the admin's snapshot only;
    /// a caller's id is looked up, never inserted, so it cannot grow or
    /// crowd the map.
    by_id: HashMap<Box<str>, (usize, ProjectKeys), foldhash::fast::RandomState>,
    /// Every origin some project allows: a CORS preflight carries no
    /// project id, so it is answered against this set.
    origins: std::collections::HashSet<Box<str>>,
    /// The earliest moment an in-grace key stops being valid: past it the
    /// keys are rebuilt from the same snapshot so an expired key can no
    /// longer verify.
    rebuild_at_ms: i64,
}

impl LiveConfig {
    /// Indexes a snapshot and decodes its keys as of `now_ms`.
    pub fn build(snapshot: Snapshot, now_ms: i64) -> Self {
        let mut by_id =
            HashMap::with_capacity_and_hasher(snapshot.projects().len(), Default::default());
        let mut rebuild_at_ms = i64::MAX;
        let mut origins = std::collections::HashSet::new();
        for (i, p) in snapshot.projects().iter().enumerate() {
            origins.extend(p.settings.allowed_origins.iter().map(|o| o.as_str().into()));
            let (keys, next) = project_keys(p, now_ms);
            rebuild_at_ms = rebuild_at_ms.min(next);
            by_id.insert(p.project_id.as_str().into(), (i, keys));
        }
        Self {
            snapshot,
            by_id,
            origins,
            rebuild_at_ms,
        }
    }

    /// The project and its keys.
    pub fn project(&self, id: &str) -> Option<(&ProjectConfig, &ProjectKeys)> {
        let (i, keys) = self.by_id.get(id)?;
        Some((&self.snapshot.projects()[*i], keys))
    }

    /// Whether any project allows `origin` (for preflights).
    pub fn any_project_allows(&self, origin: &str) -> bool {
        self.origins.contains(origin)
    }

    /// The snapshot version.
    pub fn version(&self) -> u64 {
        self.snapshot.version()
    }

    /// The snapshot itself (for deltas).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

fn project_keys(p: &ProjectConfig, now_ms: i64) -> (ProjectKeys, i64) {
    let mut verify = VerifyKeys::new();
    let mut session_verify = VerifyKeys::new();
    let mut session_sign = None;
    let mut next = i64::MAX;
    let mut hs256 = None;
    for e in &p.hs256_keys {
        if !e.is_valid_at(now_ms) {
            continue;
        }
        if let Some(until) = e.valid_until_ms {
            next = next.min(until);
        }
        let key = Hs256Key::from_raw(e.key);
        if e.valid_until_ms.is_none() && hs256.is_none() {
            hs256 = Some(Hs256Key::from_raw(e.key));
            session_sign = session_key(&e.key, &p.project_id);
        }
        if let Some(k) = session_key(&e.key, &p.project_id) {
            session_verify = session_verify.with_hs256(k);
        }
        verify = verify.with_hs256(key);
    }
    let mut ed25519 = None;
    let mut jwks = Vec::new();
    for e in &p.ed25519 {
        if !e.is_valid_at(now_ms) {
            continue;
        }
        if let Some(until) = e.valid_until_ms {
            next = next.min(until);
        }
        if let Ok(v) = Ed25519Verifier::from_public_key(&e.public_key) {
            jwks.push(v.jwk());
            verify = verify.with_ed25519(v);
        }
        if e.valid_until_ms.is_none() && ed25519.is_none() {
            if let Some(pk) = &e.pkcs8 {
                ed25519 = Ed25519Signer::from_pkcs8(pk).ok();
            }
        }
    }
    let jwks = serde_json::to_vec(&serde_json::json!({ "keys": jwks }))
        .unwrap_or_else(|_| b"{\"keys\":[]}".to_vec());
    (
        ProjectKeys {
            verify,
            hs256,
            ed25519,
            jwks: Bytes::from(jwks),
            session_sign,
            session_verify,
        },
        next,
    )
}

/// Why a pushed snapshot was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// Not newer than what is served.
    #[error("version {offered} is not newer than {current}")]
    Stale {
        /// Served version.
        current: u64,
        /// Offered version.
        offered: u64,
    },
    /// A delta arrived with no full snapshot to apply it to.
    #[error("no snapshot to apply a delta to")]
    NoBase,
    /// The snapshot or delta is invalid.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// The engine's current configuration; `None` until the first snapshot.
#[derive(Default)]
pub struct ConfigView {
    live: ArcSwapOption<LiveConfig>,
    /// Where applied snapshots are persisted, once set.
    file: OnceLock<SnapshotFile>,
}

impl ConfigView {
    /// The current configuration, or `None` before the first snapshot (the
    /// engine then answers `503 not_configured`).
    pub fn current(&self, now_ms: i64) -> Option<Arc<LiveConfig>> {
        let live = self.live.load_full()?;
        if now_ms >= live.rebuild_at_ms {
            // A key's grace period ended: rebuild its keys once. Racing
            // rebuilders produce identical results, so the last store wins.
            let rebuilt = Arc::new(LiveConfig::build(live.snapshot.clone(), now_ms));
            self.live.rcu(|cur| match cur {
                Some(c) if c.version() == rebuilt.version() => Some(Arc::clone(&rebuilt)),
                other => other.clone(),
            });
            return self.live.load_full();
        }
        Some(live)
    }

    /// The served version, 0 when none.
    pub fn version(&self) -> u64 {
        self.live.load().as_ref().map_or(0, |l| l.version())
    }

    /// Persists every snapshot applied from now on to `file`, after first
    /// serving what `file` holds if it is newer than the served version. A
    /// damaged or unreadable file is logged and ignored (never served); the
    /// next applied snapshot replaces it. Returns the version now served.
    /// Only the first call has an effect; blocking (reads the file).
    pub fn persist_to(&self, file: SnapshotFile, now_ms: i64) -> u64 {
        match file.load() {
            Ok(Some(snapshot)) => match self.swap_full(snapshot, now_ms) {
                Ok(v) => tracing::info!(
                    version = v,
                    path = %file.path().display(),
                    "serving the persisted snapshot until admin is reached"
                ),
                Err(e) => tracing::debug!(error = %e, "persisted snapshot not newer"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "persisted snapshot ignored"),
        }
        if self.file.set(file).is_err() {
            tracing::warn!("a snapshot file is already set; keeping the first");
        }
        self.version()
    }

    /// The file applied snapshots are persisted to, if any.
    pub fn snapshot_file(&self) -> Option<&SnapshotFile> {
        self.file.get()
    }

    /// Replaces the configuration with a newer full snapshot.
    pub fn swap_full(&self, snapshot: Snapshot, now_ms: i64) -> Result<u64, SwapError> {
        let offered = snapshot.version();
        let built = Arc::new(LiveConfig::build(snapshot, now_ms));
        let mut refused = None;
        self.live.rcu(|cur| match cur {
            Some(c) if c.version() >= offered => {
                refused = Some(c.version());
                Some(Arc::clone(c))
            }
            _ => {
                refused = None;
                Some(Arc::clone(&built))
            }
        });
        match refused {
            Some(current) => Err(SwapError::Stale { current, offered }),
            None => Ok(offered),
        }
    }

    /// Applies a delta on top of the served snapshot.
    pub fn apply_delta(&self, delta: &SnapshotDelta, now_ms: i64) -> Result<u64, SwapError> {
        let cur = self.live.load_full().ok_or(SwapError::NoBase)?;
        if delta.version <= cur.version() {
            return Err(SwapError::Stale {
                current: cur.version(),
                offered: delta.version,
            });
        }
        let next = cur.snapshot.apply_delta(delta)?;
        self.swap_full(next, now_ms)
    }
}
