//! Regions (and City coordinates) from a MaxMind-format database: the
//! reader on a real file, `/connect` and `ato-login-attempt` with the
//! database configured, and an engine start refused over a file that is not
//! a database.
//!
//! The file is the GeoLite2-City-shaped fixture `deploy/mmdb-fixture.sh`
//! writes (documentation ranges only) and `deploy/test.sh` names in
//! `QYZAR_TEST_GEOIP_DB`; these tests skip with a printed line without it.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qyzar_engine::geo::{Geo, Located};
use qyzar_store::profile::GeoPoint;
use serde_json::{json, Value};

use crate::helpers::*;

/// The fixture database, or `None` (after a `skipped:` line).
fn fixture_db() -> Option<Geo> {
    let path = qyzar_shared::testing::backend("QYZAR_TEST_GEOIP_DB", "GeoIP lookups")?;
    Some(
        Geo::open(Path::new(&path))
            .expect("QYZAR_TEST_GEOIP_DB is a MaxMind DB (deploy/mmdb-fixture.sh)"),
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn the_fixture_database_answers_countries() {
    let Some(geo) = fixture_db() else { return };
    assert_eq!(geo.database_type(), "GeoLite2-City");
    let cases = [
        ("203.0.113.5", Some("FR")),
        ("203.0.113.255", Some("FR")),
        ("198.51.100.7", Some("US")),
        ("2001:db8::1", Some("DE")),
        ("2001:db8:ffff::1", Some("DE")),
        // What a dual-stack proxy forwards for an IPv4 client.
        ("::ffff:203.0.113.5", Some("FR")),
        // No `country`: the registered country.
        ("192.0.2.1", Some("JP")),
        // A code that is not two letters gives no region.
        ("198.18.0.1", None),
        // Not in the database.
        ("10.0.0.1", None),
        ("203.0.114.1", None),
        ("2001:db9::1", None),
    ];
    for (addr, want) in cases {
        assert_eq!(geo.country(ip(addr)).as_deref(), want, "{addr}");
    }
}

#[test]
fn the_fixture_database_answers_city_locations_in_the_same_lookup() {
    let Some(geo) = fixture_db() else { return };
    let paris = GeoPoint {
        lat_e4: 488_566,
        lon_e4: 23_522,
        radius_km: 20,
    };
    let new_york = GeoPoint {
        lat_e4: 407_128,
        lon_e4: -740_060,
        radius_km: 20,
    };
    let found = |country: &str, point: Option<GeoPoint>| {
        Some(Located {
            country: Some(country.to_owned()),
            point,
        })
    };
    let cases = [
        ("203.0.113.5", found("FR", Some(paris))),
        ("203.0.113.255", found("FR", Some(paris))),
        ("::ffff:203.0.113.5", found("FR", Some(paris))),
        ("198.51.100.7", found("US", Some(new_york))),
        // Country-only records: no point.
        ("2001:db8::1", found("DE", None)),
        ("192.0.2.1", found("JP", None)),
        // A record with neither part usable is still a record.
        (
            "198.18.0.1",
            Some(Located {
                country: None,
                point: None,
            }),
        ),
        // Not in the database.
        ("10.0.0.1", None),
        ("2001:db9::1", None),
    ];
    for (addr, want) in cases {
        assert_eq!(geo.locate(ip(addr)), want, "{addr}");
        // The country agrees with the country-only lookup.
        assert_eq!(
            geo.locate(ip(addr)).and_then(|l| l.country),
            geo.country(ip(addr)),
            "{addr}"
        );
    }
    // The two fixture cities are about 5 837 km apart.
    let km = paris.distance_km(&new_york);
    assert!((5_800.0..5_880.0).contains(&km), "{km}");
}

/// An engine with the fixture database and the default `cf-ipcountry`
/// header, and one project installed.
async fn geo_engine() -> Option<(TestEngine, TestProject)> {
    let geo = fixture_db()?;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(qyzar_store::EmbeddedStore::open(dir.path().join("engine.redb")).unwrap());
    // The test client is on loopback: trusted as a proxy, so its
    // forwarding headers count (as under `qyzar dev`).
    let options = qyzar_engine::StateOptions {
        geo: Some(Arc::new(geo)),
        trusted_proxies: qyzar_engine::client_addr::TrustedProxies::loopback(),
        ..Default::default()
    };
    let engine = TestEngine::spawn_with_options(store, dir, options).await;
    let (p, cfg) = project(SETTINGS, false);
    install(&engine.engine, 1, vec![cfg]);
    Some((engine, p))
}

/// `/connect` with `headers` (besides `Origin`), then the session's
/// `device.region` as `session-verify` shows it.
async fn region_after_connect(e: &TestEngine, p: &TestProject, headers: &[(&str, &str)]) -> Value {
    let body =
        json!({"projectId": p.id, "originToken": p.origin_token, "entropy": entropy()}).to_string();
    let mut all = vec![("origin", ORIGIN)];
    all.extend_from_slice(headers);
    let c = request("POST", &e.url("/connect"), &all, Some(&body)).await;
    assert_eq!(c.status, 201, "{:?}", c.body);
    let verify = json!({"projectId": p.id, "sessionId": c.body["sessionId"], "sessionToken": c.body["sessionToken"]}).to_string();
    let v = request(
        "POST",
        &e.url("/projects/client/session-verify"),
        &[("x-qyzar-project-secret", &p.secret)],
        Some(&verify),
    )
    .await;
    assert_eq!(v.body["valid"], true, "{:?}", v.body);
    v.body["device"]["region"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_takes_the_region_from_the_header_else_the_database() {
    let Some((e, p)) = geo_engine().await else {
        return;
    };
    // No header: the forwarded client IP is looked up.
    assert_eq!(
        region_after_connect(&e, &p, &[("x-forwarded-for", "203.0.113.5")]).await,
        "FR"
    );
    // The right-most hop not a trusted proxy is the client; hops to its
    // left were written by the client itself.
    assert_eq!(
        region_after_connect(&e, &p, &[("x-forwarded-for", "2001:db8::7, 198.51.100.1")]).await,
        "US"
    );
    assert_eq!(
        region_after_connect(
            &e,
            &p,
            &[("x-forwarded-for", "198.51.100.1, 2001:db8::7, 127.0.0.1")]
        )
        .await,
        "DE"
    );
    // The trusted header wins over the database.
    assert_eq!(
        region_after_connect(
            &e,
            &p,
            &[("x-forwarded-for", "203.0.113.5"), ("cf-ipcountry", "US")]
        )
        .await,
        "US"
    );
    // An unusable header falls back to the database.
    assert_eq!(
        region_after_connect(
            &e,
            &p,
            &[("x-forwarded-for", "203.0.113.5"), ("cf-ipcountry", "")]
        )
        .await,
        "FR"
    );
    // Nothing known: no region.
    assert_eq!(
        region_after_connect(&e, &p, &[("x-forwarded-for", "10.1.2.3")]).await,
        Value::Null
    );
    assert_eq!(region_after_connect(&e, &p, &[]).await, Value::Null);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ato_login_attempts_look_up_the_ip_in_the_body() {
    let Some((e, p)) = geo_engine().await else {
        return;
    };
    let pid = qyzar_shared::ids::ProjectId::parse(&p.id).unwrap();
    let auth = format!("Bearer {}", p.secret);
    let attempt = |who: &str, headers: Vec<(&'static str, &'static str)>, ip: Option<&str>| {
        let mut body = json!({"projectId": p.id, "identifier": who, "success": true});
        if let Some(ip) = ip {
            body["ip"] = json!(ip);
        }
        let url = e.url("/projects/client/ato-login-attempt");
        let auth = auth.clone();
        async move {
            let mut h = vec![("authorization", auth.as_str())];
            h.extend(headers);
            let r = request("POST", &url, &h, Some(&body.to_string())).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
    };
    let stored = |who: &'static str| {
        let store = Arc::clone(&e.engine.store);
        let pid = pid.clone();
        async move {
            store.recent_login_attempts(&pid, who, 0, 10).await.unwrap()[0]
                .region
                .clone()
        }
    };
    attempt("ann", vec![], Some("198.51.100.7")).await;
    assert_eq!(stored("ann").await.as_deref(), Some("US"));
    // The header still comes first.
    attempt("bob", vec![("cf-ipcountry", "JP")], Some("198.51.100.7")).await;
    assert_eq!(stored("bob").await.as_deref(), Some("JP"));
    // The caller is a backend: its forwarded address is not the user's.
    attempt("cy", vec![("x-forwarded-for", "203.0.113.5")], None).await;
    assert_eq!(stored("cy").await, None);
    e.stop().await;
}

#[test]
fn the_engine_does_not_start_over_a_bad_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mmdb");
    std::fs::write(&junk, b"<html>not found</html>\n").unwrap();
    for path in [junk, dir.path().join("missing.mmdb")] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qyzar-engine"))
            .env("QYZAR_ENGINE_GEOIP_DB", &path)
            .env("QYZAR_ENGINE_DATA", dir.path().join("engine.redb"))
            .env("QYZAR_ENGINE_ADDR", "127.0.0.1:0")
            .env("QYZAR_ENGINE_INTERNAL_ADDR", "127.0.0.1:0")
            .env_remove("QYZAR_ENGINE_CQL_NODES")
            .env_remove("QYZAR_ENGINE_ADMIN_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // An engine that did start would serve forever: stop it and fail.
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                let _ = child.wait();
                panic!("the engine started over {}", path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "started over {}: {err}",
            path.display()
        );
        assert!(
            err.contains("QYZAR_ENGINE_GEOIP_DB") && err.contains(&*path.to_string_lossy()),
            "{err}"
        );
    }
}
