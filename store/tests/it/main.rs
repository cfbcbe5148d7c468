//! Conformance of both `DataStore` implementations.
//!
//! One suite (`suite::*`), run against the embedded store (a fresh file per
//! test) and against a CQL node (a fresh keyspace per test, dropped after)
//! when `QYZAR_TEST_CQL_NODE` names one. Without it the CQL half prints one
//! `skipped:` line per test, or fails under `QYZAR_TEST_REQUIRE_BACKENDS=1`.
//! `embedded_only` covers what only the embedded store has: restart, group
//! commit, purge and close.
#![allow(unreachable_pub)] // test helpers are `pub` for the modules of this one binary

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use qyzar_shared::testing;
use qyzar_store::{
    DataStore, EmbeddedStore, ScyllaConfig, ScyllaStore, StoreError, DAY_MS,
    MAX_ENTROPY_SNAPSHOTS_PER_DAY, MAX_KEY_BYTES, MAX_LIST_LIMIT,
};

/// Generates one `embedded::<name>` and one `cql::<name>` test per suite fn.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (store, _dir) = super::open_embedded();
                    super::suite::$name(&store).await;
                }
            )*
        }
        mod cql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::with_cql(|store| async move { super::suite::$name(&*store).await }).await;
                }
            )*
        }
    };
}

conformance!(
    session_put_get_touch_revoke,
    sessions_touched_in_one_batch_answer_each_as_alone,
    session_and_revocation_expire,
    trusted_identifiers_are_an_idempotent_sorted_set,
    trusted_identifiers_survive_concurrent_writers,
    entropy_snapshots_newest_first,
    entropy_snapshots_are_capped_per_device_and_day,
    login_attempts_newest_first_with_since_and_limit,
    login_attempts_survive_concurrent_writers,
    token_revocation,
    deny_events_newest_first_across_days,
    projects_are_isolated,
    lists_are_clamped_to_the_max_limit,
    invalid_input_is_refused,
    health_answers,
    ato_profile_round_trip_and_isolation,
    ato_profile_keeps_success_after_210_failures,
    ato_forget_is_conditional_and_bounds_hold,
    ato_updates_commute,
    device_days_merge_and_retries_change_nothing,
    device_days_page_over_shards_with_a_cursor,
    device_days_refuse_bad_rows,
);

mod ato;
mod devices;

fn open_embedded() -> (EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path().join("data.redb")).expect("open embedded store");
    (store, dir)
}

/// Runs `body` against a fresh keyspace on the configured CQL node, then
/// drops the keyspace (also when `body` panics).
async fn with_cql<F, Fut>(body: F)
where
    F: FnOnce(Arc<ScyllaStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(node) = testing::backend("QYZAR_TEST_CQL_NODE", "store conformance on CQL") else {
        return;
    };
    let keyspace = testing::unique_name("qz_test_");
    let mut config = ScyllaConfig::new(vec![node.clone()], keyspace.clone());
    config.replication_factor = 1;
    // A JVM node on a small test box can pause; the production 2 s would
    // make the suite flaky without testing anything more.
    config.request_timeout = Duration::from_secs(15);
    let store = match ScyllaStore::connect(config).await {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("QYZAR_TEST_CQL_NODE={node} is set but the store cannot start: {e}"),
    };
    let outcome = std::panic::AssertUnwindSafe(body(store))
        .catch_unwind()
        .await;
    drop_keyspace(&node, &keyspace).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn drop_keyspace(node: &str, keyspace: &str) {
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(node)
        .build()
        .await;
    let dropped = match session {
        Ok(s) => {
            let mut st = scylla::statement::unprepared::Statement::new(format!(
                "DROP KEYSPACE IF EXISTS {keyspace}"
            ));
            st.set_request_timeout(Some(Duration::from_secs(60)));
            s.query_unpaged(st, &[])
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = dropped {
        eprintln!("could not drop test keyspace {keyspace}: {e}");
    }
}

/// Asserts the error is `Invalid` (the caller's fault, nothing written).
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

mod suite {
    pub(super) use super::ato::{
        ato_forget_is_conditional_and_bounds_hold, ato_profile_keeps_success_after_210_failures,
        ato_profile_round_trip_and_isolation, ato_updates_commute,
    };
    pub(super) use super::devices::{
        device_days_merge_and_retries_change_nothing, device_days_page_over_shards_with_a_cursor,
        device_days_refuse_bad_rows,
    };
    use futures::future::join_all;
    use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
    use qyzar_store::{
        DenyEvent, DeviceInfo, EntropySnapshot, LoginAttempt, Risk, Session, SessionTouch,
    };

    use super::*;

    pub(super) fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
    }

    pub(super) fn session(project: &ProjectId, expires_in_ms: i64) -> Session {
        let t = now();
        Session {
            project_id: project.clone(),
            session_id: SessionId::generate(),
            token_hash: [7; 32],
            device_id: DeviceId::generate(),
            created_at: t,
            expires_at: t + expires_in_ms,
            last_seen_at: t,
            revoked: false,
            ip: Some("203.0.113.9".into()),
            risk: Risk {
                score: 42,
                bot: false,
                signals: vec!["headless_ua".into(), "webdriver".into()],
            },
            device: DeviceInfo {
                browser: "Firefox".into(),
                os: "Linux".into(),
                platform: "desktop".into(),
                region: Some("FR".into()),
            },
        }
    }

    fn attempt(project: &ProjectId, identifier: &str, at: i64) -> LoginAttempt {
        LoginAttempt {
            project_id: project.clone(),
            identifier: identifier.into(),
            at,
            attempt_id: LoginAttempt::new_id(),
            success: at % 2 == 0,
            ip: Some("198.51.100.7".into()),
            device_id: Some(DeviceId::generate()),
            session_id: None,
            region: Some("DE".into()),
            platform: None,
            browser: Some("Chrome".into()),
        }
    }

    fn snapshot(project: &ProjectId, device: &DeviceId, at: i64) -> EntropySnapshot {
        EntropySnapshot {
            project_id: project.clone(),
            device_id: device.clone(),
            session_id: SessionId::generate(),
            at,
            entropy_json: format!(r#"{{"userAgent":"ua","at":{at}}}"#),
        }
    }

    pub(super) async fn session_put_get_touch_revoke(store: &dyn DataStore) {
        let p = ProjectId::generate();
        let s = session(&p, 60_000);
        store.put_session(&s).await.expect("put");
        assert_eq!(
            store.get_session(&p, &s.session_id).await.expect("get"),
            Some(s.clone())
        );

        // Optional fields absent and no signals round-trip too.
        let mut bare = session(&p, 60_000);
        bare.ip = None;
        bare.device.region = None;
        bare.risk = Risk::default();
        store.put_session(&bare).await.expect("put bare");
        assert_eq!(
            store
                .get_session(&p, &bare.session_id)
                .await
                .expect("get bare"),
            Some(bare)
        );

        // Touch moves both times forward…
        let (seen, exp) = (s.last_seen_at + 5_000, s.expires_at + 60_000);
        assert!(store
            .touch_session(&p, &s.session_id, seen, exp)
            .await
            .expect("touch"));
        let got = store
            .get_session(&p, &s.session_id)
            .await
            .expect("get")
            .expect("live");
        assert_eq!((got.last_seen_at, got.expires_at), (seen, exp));
        assert_eq!(
            (got.token_hash, &got.device, got.created_at),
            (s.token_hash, &s.device, s.created_at)
        );
        // …and never back: batched touches may arrive out of order.
        assert!(store
            .touch_session(&p, &s.session_id, seen - 4_000, exp - 30_000)
            .await
            .expect("touch"));
        let got = store
            .get_session(&p, &s.session_id)
            .await
            .expect("get")
            .expect("live");
        assert_eq!((got.last_seen_at, got.expires_at), (seen, exp));

        // Revoke is visible, idempotent, and stops touches.
        assert!(store
            .revoke_session(&p, &s.session_id)
            .await
            .expect("revoke"));
        assert!(store
            .revoke_session(&p, &s.session_id)
            .await
            .expect("revoke again"));
        let got = store
            .get_session(&p, &s.session_id)
            .await
            .expect("get")
            .expect("revoked is still returned");
        assert!(got.revoked);
        assert!(!store
            .touch_session(&p, &s.session_id, seen + 1, exp + 1)
            .await
            .expect("touch revoked"));
        let got = store
            .get_session(&p, &s.session_id)
            .await
            .expect("get")
            .expect("present");
        assert!(got.revoked, "a touch must not clear a revocation");
        assert_eq!(got.expires_at, exp);

        // Unknown ids.
        let unknown = SessionId::generate();
        assert_eq!(store.get_session(&p, &unknown).await.expect("get"), None);
        assert!(!store
            .touch_session(&p, &unknown, now(), now() + 1_000)
            .await
            .expect("touch unknown"));
        assert!(!store
            .revoke_session(&p, &unknown)
            .await
            .expect("revoke unknown"));
        assert_eq!(
            store.get_session(&p, &unknown).await.expect("get"),
            None,
            "revoke must not create a session"
        );
    }

    /// The engine's last-seen batch: more touches than one embedded
    /// transaction takes (512), answered one by one in their order, each
    /// as `touch_session` alone would (unknown, revoked and invalid ones
    /// included, none of them failing the rest).
    pub(super) async fn sessions_touched_in_one_batch_answer_each_as_alone(store: &dyn DataStore) {
        let p = ProjectId::generate();
        let sessions: Vec<Session> = (0..600).map(|_| session(&p, 60_000)).collect();
        join_all(sessions.iter().map(|s| store.put_session(s)))
            .await
            .into_iter()
            .for_each(|r| r.expect("put"));
        let revoked = &sessions[100];
        assert!(store
            .revoke_session(&p, &revoked.session_id)
            .await
            .expect("revoke"));
        let t = now();
        let mut touches: Vec<SessionTouch> = sessions
            .iter()
            .map(|s| SessionTouch {
                project: p.clone(),
                session: s.session_id.clone(),
                last_seen_at: t,
                expires_at: t + 120_000,
            })
            .collect();
        // Unknown, then invalid (beyond the longest lifetime), mid-batch.
        touches.insert(
            300,
            SessionTouch {
                project: p.clone(),
                session: SessionId::generate(),
                last_seen_at: t,
                expires_at: t + 1_000,
            },
        );
        touches.insert(
            520,
            SessionTouch {
                expires_at: t + 400 * DAY_MS,
                ..touches[0].clone()
            },
        );
        let answers = store.touch_sessions(&touches).await;
        assert_eq!(answers.len(), touches.len());
        for (i, a) in answers.iter().enumerate() {
            match i {
                300 => assert_eq!(a, &Ok(false), "unknown"),
                520 => assert!(matches!(a, Err(StoreError::Invalid(_))), "{a:?}"),
                100 => assert_eq!(a, &Ok(false), "revoked"),
                _ => assert_eq!(a, &Ok(true), "touch {i}"),
            }
        }
        for (i, s) in sessions.iter().enumerate() {
            let got = store
                .get_session(&p, &s.session_id)
                .await
                .expect("get")
                .expect("present");
            if i == 100 {
                assert!(got.revoked, "a touch must not clear a revocation");
                assert_eq!(got.expires_at, s.expires_at);
            } else {
                assert_eq!(
                    (got.last_seen_at, got.expires_at),
                    (t, t + 120_000),
                    "session {i}"
                );
            }
        }
    }

    pub(super) async fn session_and_revocation_expire(store: &dyn DataStore) {
        let p = ProjectId::generate();
        let short = session(&p, 1_500);
        let long = session(&p, 600_000);
        store.put_session(&short).await.expect("put");
        store.put_session(&long).await.expect("put");
        store
            .revoke_token(&p, "jti-short", now() + 1_500)
            .await
            .expect("revoke token");
        store
            .revoke_token(&p, "jti-long", now() + 600_000)
            .await
            .expect("revoke token");
        assert!(store
            .get_session(&p, &short.session_id)
            .await
            .expect("get")
            .is_some());
        assert!(store
            .is_token_revoked(&p, "jti-short")
            .await
            .expect("revoked?"));

        tokio::time::sleep(Duration::from_millis(2_500)).await;

        assert_eq!(
            store.get_session(&p, &short.session_id).await.expect("get"),
            None,
            "expired session"
        );
        assert!(!store
            .touch_session(&p, &short.session_id, now(), now() + 60_000)
            .await
            .expect("touch"));
        assert!(!store
            .revoke_session(&p, &short.session_id)
            .await
            .expect("revoke"));
        assert_eq!(
            store.get_session(&p, &short.session_id).await.expect("get"),
            None,
            "touch must not revive"
        );
        assert!(
            !store
                .is_token_revoked(&p, "jti-short")
                .await
                .expect("revoked?"),
            "expired revocation"
        );
        assert!(store
            .get_session(&p, &long.session_id)
            .await
            .expect("get")
            .is_some());
        assert!(store
            .is_token_revoked(&p, "jti-long")
            .await
            .expect("revoked?"));
    }

    pub(super) async fn trusted_identifiers_are_an_idempotent_sorted_set(store: &dyn DataStore) {
        let p = ProjectId::generate();
        let d = DeviceId::generate();
        assert!(store
            .trusted_identifiers(&p, &d)
            .await
            .expect("list")
            .is_empty());
        assert_eq!(
            store
                .add_trusted_identifier(&p, &d, "bob@example.com")
                .await
                .expect("add"),
            ["bob@example.com"]
        );
        let both = ["ann@example.com", "bob@example.com"];
        assert_eq!(
            store
                .add_trusted_identifier(&p, &d, "ann@example.com")
                .await
                .expect("add"),
            both
        );
        assert_eq!(
            store
                .add_trusted_identifier(&p, &d, "bob@example.com")
                .await
                .expect("re-add"),
            both
        );
        assert_eq!(store.trusted_identifiers(&p, &d).await.expect("list"), both);
        // A prefix of an identifier is another identifier.
        let three = ["ann@example.co", "ann@example.com", "bob@example.com"];
        assert_eq!(
            store
                .add_trusted_identifier(&p, &d, "ann@example.co")
                .await
                .expect("add"),
            three
        );
        assert!(store
            .trusted_identifiers(&p, &DeviceId::generate())
            .await
            .expect("other device")
            .is_empty());
    }

    pub(super) async fn trusted_identifiers_survive_concurrent_writers(store: &dyn DataStore) {
        let p = ProjectId::generate();
        let d = DeviceId::generate();
        let ids: Vec<String> = (0..20).map(|i| format!("user{i:02}@example.com")).collect();
        let answers = join_all(ids.iter().map(|i| store.add_trusted_identifier(&p, &d, i))).await;
        for (id, answer) in ids.iter().zip(answers) {
            let set = answer.expect("concurrent add");
            assert!(
                set.contains(id),
                "the answer to adding {id} must contain it"
            );
        }
        assert_eq!(store.trusted_identifiers(&p, &d).await.expect("list"), ids);
    }

    /// At most [`MAX_ENTROPY_SNAPSHOTS_PER_DAY`] captures of one device are
    /// kept in any 24 hours; a later day has room again; other devices are
    /// not affected.
    pub(super) async fn entropy_snapshots_are_capped_per_device_and_day(store: &dyn DataStore) {
        let p = ProjectId::generate();
        let (d, other) = (DeviceId::generate(), DeviceId::generate());
        let base = now() - 3 * DAY_MS;
        let n = MAX_ENTROPY_SNAPSHOTS_PER_DAY;
        for i in 0..n + 10 {
            let s = snapshot(&p, &d, base + i as i64 * 1_000);
            store.put_entropy_snapshot(&s).await.expect("put");
        }
        let p = &p;
        let count = |dev: DeviceId| async move {
            store
                .list_entropy_snapshots(p, &dev, MAX_LIST_LIMIT)
                .await
                .expect("list")
        };
        let kept = count(d.clone()).await;
        assert_eq!(
            kept.len(),
            n,
            "captures beyond the day's cap are not stored"
        );
        assert_eq!(
            kept[0].at,
            base + (n as i64 - 1) * 1_000,
            "the first n are kept"
        );
        // A day later there is room again.
        let later = snapshot(p, &d, base + DAY_MS + 1_000 * n as i64);
        store.put_entropy_snapshot(&later).await.expect("put later");
        assert_eq!(count(d.clone()).await[0], later);
        // Another device of the same project is not affected.
        store
            .put_entropy_snapshot(&snapshot(p, &other, base))
            .await
            .expect("put other");
        assert_eq!(count(other).await.len(), 1);
    }

    pub(super) async fn entropy_snapshots_newest_first(store: &dyn DataStore) {
        let p = ProjectId::generate();
        let d = DeviceId::generate();
        assert_eq!(
            store.latest_entropy_snapshot(&p, &d).await.expect("latest"),
            None
        );
        let base = now() - 60_000;
        let snaps: Vec<_> = (0..5).map(|i| snapshot(&p, &d, base + i * 1_000)).collect();
        // Written out of order on purpose.
        for i in [3, 0, 4, 1, 2] {
            store
                .put_entropy_snapshot(&snaps[i])
                .await
                .expect("put snapshot");
        }
        // Two captures in the same millisecond are both kept.
        let twin = EntropySnapshot {
            session_id: SessionId::generate(),
            ..snaps[2].clone()
        };
        store.put_entropy_snapshot(&twin).await.expect("put twin");

        let all = store
            .list_entropy_snapshots(&p, &d, 100)
            .await
            .expect("list");
        assert_eq!(all.len(), 6);
        assert!(all.windows(2).all(|w| w[0].at >= w[1].at), "newest first");
        assert_eq!(all[0], snaps[4]);
        assert!(all.contains(&twin) && all.contains(&snaps[2]));
        assert_eq!(
            store
                .list_entropy_snapshots(&p, &d, 2)
                .await
                .expect("list 2"),
            [snaps[4].clone(), snaps[3].clone()]
        );
        assert_eq!(
            store.latest_entropy_snapshot(&p, &d).await.expect("latest"),
            Some(snaps[4].clone())
        );
        assert!(store
            .list_entropy_snapshots(&p, &d, 0)
            .await
            .expect("limit 0")
            .is_empty());
        assert!(store
            .list_entropy_snapshots(&p, &DeviceId::generate(), 10)
            .await
            .expect("other")
            .is_empty());
    }

    pub(super) async fn login_attempts_newest_first_with_since_and_limit(store: &dyn DataStore) {
        let p = ProjectId::generate();
        let base = now() - 600_000;
        let attempts: Vec<_> = (0..10)
            .map(|i| attempt(&p, "ann@example.com", base + i * 1_000))
            .collect();
        for a in attempts
            .iter()
            .rev()
            .step_by(2)
            .chain(attempts.iter().step_by(2))
        {
            store.record_login_attempt(a).await.expect("record");
        }
        // Same identifier with a suffix: another partition entirely.
        store
            .record_login_attempt(&attempt(&p, "ann@example.com.evil", base + 50_000))
            .await
            .expect("record");
        // Re-recording the same attempt is the same row.
        store
            .record_login_attempt(&attempts[9])
            .await
            .expect("record again");

        let newest_first: Vec<_> = attempts.iter().rev().cloned().collect();
        let all = store
            .recent_login_attempts(&p, "ann@example.com", 0, 100)
            .await
            .expect("all");
        assert_eq!(
            all, newest_first,
            "all ten, newest first, every field intact"
        );
        let since = store
            .recent_login_attempts(&p, "ann@example.com", base + 5_000, 100)
            .await
            .expect("since");
        assert_eq!(since, newest_first[..5], "since is inclusive");
        let limited = store
            .recent_login_attempts(&p, "ann@example.com", base + 5_000, 3)
            .await
            .expect("limit");
        assert_eq!(limited, newest_first[..3]);
        assert!(store
            .recent_login_attempts(&p, "ann@example.com", 0, 0)
            .await
            .expect("limit 0")
            .is_empty());
        let clamped = store
            .recent_login_attempts(&p, "ann@example.com", 0, usize::MAX)
            .await
            .expect("clamped");
        assert_eq!(clamped.len(), 10);
        assert!(store
            .recent_login_attempts(&p, "nobody@example.com", 0, 10)
            .await
            .expect("none")
            .is_empty());
    }

    pub(super) async fn login_attempts_survive_concurrent_writers(store: &dyn DataStore) {
        let p = ProjectId::generate();
        let at = now() - 1_000;
        // All in the same millisecond: only the attempt id tells them apart.
        let attempts: Vec<_> = (0..50)
            .map(|_| attempt(&p, "target@example.com", at))
            .collect();
        for r in join_all(attempts.iter().map(|a| store.record_login_attempt(a))).await {
            r.expect("concurrent record");
        }
        let listed = store
            .recent_login_attempts(&p, "target@example.com", 0, 100)
            .await
            .expect("list");
        assert_eq!(listed.len(), 50, "every concurrent attempt is stored");
        let mut ids: Vec<_> = listed.iter().map(|a| a.attempt_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50);
    }

    pub(super) async fn token_revocation(store: &dyn DataStore) {
        let p = ProjectId::generate();
        assert!(!store.is_token_revoked(&p, "jti-1").await.expect("fresh"));
        store
            .revoke_token(&p, "jti-1", now() + 60_000)
            .await
            .expect("revoke");
        store
            .revoke_token(&p, "jti-1", now() + 60_000)
            .await
            .expect("revoke is idempotent");
        assert!(store.is_token_revoked(&p, "jti-1").await.expect("revoked"));
        assert!(!store
            .is_token_revoked(&p, "jti-2")
            .await
            .expect("other jti"));
        assert!(!store
            .is_token_revoked(&ProjectId::generate(), "jti-1")
            .await
            .expect("other project"));
        // A token already past its exp needs no mark.
        store
            .revoke_token(&p, "jti-old", now() - 1_000)
            .await
            .expect("revoke expired token");
        assert!(!store
            .is_token_revoked(&p, "jti-old")
            .await
            .expect("expired"));
    }

    pub(super) async fn deny_events_newest_first_across_days(store: &dyn DataStore) {
        let (a, b) = (ProjectId::generate(), ProjectId::generate());
        let t = now();
        let ev = |p: &ProjectId, at: i64, key: &str| DenyEvent {
            project_id: p.clone(),
            at,
            bucket: "metadata:email".into(),
            key: key.into(),
            ip: Some("192.0.2.1".into()),
        };
        let events = vec![
            ev(&a, t - 2 * DAY_MS, "old@example.com"),
            ev(&a, t - 3_600_000, "hour@example.com"),
            ev(&a, t - 60_000, "min1@example.com"),
            ev(&a, t - 60_000, "min2@example.com"),
            ev(&b, t - 60_000, "other@example.com"),
        ];
        store.record_deny_events(&events).await.expect("record");
        store
            .record_deny_events(&[])
            .await
            .expect("an empty batch is fine");

        let all = store
            .list_deny_events(&a, t - 3 * DAY_MS, 100)
            .await
            .expect("list");
        assert_eq!(all.len(), 4, "{all:?}");
        assert!(all.windows(2).all(|w| w[0].at >= w[1].at), "newest first");
        assert_eq!(
            all[3], events[0],
            "the two-day-old event is found in its own day"
        );
        assert_eq!(all[2], events[1]);
        assert!(all[..2].contains(&events[2]) && all[..2].contains(&events[3]));
        let recent = store
            .list_deny_events(&a, t - 5_400_000, 100)
            .await
            .expect("since");
        assert_eq!(recent.len(), 3);
        assert_eq!(
            store
                .list_deny_events(&a, t - 3 * DAY_MS, 2)
                .await
                .expect("limit")
                .len(),
            2
        );
        assert_eq!(
            store.list_deny_events(&b, 0, 100).await.expect("b"),
            [events[4].clone()]
        );
    }

    pub(super) async fn projects_are_isolated(store: &dyn DataStore) {
        let (p1, p2) = (ProjectId::generate(), ProjectId::generate());
        let s1 = session(&p1, 60_000);
        let s2 = Session {
            project_id: p2.clone(),
            token_hash: [9; 32],
            device_id: DeviceId::generate(),
            ..s1.clone()
        };
        store.put_session(&s1).await.expect("put p1");
        store.put_session(&s2).await.expect("put p2");
        assert_eq!(
            store.get_session(&p1, &s1.session_id).await.expect("get"),
            Some(s1.clone())
        );
        assert_eq!(
            store.get_session(&p2, &s1.session_id).await.expect("get"),
            Some(s2.clone())
        );
        assert!(store
            .revoke_session(&p1, &s1.session_id)
            .await
            .expect("revoke p1"));
        assert!(
            !store
                .get_session(&p2, &s1.session_id)
                .await
                .expect("get")
                .expect("p2 live")
                .revoked
        );

        let d = DeviceId::generate();
        store
            .add_trusted_identifier(&p1, &d, "ann@example.com")
            .await
            .expect("trust");
        assert!(store
            .trusted_identifiers(&p2, &d)
            .await
            .expect("p2 set")
            .is_empty());
        store
            .record_login_attempt(&attempt(&p1, "ann@example.com", now()))
            .await
            .expect("attempt");
        assert!(store
            .recent_login_attempts(&p2, "ann@example.com", 0, 10)
            .await
            .expect("p2")
            .is_empty());
        store
            .put_entropy_snapshot(&snapshot(&p1, &d, now()))
            .await
            .expect("snapshot");
        assert_eq!(
            store
                .latest_entropy_snapshot(&p2, &d)
                .await
                .expect("p2 snapshot"),
            None
        );
        assert!(store
            .list_deny_events(&p2, 0, 10)
            .await
            .expect("p2 denies")
            .is_empty());
    }

    pub(super) async fn lists_are_clamped_to_the_max_limit(store: &dyn DataStore) {
        let p = ProjectId::generate();
        let t = now() - 60_000;
        let events: Vec<_> = (0..MAX_LIST_LIMIT as i64 + 5)
            .map(|i| DenyEvent {
                project_id: p.clone(),
                at: t + i,
                bucket: "ip".into(),
                key: "192.0.2.1".into(),
                ip: None,
            })
            .collect();
        store
            .record_deny_events(&events)
            .await
            .expect("record a big batch");
        let listed = store
            .list_deny_events(&p, 0, usize::MAX)
            .await
            .expect("list");
        assert_eq!(listed.len(), MAX_LIST_LIMIT);
        assert_eq!(
            listed[0].at,
            t + MAX_LIST_LIMIT as i64 + 4,
            "the newest are kept"
        );
    }

    pub(super) async fn invalid_input_is_refused(store: &dyn DataStore) {
        let p = ProjectId::generate();
        let d = DeviceId::generate();
        let expired = session(&p, -1_000);
        assert_invalid(store.put_session(&expired).await, "expired session");
        assert_invalid(
            store.put_session(&session(&p, 400 * DAY_MS)).await,
            "session beyond the lifetime cap",
        );
        let mut bad = session(&p, 60_000);
        bad.risk.score = 101;
        assert_invalid(store.put_session(&bad).await, "risk score above 100");
        assert_eq!(
            store.get_session(&p, &bad.session_id).await.expect("get"),
            None,
            "nothing written"
        );
        assert_invalid(
            store
                .touch_session(&p, &bad.session_id, now(), now() + 400 * DAY_MS)
                .await,
            "long touch",
        );

        let long = "x".repeat(MAX_KEY_BYTES + 1);
        assert_invalid(
            store.add_trusted_identifier(&p, &d, "").await,
            "empty identifier",
        );
        assert_invalid(
            store.add_trusted_identifier(&p, &d, &long).await,
            "long identifier",
        );
        assert_invalid(
            store.recent_login_attempts(&p, "", 0, 10).await,
            "empty identifier read",
        );
        assert_invalid(
            store.record_login_attempt(&attempt(&p, &long, now())).await,
            "long attempt identifier",
        );
        assert_invalid(
            store
                .record_login_attempt(&attempt(&p, "ann@example.com", -5))
                .await,
            "negative time",
        );
        let mut no_id = attempt(&p, "ann@example.com", now());
        no_id.attempt_id.clear();
        assert_invalid(store.record_login_attempt(&no_id).await, "empty attempt id");
        assert_invalid(store.revoke_token(&p, "", now() + 1_000).await, "empty jti");
        assert_invalid(store.is_token_revoked(&p, &long).await, "long jti");
        let mut huge = snapshot(&p, &d, now());
        huge.entropy_json = "x".repeat(qyzar_store::MAX_ENTROPY_BYTES + 1);
        assert_invalid(store.put_entropy_snapshot(&huge).await, "huge entropy");
        let bad_deny = DenyEvent {
            project_id: p.clone(),
            at: now(),
            bucket: "ip".into(),
            key: String::new(),
            ip: None,
        };
        assert_invalid(
            store.record_deny_events(&[bad_deny]).await,
            "empty deny key",
        );
        assert!(
            store
                .list_deny_events(&p, 0, 10)
                .await
                .expect("list")
                .is_empty(),
            "a refused batch writes nothing"
        );
    }

    pub(super) async fn health_answers(store: &dyn DataStore) {
        store.health().await.expect("healthy");
    }
}

mod embedded_only {
    use qyzar_shared::ids::{DeviceId, ProjectId};
    use qyzar_store::LoginAttempt;

    use super::suite::{now, session};
    use super::*;

    #[tokio::test]
    async fn reopen_after_restart_keeps_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested").join("data.redb");
        let p = ProjectId::generate();
        let d = DeviceId::generate();
        let s = session(&p, 60_000);
        {
            let store = EmbeddedStore::open(&path).expect("open");
            store.put_session(&s).await.expect("put");
            store
                .add_trusted_identifier(&p, &d, "ann@example.com")
                .await
                .expect("trust");
            store
                .revoke_token(&p, "jti", now() + 60_000)
                .await
                .expect("revoke");
            store.close().await.expect("close");
        }
        let store = EmbeddedStore::open(&path).expect("reopen");
        assert_eq!(
            store.get_session(&p, &s.session_id).await.expect("get"),
            Some(s)
        );
        assert_eq!(
            store.trusted_identifiers(&p, &d).await.expect("list"),
            ["ann@example.com"]
        );
        assert!(store.is_token_revoked(&p, "jti").await.expect("revoked"));
        // Dropping without close releases the file too.
        drop(store);
        let store = EmbeddedStore::open(&path).expect("reopen after drop");
        store.health().await.expect("healthy");
    }

    /// Env var that turns [`sigkill_child`] from a no-op into the writer
    /// that [`answered_writes_survive_sigkill`] kills.
    const SIGKILL_DIR: &str = "QYZAR_TEST_SIGKILL_STORE_DIR";
    /// Writes acknowledged before the kill; several group-commit batches.
    const SIGKILL_AFTER_ACKS: usize = 300;
    /// Concurrent writers in the child, so batches hold several writes.
    const SIGKILL_WRITERS: usize = 8;

    /// The `DataStore` contract: a write whose call returned `Ok` survives a
    /// crash. A child process (this test binary, running [`sigkill_child`])
    /// records login attempts from 8 tasks and prints each acknowledged
    /// one; it is killed with SIGKILL mid-stream (no close, no drop, no
    /// destructor), and every acknowledged attempt must be in the reopened
    /// file. A kill keeps the OS page cache, so this checks that the answer
    /// waits for redb's commit and that redb recovers the file; surviving a
    /// power cut is what the commit's `fdatasync` adds, which a test in one
    /// machine cannot cut.
    #[test]
    fn answered_writes_survive_sigkill() {
        use std::collections::HashSet;
        use std::io::{BufRead as _, BufReader};
        use std::process::{Command, Stdio};

        // Run again by itself as the child, this test is the writer.
        if let Some(dir) = std::env::var_os(SIGKILL_DIR) {
            sigkill_child(std::path::Path::new(&dir));
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let module = module_path!().split_once("::").map_or("", |(_, m)| m);
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                &format!("{module}::answered_writes_survive_sigkill"),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SIGKILL_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child writer");
        let stdout = child.stdout.take().expect("child stdout");
        let mut acked = HashSet::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child output");
            if let Some(id) = line.strip_prefix("acked ") {
                acked.insert(id.to_owned());
                if acked.len() >= SIGKILL_AFTER_ACKS {
                    break;
                }
            }
        }
        // `Child::kill` is SIGKILL on Unix: the writer gets no chance to
        // flush or close anything.
        child.kill().expect("kill the child");
        let _ = child.wait();
        assert_eq!(acked.len(), SIGKILL_AFTER_ACKS, "the child stopped early");

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let store = EmbeddedStore::open(dir.path().join("data.redb")).expect("reopen");
            let p = sigkill_project();
            let mut stored = HashSet::new();
            for w in 0..SIGKILL_WRITERS {
                let rows = store
                    .recent_login_attempts(&p, &format!("writer{w}@example.com"), 0, MAX_LIST_LIMIT)
                    .await
                    .expect("list");
                stored.extend(rows.into_iter().map(|a| a.attempt_id));
            }
            let lost: Vec<_> = acked.difference(&stored).collect();
            assert!(
                lost.is_empty(),
                "acknowledged but lost after SIGKILL: {lost:?}"
            );
            println!(
                "sigkill: {} acknowledged, {} stored (writes in flight may land too)",
                acked.len(),
                stored.len()
            );
        });
    }

    /// The project the SIGKILL child writes to; fixed so both sides agree.
    fn sigkill_project() -> ProjectId {
        ProjectId::parse("prj_sigkill0000000000000000").expect("project id")
    }

    /// The child side of [`answered_writes_survive_sigkill`] (the same test,
    /// run by the parent with [`SIGKILL_DIR`] set): writes until killed,
    /// printing each acknowledged attempt.
    fn sigkill_child(dir: &std::path::Path) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(sigkill_writes(dir));
    }

    async fn sigkill_writes(dir: &std::path::Path) {
        let store = Arc::new(EmbeddedStore::open(dir.join("data.redb")).expect("open"));
        let p = sigkill_project();
        let tasks: Vec<_> = (0..SIGKILL_WRITERS)
            .map(|w| {
                let (store, p) = (Arc::clone(&store), p.clone());
                tokio::spawn(async move {
                    for i in 0.. {
                        let a = LoginAttempt {
                            project_id: p.clone(),
                            identifier: format!("writer{w}@example.com"),
                            at: now(),
                            attempt_id: format!("w{w}-{i}"),
                            success: true,
                            ip: None,
                            device_id: None,
                            session_id: None,
                            region: None,
                            platform: None,
                            browser: None,
                        };
                        store.record_login_attempt(&a).await.expect("record");
                        println!("acked {}", a.attempt_id);
                        // Stay under the list limit the parent reads back.
                        if i >= MAX_LIST_LIMIT / 2 {
                            std::future::pending::<()>().await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// The ATO route's pattern under the load test's 32 connections: each
    /// caller reads the identifier's history, then records an attempt and
    /// waits for it, in a closed loop. Prints writes per commit (the
    /// grouping the load test gets); asserts only that grouping happens,
    /// since how much depends on the disk's fsync time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn group_commit_groups_closed_loop_login_attempts() {
        let (store, _dir) = open_embedded();
        let store = Arc::new(store);
        let p = ProjectId::generate();
        let (callers, rounds) = (32, 20);
        let before = store.commit_count();
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let (store, p) = (Arc::clone(&store), p.clone());
                tokio::spawn(async move {
                    for r in 0..rounds {
                        let ident = format!("user{}@example.com", (c * 31 + r * 7) % 50);
                        store
                            .recent_login_attempts(&p, &ident, 0, 200)
                            .await
                            .expect("history");
                        let a = LoginAttempt {
                            project_id: p.clone(),
                            identifier: ident,
                            at: now(),
                            attempt_id: LoginAttempt::new_id(),
                            success: r % 4 != 0,
                            ip: Some("203.0.113.9".into()),
                            device_id: None,
                            session_id: None,
                            region: Some("DE".into()),
                            platform: None,
                            browser: None,
                        };
                        store.record_login_attempt(&a).await.expect("record");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let writes = (callers * rounds) as u64;
        let commits = store.commit_count() - before;
        println!(
            "closed loop: {writes} login attempts from {callers} callers in {commits} commits \
             ({:.1} writes per commit)",
            writes as f64 / commits as f64
        );
        assert!(commits >= 1);
        assert!(
            commits < writes,
            "{writes} writes took {commits} commits: not grouped"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn group_commit_shares_fsyncs() {
        let (store, _dir) = open_embedded();
        let store = Arc::new(store);
        let p = ProjectId::generate();
        let before = store.commit_count();
        let writes = 200;
        let tasks: Vec<_> = (0..writes)
            .map(|_| {
                let (store, s) = (Arc::clone(&store), session(&p, 60_000));
                tokio::spawn(async move {
                    store.put_session(&s).await.expect("put");
                    s
                })
            })
            .collect();
        let mut written = Vec::new();
        for t in tasks {
            written.push(t.await.expect("task"));
        }
        let commits = store.commit_count() - before;
        println!("group commit: {writes} concurrent put_session in {commits} commits");
        assert!(commits >= 1);
        assert!(
            commits <= writes / 4,
            "{writes} concurrent writes took {commits} commits: not grouped"
        );
        for s in written {
            assert_eq!(
                store.get_session(&p, &s.session_id).await.expect("get"),
                Some(s),
                "every grouped write is durable"
            );
        }
    }

    #[tokio::test]
    async fn purge_removes_what_is_due_and_nothing_else() {
        let (store, _dir) = open_embedded();
        let p = ProjectId::generate();
        let t = now();
        let short = session(&p, 1_000);
        let long = session(&p, 10 * DAY_MS);
        store.put_session(&short).await.expect("put");
        store.put_session(&long).await.expect("put");
        // Extended past the purge time: the stale index entry must not delete it.
        let touched = session(&p, 1_000);
        store.put_session(&touched).await.expect("put");
        assert!(store
            .touch_session(&p, &touched.session_id, t, t + DAY_MS)
            .await
            .expect("touch"));
        store
            .revoke_token(&p, "jti", t + 1_000)
            .await
            .expect("revoke");
        let mut a = LoginAttempt {
            project_id: p.clone(),
            identifier: "ann@example.com".into(),
            at: t,
            attempt_id: LoginAttempt::new_id(),
            success: true,
            ip: None,
            device_id: None,
            session_id: None,
            region: None,
            platform: None,
            browser: None,
        };
        store.record_login_attempt(&a).await.expect("attempt");

        let removed = store.purge_expired(t + 2_000).await.expect("purge");
        assert_eq!(removed, 2, "the short session and the revocation");
        assert!(store
            .get_session(&p, &long.session_id)
            .await
            .expect("get")
            .is_some());
        assert!(store
            .get_session(&p, &touched.session_id)
            .await
            .expect("get")
            .is_some());
        assert_eq!(
            store
                .recent_login_attempts(&p, "ann@example.com", 0, 10)
                .await
                .expect("list")
                .len(),
            1
        );

        // Past the 90-day retention the attempt goes too (reads do not
        // filter retention, so an empty list proves the row is gone).
        let removed = store.purge_expired(t + 91 * DAY_MS).await.expect("purge");
        assert_eq!(removed, 3, "the long and touched sessions and the attempt");
        assert!(store
            .recent_login_attempts(&p, "ann@example.com", 0, 10)
            .await
            .expect("list")
            .is_empty());
        a.at = t + 1;
        store
            .record_login_attempt(&a)
            .await
            .expect("writes still work after a purge");
    }

    #[tokio::test]
    async fn close_flushes_and_refuses_later_writes() {
        let (store, _dir) = open_embedded();
        let p = ProjectId::generate();
        let s = session(&p, 60_000);
        store.put_session(&s).await.expect("put");
        store.close().await.expect("close");
        store.close().await.expect("close twice");
        let err = store
            .put_session(&session(&p, 60_000))
            .await
            .expect_err("write after close");
        assert!(err.is_unavailable(), "{err:?}");
        assert!(store
            .health()
            .await
            .expect_err("health after close")
            .is_unavailable());
        assert_eq!(
            store
                .get_session(&p, &s.session_id)
                .await
                .expect("reads still work"),
            Some(s)
        );
    }
}
