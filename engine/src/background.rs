//! Writes the answer does not depend on, batched off the hot path:
//! last-seen touches and rate-limit deny events. Flushed every
//! [`FLUSH_EVERY`] and on shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qyzar_shared::ids::{ProjectId, SessionId};
use qyzar_shared::store::{DataStore, DenyEvent};
use tokio::sync::mpsc;

/// How often queued writes go to the store.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Queued writes beyond which new ones are dropped (and counted): losing a
/// last-seen update is better than unbounded memory when the store is down.
pub const QUEUE_CAP: usize = 100_000;

enum Job {
    Touch {
        project: ProjectId,
        session: SessionId,
        last_seen_at: i64,
        expires_at: i64,
    },
    Deny(DenyEvent),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Handle to the background writer.
pub struct Background {
    tx: mpsc::Sender<Job>,
    dropped: Arc<AtomicU64>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Background {
    /// Starts the writer task over `store`.
    pub fn spawn(store: Arc<dyn DataStore>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAP);
        let task = tokio::spawn(writer(store, rx));
        Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
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

    /// Queues a deny event for analytics.
    pub fn deny(&self, event: DenyEvent) {
        self.send(Job::Deny(event));
    }

    fn send(&self, job: Job) {
        if self.tx.try_send(job).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
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
            Job::Flush(tx) => Some(tx),
        }
    }

    async fn write(&mut self, store: &dyn DataStore) {
        for (session, (project, seen, exp)) in self.touches.drain() {
            if let Err(e) = store.touch_session(&project, &session, seen, exp).await {
                tracing::warn!(error = %e, "last-seen update failed");
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

async fn writer(store: Arc<dyn DataStore>, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Batch::default();
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
