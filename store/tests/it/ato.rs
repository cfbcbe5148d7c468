//! Conformance of the anti-ATO profile (`ato_profile`, `record_ato`) on
//! both stores: the suite fns here run through `conformance!` (re-exported
//! by `suite`), the concurrency test through [`conformance_arc!`] because
//! it spawns tokio tasks, which need an owned store.

use std::sync::Arc;

use qyzar_shared::ids::{DeviceId, ProjectId};
use qyzar_store::profile::{new_writer_id, AttemptFacts, Forgotten, MAX_PROFILE_DEVICES};
use qyzar_store::{
    AtoProfile, DataStore, EmbeddedStore, LoginAttempt, ProfileUpdate, PROFILE_RETENTION_MS,
};

use super::suite::now;

/// The failure window of every test: an hour, so attempts placed at the
/// start of the current hour all count in one fixed window and the
/// sliding estimate is exact.
const WINDOW_MS: i64 = 3_600_000;

/// Start of the current failure window (+1 ms): attempts from here on
/// fall in one window.
fn window_start() -> i64 {
    let t = now();
    t - t.rem_euclid(WINDOW_MS) + 1
}

fn attempt(
    p: &ProjectId,
    ident: &str,
    at: i64,
    success: bool,
    device: Option<&DeviceId>,
    region: Option<&str>,
) -> LoginAttempt {
    LoginAttempt {
        project_id: p.clone(),
        identifier: ident.into(),
        at,
        attempt_id: LoginAttempt::new_id(),
        success,
        ip: Some("198.51.100.7".into()),
        device_id: device.cloned(),
        session_id: None,
        region: region.map(Into::into),
        platform: Some("desktop".into()),
        browser: Some("Firefox".into()),
    }
}

/// Joins `a` into the writer's profile and sends the update with the attempt.
async fn record(store: &dyn DataStore, prof: &mut AtoProfile, writer: u64, a: &LoginAttempt) {
    let facts = AttemptFacts {
        attempt: a,
        location: None,
    };
    let update = prof.record(&facts, writer, WINDOW_MS);
    store
        .record_ato(&a.project_id, &a.identifier, Some(a.clone()), update)
        .await
        .expect("record_ato");
}

async fn read(store: &dyn DataStore, p: &ProjectId, ident: &str) -> Option<AtoProfile> {
    store.ato_profile(p, ident).await.expect("ato_profile")
}

pub(crate) async fn ato_profile_round_trip_and_isolation(store: &dyn DataStore) {
    let p = ProjectId::generate();
    let ident = "ann@example.com";
    assert_eq!(read(store, &p, ident).await, None, "unknown identifier");
    let (d1, d2) = (DeviceId::generate(), DeviceId::generate());
    let t = window_start();
    let w = new_writer_id();
    let mut prof = AtoProfile::default();
    let attempts = [
        attempt(&p, ident, t, true, Some(&d1), Some("FR")),
        attempt(&p, ident, t + 10, false, Some(&d2), Some("RU")),
        attempt(&p, ident, t + 20, true, Some(&d2), Some("DE")),
        attempt(&p, ident, t + 30, false, None, None),
        attempt(&p, ident, t + 40, true, Some(&d1), Some("FR")),
    ];
    for a in &attempts {
        record(store, &mut prof, w, a).await;
    }
    let trust = prof.trust(&d1, t + 50);
    store
        .record_ato(&p, ident, None, trust)
        .await
        .expect("trust");
    let stored = read(store, &p, ident).await.expect("a profile");
    assert_eq!(stored, prof);
    assert_eq!(stored.devices.len(), 2);
    assert_eq!(stored.device(&d1).map(|d| d.successes), Some(2));
    assert_eq!(stored.failures_at(t + 60), 2);
    assert!(stored.is_trusted(&d1) && !stored.knows_region("RU"));
    // The attempts are logged too, newest first.
    let logged = store
        .recent_login_attempts(&p, ident, 0, 10)
        .await
        .expect("attempts");
    let ids: Vec<_> = logged.iter().map(|a| a.attempt_id.as_str()).collect();
    let want: Vec<_> = attempts
        .iter()
        .rev()
        .map(|a| a.attempt_id.as_str())
        .collect();
    assert_eq!(ids, want);
    // Other projects and identifiers see nothing.
    assert_eq!(read(store, &ProjectId::generate(), ident).await, None);
    assert_eq!(read(store, &p, "anna@example.com").await, None);
    assert_eq!(read(store, &p, "ann@example.co").await, None);
}

/// The case: a success, then a flood of 210 failures; the profile
/// still knows the success and counts every failure.
pub(crate) async fn ato_profile_keeps_success_after_210_failures(store: &dyn DataStore) {
    let p = ProjectId::generate();
    let ident = "victim@example.com";
    let d = DeviceId::generate();
    let t = window_start();
    let w = new_writer_id();
    let mut prof = AtoProfile::default();
    let ok = attempt(&p, ident, t, true, Some(&d), Some("FR"));
    record(store, &mut prof, w, &ok).await;
    for k in 1..=210 {
        let bad = attempt(
            &p,
            ident,
            t + k,
            false,
            Some(&DeviceId::generate()),
            Some("RU"),
        );
        record(store, &mut prof, w, &bad).await;
    }
    let stored = read(store, &p, ident).await.expect("a profile");
    assert_eq!(
        stored.last_success.as_ref().map(|r| r.attempt_id.as_str()),
        Some(ok.attempt_id.as_str())
    );
    assert_eq!(stored.failures_at(t + 211), 210);
    assert_eq!(stored.devices.len(), 1, "failures add no device");
    assert_eq!(stored, prof);
}

/// `forget` deletes a cell only if it is not newer than the cut; a write
/// bounded to the caps leaves the most recent devices.
pub(crate) async fn ato_forget_is_conditional_and_bounds_hold(store: &dyn DataStore) {
    let p = ProjectId::generate();
    let ident = "bob@example.com";
    let d = DeviceId::generate();
    let t = window_start();
    let mut prof = AtoProfile::default();
    record(
        store,
        &mut prof,
        1,
        &attempt(&p, ident, t, true, Some(&d), Some("FR")),
    )
    .await;
    store
        .record_ato(&p, ident, None, prof.trust(&d, t + 5))
        .await
        .expect("trust");
    let forget = |f: Forgotten| ProfileUpdate {
        cells: AtoProfile::default(),
        forget: f,
    };
    // Cuts older than the cells (or a later trust) leave them alone.
    let stale = Forgotten {
        devices: vec![(d.clone(), t - 1)],
        regions: vec![("FR".into(), t - 1)],
        trusted: vec![(d.clone(), t + 6)],
        failures: vec![],
    };
    store
        .record_ato(&p, ident, None, forget(stale))
        .await
        .expect("stale forget");
    assert_eq!(read(store, &p, ident).await.as_ref(), Some(&prof));
    let exact = Forgotten {
        devices: vec![(d.clone(), t)],
        regions: vec![("FR".into(), t)],
        trusted: vec![(d.clone(), t + 5)],
        failures: vec![],
    };
    store
        .record_ato(&p, ident, None, forget(exact))
        .await
        .expect("forget");
    let left = read(store, &p, ident)
        .await
        .expect("the last success stays");
    assert!(left.devices.is_empty() && left.regions.is_empty() && left.trusted.is_empty());
    assert_eq!(left.last_success, prof.last_success);

    // 37 devices from one writer: 32 kept, the most recently seen.
    let ident = "many@example.com";
    let mut prof = AtoProfile::default();
    let devices: Vec<DeviceId> = (0..37).map(|_| DeviceId::generate()).collect();
    for (k, d) in devices.iter().enumerate() {
        let region = format!("R{:02}", k % 20);
        let a = attempt(&p, ident, t + k as i64, true, Some(d), Some(&region));
        record(store, &mut prof, 2, &a).await;
    }
    let stored = read(store, &p, ident).await.expect("a profile");
    assert_eq!(stored.devices.len(), MAX_PROFILE_DEVICES);
    assert!(stored.device(&devices[36]).is_some() && stored.device(&devices[4]).is_none());
    assert_eq!(stored, prof);
}

/// The store's merge does not depend on the order updates land in (on CQL
/// this checks the write-timestamp rules): one writer's updates (devices
/// past the cap, regions, failures, a trust, the cuts of the bound) sent
/// forwards for one identifier and backwards for another end equal; two
/// successes in one millisecond keep the greater attempt id either way.
pub(crate) async fn ato_updates_commute(store: &dyn DataStore) {
    let p = ProjectId::generate();
    let t = window_start();
    let mut prof = AtoProfile::default();
    let mut updates = Vec::new();
    for k in 0..50_i64 {
        let d = DeviceId::generate();
        let region = format!("R{:02}", k % 18);
        let a = attempt(&p, "x", t + k, k % 3 != 1, Some(&d), Some(&region));
        let facts = AttemptFacts {
            attempt: &a,
            location: None,
        };
        updates.push(prof.record(&facts, 9, WINDOW_MS));
        if k == 2 {
            updates.push(prof.trust(&d, t + k));
        }
    }
    // Two successes in the last millisecond, from two writers.
    for id in ["zzzz-late", "AAAA-early"] {
        let mut a = attempt(&p, "x", t + 60, true, None, None);
        a.attempt_id = id.into();
        let facts = AttemptFacts {
            attempt: &a,
            location: None,
        };
        updates.push(AtoProfile::default().record(&facts, 10, WINDOW_MS));
    }
    for u in &updates {
        store
            .record_ato(&p, "fwd", None, u.clone())
            .await
            .expect("forwards");
    }
    for u in updates.iter().rev() {
        store
            .record_ato(&p, "rev", None, u.clone())
            .await
            .expect("backwards");
    }
    let fwd = read(store, &p, "fwd").await.expect("forwards profile");
    let rev = read(store, &p, "rev").await.expect("backwards profile");
    assert_eq!(fwd, rev);
    assert_eq!(
        fwd.last_success.as_ref().map(|r| r.attempt_id.as_str()),
        Some("zzzz-late")
    );
    assert_eq!(fwd.devices.len(), MAX_PROFILE_DEVICES);
    assert_eq!(fwd.devices, prof.devices);
    assert_eq!(fwd.trusted, prof.trusted);
    assert_eq!(fwd.failures_at(t + 70), 17);
}

/// N writers (one engine each: own empty profile, own writer id) record
/// successes from their own device and failures, all at once, on one
/// identifier. The store ends with every device, the newest success and
/// every failure.
pub(crate) async fn ato_concurrent_writers_lose_nothing(store: Arc<dyn DataStore>) {
    const N: usize = 16;
    const SUCCESSES: i64 = 3;
    const FAILURES: i64 = 5;
    let p = ProjectId::generate();
    let ident = "shared@example.com";
    let t = window_start();
    let tasks: Vec<_> = (0..N)
        .map(|n| {
            let (store, p) = (Arc::clone(&store), p.clone());
            tokio::spawn(async move {
                let (w, d) = (new_writer_id(), DeviceId::generate());
                let mut prof = AtoProfile::default();
                let mut successes = Vec::new();
                for k in 0..(SUCCESSES + FAILURES) {
                    // Interleaved in time across writers; some share a ms.
                    let at = t + k * 4 + (n as i64 % 4);
                    let ok = matches!(k, 0 | 3 | 7);
                    let a = attempt(&p, ident, at, ok, Some(&d), Some("FR"));
                    record(&*store, &mut prof, w, &a).await;
                    if ok {
                        successes.push(a);
                    }
                }
                (d, successes)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.expect("writer task"));
    }
    let stored = read(&*store, &p, ident).await.expect("a profile");
    assert_eq!(stored.devices.len(), N);
    for (d, successes) in &all {
        assert_eq!(successes.len(), SUCCESSES as usize);
        let kept = stored.device(d).expect("every writer's device");
        assert_eq!(kept.successes, SUCCESSES as u32);
        assert_eq!(kept.first_seen, successes[0].at);
        assert_eq!(kept.last_seen, successes[successes.len() - 1].at);
    }
    let newest = all
        .iter()
        .flat_map(|(_, s)| s)
        .max_by(|a, b| (a.at, &a.attempt_id).cmp(&(b.at, &b.attempt_id)))
        .expect("successes");
    assert_eq!(
        stored.last_success.as_ref().map(|r| r.attempt_id.as_str()),
        Some(newest.attempt_id.as_str())
    );
    assert_eq!(stored.failures.len(), N);
    assert_eq!(stored.failures_at(t + 100), (N as u32) * FAILURES as u32);
}

/// Like `conformance!`, for suite fns that need an owned store.
macro_rules! conformance_arc {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (store, _dir) = super::super::open_embedded();
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod cql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::super::with_cql(|store| async move { super::$name(store).await }).await;
                }
            )*
        }
    };
}

conformance_arc!(ato_concurrent_writers_lose_nothing);

/// On CQL concurrent anti-ATO writes for one identifier share logged
/// batches (one per group, not one per attempt), writes for different
/// identifiers are not joined, and each grouped write is whole: every
/// identifier's profile holds its success and every attempt is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_concurrent_ato_writes_share_batches() {
    super::with_cql(|store| async move {
        const N: usize = 200;
        let p = ProjectId::generate();
        let t = window_start();
        let (writes_before, batches_before) = store.ato_write_counts();
        let tasks: Vec<_> = (0..N)
            .map(|n| {
                let (store, p) = (Arc::clone(&store), p.clone());
                tokio::spawn(async move {
                    // Half on one identifier, half each on its own.
                    let ident = if n % 2 == 0 {
                        "hot@example.com".to_owned()
                    } else {
                        format!("user{n}@example.com")
                    };
                    let a = attempt(
                        &p,
                        &ident,
                        t + n as i64,
                        true,
                        Some(&DeviceId::generate()),
                        Some("FR"),
                    );
                    let mut prof = AtoProfile::default();
                    record(&*store, &mut prof, new_writer_id(), &a).await;
                    a
                })
            })
            .collect();
        let mut written = Vec::new();
        for task in tasks {
            written.push(task.await.expect("writer task"));
        }
        let (writes, batches) = store.ato_write_counts();
        let (writes, batches) = (writes - writes_before, batches - batches_before);
        println!("{writes} concurrent record_ato in {batches} batches");
        assert_eq!(writes, N as u64);
        // 100 on their own identifiers: a batch each; 100 on one: grouped.
        assert!(
            (N as u64 / 2..N as u64 / 2 + N as u64 / 4).contains(&batches),
            "{writes} concurrent writes took {batches} batches: not grouped per identifier"
        );
        for a in written.iter().filter(|a| a.identifier != "hot@example.com") {
            let prof = read(&*store, &p, &a.identifier).await.expect("a profile");
            assert_eq!(
                prof.last_success.as_ref().map(|r| r.attempt_id.as_str()),
                Some(a.attempt_id.as_str())
            );
        }
        let hot = read(&*store, &p, "hot@example.com")
            .await
            .expect("a profile");
        // 100 devices written; a read keeps the newest MAX_PROFILE_DEVICES.
        assert_eq!(hot.devices.len(), MAX_PROFILE_DEVICES);
        let newest = written
            .iter()
            .filter(|a| a.identifier == "hot@example.com")
            .max_by_key(|a| a.at)
            .expect("hot attempts");
        assert_eq!(
            hot.last_success.as_ref().map(|r| r.attempt_id.as_str()),
            Some(newest.attempt_id.as_str())
        );
        let logged = store
            .recent_login_attempts(&p, "hot@example.com", 0, 1_000)
            .await
            .expect("attempts");
        assert_eq!(logged.len(), N / 2, "every grouped attempt row is written");
    })
    .await;
}

mod embedded_only;
