//! Verification usage end to end: a running engine counts its `/connect`
//! calls and reports them to admin; admin counts each batch once, keeps the
//! traffic rollups and the owner's monthly usage, and when the plan's
//! `monthlyVerifications` are used up pushes a snapshot that makes the
//! engine refuse new verifications (open sessions keep verifying). An
//! upgrade lifts the block. Bad batches are refused whole and change nothing.

use std::time::Duration;

use qyzar_shared::usage::{minute_start_ms, month_key};
use serde_json::{json, Value};
use sqlx::Row as _;

use crate::helpers::{request, Backend, TestApp, TestResponse};
use crate::projects::test_captcha::entropy;
use crate::projects::{create_project, id_of, sign_up, User};
use crate::push::{admin_for, eventually, TestEngine, PUSH_KEY};

const ORIGIN: &str = "https://shop.example";

async fn status(app: &TestApp, user: &User) -> Value {
    let r = request(
        "GET",
        &app.url("/billing/status"),
        &[("authorization", &user.auth())],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

async fn post_batch(app: &TestApp, key: Option<&str>, body: &str) -> TestResponse {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    request("POST", &app.url("/internal/traffic"), &headers, Some(body)).await
}

fn batch(id: &str, project: &str, count: u64) -> Value {
    json!({"batchId": id, "rows": [{
        "projectId": project,
        "minuteStartMs": minute_start_ms(qyzar_shared::time::now_ms()),
        "route": "connect", "outcome": "ok", "region": "FR", "platform": "mobile",
        "browser": "Safari", "count": count
    }]})
}

fn error(r: &TestResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{:?}", r.body);
}

async fn connect(engine: &TestEngine, project: &str, origin_token: &str) -> TestResponse {
    let body = json!({"projectId": project, "originToken": origin_token, "entropy": entropy()})
        .to_string();
    request(
        "POST",
        &engine.url("/connect"),
        &[("origin", ORIGIN), ("cf-ipcountry", "DE")],
        Some(&body),
    )
    .await
}

async fn rollups(app: &TestApp, project: &str) -> Vec<(String, String, String, i64)> {
    sqlx::query(
        "SELECT kind, region, platform, requests FROM traffic_rollups WHERE project_id = $1 \
         ORDER BY kind, region, platform",
    )
    .bind(project)
    .fetch_all(app.state.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get(0).unwrap(),
            r.try_get(1).unwrap(),
            r.try_get(2).unwrap(),
            r.try_get(3).unwrap(),
        )
    })
    .collect()
}

async fn usage_counts_and_quota_blocks(backend: Backend) {
    let mut engine = TestEngine::spawn().await;
    let Some(app) = admin_for(backend, &[engine.internal_url()], None).await else {
        engine.stop();
        return;
    };
    engine.report_to(&app, Duration::from_millis(100));
    let ann = sign_up(&app, "ann@example.com").await;
    let project = create_project(&app, &ann.token, "Shop").await;
    let id = id_of(&project);
    let secret = project["secret"].as_str().unwrap().to_owned();
    let r = ann
        .send(
            &app,
            "PATCH",
            "/projects/settings",
            json!({"projectId": id, "settings": {"allowedOrigins": [ORIGIN]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = ann
        .send(
            &app,
            "POST",
            "/origin-tokens",
            json!({"projectId": id, "origin": ORIGIN}),
        )
        .await;
    let origin_token = r.body["token"].as_str().unwrap().to_owned();
    let version = app.state.pusher.version();
    assert!(
        eventually(Duration::from_secs(2), || async {
            engine.engine.config.version() >= version
        })
        .await
    );

    // Nothing counted yet; the allowance is the free plan's.
    let s = status(&app, &ann).await;
    assert_eq!(s["usage"]["verifications"], 0);
    assert_eq!(s["usage"]["monthlyVerifications"], 10_000);
    assert_eq!(s["usage"]["blocked"], false);
    assert_eq!(s["usage"]["month"], month_key(qyzar_shared::time::now_ms()));
    assert!(s["usage"]["resetsAt"]
        .as_str()
        .unwrap()
        .ends_with("-01T00:00:00.000Z"));

    // Three verifications reach admin's usage and rollups by the engine's report.
    let mut first_session = None;
    for _ in 0..3 {
        let r = connect(&engine, &id, &origin_token).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        first_session.get_or_insert((
            r.body["sessionId"].as_str().unwrap().to_owned(),
            r.body["sessionToken"].as_str().unwrap().to_owned(),
        ));
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            status(&app, &ann).await["usage"]["verifications"] == 3
        })
        .await,
        "the engine reported its three verifications"
    );
    assert_eq!(
        rollups(&app, &id).await,
        vec![("connect".into(), "DE".into(), "desktop".into(), 3)]
    );
    // The same report feeds the dashboard's analytics: the engine counted
    // each connect with its route, outcome, region, platform and browser.
    let o = ann
        .get(&app, &format!("/projects/overview-stats?projectId={id}"))
        .await;
    assert_eq!(o.status, 200, "{:?}", o.body);
    assert_eq!(o.body["current"]["verifications"], 3);
    let regions = ann
        .get(&app, &format!("/projects/dashboard-summary?projectId={id}"))
        .await;
    assert_eq!(
        regions.body["topRegions"][0]["name"], "DE",
        "{:?}",
        regions.body
    );
    assert_eq!(regions.body["topRegions"][0]["count"], 3);

    // Bad batches are refused whole and change nothing.
    let good = batch("test-batch-1", &id, 9_990).to_string();
    error(
        &post_batch(&app, None, &good).await,
        401,
        "missing_credentials",
    );
    error(
        &post_batch(&app, Some("wrong-key"), &good).await,
        401,
        "invalid_credentials",
    );
    let mut bad = batch("test-batch-bad", &id, 5);
    bad["rows"].as_array_mut().unwrap().push(json!({
        "projectId": id, "minuteStartMs": 1, "route": "connect", "outcome": "ok",
        "region": "", "platform": "desktop", "browser": "", "count": 1
    }));
    let r = post_batch(&app, Some(PUSH_KEY), &bad.to_string()).await;
    error(&r, 422, "invalid_field");
    assert_eq!(r.body["error"]["field"], "rows[1].minuteStartMs");
    let mut unknown_kind = batch("test-batch-bad2", &id, 5);
    unknown_kind["rows"][0]["route"] = json!("teleport");
    assert_eq!(
        post_batch(&app, Some(PUSH_KEY), &unknown_kind.to_string())
            .await
            .status,
        422
    );
    error(
        &post_batch(&app, Some(PUSH_KEY), "{\"batchId\":").await,
        400,
        "malformed_json",
    );
    error(
        &post_batch(&app, Some(PUSH_KEY), "[1]").await,
        422,
        "invalid_field",
    );
    assert_eq!(status(&app, &ann).await["usage"]["verifications"], 3);

    // 9 990 more: still under 10 000, no block.
    let r = post_batch(&app, Some(PUSH_KEY), &good).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"rows": 1, "ignoredRows": 0, "duplicate": false})
    );
    // The same batch again (its answer was lost, say) is counted once.
    let r = post_batch(&app, Some(PUSH_KEY), &good).await;
    assert_eq!(
        r.body,
        json!({"rows": 0, "ignoredRows": 0, "duplicate": true})
    );
    assert_eq!(status(&app, &ann).await["usage"]["verifications"], 9_993);
    // A row for a project admin does not know is skipped.
    let r = post_batch(
        &app,
        Some(PUSH_KEY),
        &batch("test-batch-ghost", "prj_AAAAAAAAAAAAAAAAAAAAAA", 4).to_string(),
    )
    .await;
    assert_eq!(r.body["ignoredRows"], 1, "{:?}", r.body);

    // Seven more verifications use up the allowance: the engine is told.
    let before = app.state.pusher.version();
    let r = post_batch(
        &app,
        Some(PUSH_KEY),
        &batch("test-batch-2", &id, 7).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        app.state.pusher.version() > before,
        "crossing the quota rebuilt the snapshot"
    );
    let s = status(&app, &ann).await;
    assert_eq!(s["usage"]["verifications"], 10_000);
    assert_eq!(s["usage"]["blocked"], true);
    assert!(
        eventually(Duration::from_secs(2), || async {
            connect(&engine, &id, &origin_token).await.status == 429
        })
        .await,
        "the engine refuses new verifications once the quota is used up"
    );
    error(
        &connect(&engine, &id, &origin_token).await,
        429,
        "verification_quota_exceeded",
    );
    // A session opened before keeps verifying on the server-side route.
    let (sid, stoken) = first_session.unwrap();
    let r = request(
        "POST",
        &engine.url("/projects/client/session-verify"),
        &[("x-qyzar-project-secret", &secret)],
        Some(&json!({"projectId": id, "sessionId": sid, "sessionToken": stoken}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["valid"], true, "{:?}", r.body);
    // The engine counted what it answered, outcome by outcome: the refused
    // connects and the session-verify reach the dashboard's numbers (and
    // not the plan's usage, which stays at 10 000).
    let routes_of = |o: &Value, route: &str| {
        o["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == route)
            .unwrap()["outcomes"]
            .clone()
    };
    // A rate-limit check and a login attempt are counted with their
    // outcome; a dry run is not traffic.
    for dry_run in [false, true] {
        let r = request(
            "POST",
            &engine.url("/projects/client/rate-limit-check"),
            &[("x-qyzar-project-secret", &secret)],
            Some(&json!({"projectId": id, "ip": "203.0.113.9", "dryRun": dry_run}).to_string()),
        )
        .await;
        assert_eq!(r.body["allowed"], true, "{:?}", r.body);
    }
    let r = request(
        "POST",
        &engine.url("/projects/client/ato-login-attempt"),
        &[("x-qyzar-project-secret", &secret)],
        Some(
            &json!({"projectId": id, "identifier": "ann@example.com", "success": true,
                    "ip": "203.0.113.9"})
            .to_string(),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let action = r.body["action"].as_str().unwrap().to_owned();
    let outcome = match action.as_str() {
        "allow" => "allowed",
        "challenge" => "challenged",
        _ => "blocked",
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            let o = ann
                .get(&app, &format!("/projects/overview-stats?projectId={id}"))
                .await
                .body;
            routes_of(&o, "session_verify")["ok"] == 1
                && routes_of(&o, "connect")["refused"].as_i64() >= Some(2)
                && routes_of(&o, "rate_limit_check") == json!({"allowed": 1})
                && routes_of(&o, "ato_login_attempt") == json!({ outcome: 1 })
        })
        .await,
        "the engine reported the session-verify, the refused connects, the rate-limit check and the login attempt"
    );
    assert_eq!(status(&app, &ann).await["usage"]["verifications"], 10_000);

    // An upgrade lifts the block with the next snapshot.
    sqlx::query("UPDATE users SET plan = 'pro' WHERE email = $1")
        .bind("ann@example.com")
        .execute(app.state.db.pool())
        .await
        .unwrap();
    qyzar_admin::push::rebuild_and_push(&app.state)
        .await
        .unwrap();
    // The plan travels in the snapshot: it sizes the project's limits in
    // the engine (limiter key budget, settingsOverride bounds).
    let built = app.state.pusher.latest().expect("a built snapshot");
    assert_eq!(
        built.snapshot.project(&id).map(|p| p.plan),
        Some(qyzar_shared::settings::PlanTier::Pro)
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            connect(&engine, &id, &origin_token).await.status == 201
        })
        .await,
        "on the pro plan the engine verifies again"
    );
    let s = status(&app, &ann).await;
    assert_eq!(s["usage"]["monthlyVerifications"], 1_000_000);
    assert_eq!(s["usage"]["blocked"], false);

    engine.stop();
    app.stop().await;
}

#[tokio::test]
async fn usage_counts_and_quota_blocks_on_sqlite() {
    usage_counts_and_quota_blocks(Backend::Sqlite).await;
}

#[tokio::test]
async fn usage_counts_and_quota_blocks_on_postgres() {
    usage_counts_and_quota_blocks(Backend::Postgres).await;
}
