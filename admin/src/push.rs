//! Configuration push: the snapshot built from the database, and its
//! delivery to every engine.
//!
//! After every change (project created, renamed, deleted; settings; secret
//! rotation; origin tokens; opt-outs; plan changes) the handler commits its
//! write and calls [`rebuild_and_push`]. That builds the *whole* snapshot
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
//! Engine answers steer it (see `engine/src/internal.rs`): `409` on
//! `baseVersion` → resend full at once; `409` on `version` → the engine is
//! already at or past this version, nothing to do; `422`/`413` → refused for
//! good, logged, not retried; anything else (connection refused, 5xx, 401
//! from a key mismatch) → retried with exponential backoff from
//! [`MIN_BACKOFF`] to [`MAX_BACKOFF`]. A newer snapshot supersedes a pending
//! retry at once (the task always pushes the newest, never a queue).
//!
//! Engines also pull `GET /internal/snapshot` (see
//! `routes/internal_snapshot.rs`) at start and on an interval, so an engine
//! that was down during a push heals itself.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use qyzar_shared::crypto::SecretBox;
use qyzar_shared::snapshot::Snapshot;
use tokio::sync::watch;

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
    /// Shared by the push tasks and the dashboard's dry-run check.
    http: HttpClient,
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
    /// (internal base URLs), authenticating with `push_key`. Must be called
    /// inside a tokio runtime. The tasks end when the last clone of this
    /// pusher is dropped.
    pub fn new(engine_urls: &[String], push_key: Option<&str>) -> Self {
        let (latest, _) = watch::channel(None);
        if !engine_urls.is_empty() && push_key.is_none() {
            tracing::warn!("engines are configured but QYZAR_ENGINE_PUSH_KEY is not: engines will refuse every push");
        }
        let client = engine::http_client();
        for url in engine_urls {
            match engine::EngineTarget::new(url, push_key, client.clone()) {
                Ok(target) => {
                    tokio::spawn(engine::engine_task(target, latest.subscribe()));
                }
                Err(e) => {
                    tracing::error!(engine = %url, error = %e, "engine url is not usable; not pushing to it")
                }
            }
        }
        Self {
            inner: Arc::new(Inner {
                build: tokio::sync::Mutex::new(()),
                latest,
                http: client,
            }),
        }
    }

    /// The outgoing HTTP client (connection pool shared with the pushes).
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
    /// engine has it.
    pub async fn rebuild(&self, db: &Db, secrets: &Arc<SecretBox>) -> AdminResult<Arc<Built>> {
        let _serial = self.inner.build.lock().await;
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
}

/// Rebuilds the snapshot after a change and queues it for every engine;
/// answers the new version. Call after the change is committed.
pub async fn rebuild_and_push(state: &AppState) -> AdminResult<u64> {
    Ok(state
        .pusher
        .rebuild(&state.db, &state.secrets)
        .await?
        .version)
}

/// [`rebuild_and_push`] for handlers whose change is already committed: a
/// failed build is logged, not answered, because the change itself is
/// durable (answering an error would invite a retry that duplicates it) and
/// the next successful build carries it. Answers the version when built.
pub async fn after_change(state: &AppState) -> Option<u64> {
    match rebuild_and_push(state).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "config snapshot rebuild failed after a change; engines keep the previous one");
            None
        }
    }
}
