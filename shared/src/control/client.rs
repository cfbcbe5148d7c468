//! The one HTTP client every control-plane call goes through: admin's
//! pushes, an engine's pulls and traffic reports. It checks the URL once
//! (`http` or `https`, a host, no credentials in it), carries the
//! direction's key as a sensitive header, checks an `https://` peer with the
//! configured [`Trust`], bounds every exchange in time and every answer in
//! bytes, and turns answers into the protocol's types.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::channel::{self, Trust};
use super::{
    bearer, paths, Direction, EngineHeartbeat, HeartbeatAnswer, PushAnswer, TrafficAnswer,
    TrafficBatch, SNAPSHOT_CONTENT_TYPE,
};

/// Largest answer read for anything but a pulled snapshot: version and
/// traffic answers and error documents are a few hundred bytes.
const MAX_SMALL_ANSWER: usize = 64 * 1024;

/// Where the other side is and how to reach it.
#[derive(Clone, Debug)]
pub struct Link {
    /// The other side's internal base URL.
    pub url: String,
    /// This direction's key, sent as `Bearer`.
    pub key: Option<String>,
    /// How an `https://` peer's certificate is checked.
    pub trust: Trust,
}

impl Link {
    /// A link to `url` with `key`, trusting the public CA roots for https.
    pub fn new(url: impl Into<String>, key: Option<String>) -> Self {
        Self {
            url: url.into(),
            key,
            trust: Trust::PublicRoots,
        }
    }
}

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The URL or key cannot make a request.
    #[error("{0}")]
    Url(String),
    /// The peer could not be reached (refused, reset, DNS, TLS).
    #[error("request failed: {0}")]
    Request(String),
    /// No whole answer within the call's time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An answer other than the call expects (401: the keys differ).
    #[error("answered {0}")]
    Status(StatusCode),
    /// The answer passed the call's byte limit.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    /// The answer was cut off or is not the protocol's shape.
    #[error("the answer could not be read: {0}")]
    Body(String),
}

/// What a pull found.
#[derive(Debug)]
pub enum Pulled {
    /// Admin has nothing newer than the version named.
    NotModified,
    /// The encoded snapshot.
    Snapshot(Bytes),
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A client for one peer, built once and reused (it pools connections).
pub struct ControlClient {
    client: Client<Https, Full<Bytes>>,
    /// The base URL without a trailing slash.
    base: String,
    /// `Bearer <key>`, sensitive.
    authorization: Option<HeaderValue>,
    /// The peer's `host:port`, for logs (never the key).
    name: String,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("peer", &self.name)
            .finish_non_exhaustive()
    }
}

impl ControlClient {
    /// A client for `link`, whose key goes `direction`; `what` names the URL
    /// in errors ("the admin url", "an engine internal url").
    pub fn new(link: &Link, direction: Direction, what: &str) -> Result<Self, String> {
        let base = link.url.trim_end_matches('/').to_owned();
        let uri = channel::check_url(&format!("{base}{}", paths::SNAPSHOT), what)?;
        let name = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let authorization = link
            .key
            .as_deref()
            .map(|k| bearer(k, direction))
            .transpose()?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(channel::connector(&link.trust)?);
        Ok(Self {
            client,
            base,
            authorization,
            name,
        })
    }

    /// The peer's `host:port`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `PUT` [`paths::SNAPSHOT`] with an encoded snapshot or delta.
    pub async fn push_snapshot(&self, encoded: Bytes, timeout: Duration) -> PushAnswer {
        let req = Request::put(self.uri(paths::SNAPSHOT)).header(
            CONTENT_TYPE,
            HeaderValue::from_static(SNAPSHOT_CONTENT_TYPE),
        );
        match self.exchange(req, encoded, MAX_SMALL_ANSWER, timeout).await {
            Ok((status, body)) => PushAnswer::of(status, &body),
            Err(e) => PushAnswer::Retry(e.to_string()),
        }
    }

    /// `GET` [`paths::SNAPSHOT`], naming `held` (0: none) so admin can answer
    /// `304`; a snapshot past `limit` bytes is refused unread.
    pub async fn pull_snapshot(
        &self,
        held: u64,
        limit: usize,
        timeout: Duration,
    ) -> Result<Pulled, ControlError> {
        let mut req = Request::get(self.uri(paths::SNAPSHOT))
            .header(ACCEPT, HeaderValue::from_static(SNAPSHOT_CONTENT_TYPE));
        if held > 0 {
            req = req.header(IF_NONE_MATCH, format!("\"{held}\""));
        }
        let (status, body) = self.exchange(req, Bytes::new(), limit, timeout).await?;
        match status {
            StatusCode::OK => Ok(Pulled::Snapshot(body)),
            StatusCode::NOT_MODIFIED => Ok(Pulled::NotModified),
            other => Err(ControlError::Status(other)),
        }
    }

    /// `POST` [`paths::TRAFFIC`] with one batch.
    pub async fn report_traffic(
        &self,
        batch: &TrafficBatch,
        timeout: Duration,
    ) -> Result<TrafficAnswer, ControlError> {
        self.post_json(paths::TRAFFIC, batch, timeout).await
    }

    /// `POST` [`paths::ENGINES`] with this engine's heartbeat.
    pub async fn heartbeat(
        &self,
        beat: &EngineHeartbeat,
        timeout: Duration,
    ) -> Result<HeartbeatAnswer, ControlError> {
        self.post_json(paths::ENGINES, beat, timeout).await
    }

    /// `POST`s `body` as JSON to `path` and reads a 2xx answer as `A`.
    async fn post_json<B: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<A, ControlError> {
        let body = serde_json::to_vec(body).map_err(|e| ControlError::Url(e.to_string()))?;
        let req = Request::post(self.uri(path))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let (status, answer) = self
            .exchange(req, Bytes::from(body), MAX_SMALL_ANSWER, timeout)
            .await?;
        if !status.is_success() {
            return Err(ControlError::Status(status));
        }
        serde_json::from_slice(&answer).map_err(|e| ControlError::Body(e.to_string()))
    }

    fn uri(&self, path: &str) -> Uri {
        // The base passed `check_url` with a path appended, so any fixed
        // path appended parses too.
        format!("{}{path}", self.base)
            .parse()
            .expect("a checked base URL with a fixed path is a URI")
    }

    /// Sends `req` with `body` and the key, and reads at most `limit` bytes
    /// of the answer, all within `timeout`.
    async fn exchange(
        &self,
        mut req: http::request::Builder,
        body: Bytes,
        limit: usize,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), ControlError> {
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ControlError::Url(e.to_string()))?;
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| ControlError::Request(chain(&e)))?;
            let status = res.status();
            let declared = res
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > limit as u64) {
                return Err(ControlError::TooLarge(limit));
            }
            match Limited::new(res.into_body(), limit).collect().await {
                Ok(c) => Ok((status, c.to_bytes())),
                Err(e)
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    Err(ControlError::TooLarge(limit))
                }
                Err(e) => Err(ControlError::Body(chain(&*e))),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ControlError::Timeout(timeout))?
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
