//! Anti-ATO v2 through the route, on both stores: the profile survives a
//! flood, impossible travel is seen after one, concurrent logins keep every
//! device, and attempts logged before profiles existed still count.

use serde_json::{json, Value};

use crate::helpers::{install, project, request, store, Store, TestEngine, TestProject};

/// A short failure window, tight thresholds: the defaults would do too.
const SETTINGS: &str = r#"{"allowedOrigins":["https://shop.example"],
  "ato":{"challengeScore":40,"blockScore":85,"failedAttemptsWindowSeconds":60}}"#;

struct Fixture {
    engine: TestEngine,
    p: TestProject,
}

/// An engine over `kind` with the GeoIP fixture (`QYZAR_TEST_GEOIP_DB`,
/// deploy/mmdb-fixture.sh): regions come from the body's `ip`, as for any
/// backend call.
async fn fixture(kind: Store) -> Option<Fixture> {
    let path = qyzar_shared::testing::backend("QYZAR_TEST_GEOIP_DB", "anti-ATO regions")?;
    let geo = qyzar_engine::geo::Geo::open(std::path::Path::new(&path)).expect("the fixture opens");
    let (store, dir) = store(kind).await?;
    let options = qyzar_engine::StateOptions {
        geo: Some(std::sync::Arc::new(geo)),
        ..Default::default()
    };
    let engine = TestEngine::spawn_with_options(store, dir, options).await;
    let (p, cfg) = project(SETTINGS, false);
    install(&engine.engine, 1, vec![cfg]);
    Some(Fixture { engine, p })
}

impl Fixture {
    /// One attempt from an IP the GeoIP fixture places in `region`.
    async fn attempt(&self, identifier: &str, success: bool, device: &str, region: &str) -> Value {
        let ip = match region {
            "FR" => "203.0.113.10",
            "US" => "198.51.100.10",
            "DE" => "2001:db8::10",
            _ => "192.0.2.10", // JP, by its registered country
        };
        let body = json!({"projectId": self.p.id, "identifier": identifier, "success": success,
            "ip": ip, "deviceId": device});
        let r = request(
            "POST",
            &self.engine.url("/projects/client/ato-login-attempt"),
            &[("authorization", &format!("Bearer {}", self.p.secret))],
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    fn project_id(&self) -> qyzar_shared::ids::ProjectId {
        qyzar_shared::ids::ProjectId::parse(&self.p.id).unwrap()
    }
}

/// A device id from a number (ids need 16+ base64url characters).
fn dev(n: usize) -> String {
    format!("dev_{n:0>22}")
}

fn reasons(v: &Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

/// The issue's case: one success, 210 failures, then a success from
/// elsewhere still sees the real last login; the attacker's login from a
/// new device is not a first sight.
async fn a_flood_does_not_erase_the_last_login(kind: Store) {
    let Some(f) = fixture(kind).await else { return };
    let who = "victim@example.com";
    f.attempt(who, true, &dev(1), "FR").await;
    for i in 0..210 {
        f.attempt(who, false, &dev(1000 + i), "JP").await;
    }
    let r = f.attempt(who, true, &dev(2), "FR").await;
    assert!(r["lastLoginAt"].is_string(), "{r:?}");
    assert_eq!(r["priorSnapshot"]["deviceId"], dev(1).as_str());
    let why = reasons(&r);
    assert!(why.contains(&"new_device".to_owned()), "{r:?}");
    assert!(why.contains(&"failed_attempt_velocity".to_owned()), "{r:?}");
    assert_ne!(r["action"], "allow", "{r:?}");
    // A sliding-window estimate: exact within one fixed window; a flood
    // straddling a window boundary loses at most elapsed/window of the
    // previous window's count (a second or two of a minute here).
    let failures = r["details"]["failed_attempt_velocity"]["failures"]
        .as_u64()
        .unwrap();
    assert!((205..=210).contains(&failures), "{r:?}");
    assert_eq!(r["details"]["new_device"]["knownDevices"], 1);
    // The store's profile holds the two real devices, none of the flood's.
    let stored = f
        .engine
        .engine
        .store
        .ato_profile(&f.project_id(), who)
        .await
        .unwrap()
        .expect("a profile");
    assert_eq!(stored.devices.len(), 2, "{stored:?}");
    f.engine.stop().await;
}

/// A success in FR, a flood, then a success from the US minutes later:
/// impossible travel and a new region, with the known regions in details.
async fn impossible_travel_after_a_flood(kind: Store) {
    let Some(f) = fixture(kind).await else { return };
    let who = "traveller@example.com";
    f.attempt(who, true, &dev(1), "FR").await;
    for i in 0..50 {
        f.attempt(who, false, &dev(2000 + i), "US").await;
    }
    let r = f.attempt(who, true, &dev(3), "US").await;
    let why = reasons(&r);
    assert!(why.contains(&"impossible_travel".to_owned()), "{r:?}");
    assert!(why.contains(&"new_region".to_owned()), "{r:?}");
    assert_eq!(
        r["details"]["new_region"],
        json!({"region": "US", "lastRegion": "FR", "knownRegions": ["FR"]})
    );
    assert_eq!(r["details"]["impossible_travel"]["fromRegion"], "FR");
    // The City fixture places both IPs (Paris, New York): the decision
    // used their coordinates, not the region alone.
    let km = r["details"]["impossible_travel"]["distanceKm"].as_u64();
    assert!(km.is_some_and(|km| (5_000..6_000).contains(&km)), "{r:?}");
    assert!(r["details"]["impossible_travel"]["speedKmh"].as_u64() > Some(1_000));
    f.engine.stop().await;
}

/// Concurrent successful logins for one identifier from many devices: the
/// profile keeps every device and the newest success.
async fn concurrent_logins_keep_every_device(kind: Store) {
    let Some(f) = fixture(kind).await else { return };
    let f = std::sync::Arc::new(f);
    let who = "busy@example.com";
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let f = std::sync::Arc::clone(&f);
            tokio::spawn(async move {
                for _ in 0..3 {
                    f.attempt(who, true, &dev(i), "DE").await;
                    f.attempt(who, false, &dev(i), "DE").await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let pid = f.project_id();
    let stored = f
        .engine
        .engine
        .store
        .ato_profile(&pid, who)
        .await
        .unwrap()
        .expect("a profile");
    assert_eq!(stored.devices.len(), 16, "{stored:?}");
    assert!(
        stored.devices.iter().all(|d| d.successes == 3),
        "{stored:?}"
    );
    // 48 failures; a window boundary during the run may shave one or two
    // off the sliding-window estimate (see the flood test).
    let failures = stored.failures_at(qyzar_shared::time::now_ms());
    assert!((46..=48).contains(&failures), "{failures}");
    let newest = f
        .engine
        .engine
        .store
        .recent_login_attempts(&pid, who, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.success)
        .max_by(|a, b| (a.at, &a.attempt_id).cmp(&(b.at, &b.attempt_id)))
        .unwrap();
    assert_eq!(stored.last_success.unwrap().attempt_id, newest.attempt_id);
    // The engine's cached profile, which the next decision reads (changed
    // in place under concurrency), holds the same: a seventeenth device is
    // new against sixteen known.
    let r = f.attempt(who, true, &dev(16), "DE").await;
    assert_eq!(r["details"]["new_device"]["knownDevices"], 16, "{r}");
    match std::sync::Arc::try_unwrap(f) {
        Ok(f) => f.engine.stop().await,
        Err(_) => unreachable!("every task has finished"),
    }
}

/// Attempts logged before profiles existed build the profile on first use.
async fn old_attempt_rows_build_the_profile(kind: Store) {
    let Some(f) = fixture(kind).await else { return };
    let pid = f.project_id();
    let who = "legacy@example.com";
    let old = qyzar_store::LoginAttempt {
        project_id: pid.clone(),
        identifier: who.into(),
        at: qyzar_shared::time::now_ms() - 86_400_000,
        attempt_id: qyzar_store::LoginAttempt::new_id(),
        success: true,
        ip: Some("192.0.2.1".into()),
        device_id: Some(qyzar_shared::ids::DeviceId::parse(&dev(7)).unwrap()),
        session_id: None,
        region: Some("FR".into()),
        platform: None,
        browser: None,
    };
    f.engine
        .engine
        .store
        .record_login_attempt(&old)
        .await
        .unwrap();
    let r = f.attempt(who, true, &dev(7), "FR").await;
    assert_eq!(r["priorSnapshot"]["deviceId"], dev(7).as_str(), "{r:?}");
    assert!(!reasons(&r).contains(&"new_device".to_owned()), "{r:?}");
    // Written whole with that attempt.
    let stored = f
        .engine
        .engine
        .store
        .ato_profile(&pid, who)
        .await
        .unwrap()
        .expect("a profile");
    assert_eq!(stored.devices[0].successes, 2, "{stored:?}");
    f.engine.stop().await;
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Store::Embedded).await;
                }
            )*
        }
        mod cql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Store::Cql).await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_flood_does_not_erase_the_last_login,
    impossible_travel_after_a_flood,
    concurrent_logins_keep_every_device,
    old_attempt_rows_build_the_profile,
);
