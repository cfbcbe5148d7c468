//! Pulling the newest snapshot from admin, at start and on an interval, so
//! an engine that missed a push (it restarted, or the network dropped the
//! push) heals itself without anyone noticing.
//!
//! The request is `GET {admin}/internal/snapshot` with
//! `Authorization: Bearer <report key>` (the engine → admin key,
//! `QYZAR_ADMIN_ENGINE_REPORT_KEY`; see [`qyzar_shared::channel`]) and,
//! once a snapshot is held, `If-None-Match: "<version>"`: admin may answer
//! `304 Not Modified` when it has nothing newer, so a quiet interval costs a
//! few hundred bytes instead of the whole snapshot. A `200` body is applied
//! exactly as a push is; an older or equal version is ignored. An
//! `https://` admin URL is checked against the configured CA or pinned
//! certificate ([`AdminLink::trust`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, IF_NONE_MATCH};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qyzar_shared::channel::Trust;

use super::{apply_encoded, ApplyError, MAX_SNAPSHOT_BYTES};
use crate::state::Engine;

/// Longest one pull may take, connect to last body byte: a hung admin must
/// not stall the loop, and 30 s moves 64 MiB on any internal network.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(30);

/// The snapshot URL under `admin_url`, checked: `http` or `https` (checked
/// against [`AdminLink::trust`]) and no credentials in the URL, because the
/// key belongs in `QYZAR_ADMIN_ENGINE_REPORT_KEY` where it is never logged.
pub fn admin_snapshot_uri(admin_url: &str) -> Result<Uri, String> {
    qyzar_shared::channel::check_url(
        &format!("{}/internal/snapshot", admin_url.trim_end_matches('/')),
        "the admin url",
    )
}

/// How an engine reaches admin (pull and traffic reports).
#[derive(Clone, Debug)]
pub struct AdminLink {
    /// Admin's internal base URL.
    pub url: String,
    /// The engine → admin key sent as `Bearer`.
    pub key: Option<String>,
    /// How an `https://` admin's certificate is checked.
    pub trust: Trust,
}

impl AdminLink {
    /// A link to `url` with `key`, trusting the public CA roots for https.
    pub fn new(url: impl Into<String>, key: Option<String>) -> Self {
        Self {
            url: url.into(),
            key,
            trust: Trust::PublicRoots,
        }
    }

    /// `Bearer <key>`, marked sensitive so hyper never logs it.
    pub(crate) fn authorization(&self) -> Result<Option<HeaderValue>, String> {
        self.key
            .as_deref()
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))
                    .map_err(|_| "the report key is not a valid header value".to_owned())?;
                v.set_sensitive(true);
                Ok(v)
            })
            .transpose()
    }

    /// A client for this link: plain for `http://`, TLS checked by
    /// [`AdminLink::trust`] for `https://`.
    pub(crate) fn client<B>(
        &self,
    ) -> Result<Client<hyper_rustls::HttpsConnector<HttpConnector>, B>, String>
    where
        B: hyper::body::Body + Send,
        B::Data: Send,
    {
        Ok(Client::builder(TokioExecutor::new())
            .build(qyzar_shared::channel::connector(&self.trust)?))
    }
}

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
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        let result = tokio::select! {
            _ = &mut shutdown => break,
            r = puller.pull(&engine) => r,
        };
        match result {
            Ok(Pulled::Applied(version)) => {
                tracing::info!(version, admin = %puller.admin, "configuration pulled")
            }
            Ok(Pulled::UpToDate(version)) => {
                tracing::debug!(version, admin = %puller.admin, "configuration up to date")
            }
            Err(e) => {
                tracing::warn!(error = %e, admin = %puller.admin, "configuration pull failed")
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
    /// The admin url or key cannot make a request.
    #[error("{0}")]
    Url(String),
    /// Admin could not be reached (connect refused, reset, DNS).
    #[error("request failed: {0}")]
    Request(String),
    /// Admin did not answer within [`PULL_TIMEOUT`].
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Admin answered something other than 200 or 304 (401: the keys differ).
    #[error("admin answered {0}")]
    Status(StatusCode),
    /// The body passed [`MAX_SNAPSHOT_BYTES`].
    #[error("the snapshot is larger than {MAX_SNAPSHOT_BYTES} bytes")]
    TooLarge,
    /// The body was cut off.
    #[error("the snapshot body could not be read: {0}")]
    Body(String),
    /// The body was read but refused (corrupt, wrong base).
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// One admin endpoint with its client and credentials, built once.
struct Puller {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    uri: Uri,
    /// `Bearer <key>`, marked sensitive so hyper never logs it.
    authorization: Option<HeaderValue>,
    /// Admin's `host:port`, for logs.
    admin: String,
}

impl Puller {
    fn new(link: &AdminLink) -> Result<Self, PullError> {
        let uri = admin_snapshot_uri(&link.url).map_err(PullError::Url)?;
        let authorization = link.authorization().map_err(PullError::Url)?;
        let admin = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        Ok(Self {
            client: link.client().map_err(PullError::Url)?,
            uri,
            authorization,
            admin,
        })
    }

    /// One pull, bounded by [`PULL_TIMEOUT`].
    async fn pull(&self, engine: &Arc<Engine>) -> Result<Pulled, PullError> {
        tokio::time::timeout(PULL_TIMEOUT, self.fetch_and_apply(engine))
            .await
            .map_err(|_| PullError::Timeout(PULL_TIMEOUT))?
    }

    async fn fetch_and_apply(&self, engine: &Arc<Engine>) -> Result<Pulled, PullError> {
        let held = engine.config.version();
        let mut req = Request::get(self.uri.clone())
            .header(ACCEPT, HeaderValue::from_static("application/octet-stream"));
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if held > 0 {
            req = req.header(IF_NONE_MATCH, format!("\"{held}\""));
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| PullError::Request(e.to_string()))?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| PullError::Request(chain(&e)))?;
        match res.status() {
            StatusCode::OK => {}
            StatusCode::NOT_MODIFIED => return Ok(Pulled::UpToDate(held)),
            other => return Err(PullError::Status(other)),
        }
        let declared = res
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_SNAPSHOT_BYTES as u64) {
            return Err(PullError::TooLarge);
        }
        let bytes = match Limited::new(res.into_body(), MAX_SNAPSHOT_BYTES)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(PullError::TooLarge)
            }
            Err(e) => return Err(PullError::Body(chain(&*e))),
        };
        match apply_encoded(Arc::clone(engine), bytes).await {
            Ok((_, version)) => Ok(Pulled::Applied(version)),
            Err(e) if e.is_stale() => Ok(Pulled::UpToDate(engine.config.version())),
            Err(e) => Err(e.into()),
        }
    }
}

/// An error with its causes, `a: b: c`: hyper's client errors say little at
/// the top level ("client error (Connect)") and the cause is what an
/// operator needs.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
