//! Dashboard query latency on the embedded SQLite (issue 12): a running
//! admin with 1 000 projects, one of them holding 30 days of minute
//! rollups (and the hours and days the same batches made), asked over HTTP
//! for what the dashboard shows.
//!
//! Every row goes in through `usage::ingest`, as engines' batches do, so
//! the tables, their indexes and their page layout are what production
//! would have. Then each query runs `QYZAR_BENCH_ROUNDS` times (default
//! 200) after a warm-up, and p50/p95/max are printed.
//!
//! Run: `cargo run -p qyzar-benches --bin dashboard_queries` (add
//! `--release` on a machine where an optimised build is allowed; the
//! figure in BENCHMARKS.md says which build it came from).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qyzar_shared::time::now_ms;
use qyzar_shared::usage::{
    minute_start_ms, TrafficBatch, TrafficOutcome, TrafficRoute, TrafficRow, DAY_MS,
    MAX_BATCH_ROWS, MINUTE_MS,
};

const PROJECTS: usize = 1_000;
const DAYS: i64 = 30;

/// The (route, outcome, region, platform, browser) keys the big project
/// reports every minute: a busy site's usual mix.
const KEYS: &[(TrafficRoute, TrafficOutcome, &str, &str, &str)] = &[
    (
        TrafficRoute::Connect,
        TrafficOutcome::Ok,
        "DE",
        "desktop",
        "Chrome",
    ),
    (
        TrafficRoute::Connect,
        TrafficOutcome::Ok,
        "FR",
        "mobile",
        "Safari",
    ),
    (
        TrafficRoute::Connect,
        TrafficOutcome::Ok,
        "US",
        "desktop",
        "Firefox",
    ),
    (
        TrafficRoute::Reverify,
        TrafficOutcome::Ok,
        "DE",
        "desktop",
        "Chrome",
    ),
    (
        TrafficRoute::SessionVerify,
        TrafficOutcome::Ok,
        "DE",
        "desktop",
        "Chrome",
    ),
    (
        TrafficRoute::RateLimitCheck,
        TrafficOutcome::Denied,
        "",
        "server",
        "",
    ),
    (
        TrafficRoute::AtoLoginAttempt,
        TrafficOutcome::Allowed,
        "",
        "server",
        "",
    ),
];

fn row(project: &str, minute: i64, i: usize, count: u64) -> TrafficRow {
    let (route, outcome, region, platform, browser) = KEYS[i];
    TrafficRow {
        project_id: project.to_owned(),
        minute_start_ms: minute,
        route,
        outcome,
        region: region.to_owned(),
        platform: platform.to_owned(),
        browser: browser.to_owned(),
        count,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let rounds: usize = std::env::var("QYZAR_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite:{}?mode=rwc",
        dir.path().join("admin.sqlite").display()
    );
    let config = qyzar_admin::config::AdminConfig::local(dir.path(), url);
    let state = qyzar_admin::AppState::open(config).await?;
    let db = state.db.clone();

    // One account owning 1 000 projects.
    let now = now_ms();
    let user = "usr_bench0000000000000000000000";
    sqlx::query("INSERT INTO users (id, email, password_hash, email_verified, created_at) VALUES ($1, $2, NULL, $3, $4)")
        .bind(user)
        .bind("bench@example.com")
        .bind(true)
        .bind(now)
        .execute(db.pool())
        .await?;
    let mut projects = Vec::with_capacity(PROJECTS);
    for i in 0..PROJECTS {
        let id = qyzar_shared::ids::ProjectId::generate().to_string();
        sqlx::query("INSERT INTO projects (id, owner_id, name, settings_json, created_at) VALUES ($1, $2, $3, '{}', $4)")
            .bind(&id)
            .bind(user)
            .bind(format!("p{i}"))
            .bind(now)
            .execute(db.pool())
            .await?;
        projects.push(id);
    }
    let big = projects[0].clone();

    // Seed: the big project's 30 days of minutes, in engine-sized batches;
    // every other project an hour of traffic in the last day.
    let started = Instant::now();
    let end = minute_start_ms(now);
    let first = end - DAYS * DAY_MS;
    let mut rows = Vec::with_capacity(MAX_BATCH_ROWS);
    let mut seq = 0;
    let mut flush = |rows: &mut Vec<TrafficRow>| {
        seq += 1;
        TrafficBatch {
            batch_id: format!("bench-{seq}"),
            rows: std::mem::take(rows),
        }
    };
    let mut minute = first;
    let mut total_rows = 0usize;
    while minute < end {
        for i in 0..KEYS.len() {
            rows.push(row(&big, minute, i, 1 + (minute / MINUTE_MS % 7) as u64));
        }
        if rows.len() + KEYS.len() > MAX_BATCH_ROWS {
            total_rows += rows.len();
            qyzar_admin::usage::ingest(&db, &flush(&mut rows), now).await?;
        }
        minute += MINUTE_MS;
    }
    for (n, p) in projects.iter().enumerate().skip(1) {
        let start = end - (1 + (n as i64 % 23)) * 60 * MINUTE_MS;
        for m in 0..60 {
            rows.push(row(p, start + m * MINUTE_MS, 0, 3));
            rows.push(row(p, start + m * MINUTE_MS, 5, 1));
        }
        if rows.len() + 120 > MAX_BATCH_ROWS {
            total_rows += rows.len();
            qyzar_admin::usage::ingest(&db, &flush(&mut rows), now).await?;
        }
    }
    if !rows.is_empty() {
        total_rows += rows.len();
        qyzar_admin::usage::ingest(&db, &flush(&mut rows), now).await?;
    }
    let count = |table: &'static str| {
        let db = db.clone();
        async move {
            use sqlx::Row as _;
            sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(db.pool())
                .await
                .and_then(|r| r.try_get::<i64, _>(0))
        }
    };
    println!(
        "seeded {total_rows} minute rows in {:.1?}: analytics_minute {} rows, analytics_hour {}, analytics_day {}",
        started.elapsed(),
        count("analytics_minute").await?,
        count("analytics_hour").await?,
        count("analytics_day").await?,
    );

    // A running admin and a dashboard token for the owner.
    let token = {
        let mut conn = db.pool().acquire().await?;
        qyzar_admin::auth::tokens::issue_dashboard_token(&mut conn, user)
            .await?
            .token
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(qyzar_admin::run(listener, state, async {
        let _ = stopped.await;
    }));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    let from = end - DAYS * DAY_MS;
    let queries = [
        (
            "overview-stats, 30 days (hour table, and the 30 days before)",
            format!("/projects/overview-stats?projectId={big}&from={from}&to={end}"),
        ),
        (
            "analytics traffic, 30 days (hour table, 720 buckets)",
            format!("/projects/analytics?projectId={big}&section=traffic&from={from}&to={end}"),
        ),
        (
            "analytics traffic, 30 days by day",
            format!(
                "/projects/analytics?projectId={big}&section=traffic&from={from}&to={end}&bucket=day"
            ),
        ),
        (
            "analytics traffic, last 24 h (minute table, 1 440 buckets)",
            format!("/projects/analytics?projectId={big}&section=traffic"),
        ),
        (
            "dashboard-summary (minute table, 48 h)",
            format!("/projects/dashboard-summary?projectId={big}"),
        ),
        (
            "browser-data, 30 days",
            format!("/projects/browser-data?projectId={big}&from={from}&to={end}"),
        ),
    ];
    println!("{rounds} rounds each (after 5 warm-up), over HTTP:");
    for (name, path) in &queries {
        let get = || {
            let req = http::Request::get(format!("{base}{path}"))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()));
            let client = client.clone();
            async move {
                let res = client.request(req?).await?;
                let status = res.status();
                let body = res.into_body().collect().await?.to_bytes();
                if status != 200 {
                    return Err(format!("{status}: {}", String::from_utf8_lossy(&body)).into());
                }
                Ok::<usize, Box<dyn std::error::Error + Send + Sync>>(body.len())
            }
        };
        for _ in 0..5 {
            get().await?;
        }
        let mut took: Vec<Duration> = Vec::with_capacity(rounds);
        let mut bytes = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            bytes = get().await?;
            took.push(t.elapsed());
        }
        took.sort();
        let pct = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)];
        println!(
            "  {name}: p50 {:.2?}  p95 {:.2?}  max {:.2?}  ({bytes} bytes)",
            pct(50),
            pct(95),
            took[took.len() - 1]
        );
    }
    let _ = stop.send(());
    server.await??;
    Ok(())
}
