//! Everything a request can reach, built once at start and shared by `Arc`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use qyzar_store::DataStore;

use crate::background::Background;
use crate::budget::{Budget, ProjectCache};
use crate::config_view::ConfigView;
use crate::limiter::{Limiters, LimitersConfig};
use crate::metrics::Metrics;
use crate::sessions::SessionCache;
pub use crate::token_cache::{TokenKey, TokenRef, TokenWeight, VerifiedToken};

/// How often expired rate-limit entries are removed.
pub const LIMITER_SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Tunables of the engine's in-memory state.
///
/// Every cache is bounded in bytes, in all and per project (see
/// [`crate::budget`]): a project's own inserts evict only its own entries,
/// and past the total the project holding the most gives way.
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// Sessions in memory (`QYZAR_ENGINE_SESSION_CACHE_MIB`, default
    /// 512/128: about 1.5M sessions in all, 400k per project).
    pub session_cache: Budget,
    /// Session ids known to be unknown, kept for a second
    /// (`QYZAR_ENGINE_UNKNOWN_SESSION_CACHE_MIB`, default 32/4).
    pub unknown_session_cache: Budget,
    /// Verified client tokens (`QYZAR_ENGINE_TOKEN_CACHE_MIB`, default
    /// 256/32: a token with its claims weighs about 1 KiB).
    pub token_cache: Budget,
    /// Answers remembered for `Idempotency-Key` retries
    /// (`QYZAR_ENGINE_IDEMPOTENCY_CACHE_MIB`, default 128/8).
    pub idempotency_cache: Budget,
    /// Anti-ATO profiles (`QYZAR_ENGINE_PROFILE_CACHE_MIB`, default 256/32:
    /// a typical profile weighs about 530 bytes, so about 60 000 identifiers
    /// per project stay warm).
    pub profile_cache: Budget,
    /// How stale a cached profile may be before its next use joins it with
    /// the store's (`QYZAR_ENGINE_PROFILE_REFRESH_MS`): other engines write
    /// the same profiles through a shared CQL store. `None` (the embedded
    /// store's default: it has one writer) never re-reads.
    pub profile_refresh_ms: Option<i64>,
    /// How long an `Idempotency-Key` answer is remembered at most; it may go
    /// sooner when its project's share or the total is full.
    pub idempotency_ttl: Duration,
    /// The request header a trusted proxy puts the client's country in
    /// (e.g. `cf-ipcountry`); `None` to ignore the header.
    pub region_header: Option<http::HeaderName>,
    /// A MaxMind-format country database, consulted when the region header
    /// gives nothing; `None` to use the header alone.
    pub geo: Option<Arc<crate::geo::Geo>>,
    /// Proxies whose `X-Forwarded-For` and region header are believed
    /// (`QYZAR_ENGINE_TRUSTED_PROXIES`); none by default.
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// Engine-wide sizing of the rate limiter (every project's keys).
    pub limiter: LimitersConfig,
    /// Cross-engine limits ([`crate::limit_sync`]): set when engines share
    /// a CQL store.
    pub shared_limits: Option<SharedLimits>,
}

/// What cross-engine limits need: this engine's id and the secret every
/// engine derives its key ids from.
#[derive(Clone)]
pub struct SharedLimits {
    /// This engine's id in the shared usage rows.
    pub engine_id: String,
    /// The shared secret (never printed).
    pub seed: [u8; 32],
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("engine_id", &self.engine_id)
            .finish_non_exhaustive()
    }
}

impl Default for StateOptions {
    fn default() -> Self {
        Self {
            session_cache: Budget::mib(512, 128),
            unknown_session_cache: Budget::mib(32, 4),
            token_cache: Budget::mib(256, 32),
            idempotency_cache: Budget::mib(128, 8),
            profile_cache: Budget::mib(256, 32),
            profile_refresh_ms: None,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            region_header: Some(http::HeaderName::from_static("cf-ipcountry")),
            geo: None,
            trusted_proxies: Default::default(),
            limiter: LimitersConfig::default(),
            shared_limits: None,
        }
    }
}

/// A remembered answer to a request carrying an `Idempotency-Key`.
pub struct StoredAnswer {
    /// SHA-256 of the request body: the same key with another body is a 409.
    pub fingerprint: [u8; 32],
    /// When it was answered (Unix ms), for [`StateOptions::idempotency_ttl`].
    pub stored_at: i64,
    /// The status answered.
    pub status: u16,
    /// The body answered.
    pub body: Bytes,
    /// `Set-Cookie` values answered, replayed as they were.
    pub cookies: Vec<http::HeaderValue>,
}

/// Where an idempotent answer is kept within its project: the route, the
/// credential the caller proved and its `Idempotency-Key`, hashed together
/// with the route so a replay goes only to a caller of the same route with
/// the same credential.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencySlot {
    /// SHA-256 over the route and the proven credential.
    pub caller: [u8; 32],
    /// The `Idempotency-Key` as sent.
    pub key: Box<str>,
}

/// Weighs a stored answer: the key, the body, the cookies and overhead.
#[derive(Clone, Copy)]
pub struct AnswerWeight;

impl quick_cache::Weighter<IdempotencySlot, Arc<StoredAnswer>> for AnswerWeight {
    fn weight(&self, key: &IdempotencySlot, v: &Arc<StoredAnswer>) -> u64 {
        let cookies: usize = v.cookies.iter().map(|c| c.len() + 40).sum();
        (key.key.len() + v.body.len() + cookies + std::mem::size_of::<StoredAnswer>() + 128) as u64
    }
}

/// The engine's shared state.
pub struct Engine {
    /// The served configuration.
    pub config: ConfigView,
    /// Sessions in memory over the store.
    pub sessions: SessionCache,
    /// The data-plane store.
    pub store: Arc<dyn DataStore>,
    /// Rate limiter state: a partition per project, one pool.
    pub limiter: Limiters,
    /// Verified client tokens by project and full text, bounded by bytes
    /// with a share per project ([`crate::budget`]): a tenant signing large
    /// tokens with its own key fills only its own share. quick_cache, like
    /// the sessions (see `sessions.rs` for the numbers): no per-entry
    /// timers, a cheaper hash than moka's SipHash over a ~300-byte token
    /// (which was ~15 % of an uncached verify under load). Expiry is checked
    /// on every read (`claims.exp`), so an expired token is never answered
    /// from here; it waits for eviction like any unread entry. Only tokens
    /// verified for an authenticated project are inserted, and once the
    /// cache is full only for a project whose recent tokens were verified
    /// again (`budget/admission.rs`). An entry is one allocation, hashed by
    /// its tail ([`crate::token_cache`]).
    pub tokens: ProjectCache<TokenKey, VerifiedToken, TokenWeight>,
    /// Idempotent answers by project, then (route and credential, key):
    /// see [`crate::router::idempotent`] for what a key guarantees.
    pub idempotency: ProjectCache<IdempotencySlot, Arc<StoredAnswer>, AnswerWeight>,
    /// Anti-ATO profiles, write-through ([`crate::profiles`]).
    pub profiles: crate::profiles::Profiles,
    /// Writes off the hot path.
    pub background: Background,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// Verifications counted for admin (usage, quotas, traffic analytics).
    pub traffic: Arc<crate::traffic::Traffic>,
    /// Tunables.
    pub options: StateOptions,
    /// Cross-engine limits, when engines share a CQL store.
    pub limit_sync: Option<Arc<crate::limit_sync::LimitSync>>,
    /// Wakes the pull loop at once (a heartbeat answer named a newer
    /// version than the one served: a push was missed).
    pub pull_now: tokio::sync::Notify,
}

impl Engine {
    /// Builds the state over `store`. Spawns the background writer, so it
    /// must be called inside a tokio runtime.
    pub fn new(store: Arc<dyn DataStore>, options: StateOptions) -> Arc<Self> {
        let engine = Arc::new(Self {
            config: ConfigView::default(),
            sessions: SessionCache::new(
                Arc::clone(&store),
                options.session_cache,
                options.unknown_session_cache,
            ),
            limiter: match &options.shared_limits {
                Some(shared) => Limiters::with_shared_ids(options.limiter, shared.seed),
                None => Limiters::new(options.limiter),
            },
            limit_sync: options
                .shared_limits
                .as_ref()
                .map(|s| Arc::new(crate::limit_sync::LimitSync::new(s.engine_id.clone()))),
            tokens: ProjectCache::new(options.token_cache, TokenWeight, 1024),
            idempotency: ProjectCache::new(options.idempotency_cache, AnswerWeight, 2048),
            profiles: crate::profiles::Profiles::new(
                options.profile_cache,
                options.profile_refresh_ms,
            ),
            background: Background::spawn(Arc::clone(&store)),
            metrics: Metrics::default(),
            traffic: Arc::default(),
            store,
            options,
            pull_now: tokio::sync::Notify::new(),
        });
        engine
            .metrics
            .watch_cache("session", engine.sessions.counters());
        engine
            .metrics
            .watch_cache("unknown_session", engine.sessions.negative_counters());
        engine
            .metrics
            .watch_cache("token", engine.tokens.counters());
        engine
            .metrics
            .watch_cache("idempotency", engine.idempotency.counters());
        engine
            .metrics
            .watch_cache("profile", engine.profiles.counters());
        // Expired limiter entries are equivalent to absent ones; sweeping
        // them bounds memory. It visits every entry, so it runs off the
        // async workers, and stops when the engine is dropped.
        let weak = Arc::downgrade(&engine);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIMITER_SWEEP_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(engine) = weak.upgrade() else { return };
                let limiter = engine.limiter.clone();
                drop(engine);
                let _ =
                    tokio::task::spawn_blocking(move || limiter.sweep(limiter.now_nanos())).await;
            }
        });
        engine
    }
}
