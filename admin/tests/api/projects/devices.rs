//! The dashboard's device routes over the engines' data-plane store:
//! `devices-data` pages the device index day by day with filters and a
//! cursor, `entropy-snapshot` answers a device's or a session's snapshot.
//! Both answer only the project's owner, bound every input, and say 503
//! when no data store is configured.

use std::collections::{BTreeMap, BTreeSet};

use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use qyzar_shared::time::{now_ms, rfc3339};
use qyzar_store::{DataStore, DeviceDay, DeviceInfo, EntropySnapshot, Risk, Session, DAY_MS};
use serde_json::{json, Value};

use super::{create_project, id_of, not_found, sign_up, User};
use crate::helpers::{request, Backend, TestApp};

fn store(app: &TestApp) -> &dyn DataStore {
    app.state.data.as_deref().expect("a data store")
}

#[allow(clippy::too_many_arguments)] // one row, spelled out per test case
fn device_day(
    p: &ProjectId,
    d: &DeviceId,
    day: i64,
    k: i64,
    browser: &str,
    score: u8,
    bot: bool,
    region: &str,
) -> DeviceDay {
    DeviceDay {
        project_id: p.clone(),
        device_id: d.clone(),
        day,
        first_seen: day * DAY_MS + k,
        last_seen: day * DAY_MS + k + 1,
        browser: browser.into(),
        os: "Linux".into(),
        platform: "desktop".into(),
        region: Some(region.into()),
        risk_score: score,
        bot,
        components: BTreeMap::new(),
    }
}

/// Every page of `query`, following `nextCursor`.
async fn all_pages(user: &User, app: &TestApp, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            None => format!("/projects/devices-data?{query}"),
            Some(c) => format!("/projects/devices-data?{query}&cursor={c}"),
        };
        let r = user.get(app, &path).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        out.extend(
            r.body["devices"]
                .as_array()
                .expect("devices")
                .iter()
                .cloned(),
        );
        match r.body["nextCursor"].as_str() {
            None => return out,
            Some(c) => cursor = Some(c.to_owned()),
        }
    }
    panic!("more than 100 pages");
}

async fn devices_data(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let owner = sign_up(&app, &crate::auth::unique_email("devices")).await;
    let other = sign_up(&app, &crate::auth::unique_email("devices-other")).await;
    let project = create_project(&app, &owner.token, "Shop").await;
    let pid = id_of(&project);
    let p = ProjectId::parse(&pid).unwrap();
    let today = now_ms().div_euclid(DAY_MS);
    // 12 people today, 3 bots yesterday, 1 device 10 days ago.
    let mut rows = Vec::new();
    for k in 0..12 {
        let browser = if k % 3 == 0 { "Firefox" } else { "Chrome" };
        rows.push(device_day(
            &p,
            &DeviceId::generate(),
            today,
            k,
            browser,
            10,
            false,
            "DE",
        ));
    }
    for k in 0..3 {
        rows.push(device_day(
            &p,
            &DeviceId::generate(),
            today - 1,
            k,
            "HeadlessChrome",
            90,
            true,
            "NL",
        ));
    }
    rows.push(device_day(
        &p,
        &DeviceId::generate(),
        today - 10,
        0,
        "Safari",
        40,
        false,
        "FR",
    ));
    store(&app).record_device_days(&rows).await.unwrap();
    // Another project's devices never show.
    let elsewhere = ProjectId::generate();
    store(&app)
        .record_device_days(&[device_day(
            &elsewhere,
            &DeviceId::generate(),
            today,
            0,
            "Chrome",
            0,
            false,
            "DE",
        )])
        .await
        .unwrap();

    // The default week, page by page: every device of the last 7 days once.
    let q = format!("projectId={pid}&limit=5");
    let all = all_pages(&owner, &app, &q).await;
    let ids: BTreeSet<&str> = all
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap())
        .collect();
    assert_eq!((all.len(), ids.len()), (15, 15));
    assert!(
        all[..12]
            .iter()
            .all(|d| d["seenOn"] == rfc3339(today * DAY_MS)[..10]),
        "newest day first"
    );
    // A longer range reaches the older device.
    let since = rfc3339(now_ms() - 20 * DAY_MS);
    let q = format!("projectId={pid}&seenSince={since}&limit=200");
    assert_eq!(all_pages(&owner, &app, &q).await.len(), 16);
    // Filters.
    for (filter, expected) in [
        ("bot=true", 3),
        ("bot=false", 12),
        ("risk=high", 3),
        ("risk=low", 12),
        ("region=nl", 3),
        ("browser=firefox", 4),
        ("browser=Firefox&bot=true", 0),
    ] {
        let got = all_pages(&owner, &app, &format!("projectId={pid}&{filter}")).await;
        assert_eq!(got.len(), expected, "{filter}");
    }
    let bot = &all_pages(&owner, &app, &format!("projectId={pid}&bot=true")).await[0];
    assert_eq!(
        (bot["risk"].as_str(), bot["riskScore"].as_u64()),
        (Some("high"), Some(90))
    );
    // Bounds and bad input: 422 naming the field, nothing else.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "limit"),
        ("risk=extreme", "risk"),
        ("bot=yes", "bot"),
        ("seenSince=yesterday", "seenSince"),
        ("seenSince=2020-01-01T00:00:00Z", "seenSince"),
        ("seenSince=2999-01-01T00:00:00Z", "seenSince"),
        ("cursor=garbage", "cursor"),
        ("cursor=1.99.dev_x", "cursor"),
    ] {
        let r = owner
            .get(
                &app,
                &format!("/projects/devices-data?projectId={pid}&{query}"),
            )
            .await;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (422, Some(field)),
            "{query}: {:?}",
            r.body
        );
    }
    let long = "x".repeat(65);
    let r = owner
        .get(
            &app,
            &format!("/projects/devices-data?projectId={pid}&region={long}"),
        )
        .await;
    assert_eq!(r.status, 422);
    // Access: no token, another account, an unknown project.
    let r = request(
        "GET",
        &app.url(&format!("/projects/devices-data?projectId={pid}")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    not_found(
        &other
            .get(&app, &format!("/projects/devices-data?projectId={pid}"))
            .await,
    );
    not_found(
        &owner
            .get(
                &app,
                &format!("/projects/devices-data?projectId={elsewhere}"),
            )
            .await,
    );
    app.stop().await;
}

async fn entropy_snapshot(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let owner = sign_up(&app, &crate::auth::unique_email("snap")).await;
    let other = sign_up(&app, &crate::auth::unique_email("snap-other")).await;
    let pid = id_of(&create_project(&app, &owner.token, "Shop").await);
    let p = ProjectId::parse(&pid).unwrap();
    let d = DeviceId::generate();
    let now = now_ms();
    let mut sessions = Vec::new();
    for k in 0..3 {
        let s = SessionId::generate();
        store(&app)
            .put_session(&Session {
                project_id: p.clone(),
                session_id: s.clone(),
                token_hash: [7; 32],
                device_id: d.clone(),
                created_at: now - 1000 + k,
                expires_at: now + 3_600_000,
                last_seen_at: now - 1000 + k,
                revoked: false,
                ip: None,
                risk: Risk {
                    score: 5,
                    bot: false,
                    signals: vec![],
                },
                device: DeviceInfo {
                    browser: "Chrome".into(),
                    os: "Linux".into(),
                    platform: "desktop".into(),
                    region: None,
                },
            })
            .await
            .unwrap();
        store(&app)
            .put_entropy_snapshot(&EntropySnapshot {
                project_id: p.clone(),
                device_id: d.clone(),
                session_id: s.clone(),
                at: now - 1000 + k,
                entropy_json: json!({"canvasHash": format!("c{k}"), "timezone": "Europe/Berlin"})
                    .to_string(),
            })
            .await
            .unwrap();
        sessions.push(s);
    }
    let r = owner
        .get(
            &app,
            &format!("/projects/entropy-snapshot?projectId={pid}&deviceId={d}"),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["sessionId"], sessions[2].as_str(), "the newest");
    assert_eq!(r.body["entropy"]["canvasHash"], "c2");
    assert_eq!(r.body["sessions"].as_array().unwrap().len(), 3);
    let r = owner
        .get(
            &app,
            &format!(
                "/projects/entropy-snapshot?projectId={pid}&sessionId={}",
                sessions[0]
            ),
        )
        .await;
    assert_eq!(
        (r.status, r.body["entropy"]["canvasHash"].as_str()),
        (200, Some("c0")),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["deviceId"], d.as_str());
    // A stored snapshot that is not a JSON object (an older or damaged row)
    // is answered with `entropy: null`, not a 500 nor a non-object.
    for stored in ["not json {", "[1,2]", "\"text\""] {
        let odd = DeviceId::generate();
        store(&app)
            .put_entropy_snapshot(&EntropySnapshot {
                project_id: p.clone(),
                device_id: odd.clone(),
                session_id: SessionId::generate(),
                at: now,
                entropy_json: stored.into(),
            })
            .await
            .unwrap();
        let r = owner
            .get(
                &app,
                &format!("/projects/entropy-snapshot?projectId={pid}&deviceId={odd}"),
            )
            .await;
        assert_eq!(
            (r.status, &r.body["entropy"]),
            (200, &json!(null)),
            "{stored}: {:?}",
            r.body
        );
    }
    // Unknown ids are 404 `not_found`; bad input names the field.
    for query in [
        format!("deviceId={}", DeviceId::generate()),
        format!("sessionId={}", SessionId::generate()),
    ] {
        let r = owner
            .get(
                &app,
                &format!("/projects/entropy-snapshot?projectId={pid}&{query}"),
            )
            .await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{query}"
        );
    }
    for (query, field) in [
        ("deviceId=nope", "deviceId"),
        ("sessionId=nope", "sessionId"),
        ("", "deviceId"),
    ] {
        let r = owner
            .get(
                &app,
                &format!("/projects/entropy-snapshot?projectId={pid}&{query}"),
            )
            .await;
        assert_eq!(
            r.body["error"]["field"].as_str(),
            Some(field),
            "{query}: {:?}",
            r.body
        );
        assert!(r.status == 400 || r.status == 422, "{query}: {}", r.status);
    }
    let r = owner
        .get(
            &app,
            &format!(
                "/projects/entropy-snapshot?projectId={pid}&deviceId={d}&sessionId={}",
                sessions[0]
            ),
        )
        .await;
    assert_eq!(r.status, 422);
    // Another account's project is 404, even with a real device id.
    not_found(
        &other
            .get(
                &app,
                &format!("/projects/entropy-snapshot?projectId={pid}&deviceId={d}"),
            )
            .await,
    );
    app.stop().await;
}

/// Without a data store (an admin alone with no `QYZAR_ADMIN_CQL_NODES`)
/// the routes say so, after checking who asks.
async fn no_data_store(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    let owner = sign_up(&app, &crate::auth::unique_email("nostore")).await;
    let pid = id_of(&create_project(&app, &owner.token, "Shop").await);
    // The router holds its own state clone: restart it without a store.
    let _ = &mut app;
    let state = qyzar_admin::AppState {
        data: None,
        ..app.state.clone()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(qyzar_admin::run(listener, state, async {
        let _ = stopped.await;
    }));
    for path in [
        format!("/projects/devices-data?projectId={pid}"),
        format!(
            "/projects/entropy-snapshot?projectId={pid}&deviceId={}",
            DeviceId::generate()
        ),
    ] {
        let r = request(
            "GET",
            &format!("{url}{path}"),
            &[("authorization", &owner.auth())],
            None,
        )
        .await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (503, Some("store_unavailable")),
            "{path}"
        );
    }
    let _ = stop.send(());
    let _ = task.await;
    app.stop().await;
}

#[tokio::test]
async fn devices_data_on_sqlite() {
    devices_data(Backend::Sqlite).await;
}

#[tokio::test]
async fn devices_data_on_postgres() {
    devices_data(Backend::Postgres).await;
}

#[tokio::test]
async fn entropy_snapshot_on_sqlite() {
    entropy_snapshot(Backend::Sqlite).await;
}

#[tokio::test]
async fn entropy_snapshot_on_postgres() {
    entropy_snapshot(Backend::Postgres).await;
}

#[tokio::test]
async fn no_data_store_on_sqlite() {
    no_data_store(Backend::Sqlite).await;
}

/// The analytics sections read from the data-plane store: `devices` counts
/// the device index, `clusters` answers what the background refresher
/// computed (a farm of near-identical devices among ordinary people),
/// `denies` groups the newest denies; `outcomes` is a chart of decisions.
async fn store_sections(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let owner = sign_up(&app, &crate::auth::unique_email("sections")).await;
    let other = sign_up(&app, &crate::auth::unique_email("sections-other")).await;
    let pid = id_of(&create_project(&app, &owner.token, "Shop").await);
    let p = ProjectId::parse(&pid).unwrap();
    let now = now_ms();
    let today = now.div_euclid(DAY_MS);
    let mut rows = Vec::new();
    for k in 0..6 {
        let mut r = device_day(
            &p,
            &DeviceId::generate(),
            today,
            k,
            "HeadlessChrome",
            90,
            true,
            "NL",
        );
        r.components = BTreeMap::from([
            ("canvasHash".to_owned(), "c0ffee01".to_owned()),
            ("audioHash".to_owned(), "a0b0c0".to_owned()),
            ("screen".to_owned(), "800x600".to_owned()),
            ("fonts".to_owned(), "DejaVu Sans".to_owned()),
            ("platform".to_owned(), "Linux x86_64".to_owned()),
            ("userAgent".to_owned(), format!("HeadlessChrome/131.0.{k}")),
        ]);
        rows.push(r);
    }
    for k in 0..4 {
        let mut r = device_day(
            &p,
            &DeviceId::generate(),
            today,
            k,
            "Firefox",
            5,
            false,
            "DE",
        );
        r.components = BTreeMap::from([
            ("canvasHash".to_owned(), format!("person{k}")),
            ("audioHash".to_owned(), format!("audio{k}")),
            ("screen".to_owned(), "1920x1080".to_owned()),
        ]);
        rows.push(r);
    }
    store(&app).record_device_days(&rows).await.unwrap();
    store(&app)
        .record_deny_events(
            &(0..3)
                .map(|k| qyzar_store::DenyEvent {
                    project_id: p.clone(),
                    at: now - 1000 + k,
                    bucket: "ip".into(),
                    key: "45.155.205.10".into(),
                    ip: None,
                })
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let section = |s: &str| format!("/projects/analytics?projectId={pid}&section={s}");

    let r = owner.get(&app, &section("devices")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["devices"]["devices"], 10);
    assert_eq!(r.body["devices"]["bots"], 6);
    assert_eq!(r.body["devices"]["byRisk"]["high"], 6);

    // Before the background pass reached the project: nothing computed yet.
    let r = owner.get(&app, &section("clusters")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    app.state
        .clusters
        .refresh(store(&app), &p, now)
        .await
        .unwrap();
    let r = owner.get(&app, &section("clusters")).await;
    let clusters = r.body["clusters"]["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1, "{:?}", r.body);
    assert_eq!(clusters[0]["devices"], 6);
    assert_eq!(clusters[0]["shared"]["canvasHash"], "c0ffee01");
    assert_eq!(clusters[0]["varying"]["userAgent"]["distinct"], 6);
    assert!(r.body["clusters"]["computedAt"].is_string());

    let r = owner.get(&app, &section("denies")).await;
    assert_eq!(r.body["denies"]["events"], 3, "{:?}", r.body);
    assert_eq!(r.body["denies"]["topKeys"][0]["label"], "ip:45.155.205.10");

    let r = owner.get(&app, &section("outcomes")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let labels: Vec<&str> = r.body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "atoAllowed",
            "atoChallenged",
            "atoBlocked",
            "rateLimitAllowed",
            "rateLimitDenied"
        ]
    );
    // Another account sees none of it.
    for s in ["devices", "clusters", "denies"] {
        not_found(&other.get(&app, &section(s)).await);
    }
    let r = owner.get(&app, &section("everything")).await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("section"))
    );
    app.stop().await;
}

#[tokio::test]
async fn store_sections_on_sqlite() {
    store_sections(Backend::Sqlite).await;
}

#[tokio::test]
async fn store_sections_on_postgres() {
    store_sections(Backend::Postgres).await;
}
