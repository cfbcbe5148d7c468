//! `qyzar demo-traffic` against a real `qyzar dev` (both the built binary):
//! the run finishes by itself and its traffic shows what the dashboard is
//! meant to show — people allowed, bots denied by the rate limiter, the
//! credential-stuffing logins challenged or blocked.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `qyzar dev` in its own folder on free loopback ports; stopped on drop.
struct Dev {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_dev() -> Dev {
    let dir = tempfile::tempdir().expect("temp dir");
    let child = Command::new(env!("CARGO_BIN_EXE_qyzar"))
        .arg("dev")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("QYZAR_ENGINE_ADDR", format!("127.0.0.1:{}", free_port()))
        .env(
            "QYZAR_ENGINE_INTERNAL_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("QYZAR_ADMIN_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qyzar dev starts");
    let dev = Dev { child, dir };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !dev.dir.path().join(".qyzar/dev.json").exists() {
        assert!(
            Instant::now() < deadline,
            "qyzar dev did not seed within 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // dev.json is written after both services listen.
    std::thread::sleep(Duration::from_millis(300));
    dev
}

#[test]
fn demo_traffic_fills_a_dev_project_with_people_bots_and_stuffing() {
    let dev = start_dev();
    let out = Command::new(env!("CARGO_BIN_EXE_qyzar"))
        .args(["demo-traffic", "--people", "12"])
        .current_dir(dev.dir.path())
        .output()
        .expect("demo-traffic runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo-traffic failed:\n{log}");
    let count = |route: &str, outcome: &str| -> u64 {
        log.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(route) && f.next() == Some(outcome))
                    .then(|| f.next()?.parse::<u64>().ok())
                    .flatten()
            })
            .sum()
    };
    assert!(
        count("/connect", "ok") >= 12 + 40,
        "sessions opened:\n{log}"
    );
    assert!(
        count("/projects/client/session-verify", "valid") >= 12,
        "{log}"
    );
    assert!(
        count("/projects/client/token-verify", "valid") >= 12,
        "client tokens minted and verified:\n{log}"
    );
    assert!(
        count("/projects/client/rate-limit-check", "denied") > 0,
        "the bot farm is denied:\n{log}"
    );
    assert!(
        count("/projects/client/rate-limit-check", "allowed") >= 12,
        "{log}"
    );
    let stuffing = count("/projects/client/ato-login-attempt", "challenge")
        + count("/projects/client/ato-login-attempt", "block");
    assert!(
        stuffing > 0,
        "credential stuffing is challenged or blocked:\n{log}"
    );
    assert!(
        count("/projects/client/ato-login-attempt", "allow") >= 12,
        "people log in:\n{log}"
    );

    // Only loopback engines, and a clear message without `qyzar dev`.
    let elsewhere = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_qyzar"))
        .arg("demo-traffic")
        .current_dir(elsewhere.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("-- dev` first"));
}
