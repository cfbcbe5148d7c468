//! The real-server version of `outage.rs`: a dedicated Cassandra node is
//! killed with SIGKILL mid-test. Cached sessions still verify, uncached ones
//! get `503 store_unavailable` (never `valid: false`), rate limiting answers
//! from memory, and once the node is started again (same data directory) the
//! driver reconnects by itself: everything recovers without restarting the
//! engine.
//!
//! The node runs on `QYZAR_TEST_CQL_KILLABLE_PORT` (deploy/test.sh sets it),
//! never on the shared node other tests use. The test starts it, kills it,
//! restarts it and stops it at the end, also when it fails. Concurrent runs
//! of this test (e.g. two checkouts) are serialised by a lock file, since
//! they would share the node.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use qyzar_shared::ids::SessionId;
use qyzar_store::{Consistency, ScyllaConfig, ScyllaStore};
use serde_json::json;

use crate::helpers::*;

/// Keyspace prefix on the dedicated node; leftovers are swept at start.
const KEYSPACE_PREFIX: &str = "qz_kill_";
/// Short, so a dead node is detected quickly.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the driver gets to reconnect once the node answers again (its
/// pool refill backoff tops out at 10 s).
const RECOVERY_WAIT: Duration = Duration::from_secs(60);
/// How long another run of this test may hold the node.
const LOCK_WAIT_S: u32 = 600;

/// `deploy/cql-server.sh` for one port.
#[derive(Clone)]
struct Script {
    port: u16,
    repo: PathBuf,
}

impl Script {
    fn run(&self, cmd: &str) -> Output {
        Command::new(self.repo.join("deploy/cql-server.sh"))
            .arg(cmd)
            .current_dir(&self.repo)
            .env("QYZAR_CQL_PORT", self.port.to_string())
            // Schema changes must survive a SIGKILL, as on a real cluster.
            .env("QYZAR_CQL_UNSAFE_SYSTEM", "0")
            // The storage port must follow the CQL port (port + 1), not a
            // value meant for the shared node.
            .env_remove("QYZAR_CQL_STORAGE_PORT")
            .env("QYZAR_CQL_START_TIMEOUT", "180") // the script's own bound
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run deploy/cql-server.sh {cmd}: {e}"))
    }

    /// Starts the node (or waits for it) until CQL answers.
    fn start(&self) {
        let out = self.run("start");
        assert!(
            out.status.success(),
            "deploy/cql-server.sh start on port {} failed ({}):\n{}",
            self.port,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let out = self.run("stop");
        if !out.status.success() {
            eprintln!(
                "cql_kill: stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The JVM's pid, from `status` ("running: ... (pid N, RSS ...)").
    fn pid(&self) -> u32 {
        let out = self.run("status");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && text.starts_with("running: "),
            "node on port {} not running: {text}",
            self.port
        );
        text.split("(pid ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid in status output: {text}"))
    }

    /// Drops this test's keyspaces (best effort: the node may be down).
    fn sweep_keyspaces(&self) {
        let out = Command::new("python3")
            .arg(self.repo.join("deploy/cql_ping.py"))
            .args(["127.0.0.1", &self.port.to_string(), "--timeout", "10"])
            .args(["--drop-keyspaces-with-prefix", KEYSPACE_PREFIX])
            .stdin(Stdio::null())
            .output();
        if let Ok(out) = out {
            eprintln!(
                "cql_kill: sweep: {}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

/// Stops the dedicated node when the test ends, passed or failed.
struct NodeGuard(Script);

impl Drop for NodeGuard {
    fn drop(&mut self) {
        self.0.sweep_keyspaces();
        self.0.stop();
    }
}

/// Holds an exclusive lock on the dedicated port for as long as it lives:
/// a `flock` child that keeps the lock until its stdin closes, which also
/// happens if this process dies.
struct PortLock(std::process::Child);

impl PortLock {
    fn acquire(port: u16) -> Self {
        let file = std::env::temp_dir().join(format!("qyzar-cql-kill-{port}.lock"));
        let mut child = Command::new("flock")
            .args(["-w", &LOCK_WAIT_S.to_string()])
            .arg(&file)
            .args(["-c", "echo locked; read _"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run flock");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "locked",
            "no lock on {} within {LOCK_WAIT_S}s",
            file.display()
        );
        PortLock(child)
    }
}

impl Drop for PortLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take()); // EOF: `read` returns, flock exits
        let _ = self.0.wait();
    }
}

/// Runs blocking script work off the async workers (the engine and the
/// driver keep running meanwhile).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// SIGKILL, then waits (bounded) until the process is gone or a zombie.
fn kill_hard(pid: u32) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -9 {pid} failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().chars().next()))
            .flatten();
        if matches!(state, None | Some('Z') | Some('X')) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} still alive 10s after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_survives_cql_server_kill() {
    let Some(port) = qyzar_shared::testing::backend(
        "QYZAR_TEST_CQL_KILLABLE_PORT",
        "engine survives a CQL server kill",
    ) else {
        return;
    };
    let port: u16 = port
        .trim()
        .parse()
        .expect("QYZAR_TEST_CQL_KILLABLE_PORT is a port number");
    let shared_port = std::env::var("QYZAR_TEST_CQL_NODE")
        .ok()
        .and_then(|n| n.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(9042);
    assert_ne!(
        port, shared_port,
        "QYZAR_TEST_CQL_KILLABLE_PORT must not be the shared CQL node's port"
    );
    let t0 = Instant::now();
    let script = Script {
        port,
        repo: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
    };

    let _lock = blocking(move || PortLock::acquire(port)).await;
    let guard = NodeGuard(script.clone());
    {
        let s = script.clone();
        blocking(move || {
            s.start();
            s.sweep_keyspaces();
        })
        .await;
    }
    println!("cql_kill: node on port {port} up after {:?}", t0.elapsed());

    let mut cfg = ScyllaConfig::new(
        vec![format!("127.0.0.1:{port}")],
        qyzar_shared::testing::unique_name(KEYSPACE_PREFIX),
    );
    cfg.replication_factor = 1;
    cfg.write_consistency = Consistency::One;
    cfg.read_consistency = Consistency::One;
    cfg.request_timeout = REQUEST_TIMEOUT;
    let store = std::sync::Arc::new(
        ScyllaStore::connect(cfg)
            .await
            .expect("connect to the dedicated CQL node"),
    );
    let engine = TestEngine::spawn_with(store, tempfile::tempdir().unwrap()).await;
    let (p, pcfg) = project(SETTINGS, false);
    install(&engine.engine, 1, vec![pcfg]);

    let connect = || async {
        let body = json!({"projectId": p.id, "originToken": p.origin_token, "entropy": entropy()})
            .to_string();
        request(
            "POST",
            &engine.url("/connect"),
            &[("origin", ORIGIN)],
            Some(&body),
        )
        .await
    };
    let verify = |sid: &str, tok: &str| {
        let body = json!({"projectId": p.id, "sessionId": sid, "sessionToken": tok}).to_string();
        let url = engine.url("/projects/client/session-verify");
        let secret = p.secret.clone();
        async move {
            request(
                "POST",
                &url,
                &[("x-qyzar-project-secret", &secret)],
                Some(&body),
            )
            .await
        }
    };
    let ids = |r: &TestResponse| {
        assert_eq!(r.status, 201, "connect: {:?}", r.body);
        (
            r.body["sessionId"].as_str().unwrap().to_owned(),
            r.body["sessionToken"].as_str().unwrap().to_owned(),
        )
    };
    let (sa, ta) = ids(&connect().await);
    let (sb, tb) = ids(&connect().await);
    engine
        .engine
        .sessions
        .forget(&SessionId::parse(&sb).unwrap());
    let r = verify(&sb, &tb).await;
    assert_eq!(
        r.body["valid"], true,
        "the uncached session is read from the store before the kill: {:?}",
        r.body
    );
    engine
        .engine
        .sessions
        .forget(&SessionId::parse(&sb).unwrap());

    // A real crash: SIGKILL to the JVM, no clean shutdown.
    let pid = blocking({
        let s = script.clone();
        move || {
            let pid = s.pid();
            kill_hard(pid);
            pid
        }
    })
    .await;
    let killed = Instant::now();
    println!(
        "cql_kill: killed Cassandra pid {pid} after {:?}",
        t0.elapsed()
    );

    let r = verify(&sa, &ta).await;
    assert_eq!(
        (r.status, r.body["valid"].clone()),
        (200, json!(true)),
        "a cached session still verifies: {:?}",
        r.body
    );
    let r = verify(&sb, &tb).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (503, json!("store_unavailable")),
        "never valid:false for a session that may exist: {:?}",
        r.body
    );
    let r = request(
        "POST",
        &engine.url("/projects/client/rate-limit-check"),
        &[("x-qyzar-project-secret", &p.secret)],
        Some(&json!({"projectId": p.id, "ip": "192.0.2.1"}).to_string()),
    )
    .await;
    assert_eq!(
        (r.status, r.body["allowed"].clone()),
        (200, json!(true)),
        "rate limiting works from memory: {:?}",
        r.body
    );
    let r = connect().await;
    assert_eq!(
        r.status, 503,
        "a session that cannot be stored is not handed out: {:?}",
        r.body
    );
    let r = request(
        "POST",
        &engine.url("/projects/client/ato-login-attempt"),
        &[("x-qyzar-project-secret", &p.secret)],
        Some(&json!({"projectId": p.id, "identifier": "ann", "success": true}).to_string()),
    )
    .await;
    assert_eq!(
        r.status, 503,
        "an attempt that cannot be stored is not answered: {:?}",
        r.body
    );
    println!("cql_kill: outage checks done in {:?}", killed.elapsed());

    // Same port, same data directory: the keyspace and the sessions are back.
    {
        let s = script.clone();
        blocking(move || s.start()).await;
    }
    let restarted = Instant::now();
    println!("cql_kill: node restarted after {:?}", t0.elapsed());

    // Readiness wait for the driver's own reconnection (no engine restart):
    // until then only 503s, never a `valid: false`.
    let deadline = restarted + RECOVERY_WAIT;
    let mut tries = 0;
    loop {
        tries += 1;
        let r = verify(&sb, &tb).await;
        if r.status == 200 && r.body["valid"] == true {
            break;
        }
        assert_eq!(
            (r.status, r.body["error"]["code"].clone()),
            (503, json!("store_unavailable")),
            "while reconnecting only 503s: {:?}",
            r.body
        );
        assert!(
            Instant::now() < deadline,
            "the driver did not reconnect within {RECOVERY_WAIT:?} of the node's restart: {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "cql_kill: uncached session verifies again {:?} after the restart ({tries} tries)",
        restarted.elapsed()
    );

    let (sc, tc) = ids(&connect().await);
    engine
        .engine
        .sessions
        .forget(&SessionId::parse(&sc).unwrap());
    let r = verify(&sc, &tc).await;
    assert_eq!(
        r.body["valid"], true,
        "a session connected after the restart is stored: {:?}",
        r.body
    );
    let r = verify(&sa, &ta).await;
    assert_eq!(
        r.body["valid"], true,
        "the cached session still verifies: {:?}",
        r.body
    );

    engine.stop().await;
    blocking(move || drop(guard)).await;
    println!("cql_kill: done in {:?}", t0.elapsed());
}
