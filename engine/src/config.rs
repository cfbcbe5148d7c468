//! Engine configuration: defaults, overridden by `QYZAR_ENGINE_*` variables,
//! and the start-up sequence (store, state, snapshot, listeners).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use qyzar_store::{BackgroundStore, DataStore, EmbeddedStore, ScyllaConfig, ScyllaStore};

use crate::state::{Engine, StateOptions};
use crate::ServerLimits;

/// Where the engine keeps data-plane data.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// One durable local file (`qyzar dev`, single-node installs).
    Embedded(PathBuf),
    /// A ScyllaDB (or any CQL) cluster.
    Scylla(ScyllaConfig),
}

/// Everything the engine binary needs to start.
#[derive(Clone)]
pub struct EngineConfig {
    /// The public listener customers call (`QYZAR_ENGINE_ADDR`, default
    /// `127.0.0.1:8080`).
    pub public_addr: SocketAddr,
    /// The internal listener for config push and metrics
    /// (`QYZAR_ENGINE_INTERNAL_ADDR`, default `127.0.0.1:8090`; never public).
    pub internal_addr: SocketAddr,
    /// Key admin authenticates pushes with, admin → engine
    /// (`QYZAR_ENGINE_PUSH_KEY`, at least 32 bytes).
    pub push_key: Option<String>,
    /// Key this engine presents to admin on pulls and traffic reports,
    /// engine → admin (`QYZAR_ADMIN_ENGINE_REPORT_KEY`, at least 32 bytes,
    /// not the push key). Unset: the push key is sent instead, as before
    /// keys were split, with a warning at start.
    pub report_key: Option<String>,
    /// TLS for the internal listener: the certificate chain and key PEM
    /// files (`QYZAR_ENGINE_INTERNAL_TLS_CERT_FILE`,
    /// `QYZAR_ENGINE_INTERNAL_TLS_KEY_FILE`); with it the listener speaks
    /// TLS only.
    pub internal_tls: Option<Arc<rustls::ServerConfig>>,
    /// How an `https://` admin URL's certificate is checked:
    /// `QYZAR_ENGINE_ADMIN_TLS_CA_FILE` (PEM) or
    /// `QYZAR_ENGINE_ADMIN_TLS_PINS` (SHA-256 of admin's certificate DER,
    /// hex, comma-separated); neither: the public CA roots.
    pub admin_tls: qyzar_shared::control::channel::Trust,
    /// Admin's internal base url (`QYZAR_ENGINE_ADMIN_URL`, e.g.
    /// `http://admin.internal:8091`); the engine pulls the newest snapshot
    /// from `{admin_url}/internal/snapshot` at start and every `pull_every`,
    /// so a missed push heals itself. `None`: pushes only.
    pub admin_url: Option<String>,
    /// How often to pull (`QYZAR_ENGINE_PULL_SECONDS`, default 30): the
    /// longest an engine that missed a push serves an old snapshot.
    pub pull_every: Duration,
    /// Who this engine says it is in its heartbeats to admin (only with
    /// `admin_url`): `QYZAR_ENGINE_ID` (else random per process) and
    /// `QYZAR_ENGINE_ADVERTISE_URL`, the internal base URL admin should push
    /// to (unset: admin does not push to it, it pulls).
    pub identity: crate::internal::Identity,
    /// How often it beats (`QYZAR_ENGINE_HEARTBEAT_SECONDS`, default 2).
    pub heartbeat_every: Duration,
    /// How often verification counts are sent to admin
    /// (`QYZAR_ENGINE_TRAFFIC_SECONDS`, default 10; only with `admin_url`):
    /// how far behind admin's usage and quota checks may run.
    pub traffic_every: Duration,
    /// A snapshot file loaded at start (`QYZAR_ENGINE_SNAPSHOT_FILE`).
    pub snapshot_file: Option<PathBuf>,
    /// Where every applied snapshot is persisted, and started from when
    /// admin is unreachable (`QYZAR_ENGINE_SNAPSHOT_PATH`, default
    /// `engine-snapshot.qzs` beside the embedded store's file, i.e.
    /// `.qyzar/engine-snapshot.qzs`; `off` disables). It holds signing
    /// keys: keep it on a private disk.
    pub snapshot_path: Option<PathBuf>,
    /// The data store: `QYZAR_ENGINE_CQL_NODES` (comma-separated) and
    /// `QYZAR_ENGINE_CQL_KEYSPACE` select ScyllaDB; otherwise the embedded
    /// store at `QYZAR_ENGINE_DATA` (default `.qyzar/engine.redb`).
    pub store: StoreChoice,
    /// Connection and timeout limits.
    pub limits: ServerLimits,
    /// In-memory state tunables.
    pub state: StateOptions,
}

/// Debug output without the push key.
impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("public_addr", &self.public_addr)
            .field("internal_addr", &self.internal_addr)
            .field("push_key", &self.push_key.as_ref().map(|_| "<set>"))
            .field("report_key", &self.report_key.as_ref().map(|_| "<set>"))
            .field("internal_tls", &self.internal_tls.is_some())
            .field("admin_url", &self.admin_url)
            .field("pull_every", &self.pull_every)
            .field("identity", &self.identity)
            .field("heartbeat_every", &self.heartbeat_every)
            .field("traffic_every", &self.traffic_every)
            .field("snapshot_file", &self.snapshot_file)
            .field("snapshot_path", &self.snapshot_path)
            .field("store", &self.store)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A configuration value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{var} is not valid: {reason}")]
pub struct ConfigError {
    /// The variable at fault.
    pub var: &'static str,
    /// Why.
    pub reason: String,
}

impl EngineConfig {
    /// Defaults overridden by the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let public_addr = env_addr("QYZAR_ENGINE_ADDR", "127.0.0.1:8080")?;
        let internal_addr = env_addr("QYZAR_ENGINE_INTERNAL_ADDR", "127.0.0.1:8090")?;
        let mut limits = ServerLimits::default();
        if let Ok(v) = std::env::var("QYZAR_ENGINE_MAX_CONNECTIONS") {
            limits.max_connections =
                v.parse()
                    .map_err(|e: std::num::ParseIntError| ConfigError {
                        var: "QYZAR_ENGINE_MAX_CONNECTIONS",
                        reason: e.to_string(),
                    })?;
        }
        limits.header_read_timeout = seconds("QYZAR_ENGINE_IDLE_TIMEOUT_SECONDS", 10)?;
        limits.body_read_timeout = seconds("QYZAR_ENGINE_BODY_TIMEOUT_SECONDS", 10)?;
        limits.handler_timeout = seconds("QYZAR_ENGINE_HANDLER_TIMEOUT_SECONDS", 15)?;
        if limits.handler_timeout <= limits.body_read_timeout {
            return Err(ConfigError {
                var: "QYZAR_ENGINE_HANDLER_TIMEOUT_SECONDS",
                reason: "must be longer than QYZAR_ENGINE_BODY_TIMEOUT_SECONDS, so a slow \
                         upload is answered 408 rather than 503"
                    .into(),
            });
        }
        let store = match std::env::var("QYZAR_ENGINE_CQL_NODES") {
            Ok(nodes) if !nodes.trim().is_empty() => {
                let keyspace =
                    std::env::var("QYZAR_ENGINE_CQL_KEYSPACE").unwrap_or_else(|_| "qyzar".into());
                let mut cfg = ScyllaConfig::new(
                    nodes.split(',').map(|n| n.trim().to_owned()).collect(),
                    keyspace,
                );
                if let Ok(rf) = std::env::var("QYZAR_ENGINE_CQL_RF") {
                    cfg.replication_factor =
                        rf.parse()
                            .map_err(|e: std::num::ParseIntError| ConfigError {
                                var: "QYZAR_ENGINE_CQL_RF",
                                reason: e.to_string(),
                            })?;
                }
                for (var, slot) in [
                    (
                        "QYZAR_ENGINE_CQL_WRITE_CONSISTENCY",
                        &mut cfg.write_consistency,
                    ),
                    (
                        "QYZAR_ENGINE_CQL_READ_CONSISTENCY",
                        &mut cfg.read_consistency,
                    ),
                ] {
                    if let Some(name) = env_text(var) {
                        *slot = consistency(&name)
                            .ok_or_else(|| ConfigError {
                                var,
                                reason: format!(
                                    "{name:?} is not a consistency level (ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM, EACH_QUORUM, LOCAL_ONE)"
                                ),
                            })?;
                    }
                }
                StoreChoice::Scylla(cfg)
            }
            _ => StoreChoice::Embedded(
                std::env::var("QYZAR_ENGINE_DATA")
                    .unwrap_or_else(|_| ".qyzar/engine.redb".into())
                    .into(),
            ),
        };
        let mut state = StateOptions::default();
        if let Ok(h) = std::env::var("QYZAR_ENGINE_REGION_HEADER") {
            state.region_header = if h.is_empty() {
                None
            } else {
                Some(
                    http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(
                        |e| ConfigError {
                            var: "QYZAR_ENGINE_REGION_HEADER",
                            reason: e.to_string(),
                        },
                    )?,
                )
            };
        }
        // Cache budgets in MiB, `TOTAL` or `TOTAL/PER_PROJECT`.
        for (var, budget) in [
            ("QYZAR_ENGINE_SESSION_CACHE_MIB", &mut state.session_cache),
            (
                "QYZAR_ENGINE_UNKNOWN_SESSION_CACHE_MIB",
                &mut state.unknown_session_cache,
            ),
            ("QYZAR_ENGINE_TOKEN_CACHE_MIB", &mut state.token_cache),
            (
                "QYZAR_ENGINE_IDEMPOTENCY_CACHE_MIB",
                &mut state.idempotency_cache,
            ),
            ("QYZAR_ENGINE_PROFILE_CACHE_MIB", &mut state.profile_cache),
        ] {
            if let Ok(v) = std::env::var(var) {
                if !v.trim().is_empty() {
                    *budget = crate::budget::Budget::parse(&v)
                        .map_err(|reason| ConfigError { var, reason })?;
                }
            }
        }
        // Anti-ATO profiles are written by every engine on a shared CQL
        // store: a cached one is joined with the store's after a second
        // unless told otherwise (0 = on every use). The embedded store has
        // one writer, this engine, and never needs it.
        if matches!(store, StoreChoice::Scylla(_)) {
            state.profile_refresh_ms = Some(1_000);
        }
        if let Ok(v) = std::env::var("QYZAR_ENGINE_PROFILE_REFRESH_MS") {
            if !v.trim().is_empty() {
                let ms: i64 = v.trim().parse().map_err(|_| ConfigError {
                    var: "QYZAR_ENGINE_PROFILE_REFRESH_MS",
                    reason: format!("`{v}` is not a number of milliseconds"),
                })?;
                state.profile_refresh_ms = Some(ms.max(0));
            }
        }
        // Forwarding headers (`X-Forwarded-For`, the region header) are
        // believed only from these proxies; a list that does not parse stops
        // the start rather than trusting nobody (or everybody) by surprise.
        if let Ok(list) = std::env::var("QYZAR_ENGINE_TRUSTED_PROXIES") {
            state.trusted_proxies =
                crate::client_addr::TrustedProxies::parse(&list).map_err(|reason| ConfigError {
                    var: "QYZAR_ENGINE_TRUSTED_PROXIES",
                    reason,
                })?;
        }
        // A country database for when the region header is absent; a file
        // that does not open stops the start instead of silently giving no
        // regions.
        if let Ok(path) = std::env::var("QYZAR_ENGINE_GEOIP_DB") {
            if !path.trim().is_empty() {
                let geo = crate::geo::Geo::open(path.trim().as_ref()).map_err(|e| ConfigError {
                    var: "QYZAR_ENGINE_GEOIP_DB",
                    reason: e.to_string(),
                })?;
                state.geo = Some(Arc::new(geo));
            }
        }
        let admin_url = match std::env::var("QYZAR_ENGINE_ADMIN_URL") {
            Ok(url) if !url.trim().is_empty() => {
                let url = url.trim().to_owned();
                crate::internal::admin_snapshot_uri(&url).map_err(|reason| ConfigError {
                    var: "QYZAR_ENGINE_ADMIN_URL",
                    reason,
                })?;
                Some(url)
            }
            _ => None,
        };
        let snapshot_path = match std::env::var("QYZAR_ENGINE_SNAPSHOT_PATH") {
            Ok(p) if p.trim().eq_ignore_ascii_case("off") => None,
            Ok(p) if !p.trim().is_empty() => Some(PathBuf::from(p.trim())),
            _ => Some(default_snapshot_path(&store)),
        };
        let internal_tls = match (
            env_text("QYZAR_ENGINE_INTERNAL_TLS_CERT_FILE"),
            env_text("QYZAR_ENGINE_INTERNAL_TLS_KEY_FILE"),
        ) {
            (Some(cert), Some(key)) => Some(
                qyzar_shared::control::channel::server_config(&cert, &key).map_err(|reason| {
                    ConfigError {
                        var: "QYZAR_ENGINE_INTERNAL_TLS_CERT_FILE",
                        reason,
                    }
                })?,
            ),
            (None, None) => None,
            _ => {
                return Err(ConfigError {
                    var: "QYZAR_ENGINE_INTERNAL_TLS_CERT_FILE",
                    reason: "set both the certificate and the key file, or neither".into(),
                })
            }
        };
        let admin_tls = qyzar_shared::control::channel::Trust::from_settings(
            env_text("QYZAR_ENGINE_ADMIN_TLS_CA_FILE").as_deref(),
            env_text("QYZAR_ENGINE_ADMIN_TLS_PINS").as_deref(),
        )
        .map_err(|reason| ConfigError {
            var: "QYZAR_ENGINE_ADMIN_TLS_CA_FILE / QYZAR_ENGINE_ADMIN_TLS_PINS",
            reason,
        })?;
        let pull_every = seconds("QYZAR_ENGINE_PULL_SECONDS", 30)?;
        let heartbeat_every = seconds("QYZAR_ENGINE_HEARTBEAT_SECONDS", 2)?;
        let advertise = match env_text("QYZAR_ENGINE_ADVERTISE_URL") {
            Some(url) => {
                crate::internal::admin_snapshot_uri(&url).map_err(|reason| ConfigError {
                    var: "QYZAR_ENGINE_ADVERTISE_URL",
                    reason,
                })?;
                Some(url.trim_end_matches('/').to_owned())
            }
            None => None,
        };
        let mut identity = crate::internal::Identity::random(advertise);
        if let Some(id) = env_text("QYZAR_ENGINE_ID") {
            identity.engine_id = id;
        }
        let probe = qyzar_shared::control::EngineHeartbeat {
            engine_id: identity.engine_id.clone(),
            push_url: identity.push_url.clone(),
            version: 0,
            started_at_ms: identity.started_at_ms,
            heartbeat_ms: 1_000,
        };
        probe.validate().map_err(|e| ConfigError {
            var: if e.field.as_deref() == Some("pushUrl") {
                "QYZAR_ENGINE_ADVERTISE_URL"
            } else {
                "QYZAR_ENGINE_ID"
            },
            reason: e.message.into_owned(),
        })?;
        let traffic_every = seconds("QYZAR_ENGINE_TRAFFIC_SECONDS", 10)?;
        // Engines on one CQL store share rate limits (crate::limit_sync):
        // their key ids derive from the channel key they all hold (the
        // keyspace name when none is set, which only a tenant who could
        // read the engines' configuration would know).
        if let StoreChoice::Scylla(cql) = &store {
            let secret = env_text("QYZAR_ADMIN_ENGINE_REPORT_KEY")
                .or_else(|| env_text("QYZAR_ENGINE_PUSH_KEY"))
                .unwrap_or_else(|| cql.keyspace.clone());
            state.shared_limits = Some(crate::state::SharedLimits {
                engine_id: identity.engine_id.clone(),
                seed: qyzar_shared::crypto::sha256(
                    format!("qyzar shared limits\0{secret}").as_bytes(),
                ),
            });
        }
        let config = Self {
            public_addr,
            internal_addr,
            admin_url,
            pull_every,
            identity,
            heartbeat_every,
            traffic_every,
            push_key: env_text("QYZAR_ENGINE_PUSH_KEY"),
            report_key: env_text("QYZAR_ADMIN_ENGINE_REPORT_KEY"),
            internal_tls,
            admin_tls,
            snapshot_file: std::env::var("QYZAR_ENGINE_SNAPSHOT_FILE")
                .ok()
                .map(PathBuf::from),
            snapshot_path,
            store,
            limits,
            state,
        };
        config.validate()?;
        Ok(config)
    }

    /// Start-up checks whatever the values came from: channel keys of at
    /// least 32 bytes, one per direction ([`qyzar_shared::control::channel`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        qyzar_shared::control::channel::check_key_pair(
            self.push_key.as_deref(),
            self.report_key.as_deref(),
        )
        .map_err(|reason| ConfigError {
            var: "QYZAR_ENGINE_PUSH_KEY / QYZAR_ADMIN_ENGINE_REPORT_KEY",
            reason,
        })
    }

    /// The key pushes must carry: the push key, and, for an engine that
    /// advertises its URL, also the push key bound to that URL, which is all
    /// admin sends to URLs it learned of by heartbeat
    /// ([`qyzar_shared::control::bound_push_key`]). `None`: no push key, every
    /// push refused.
    pub fn push_channel_key(&self) -> Option<qyzar_shared::control::ChannelKey> {
        use qyzar_shared::control::{bound_push_key, ChannelKey, Direction};
        let k = self.push_key.as_deref()?;
        let key = ChannelKey::new(k, Direction::Push);
        Some(match self.identity.push_url.as_deref() {
            Some(url) => key.also_accepting(&bound_push_key(k, url)),
            None => key,
        })
    }

    /// How this engine reaches admin, when an admin URL is configured: the
    /// report key (the push key while none is set) and the TLS trust.
    pub fn admin_link(&self) -> Option<crate::internal::AdminLink> {
        let url = self.admin_url.clone()?;
        Some(crate::internal::AdminLink {
            url,
            key: self.report_key.clone().or_else(|| self.push_key.clone()),
            trust: self.admin_tls.clone(),
        })
    }
}

/// `engine-snapshot.qzs` in the data folder: beside the embedded store's
/// file, or `.qyzar/` with a CQL store.
pub fn default_snapshot_path(store: &StoreChoice) -> PathBuf {
    let dir = match store {
        StoreChoice::Embedded(file) => file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from),
        StoreChoice::Scylla(_) => PathBuf::from(".qyzar"),
    };
    dir.join("engine-snapshot.qzs")
}

impl EngineConfig {
    /// A configuration for tests and embedding: the defaults, on loopback,
    /// with the embedded store and the snapshot file under `dir`, no admin.
    pub fn local(dir: &std::path::Path) -> Self {
        let store = StoreChoice::Embedded(dir.join("engine.redb"));
        Self {
            public_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            internal_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            push_key: None,
            report_key: None,
            internal_tls: None,
            admin_tls: Default::default(),
            admin_url: None,
            pull_every: Duration::from_secs(30),
            identity: crate::internal::Identity::random(None),
            heartbeat_every: Duration::from_secs(2),
            traffic_every: Duration::from_secs(10),
            snapshot_file: None,
            snapshot_path: Some(default_snapshot_path(&store)),
            store,
            limits: ServerLimits::default(),
            state: StateOptions::default(),
        }
    }
}

/// A CQL consistency level by its CQL name (`LOCAL_QUORUM`, any case).
/// Writes and reads must overlap (W + R > RF) for a read to see every
/// acknowledged write: the default `LOCAL_QUORUM` for both does; `ONE` for
/// either with RF = 3 does not (see deploy/README.md).
fn consistency(name: &str) -> Option<qyzar_store::Consistency> {
    use qyzar_store::Consistency as C;
    Some(match name.trim().to_ascii_uppercase().as_str() {
        "ONE" => C::One,
        "TWO" => C::Two,
        "THREE" => C::Three,
        "QUORUM" => C::Quorum,
        "ALL" => C::All,
        "LOCAL_QUORUM" => C::LocalQuorum,
        "EACH_QUORUM" => C::EachQuorum,
        "LOCAL_ONE" => C::LocalOne,
        _ => return None,
    })
}

/// A variable's value, trimmed; unset and blank are `None`.
fn env_text(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn env_addr(var: &'static str, default: &str) -> Result<SocketAddr, ConfigError> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_owned())
        .parse()
        .map_err(|e: std::net::AddrParseError| ConfigError {
            var,
            reason: e.to_string(),
        })
}

/// Any start-up failure.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the configured store. A CQL cluster is connected in the
/// background (see [`BackgroundStore`]): the engine starts and serves what
/// its configuration and caches allow while the cluster is down, answering
/// `503 store_unavailable` for the rest until the connect succeeds. Only a
/// configuration error (a bad keyspace name) fails here.
pub async fn open_store(choice: &StoreChoice) -> Result<Arc<dyn DataStore>, StartError> {
    Ok(match choice {
        StoreChoice::Embedded(path) => Arc::new(EmbeddedStore::open(path)?),
        StoreChoice::Scylla(cfg) => {
            cfg.check()?;
            let cfg = cfg.clone();
            BackgroundStore::spawn(move || {
                let cfg = cfg.clone();
                async move {
                    let store = ScyllaStore::connect(cfg).await?;
                    Ok(Arc::new(store) as Arc<dyn DataStore>)
                }
            })
        }
    })
}

/// Loads a snapshot file into the engine, if one is configured. A file
/// not newer than what is already served is no error: the served one stays.
pub fn load_snapshot_file(engine: &Engine, path: &std::path::Path) -> Result<u64, StartError> {
    let bytes = std::fs::read(path)?;
    let snapshot = qyzar_shared::snapshot::decode_snapshot(&bytes)?;
    match engine
        .config
        .swap_full(snapshot, qyzar_shared::time::now_ms())
    {
        Ok(v) => Ok(v),
        Err(crate::config_view::SwapError::Stale { current, .. }) => Ok(current),
        Err(e) => Err(e.into()),
    }
}

/// A positive number of seconds from `var`, or `default` when unset.
fn seconds(var: &'static str, default: u64) -> Result<Duration, ConfigError> {
    match std::env::var(var) {
        Ok(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
            _ => Err(ConfigError {
                var,
                reason: format!("{v:?} is not a positive number of seconds"),
            }),
        },
        Err(_) => Ok(Duration::from_secs(default)),
    }
}

/// Binds the public and internal listeners and runs [`start_on`] on them.
pub async fn start(
    config: EngineConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(config.public_addr).await?;
    let internal = tokio::net::TcpListener::bind(config.internal_addr).await?;
    start_on(config, listener, internal, shutdown).await
}

/// Opens the store (a CQL one connects in the background), builds the
/// state, loads the snapshot (the configured file, then the persisted one
/// if newer), starts pulling from admin (when configured) and serves on the
/// bound `listener` and `internal` until `shutdown` resolves. The listen
/// addresses in `config` are not used (tests bind port 0 themselves).
///
/// One shutdown stops everything: it is fanned out through a `watch`
/// channel to the internal listener and the pull loop, which are awaited
/// after the public listener has drained.
pub async fn start_on(
    config: EngineConfig,
    listener: tokio::net::TcpListener,
    internal: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    config.validate()?;
    let store = open_store(&config.store).await?;
    start_with_store(config, store, listener, internal, shutdown).await
}

/// [`start_on`] over a store the caller opened: `qyzar dev` shares the
/// engine's embedded store with its admin (one process may open a redb
/// file once), which reads the device index for the dashboard.
pub async fn start_with_store(
    config: EngineConfig,
    store: Arc<dyn DataStore>,
    listener: tokio::net::TcpListener,
    internal: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    config.validate()?;
    if config.admin_url.is_some() && config.report_key.is_none() && config.push_key.is_some() {
        tracing::warn!("QYZAR_ADMIN_ENGINE_REPORT_KEY is not set: pulls and traffic reports send the push key; set a separate key per direction");
    }
    if config.internal_tls.is_none() && !config.internal_addr.ip().is_loopback() {
        tracing::warn!(addr = %config.internal_addr, "the internal listener is not on loopback and has no TLS: pushed snapshots (every project's keys) travel in clear; set QYZAR_ENGINE_INTERNAL_TLS_CERT_FILE and _KEY_FILE");
    }
    let engine = Engine::new(store, config.state.clone());
    if let Some(path) = &config.snapshot_file {
        let v = load_snapshot_file(&engine, path)?;
        tracing::info!(version = v, path = %path.display(), "snapshot loaded");
    }
    // The last applied snapshot: served until admin answers (the pull loop
    // then moves it forward, never back).
    if let Some(path) = config.snapshot_path.clone() {
        let engine = Arc::clone(&engine);
        tokio::task::spawn_blocking(move || {
            engine.config.persist_to(
                crate::config_view::SnapshotFile::new(path),
                qyzar_shared::time::now_ms(),
            )
        })
        .await?;
    }
    tracing::info!(
        addr = %listener.local_addr()?,
        internal = %internal.local_addr()?,
        "engine listening"
    );

    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Resolves once shutdown is asked for, or once `stop` is dropped.
    let stopped = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = vec![tokio::spawn(crate::internal::serve_internal_with(
        internal,
        Arc::clone(&engine),
        config.push_channel_key(),
        config.internal_tls.clone(),
        stopped(),
    ))];
    if let Some(admin) = config.admin_link() {
        tasks.push(tokio::spawn(crate::internal::pull_loop_with(
            Arc::clone(&engine),
            admin.clone(),
            config.pull_every,
            stopped(),
        )));
        tasks.push(tokio::spawn(crate::internal::heartbeat_loop(
            Arc::clone(&engine),
            admin,
            config.identity.clone(),
            config.heartbeat_every,
            stopped(),
        )));
    }
    tasks.push(tokio::spawn(crate::limit_sync::sync_loop(
        Arc::clone(&engine),
        stopped(),
    )));
    // The traffic reporter stops only after the public listener has
    // drained, so its last report carries the verifications answered last.
    let (report_stop, report_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(admin) = config.admin_link() {
        tasks.push(tokio::spawn(crate::traffic::report_loop_with(
            Arc::clone(&engine.traffic),
            admin,
            config.traffic_every,
            async {
                let _ = report_stopped.await;
            },
        )));
    }
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    crate::run(listener, engine, config.limits, shutdown).await;
    drop(report_stop);
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "an internal task ended abnormally");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::EngineConfig;
    use qyzar_store::Consistency;

    /// The push key an engine checks: the plain one always, the one bound
    /// to its advertised URL only when it advertises one, never a key bound
    /// to another URL.
    #[test]
    fn the_push_key_is_bound_to_the_advertised_url() {
        use qyzar_shared::control::{authorise, bound_push_key, Direction};
        let dir = tempfile::tempdir().unwrap();
        let push = "qz_pk_0123456789abcdef0123456789abcdef";
        let ok = |c: &EngineConfig, k: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {k}").parse().unwrap(),
            );
            authorise(c.push_channel_key().as_ref(), Direction::Push, &h).is_ok()
        };
        let mut c = EngineConfig::local(dir.path());
        assert!(c.push_channel_key().is_none());
        c.push_key = Some(push.into());
        let mine = bound_push_key(push, "http://10.0.0.7:8082");
        assert!(ok(&c, push));
        assert!(!ok(&c, &mine), "no advertised URL: no bound key");
        c.identity = crate::internal::Identity::random(Some("http://10.0.0.7:8082".into()));
        assert!(ok(&c, push));
        assert!(ok(&c, &mine));
        assert!(!ok(&c, &bound_push_key(push, "http://10.0.0.8:8082")));
    }

    #[test]
    fn consistency_levels_are_read_by_their_cql_names() {
        assert_eq!(
            super::consistency("LOCAL_QUORUM"),
            Some(Consistency::LocalQuorum)
        );
        assert_eq!(super::consistency(" one "), Some(Consistency::One));
        assert_eq!(super::consistency("quorum"), Some(Consistency::Quorum));
        assert_eq!(super::consistency("SERIAL"), None);
        assert_eq!(super::consistency(""), None);
    }
}
