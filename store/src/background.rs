//! A [`DataStore`] that connects in the background, so a process can start
//! (and answer what it can without a store) while the store is down.
//!
//! Before this, the engine's start awaited `ScyllaStore::connect`: an
//! engine restarted during a CQL outage could not start at all, even for
//! the routes that need only its configuration and its caches. Now the
//! connect is retried with capped exponential backoff on its own task; until
//! it succeeds every call fails as [`StoreError::Unavailable`] (the engine's
//! `503 store_unavailable`) and [`DataStore::ready`] is `false`. Once
//! connected, calls go straight through; the driver itself reconnects to
//! nodes that go down later.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};

use super::{
    AtoProfile, DataStore, DenyEvent, DeviceDay, EntropySnapshot, LimitUsage, LoginAttempt,
    ProfileUpdate, Session, SessionTouch, StoreError,
};

/// First wait between connect attempts.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between connect attempts: a store that comes back is used
/// within this long.
const MAX_RETRY: Duration = Duration::from_secs(10);

/// A store whose connection is made by a background task.
pub struct BackgroundStore {
    inner: OnceLock<Arc<dyn DataStore>>,
}

impl std::fmt::Debug for BackgroundStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundStore")
            .field("connected", &self.inner.get().is_some())
            .finish()
    }
}

impl BackgroundStore {
    /// Starts connecting with `connect` (called again after each failure)
    /// on a task of the current runtime; the task ends once connected or
    /// once the store is dropped. Must be called inside a Tokio runtime.
    pub fn spawn<F, Fut>(mut connect: F) -> Arc<Self>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Arc<dyn DataStore>, StoreError>> + Send,
    {
        let me = Arc::new(Self {
            inner: OnceLock::new(),
        });
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            let mut wait = FIRST_RETRY;
            loop {
                if weak.strong_count() == 0 {
                    return;
                }
                match connect().await {
                    Ok(store) => {
                        if let Some(me) = weak.upgrade() {
                            let _ = me.inner.set(store);
                            tracing::info!("data store connected");
                        }
                        return;
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        retry_in = ?wait,
                        "data store not reachable; answering 503 store_unavailable for what needs it"
                    ),
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        });
        me
    }

    /// The connected store, or `Unavailable` while the connect is pending.
    fn store(&self) -> Result<&Arc<dyn DataStore>, StoreError> {
        self.inner
            .get()
            .ok_or_else(|| StoreError::Unavailable("not connected yet".into()))
    }
}

#[async_trait]
impl DataStore for BackgroundStore {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        self.store()?.put_session(session).await
    }

    async fn get_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
    ) -> Result<Option<Session>, StoreError> {
        self.store()?.get_session(project, session).await
    }

    async fn touch_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
        last_seen_at: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        self.store()?
            .touch_session(project, session, last_seen_at, expires_at)
            .await
    }

    async fn touch_sessions(&self, touches: &[SessionTouch]) -> Vec<Result<bool, StoreError>> {
        match self.store() {
            Ok(store) => store.touch_sessions(touches).await,
            Err(e) => touches.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    async fn revoke_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
    ) -> Result<bool, StoreError> {
        self.store()?.revoke_session(project, session).await
    }

    async fn add_trusted_identifier(
        &self,
        project: &ProjectId,
        device: &DeviceId,
        identifier: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.store()?
            .add_trusted_identifier(project, device, identifier)
            .await
    }

    async fn trusted_identifiers(
        &self,
        project: &ProjectId,
        device: &DeviceId,
    ) -> Result<Vec<String>, StoreError> {
        self.store()?.trusted_identifiers(project, device).await
    }

    async fn put_entropy_snapshot(&self, snapshot: &EntropySnapshot) -> Result<(), StoreError> {
        self.store()?.put_entropy_snapshot(snapshot).await
    }

    async fn latest_entropy_snapshot(
        &self,
        project: &ProjectId,
        device: &DeviceId,
    ) -> Result<Option<EntropySnapshot>, StoreError> {
        self.store()?.latest_entropy_snapshot(project, device).await
    }

    async fn list_entropy_snapshots(
        &self,
        project: &ProjectId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<EntropySnapshot>, StoreError> {
        self.store()?
            .list_entropy_snapshots(project, device, limit)
            .await
    }

    async fn record_login_attempt(&self, attempt: &LoginAttempt) -> Result<(), StoreError> {
        self.store()?.record_login_attempt(attempt).await
    }

    async fn recent_login_attempts(
        &self,
        project: &ProjectId,
        identifier: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<LoginAttempt>, StoreError> {
        self.store()?
            .recent_login_attempts(project, identifier, since_ms, limit)
            .await
    }

    async fn unprofiled_login_attempts(
        &self,
        project: &ProjectId,
        identifier: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<LoginAttempt>, StoreError> {
        self.store()?
            .unprofiled_login_attempts(project, identifier, since_ms, limit)
            .await
    }

    async fn ato_profile(
        &self,
        project: &ProjectId,
        identifier: &str,
    ) -> Result<Option<AtoProfile>, StoreError> {
        self.store()?.ato_profile(project, identifier).await
    }

    async fn record_ato(
        &self,
        project: &ProjectId,
        identifier: &str,
        attempt: Option<LoginAttempt>,
        update: ProfileUpdate,
    ) -> Result<(), StoreError> {
        self.store()?
            .record_ato(project, identifier, attempt, update)
            .await
    }

    async fn revoke_token(
        &self,
        project: &ProjectId,
        jti: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.store()?.revoke_token(project, jti, expires_at).await
    }

    async fn is_token_revoked(&self, project: &ProjectId, jti: &str) -> Result<bool, StoreError> {
        self.store()?.is_token_revoked(project, jti).await
    }

    async fn record_deny_events(&self, events: &[DenyEvent]) -> Result<(), StoreError> {
        self.store()?.record_deny_events(events).await
    }

    async fn list_deny_events(
        &self,
        project: &ProjectId,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<DenyEvent>, StoreError> {
        self.store()?
            .list_deny_events(project, since_ms, limit)
            .await
    }

    async fn record_device_days(&self, rows: &[DeviceDay]) -> Result<(), StoreError> {
        self.store()?.record_device_days(rows).await
    }

    async fn list_device_days(
        &self,
        project: &ProjectId,
        day: i64,
        after: Option<(u8, &DeviceId)>,
        limit: usize,
    ) -> Result<Vec<DeviceDay>, StoreError> {
        self.store()?
            .list_device_days(project, day, after, limit)
            .await
    }

    async fn publish_limit_usage(&self, rows: &[LimitUsage]) -> Result<(), StoreError> {
        self.store()?.publish_limit_usage(rows).await
    }

    async fn read_limit_usage(
        &self,
        project: &ProjectId,
        slot: i64,
    ) -> Result<Vec<LimitUsage>, StoreError> {
        self.store()?.read_limit_usage(project, slot).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.store()?.health().await
    }

    fn ready(&self) -> bool {
        self.inner.get().is_some_and(|s| s.ready())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::EmbeddedStore;

    #[tokio::test]
    async fn calls_are_unavailable_until_a_connect_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&attempts);
        let store = BackgroundStore::spawn(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            let path = path.clone();
            async move {
                if n < 2 {
                    return Err(StoreError::Unavailable("refused".into()));
                }
                Ok(Arc::new(EmbeddedStore::open(path)?) as Arc<dyn DataStore>)
            }
        });
        let p = ProjectId::generate();
        let s = SessionId::generate();
        // Not yet: the first attempt fails.
        if !store.ready() {
            assert!(store
                .get_session(&p, &s)
                .await
                .unwrap_err()
                .is_unavailable());
        }
        for _ in 0..200 {
            if store.ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(store.ready(), "connected after retries");
        assert!(attempts.load(Ordering::SeqCst) >= 3);
        assert_eq!(store.get_session(&p, &s).await.unwrap(), None);
    }
}
