//! The parser on good and bad command lines.

use super::*;
use crate::baseline::Kind;

fn argv(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn run_with_defaults() {
    let Command::Run(a) = parse(&argv("run --url http://127.0.0.1:8080/ping")).unwrap() else {
        panic!("not a run")
    };
    assert_eq!(a.request.url, "http://127.0.0.1:8080/ping");
    assert_eq!(a.load, LoadArgs::default());
    assert_eq!(a.json, None);
    assert_eq!(a.common, Common::default());
}

#[test]
fn run_with_everything() {
    let mut v = argv(
        "run --url=http://h:1/x --method POST --body b.json --connections 8 \
         --duration 1.5s --warmup 500ms --rate 2000 --closed --json r.json \
         --pin-client 1 --threads 1 --quiet --header",
    );
    v.push("Authorization: Bearer a:b".into());
    v.extend(argv("--header X-Trace:1"));
    let Command::Run(a) = parse(&v).unwrap() else {
        panic!("not a run")
    };
    assert_eq!(a.request.method.as_deref(), Some("POST"));
    assert_eq!(a.request.body, Some(PathBuf::from("b.json")));
    assert_eq!(
        a.request.headers,
        vec![
            ("Authorization".into(), "Bearer a:b".into()),
            ("X-Trace".into(), "1".into())
        ]
    );
    assert_eq!(a.load.connections, 8);
    assert_eq!(a.load.duration, Duration::from_millis(1500));
    assert_eq!(a.load.warmup, Duration::from_millis(500));
    assert_eq!(a.load.rate, Some(2000.0));
    assert!(a.load.closed);
    assert_eq!(a.json, Some(PathBuf::from("r.json")));
    assert_eq!(a.common.pin_client.as_deref(), Some("1"));
    assert_eq!(a.common.threads, Some(1));
    assert!(a.common.quiet);
}

#[test]
fn compare_and_baseline() {
    let Command::Compare(c) = parse(&argv(
        "compare --url http://h:1/ping --rounds 7 --baseline-url http://h:2 --pin-server 0",
    ))
    .unwrap() else {
        panic!("not a compare")
    };
    assert_eq!((c.rounds, c.pin_server.as_deref()), (7, Some("0")));
    assert_eq!(c.baseline_url.as_deref(), Some("http://h:2"));
    assert_eq!(
        c.baseline,
        Kind::Strict,
        "the strict hello-world by default"
    );
    let Command::Compare(c) = parse(&argv(
        "compare --url http://h:1/ping --baseline engine-like",
    ))
    .unwrap() else {
        panic!("not a compare")
    };
    assert_eq!(c.baseline, Kind::EngineLike);
    assert_eq!(
        parse(&argv("baseline --port 9000")).unwrap(),
        Command::Baseline(BaselineArgs {
            kind: Kind::Strict,
            host: "127.0.0.1".into(),
            port: 9000,
            common: Common::default()
        })
    );
    let Command::Baseline(b) = parse(&argv("baseline --kind engine-like")).unwrap() else {
        panic!("not a baseline")
    };
    assert_eq!(b.kind, Kind::EngineLike);
    let Command::Baseline(b) = parse(&argv("baseline --kind durable")).unwrap() else {
        panic!("not a baseline")
    };
    assert_eq!(b.kind, Kind::Durable);
    assert_eq!(parse(&[]).unwrap(), Command::Help);
    assert_eq!(parse(&argv("--help")).unwrap(), Command::Help);
}

/// clap's tokenizer keeps the documented habits: `--flag=value`, the last
/// of a repeated flag wins, `--header` repeats, `--help` anywhere is help.
#[test]
fn flag_forms() {
    let Command::Run(a) = parse(&argv(
        "run --url=http://h:1/ping --connections 4 --connections 8 --header a:1 --header b:2",
    ))
    .unwrap() else {
        panic!("not a run")
    };
    assert_eq!(a.load.connections, 8);
    assert_eq!(a.request.url, "http://h:1/ping");
    assert_eq!(a.request.headers.len(), 2);
    assert_eq!(parse(&argv("run --help")).unwrap(), Command::Help);
    assert_eq!(parse(&argv("abuse -h")).unwrap(), Command::Help);
}

#[test]
fn mistakes_are_named() {
    for (line, needle) in [
        ("run", "--url is required"),
        ("run --url u --bogus 1", "--bogus"),
        (
            "run --url u --connections",
            "a value is required for '--connections",
        ),
        ("run --url u --connections 0", "at least 1"),
        ("baseline --kind fast", "unknown baseline `fast`"),
        ("engine-compare --baseline soft", "unknown baseline `soft`"),
        ("run --url u --connections many", "--connections"),
        ("run --url u --duration 10h", "unknown unit"),
        ("run --url u --rate -5", "at least 0.001"),
        ("run --url u --rate 1e-300", "at least 0.001"),
        ("run --url u --closed", "needs --rate"),
        ("run --url u --scenario ping --mix m", "alternatives"),
        ("run --url u --header nocolon", "not a header"),
        ("run --url u stray", "unexpected argument"),
        ("compare --url u --rate 10", "picks its own rate"),
        ("compare --url u --rounds 0", "at least 1"),
        ("compare --url u --pin-server x", "CPU list"),
        ("compare --url u --pin-client 1", "--pin-server too"),
        ("explode", "unknown command"),
    ] {
        let e = parse(&argv(line)).unwrap_err();
        assert!(e.0.contains(needle), "`{line}` gave `{e}`");
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
    assert!(parse_duration("s").is_err());
    assert!(parse_duration("-1s").is_err());
}

#[test]
fn engine_compare_and_serve() {
    let Command::EngineCompare(c) = parse(&argv("engine-compare")).unwrap() else {
        panic!("not engine-compare")
    };
    assert_eq!((c.rounds, c.projects, c.sessions), (5, 1000, 100_000));
    assert_eq!(c.scenarios, None);
    let Command::EngineCompare(c) = parse(&argv(
        "engine-compare --rounds 3 --projects 10 --sessions 50 --scenarios a,b --duration 2s --json o.json",
    ))
    .unwrap() else {
        panic!("not engine-compare")
    };
    assert_eq!((c.rounds, c.projects, c.sessions), (3, 10, 50));
    assert_eq!(c.scenarios.as_deref(), Some("a,b"));
    assert_eq!(c.load.duration, Duration::from_secs(2));
    assert_eq!(c.json, Some(PathBuf::from("o.json")));
    assert_eq!(
        c.load.rate, None,
        "without --rate: maximum, then half of it"
    );
    let Command::EngineCompare(c) = parse(&argv("engine-compare --rate 25000")).unwrap() else {
        panic!("not engine-compare")
    };
    assert_eq!(c.load.rate, Some(25_000.0), "open rounds at this rate only");
    let Command::EngineServe(s) =
        parse(&argv("engine-serve --dir /tmp/x --token-cache 9")).unwrap()
    else {
        panic!("not engine-serve")
    };
    assert_eq!(
        (s.dir.as_str(), s.port, s.token_cache),
        ("/tmp/x", 0, Some(9))
    );
    for (line, needle) in [
        ("engine-compare --rate 5 --closed", "drop --closed"),
        ("engine-compare --sessions 0", "at least 1"),
        ("engine-compare --pin-client 1", "--pin-server too"),
        ("engine-serve", "needs --dir"),
    ] {
        let e = parse(&argv(line)).unwrap_err();
        assert!(e.0.contains(needle), "`{line}` gave `{e}`");
    }
}

#[test]
fn abuse_defaults_and_refusals() {
    let Command::Abuse(a) = parse(&argv("abuse")).unwrap() else {
        panic!("not abuse")
    };
    assert_eq!(a.duration, Duration::from_secs(60));
    assert_eq!((a.victim_rate, a.attack_rate), (200.0, 2000.0));
    assert_eq!(
        (
            a.victim_connections,
            a.attack_connections,
            a.slow_connections
        ),
        (8, 16, 64)
    );
    let Command::Abuse(a) =
        parse(&argv("abuse --duration 2s --attack-rate 0 --json r.json")).unwrap()
    else {
        panic!("not abuse")
    };
    assert_eq!((a.duration, a.attack_rate), (Duration::from_secs(2), 0.0));
    assert_eq!(a.json, Some(PathBuf::from("r.json")));
    for bad in [
        "abuse --victim-rate 0",
        "abuse --attack-rate -1",
        "abuse --attack-rate 1e-300",
        "abuse --victim-rate 1e-300",
        "abuse --duration 0s",
        "abuse --victim-connections 0",
        "abuse --rounds 3",
    ] {
        assert!(parse(&argv(bad)).is_err(), "{bad}");
    }
}
