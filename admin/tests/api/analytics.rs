//! Dashboard analytics on a running admin, both databases: traffic batches
//! in through `POST /internal/traffic`, then `overview-stats`,
//! `dashboard-summary`, `analytics` and `browser-data` answer the numbers of
//! the range and of the period before; a resent batch counts once; bad
//! ranges are refused naming the field; other accounts get `404`; and
//! housekeeping prunes each rollup table at its own retention.
//!
//! Times are built from the current hour so rows stay inside the minute
//! table's retention; the assertions compare counts and bucket positions,
//! never wall-clock times.

use qyzar_shared::time::{now_ms, rfc3339};
use qyzar_shared::usage::{minute_start_ms, DAY_MS, HOUR_MS, MINUTE_MS};
use serde_json::{json, Value};
use sqlx::Row as _;

use crate::helpers::{request, Backend, TestApp, TestResponse};
use crate::projects::{create_project, id_of, not_found, sign_up, User};
use crate::push::{admin_for, PUSH_KEY};

/// One row of a batch: (minute start, route, outcome, region, platform,
/// browser, count).
type Row<'a> = (i64, &'a str, &'a str, &'a str, &'a str, &'a str, u64);

fn batch(id: &str, project: &str, rows: &[Row<'_>]) -> String {
    let rows: Vec<Value> = rows
        .iter()
        .map(|(m, route, outcome, region, platform, browser, count)| {
            json!({"projectId": project, "minuteStartMs": m, "route": route,
                   "outcome": outcome, "region": region, "platform": platform,
                   "browser": browser, "count": count})
        })
        .collect();
    json!({"batchId": id, "rows": rows}).to_string()
}

async fn post_batch(app: &TestApp, body: &str) -> TestResponse {
    let auth = format!("Bearer {PUSH_KEY}");
    request(
        "POST",
        &app.url("/internal/traffic"),
        &[("authorization", &auth)],
        Some(body),
    )
    .await
}

async fn get_ok(app: &TestApp, user: &User, path: &str) -> Value {
    let r = user.get(app, path).await;
    assert_eq!(r.status, 200, "{path}: {:?}", r.body);
    r.body
}

#[track_caller]
fn invalid(r: &TestResponse, field: &str) {
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "invalid_field", "{:?}", r.body);
    assert_eq!(r.body["error"]["field"], field, "{:?}", r.body);
}

fn series<'a>(chart: &'a Value, label: &str) -> &'a Value {
    chart["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == label)
        .unwrap_or_else(|| panic!("no series {label} in {chart}"))
}

async fn dashboard_numbers_for_range_and_previous_period(backend: Backend) {
    let Some(app) = admin_for(backend, &[], None).await else {
        return;
    };
    let ann = sign_up(&app, "ann@example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;
    let id = id_of(&create_project(&app, &ann.token, "Shop").await);
    let other = id_of(&create_project(&app, &ann.token, "Blog").await);

    // The current period is a whole hour two hours ago; the previous one
    // the hour before it; one more day-old batch for the 24-hour card.
    let h = now_ms() - now_ms().rem_euclid(HOUR_MS) - 2 * HOUR_MS;
    let cur = h + 5 * MINUTE_MS;
    let prev = h - 30 * MINUTE_MS;
    let day_ago = minute_start_ms(now_ms() - 30 * HOUR_MS);
    let rows: Vec<Row<'_>> = vec![
        (cur, "connect", "ok", "DE", "desktop", "Chrome", 10),
        (cur, "connect", "ok", "FR", "mobile", "Safari", 5),
        (cur, "reverify", "ok", "DE", "desktop", "Chrome", 3),
        (cur, "connect", "refused", "", "unknown", "", 4),
        (cur, "rate_limit_check", "denied", "", "server", "", 200),
        (cur, "rate_limit_check", "allowed", "", "server", "", 50),
        (
            cur,
            "ato_login_attempt",
            "blocked",
            "DE",
            "desktop",
            "Chrome",
            7,
        ),
        (cur, "ato_login_attempt", "challenged", "", "server", "", 2),
        (cur, "ato_login_attempt", "allowed", "", "server", "", 20),
        (cur, "session_verify", "ok", "DE", "desktop", "Chrome", 30),
        (prev, "connect", "ok", "DE", "desktop", "Chrome", 6),
        (prev, "rate_limit_check", "denied", "", "server", "", 40),
        (prev, "ato_login_attempt", "blocked", "", "server", "", 1),
        (day_ago, "connect", "ok", "US", "desktop", "Firefox", 2),
        (day_ago, "rate_limit_check", "denied", "", "server", "", 10),
    ];
    let body = batch("eng_t-1", &id, &rows);
    let r = post_batch(&app, &body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["rows"], rows.len());
    // Another project's traffic stays in its own numbers.
    let r = post_batch(
        &app,
        &batch(
            "eng_t-2",
            &other,
            &[(cur, "connect", "ok", "DE", "desktop", "Chrome", 1_000)],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The same batch again (an engine that lost the answer) counts once.
    let r = post_batch(&app, &body).await;
    assert_eq!(r.body["duplicate"], true, "{:?}", r.body);

    // overview-stats: the hour against the hour before, RFC 3339 times.
    let q = format!(
        "/projects/overview-stats?projectId={id}&from={}&to={}",
        rfc3339(h),
        rfc3339(h + HOUR_MS)
    );
    let o = get_ok(&app, &ann, &q).await;
    assert_eq!(o["bucket"], "minute");
    assert_eq!(o["from"], rfc3339(h));
    assert_eq!(o["previousFrom"], rfc3339(h - HOUR_MS));
    assert_eq!(o["previousTo"], rfc3339(h));
    let c = &o["current"];
    assert_eq!(c["verifications"], 18);
    assert_eq!(c["refused"], 4);
    assert_eq!(c["rateLimitDenied"], 200);
    assert_eq!(c["rateLimitAllowed"], 50);
    assert_eq!(
        (&c["atoAllowed"], &c["atoChallenged"], &c["atoBlocked"]),
        (&json!(20), &json!(2), &json!(7))
    );
    assert_eq!(c["requests"], 331);
    assert_eq!(o["previous"]["verifications"], 6);
    assert_eq!(o["previous"]["rateLimitDenied"], 40);
    assert_eq!(o["previous"]["requests"], 47);
    let change = &o["changePercent"];
    assert_eq!(change["verifications"], 200.0);
    assert_eq!(change["rateLimitDenied"], 400.0);
    assert_eq!(change["atoBlocked"], 600.0);
    assert_eq!(
        change["atoChallenged"],
        Value::Null,
        "nothing to compare with"
    );
    let connect = o["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "connect")
        .unwrap();
    assert_eq!(connect["current"], 19);
    assert_eq!(connect["previous"], 6);
    assert_eq!(connect["outcomes"], json!({"ok": 15, "refused": 4}));
    assert_eq!(o["routes"].as_array().unwrap().len(), 7);

    // The same range in Unix milliseconds answers the same.
    let q_ms = format!(
        "/projects/overview-stats?projectId={id}&from={h}&to={}",
        h + HOUR_MS
    );
    assert_eq!(get_ok(&app, &ann, &q_ms).await, o);

    // Three days read the hour table, and include the day-old batch.
    let o3 = get_ok(
        &app,
        &ann,
        &format!(
            "/projects/overview-stats?projectId={id}&from={}&to={}",
            h - 2 * DAY_MS,
            h + HOUR_MS
        ),
    )
    .await;
    assert_eq!(o3["bucket"], "hour");
    assert_eq!(o3["current"]["verifications"], 26);
    assert_eq!(o3["current"]["rateLimitDenied"], 250);

    // analytics: traffic by region and platform, one point per minute.
    let base = format!(
        "/projects/analytics?projectId={id}&from={h}&to={}",
        h + HOUR_MS
    );
    let t = get_ok(&app, &ann, &format!("{base}&section=traffic")).await;
    assert_eq!(t["bucket"], "minute");
    assert_eq!(t["buckets"].as_array().unwrap().len(), 60);
    assert_eq!(t["buckets"][5], rfc3339(cur));
    let de = series(&t, "DE / desktop");
    assert_eq!(
        (&de["region"], &de["platform"]),
        (&json!("DE"), &json!("desktop"))
    );
    assert_eq!(de["total"], 13, "connect and reverify, not server calls");
    assert_eq!(de["points"][5], 13);
    assert_eq!(de["points"][4], 0);
    assert_eq!(de["points"].as_array().unwrap().len(), 60);
    assert_eq!(series(&t, "FR / mobile")["total"], 5);
    assert_eq!(series(&t, "unknown / unknown")["total"], 4);
    assert_eq!(t["series"][0]["label"], "DE / desktop", "largest first");
    // … by hour for the same range: one bucket.
    let th = get_ok(&app, &ann, &format!("{base}&section=traffic&bucket=hour")).await;
    assert_eq!(th["buckets"], json!([rfc3339(h)]));
    assert_eq!(series(&th, "DE / desktop")["points"], json!([13]));
    // browsers and sessions.
    let b = get_ok(&app, &ann, &format!("{base}&section=browsers")).await;
    assert_eq!(series(&b, "Chrome")["total"], 13);
    assert_eq!(series(&b, "Safari")["browser"], "Safari");
    let s = get_ok(&app, &ann, &format!("{base}&section=sessions")).await;
    assert_eq!(series(&s, "verifications")["points"][5], 18);
    assert_eq!(series(&s, "connects")["total"], 15);
    assert_eq!(series(&s, "reverifies")["total"], 3);
    assert_eq!(series(&s, "sessionVerifies")["total"], 30);
    assert_eq!(series(&s, "refused")["total"], 4);

    // browser-data: shares of the browser-facing calls.
    let bd = get_ok(
        &app,
        &ann,
        &format!(
            "/projects/browser-data?projectId={id}&from={h}&to={}",
            h + HOUR_MS
        ),
    )
    .await;
    assert_eq!(bd["total"], 22);
    assert_eq!(
        bd["browsers"],
        json!([
            {"name": "Chrome", "count": 13, "percent": 59.1},
            {"name": "Safari", "count": 5, "percent": 22.7},
            {"name": "unknown", "count": 4, "percent": 18.2},
        ])
    );

    // dashboard-summary: the last 24 hours against the day before.
    let d = get_ok(
        &app,
        &ann,
        &format!("/projects/dashboard-summary?projectId={id}"),
    )
    .await;
    assert_eq!(d["current"]["verifications"], 24);
    assert_eq!(d["previous"]["verifications"], 2);
    assert_eq!(d["current"]["rateLimitDenied"], 240);
    assert_eq!(d["previous"]["rateLimitDenied"], 10);
    assert_eq!(d["changePercent"]["verifications"], 1100.0);
    assert_eq!(
        d["topRegions"][0],
        json!({"name": "DE", "count": 19, "percent": 67.9})
    );
    assert_eq!(d["topBrowsers"][0]["name"], "Chrome");
    assert_eq!(d["topPlatforms"][0]["name"], "desktop");
    assert_eq!(d["underAttack"], true);
    assert_eq!(
        d["attackSignals"],
        json!([{"signal": "rate_limit_denies", "current": 240, "previous": 10}])
    );
    // A quiet project is not under attack.
    let quiet = get_ok(
        &app,
        &ann,
        &format!("/projects/dashboard-summary?projectId={other}"),
    )
    .await;
    assert_eq!(quiet["underAttack"], false);
    assert_eq!(quiet["current"]["verifications"], 1_000);

    // Bounds: every range is checked and the field named.
    let path = |q: &str| format!("/projects/analytics?projectId={id}&section=traffic{q}");
    invalid(
        &ann.get(&app, &path(&format!("&from={}&to={h}", h + 1)))
            .await,
        "from",
    );
    invalid(
        &ann.get(&app, &path(&format!("&from={h}&to={h}"))).await,
        "from",
    );
    invalid(
        &ann.get(&app, &path(&format!("&from={}&to={h}", h - 401 * DAY_MS)))
            .await,
        "from",
    );
    invalid(&ann.get(&app, &path("&bucket=week")).await, "bucket");
    invalid(
        &ann.get(
            &app,
            &path(&format!("&from={}&bucket=minute", h - 3 * DAY_MS)),
        )
        .await,
        "bucket",
    );
    invalid(
        &ann.get(
            &app,
            &path(&format!("&from={}&bucket=hour", h - 300 * DAY_MS)),
        )
        .await,
        "bucket",
    );
    invalid(&ann.get(&app, &path("&from=yesterday")).await, "from");
    invalid(
        &ann.get(&app, &path("&to=2026-02-30T00:00:00Z")).await,
        "to",
    );
    for section in ["nope", "Traffic", "cluster"] {
        invalid(
            &ann.get(
                &app,
                &format!("/projects/analytics?projectId={id}&section={section}"),
            )
            .await,
            "section",
        );
    }
    let r = ann
        .get(&app, &format!("/projects/analytics?projectId={id}"))
        .await;
    assert_eq!(
        (r.status, &r.body["error"]["field"]),
        (400, &json!("section"))
    );
    invalid(
        &ann.get(
            &app,
            &format!(
                "/projects/overview-stats?projectId={id}&from=1&to={}",
                500 * DAY_MS
            ),
        )
        .await,
        "from",
    );
    invalid(
        &ann.get(
            &app,
            &format!("/projects/browser-data?projectId={id}&from=-1"),
        )
        .await,
        "from",
    );
    // A year at day buckets is fine.
    let y = get_ok(
        &app,
        &ann,
        &path(&format!("&from={}&bucket=day", h - 365 * DAY_MS)),
    )
    .await;
    assert_eq!(y["bucket"], "day");

    // Access: a token is required; another account's project and an
    // unknown one are the same 404.
    let unknown = qyzar_shared::ids::ProjectId::generate().to_string();
    for route in [
        "overview-stats",
        "dashboard-summary",
        "analytics",
        "browser-data",
    ] {
        let q = format!("/projects/{route}?projectId={id}&section=traffic");
        let r = request("GET", &app.url(&q), &[], None).await;
        assert_eq!(r.status, 401, "{route}: {:?}", r.body);
        not_found(&bob.get(&app, &q).await);
        not_found(
            &ann.get(
                &app,
                &format!("/projects/{route}?projectId={unknown}&section=traffic"),
            )
            .await,
        );
        let r = ann.get(&app, &format!("/projects/{route}")).await;
        assert_eq!(
            (r.status, &r.body["error"]["field"]),
            (400, &json!("projectId"))
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn dashboard_numbers_for_range_and_previous_period_on_sqlite() {
    dashboard_numbers_for_range_and_previous_period(Backend::Sqlite).await;
}

#[tokio::test]
async fn dashboard_numbers_for_range_and_previous_period_on_postgres() {
    dashboard_numbers_for_range_and_previous_period(Backend::Postgres).await;
}

async fn rollups_are_pruned_at_their_retention(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let ann = sign_up(&app, "ann@example.com").await;
    let id = id_of(&create_project(&app, &ann.token, "Shop").await);
    let now = now_ms();
    let age = |days: i64, grain: i64| {
        let t = now - days * DAY_MS;
        t - t.rem_euclid(grain)
    };
    for (table, grain, old, young) in [
        ("analytics_minute", MINUTE_MS, 8, 6),
        ("analytics_hour", HOUR_MS, 91, 89),
        ("analytics_day", DAY_MS, 4 * 366, 2 * 366),
    ] {
        for start in [age(old, grain), age(young, grain)] {
            sqlx::query(&format!(
                "INSERT INTO {table} (project_id, bucket_start, route, outcome, region, \
                 platform, browser, requests) VALUES ($1, $2, 'connect', 'ok', 'DE', \
                 'desktop', 'Chrome', 1)"
            ))
            .bind(&id)
            .bind(start)
            .execute(app.state.db.pool())
            .await
            .unwrap();
        }
    }
    let pruned = qyzar_admin::maintenance::run_once(&app.state.db, now, 400)
        .await
        .unwrap();
    assert_eq!(pruned.analytics_rows, 3, "the old row of each table");
    for table in ["analytics_minute", "analytics_hour", "analytics_day"] {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(app.state.db.pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(n, 1, "{table} keeps its young row");
    }
    let again = qyzar_admin::maintenance::run_once(&app.state.db, now, 400)
        .await
        .unwrap();
    assert_eq!(again.analytics_rows, 0);
    app.stop().await;
}

#[tokio::test]
async fn rollups_are_pruned_at_their_retention_on_sqlite() {
    rollups_are_pruned_at_their_retention(Backend::Sqlite).await;
}

#[tokio::test]
async fn rollups_are_pruned_at_their_retention_on_postgres() {
    rollups_are_pruned_at_their_retention(Backend::Postgres).await;
}
