//! Everything a request can reach, built once at start and shared by `Arc`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use qyzar_shared::crypto::Claims;
use qyzar_shared::store::DataStore;

use crate::background::Background;
use crate::config_view::ConfigView;
use crate::limiter::{Limiters, LimitersConfig};
use crate::metrics::Metrics;
use crate::sessions::SessionCache;

/// How often expired rate-limit entries are removed.
pub const LIMITER_SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Tunables of the engine's in-memory state.
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// Most sessions kept in memory.
    pub session_cache_capacity: u64,
    /// Most verified client tokens kept in memory.
    pub token_cache_capacity: u64,
    /// How long an `Idempotency-Key` answer is remembered.
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
}

impl Default for StateOptions {
    fn default() -> Self {
        Self {
            session_cache_capacity: 2_000_000,
            token_cache_capacity: 1_000_000,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            region_header: Some(http::HeaderName::from_static("cf-ipcountry")),
            geo: None,
            trusted_proxies: Default::default(),
            limiter: LimitersConfig::default(),
        }
    }
}

/// A verified client token, remembered until it expires so a repeated
/// verify skips the signature check.
pub struct VerifiedToken {
    /// The verified claims.
    pub claims: Claims,
    /// The project it was verified for.
    pub project: Box<str>,
}

/// A remembered answer to a request carrying an `Idempotency-Key`.
#[derive(Clone)]
pub struct StoredAnswer {
    /// SHA-256 of the request body: the same key with another body is a 409.
    pub fingerprint: [u8; 32],
    /// The status answered.
    pub status: u16,
    /// The body answered.
    pub body: Bytes,
    /// `Set-Cookie` values answered, replayed as they were.
    pub cookies: Vec<http::HeaderValue>,
}

/// One idempotency slot: a lock so that concurrent retries with the same key
/// wait for the first to finish instead of running twice.
pub type IdempotencySlot = Arc<tokio::sync::Mutex<Option<StoredAnswer>>>;

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
    /// Verified client tokens by their full text. quick_cache, like the
    /// sessions (see `sessions.rs` for the numbers): bounded, no per-entry
    /// timers, a cheaper hash than moka's SipHash over a ~300-byte token
    /// (which was ~15 % of an uncached verify under load). Expiry is checked
    /// on every read (`claims.exp`), so an expired token is never answered
    /// from here; it waits for eviction like any unread entry.
    pub tokens: quick_cache::sync::Cache<Box<str>, Arc<VerifiedToken>>,
    /// Idempotency slots by (project, route, key).
    pub idempotency: moka::sync::Cache<Box<str>, IdempotencySlot>,
    /// Writes off the hot path.
    pub background: Background,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// Verifications counted for admin (usage, quotas, traffic analytics).
    pub traffic: Arc<crate::traffic::Traffic>,
    /// Tunables.
    pub options: StateOptions,
}

impl Engine {
    /// Builds the state over `store`. Spawns the background writer, so it
    /// must be called inside a tokio runtime.
    pub fn new(store: Arc<dyn DataStore>, options: StateOptions) -> Arc<Self> {
        let engine = Arc::new(Self {
            config: ConfigView::default(),
            sessions: SessionCache::new(Arc::clone(&store), options.session_cache_capacity),
            limiter: Limiters::new(options.limiter),
            tokens: quick_cache::sync::Cache::new(
                usize::try_from(options.token_cache_capacity).unwrap_or(usize::MAX),
            ),
            idempotency: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(options.idempotency_ttl)
                .build(),
            background: Background::spawn(Arc::clone(&store)),
            metrics: Metrics::default(),
            traffic: Arc::default(),
            store,
            options,
        });
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
