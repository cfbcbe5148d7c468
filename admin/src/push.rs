//! Configuration push: the snapshot built from the database, and its
//! delivery to every engine.
//!
//! After every change (project created, renamed, deleted; settings; secret
//! rotation; origin tokens; opt-outs; plan changes) the handler commits its
//! write and calls [`after_change`]. That builds the *whole* snapshot
//! from the database (never patches the previous one, so a snapshot is
//! always exactly what the database says), stores it under a fresh version
//! and hands it to one background task per engine. The API answer waits for
//! the build (database reads and the version write) but never for engines:
//! a slow or dead engine must not slow the dashboard.
//!
//! Versions come from the one-row `config_versions` table, incremented with
//! `UPDATE … RETURNING` *before* the snapshot is read, so a higher version
//! always reflects at least every change committed before a lower one was
//! allocated, across restarts and across several admin instances. Engines
//! accept only higher versions, so a late push of an older build is
//! refused harmlessly.
//!
//! Each engine task pushes `PUT {engine}/internal/snapshot` with
//! `Authorization: Bearer <push key>`: a delta when the engine is known to
//! hold the previous version this task pushed, the full snapshot otherwise.
//! Engine answers steer it ([`qyzar_shared::control::PushAnswer`]): `409
//! snapshot_needs_full` → resend full at once; `409 snapshot_not_newer` → the
//! engine is already at or past this version, nothing to do; `422`/`413` → refused for
//! good, logged, not retried; anything else (connection refused, 5xx, 401
//! from a key mismatch) → retried with exponential backoff from
//! [`MIN_BACKOFF`] to [`MAX_BACKOFF`]. A newer snapshot supersedes a pending
//! retry at once (the task always pushes the newest, never a queue).
//!
//! Engines also pull `GET /internal/snapshot` (see
//! `routes/internal_snapshot.rs`) at start and on an interval, so an engine
//! that was down during a push heals itself.
//!
//! **Coalescing.** Builds read every project, so one per change would let a
//! burst of changes (a tenant scripting opt-out links) keep admin building
//! all day. [`after_change`] therefore joins a shared build: the first
//! change after a quiet spell builds at once; changes arriving within
//! [`BUILD_DEBOUNCE`] of the last build's start all wait for the *one*
//! next build, which starts when that interval has passed and covers every
//! change committed before it. Each caller still answers only once a build
//! carrying its change is stored. An emergency secret rotation skips the
//! wait ([`after_change_now`]).
//!
//! **Size budget.** Engines refuse a snapshot over
//! [`MAX_ENCODED_BYTES`](qyzar_shared::snapshot::MAX_ENCODED_BYTES), and
//! every later snapshot would be at least as large, so the snapshot must
//! never get there. Each list a project puts in it is capped by its owner's
//! plan ([`crate::projects::SnapshotCaps`], enforced where the list grows
//! and again, by trimming, in the builder), and a change that would take
//! the last build past the configured budget is refused alone with
//! `409 config_budget_exceeded` ([`admit`]) before it is written.
//!
//! **Transport.** Engine URLs may be `https://`: the certificate is checked
//! against `QYZAR_ENGINE_TLS_CA_FILE` or `QYZAR_ENGINE_TLS_PINS` (see
//! [`qyzar_shared::control::channel`]); the same client carries the dashboard's
//! dry-run check to `QYZAR_ENGINE_PUBLIC_URL`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use qyzar_shared::control::channel::Trust;
use qyzar_shared::crypto::SecretBox;
use qyzar_shared::snapshot::Snapshot;
use qyzar_shared::{ApiError, ErrorCode};
use tokio::sync::watch;

use crate::config::AdminConfig;
use crate::db::Db;
use crate::error::{AdminError, AdminResult};
use crate::AppState;

mod build;
mod engine;

pub use engine::HttpClient;

/// First retry delay after a failed push.
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest delay between retries: an engine that is down for long is
/// retried twice a minute, and heals by pulling anyway.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest one push may take, connect to answer: 64 MiB moves in far less
/// on an internal network, and a hung engine must not stall its task.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Least time between the starts of two coalesced builds: however many
/// changes arrive within a second, they cost one build (see module docs).
pub const BUILD_DEBOUNCE: Duration = Duration::from_secs(1);

/// One built snapshot: the value (to compute deltas from) and its encoding
/// (served to pulling engines and pushed whole).
#[derive(Debug)]
pub struct Built {
    /// The snapshot's version.
    pub version: u64,
    /// The snapshot itself.
    pub snapshot: Snapshot,
    /// `encode_snapshot(&snapshot)`, built once.
    pub encoded: Bytes,
}

/// Builds snapshots and feeds the per-engine push tasks. Cheap to clone.
#[derive(Clone)]
pub struct Pusher {
    inner: Arc<Inner>,
}

struct Inner {
    /// Serialises builds in this process, so versions are handed to the
    /// engine tasks in the order they were allocated.
    build: tokio::sync::Mutex<()>,
    /// The newest build. A `watch` channel because each engine task only
    /// ever needs the newest: intermediate versions are skipped, not queued.
    latest: watch::Sender<Option<Arc<Built>>>,
    /// The dashboard's dry-run check to engines' public routes.
    http: HttpClient,
    /// The admin → engine key and TLS trust, for engines that register
    /// later ([`Pusher::spawn_target`]).
    push_key: Option<String>,
    trust: Trust,
    /// Largest encoded snapshot changes may grow it to.
    budget_bytes: usize,
    /// Coalesced build requests so far (tickets).
    requested: AtomicU64,
    /// Whether a coalesced build is already waiting to start.
    scheduled: AtomicBool,
    /// When the last build started (for the debounce).
    last_start: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// The highest ticket a finished coalesced build covered, and the
    /// version it built (`None`: that build failed).
    done: watch::Sender<(u64, Option<u64>)>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("version", &self.version())
            .finish()
    }
}

impl Pusher {
    /// A pusher with one background task per engine in `engine_urls`
    /// (internal base URLs), authenticating with `push_key`, checking
    /// `https://` engines against the public roots and with the default
    /// size budget. Must be called inside a tokio runtime. The tasks end
    /// when the last clone of this pusher is dropped.
    pub fn new(engine_urls: &[String], push_key: Option<&str>) -> Self {
        Self::with_options(
            engine_urls,
            push_key,
            &Trust::PublicRoots,
            qyzar_shared::snapshot::DEFAULT_BUDGET_BYTES,
        )
        .expect("the public roots always make a TLS client")
    }

    /// The pusher `config` describes: its engines, push key, the TLS trust
    /// for `https://` engines and the snapshot size budget.
    pub fn from_config(config: &AdminConfig) -> Result<Self, String> {
        Self::with_options(
            &config.engine_urls,
            config.push_key.as_deref(),
            &config.engine_tls,
            config.config_budget_bytes,
        )
    }

    fn with_options(
        engine_urls: &[String],
        push_key: Option<&str>,
        trust: &Trust,
        budget_bytes: usize,
    ) -> Result<Self, String> {
        let (latest, _) = watch::channel(None);
        if !engine_urls.is_empty() && push_key.is_none() {
            tracing::warn!("engines are configured but QYZAR_ENGINE_PUSH_KEY is not: engines will refuse every push");
        }
        let client = engine::http_client(trust)?;
        for url in engine_urls {
            match engine::EngineTarget::new(url, push_key, trust) {
                Ok(target) => {
                    tokio::spawn(engine::engine_task(target, latest.subscribe()));
                }
                Err(e) => {
                    tracing::error!(engine = %url, error = %e, "engine url is not usable; not pushing to it")
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                build: tokio::sync::Mutex::new(()),
                latest,
                http: client,
                push_key: push_key.map(str::to_owned),
                trust: trust.clone(),
                budget_bytes,
                requested: AtomicU64::new(0),
                scheduled: AtomicBool::new(false),
                last_start: std::sync::Mutex::new(None),
                done: watch::channel((0, None)).0,
            }),
        })
    }

    /// Starts a push task for the engine at `url` (its internal base URL),
    /// which pushes the newest build at once and every later one; the
    /// handle stops it ([`crate::engines`] does, when the engine goes
    /// quiet).
    /// The key sent is the push key bound to `url`
    /// ([`qyzar_shared::control::bound_push_key`]): a URL registered by
    /// heartbeat never receives the plain push key.
    pub fn spawn_target(&self, url: &str) -> Result<tokio::task::AbortHandle, String> {
        let bound = self
            .inner
            .push_key
            .as_deref()
            .map(|k| qyzar_shared::control::bound_push_key(k, url));
        let target = engine::EngineTarget::new(url, bound.as_deref(), &self.inner.trust)?;
        Ok(tokio::spawn(engine::engine_task(target, self.inner.latest.subscribe())).abort_handle())
    }

    /// The outgoing HTTP client to engines' public routes.
    pub fn http(&self) -> &HttpClient {
        &self.inner.http
    }

    /// The newest build, if any was made in this process.
    pub fn latest(&self) -> Option<Arc<Built>> {
        self.inner.latest.borrow().clone()
    }

    /// The newest build's version, 0 before the first build.
    pub fn version(&self) -> u64 {
        self.inner.latest.borrow().as_ref().map_or(0, |b| b.version)
    }

    /// Builds the snapshot from the database under a fresh version and hands
    /// it to the engine tasks; answers once the build is stored, before any
    /// engine has it. Not debounced: see [`Pusher::coalesced`].
    pub async fn rebuild(&self, db: &Db, secrets: &Arc<SecretBox>) -> AdminResult<Arc<Built>> {
        let _serial = self.inner.build.lock().await;
        *self
            .inner
            .last_start
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now());
        let now = qyzar_shared::time::now_ms();
        build::cleanup(db, now).await?;
        let version = build::next_version(db, now).await?;
        let rows = build::read_rows(db, now).await?;
        let secrets = Arc::clone(secrets);
        // Opening every sealed secret and deriving keys is CPU work that
        // grows with the project count: keep it off the runtime workers.
        let built = tokio::task::spawn_blocking(move || build::build(version, now, rows, &secrets))
            .await
            .map_err(AdminError::internal)??;
        if built.encoded.len() > qyzar_shared::snapshot::MAX_ENCODED_BYTES {
            // Admission keeps this from happening; if it does anyway, the
            // engines would refuse it, so keep serving the last good build.
            return Err(AdminError::internal(format!(
                "the snapshot is {} bytes, over the engines' limit; not published",
                built.encoded.len()
            )));
        }
        let built = Arc::new(built);
        self.inner.latest.send_replace(Some(Arc::clone(&built)));
        tracing::info!(
            version,
            projects = built.snapshot.projects().len(),
            bytes = built.encoded.len(),
            "config snapshot built"
        );
        Ok(built)
    }

    /// Joins the next coalesced build and answers its version once it is
    /// stored (`None` if it failed). The build covers every change
    /// committed before this call.
    pub async fn coalesced(&self, db: &Db, secrets: &Arc<SecretBox>) -> Option<u64> {
        let inner = &self.inner;
        let mut done = inner.done.subscribe();
        let ticket = inner.requested.fetch_add(1, Ordering::SeqCst) + 1;
        if !inner.scheduled.swap(true, Ordering::SeqCst) {
            // A task, not this future, runs the build: a caller that goes
            // away (its client hung up) must not cancel the others' build.
            let (pusher, db, secrets) = (self.clone(), db.clone(), Arc::clone(secrets));
            tokio::spawn(async move { pusher.coalesced_build(&db, &secrets).await });
        }
        let result = done.wait_for(|(covered, _)| *covered >= ticket).await;
        result.ok().and_then(|d| d.1)
    }

    async fn coalesced_build(&self, db: &Db, secrets: &Arc<SecretBox>) {
        let inner = &self.inner;
        let last = *inner.last_start.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = last {
            tokio::time::sleep_until(last + BUILD_DEBOUNCE).await;
        }
        // From here on a new request schedules the next build; every ticket
        // taken before the load below is covered by this one.
        inner.scheduled.store(false, Ordering::SeqCst);
        let covered = inner.requested.load(Ordering::SeqCst);
        let version = match self.rebuild(db, secrets).await {
            Ok(b) => Some(b.version),
            Err(e) => {
                tracing::error!(error = %e, "config snapshot rebuild failed after a change; engines keep the previous one");
                None
            }
        };
        inner.done.send_if_modified(|d| {
            let newer = covered > d.0;
            if newer {
                *d = (covered, version);
            }
            newer
        });
    }

    /// The newest build, building one first when this process has none yet
    /// (a pull that arrives before any change since start).
    pub async fn latest_or_build(
        &self,
        db: &Db,
        secrets: &Arc<SecretBox>,
    ) -> AdminResult<Arc<Built>> {
        match self.latest() {
            Some(b) => Ok(b),
            None => self.rebuild(db, secrets).await,
        }
    }

    /// The size budget changes are admitted against.
    pub fn budget_bytes(&self) -> usize {
        self.inner.budget_bytes
    }
}

/// What a new project adds to the snapshot at most before its lists grow
/// (secret hash, keys, default settings), for [`admit`].
pub const NEW_PROJECT_BYTES: usize = 4 * 1024;
/// What one origin token adds at most (hash, a 270-byte origin, expiry).
pub const ORIGIN_TOKEN_BYTES: usize = 320;
/// What one opt-out adds at most (a device id of up to 68 bytes, or an
/// identifier hash).
pub const OPT_OUT_BYTES: usize = 80;

/// Admits a change that may grow the snapshot by up to `growth` bytes:
/// `409 config_budget_exceeded` when the newest build plus `growth` would
/// pass the budget. Only this caller is refused; the snapshot, and every
/// change that does not grow it, keeps flowing.
pub fn admit(state: &AppState, growth: usize) -> Result<(), ApiError> {
    let size = state.pusher.latest().map_or(0, |b| b.encoded.len());
    if size.saturating_add(growth) > state.pusher.budget_bytes() {
        tracing::warn!(
            size,
            growth,
            budget = state.pusher.budget_bytes(),
            "a change was refused: the config snapshot would pass its size budget"
        );
        return Err(ApiError::new(ErrorCode::ConfigBudgetExceeded));
    }
    Ok(())
}

/// Rebuilds the snapshot at once (no debounce) and queues it for every
/// engine; answers the new version. Call after the change is committed.
pub async fn rebuild_and_push(state: &AppState) -> AdminResult<u64> {
    Ok(state
        .pusher
        .rebuild(&state.db, &state.secrets)
        .await?
        .version)
}

/// For handlers whose change is already committed: joins the next
/// coalesced build (see the module docs) and answers its version. A failed
/// build is logged, not answered, because the change itself is durable
/// (answering an error would invite a retry that duplicates it) and the
/// next successful build carries it.
pub async fn after_change(state: &AppState) -> Option<u64> {
    state.pusher.coalesced(&state.db, &state.secrets).await
}

/// [`after_change`] without the debounce, for changes that must reach the
/// engines at once (a secret rotation without grace).
pub async fn after_change_now(state: &AppState) -> Option<u64> {
    match rebuild_and_push(state).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "config snapshot rebuild failed after a change; engines keep the previous one");
            None
        }
    }
}
