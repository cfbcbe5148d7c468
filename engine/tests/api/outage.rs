//! A store outage: cached sessions still verify, uncached ones get `503
//! store_unavailable` (never `valid: false` for a session that may exist),
//! rate limiting keeps working from memory, and everything recovers when the
//! store returns, without restarting the engine.
//!
//! The outage is injected by a wrapper that makes every call of a real
//! embedded store fail as unavailable while a switch is on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use qyzar_store::{
    DataStore, DenyEvent, DeviceDay, EntropySnapshot, LoginAttempt, Session, StoreError,
};
use serde_json::json;

use crate::helpers::*;

struct Switchable {
    inner: Arc<dyn DataStore>,
    down: AtomicBool,
}

impl Switchable {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("injected outage".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl DataStore for Switchable {
    async fn put_session(&self, s: &Session) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_session(s).await
    }
    async fn get_session(
        &self,
        p: &ProjectId,
        s: &SessionId,
    ) -> Result<Option<Session>, StoreError> {
        self.check()?;
        self.inner.get_session(p, s).await
    }
    async fn touch_session(
        &self,
        p: &ProjectId,
        s: &SessionId,
        seen: i64,
        exp: i64,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.touch_session(p, s, seen, exp).await
    }
    async fn revoke_session(&self, p: &ProjectId, s: &SessionId) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.revoke_session(p, s).await
    }
    async fn add_trusted_identifier(
        &self,
        p: &ProjectId,
        d: &DeviceId,
        i: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.check()?;
        self.inner.add_trusted_identifier(p, d, i).await
    }
    async fn trusted_identifiers(
        &self,
        p: &ProjectId,
        d: &DeviceId,
    ) -> Result<Vec<String>, StoreError> {
        self.check()?;
        self.inner.trusted_identifiers(p, d).await
    }
    async fn put_entropy_snapshot(&self, s: &EntropySnapshot) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_entropy_snapshot(s).await
    }
    async fn latest_entropy_snapshot(
        &self,
        p: &ProjectId,
        d: &DeviceId,
    ) -> Result<Option<EntropySnapshot>, StoreError> {
        self.check()?;
        self.inner.latest_entropy_snapshot(p, d).await
    }
    async fn list_entropy_snapshots(
        &self,
        p: &ProjectId,
        d: &DeviceId,
        l: usize,
    ) -> Result<Vec<EntropySnapshot>, StoreError> {
        self.check()?;
        self.inner.list_entropy_snapshots(p, d, l).await
    }
    async fn record_login_attempt(&self, a: &LoginAttempt) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_login_attempt(a).await
    }
    async fn recent_login_attempts(
        &self,
        p: &ProjectId,
        i: &str,
        since: i64,
        l: usize,
    ) -> Result<Vec<LoginAttempt>, StoreError> {
        self.check()?;
        self.inner.recent_login_attempts(p, i, since, l).await
    }
    async fn unprofiled_login_attempts(
        &self,
        p: &ProjectId,
        i: &str,
        since: i64,
        l: usize,
    ) -> Result<Vec<LoginAttempt>, StoreError> {
        self.check()?;
        self.inner.unprofiled_login_attempts(p, i, since, l).await
    }
    async fn ato_profile(
        &self,
        p: &ProjectId,
        i: &str,
    ) -> Result<Option<qyzar_store::AtoProfile>, StoreError> {
        self.check()?;
        self.inner.ato_profile(p, i).await
    }
    async fn record_ato(
        &self,
        p: &ProjectId,
        i: &str,
        a: Option<LoginAttempt>,
        u: qyzar_store::ProfileUpdate,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_ato(p, i, a, u).await
    }
    async fn revoke_token(&self, p: &ProjectId, j: &str, exp: i64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.revoke_token(p, j, exp).await
    }
    async fn is_token_revoked(&self, p: &ProjectId, j: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.is_token_revoked(p, j).await
    }
    async fn record_deny_events(&self, e: &[DenyEvent]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_deny_events(e).await
    }
    async fn list_deny_events(
        &self,
        p: &ProjectId,
        since: i64,
        l: usize,
    ) -> Result<Vec<DenyEvent>, StoreError> {
        self.check()?;
        self.inner.list_deny_events(p, since, l).await
    }
    async fn record_device_days(&self, rows: &[DeviceDay]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_device_days(rows).await
    }
    async fn list_device_days(
        &self,
        p: &ProjectId,
        day: i64,
        after: Option<(u8, &DeviceId)>,
        l: usize,
    ) -> Result<Vec<DeviceDay>, StoreError> {
        self.check()?;
        self.inner.list_device_days(p, day, after, l).await
    }
    async fn health(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.health().await
    }
}

async fn outage_behaviour(kind: Store) {
    let Some((inner, dir)) = store(kind).await else {
        return;
    };
    let sw = Arc::new(Switchable {
        inner,
        down: AtomicBool::new(false),
    });
    let engine = TestEngine::spawn_with(sw.clone(), dir).await;
    let (p, cfg) = project(SETTINGS, false);
    install(&engine.engine, 1, vec![cfg]);
    let connect = || async {
        let body = json!({"projectId": p.id, "originToken": p.origin_token, "entropy": entropy()})
            .to_string();
        request(
            "POST",
            &engine.url("/connect"),
            &[("origin", ORIGIN)],
            Some(&body),
        )
        .await
    };
    let (url, pid, secret) = (
        engine.url("/projects/client/session-verify"),
        p.id.clone(),
        p.secret.clone(),
    );
    let verify = |sid: String, tok: String| {
        let (url, pid, secret) = (url.clone(), pid.clone(), secret.clone());
        async move {
            let body = json!({"projectId": pid, "sessionId": sid, "sessionToken": tok}).to_string();
            request(
                "POST",
                &url,
                &[("x-qyzar-project-secret", &secret)],
                Some(&body),
            )
            .await
        }
    };
    let a = connect().await;
    let b = connect().await;
    let (sa, ta) = (
        a.body["sessionId"].as_str().unwrap().to_owned(),
        a.body["sessionToken"].as_str().unwrap().to_owned(),
    );
    let (sb, tb) = (
        b.body["sessionId"].as_str().unwrap().to_owned(),
        b.body["sessionToken"].as_str().unwrap().to_owned(),
    );
    engine
        .engine
        .sessions
        .forget(&SessionId::parse(&sb).unwrap());

    sw.down.store(true, Ordering::SeqCst);
    let r = verify(sa.clone(), ta.clone()).await;
    assert_eq!(
        r.body["valid"], true,
        "a cached session still verifies: {:?}",
        r.body
    );
    let r = verify(sb.clone(), tb.clone()).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (503, json!("store_unavailable")),
        "never valid:false for a session that may exist"
    );
    let r = request(
        "POST",
        &engine.url("/projects/client/rate-limit-check"),
        &[("x-qyzar-project-secret", &p.secret)],
        Some(&json!({"projectId": p.id, "ip": "192.0.2.1"}).to_string()),
    )
    .await;
    assert_eq!(r.body["allowed"], true, "rate limiting works from memory");
    let r = connect().await;
    assert_eq!(
        r.status, 503,
        "a session that cannot be stored is not handed out"
    );
    let r = request(
        "POST",
        &engine.url("/projects/client/ato-login-attempt"),
        &[("x-qyzar-project-secret", &p.secret)],
        Some(&json!({"projectId": p.id, "identifier": "ann", "success": true}).to_string()),
    )
    .await;
    assert_eq!(
        r.status, 503,
        "an attempt that cannot be stored is not answered"
    );

    sw.down.store(false, Ordering::SeqCst);
    let r = verify(sb, tb).await;
    assert_eq!(
        r.body["valid"], true,
        "recovered without a restart: {:?}",
        r.body
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_on_embedded() {
    outage_behaviour(Store::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_on_cql() {
    outage_behaviour(Store::Cql).await;
}
