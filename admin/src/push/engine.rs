//! Delivering builds to one engine: a background task per engine that
//! pushes the newest build, as a delta when it can, and retries with
//! exponential backoff (see the parent module's docs for the protocol).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qyzar_shared::channel::Trust;
use qyzar_shared::snapshot::{encode_delta, SnapshotDelta};
use tokio::sync::watch;

use super::{Built, MAX_BACKOFF, MIN_BACKOFF, PUSH_TIMEOUT};

/// The admin's outgoing HTTP/1 client to engines: `http://` plain,
/// `https://` with the certificate checked by the configured [`Trust`].
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The HTTP client pushes (and the dashboard's dry-run check) go through.
pub(super) fn http_client(trust: &Trust) -> Result<HttpClient, String> {
    let connector = qyzar_shared::channel::connector(trust)?;
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector))
}

/// One engine's internal endpoint.
pub(super) struct EngineTarget {
    client: HttpClient,
    uri: http::Uri,
    /// `Bearer <key>`, marked sensitive so it is never logged.
    authorization: Option<HeaderValue>,
    /// The base URL, for logs.
    name: String,
}

impl EngineTarget {
    pub(super) fn new(
        base: &str,
        push_key: Option<&str>,
        client: HttpClient,
    ) -> Result<Self, String> {
        let uri = qyzar_shared::channel::check_url(
            &format!("{}/internal/snapshot", base.trim_end_matches('/')),
            "an engine internal url",
        )?;
        let authorization = push_key
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))
                    .map_err(|_| "the push key is not a valid header value")?;
                v.set_sensitive(true);
                Ok::<_, String>(v)
            })
            .transpose()?;
        Ok(Self {
            client,
            uri,
            authorization,
            name: base.to_owned(),
        })
    }

    /// One `PUT`, bounded by [`PUSH_TIMEOUT`].
    async fn put(&self, body: Bytes) -> Result<(StatusCode, serde_json::Value), String> {
        let mut req =
            Request::put(self.uri.clone()).header(CONTENT_TYPE, "application/octet-stream");
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| error_chain(&e))?;
            let status = res.status();
            let bytes = res
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((
                status,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            ))
        };
        tokio::time::timeout(PUSH_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {PUSH_TIMEOUT:?}"))?
    }

    /// Pushes `latest`: a delta from `held` when given, the full snapshot
    /// otherwise or when the engine asks for it.
    async fn push(&self, held: Option<&Built>, latest: &Built) -> Outcome {
        if let Some(base) = held.filter(|h| h.version < latest.version) {
            let delta = SnapshotDelta::between(&base.snapshot, &latest.snapshot)
                .and_then(|d| encode_delta(&d));
            match delta {
                Ok(bytes) => match self.classify(self.put(Bytes::from(bytes)).await) {
                    Outcome::NeedsFull => {}
                    other => return other,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "delta could not be built; pushing the full snapshot")
                }
            }
        }
        // A full snapshot has no base: a baseVersion conflict on it is an
        // engine fault, retried like any transient one by the caller.
        self.classify(self.put(latest.encoded.clone()).await)
    }

    fn classify(&self, answer: Result<(StatusCode, serde_json::Value), String>) -> Outcome {
        let (status, body) = match answer {
            Ok(a) => a,
            Err(e) => return Outcome::Retry(e),
        };
        let field = body["error"]["field"].as_str().unwrap_or_default();
        match status {
            StatusCode::OK => Outcome::Applied(body["version"].as_u64().unwrap_or(0)),
            StatusCode::CONFLICT if field == "baseVersion" => Outcome::NeedsFull,
            StatusCode::CONFLICT if field == "version" => Outcome::AlreadyNewer,
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => Outcome::Refused(
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("refused")
                    .to_owned(),
            ),
            other => Outcome::Retry(format!(
                "engine answered {other}: {}",
                body["error"]["message"].as_str().unwrap_or("")
            )),
        }
    }
}

/// What one push attempt came to.
enum Outcome {
    /// The engine now serves this version.
    Applied(u64),
    /// The engine has no base for the delta: send the full snapshot.
    NeedsFull,
    /// The engine already serves this version or a newer one.
    AlreadyNewer,
    /// The engine refused the bytes for good (it is older than this admin's
    /// snapshot format, or the snapshot is too large): retrying cannot help.
    Refused(String),
    /// Transient: retry with backoff.
    Retry(String),
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
            Outcome::Applied(v) => {
                tracing::debug!(engine = %target.name, version = v, "config pushed");
                done = latest.version.max(v);
                held = (v == latest.version).then_some(latest);
                backoff = MIN_BACKOFF;
            }
            Outcome::AlreadyNewer => {
                tracing::debug!(engine = %target.name, version = latest.version, "engine already holds this version or newer");
                done = latest.version;
                held = None;
                backoff = MIN_BACKOFF;
            }
            Outcome::Refused(why) => {
                tracing::error!(engine = %target.name, version = latest.version, reason = %why, "engine refused the snapshot; not retrying this version");
                done = latest.version;
                held = None;
            }
            failed @ (Outcome::NeedsFull | Outcome::Retry(_)) => {
                let why = match failed {
                    Outcome::Retry(why) => why,
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

/// An error with its causes, `a: b: c` (hyper's top-level client errors say
/// little; the cause is what an operator needs).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
