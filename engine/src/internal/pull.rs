//! Pulling the newest snapshot from admin, at start and on an interval, so
//! an engine that missed a push (it restarted, or the network dropped the
//! push) heals itself without anyone noticing.
//!
//! The request is `GET {admin}/internal/snapshot` with
//! `Authorization: Bearer <report key>` (the engine → admin key,
//! `QYZAR_ADMIN_ENGINE_REPORT_KEY`; see [`qyzar_shared::control::channel`]) and,
//! once a snapshot is held, `If-None-Match: "<version>"`: admin may answer
//! `304 Not Modified` when it has nothing newer, so a quiet interval costs a
//! few hundred bytes instead of the whole snapshot. A `200` body is applied
//! exactly as a push is; an older or equal version is ignored. An
//! `https://` admin URL is checked against the configured CA or pinned
//! certificate ([`AdminLink::trust`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use qyzar_shared::control::{self, paths, ControlClient, ControlError, Direction, Link};

use super::{apply_encoded, ApplyError, MAX_SNAPSHOT_BYTES};
use crate::state::Engine;

/// Longest one pull may take, connect to last body byte: a hung admin must
/// not stall the loop, and 30 s moves 64 MiB on any internal network.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(30);

/// The snapshot URL under `admin_url`, checked: `http` or `https` (checked
/// against [`AdminLink::trust`]) and no credentials in the URL, because the
/// key belongs in `QYZAR_ADMIN_ENGINE_REPORT_KEY` where it is never logged.
pub fn admin_snapshot_uri(admin_url: &str) -> Result<Uri, String> {
    qyzar_shared::control::channel::check_url(
        &format!("{}{}", admin_url.trim_end_matches('/'), paths::SNAPSHOT),
        "the admin url",
    )
}

/// How an engine reaches admin (pull and traffic reports): the control
/// plane's [`Link`].
pub type AdminLink = Link;

/// Pulls from `admin_url` now and then every `every` until `shutdown`
/// resolves, with `key` and the public CA roots; see [`pull_loop_with`].
pub async fn pull_loop(
    engine: Arc<Engine>,
    admin_url: String,
    key: Option<String>,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    pull_loop_with(engine, AdminLink::new(admin_url, key), every, shutdown).await
}

/// Pulls from `admin` now and then every `every` until `shutdown`
/// resolves. Failures are logged at `warn` (with admin's host, never the
/// key) and retried at the next tick; the served snapshot stays meanwhile.
pub async fn pull_loop_with(
    engine: Arc<Engine>,
    admin: AdminLink,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let puller = match Puller::new(&admin) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "configuration pull disabled");
            return;
        }
    };
    if admin.key.is_none() {
        tracing::warn!("no engine → admin key configured (QYZAR_ADMIN_ENGINE_REPORT_KEY): admin will refuse pulls");
    }
    let every = if every.is_zero() {
        Duration::from_secs(1)
    } else {
        every
    };
    let mut every = qyzar_shared::periodic::Periodic::new(every, shutdown);
    // A heartbeat that learns of a newer version wakes the pull early.
    while every.tick_or(engine.pull_now.notified()).await {
        let Some(result) = every.unless_stopped(puller.pull(&engine)).await else {
            break;
        };
        match result {
            Ok(Pulled::Applied(version)) => {
                tracing::info!(version, admin = %puller.client.name(), "configuration pulled")
            }
            Ok(Pulled::UpToDate(version)) => {
                tracing::debug!(version, admin = %puller.client.name(), "configuration up to date")
            }
            Err(e) => {
                tracing::warn!(error = %e, admin = %puller.client.name(), "configuration pull failed")
            }
        }
    }
}

/// What one pull did.
enum Pulled {
    /// A newer snapshot was applied; the new version.
    Applied(u64),
    /// Admin had nothing newer; the served version.
    UpToDate(u64),
}

/// Why one pull failed.
#[derive(Debug, thiserror::Error)]
enum PullError {
    /// Admin could not be reached, answered something other than 200 or
    /// 304 (401: the keys differ), too much, or not in time.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The body was read but refused (corrupt, wrong base).
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Admin's snapshot endpoint through the control plane's client.
struct Puller {
    client: ControlClient,
}

impl Puller {
    fn new(link: &AdminLink) -> Result<Self, String> {
        Ok(Self {
            client: ControlClient::new(link, Direction::Report, "the admin url")?,
        })
    }

    /// One pull, bounded by [`PULL_TIMEOUT`] (the apply included).
    async fn pull(&self, engine: &Arc<Engine>) -> Result<Pulled, PullError> {
        let held = engine.config.version();
        let started = tokio::time::Instant::now();
        let bytes = match self
            .client
            .pull_snapshot(held, MAX_SNAPSHOT_BYTES, PULL_TIMEOUT)
            .await?
        {
            control::Pulled::NotModified => return Ok(Pulled::UpToDate(held)),
            control::Pulled::Snapshot(b) => b,
        };
        let left = PULL_TIMEOUT.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, apply_encoded(Arc::clone(engine), bytes)).await {
            Err(_) => Err(ControlError::Timeout(PULL_TIMEOUT).into()),
            Ok(Ok((_, version))) => Ok(Pulled::Applied(version)),
            Ok(Err(e)) if e.is_stale() => Ok(Pulled::UpToDate(engine.config.version())),
            Ok(Err(e)) => Err(e.into()),
        }
    }
}
