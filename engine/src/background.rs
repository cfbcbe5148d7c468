//! Writes the answer does not depend on, batched off the hot path:
//! last-seen touches, rate-limit and anti-ATO deny events and the
//! dashboard's device index. Flushed every [`FLUSH_EVERY`] and on shutdown.
//!
//! **Bounded, with a share per project.** The hot path adds to one pending
//! batch under a short lock (coalescing a session's touches and a device's
//! sightings of a day as it goes); the writer swaps the batch out and
//! writes it. Each project may hold at most [`TOUCHES_PER_PROJECT`]
//! sessions, [`DENIES_PER_PROJECT`] deny events and
//! [`DEVICE_DAYS_PER_PROJECT`] device-days in one batch, and the batch at
//! most [`MAX_PENDING`] entries in all; what is over is dropped and counted.
//! So a tenant flooding denies, or a store that stalls while one tenant
//! keeps writing, loses only that tenant's excess, and another tenant's
//! writes still get into the batch (a single shared queue let one tenant's
//! burst fill it for everyone).
//!
//! **Denies are sampled, not cut.** Past its share in one batch, a
//! project's deny events are a uniform random sample of all it was denied
//! since the last flush (reservoir sampling), so the dashboard's top
//! buckets and keys, read from the newest rows, describe the whole flood
//! and not its first half-second's few thousand calls. The share is small
//! on purpose: each row is a store write, and at 5 000 rows a project per
//! flush the engine's store writer spent 5–10 ms at a stretch on one
//! flooding tenant's denies, on the core that serves every tenant
//! (BENCHMARKS.md, "Rate-limit-check's tail: one tenant's deny events").
//! A deny that is not kept costs its call one lock and no allocation: the
//! event is built only when it goes into the sample.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use qyzar_store::{DataStore, DenyEvent, DeviceDay, SessionTouch};
use tokio::sync::{oneshot, Notify};

/// How often pending writes go to the store.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Entries (sessions, deny events, device-days) one batch may hold in all:
/// a few hundred bytes each, so some tens of MB at most while the store is
/// down.
pub const MAX_PENDING: usize = 200_000;
/// Sessions one project may have pending touches for.
pub const TOUCHES_PER_PROJECT: usize = 20_000;
/// Deny events one project may have pending in one batch: a uniform
/// sample of its denies since the last flush when there were more (at
/// most 512 rows a second; the dashboard reads the newest 1 000).
pub const DENIES_PER_PROJECT: usize = 256;
/// Distinct device-days one project may have pending, so a tenant opening
/// sessions from millions of fresh fingerprints cannot crowd another
/// tenant's devices out of a batch or grow it without bound.
pub const DEVICE_DAYS_PER_PROJECT: usize = 5_000;

/// Handle to the background writer.
pub struct Background {
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    pending: Mutex<Batch>,
    /// Wakes the writer for an early flush.
    wake: Notify,
    /// Set at shutdown: a later flush has no writer to wait for.
    closed: AtomicBool,
    dropped: AtomicU64,
    dropped_devices: AtomicU64,
    /// Deny events left out of (or replaced in) a project's sample.
    sampled_out: AtomicU64,
}

impl Shared {
    fn batch(&self) -> MutexGuard<'_, Batch> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Background {
    /// Starts the writer task over `store`.
    pub fn spawn(store: Arc<dyn DataStore>) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Batch::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            dropped_devices: AtomicU64::new(0),
            sampled_out: AtomicU64::new(0),
        });
        let task = tokio::spawn(writer(store, Arc::clone(&shared)));
        Self {
            shared,
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues a last-seen update (coalesced per session).
    pub fn touch(
        &self,
        project: &ProjectId,
        session: &SessionId,
        last_seen_at: i64,
        expires_at: i64,
    ) {
        let added = self
            .shared
            .batch()
            .touch(project, session, last_seen_at, expires_at);
        self.count(added, false);
    }

    /// Queues a device seen by `/connect` for the dashboard's device index
    /// (coalesced per project, device and day).
    pub fn device_seen(&self, row: DeviceDay) {
        let added = self.shared.batch().device(row);
        self.count(added, true);
    }

    /// Queues a deny event of `project` for analytics; `event` is called
    /// only if the event goes into the project's sample (see the module
    /// docs), so a flood's unkept denies allocate nothing.
    pub fn deny(&self, project: &ProjectId, event: impl FnOnce() -> DenyEvent) {
        match self.shared.batch().deny(project, event) {
            Kept::Yes => {}
            Kept::SampledOut => {
                self.shared.sampled_out.fetch_add(1, Ordering::Relaxed);
            }
            Kept::Dropped => self.count(false, false),
        }
    }

    /// Deny events left out of their project's sample since start: the
    /// project was denied more than [`DENIES_PER_PROJECT`] times between
    /// two flushes.
    pub fn denies_sampled_out(&self) -> u64 {
        self.shared.sampled_out.load(Ordering::Relaxed)
    }

    fn count(&self, added: bool, device: bool) {
        if !added {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            if device {
                self.shared.dropped_devices.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Device-days dropped because their project had
    /// [`DEVICE_DAYS_PER_PROJECT`] pending already (also counted in
    /// [`Self::dropped`]).
    pub fn dropped_device_days(&self) -> u64 {
        self.shared.dropped_devices.load(Ordering::Relaxed)
    }

    /// Writes everything pending so far and waits for it.
    pub async fn flush(&self) {
        if self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        // The waiter travels with the batch it must see written.
        self.shared.batch().waiters.push(tx);
        self.shared.wake.notify_one();
        let _ = rx.await;
    }

    /// Flushes, then stops the writer (used on shutdown).
    pub async fn shutdown(&self) {
        self.flush().await;
        self.shared.closed.store(true, Ordering::Release);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            t.abort();
        }
    }

    /// Writes dropped because their project's share, or the batch, was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// What one project has pending, against its shares.
#[derive(Default)]
struct Share {
    touches: usize,
    /// Its denies since the batch began, kept or not: the reservoir's count.
    denies_seen: u64,
}

/// Whether a deny event went into the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// Into the project's sample (appended, or replacing a sampled one).
    Yes,
    /// Not chosen for the project's full sample.
    SampledOut,
    /// The whole batch was full.
    Dropped,
}

#[derive(Default)]
struct Batch {
    touches: HashMap<SessionId, (ProjectId, i64, i64)>,
    /// Per project, its sample of deny events.
    denies: HashMap<ProjectId, Vec<DenyEvent>>,
    /// Per project, its device-days by (device, day).
    devices: HashMap<ProjectId, HashMap<(DeviceId, i64), DeviceDay>>,
    /// Per project, its pending touches and denies.
    shares: HashMap<ProjectId, Share>,
    /// Entries held in all.
    entries: usize,
    /// Flushes waiting for this batch to be written.
    waiters: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn full(&self) -> bool {
        self.entries >= MAX_PENDING
    }

    /// Adds a touch; `false` when it was dropped.
    fn touch(
        &mut self,
        project: &ProjectId,
        session: &SessionId,
        last_seen_at: i64,
        expires_at: i64,
    ) -> bool {
        if let Some(e) = self.touches.get_mut(session) {
            e.1 = e.1.max(last_seen_at);
            e.2 = e.2.max(expires_at);
            return true;
        }
        if self.full() {
            return false;
        }
        let share = self.shares.entry(project.clone()).or_default();
        if share.touches >= TOUCHES_PER_PROJECT {
            return false;
        }
        share.touches += 1;
        self.entries += 1;
        self.touches
            .insert(session.clone(), (project.clone(), last_seen_at, expires_at));
        true
    }

    /// Adds a deny event of `project` to its sample (Algorithm R: the
    /// n-th deny of a full sample replaces a random one with probability
    /// `DENIES_PER_PROJECT / n`, so every deny of the batch's time is
    /// equally likely to be kept). `event` runs only for a kept one.
    fn deny(&mut self, project: &ProjectId, event: impl FnOnce() -> DenyEvent) -> Kept {
        let seen = match self.shares.get_mut(project) {
            Some(share) => {
                share.denies_seen += 1;
                share.denies_seen
            }
            None => {
                if self.full() {
                    return Kept::Dropped;
                }
                self.shares.insert(
                    project.clone(),
                    Share {
                        denies_seen: 1,
                        ..Share::default()
                    },
                );
                1
            }
        };
        let full = self.full();
        let held = self.denies.get_mut(project);
        let len = held.as_ref().map_or(0, |h| h.len());
        if len < DENIES_PER_PROJECT {
            if full {
                return Kept::Dropped;
            }
            self.entries += 1;
            let e = event();
            match held {
                Some(h) => h.push(e),
                None => {
                    self.denies.insert(project.clone(), vec![e]);
                }
            }
            return Kept::Yes;
        }
        let slot = fastrand::u64(..seen);
        match (usize::try_from(slot), held) {
            (Ok(i), Some(h)) if i < h.len() => {
                h[i] = event();
                Kept::Yes
            }
            _ => Kept::SampledOut,
        }
    }

    /// Adds (or merges) a device-day; `false` when it was dropped.
    fn device(&mut self, row: DeviceDay) -> bool {
        let full = self.full();
        let per_project = self.devices.entry(row.project_id.clone()).or_default();
        let key = (row.device_id.clone(), row.day);
        if let Some(held) = per_project.get_mut(&key) {
            held.merge(&row);
            return true;
        }
        if full || per_project.len() >= DEVICE_DAYS_PER_PROJECT {
            return false;
        }
        per_project.insert(key, row);
        self.entries += 1;
        true
    }

    async fn write(&mut self, store: &dyn DataStore) {
        // All at once: the store writes them in a few transactions instead
        // of one each (`DataStore::touch_sessions`).
        let touches: Vec<SessionTouch> = self
            .touches
            .drain()
            .map(
                |(session, (project, last_seen_at, expires_at))| SessionTouch {
                    project,
                    session,
                    last_seen_at,
                    expires_at,
                },
            )
            .collect();
        if !touches.is_empty() {
            let failed = store
                .touch_sessions(&touches)
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect::<Vec<_>>();
            if let Some(e) = failed.first() {
                tracing::warn!(error = %e, failed = failed.len(), of = touches.len(), "last-seen updates failed");
            }
        }
        // Every project's rows together, in chunks: a store call (one
        // embedded transaction) per project made a flush of a thousand
        // tenants' devices a thousand commits. A row the store would refuse
        // is dropped alone, so one project's bad row cannot cost another
        // project its rows.
        let devices: Vec<DeviceDay> = self
            .devices
            .drain()
            .flat_map(|(_, rows)| rows.into_values())
            .collect();
        for chunk in valid(devices, DeviceDay::validate, "device-day").chunks(WRITE_CHUNK) {
            if let Err(e) = store.record_device_days(chunk).await {
                tracing::warn!(error = %e, rows = chunk.len(), "device index not updated");
            }
        }
        let denies: Vec<DenyEvent> = self.denies.drain().flat_map(|(_, d)| d).collect();
        for chunk in valid(denies, DenyEvent::validate, "deny event").chunks(WRITE_CHUNK) {
            if let Err(e) = store.record_deny_events(chunk).await {
                tracing::warn!(error = %e, events = chunk.len(), "deny events not recorded");
            }
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Rows of one store call for device-days and deny events: one embedded
/// transaction of a few milliseconds at most.
const WRITE_CHUNK: usize = 1024;

/// `rows` without those `check` refuses (logged, with how many).
fn valid<T>(
    mut rows: Vec<T>,
    check: impl Fn(&T) -> Result<(), qyzar_store::StoreError>,
    what: &str,
) -> Vec<T> {
    let before = rows.len();
    let mut first = None;
    rows.retain(|r| match check(r) {
        Ok(()) => true,
        Err(e) => {
            first.get_or_insert(e);
            false
        }
    });
    if let Some(e) = first {
        tracing::warn!(error = %e, dropped = before - rows.len(), "{what} rows refused before writing");
    }
    rows
}

/// Every [`FLUSH_EVERY`] (or when a flush asks), swaps the pending batch
/// out and writes it; new writes meanwhile fill a fresh batch with fresh
/// shares.
async fn writer(store: Arc<dyn DataStore>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.wake.notified() => {}
        }
        let mut batch = std::mem::take(&mut *shared.batch());
        batch.write(store.as_ref()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(project: &ProjectId, device: &DeviceId, at: i64) -> DeviceDay {
        DeviceDay {
            project_id: project.clone(),
            device_id: device.clone(),
            day: at.div_euclid(qyzar_store::DAY_MS),
            first_seen: at,
            last_seen: at,
            browser: "Chrome".into(),
            os: "Linux".into(),
            platform: "desktop".into(),
            region: None,
            risk_score: 0,
            bot: false,
            components: Default::default(),
        }
    }

    /// A project over its share of device-days loses only its own excess;
    /// another project's devices still go into the batch, and repeats of
    /// a held device merge instead of counting again.
    #[test]
    fn device_days_are_capped_per_project() {
        let mut batch = Batch::default();
        let (noisy, quiet) = (ProjectId::generate(), ProjectId::generate());
        let at = 1_700_000_000_000;
        let first = DeviceId::generate();
        assert!(batch.device(seen(&noisy, &first, at)));
        let mut dropped = 0;
        for _ in 0..DEVICE_DAYS_PER_PROJECT + 50 {
            dropped += usize::from(!batch.device(seen(&noisy, &DeviceId::generate(), at)));
        }
        assert!(batch.device(seen(&noisy, &first, at + 10)));
        let quiet_device = DeviceId::generate();
        assert!(batch.device(seen(&quiet, &quiet_device, at)));
        assert_eq!(batch.devices[&noisy].len(), DEVICE_DAYS_PER_PROJECT);
        assert_eq!(batch.devices[&quiet].len(), 1);
        assert_eq!(dropped, 51);
        let day = at.div_euclid(qyzar_store::DAY_MS);
        let held = &batch.devices[&noisy][&(first, day)];
        assert_eq!((held.first_seen, held.last_seen), (at, at + 10));
    }

    fn deny(project: &ProjectId, n: usize) -> DenyEvent {
        DenyEvent {
            project_id: project.clone(),
            at: 1_700_000_000_000 + n as i64,
            bucket: "ip".into(),
            key: format!("198.51.100.{}", n % 256),
            ip: None,
        }
    }

    /// A tenant flooding denies and sessions fills only its own shares:
    /// a quiet tenant's deny and touch still get in, and a touch of a
    /// session already pending coalesces even at the cap.
    #[test]
    fn one_tenants_flood_leaves_room_for_another() {
        let mut batch = Batch::default();
        let (noisy, quiet) = (ProjectId::generate(), ProjectId::generate());
        for n in 0..DENIES_PER_PROJECT * 3 {
            batch.deny(&noisy, || deny(&noisy, n));
        }
        assert_eq!(batch.denies[&noisy].len(), DENIES_PER_PROJECT);
        let first = SessionId::generate();
        assert!(batch.touch(&noisy, &first, 1, 2));
        for _ in 0..TOUCHES_PER_PROJECT + 10 {
            batch.touch(&noisy, &SessionId::generate(), 1, 2);
        }
        assert_eq!(batch.touches.len(), TOUCHES_PER_PROJECT);
        assert!(
            batch.touch(&noisy, &first, 5, 9),
            "a pending session coalesces"
        );
        assert_eq!(batch.touches[&first].1, 5);
        assert_eq!(batch.deny(&quiet, || deny(&quiet, 0)), Kept::Yes);
        assert!(batch.touch(&quiet, &SessionId::generate(), 1, 2));
        assert_eq!(batch.denies[&quiet].len(), 1);
        assert_eq!(batch.entries, TOUCHES_PER_PROJECT + DENIES_PER_PROJECT + 2);
    }

    /// Past its share, a project's denies are a uniform sample of all of
    /// them: the late ones are as likely to be kept as the early ones
    /// (a cut would keep only the first), and an event that is not kept
    /// is never built.
    #[test]
    fn a_flood_of_denies_is_sampled_uniformly_and_unkept_ones_are_not_built() {
        fastrand::seed(7);
        let mut batch = Batch::default();
        let p = ProjectId::generate();
        let total = DENIES_PER_PROJECT * 20;
        let mut built = 0;
        let mut sampled_out = 0;
        for n in 0..total {
            let kept = batch.deny(&p, || {
                built += 1;
                deny(&p, n)
            });
            assert_ne!(kept, Kept::Dropped);
            sampled_out += usize::from(kept == Kept::SampledOut);
        }
        let held = &batch.denies[&p];
        assert_eq!(held.len(), DENIES_PER_PROJECT);
        assert_eq!(batch.entries, DENIES_PER_PROJECT);
        // The expected number built is k(1 + ln(n/k)), about 4k here.
        assert_eq!(built + sampled_out, total);
        assert!(built < total / 3, "{built} of {total} built");
        // Kept events by quarter of the flood: about 64 each.
        let base = 1_700_000_000_000;
        let mut quarters = [0usize; 4];
        for e in held {
            quarters[(e.at - base) as usize * 4 / total] += 1;
        }
        for q in quarters {
            assert!((32..=96).contains(&q), "{quarters:?}");
        }
        // Each kept event is a distinct deny of the flood.
        let mut ats: Vec<i64> = held.iter().map(|e| e.at).collect();
        ats.sort_unstable();
        ats.dedup();
        assert_eq!(ats.len(), DENIES_PER_PROJECT);
    }

    /// A flush writes every pending touch through the store's batch call:
    /// each session's last-seen and expiry move, in one flush, however many
    /// projects they belong to; an unknown session changes nothing.
    #[tokio::test]
    async fn a_flush_moves_every_touched_session_in_the_store() {
        use qyzar_store::{DeviceInfo, Risk, Session};
        let dir = tempfile::tempdir().unwrap();
        let store = qyzar_store::EmbeddedStore::open(dir.path().join("d.redb")).unwrap();
        let now = qyzar_shared::time::now_ms();
        let sessions: Vec<Session> = (0..700)
            .map(|i| Session {
                project_id: if i % 2 == 0 {
                    ProjectId::generate()
                } else {
                    ProjectId::parse("prj_0123456789abcdefghijkl").unwrap()
                },
                session_id: SessionId::generate(),
                token_hash: [7; 32],
                device_id: DeviceId::generate(),
                created_at: now - 120_000,
                expires_at: now + 600_000,
                last_seen_at: now - 120_000,
                revoked: false,
                ip: None,
                risk: Risk::default(),
                device: DeviceInfo {
                    browser: "Chrome".into(),
                    os: "Linux".into(),
                    platform: "desktop".into(),
                    region: None,
                },
            })
            .collect();
        for s in &sessions {
            store.put_session(s).await.unwrap();
        }
        let mut batch = Batch::default();
        for s in &sessions {
            assert!(batch.touch(&s.project_id, &s.session_id, now, now + 900_000));
        }
        let stranger = (ProjectId::generate(), SessionId::generate());
        assert!(batch.touch(&stranger.0, &stranger.1, now, now + 900_000));
        batch.write(&store).await;
        assert!(batch.touches.is_empty());
        for s in &sessions {
            let got = store
                .get_session(&s.project_id, &s.session_id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!((got.last_seen_at, got.expires_at), (now, now + 900_000));
        }
        assert_eq!(
            store.get_session(&stranger.0, &stranger.1).await.unwrap(),
            None
        );
    }

    /// One project's row that the store would refuse is dropped alone:
    /// the other projects' deny events in the same flush are written.
    #[tokio::test]
    async fn a_bad_row_of_one_project_does_not_cost_another_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = qyzar_store::EmbeddedStore::open(dir.path().join("d.redb")).unwrap();
        let (bad, good) = (ProjectId::generate(), ProjectId::generate());
        let mut batch = Batch::default();
        let mut e = deny(&bad, 1);
        e.bucket = "b".repeat(10_000);
        batch.deny(&bad, || e);
        batch.deny(&good, || deny(&good, 2));
        batch.write(&store).await;
        let got = store.list_deny_events(&good, 0, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(store
            .list_deny_events(&bad, 0, 10)
            .await
            .unwrap()
            .is_empty());
    }

    /// The whole batch is bounded too: past [`MAX_PENDING`] entries nothing
    /// new gets in, whoever sends it.
    #[test]
    fn the_batch_is_bounded_in_all() {
        let mut batch = Batch::default();
        let mut n = 0;
        while !batch.full() {
            let p = ProjectId::generate();
            for _ in 0..DENIES_PER_PROJECT {
                if batch.deny(&p, || deny(&p, n)) == Kept::Dropped {
                    break;
                }
                n += 1;
            }
        }
        assert_eq!(batch.entries, MAX_PENDING);
        let late = ProjectId::generate();
        assert_eq!(batch.deny(&late, || deny(&late, 0)), Kept::Dropped);
        assert!(!batch.touch(&ProjectId::generate(), &SessionId::generate(), 1, 2));
    }
}
