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
        .record_ato(&p, "old@example.com", None, &u)
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
        .record_ato(&p, "kept@example.com", None, &u)
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
