//! Delivering builds to one engine: a background task per engine that
//! pushes the newest build, as a delta when it can, and retries with
//! exponential backoff (see the parent module's docs for the protocol).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qyzar_shared::control::channel::Trust;
use qyzar_shared::control::{ControlClient, Direction, Link, PushAnswer};
use qyzar_shared::snapshot::{encode_delta, SnapshotDelta};
use tokio::sync::watch;

use super::{Built, MAX_BACKOFF, MIN_BACKOFF, PUSH_TIMEOUT};

/// The admin's outgoing HTTP/1 client to engines' public routes (the
/// dashboard's dry-run check): `http://` plain, `https://` with the
/// certificate checked by the configured [`Trust`]. Pushes go through the
/// control plane's own [`ControlClient`].
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The HTTP client the dashboard's dry-run check goes through.
pub(super) fn http_client(trust: &Trust) -> Result<HttpClient, String> {
    let connector = qyzar_shared::control::channel::connector(trust)?;
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector))
}

/// One engine's internal endpoint, through the control plane's client.
pub(super) struct EngineTarget {
    client: ControlClient,
    /// The base URL, for logs.
    name: String,
}

impl EngineTarget {
    pub(super) fn new(base: &str, push_key: Option<&str>, trust: &Trust) -> Result<Self, String> {
        let link = Link {
            url: base.to_owned(),
            key: push_key.map(str::to_owned),
            trust: trust.clone(),
        };
        Ok(Self {
            client: ControlClient::new(&link, Direction::Push, "an engine internal url")?,
            name: base.to_owned(),
        })
    }

    /// Pushes `latest`: a delta from `held` when given, the full snapshot
    /// otherwise or when the engine asks for it.
    async fn push(&self, held: Option<&Built>, latest: &Built) -> PushAnswer {
        if let Some(base) = held.filter(|h| h.version < latest.version) {
            let delta = SnapshotDelta::between(&base.snapshot, &latest.snapshot)
                .and_then(|d| encode_delta(&d));
            match delta {
                Ok(bytes) => match self
                    .client
                    .push_snapshot(Bytes::from(bytes), PUSH_TIMEOUT)
                    .await
                {
                    PushAnswer::NeedsFull => {}
                    other => return other,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "delta could not be built; pushing the full snapshot")
                }
            }
        }
        // A full snapshot has no base: a "needs full" answer to it is an
        // engine fault, retried like any transient one by the caller.
        self.client
            .push_snapshot(latest.encoded.clone(), PUSH_TIMEOUT)
            .await
    }
}

/// Keeps one engine at the newest build: pushes whenever a newer one
/// exists, retries with exponential backoff, and jumps to the newest build
/// whenever one arrives.
pub(super) async fn engine_task(target: EngineTarget, mut rx: watch::Receiver<Option<Arc<Built>>>) {
    // The build this task last saw applied: the base for the next delta.
    let mut held: Option<Arc<Built>> = None;
    // Newest version the engine is known to hold (or to have refused).
    let mut done: u64 = 0;
    let mut backoff = MIN_BACKOFF;
    loop {
        let latest = rx.borrow_and_update().clone();
        let Some(latest) = latest.filter(|b| b.version > done) else {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        match target.push(held.as_deref(), &latest).await {
            PushAnswer::Applied(v) => {
                tracing::debug!(engine = %target.name, version = v, "config pushed");
                done = latest.version.max(v);
                held = (v == latest.version).then_some(latest);
                backoff = MIN_BACKOFF;
            }
            PushAnswer::AlreadyNewer => {
                tracing::debug!(engine = %target.name, version = latest.version, "engine already holds this version or newer");
                done = latest.version;
                held = None;
                backoff = MIN_BACKOFF;
            }
            PushAnswer::Refused(why) => {
                tracing::error!(engine = %target.name, version = latest.version, reason = %why, "engine refused the snapshot; not retrying this version");
                done = latest.version;
                held = None;
            }
            failed @ (PushAnswer::NeedsFull | PushAnswer::Retry(_)) => {
                let why = match failed {
                    PushAnswer::Retry(why) => why,
                    _ => "the engine asked for a full snapshot after a full snapshot".to_owned(),
                };
                tracing::warn!(engine = %target.name, version = latest.version, error = %why, retry_in = ?backoff, "config push failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    changed = rx.changed() => if changed.is_err() { return },
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
