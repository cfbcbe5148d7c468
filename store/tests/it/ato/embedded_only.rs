//! What only the embedded store has for ATO profiles: purge and restart.

use super::*;

#[tokio::test]
async fn purge_drops_an_expired_profile_and_keeps_trust() {
    let (store, _dir) = super::super::open_embedded();
    let p = ProjectId::generate();
    let t = window_start();
    let mut gone = AtoProfile::default();
    let a = attempt(
        &p,
        "old@example.com",
        t,
        true,
        Some(&DeviceId::generate()),
        None,
    );
    let u = gone.record(
        &AttemptFacts {
            attempt: &a,
            location: None,
        },
        1,
        WINDOW_MS,
    );
    store
        .record_ato(&p, "old@example.com", None, u)
        .await
        .expect("record");
    let d = DeviceId::generate();
    let mut kept = AtoProfile::default();
    let a = attempt(&p, "kept@example.com", t, true, Some(&d), None);
    let mut u = kept.record(
        &AttemptFacts {
            attempt: &a,
            location: None,
        },
        1,
        WINDOW_MS,
    );
    u.cells.trusted = kept.trust(&d, t).cells.trusted;
    store
        .record_ato(&p, "kept@example.com", None, u)
        .await
        .expect("record");
    // Nothing is due yet.
    assert_eq!(store.purge_expired(t + 1000).await.expect("purge"), 0);
    assert_eq!(read(&store, &p, "old@example.com").await, Some(gone));
    let later = t + PROFILE_RETENTION_MS + 1;
    assert_eq!(store.purge_expired(later).await.expect("purge"), 1);
    assert_eq!(read(&store, &p, "old@example.com").await, None);
    let left = read(&store, &p, "kept@example.com")
        .await
        .expect("trusted stays");
    assert!(left.devices.is_empty() && left.last_success.is_none());
    assert!(left.is_trusted(&d));
}

#[tokio::test]
async fn reopened_store_keeps_profiles() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data.redb");
    let p = ProjectId::generate();
    let mut prof = AtoProfile::default();
    {
        let store = EmbeddedStore::open(&path).expect("open");
        let a = attempt(
            &p,
            "ann@example.com",
            window_start(),
            true,
            Some(&DeviceId::generate()),
            Some("FR"),
        );
        record(&store, &mut prof, 7, &a).await;
        store.close().await.expect("close");
    }
    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(read(&store, &p, "ann@example.com").await, Some(prof));
}

/// Attempts logged by `record_ato` live in the time-ordered attempt log
/// (one row per group commit): `recent_login_attempts` lists them with the
/// per-identifier rows, newest first, once each, only the asked project
/// and identifier; `unprofiled_login_attempts` (what a lazy profile build
/// reads) leaves them out; the purge deletes expired log rows.
#[tokio::test]
async fn attempt_log_is_listed_isolated_and_expires() {
    let (store, _dir) = super::super::open_embedded();
    let (p, q) = (ProjectId::generate(), ProjectId::generate());
    let t = window_start();
    let w = new_writer_id();
    // Rows written without a profile, older than everything logged.
    let legacy: Vec<LoginAttempt> = (0..3)
        .map(|k| attempt(&p, "ann@example.com", t + k, false, None, None))
        .collect();
    for a in &legacy {
        store.record_login_attempt(a).await.expect("legacy row");
    }
    // Ten attempts, half of them sent together so they share commits.
    let logged: Vec<LoginAttempt> = (0..10)
        .map(|k| attempt(&p, "ann@example.com", t + 100 + k, k % 2 == 0, None, None))
        .collect();
    let mut prof = AtoProfile::default();
    for a in &logged[..5] {
        record(&store, &mut prof, w, a).await;
    }
    let updates: Vec<_> = logged[5..]
        .iter()
        .map(|a| {
            let facts = AttemptFacts {
                attempt: a,
                location: None,
            };
            (a, prof.record(&facts, w, WINDOW_MS))
        })
        .collect();
    let writes = updates
        .iter()
        .map(|(a, u)| store.record_ato(&p, "ann@example.com", Some((*a).clone()), u.clone()));
    for r in futures::future::join_all(writes).await {
        r.expect("record_ato");
    }
    // A retried write logs the attempt again; it is listed once.
    let (a, u) = &updates[4];
    store
        .record_ato(&p, "ann@example.com", Some((*a).clone()), u.clone())
        .await
        .expect("retry");
    // The same identifier in another project, another identifier here.
    let mut other = AtoProfile::default();
    record(
        &store,
        &mut other,
        w,
        &attempt(&q, "ann@example.com", t + 500, true, None, None),
    )
    .await;
    let mut bob = AtoProfile::default();
    record(
        &store,
        &mut bob,
        w,
        &attempt(&p, "bob@example.com", t + 500, true, None, None),
    )
    .await;

    let ids = |rows: Vec<LoginAttempt>| -> Vec<String> {
        rows.into_iter().map(|a| a.attempt_id).collect()
    };
    let all = store
        .recent_login_attempts(&p, "ann@example.com", 0, 100)
        .await
        .expect("list");
    // Distinct times: the logged attempts, then the legacy rows, newest first.
    let want_sorted: Vec<String> = logged
        .iter()
        .rev()
        .chain(legacy.iter().rev())
        .map(|a| a.attempt_id.clone())
        .collect();
    assert_eq!(
        ids(all),
        want_sorted,
        "log and legacy rows, newest first, once each"
    );
    let newest3 = store
        .recent_login_attempts(&p, "ann@example.com", 0, 3)
        .await
        .expect("limit");
    assert_eq!(ids(newest3), want_sorted[..3].to_vec());
    let since = store
        .recent_login_attempts(&p, "ann@example.com", t + 105, 100)
        .await
        .expect("since");
    assert_eq!(ids(since), want_sorted[..5].to_vec());
    let unprofiled = store
        .unprofiled_login_attempts(&p, "ann@example.com", 0, 100)
        .await
        .expect("unprofiled");
    assert_eq!(
        ids(unprofiled),
        legacy
            .iter()
            .rev()
            .map(|a| a.attempt_id.clone())
            .collect::<Vec<_>>(),
        "a lazy build reads only the rows no profile holds"
    );
    assert_eq!(
        store
            .recent_login_attempts(&q, "ann@example.com", 0, 100)
            .await
            .expect("other project")
            .len(),
        1
    );

    // Everything expires with its newest attempt's retention.
    let later = t + 600 + qyzar_store::LOGIN_ATTEMPT_RETENTION_MS;
    assert!(store.purge_expired(later).await.expect("purge") >= 3);
    assert!(store
        .recent_login_attempts(&p, "ann@example.com", 0, 100)
        .await
        .expect("after purge")
        .is_empty());
}
