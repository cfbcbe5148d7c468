//! The load loop end to end against the in-process baseline server on a
//! random port: the same code paths `run` and `compare` use.

mod abuse;

use std::sync::Arc;
use std::time::Duration;

use qyzar_loadtest::args::RequestArgs;
use qyzar_loadtest::load::{self, LoadSpec};
use qyzar_loadtest::plan::Plan;
use qyzar_loadtest::report::Pacing;
use tokio::sync::oneshot;

/// Starts the engine-like baseline on 127.0.0.1:0 and returns its URL and
/// a stop switch.
async fn spawn_baseline() -> (String, oneshot::Sender<()>) {
    spawn_kind(qyzar_loadtest::baseline::Kind::EngineLike).await
}

async fn spawn_kind(kind: qyzar_loadtest::baseline::Kind) -> (String, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel();
    tokio::spawn(qyzar_loadtest::baseline::serve(listener, kind, async {
        let _ = rx.await;
    }));
    (url, tx)
}

/// The strict baseline answers as the shared instrument's hello-world does:
/// the body read, then 200 with `{"valid":true}`, twice on one keep-alive
/// connection.
#[tokio::test]
async fn the_strict_baseline_reads_the_body_and_answers_valid() {
    answers_valid_twice(qyzar_loadtest::baseline::Kind::Strict).await;
}

/// The durable baseline answers as the strict one does, once the body is
/// synced (its journal is checked in `baseline::durable`'s own tests).
#[tokio::test]
async fn the_durable_baseline_answers_as_the_strict_one() {
    answers_valid_twice(qyzar_loadtest::baseline::Kind::Durable).await;
}

/// A body over the durable baseline's bound is refused with 413 before it
/// is read, not buffered and journalled.
#[tokio::test]
async fn the_durable_baseline_refuses_a_huge_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (url, _stop) = spawn_kind(qyzar_loadtest::baseline::Kind::Durable).await;
    let mut s = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

async fn answers_valid_twice(kind: qyzar_loadtest::baseline::Kind) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (url, _stop) = spawn_kind(kind).await;
    let mut s = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    let req = b"POST /projects/client/token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let mut seen = String::new();
    for _ in 0..2 {
        s.write_all(req).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with(r#"{"valid":true}"#), "{answer}");
        seen = answer;
    }
    assert!(seen
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
}

fn plan(url: &str) -> Arc<Plan> {
    Arc::new(
        Plan::from_args(&RequestArgs {
            url: url.to_owned(),
            scenario: Some("ping".into()),
            ..RequestArgs::default()
        })
        .unwrap(),
    )
}

fn spec(pacing: Pacing) -> LoadSpec {
    LoadSpec {
        label: "test".into(),
        connections: 4,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
        pacing,
        progress: false,
        server_pid: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_answers_every_request() {
    let (url, _stop) = spawn_baseline().await;
    let plan = plan(&url);
    assert_eq!(load::probe(&plan).await.unwrap(), 200);
    let r = load::run(plan, &spec(Pacing::Closed)).await.unwrap();
    assert!(r.total.requests() > 100, "{}", r.table());
    assert_eq!(r.total.errors(), 0, "{}", r.table());
    assert_eq!(r.total.status.get("200"), Some(&r.total.requests()));
    assert_eq!(r.total.latency.len(), r.total.requests());
    assert!(r.latency().p50 > 0);
}

/// With the server's process known the run reports its CPU over the
/// measured time; without, none. The server is this package's binary
/// (`baseline`) in a process of its own, as `compare` starts it: in this
/// test process the harness's other tests end threads, and an ended thread
/// takes its time out of the sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_cpu_per_answer_is_measured_when_its_process_is_known() {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qyzar-loadtest"))
        .args(["baseline", "--port", "0", "--kind", "strict"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the baseline");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .to_owned();
    let plan = plan(&url);
    let known = LoadSpec {
        server_pid: Some(child.id()),
        ..spec(Pacing::Closed)
    };
    let r = load::run(Arc::clone(&plan), &known).await.unwrap();
    let unknown = load::run(plan, &spec(Pacing::Closed)).await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let cpu = r.server_cpu.expect("the server's CPU, read from /proc");
    // A closed loop keeps the server busy for much of the 800 ms measured;
    // it has one thread, so at most all of them (plus the timer's lateness
    // at either end).
    assert!(cpu > Duration::from_millis(10), "{cpu:?}");
    assert!(cpu <= Duration::from_millis(900), "{cpu:?}");
    let per = r.cpu_us_per_answer().unwrap();
    assert!(per > 0.0);
    assert_eq!(
        r.json()["server_cpu_us_per_answer"].as_f64().unwrap(),
        (per * 100.0).round() / 100.0
    );
    assert_eq!(unknown.server_cpu, None);
    assert!(unknown.json()["server_cpu_us_per_answer"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_holds_the_rate() {
    let (url, _stop) = spawn_baseline().await;
    let r = load::run(plan(&url), &spec(Pacing::Open { rate: 500.0 }))
        .await
        .unwrap();
    // 500/s for 0.8 s is 400 requests; allow for timer slack at the edges.
    let n = r.total.requests();
    assert!((360..=420).contains(&n), "{n} requests\n{}", r.table());
    assert_eq!(r.total.errors(), 0);
}

/// `engine-compare --rate`: both sides run only open rounds at the given
/// rate, alternated, and the JSON keeps every round of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comparison_at_a_chosen_rate_runs_both_sides_open_at_it() {
    let (base_url, _stop_base) = spawn_baseline().await;
    let (route_url, _stop_route) = spawn_baseline().await;
    let load = qyzar_loadtest::args::LoadArgs {
        connections: 4,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
        rate: Some(500.0),
        closed: false,
    };
    let (p99_base, p99_route, json) = qyzar_loadtest::compare::at_rate(
        2,
        &load,
        true,
        qyzar_loadtest::compare::Servers::default(),
        &plan(&base_url),
        &plan(&route_url),
        500.0,
    )
    .await
    .unwrap();
    assert!(p99_base > 0.0 && p99_route > 0.0, "{json}");
    for side in ["baseline_runs", "route_runs"] {
        let runs = json[side].as_array().expect(side);
        assert_eq!(runs.len(), 2, "two rounds of {side}: {json}");
        for r in runs {
            assert_eq!(r["mode"], "open", "{r}");
            assert_eq!(r["rate"], 500.0, "{r}");
            assert_eq!(r["errors"], 0, "{r}");
            // 500/s for 0.8 s, give or take the timer at the edges.
            let n = r["requests"].as_u64().unwrap();
            assert!((360..=420).contains(&n), "{n} requests: {r}");
        }
    }
    let targets: Vec<_> = ["baseline_runs", "route_runs"]
        .iter()
        .map(|side| json[side][0]["target"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        targets,
        [base_url, route_url],
        "each side ran against its own server"
    );
}

/// The whole `engine-compare --rate` command, its engine and baseline
/// spawned: only open rounds at the rate, reported under `at_rate`, and no
/// maximum-throughput comparison.
#[test]
fn engine_compare_at_a_rate_runs_open_rounds_only() {
    let dir = std::env::temp_dir().join(format!("qyzar-ec-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qyzar-loadtest"))
        .args([
            "engine-compare",
            "--rate",
            "200",
            "--rounds",
            "2",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
            "--connections",
            "2",
            "--projects",
            "1",
            "--sessions",
            "1",
            "--scenarios",
            "session-verify-hit",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("engine-compare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("p99 at 200/s, medians"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        v["scenarios"],
        serde_json::json!([]),
        "no maximum-throughput comparison: {v}"
    );
    let at = v["at_rate"].as_array().expect("at_rate");
    assert_eq!(at.len(), 1, "{v}");
    assert_eq!(at[0]["name"], "session-verify-hit");
    assert_eq!(at[0]["rate"], 200.0);
    for side in ["baseline_runs", "route_runs"] {
        let runs = at[0]["p99_us"][side].as_array().expect(side);
        assert_eq!(runs.len(), 2, "two rounds of {side}: {v}");
        for r in runs {
            assert_eq!(r["mode"], "open", "{r}");
            assert_eq!(r["rate"], 200.0, "{r}");
            assert_eq!(r["errors"], 0, "{r}");
            assert_eq!(r["status"]["200"], r["requests"], "every answer a 200: {r}");
        }
    }
    assert!(at[0]["p99_us_route"].as_f64().unwrap() > 0.0, "{v}");
}

/// The generator's pacer thread wakes late by its sleep's slack (and
/// tokio's timer, before it, by up to a millisecond); that lateness is not
/// the server's and must not read as latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_excludes_the_timer() {
    let (url, _stop) = spawn_baseline().await;
    let mut s = spec(Pacing::Open { rate: 1000.0 });
    s.connections = 2;
    let r = load::run(plan(&url), &s).await.unwrap();
    let closed = load::run(plan(&url), &spec(Pacing::Closed)).await.unwrap();
    // Measured from the intended send time behind a late timer, the open
    // loop's median read about 1.35 ms here against 75 µs closed.
    assert!(
        r.latency().p50 < closed.latency().p50 + 600,
        "open\n{}closed\n{}",
        r.table(),
        closed.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_closed_loop_is_corrected() {
    let (url, _stop) = spawn_baseline().await;
    let r = load::run(plan(&url), &spec(Pacing::ClosedPaced { rate: 500.0 }))
        .await
        .unwrap();
    let n = r.total.requests();
    assert!((360..=420).contains(&n), "{n} requests\n{}", r.table());
    // Correction only ever adds samples.
    assert!(r.total.latency.len() >= n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_counted_not_hung() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    assert!(load::probe(&plan(&url)).await.is_err());
    let mut s = spec(Pacing::Closed);
    s.connections = 1;
    let r = load::run(plan(&url), &s).await.unwrap();
    assert_eq!(r.total.requests(), r.total.errors());
    assert!(r.total.status.contains_key("connect"), "{}", r.table());
}
