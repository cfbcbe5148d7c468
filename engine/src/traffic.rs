//! Hot-path traffic, counted in memory and reported to admin.
//!
//! Every answer of the counted routes (connect, reverify, session-verify,
//! token mint and verify, rate-limit-check, ato-login-attempt) adds one to
//! a counter keyed by (project, UTC minute, route, outcome, region,
//! platform, browser); see [`qyzar_shared::usage`] for the row and which
//! rows are verifications. Every few seconds the [`report_loop`] swaps the
//! counters out, turns them into [`TrafficBatch`]es with ids of their own,
//! and sends them to admin's `POST /internal/traffic` with the engine →
//! admin report key (over TLS for an `https://` admin, see
//! [`qyzar_shared::control`]). Admin turns them into the dashboard's
//! minute/hour/day rollups and the owners' monthly usage, which is what
//! blocks a project whose plan has used up its verifications.
//!
//! These are writes the answer does not depend on, so they are batched off
//! the hot path (ARCHITECTURE.md). Counting is one short mutex-guarded map
//! update, never held across an await; the key is `Copy` with its strings
//! inline ([`Tag`]), so a count for a key already seen allocates nothing.
//!
//! **Bounded, with a share per project.** Each project may open at most
//! [`MAX_KEYS_PER_PROJECT_MINUTE`] new detailed keys per UTC minute, and all
//! projects together [`MAX_PENDING_ROWS`]; past either, the project's counts
//! go to its folded key (region [`OTHER_REGION`], platform and browser
//! [`OTHER_TAG`]), of which there are at most routes × outcomes per minute.
//! So a tenant sending a flood of distinct regions or browsers loses detail
//! for itself only: totals stay exact and no other tenant's counters are
//! touched or refused. Projects are known ones (the routes count only after
//! the project secret or session checked out), so the number of folded
//! keys is bounded by the snapshot.
//!
//! A batch that could not be delivered is kept, with its id, and sent again
//! first at the next tick, so an admin outage delays counts rather than
//! losing them, and a batch whose answer was lost is not counted twice
//! (admin keeps the ids). Counts still in memory when the process is killed
//! are lost; a graceful stop sends them after the public listener has
//! drained.
//!
//! Without an admin URL nothing is counted (there is nobody to tell).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use qyzar_shared::control::{ControlClient, ControlError, Direction, Link};
use qyzar_shared::usage::{
    minute_start_ms, valid_region, valid_tag, TrafficBatch, TrafficOutcome, TrafficRoute,
    TrafficRow, MAX_BATCH_ROWS, MAX_TAG_LEN, OTHER_REGION, OTHER_TAG,
};

/// Most detailed counters held at once over all projects (and most rows
/// queued while admin cannot be reached). A counter is about 100 bytes with
/// its map slot, so this bounds the counters near 20 MB; past it, counts
/// are folded (see the module docs) and queued rows are dropped and counted
/// in `qyzar_traffic_dropped_total` rather than growing without end.
pub const MAX_PENDING_ROWS: usize = 200_000;
/// Distinct detailed keys a project may open per UTC minute: enough for
/// every real (route, outcome, region, platform, browser) mix a dashboard
/// shows, small enough that a thousand busy tenants fit [`MAX_PENDING_ROWS`].
pub const MAX_KEYS_PER_PROJECT_MINUTE: u32 = 256;
/// Longest one delivery may take.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A short ASCII string stored inline, so a key is `Copy` and hashing or
/// comparing it touches no heap. Anything that is not a valid row value
/// (too long, odd bytes) becomes `other` when built, so a client cannot put
/// arbitrary text into a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag {
    len: u8,
    bytes: [u8; MAX_TAG_LEN],
}

impl Tag {
    const EMPTY: Tag = Tag {
        len: 0,
        bytes: [0; MAX_TAG_LEN],
    };

    fn copy(s: &str) -> Tag {
        let mut t = Tag::EMPTY;
        t.bytes[..s.len()].copy_from_slice(s.as_bytes());
        t.len = s.len() as u8;
        t
    }

    /// A region: empty when unknown, `OTHER` when not a valid code.
    fn region(s: Option<&str>) -> Tag {
        match s {
            None => Tag::EMPTY,
            Some(s) if valid_region(s) => Tag::copy(s),
            Some(_) => Tag::copy(OTHER_REGION),
        }
    }

    /// A platform or browser: `unknown` names stay as the parser gave them;
    /// invalid ones become `other`.
    fn name(s: &str) -> Tag {
        if valid_tag(s) {
            Tag::copy(s)
        } else {
            Tag::copy(OTHER_TAG)
        }
    }

    fn as_str(&self) -> &str {
        // Built only from valid ASCII in `copy`.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// What a counted call says about its client: where it came from and what
/// it runs. Routes called by a customer's backend with no session to
/// describe use [`Dims::SERVER`].
#[derive(Debug, Clone, Copy)]
pub struct Dims<'a> {
    /// Country or region code, when known.
    pub region: Option<&'a str>,
    /// Form factor (`desktop`, `mobile`, …).
    pub platform: &'a str,
    /// Browser name (`Chrome`, …).
    pub browser: &'a str,
}

impl Dims<'static> {
    /// A browser call refused before its user agent was read.
    pub const UNKNOWN: Dims<'static> = Dims {
        region: None,
        platform: "unknown",
        browser: "",
    };
    /// A call from a customer's backend: the request's own user agent and
    /// address are the backend's, not a visitor's, so they are not counted.
    pub const SERVER: Dims<'static> = Dims {
        region: None,
        platform: "server",
        browser: "",
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    minute_start_ms: i64,
    route: TrafficRoute,
    outcome: TrafficOutcome,
    region: Tag,
    platform: Tag,
    browser: Tag,
}

impl Key {
    fn folded(self) -> Key {
        Key {
            region: Tag::copy(OTHER_REGION),
            platform: Tag::copy(OTHER_TAG),
            browser: Tag::copy(OTHER_TAG),
            ..self
        }
    }
}

/// One project's counters and its share of new keys this minute.
/// The counters' hasher: foldhash (seeded per process) instead of SipHash,
/// for two lookups on every answer of every route. Both maps hold only
/// authenticated projects and per-project capped keys, so the keys an
/// attacker chooses are bounded in number whatever the hash.
type FastHash = foldhash::fast::RandomState;

#[derive(Default)]
struct ProjectCounts {
    counts: HashMap<Key, u64, FastHash>,
    /// The UTC minute `opened` counts for.
    minute_start_ms: i64,
    /// Detailed keys opened in that minute (across seals, so a tenant
    /// cannot get a fresh share every tick).
    opened: u32,
}

#[derive(Default)]
struct Counters {
    /// Keyed by the project id as text, so routes holding only a checked
    /// `&str` (session-verify) count without building a `ProjectId`.
    projects: HashMap<Box<str>, ProjectCounts, FastHash>,
    /// Detailed keys held over all projects.
    detailed: usize,
}

/// The counters and the batches not yet delivered.
pub struct Traffic {
    /// Set once a reporter runs; until then [`Traffic::record`] does nothing.
    enabled: AtomicBool,
    counts: Mutex<Counters>,
    pending: Mutex<VecDeque<TrafficBatch>>,
    /// Names this process in batch ids, so ids from two engines never meet.
    instance: String,
    seq: AtomicU64,
    /// Verifications counted since start.
    pub recorded: AtomicU64,
    /// Calls counted since start, verifications or not.
    pub counted: AtomicU64,
    /// Calls counted under a project's folded key because it (or all
    /// projects together) used up its share of detailed keys.
    pub folded: AtomicU64,
    /// Rows admin acknowledged.
    pub delivered_rows: AtomicU64,
    /// Counts dropped because [`MAX_PENDING_ROWS`] rows were queued, or
    /// because admin refused a batch as malformed (a bug: logged at `error`).
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
            counts: Mutex::new(Counters::default()),
            pending: Mutex::new(VecDeque::new()),
            instance: qyzar_shared::crypto::random_token("eng_", 8),
            seq: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            counted: AtomicU64::new(0),
            folded: AtomicU64::new(0),
            delivered_rows: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Starts counting (a reporter will deliver the counts).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Counts one answer of `route` for an authenticated `project` (a
    /// checked project id: the routes count only after authorising).
    pub fn record(
        &self,
        project: &str,
        route: TrafficRoute,
        outcome: TrafficOutcome,
        dims: Dims<'_>,
        now_ms: i64,
    ) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let key = Key {
            minute_start_ms: minute_start_ms(now_ms),
            route,
            outcome,
            region: Tag::region(dims.region),
            platform: Tag::name(dims.platform),
            browser: Tag::name(dims.browser),
        };
        let folded = {
            let mut guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let c = &mut *guard;
            let p = match c.projects.get_mut(project) {
                Some(p) => p,
                None => c.projects.entry(project.into()).or_default(),
            };
            if let Some(n) = p.counts.get_mut(&key) {
                *n += 1;
                false
            } else {
                if p.minute_start_ms != key.minute_start_ms {
                    p.minute_start_ms = key.minute_start_ms;
                    p.opened = 0;
                }
                if p.opened < MAX_KEYS_PER_PROJECT_MINUTE && c.detailed < MAX_PENDING_ROWS {
                    p.opened += 1;
                    c.detailed += 1;
                    p.counts.insert(key, 1);
                    false
                } else {
                    *p.counts.entry(key.folded()).or_insert(0) += 1;
                    true
                }
            }
        };
        if folded {
            self.folded.fetch_add(1, Ordering::Relaxed);
        }
        self.counted.fetch_add(1, Ordering::Relaxed);
        if outcome == TrafficOutcome::Ok
            && matches!(route, TrafficRoute::Connect | TrafficRoute::Reverify)
        {
            self.recorded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes every counter out as rows, keeping each project's share of
    /// this minute (a project with nothing left and an old minute is let go).
    fn take_rows(&self) -> Vec<TrafficRow> {
        let mut guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let c = &mut *guard;
        let mut rows = Vec::new();
        let newest = c
            .projects
            .values()
            .map(|p| p.minute_start_ms)
            .max()
            .unwrap_or(0);
        c.projects.retain(|project, p| {
            for (k, count) in p.counts.drain() {
                rows.push(TrafficRow {
                    project_id: project.to_string(),
                    minute_start_ms: k.minute_start_ms,
                    route: k.route,
                    outcome: k.outcome,
                    region: k.region.as_str().to_owned(),
                    platform: k.platform.as_str().to_owned(),
                    browser: k.browser.as_str().to_owned(),
                    count,
                });
            }
            p.minute_start_ms == newest
        });
        c.detailed = 0;
        rows
    }

    /// Moves the counters into numbered batches at the end of the queue.
    fn seal(&self) {
        let rows = self.take_rows();
        if rows.is_empty() {
            return;
        }
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
        let counted: usize = self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .projects
            .values()
            .map(|p| p.counts.len())
            .sum();
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

/// Why a report failed: the control plane's error ([`ControlError`]).
pub type ReportError = ControlError;

/// Admin's traffic endpoint through the control-plane client, built once.
pub struct Reporter {
    client: ControlClient,
}

impl Reporter {
    /// A reporter for admin at `admin_url` with `key` and the public CA
    /// roots for https; see [`Reporter::with_link`].
    pub fn new(admin_url: &str, key: Option<&str>) -> Result<Self, ReportError> {
        Self::with_link(&Link::new(admin_url, key.map(str::to_owned)))
    }

    /// A reporter for admin at `link` (the same URL rules and TLS trust as
    /// the snapshot pull).
    pub fn with_link(link: &Link) -> Result<Self, ReportError> {
        Ok(Self {
            client: ControlClient::new(link, Direction::Report, "the admin url")
                .map_err(ControlError::Url)?,
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
            match self.client.report_traffic(&batch, REPORT_TIMEOUT).await {
                Ok(_) => {
                    traffic
                        .delivered_rows
                        .fetch_add(batch.rows.len() as u64, Ordering::Relaxed);
                    sent += batch.rows.len();
                }
                Err(ControlError::Status(s))
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
    let link = Link::new(admin_url, key);
    report_loop_with(traffic, link, every, shutdown).await
}

/// [`report_loop`] over `admin`, with its TLS trust.
pub async fn report_loop_with(
    traffic: Arc<Traffic>,
    admin: Link,
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
    let mut ticks =
        qyzar_shared::periodic::Periodic::new(every.max(Duration::from_millis(50)), shutdown);
    while ticks.tick().await {
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
    use bytes::Bytes;
    use http::header::AUTHORIZATION;
    use http::Request;
    use http_body_util::{BodyExt, Full};
    use qyzar_shared::ids::ProjectId;
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
                            let answer =
                                serde_json::to_vec(&qyzar_shared::control::TrafficAnswer {
                                    rows: batch.rows.len(),
                                    ignored_rows: 0,
                                    duplicate: false,
                                })
                                .unwrap();
                            seen.lock().unwrap().push(batch);
                            let status = script.lock().unwrap().pop_front().unwrap_or(200);
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(answer)))
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
        let p = ProjectId::generate().to_string();
        let now = qyzar_shared::time::now_ms();
        // Admin is down (503) for the first try, then takes it.
        let (url, seen) = fake_admin(vec![503]).await;
        let reporter = Reporter::new(&url, Some("k")).unwrap();
        t.record(
            &p,
            TrafficRoute::Connect,
            TrafficOutcome::Ok,
            Dims {
                region: Some("DE"),
                platform: "desktop",
                browser: "Chrome",
            },
            now,
        );
        assert!(reporter.flush(&t).await.is_err());
        assert_eq!(t.undelivered_rows(), 1, "kept for the next report");
        t.record(
            &p,
            TrafficRoute::Reverify,
            TrafficOutcome::Ok,
            Dims {
                region: None,
                platform: "mobile",
                browser: "Chrome",
            },
            now,
        );
        assert_eq!(reporter.flush(&t).await.unwrap(), 2);
        assert_eq!(t.undelivered_rows(), 0);
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "first try, its resend, then the newer batch");
        assert_eq!(got[0], got[1], "the resend is the same batch, same id");
        assert_ne!(got[1].batch_id, got[2].batch_id);
        assert_eq!(got[2].rows[0].route, TrafficRoute::Reverify);
        assert_eq!(t.delivered_rows.load(Ordering::Relaxed), 2);

        // A batch admin refuses as malformed (422) is dropped, not retried forever.
        let (url, seen) = fake_admin(vec![422]).await;
        let reporter = Reporter::new(&url, Some("k")).unwrap();
        t.record(
            &p,
            TrafficRoute::Connect,
            TrafficOutcome::Ok,
            Dims {
                region: None,
                platform: "desktop",
                browser: "Chrome",
            },
            now,
        );
        assert_eq!(reporter.flush(&t).await.unwrap(), 0);
        assert_eq!(t.undelivered_rows(), 0);
        assert_eq!(t.dropped.load(Ordering::Relaxed), 1);
        // A wrong key (401) is a configuration fault: kept and retried.
        let (url, _) = fake_admin(vec![401]).await;
        let reporter = Reporter::new(&url, Some("k")).unwrap();
        t.record(
            &p,
            TrafficRoute::Connect,
            TrafficOutcome::Ok,
            Dims {
                region: None,
                platform: "desktop",
                browser: "Chrome",
            },
            now,
        );
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
        let p = ProjectId::generate().to_string();
        let now = 1_700_000_000_000;
        t.record(
            &p,
            TrafficRoute::Connect,
            TrafficOutcome::Ok,
            Dims {
                region: Some("DE"),
                platform: "desktop",
                browser: "Chrome",
            },
            now,
        );
        assert_eq!(t.undelivered_rows(), 0, "disabled until a reporter runs");
        t.enable();
        for _ in 0..3 {
            t.record(
                &p,
                TrafficRoute::Connect,
                TrafficOutcome::Ok,
                Dims {
                    region: Some("DE"),
                    platform: "desktop",
                    browser: "Chrome",
                },
                now,
            );
        }
        t.record(
            &p,
            TrafficRoute::Reverify,
            TrafficOutcome::Ok,
            Dims {
                region: None,
                platform: "mobile",
                browser: "Chrome",
            },
            now,
        );
        t.seal();
        let b = t.front().unwrap();
        assert_eq!(b.rows.len(), 2);
        let connect = b
            .rows
            .iter()
            .find(|r| r.route == TrafficRoute::Connect)
            .unwrap();
        assert_eq!((connect.count, connect.region.as_str()), (3, "DE"));
        assert_eq!(connect.minute_start_ms % 60_000, 0);
        assert_eq!(connect.browser, "Chrome");
        assert!(b.validate(now).is_ok());
        // A failed delivery keeps the batch, with its id, ahead of new ones.
        t.record(
            &p,
            TrafficRoute::Connect,
            TrafficOutcome::Ok,
            Dims {
                region: None,
                platform: "desktop",
                browser: "Chrome",
            },
            now,
        );
        t.seal();
        assert_eq!(t.front().unwrap().batch_id, b.batch_id);
        t.pop_front(&b.batch_id);
        assert_ne!(t.front().unwrap().batch_id, b.batch_id);
        assert_eq!(t.recorded.load(Ordering::Relaxed), 5);
    }

    /// Rows of `p` in the sealed batches.
    fn rows_of(t: &Traffic, p: &str) -> Vec<TrafficRow> {
        let pending = t.pending.lock().unwrap();
        pending
            .iter()
            .flat_map(|b| b.rows.iter())
            .filter(|r| r.project_id == p)
            .cloned()
            .collect()
    }

    #[test]
    fn a_flood_of_distinct_regions_stays_bounded_and_leaves_other_tenants_alone() {
        let t = Traffic::new();
        t.enable();
        let (noisy, quiet) = (
            ProjectId::generate().to_string(),
            ProjectId::generate().to_string(),
        );
        let now = 1_700_000_000_000;
        fn dims(region: &str) -> Dims<'_> {
            Dims {
                region: Some(region),
                platform: "desktop",
                browser: "Chrome",
            }
        }
        t.record(
            &quiet,
            TrafficRoute::Connect,
            TrafficOutcome::Ok,
            dims("DE"),
            now,
        );
        for i in 0..100_000u32 {
            let region = format!("R{i:05}");
            t.record(
                &noisy,
                TrafficRoute::Connect,
                TrafficOutcome::Ok,
                dims(&region),
                now,
            );
        }
        // A browser name a client made up is not a key either.
        t.record(
            &noisy,
            TrafficRoute::SessionVerify,
            TrafficOutcome::Ok,
            Dims {
                region: Some("lower"),
                platform: "desktop",
                browser: "<script>alert(1)</script>",
            },
            now,
        );
        t.record(
            &quiet,
            TrafficRoute::Connect,
            TrafficOutcome::Ok,
            dims("DE"),
            now,
        );
        let cap = MAX_KEYS_PER_PROJECT_MINUTE as usize;
        assert!(
            t.undelivered_rows() <= cap + 1 + TrafficRoute::ALL.len() * TrafficOutcome::ALL.len(),
            "{} counters held",
            t.undelivered_rows()
        );
        assert_eq!(t.counted.load(Ordering::Relaxed), 100_003);
        assert_eq!(t.folded.load(Ordering::Relaxed), 100_001 - cap as u64);
        t.seal();
        for b in t.pending.lock().unwrap().iter() {
            assert!(b.validate(now).is_ok(), "sealed rows are valid rows");
        }
        // The noisy tenant: totals exact, detail capped, the rest folded.
        let rows = rows_of(&t, &noisy);
        let total: u64 = rows.iter().map(|r| r.count).sum();
        assert_eq!(total, 100_001);
        let detailed = rows.iter().filter(|r| r.region != OTHER_REGION).count();
        assert_eq!(detailed, cap);
        let folded: u64 = rows
            .iter()
            .filter(|r| r.region == OTHER_REGION && r.route == TrafficRoute::Connect)
            .map(|r| r.count)
            .sum();
        assert_eq!(folded, 100_000 - cap as u64);
        let odd = rows
            .iter()
            .find(|r| r.route == TrafficRoute::SessionVerify)
            .unwrap();
        assert_eq!(odd.region, OTHER_REGION);
        assert_eq!(odd.browser, OTHER_TAG);
        // The quiet tenant kept its own detailed count.
        let rows = rows_of(&t, &quiet);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].region.as_str(), rows[0].count), ("DE", 2));

        // The share is per minute, across seals: the noisy tenant gets no
        // fresh share at the next tick of the same minute …
        t.record(
            &noisy,
            TrafficRoute::Connect,
            TrafficOutcome::Ok,
            dims("NEW"),
            now + 1,
        );
        assert_eq!(t.folded.load(Ordering::Relaxed), 100_002 - cap as u64);
        // … and a fresh one in the next minute.
        t.record(
            &noisy,
            TrafficRoute::Connect,
            TrafficOutcome::Ok,
            dims("NEW"),
            now + 60_000,
        );
        assert_eq!(t.folded.load(Ordering::Relaxed), 100_002 - cap as u64);
    }

    #[test]
    fn outcomes_and_server_calls_are_counted_apart_from_verifications() {
        let t = Traffic::new();
        t.enable();
        let p = ProjectId::generate().to_string();
        let now = 1_700_000_000_000;
        t.record(
            &p,
            TrafficRoute::RateLimitCheck,
            TrafficOutcome::Denied,
            Dims::SERVER,
            now,
        );
        t.record(
            &p,
            TrafficRoute::RateLimitCheck,
            TrafficOutcome::Denied,
            Dims::SERVER,
            now,
        );
        t.record(
            &p,
            TrafficRoute::AtoLoginAttempt,
            TrafficOutcome::Blocked,
            Dims::SERVER,
            now,
        );
        assert_eq!(t.recorded.load(Ordering::Relaxed), 0, "not verifications");
        t.seal();
        let rows = rows_of(&t, &p);
        assert_eq!(rows.len(), 2);
        let denied = rows
            .iter()
            .find(|r| r.outcome == TrafficOutcome::Denied)
            .unwrap();
        assert_eq!(
            (
                denied.count,
                denied.platform.as_str(),
                denied.region.as_str()
            ),
            (2, "server", "")
        );
        assert!(rows.iter().all(|r| !r.is_verification()));
    }
}
