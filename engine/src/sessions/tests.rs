//! Unit tests of [`super`].
use super::*;

fn session(id: &str, ip: Option<&str>, region: Option<&str>, signals: &[&str]) -> Session {
    Session {
        project_id: ProjectId::parse("prj_0123456789abcdefghijkl").unwrap(),
        session_id: SessionId::parse(id).unwrap(),
        token_hash: [7; 32],
        device_id: DeviceId::from_digest(&[9; 32]),
        created_at: 1_700_000_000_000,
        expires_at: 1_700_000_600_000,
        last_seen_at: 1_700_000_100_000,
        revoked: false,
        ip: ip.map(str::to_owned),
        risk: Risk {
            score: 42,
            bot: true,
            signals: signals.iter().map(|s| (*s).to_owned()).collect(),
        },
        device: DeviceInfo {
            browser: "Chrome".into(),
            os: "Win \"10\"".into(),
            platform: "".into(),
            region: region.map(str::to_owned),
        },
    }
}

#[test]
fn the_packed_form_gives_the_same_session_back() {
    for s in [
        session(
            "ses_0123456789abcdefghijkl",
            Some("203.0.113.7"),
            Some("DE"),
            &["webdriver", "héadless\n"],
        ),
        session("ses_0123456789abcdefghijkl", None, None, &[]),
        session("ses_0123456789abcdefghijkl", Some(""), Some(""), &[""]),
        session(
            &format!("ses_{}", "x".repeat(64)),
            None,
            Some("FR-75"),
            &["a"],
        ),
    ] {
        let c = CachedSession::from_session(&s);
        assert_eq!(c.to_session(), s);
        assert_eq!(
            c.signals_json(),
            serde_json::to_string(&s.risk.signals).unwrap()
        );
        assert_eq!(c.session_id(), s.session_id.as_str());
        assert_eq!(c.device_id(), s.device_id.as_str());
        assert_eq!(c.project_id(), s.project_id.as_str());
    }
}

#[test]
fn keys_match_only_the_same_id_inline_or_not() {
    for id in [
        "ses_0123456789abcdefghijkl",
        &format!("ses_{}", "y".repeat(40)),
    ] {
        let k = SessionKey::new(id);
        assert_eq!(k.as_bytes(), id.as_bytes());
        assert!(IdRef(id.as_bytes()).equivalent(&k));
        assert!(!IdRef(&id.as_bytes()[..id.len() - 1]).equivalent(&k));
        let h = |v: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
            let mut s = std::collections::hash_map::DefaultHasher::new();
            v(&mut s);
            s.finish()
        };
        assert_eq!(h(&|s| k.hash(s)), h(&|s| IdRef(id.as_bytes()).hash(s)));
    }
}

#[test]
fn touch_moves_last_seen_once() {
    let c = CachedSession::from_session(&session("ses_0123456789abcdefghijkl", None, None, &[]));
    let seen = c.last_seen_at();
    assert!(c.touch(seen, seen + 60_000));
    assert!(
        !c.touch(seen, seen + 61_000),
        "a second touch from the same reading loses"
    );
    assert_eq!(c.last_seen_at(), seen + 60_000);
}

#[tokio::test]
async fn expiry_grace_negative_cache_and_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(qyzar_store::EmbeddedStore::open(dir.path().join("e.redb")).unwrap());
    // 64 KiB per project: about 150 sessions.
    let budget = Budget {
        total_bytes: 1 << 20,
        project_bytes: 64 << 10,
    };
    let cache = SessionCache::new(store, budget, budget);
    let s = session("ses_0123456789abcdefghijkl", None, None, &[]);
    let project = s.project_id.as_str().to_owned();
    cache.cache(s.clone());
    // Readable until expiry plus the grace, then gone from memory.
    let end = s.expires_at + EXPIRED_GRACE_MS;
    assert!(cache
        .cached(&project, s.session_id.as_str(), end - 1)
        .is_some());
    assert_eq!(cache.len(), 1);
    assert!(
        cache
            .cached("prj_another0123456789abcd", s.session_id.as_str(), end - 1)
            .is_none(),
        "found only under its own project"
    );
    assert!(cache.cached(&project, s.session_id.as_str(), end).is_none());
    assert_eq!(
        cache.len(),
        0,
        "an entry past its grace is dropped when read"
    );
    // Unknown ids: one store read, then negative hits for NEGATIVE_TTL.
    let id = "ses_zzzzzzzzzzzzzzzzzzzzzz";
    let t = now_ms();
    assert_eq!(
        cache.lookup(&project, id, t).await.unwrap().1,
        CacheStatus::Miss
    );
    assert_eq!(
        cache
            .lookup(&project, id, t + NEGATIVE_TTL_MS - 1)
            .await
            .unwrap()
            .1,
        CacheStatus::NegativeHit
    );
    assert_eq!(
        cache
            .lookup(&project, id, t + NEGATIVE_TTL_MS)
            .await
            .unwrap()
            .1,
        CacheStatus::Miss
    );
    // Text that is no session id never reaches the store.
    let (none, status) = cache.lookup(&project, "ses_../x", t).await.unwrap();
    assert!(none.is_none());
    assert_eq!(status, CacheStatus::Hit);
    // Bounded: far more sessions than the share leave the share's bytes.
    for i in 0..1_000 {
        let mut s = s.clone();
        s.session_id = SessionId::parse(&format!("ses_{i:0>22}")).unwrap();
        cache.cache(s);
    }
    let held = cache.counters().bytes.load(Ordering::Relaxed);
    assert!(held <= (64 << 10) + 64, "{held} bytes held");
    assert!((100..1_000).contains(&cache.len()), "{} held", cache.len());
}
