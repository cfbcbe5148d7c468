//! `abuse`: one engine, a hostile tenant and outsiders against a victim
//! tenant's normal traffic. A benchmark of multi-tenant safety: does the
//! engine's memory stay bounded, and does the victim get the same answers,
//! as fast, as without the attack?
//!
//! Two phases, each on a fresh child engine (this binary's `engine-serve`
//! over its own directory, so nothing carries over, with the engine's
//! default cache budgets):
//! 1. **control**: the victim's mix alone;
//! 2. **attack**: the same victim mix while [`attack`] runs the hostile mix:
//!    junk bodies, fresh `Idempotency-Key`s on 60 KiB bodies without
//!    credentials and on the attacker's valid token mints with the largest
//!    metadata a token may carry (every answer kept), 8 KiB client tokens the attacker signs with its
//!    own project key and verifies (each one new), a rate-limit flood with
//!    unique IPs and four unique metadata values per call under a
//!    `settingsOverride` of the longest windows its free plan allows (an
//!    hour, so every key stays held), and slow connections that
//!    trickle their headers or body a byte a second.
//!
//! The victim mix ([`victim`]) is a fixed list of requests sent on a fixed
//! schedule (`--victim-rate`), so its decisions are the same in both phases
//! unless the attack changed them: session-verify (one in eight of an
//! unknown session), token-verify (one in eight with a bad signature) and
//! rate-limit checks whose IPs rotate, each seen 25 times against a limit
//! of 20 a day. Rotating IPs keep new limiter keys arriving during the
//! attack, which is exactly when a full, fail-open limiter map would let
//! them through.
//!
//! The report: per phase the engine's peak RSS (`VmHWM` of the child), its
//! RSS each second, the victim's decisions and latency percentiles (from the
//! intended send time, so a stall counts), and for the attack what each
//! hostile kind was answered; then whether the decisions were equal.
//! It only talks HTTP to the engine: what changes inside the engine does
//! not change the scenario.

mod attack;
mod victim;

pub use attack::KINDS as ATTACK_KINDS;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http_body_util::BodyExt as _;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use qyzar_shared::crypto::{client_token_key, random_token, Hs256Key, ProjectSecret};
use qyzar_shared::ids::{ProjectId, SessionId};
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::snapshot::{encode_snapshot, provision, Snapshot};

use crate::args::AbuseArgs;
use crate::compare::spawn_child;
use crate::engine::RemoveOnDrop;

/// The victim's settings: one IP may pass 20 checks a day (so a rotated IP
/// is denied after 20, whatever the timing), email never binds.
const VICTIM_SETTINGS: &str = r#"{"allowedOrigins":["https://shop.example"],
  "rateLimit":{"ip":{"limit":20,"windowSeconds":86400},
    "metadata":{"email":{"limit":1000000,"windowSeconds":60}}}}"#;

/// The attacker's settings: a project like any other.
const ATTACKER_SETTINGS: &str = r#"{"allowedOrigins":["https://evil.example"]}"#;

/// A tenant as its backend knows it.
pub(crate) struct Tenant {
    pub(crate) id: String,
    pub(crate) secret: HeaderValue,
    pub(crate) key: Hs256Key,
}

/// The two tenants and the victim's seeded sessions (id, token).
pub(crate) struct World {
    pub(crate) victim: Tenant,
    pub(crate) attacker: Tenant,
    pub(crate) sessions: Vec<(String, String)>,
}

fn tenant(settings: &str) -> Result<(Tenant, qyzar_shared::snapshot::ProjectConfig), String> {
    let id = ProjectId::generate();
    let secret = ProjectSecret::generate();
    let settings = ProjectSettings::parse_and_validate(settings.as_bytes())
        .map_err(|e| format!("abuse settings do not validate: {e:?}"))?;
    let cfg = provision::project_config(&id, &secret, settings, None)
        .map_err(|e| format!("project config: {e}"))?;
    let t = Tenant {
        id: id.to_string(),
        secret: HeaderValue::from_str(secret.expose()).map_err(|e| e.to_string())?,
        key: client_token_key(&secret, &id),
    };
    Ok((t, cfg))
}

/// Makes the world and writes what `engine-serve` reads into `dir`.
fn generate(dir: &Path, sessions: usize) -> Result<(World, Vec<u8>, String), String> {
    let (victim, v) = tenant(VICTIM_SETTINGS)?;
    let (attacker, a) = tenant(ATTACKER_SETTINGS)?;
    let snap = Snapshot::new(1, qyzar_shared::time::now_ms(), vec![v, a])
        .map_err(|e| format!("snapshot: {e}"))?;
    let bytes = encode_snapshot(&snap).map_err(|e| format!("encoding the snapshot: {e}"))?;
    let mut tsv = String::new();
    let seeded: Vec<(String, String)> = (0..sessions)
        .map(|_| {
            let id = SessionId::generate().to_string();
            let token = random_token("qz_st_", 32);
            tsv.push_str(&format!("{}\t{id}\t{token}\n", victim.id));
            (id, token)
        })
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let world = World {
        victim,
        attacker,
        sessions: seeded,
    };
    Ok((world, bytes, tsv))
}

/// One HTTP/1.1 connection to the engine.
pub(crate) type Sender = http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// Opens a connection; `None` when the engine does not accept one.
pub(crate) async fn connect(addr: std::net::SocketAddr) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

/// Sends one request and reads the whole answer.
pub(crate) async fn exchange(
    s: &mut Sender,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(u16, bytes::Bytes), hyper::Error> {
    s.ready().await?;
    let res = s.send_request(req).await?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A `/proc/<pid>/status` field in KiB (`VmHWM`, `VmRSS`); 0 where there
/// is no procfs.
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
        })
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs one phase on a fresh engine; `attack` adds the hostile mix.
async fn phase(
    a: &AbuseArgs,
    world: &Arc<World>,
    plan: &Arc<victim::Plan>,
    dir: &Path,
    files: (&[u8], &str),
    attack: bool,
) -> Result<Value, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(dir.join("snapshot.bin"), files.0).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("sessions.tsv"), files.1).map_err(|e| e.to_string())?;
    let d = dir.to_string_lossy().into_owned();
    let (url, child) = spawn_child(a.pin_server.as_deref(), &["engine-serve", "--dir", &d])?;
    let pid = child.0.id();
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("engine address `{url}`: {e}"))?;
    let name = if attack { "attack" } else { "control" };
    if !a.common.quiet {
        eprintln!(
            "[{name}] engine {url} (pid {pid}), idle RSS {} KiB",
            proc_kib(pid, "VmRSS")
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_rss(pid, Arc::clone(&stop)));
    let attackers = attack.then(|| attack::start(a, Arc::clone(world), addr, Arc::clone(&stop)));
    let outcome = victim::run(
        Arc::clone(plan),
        addr,
        a.victim_connections,
        a.victim_rate,
        !a.common.quiet,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let attacked = match attackers {
        Some(h) => Some(h.finish().await),
        None => None,
    };
    let rss_by_second = sampler.await.unwrap_or_default();
    let peak = proc_kib(pid, "VmHWM");
    let end = proc_kib(pid, "VmRSS");
    drop(child);
    Ok(json!({
        "engine_peak_rss_kib": peak,
        "engine_rss_kib_end": end,
        "engine_rss_kib_by_second": rss_by_second,
        "victim": outcome.json(),
        "attacker": attacked,
    }))
}

/// `VmRSS` once a second until `stop`.
async fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        out.push(proc_kib(pid, "VmRSS"));
    }
    out
}

/// Runs `abuse`: control, then attack, then the comparison.
pub async fn abuse(a: AbuseArgs) -> Result<(), String> {
    let root = std::env::temp_dir().join(format!("qyzar-abuse-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(root.clone());
    let (world, snapshot, sessions) = generate(&root, a.sessions)?;
    let world = Arc::new(world);
    let total = (a.victim_rate * a.duration.as_secs_f64()).round().max(1.0) as usize;
    let plan = Arc::new(victim::plan(&world, total, a.duration));
    println!(
        "abuse: {total} victim requests at {}/s on {} connections; attack: {} connections at {}, {} slow connections",
        a.victim_rate,
        a.victim_connections,
        a.attack_connections,
        if a.attack_rate > 0.0 { format!("{}/s", a.attack_rate) } else { "full speed".into() },
        a.slow_connections,
    );
    let files = (snapshot.as_slice(), sessions.as_str());
    let control = phase(&a, &world, &plan, &root.join("control"), files, false).await?;
    let attack = phase(&a, &world, &plan, &root.join("attack"), files, true).await?;
    let (c, t) = (
        &control["victim"]["decisions"],
        &attack["victim"]["decisions"],
    );
    let equal = c == t;
    let mut diff = serde_json::Map::new();
    for key in c
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .chain(t.as_object().into_iter().flatten().map(|(k, _)| k))
    {
        if c.get(key) != t.get(key) {
            diff.insert(key.clone(), json!([c.get(key), t.get(key)]));
        }
    }
    print!("{}", table(&control, &attack, equal));
    if !equal {
        println!(
            "victim decisions changed under attack (control, attack): {}",
            Value::Object(diff.clone())
        );
    }
    if let Some(path) = &a.json {
        let v = json!({
            "duration_s": a.duration.as_secs_f64(),
            "victim_rate": a.victim_rate,
            "victim_requests": total,
            "victim_connections": a.victim_connections,
            "attack_connections": a.attack_connections,
            "attack_rate": if a.attack_rate > 0.0 { json!(a.attack_rate) } else { json!("unpaced") },
            "slow_connections": a.slow_connections,
            "sessions": a.sessions,
            "control": control,
            "attack": attack,
            "victim_decisions_equal": equal,
            "victim_decision_diff": diff,
        });
        crate::write_json(path, &v)?;
    }
    Ok(())
}

/// The human summary: one line per phase.
fn table(control: &Value, attack: &Value, equal: bool) -> String {
    let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / 1024.0;
    let mut s = format!(
        "\n{:<8} {:>13} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "phase", "peak RSS MiB", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    for (name, p) in [("control", control), ("attack", attack)] {
        let l = |q: &str| p["victim"]["latency_us"][q].as_u64().unwrap_or(0);
        s.push_str(&format!(
            "{name:<8} {:>13.1} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            mib(&p["engine_peak_rss_kib"]),
            l("p50"),
            l("p90"),
            l("p99"),
            l("p99_9"),
            l("max"),
        ));
    }
    s.push_str(&format!(
        "victim decisions equal under attack: {}\n",
        if equal { "yes" } else { "NO" }
    ));
    s
}
