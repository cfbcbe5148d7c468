//! Writes the answer does not depend on, batched off the hot path:
//! last-seen touches, rate-limit deny events and the dashboard's device
//! index. Flushed every [`FLUSH_EVERY`] and on shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use qyzar_store::{DataStore, DenyEvent, DeviceDay};
use tokio::sync::mpsc;

/// How often queued writes go to the store.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Queued writes beyond which new ones are dropped (and counted): losing a
/// last-seen update is better than unbounded memory when the store is down.
pub const QUEUE_CAP: usize = 100_000;
/// Distinct device-days one project may queue between two flushes; more
/// are dropped (and counted), so a tenant opening sessions from millions
/// of fresh fingerprints cannot crowd another tenant's devices out of a
/// batch or grow it without bound.
pub const DEVICE_DAYS_PER_PROJECT: usize = 5_000;

enum Job {
    Touch {
        project: ProjectId,
        session: SessionId,
        last_seen_at: i64,
        expires_at: i64,
    },
    Deny(DenyEvent),
    DeviceSeen(Box<DeviceDay>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Handle to the background writer.
pub struct Background {
    tx: mpsc::Sender<Job>,
    dropped: Arc<AtomicU64>,
    dropped_devices: Arc<AtomicU64>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Background {
    /// Starts the writer task over `store`.
    pub fn spawn(store: Arc<dyn DataStore>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAP);
        let dropped = Arc::new(AtomicU64::new(0));
        let dropped_devices = Arc::new(AtomicU64::new(0));
        let batch = Batch {
            dropped: Arc::clone(&dropped),
            dropped_devices: Arc::clone(&dropped_devices),
            ..Batch::default()
        };
        let task = tokio::spawn(writer(store, rx, batch));
        Self {
            tx,
            dropped,
            dropped_devices,
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
        self.send(Job::Touch {
            project: project.clone(),
            session: session.clone(),
            last_seen_at,
            expires_at,
        });
    }

    /// Queues a device seen by `/connect` for the dashboard's device index
    /// (coalesced per project, device and day).
    pub fn device_seen(&self, row: DeviceDay) {
        self.send(Job::DeviceSeen(Box::new(row)));
    }

    /// Queues a deny event for analytics.
    pub fn deny(&self, event: DenyEvent) {
        self.send(Job::Deny(event));
    }

    fn send(&self, job: Job) {
        if self.tx.try_send(job).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Device-days dropped because their project had queued
    /// [`DEVICE_DAYS_PER_PROJECT`] already (also counted in [`Self::dropped`]).
    pub fn dropped_device_days(&self) -> u64 {
        self.dropped_devices.load(Ordering::Relaxed)
    }

    /// Writes everything queued so far and waits for it.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes, then stops the writer (used on shutdown).
    pub async fn shutdown(&self) {
        self.flush().await;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            t.abort();
        }
    }

    /// Writes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Batch {
    touches: HashMap<SessionId, (ProjectId, i64, i64)>,
    denies: Vec<DenyEvent>,
    /// Per project, its device-days by (device, day).
    devices: HashMap<ProjectId, HashMap<(DeviceId, i64), DeviceDay>>,
    dropped: Arc<AtomicU64>,
    dropped_devices: Arc<AtomicU64>,
}

impl Batch {
    fn add(&mut self, job: Job) -> Option<tokio::sync::oneshot::Sender<()>> {
        match job {
            Job::Touch {
                project,
                session,
                last_seen_at,
                expires_at,
            } => {
                let e = self
                    .touches
                    .entry(session)
                    .or_insert((project, last_seen_at, expires_at));
                e.1 = e.1.max(last_seen_at);
                e.2 = e.2.max(expires_at);
                None
            }
            Job::Deny(d) => {
                self.denies.push(d);
                None
            }
            Job::DeviceSeen(row) => {
                let per_project = self.devices.entry(row.project_id.clone()).or_default();
                let key = (row.device_id.clone(), row.day);
                if let Some(held) = per_project.get_mut(&key) {
                    held.merge(&row);
                } else if per_project.len() < DEVICE_DAYS_PER_PROJECT {
                    per_project.insert(key, *row);
                } else {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    self.dropped_devices.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
            Job::Flush(tx) => Some(tx),
        }
    }

    async fn write(&mut self, store: &dyn DataStore) {
        for (session, (project, seen, exp)) in self.touches.drain() {
            if let Err(e) = store.touch_session(&project, &session, seen, exp).await {
                tracing::warn!(error = %e, "last-seen update failed");
            }
        }
        for (_, rows) in self.devices.drain() {
            let rows: Vec<DeviceDay> = rows.into_values().collect();
            if let Err(e) = store.record_device_days(&rows).await {
                tracing::warn!(error = %e, rows = rows.len(), "device index not updated");
            }
        }
        if !self.denies.is_empty() {
            if let Err(e) = store.record_deny_events(&self.denies).await {
                tracing::warn!(error = %e, events = self.denies.len(), "deny events not recorded");
            }
            self.denies.clear();
        }
    }
}

async fn writer(store: Arc<dyn DataStore>, mut rx: mpsc::Receiver<Job>, mut batch: Batch) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            job = rx.recv() => match job {
                Some(job) => {
                    if let Some(done) = batch.add(job) {
                        batch.write(store.as_ref()).await;
                        let _ = done.send(());
                    }
                }
                None => {
                    batch.write(store.as_ref()).await;
                    return;
                }
            },
            _ = tick.tick() => batch.write(store.as_ref()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(project: &ProjectId, device: &DeviceId, at: i64) -> Job {
        Job::DeviceSeen(Box::new(DeviceDay {
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
        }))
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
        assert!(batch.add(seen(&noisy, &first, at)).is_none());
        for _ in 0..DEVICE_DAYS_PER_PROJECT + 50 {
            batch.add(seen(&noisy, &DeviceId::generate(), at));
        }
        batch.add(seen(&noisy, &first, at + 10));
        let quiet_device = DeviceId::generate();
        batch.add(seen(&quiet, &quiet_device, at));
        assert_eq!(batch.devices[&noisy].len(), DEVICE_DAYS_PER_PROJECT);
        assert_eq!(batch.devices[&quiet].len(), 1);
        assert_eq!(batch.dropped_devices.load(Ordering::Relaxed), 51);
        let day = at.div_euclid(qyzar_store::DAY_MS);
        let held = &batch.devices[&noisy][&(first, day)];
        assert_eq!((held.first_seen, held.last_seen), (at, at + 10));
    }
}
