//! `qyzar-loadtest abuse` end to end for about two seconds with tiny
//! settings: the binary, its child engines, both phases and the JSON
//! report. A smoke test that keeps the scenario working, not a benchmark:
//! nothing here is timed.

use serde_json::{json, Value};

#[test]
fn abuse_runs_both_phases_and_reports_the_victims_decisions() {
    let report =
        std::env::temp_dir().join(format!("qyzar-abuse-smoke-{}.json", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qyzar-loadtest"))
        .args([
            "abuse",
            "--duration=1s",
            "--victim-rate=90",
            "--victim-connections=2",
            "--attack-connections=4",
            "--attack-rate=100",
            "--slow-connections=2",
            "--sessions=20",
            "--quiet",
            "--json",
        ])
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report);
    assert_eq!(r["victim_requests"], 90);
    // 30 of each kind: one in eight sessions and tokens is bad; rate-limit
    // IPs come 25 at a time against a limit of 20.
    assert_eq!(
        r["control"]["victim"]["decisions"],
        json!({
            "session_verify:valid": 27, "session_verify:invalid:not_found": 3,
            "token_verify:valid": 27, "token_verify:invalid:bad_signature": 3,
            "rate_limit:allowed": 25, "rate_limit:denied:ip": 5,
        })
    );
    let attacked: u64 = r["attack"]["victim"]["decisions"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(attacked, 90, "{}", r["attack"]["victim"]);
    for phase in ["control", "attack"] {
        assert!(r[phase]["engine_peak_rss_kib"].as_u64().unwrap() > 0);
        assert!(r[phase]["victim"]["latency_us"]["p99"].is_u64());
    }
    assert!(r["control"]["attacker"].is_null());
    let kinds = &r["attack"]["attacker"]["requests_by_kind"];
    for kind in ["junk", "idempotency", "big_token", "limiter_flood"] {
        assert!(kinds[kind].is_object(), "{kind} was not sent: {kinds}");
    }
    assert!(r["attack"]["attacker"]["slow"]["opened"].as_u64().unwrap() >= 2);
    assert!(r["victim_decisions_equal"].is_boolean());
}
