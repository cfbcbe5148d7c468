//! Verification traffic, counted in memory and reported to admin.
//!
//! Each successful `/connect` and `/connect/reverify` adds one to a counter
//! keyed by (project, UTC hour, kind, region, platform); see
//! [`qyzar_shared::usage`] for what counts and why. Every few seconds the
//! [`report_loop`] swaps the counters out, turns them into
//! [`TrafficBatch`]es with ids of their own, and sends them to admin's
//! `POST /internal/traffic` with the engine → admin report key (over TLS
//! for an `https://` admin, see [`crate::internal::AdminLink`]). Admin turns them into the
//! dashboard's traffic rollups and the owners' monthly usage, which is what
//! blocks a project whose plan has used up its verifications.
//!
//! These are writes the answer does not depend on, so they are batched off
//! the hot path (ARCHITECTURE.md): counting is one short mutex-guarded map
//! update on a route that already writes a session durably. A batch that
//! could not be delivered is kept, with its id, and sent again first at the
//! next tick, so an admin outage delays counts rather than losing them, and
//! a batch whose answer was lost is not counted twice (admin keeps the ids).
//! Counts still in memory when the process is killed are lost; a graceful
//! stop sends them after the public listener has drained.
//!
//! Without an admin URL nothing is counted (there is nobody to tell).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use qyzar_shared::ids::ProjectId;
use qyzar_shared::usage::{hour_start_ms, TrafficBatch, TrafficKind, TrafficRow, MAX_BATCH_ROWS};

/// Most distinct counters (and undelivered rows) kept while admin cannot be
/// reached. Each is a few dozen bytes; past this, new counts are dropped and
/// counted in `qyzar_traffic_dropped_total` rather than growing without end.
pub const MAX_PENDING_ROWS: usize = 200_000;
/// Longest one delivery may take.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    project: ProjectId,
    hour_start_ms: i64,
    kind: TrafficKind,
    region: Option<Box<str>>,
    platform: &'static str,
}

/// The counters and the batches not yet delivered.
pub struct Traffic {
    /// Set once a reporter runs; until then [`Traffic::record`] does nothing.
    enabled: AtomicBool,
    counts: Mutex<HashMap<Key, u64>>,
    pending: Mutex<VecDeque<TrafficBatch>>,
    /// Names this process in batch ids, so ids from two engines never meet.
    instance: String,
    seq: AtomicU64,
    /// Verifications counted since start.
    pub recorded: AtomicU64,
    /// Rows admin acknowledged.
    pub delivered_rows: AtomicU64,
    /// Counts dropped because [`MAX_PENDING_ROWS`] was reached, or because
    /// admin refused a batch as malformed (a bug: logged at `error`).
    pub dropped: AtomicU64,
}

impl Default for Traffic {
    fn default() -> Self {
        Self::new()
    }
}

impl Traffic {
    /// Empty counters, disabled until [`Traffic::enable`].
    pub fn new() -> Self {
        Self {
            enabled: AtomicBool::new(false),
            counts: Mutex::new(HashMap::new()),
            pending: Mutex::new(VecDeque::new()),
            instance: qyzar_shared::crypto::random_token("eng_", 8),
            seq: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            delivered_rows: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Starts counting (a reporter will deliver the counts).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Counts one verification.
    pub fn record(
        &self,
        project: &ProjectId,
        kind: TrafficKind,
        region: Option<&str>,
        platform: &'static str,
        now_ms: i64,
    ) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let key = Key {
            project: project.clone(),
            hour_start_ms: hour_start_ms(now_ms),
            kind,
            region: region.map(Into::into),
            platform,
        };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&key) {
            *n += 1;
        } else if counts.len() < MAX_PENDING_ROWS {
            counts.insert(key, 1);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves the counters into numbered batches at the end of the queue.
    fn seal(&self) {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()));
        if counts.is_empty() {
            return;
        }
        let rows: Vec<TrafficRow> = counts
            .into_iter()
            .map(|(k, count)| TrafficRow {
                project_id: k.project.to_string(),
                hour_start_ms: k.hour_start_ms,
                kind: k.kind,
                region: k.region.map(String::from).unwrap_or_default(),
                platform: k.platform.to_owned(),
                count,
            })
            .collect();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut queued: usize = pending.iter().map(|b| b.rows.len()).sum();
        for chunk in rows.chunks(MAX_BATCH_ROWS) {
            if queued + chunk.len() > MAX_PENDING_ROWS {
                let lost: u64 = chunk.iter().map(|r| r.count).sum();
                self.dropped.fetch_add(lost, Ordering::Relaxed);
                tracing::error!(
                    lost,
                    "traffic counts dropped: admin has not taken a batch for too long"
                );
                continue;
            }
            queued += chunk.len();
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            pending.push_back(TrafficBatch {
                batch_id: format!("{}-{seq}", self.instance),
                rows: chunk.to_vec(),
            });
        }
    }

    fn front(&self) -> Option<TrafficBatch> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .cloned()
    }

    fn pop_front(&self, batch_id: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.front().is_some_and(|b| b.batch_id == batch_id) {
            pending.pop_front();
        }
    }

    /// Rows counted or queued and not yet acknowledged by admin.
    pub fn undelivered_rows(&self) -> usize {
        let counted = self.counts.lock().unwrap_or_else(|e| e.into_inner()).len();
        let queued: usize = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|b| b.rows.len())
            .sum();
        counted + queued
    }
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The admin url or key cannot make a request.
    #[error("{0}")]
    Url(String),
    /// Admin could not be reached, or did not answer in time.
    #[error("request failed: {0}")]
    Request(String),
    /// Admin answered with an error status; 4xx other than 401/403 means
    /// the batch itself was refused.
    #[error("admin answered {0}")]
    Status(StatusCode),
}

/// Admin's traffic endpoint with a client and credentials, built once.
pub struct Reporter {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    authorization: Option<HeaderValue>,
}

impl Reporter {
    /// A reporter for `{admin_url}/internal/traffic` with `key` and the
    /// public CA roots for https; see [`Reporter::with_link`].
    pub fn new(admin_url: &str, key: Option<&str>) -> Result<Self, ReportError> {
        Self::with_link(&crate::internal::AdminLink::new(
            admin_url,
            key.map(str::to_owned),
        ))
    }

    /// A reporter for `{url}/internal/traffic` of `link` (the same URL rules
    /// and TLS trust as the snapshot pull).
    pub fn with_link(link: &crate::internal::AdminLink) -> Result<Self, ReportError> {
        // Same checks as the pull: http or https, a host, no credentials.
        crate::internal::admin_snapshot_uri(&link.url).map_err(ReportError::Url)?;
        let uri: Uri = format!("{}/internal/traffic", link.url.trim_end_matches('/'))
            .parse()
            .map_err(|e: http::uri::InvalidUri| ReportError::Url(e.to_string()))?;
        Ok(Self {
            client: link.client().map_err(ReportError::Url)?,
            uri,
            authorization: link.authorization().map_err(ReportError::Url)?,
        })
    }

    /// Seals the current counters into batches and sends every queued batch
    /// in order, stopping at the first failure (kept for the next flush).
    /// A batch admin refuses as malformed is dropped and logged: sending it
    /// again would fail the same way and hold up every later batch.
    pub async fn flush(&self, traffic: &Traffic) -> Result<usize, ReportError> {
        traffic.seal();
        let mut sent = 0;
        while let Some(batch) = traffic.front() {
            match self.send(&batch).await {
                Ok(()) => {
                    traffic
                        .delivered_rows
                        .fetch_add(batch.rows.len() as u64, Ordering::Relaxed);
                    sent += batch.rows.len();
                }
                Err(ReportError::Status(s))
                    if s.is_client_error()
                        && s != StatusCode::UNAUTHORIZED
                        && s != StatusCode::FORBIDDEN
                        && s != StatusCode::TOO_MANY_REQUESTS =>
                {
                    let lost: u64 = batch.rows.iter().map(|r| r.count).sum();
                    traffic.dropped.fetch_add(lost, Ordering::Relaxed);
                    tracing::error!(status = %s, batch = %batch.batch_id, lost, "admin refused a traffic batch; dropped");
                }
                Err(e) => return Err(e),
            }
            traffic.pop_front(&batch.batch_id);
        }
        Ok(sent)
    }

    async fn send(&self, batch: &TrafficBatch) -> Result<(), ReportError> {
        let body = serde_json::to_vec(batch).map_err(|e| ReportError::Url(e.to_string()))?;
        let mut req = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ReportError::Request(e.to_string()))?;
        let res = tokio::time::timeout(REPORT_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| ReportError::Request(format!("no answer within {REPORT_TIMEOUT:?}")))?
            .map_err(|e| ReportError::Request(e.to_string()))?;
        let status = res.status();
        // Read the (small) answer so the connection can be reused.
        let _ = tokio::time::timeout(REPORT_TIMEOUT, res.into_body().collect()).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(ReportError::Status(status))
        }
    }
}

/// Reports every `every` until `shutdown` resolves, then once more, so a
/// graceful stop delivers what was counted. Start it after the public
/// listener's drain is wired to `shutdown` (see `config::start`).
pub async fn report_loop(
    traffic: Arc<Traffic>,
    admin_url: String,
    key: Option<String>,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let link = crate::internal::AdminLink::new(admin_url, key);
    report_loop_with(traffic, link, every, shutdown).await
}

/// [`report_loop`] over `admin`, with its TLS trust.
pub async fn report_loop_with(
    traffic: Arc<Traffic>,
    admin: crate::internal::AdminLink,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let reporter = match Reporter::with_link(&admin) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "traffic reporting disabled");
            return;
        }
    };
    traffic.enable();
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(50)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        if let Err(e) = reporter.flush(&traffic).await {
            tracing::warn!(error = %e, undelivered = traffic.undelivered_rows(), "traffic report failed; kept for the next one");
        }
    }
    if let Err(e) = reporter.flush(&traffic).await {
        tracing::warn!(error = %e, undelivered = traffic.undelivered_rows(), "last traffic report failed; those counts are lost");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// A stand-in admin on a random port: answers each request with the
    /// next status of `script` (then 200) and records the batches it got.
    async fn fake_admin(script: Vec<u16>) -> (String, Arc<StdMutex<Vec<TrafficBatch>>>) {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let script = Arc::new(StdMutex::new(VecDeque::from(script)));
        let (seen2, script2) = (Arc::clone(&seen), Arc::clone(&script));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (seen, script) = (Arc::clone(&seen2), Arc::clone(&script2));
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, script) = (Arc::clone(&seen), Arc::clone(&script));
                        async move {
                            assert_eq!(req.uri().path(), "/internal/traffic");
                            assert_eq!(req.headers()[AUTHORIZATION], "Bearer k");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let batch: TrafficBatch = serde_json::from_slice(&body).unwrap();
                            seen.lock().unwrap().push(batch);
                            let status = script.lock().unwrap().pop_front().unwrap_or(200);
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"{}")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn a_failed_report_is_resent_with_its_id_and_a_refused_one_is_dropped() {
        let t = Traffic::new();
        t.enable();
        let p = ProjectId::generate();
        let now = qyzar_shared::time::now_ms();
        // Admin is down (503) for the first try, then takes it.
        let (url, seen) = fake_admin(vec![503]).await;
        let reporter = Reporter::new(&url, Some("k")).unwrap();
        t.record(&p, TrafficKind::Connect, Some("DE"), "desktop", now);
        assert!(reporter.flush(&t).await.is_err());
        assert_eq!(t.undelivered_rows(), 1, "kept for the next report");
        t.record(&p, TrafficKind::Reverify, None, "mobile", now);
        assert_eq!(reporter.flush(&t).await.unwrap(), 2);
        assert_eq!(t.undelivered_rows(), 0);
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "first try, its resend, then the newer batch");
        assert_eq!(got[0], got[1], "the resend is the same batch, same id");
        assert_ne!(got[1].batch_id, got[2].batch_id);
        assert_eq!(got[2].rows[0].kind, TrafficKind::Reverify);
        assert_eq!(t.delivered_rows.load(Ordering::Relaxed), 2);

        // A batch admin refuses as malformed (422) is dropped, not retried forever.
        let (url, seen) = fake_admin(vec![422]).await;
        let reporter = Reporter::new(&url, Some("k")).unwrap();
        t.record(&p, TrafficKind::Connect, None, "desktop", now);
        assert_eq!(reporter.flush(&t).await.unwrap(), 0);
        assert_eq!(t.undelivered_rows(), 0);
        assert_eq!(t.dropped.load(Ordering::Relaxed), 1);
        // A wrong key (401) is a configuration fault: kept and retried.
        let (url, _) = fake_admin(vec![401]).await;
        let reporter = Reporter::new(&url, Some("k")).unwrap();
        t.record(&p, TrafficKind::Connect, None, "desktop", now);
        assert!(reporter.flush(&t).await.is_err());
        assert_eq!(t.undelivered_rows(), 1);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn admin_urls_are_checked_like_the_pull() {
        assert!(Reporter::new("ftp://admin:1", None).is_err());
        assert!(Reporter::new("https://admin:1", None).is_ok());
        assert!(Reporter::new("http://user:pw@admin:1", None).is_err());
        assert!(Reporter::new("http://admin:1/", Some("k")).is_ok());
    }

    #[test]
    fn counts_are_keyed_and_sealed_in_order() {
        let t = Traffic::new();
        let p = ProjectId::generate();
        let now = 1_700_000_000_000;
        t.record(&p, TrafficKind::Connect, Some("DE"), "desktop", now);
        assert_eq!(t.undelivered_rows(), 0, "disabled until a reporter runs");
        t.enable();
        for _ in 0..3 {
            t.record(&p, TrafficKind::Connect, Some("DE"), "desktop", now);
        }
        t.record(&p, TrafficKind::Reverify, None, "mobile", now);
        t.seal();
        let b = t.front().unwrap();
        assert_eq!(b.rows.len(), 2);
        let connect = b
            .rows
            .iter()
            .find(|r| r.kind == TrafficKind::Connect)
            .unwrap();
        assert_eq!((connect.count, connect.region.as_str()), (3, "DE"));
        assert_eq!(connect.hour_start_ms % 3_600_000, 0);
        assert!(b.validate(now).is_ok());
        // A failed delivery keeps the batch, with its id, ahead of new ones.
        t.record(&p, TrafficKind::Connect, None, "desktop", now);
        t.seal();
        assert_eq!(t.front().unwrap().batch_id, b.batch_id);
        t.pop_front(&b.batch_id);
        assert_ne!(t.front().unwrap().batch_id, b.batch_id);
        assert_eq!(t.recorded.load(Ordering::Relaxed), 5);
    }
}
